"""Established sessions' receive sockets: the kernel's arrival time and TTL of a packet."""

from __future__ import annotations

import socket
import time

import pytest

from aiobfd.io.sockets import (
    SESSION_ANCILLARY_SIZE,
    open_session_socket,
    received_ttl_and_time,
    sockaddr,
)


@pytest.mark.parametrize(
    ("family", "local", "remote"),
    [
        (socket.AF_INET, "127.0.0.1", "127.0.0.2"),
        (socket.AF_INET6, "::1", "::1"),
    ],
)
def test_a_packet_read_late_reports_when_it_arrived(family: int, local: str, remote: str) -> None:
    with socket.socket(family, socket.SOCK_DGRAM) as peer:
        if family == socket.AF_INET6:
            peer.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
        else:
            peer.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 255)
        peer.bind(sockaddr(family, remote, 0))
        port = peer.getsockname()[1]
        # A port of its own, so the test runs beside a daemon on 3784.
        probe = socket.socket(family, socket.SOCK_DGRAM)
        probe.bind(sockaddr(family, local, 0))
        listen = probe.getsockname()[1]
        probe.close()
        rx = open_session_socket(family, local, 0, sockaddr(family, remote, port), listen)
        with rx:
            # The first socket asking for timestamps makes the kernel stamp
            # packets as they arrive, after a moment (a deferred static key);
            # until then a packet is stamped when it is read.
            time.sleep(0.2)
            sent_ns = time.time_ns()
            peer.sendto(b"x" * 24, sockaddr(family, local, listen))
            time.sleep(0.05)  # the daemon reads it at its next wake-up
            data, ancdata, _flags, _addr = rx.recvmsg(512, SESSION_ANCILLARY_SIZE)
    ttl, arrived_ns = received_ttl_and_time(ancdata)
    assert data == b"x" * 24
    assert ttl == 255
    assert 0 <= arrived_ns - sent_ns < 20_000_000  # the arrival, not the read 50 ms later


def test_without_ancillary_data_nothing_is_made_up() -> None:
    assert received_ttl_and_time([]) == (None, 0)
