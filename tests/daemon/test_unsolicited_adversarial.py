"""RFC 9468 unsolicited sessions under attack, scaled down (issue 18).

An established pair at 50 ms x 3 over loopback must not notice: a burst of
sources at a raised rate (creation is bounded per turn of the loop), spoofed
sources that never complete the handshake (removed, having had few packets),
and a kernel slow to answer the interface check (nothing waits for it).
The full-size case is bench/adversarial_unsolicited.py.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import socket
import struct
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from aiobfd.config import PeerSpec, UnsolicitedConfig
from aiobfd.engine import Daemon, Peer
from aiobfd.engine import admission as admission_module
from aiobfd.engine.admission import CREATE_PER_TURN, REMOVE_PER_TURN, RouteLookup
from aiobfd.protocol.constants import SLOW_TX_INTERVAL_US
from aiobfd.protocol.events import Event, StateChanged
from aiobfd.protocol.packet import State
from aiobfd.protocol.session import SessionConfig

MS = 1000
PAIR = SessionConfig(desired_min_tx_us=50 * MS, required_min_rx_us=50 * MS, detect_mult=3)
DYNAMIC = SessionConfig(desired_min_tx_us=30 * MS, required_min_rx_us=30 * MS, detect_mult=3)
A, B, C = "127.0.13.1", "127.0.13.2", "127.0.13.3"

# Sends Down packets (TTL 255, Your Discriminator 0) from COUNT consecutive
# addresses from FIRST to DST:3784, ROUNDS times GAP seconds apart, once a
# line comes on stdin.  They ask for 10 s x 255 (the remote's Detection Time
# never ends the session early): the spoofer's best case.
SENDER = r"""
import socket, struct, sys, time
dst, first, count, rounds, gap = sys.argv[1:6]
base = int.from_bytes(socket.inet_aton(first), "big")
socks = []
for i in range(int(count)):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 255)
    s.bind((socket.inet_ntoa((base + i).to_bytes(4, "big")), 0))
    socks.append(s)
print("ready", flush=True)
sys.stdin.readline()
for _ in range(int(rounds)):
    for i, s in enumerate(socks):
        pkt = struct.pack("!BBBBIIIII", 0x20, 0x40, 255, 24, i + 1, 0, 10_000_000, 1_000_000, 0)
        try:
            s.sendto(pkt, (dst, 3784))
        except OSError:
            pass
    time.sleep(float(gap))
"""


def spoofed_down(my_discr: int) -> bytes:
    """Down, Your Discriminator 0, asking for 10 s x 255 (no early Detection Time)."""
    return struct.pack("!BBBBIIIII", 0x20, 0x40, 255, 24, my_discr, 0, 10_000_000, 1_000_000, 0)


def unsolicited(**kw: Any) -> UnsolicitedConfig:
    return UnsolicitedConfig(
        prefixes=(ipaddress.ip_network("127.0.0.0/8"),), listen=(B,), session=DYNAMIC, **kw
    )


async def wait_until(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        assert loop.time() < end, "condition not met in time"
        await asyncio.sleep(0.02)


def downs_of(*daemons: Daemon) -> list[str]:
    """Every Up -> not Up of these daemons' sessions, as it happens."""
    downs: list[str] = []

    def listen(peer: Peer, ev: Event) -> None:
        if isinstance(ev, StateChanged) and ev.old_state is State.UP:
            downs.append(f"{peer.spec.local}->{peer.spec.remote}: {ev.diag.label}")

    for d in daemons:
        d.add_listener(listen)
    return downs


def session_to(d: Daemon, remote: str) -> Peer:
    return next(p for p in d.peers.values() if p.spec.remote == remote)


@contextmanager
def every_turn(read: Callable[[], int]) -> Iterator[list[int]]:
    """``read()`` at every turn of the running loop (a callback that
    reschedules itself with call_soon runs once a turn)."""
    loop = asyncio.get_running_loop()
    marks: list[int] = []
    handle: list[asyncio.Handle] = []

    def mark() -> None:
        marks.append(read())
        handle[:] = [loop.call_soon(mark)]

    mark()
    try:
        yield marks
    finally:
        handle[0].cancel()


def largest_step(marks: list[int]) -> int:
    return max((b - a for a, b in itertools.pairwise(marks)), default=0)


def largest_gap(marks: list[int]) -> int:
    """The longest time between two successive instants among ``marks``
    (``last_tx_us`` read at every turn: each packet's sending time)."""
    instants = sorted(set(marks) - {0})
    return largest_step(instants)


@contextmanager
def stall_meter() -> Iterator[list[float]]:
    """The longest the loop was late waking a 5 ms sleeper, in seconds: [worst]."""
    loop = asyncio.get_running_loop()
    worst = [0.0]

    async def tick() -> None:
        while True:
            t = loop.time()
            await asyncio.sleep(0.005)
            worst[0] = max(worst[0], loop.time() - t - 0.005)

    task = loop.create_task(tick())
    try:
        yield worst
    finally:
        task.cancel()


async def test_a_burst_of_sources_leaves_an_established_pair_alone() -> None:
    """Issue 18, scaled down: 800 sources x 3 at a raised rate (100,000/s)."""
    a = Daemon([PeerSpec(B, A, socket.AF_INET, session=PAIR)])
    b = Daemon(
        [PeerSpec(A, B, socket.AF_INET, session=PAIR)],
        unsolicited=unsolicited(max_sessions=5000, rate_per_s=100_000.0, burst=100_000),
    )
    b.admission.never_up_s = 1.0
    downs = downs_of(a, b)
    sender = subprocess.Popen(
        [sys.executable, "-c", SENDER, B, "127.1.0.1", "800", "3", "0.05"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        await a.start()
        await b.start()
        assert sender.stdout is not None and sender.stdin is not None
        assert sender.stdout.readline().strip() == "ready"
        await wait_until(lambda: session_to(a, B).session.state is State.UP)
        await wait_until(lambda: session_to(b, A).session.state is State.UP)
        await asyncio.sleep(0.2)
        adm = b.admission
        a_tx, b_tx = session_to(a, B).session, session_to(b, A).session
        with (
            every_turn(lambda: adm.created) as created,
            every_turn(lambda: sum(adm.expired.values())) as removed,
            every_turn(lambda: a_tx.last_tx_us or 0) as a_sent,
            every_turn(lambda: b_tx.last_tx_us or 0) as b_sent,
        ):
            sender.stdin.write("go\n")
            sender.stdin.flush()
            await wait_until(lambda: sender.poll() is not None, timeout=10)
            await wait_until(lambda: adm.created > 0 and adm.sessions == 0, timeout=10)
        assert sender.returncode == 0
        assert downs == []
        for d, remote in ((a, B), (b, A)):
            pair = session_to(d, remote).session
            assert pair.state is State.UP and pair.counters.session_down == 0
        # Over loopback a packet arrives as it is sent: the largest gap between
        # the pair's transmissions is the largest gap either side received.
        # (The sessions' own max_rx_gap_us counts from a lower bound of each
        # arrival, the drain before it, and may overstate by the hold-off.)
        for sent in (a_sent, b_sent):
            assert len(set(sent)) > 20
            assert largest_gap(sent) < 100 * MS, largest_gap(sent)
        # Creation was bounded per turn (the excess refused as busy, retried
        # by the sources' next packets); removal too.
        assert 0 < largest_step(created) <= CREATE_PER_TURN
        assert adm.refused.get("busy", 0) > 0
        assert adm.created > CREATE_PER_TURN  # over several turns
        assert 0 < largest_step(removed) <= REMOVE_PER_TURN
        # None came Up: all went as never_up, and took their sockets with them.
        assert adm.expired == {"never_up": adm.created}
        assert [p.spec.remote for p in b.peers.values()] == [A]
    finally:
        if sender.poll() is None:
            sender.kill()
        sender.wait()
        a.close()
        b.close()


async def test_a_spoofed_source_gets_a_few_packets_then_nothing() -> None:
    """One spoofed packet: the session it creates never comes Up and is
    removed after never_up_s, having sent at most 1 + never_up_s / 0.75 s."""
    b = Daemon([], unsolicited=unsolicited())
    never_up_s = 2.0
    b.admission.never_up_s = never_up_s
    victim = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    victim.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 255)
    victim.bind(("127.0.14.1", 3784))  # the spoofed source: it hears what b sends
    victim.setblocking(False)
    loop = asyncio.get_running_loop()
    got: list[float] = []

    def take() -> None:
        while True:
            try:
                victim.recv(64)
            except BlockingIOError:
                return
            got.append(loop.time())

    loop.add_reader(victim.fileno(), take)
    await b.start()
    try:
        victim.sendto(spoofed_down(7), (B, 3784))
        sent = loop.time()
        await wait_until(lambda: len(b.peers) == 1)
        (peer,) = b.peers.values()
        assert peer.dynamic and peer.session.state is State.INIT
        await wait_until(lambda: not b.peers, timeout=never_up_s + 1)
        gone = loop.time()
        assert never_up_s - 0.1 <= gone - sent <= never_up_s + 0.3
        assert b.admission.expired == {"never_up": 1} and b.dynamic_sessions == 0
        await asyncio.sleep(1.5)  # nothing more after the removal
        slowest = SLOW_TX_INTERVAL_US / 1e6 * 0.75  # RFC 5880 §6.8.7 jitter
        assert 2 <= len(got) <= 1 + int(never_up_s / slowest), got
        assert max(got) <= gone
    finally:
        loop.remove_reader(victim.fileno())
        victim.close()
        b.close()


class _SlowKernel:
    """A netlink socket whose answers are held back ``delay`` seconds."""

    def __init__(self, sock: socket.socket, delay: float) -> None:
        self._sock = sock
        self._delay = delay
        self._held: deque[tuple[float, bytes]] = deque()

    def sendto(self, data: bytes, addr: Any) -> int:
        return self._sock.sendto(data, addr)

    def recv(self, size: int) -> bytes:
        while True:
            try:
                self._held.append((time.monotonic(), self._sock.recv(size)))
            except BlockingIOError:
                break
        if self._held and time.monotonic() - self._held[0][0] >= self._delay:
            return self._held.popleft()[1]
        raise BlockingIOError

    def close(self) -> None:
        self._sock.close()


class SlowRouteLookup(RouteLookup):
    delay = 0.5
    made: list[SlowRouteLookup] = []

    def __init__(self) -> None:
        super().__init__()
        self._nl.sock = _SlowKernel(self._nl.sock, self.delay)  # type: ignore[assignment]
        self.made.append(self)


async def test_a_slow_interface_check_does_not_block_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The kernel takes 0.5 s to answer the route query: the first packet is
    refused as pending, the loop goes on, a later packet finds the answer."""
    SlowRouteLookup.made.clear()
    monkeypatch.setattr(admission_module, "RouteLookup", SlowRouteLookup)
    c = Daemon([PeerSpec(B, C, socket.AF_INET, session=PAIR)])
    b = Daemon(
        [PeerSpec(C, B, socket.AF_INET, session=PAIR)],
        unsolicited=unsolicited(interfaces=("lo",)),
    )
    a = Daemon([PeerSpec(B, A, socket.AF_INET, session=DYNAMIC)])
    downs = downs_of(b, c)
    await c.start()
    await b.start()
    try:
        await wait_until(lambda: session_to(b, C).session.state is State.UP)
        b_tx = session_to(b, C).session
        with stall_meter() as stall, every_turn(lambda: b_tx.last_tx_us or 0) as sent:
            await a.start()
            await wait_until(lambda: b.unsolicited_refused.get("pending", 0) >= 1)
            assert not b.dynamic_sessions
            # a's next Down packet (a second later) finds the answer.
            await wait_until(
                lambda: b.dynamic_sessions == 1 and session_to(b, A).session.state is State.UP,
                timeout=5,
            )
        assert stall[0] < 0.1, stall[0]
        assert downs == []
        assert largest_gap(sent) < 100 * MS
        (lookup,) = SlowRouteLookup.made
        assert lookup.queries >= 1
    finally:
        a.close()
        b.close()
        c.close()
