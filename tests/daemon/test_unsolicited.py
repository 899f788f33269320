"""RFC 9468 unsolicited sessions, between daemons over loopback."""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import socket
import struct

from aiobfd.config import PeerSpec, UnsolicitedConfig
from aiobfd.engine import Daemon
from aiobfd.engine.admission import PrefixSet, RouteLookup
from aiobfd.protocol.packet import State
from aiobfd.protocol.session import SessionConfig

MS = 1000
FAST = SessionConfig(desired_min_tx_us=30 * MS, required_min_rx_us=30 * MS, detect_mult=3)
A, B = "127.0.8.1", "127.0.8.2"


def unsolicited(prefix: str = "127.0.0.0/8", **kw: object) -> UnsolicitedConfig:
    return UnsolicitedConfig(
        prefixes=(ipaddress.ip_network(prefix),),
        listen=(B,),
        session=FAST,
        **kw,  # type: ignore[arg-type]
    )


async def wait_until(pred, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        assert loop.time() < end, "condition not met in time"
        await asyncio.sleep(0.02)


def down_packet(my_discr: int) -> bytes:
    return struct.pack("!BBBBIIIII", 0x20, 0x40, 3, 24, my_discr, 0, 30_000, 30_000, 0)


async def test_unknown_peer_in_prefix_gets_a_passive_session() -> None:
    a = Daemon([PeerSpec(B, A, socket.AF_INET, session=FAST)])
    b = Daemon([], unsolicited=unsolicited())
    await b.start()
    await a.start()
    try:
        await wait_until(lambda: len(b.peers) == 1)
        (peer,) = b.peers.values()
        assert peer.dynamic and peer.session.config.passive
        await wait_until(lambda: peer.session.state is State.UP)
        await wait_until(lambda: next(iter(a.peers.values())).session.state is State.UP)
        assert peer.spec.remote == A and peer.spec.local == B
    finally:
        a.close()
        b.close()


async def test_outside_the_prefixes_no_session() -> None:
    a = Daemon([PeerSpec(B, A, socket.AF_INET, session=FAST)])
    b = Daemon([], unsolicited=unsolicited("127.0.9.0/24"))
    await b.start()
    await a.start()
    try:
        await wait_until(lambda: b.unsolicited_refused.get("prefix", 0) >= 2)
        assert not b.peers
    finally:
        a.close()
        b.close()


async def test_flood_of_sources_stays_within_limits_and_sessions_hold() -> None:
    a = Daemon([PeerSpec(B, A, socket.AF_INET, session=FAST)])
    b = Daemon([], unsolicited=unsolicited(max_sessions=20, rate_per_s=1000.0, burst=1000))
    await b.start()
    await a.start()
    senders = []
    try:
        await wait_until(lambda: any(p.session.state is State.UP for p in b.peers.values()))
        for i in range(200):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 255)  # single hop: RFC 5881 §5
            s.bind((f"127.0.10.{i + 1}", 0))
            senders.append(s)
        for _ in range(3):
            for i, s in enumerate(senders):
                s.sendto(down_packet(i + 1), (B, 3784))
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        dynamic = [p for p in b.peers.values() if p.dynamic]
        assert len(dynamic) == 20
        assert b.unsolicited_refused.get("limit", 0) > 0
        legit = b.peers[next(k for k in b.peers if k.remote == A)]
        assert legit.session.state is State.UP and legit.session.counters.session_down == 0
    finally:
        for s in senders:
            s.close()
        a.close()
        b.close()


async def test_creation_is_rate_limited() -> None:
    b = Daemon([], unsolicited=unsolicited(max_sessions=1000, rate_per_s=1.0, burst=5))
    await b.start()
    senders = []
    try:
        for i in range(50):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 255)  # single hop: RFC 5881 §5
            s.bind((f"127.0.11.{i + 1}", 0))
            senders.append(s)
        # Remotes keep sending: what one turn of the loop had no time to create
        # (busy) is created at their next packet, within the rate.
        for _ in range(3):
            for i, s in enumerate(senders):
                s.sendto(down_packet(i + 1), (B, 3784))
            await asyncio.sleep(0.1)
        assert 5 <= len(b.peers) <= 6
        assert b.unsolicited_refused.get("rate", 0) >= 40
    finally:
        for s in senders:
            s.close()
        b.close()


async def test_packets_not_sent_with_ttl_255_create_nothing() -> None:
    b = Daemon([], unsolicited=unsolicited())
    await b.start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.12.1", 0))
            s.sendto(down_packet(1), (B, 3784))  # default TTL 64
            await asyncio.sleep(0.2)
        assert not b.peers and b.unsolicited_refused == {"ttl": 1}
    finally:
        b.close()


async def test_multihop_packets_below_the_minimum_ttl_create_nothing() -> None:
    """RFC 5883 §5 / RFC 9468: the TTL is checked before a session is made, so
    packets that came too many hops hold no slot and spend no rate token."""
    b = Daemon([], unsolicited=unsolicited(multihop=True, rate_per_s=1.0, burst=1))
    await b.start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 1)
            s.bind(("127.0.12.2", 0))
            for i in range(5):
                s.sendto(down_packet(i + 1), (B, 4784))
            await wait_until(lambda: b.unsolicited_refused.get("ttl", 0) == 5)
            assert not b.peers
            # The one token of the bucket is still there for a packet that may come.
            s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 254)
            s.sendto(down_packet(9), (B, 4784))
            await wait_until(lambda: len(b.peers) == 1)
        (peer,) = b.peers.values()
        assert peer.spec.multihop and peer.dynamic
    finally:
        b.close()


async def test_dynamic_sessions_are_frozen_out_of_the_collector_and_still_freed() -> None:
    """Sessions made at run time are moved out of the garbage collector's reach
    (gc.freeze, a second after a burst), and freed by reference counting when
    they go: frozen, they would leak if they held a reference cycle."""
    b = Daemon([], unsolicited=unsolicited(max_sessions=1000, rate_per_s=1000.0, burst=1000))
    await b.start()
    senders = []
    try:
        for i in range(40):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 255)
            s.bind((f"127.0.13.{i + 1}", 0))
            senders.append(s)
        for _ in range(5):  # what one turn had no time to make comes at the next packet
            for i, s in enumerate(senders):
                s.sendto(down_packet(i + 1), (B, 3784))
            await asyncio.sleep(0.05)
        await wait_until(lambda: len(b.peers) == 40)
        before = gc.get_freeze_count()
        await wait_until(lambda: gc.get_freeze_count() > before, timeout=3)
        frozen = gc.get_freeze_count()
        for key in list(b.peers):
            b.remove_peer(key)
        # Freed once the last reference goes (their goodbyes are sent, their
        # places in the schedule and the admission's queues pass): not leaked.
        await wait_until(lambda: frozen - gc.get_freeze_count() >= 40 * 5, timeout=10)
    finally:
        for s in senders:
            s.close()
        b.close()
        gc.unfreeze()


async def test_dynamic_session_removed_after_staying_down() -> None:
    a = Daemon([PeerSpec(B, A, socket.AF_INET, session=FAST)])
    b = Daemon([], unsolicited=unsolicited(down_timeout_s=0.5))
    await b.start()
    await a.start()
    try:
        await wait_until(lambda: any(p.session.state is State.UP for p in b.peers.values()))
        a.close()
        await wait_until(lambda: all(p.session.state is not State.UP for p in b.peers.values()))
        await asyncio.sleep(0.2)
        assert len(b.peers) == 1  # not yet: it has been down for less than 0.5 s
        await wait_until(lambda: not b.peers, timeout=2)
        assert b.admission.expired == {"down": 1}
    finally:
        a.close()
        b.close()


async def test_a_real_peer_comes_up_and_stays_past_the_never_up_bound() -> None:
    """The handshake takes milliseconds; only sessions that never come Up go."""
    a = Daemon([PeerSpec(B, A, socket.AF_INET, session=FAST)])
    b = Daemon([], unsolicited=unsolicited())
    b.admission.never_up_s = 0.5
    await b.start()
    await a.start()
    try:
        await wait_until(lambda: any(p.session.state is State.UP for p in b.peers.values()))
        await asyncio.sleep(1.0)
        (peer,) = b.peers.values()
        assert peer.dynamic and peer.session.state is State.UP
        assert peer.session.counters.session_down == 0
        assert b.admission.expired == {} and b.admission.created == 1
    finally:
        a.close()
        b.close()


async def test_allowed_interfaces_are_asked_of_the_kernel() -> None:
    """Single hop with ``interfaces``: the route to the source must leave by one of them."""
    a = Daemon([PeerSpec(B, A, socket.AF_INET, session=FAST)])
    b = Daemon([], unsolicited=unsolicited(interfaces=("lo",)))
    await b.start()
    await a.start()
    try:
        await wait_until(lambda: any(p.session.state is State.UP for p in b.peers.values()))
        assert "interface" not in b.unsolicited_refused
    finally:
        a.close()
        b.close()
    a = Daemon([PeerSpec(B, A, socket.AF_INET, session=FAST)])
    b = Daemon([], unsolicited=unsolicited(interfaces=("eth7",)))
    await b.start()
    await a.start()
    try:
        await wait_until(lambda: b.unsolicited_refused.get("interface", 0) >= 1)
        assert not b.peers
    finally:
        a.close()
        b.close()


def test_route_lookup_answers_from_the_kernel() -> None:
    lookup = RouteLookup()
    try:
        lo = socket.if_nametoindex("lo")
        assert lookup.interface_of("127.0.8.1") == lo
        assert lookup.interface_of("::1") == lo
        assert lookup.queries == 2
        assert lookup.interface_of("127.0.8.1") == lo  # kept a while
        assert lookup.queries == 2
    finally:
        lookup.close()


def test_prefix_set_agrees_with_the_configuration() -> None:
    cfg = UnsolicitedConfig(
        prefixes=(
            ipaddress.ip_network("198.51.100.0/24"),
            ipaddress.ip_network("10.0.0.0/8"),
            ipaddress.ip_network("2001:db8:1::/48"),
            ipaddress.ip_network("fe80::/10"),
        ),
        listen=(B,),
    )
    fast = PrefixSet(cfg.prefixes)
    for address in (
        "198.51.100.7", "198.51.101.7", "10.255.0.1", "11.0.0.1", "0.0.0.0",
        "2001:db8:1::5", "2001:db8:2::5", "fe80::1", "::ffff:10.0.0.1", "::1",
    ):  # fmt: skip
        assert fast.allows(address) is cfg.allows(address), address
    assert not PrefixSet(()).allows("10.0.0.1")
