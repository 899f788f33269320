"""rtnetlink for kernel routes: install, replace and delete aiobfd's own routes.

A :class:`RouteSocket` is one non-blocking ``NETLINK_ROUTE`` socket that

* sends ``RTM_NEWROUTE`` (one next hop as ``RTA_GATEWAY``, several as
  ``RTA_MULTIPATH``: ECMP) and ``RTM_DELROUTE``, always under aiobfd's route
  protocol number :data:`RTPROT_AIOBFD`, so ``ip route`` shows who owns a
  route and a delete never matches another protocol's route (the kernel
  compares ``rtm_protocol`` when it is set, IPv4 and IPv6 alike);
* dumps the routing tables of a family (``RTM_GETROUTE`` with ``NLM_F_DUMP``)
  to see what is there before the first install;
* hears every route change of the namespace (the ``RTNLGRP_IPV4_ROUTE`` and
  ``RTNLGRP_IPV6_ROUTE`` groups: ``ip monitor route``), so a route of another
  protocol appearing where aiobfd's would be is seen.

Nothing waits: the kernel handles a route request inside ``send`` (under its
RTNL lock, as for ``ip route``) and queues its answer; requests carry no
``NLM_F_ACK``, so only a refusal comes back (an ``NLMSG_ERROR`` with the
request's sequence number), read with the events when the event loop says
the socket is readable, :data:`aiobfd.io.netlink.READ_BATCH` datagrams a call.

Why not pyroute2: three message kinds, built and parsed with ``struct`` in
this one module, against a dependency of 30,000 lines whose ``IPRoute`` is
blocking (its asyncio flavour arrived in 0.9); the daemon already keeps its
own rtnetlink socket (:mod:`aiobfd.io.netlink`) for the same reasons.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass
from typing import Final

from .netlink import (
    NLMSG_DONE,
    NLMSG_ERROR,
    RTA_DST,
    RTA_GATEWAY,
    RTA_OIF,
    RTM_GETROUTE,
    RTM_NEWROUTE,
    RTN_UNICAST,
    DumpDone,
    NetlinkError,
    NetlinkSocket,
    error_of,
    messages,
)

#: aiobfd's route protocol number (``rtm_protocol``; ``ip route ... proto 200``):
#: BFD's port 3784 modulo 256, taken by no protocol of linux/rtnetlink.h,
#: iproute2's rt_protos or FRR's (186-197).  Name it for ``ip route`` with
#: ``echo '200 aiobfd' > /etc/iproute2/rt_protos.d/aiobfd.conf``.
RTPROT_AIOBFD: Final = 200

# linux/rtnetlink.h, linux/netlink.h
RTM_DELROUTE: Final = 25
RTA_PRIORITY: Final = 6
RTA_MULTIPATH: Final = 9
RTA_TABLE: Final = 15
NLM_F_MULTI: Final = 0x2
NLM_F_ROOT: Final = 0x100
NLM_F_MATCH: Final = 0x200
NLM_F_DUMP: Final = NLM_F_ROOT | NLM_F_MATCH
NLM_F_REPLACE: Final = 0x100
NLM_F_EXCL: Final = 0x200
NLM_F_CREATE: Final = 0x400
RTMGRP_IPV4_ROUTE: Final = 0x40
RTMGRP_IPV6_ROUTE: Final = 0x400
RT_SCOPE_UNIVERSE: Final = 0
RT_TABLE_MAIN: Final = 254
#: IPv6 routes without a metric get this one (IP6_RT_PRIO_USER).
IPV6_DEFAULT_METRIC: Final = 1024

# family, dst_len, src_len, tos, table, protocol, scope, type, flags
_RTMSG = struct.Struct("=BBBBBBBBI")
_RTATTR = struct.Struct("=HH")  # length, type
_RTNEXTHOP = struct.Struct("=HBBi")  # length, flags, hops (weight - 1), ifindex
_U32 = struct.Struct("=I")
#: The socket's receive buffer asked for: a burst of route events (a routing
#: daemon's) fits before the kernel drops some (then: a dump again).
RCVBUF_BYTES: Final = 1 << 20


@dataclass(frozen=True, slots=True, order=True)
class RouteKey:
    """What identifies a route to the kernel: family, prefix, table and metric."""

    family: int
    destination: str
    """The prefix's network address (``0.0.0.0`` for a default route)."""
    length: int
    table: int = RT_TABLE_MAIN
    metric: int = 0

    def __str__(self) -> str:
        return f"{self.destination}/{self.length} table {self.table} metric {self.metric}"


@dataclass(frozen=True, slots=True, order=True)
class NextHop:
    """A gateway, with the interface of a link-local one (0: the kernel finds it)."""

    gateway: str
    ifindex: int = 0

    def __str__(self) -> str:
        return f"{self.gateway}%{self.ifindex}" if self.ifindex else self.gateway


@dataclass(frozen=True, slots=True)
class RouteSeen:
    """A route in a dump's answer or an event (``seq`` 0): its key and owner."""

    seq: int
    key: RouteKey
    protocol: int
    deleted: bool = False
    """An RTM_DELROUTE event: the route is gone."""
    dump: bool = False
    """Part of a dump's answer (``NLM_F_MULTI``), not an event."""


Message = RouteSeen | DumpDone | NetlinkError


def key_of(
    prefix: ipaddress.IPv4Network | ipaddress.IPv6Network, table: int, metric: int | None
) -> RouteKey:
    """The :class:`RouteKey` of a configured route (``metric`` None: the kernel's default)."""
    family = socket.AF_INET if prefix.version == 4 else socket.AF_INET6
    if metric is None:
        metric = 0 if family == socket.AF_INET else IPV6_DEFAULT_METRIC
    return RouteKey(family, str(prefix.network_address), prefix.prefixlen, table, metric)


def _attr(kind: int, value: bytes) -> bytes:
    size = _RTATTR.size + len(value)
    return _RTATTR.pack(size, kind) + value + b"\0" * (-size % 4)


def _header(key: RouteKey, *, protocol: int, kind: int) -> bytes:
    table = key.table if key.table < 256 else 0  # RT_TABLE_UNSPEC: RTA_TABLE says it
    dst = socket.inet_pton(key.family, key.destination)
    body = _RTMSG.pack(key.family, key.length, 0, 0, table, protocol, RT_SCOPE_UNIVERSE, kind, 0)
    body += _attr(RTA_TABLE, _U32.pack(key.table))
    if key.length:
        body += _attr(RTA_DST, dst)
    body += _attr(RTA_PRIORITY, _U32.pack(key.metric))
    return body


def route_body(
    key: RouteKey, nexthops: tuple[NextHop, ...], protocol: int = RTPROT_AIOBFD
) -> bytes:
    """The ``rtmsg`` and attributes of an RTM_NEWROUTE for ``key`` via ``nexthops`` (ECMP)."""
    if not nexthops:
        raise ValueError("a route needs at least one next hop")
    body = _header(key, protocol=protocol, kind=RTN_UNICAST)
    if len(nexthops) == 1:
        [hop] = nexthops
        body += _attr(RTA_GATEWAY, socket.inet_pton(key.family, hop.gateway))
        if hop.ifindex:
            body += _attr(RTA_OIF, _U32.pack(hop.ifindex))
        return body
    multipath = b""
    for hop in nexthops:
        gateway = _attr(RTA_GATEWAY, socket.inet_pton(key.family, hop.gateway))
        multipath += _RTNEXTHOP.pack(_RTNEXTHOP.size + len(gateway), 0, 0, hop.ifindex) + gateway
    return body + _attr(RTA_MULTIPATH, multipath)


def delete_body(key: RouteKey, protocol: int = RTPROT_AIOBFD) -> bytes:
    """The ``rtmsg`` and attributes of an RTM_DELROUTE of ``protocol``'s route at ``key``."""
    return _header(key, protocol=protocol, kind=RTN_UNICAST)


class RouteSocket(NetlinkSocket):
    """A non-blocking rtnetlink socket for routes; see the module docstring.

    Each request method returns the request's sequence number; a refusal
    comes back later from :meth:`read` as a :class:`NetlinkError` with it.
    OSError when the socket's send buffer is full (EAGAIN, ENOBUFS).
    """

    def __init__(self, *, events: bool = True) -> None:
        super().__init__(
            RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE if events else 0, rcvbuf=RCVBUF_BYTES
        )

    def add(self, key: RouteKey, nexthops: tuple[NextHop, ...]) -> int:
        """Create the route; refused (EEXIST) if any route is at ``key`` already."""
        return self.request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, route_body(key, nexthops))

    def replace(self, key: RouteKey, nexthops: tuple[NextHop, ...]) -> int:
        """Replace the route at ``key`` (or create it) with these next hops, at once."""
        return self.request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, route_body(key, nexthops))

    def delete(self, key: RouteKey) -> int:
        """Delete aiobfd's route at ``key`` (a route of another protocol is never matched)."""
        return self.request(RTM_DELROUTE, 0, delete_body(key))

    def dump(self, family: int) -> int:
        """Ask for every route of ``family``: :class:`RouteSeen` each, then :class:`DumpDone`."""
        body = _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
        return self.request(RTM_GETROUTE, NLM_F_DUMP, body)

    def read(self) -> list[Message]:
        """What waits on the socket, parsed (answers and events, in order)."""
        return self.read_parsed(parse)


def parse(data: bytes) -> list[Message]:
    """The messages of one netlink datagram that this module knows."""
    out: list[Message] = []
    for kind, flags, seq, body, end in messages(data):
        if kind == NLMSG_ERROR:
            error = error_of(data, body, end, seq)
            if error is not None:
                out.append(error)
        elif kind == NLMSG_DONE:
            out.append(DumpDone(seq))
        elif kind in (RTM_NEWROUTE, RTM_DELROUTE) and end - body >= _RTMSG.size:
            seen = _route(
                data, body, end, seq, deleted=kind == RTM_DELROUTE, dump=bool(flags & NLM_F_MULTI)
            )
            if seen is not None:
                out.append(seen)
    return out


def _route(
    data: bytes, body: int, end: int, seq: int, *, deleted: bool, dump: bool
) -> RouteSeen | None:
    family, dst_len, _src_len, tos, table, protocol, _scope, _kind, _flags = _RTMSG.unpack_from(
        data, body
    )
    if family not in (socket.AF_INET, socket.AF_INET6) or tos:
        return None
    attrs: dict[int, bytes] = {}
    at = body + _RTMSG.size
    while at + _RTATTR.size <= end:
        size, kind = _RTATTR.unpack_from(data, at)
        if size < _RTATTR.size or at + size > end:
            break
        attrs[kind & 0x3FFF] = data[at + _RTATTR.size : at + size]
        at += (size + 3) & ~3
    raw_dst = attrs.get(RTA_DST)
    try:
        if raw_dst is None:
            destination = "0.0.0.0" if family == socket.AF_INET else "::"
        else:
            destination = socket.inet_ntop(family, raw_dst)
    except (ValueError, OSError):
        return None
    raw_table = attrs.get(RTA_TABLE)
    if raw_table is not None and len(raw_table) >= 4:
        table = _U32.unpack(raw_table[:4])[0]
    raw_metric = attrs.get(RTA_PRIORITY)
    metric = (
        _U32.unpack(raw_metric[:4])[0] if raw_metric is not None and len(raw_metric) >= 4 else 0
    )
    key = RouteKey(family, destination, dst_len, table, metric)
    return RouteSeen(seq, key, protocol, deleted, dump)
