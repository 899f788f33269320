"""Established sessions' receive sockets: the kernel checks the TTL of each
packet and keeps the arrival time of the last one read."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from aiobfd.io.sockets import (
    attach_min_ttl_filter,
    kernel_drops,
    last_arrival_ns,
    open_session_socket,
    sockaddr,
)

FAMILIES = pytest.mark.parametrize(
    ("family", "local", "remote"),
    [
        (socket.AF_INET, "127.0.0.1", "127.0.0.2"),
        (socket.AF_INET6, "::1", "::1"),
    ],
)


@contextmanager
def session_socket(
    family: int, local: str, remote: str, min_ttl: int | None = 255
) -> Iterator[tuple[socket.socket, socket.socket, tuple[str, int] | tuple[str, int, int, int]]]:
    """(peer, session socket, where the peer sends to) on loopback."""
    with socket.socket(family, socket.SOCK_DGRAM) as peer:
        peer.bind(sockaddr(family, remote, 0))
        port = peer.getsockname()[1]
        # A port of its own, so the test runs beside a daemon on 3784.
        probe = socket.socket(family, socket.SOCK_DGRAM)
        probe.bind(sockaddr(family, local, 0))
        listen = probe.getsockname()[1]
        probe.close()
        rx = open_session_socket(family, local, 0, sockaddr(family, remote, port), listen, min_ttl)
        rx.settimeout(0.5)
        with rx:
            yield peer, rx, sockaddr(family, local, listen)


def set_ttl(sock: socket.socket, ttl: int) -> None:
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ttl)
    else:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)


@FAMILIES
def test_a_packet_read_late_reports_when_it_arrived(family: int, local: str, remote: str) -> None:
    with session_socket(family, local, remote) as (peer, rx, dest):
        set_ttl(peer, 255)
        # The first socket asking for timestamps makes the kernel stamp
        # packets as they arrive, after a moment (a deferred static key);
        # until then a packet is stamped when it is read.
        time.sleep(0.2)
        assert last_arrival_ns(rx) == 0  # nothing read yet
        sent_ns = time.time_ns()
        peer.sendto(b"x" * 24, dest)
        time.sleep(0.05)  # the daemon reads it at its next wake-up
        assert rx.recv(512) == b"x" * 24
        arrived_ns = last_arrival_ns(rx)
    assert 0 <= arrived_ns - sent_ns < 20_000_000  # the arrival, not the read 50 ms later


@FAMILIES
def test_the_kernel_drops_and_counts_packets_below_the_minimum_ttl(
    family: int, local: str, remote: str
) -> None:
    """RFC 5881 §5: TTL 255 or nothing, checked before the daemon reads."""
    with session_socket(family, local, remote) as (peer, rx, dest):
        for ttl in (64, 254, 255):
            set_ttl(peer, ttl)
            peer.sendto(b"%d" % ttl, dest)
        assert rx.recv(512) == b"255"
        assert kernel_drops(rx) == 2
        # A lower minimum (multihop, or authentication with min_ttl) lets 254 in.
        attach_min_ttl_filter(rx, 254)
        set_ttl(peer, 254)
        peer.sendto(b"254", dest)
        assert rx.recv(512) == b"254"
        assert kernel_drops(rx) == 2


@FAMILIES
def test_without_a_minimum_every_packet_comes_through(family: int, local: str, remote: str) -> None:
    with session_socket(family, local, remote, min_ttl=None) as (peer, rx, dest):
        set_ttl(peer, 1)
        peer.sendto(b"low", dest)
        assert rx.recv(512) == b"low"
        assert kernel_drops(rx) == 0
