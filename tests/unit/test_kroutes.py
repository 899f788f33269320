"""aiobfd.io.kroutes: route messages built and parsed without a kernel."""

from __future__ import annotations

import ipaddress
import socket
import struct

import pytest

from aiobfd.io import kroutes
from aiobfd.io.kroutes import (
    RTA_MULTIPATH,
    RTA_PRIORITY,
    RTA_TABLE,
    RTPROT_AIOBFD,
    NextHop,
    RouteKey,
    RouteSeen,
    key_of,
    parse,
    route_body,
)
from aiobfd.io.netlink import RTA_DST, RTA_GATEWAY, RTM_NEWROUTE, DumpDone, NetlinkError, message

RTMSG = struct.Struct("=BBBBBBBBI")


def attributes(body: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    at = RTMSG.size
    while at + 4 <= len(body):
        size, kind = struct.unpack_from("=HH", body, at)
        out[kind] = body[at + 4 : at + size]
        at += (size + 3) & ~3
    return out


def test_protocol_number_is_free() -> None:
    # linux/rtnetlink.h and FRR's rt_protos.d take 0-4, 8-18, 42, 99, 186-197.
    taken = {*range(0, 5), *range(8, 19), 42, 99, *range(186, 198)}
    assert RTPROT_AIOBFD == 3784 % 256 == 200
    assert RTPROT_AIOBFD not in taken


def test_key_of_defaults() -> None:
    v4 = key_of(ipaddress.ip_network("0.0.0.0/0"), 254, None)
    assert v4 == RouteKey(socket.AF_INET, "0.0.0.0", 0, 254, 0)
    v6 = key_of(ipaddress.ip_network("2001:db8::/32"), 1000, None)
    assert v6 == RouteKey(socket.AF_INET6, "2001:db8::", 32, 1000, 1024)
    assert str(v6) == "2001:db8::/32 table 1000 metric 1024"


def test_single_next_hop_is_a_gateway() -> None:
    key = RouteKey(socket.AF_INET, "203.0.113.0", 24, 254, 100)
    body = route_body(key, (NextHop("192.0.2.1"),))
    family, dst_len, _, _, table, proto, scope, kind, _ = RTMSG.unpack_from(body)
    assert (family, dst_len, table, proto, scope, kind) == (socket.AF_INET, 24, 254, 200, 0, 1)
    attrs = attributes(body)
    assert attrs[RTA_DST] == socket.inet_aton("203.0.113.0")
    assert attrs[RTA_GATEWAY] == socket.inet_aton("192.0.2.1")
    assert struct.unpack("=I", attrs[RTA_PRIORITY]) == (100,)
    assert struct.unpack("=I", attrs[RTA_TABLE]) == (254,)
    assert RTA_MULTIPATH not in attrs


def test_ecmp_is_multipath() -> None:
    key = RouteKey(socket.AF_INET6, "::", 0, 70000, 1024)
    hops = (NextHop("2001:db8::1"), NextHop("fe80::1", 3))
    body = route_body(key, hops)
    table = RTMSG.unpack_from(body)[4]
    assert table == 0  # above 255: RTA_TABLE alone says it
    attrs = attributes(body)
    assert struct.unpack("=I", attrs[RTA_TABLE]) == (70000,)
    assert RTA_DST not in attrs  # a default route has no destination
    multipath = attrs[RTA_MULTIPATH]
    seen = []
    at = 0
    while at < len(multipath):
        length, flags, weight, ifindex = struct.unpack_from("=HBBi", multipath, at)
        size, kind = struct.unpack_from("=HH", multipath, at + 8)
        assert kind == RTA_GATEWAY and size == 20
        gateway = socket.inet_ntop(socket.AF_INET6, multipath[at + 12 : at + 28])
        seen.append((gateway, ifindex, flags, weight))
        at += length
    assert seen == [("2001:db8::1", 0, 0, 0), ("fe80::1", 3, 0, 0)]


def test_no_next_hop_is_refused() -> None:
    with pytest.raises(ValueError):
        route_body(RouteKey(socket.AF_INET, "0.0.0.0", 0), ())


def test_parse_routes_errors_and_done() -> None:
    key = RouteKey(socket.AF_INET, "203.0.113.0", 24, 100, 5)
    ours = message(RTM_NEWROUTE, 2, 7, route_body(key, (NextHop("192.0.2.1"),)))
    theirs = message(
        kroutes.RTM_DELROUTE, 0, 0, route_body(key, (NextHop("192.0.2.5"),), protocol=4)
    )
    error = message(2, 0, 9, struct.pack("=i", -17) + b"\0" * 16)
    ack = message(2, 0, 10, struct.pack("=i", 0) + b"\0" * 16)
    done = message(3, 2, 7, struct.pack("=i", 0))
    out = parse(ours + theirs + error + ack + done)
    assert out == [
        RouteSeen(7, key, RTPROT_AIOBFD, dump=True),
        RouteSeen(0, key, 4, deleted=True),
        NetlinkError(9, 17),
        DumpDone(7),
    ]


def test_parse_survives_truncation() -> None:
    key = RouteKey(socket.AF_INET, "203.0.113.0", 24)
    data = message(RTM_NEWROUTE, 0, 0, route_body(key, (NextHop("192.0.2.1"),)))
    for cut in range(len(data)):
        parse(data[:cut])  # never raises
