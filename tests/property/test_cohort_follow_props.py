"""A cohort that follows its first session sends what it would have alone.

At a wake-up, the sessions listed at one instant are served one after
another; each draws its next transmission, and ``Schedule.pick`` gives it the
instant the session before it joined.  The wake-up lets the rest of a cohort
take that instant without the draw (``Session.follow``).  Two worlds run the
same arbitrary sessions through the same wake-ups on the same advancing test
clock: in one the wake-up uses ``follow``, in the other ``follow`` never
applies and every session goes through ``periodic_packet``.  Both must send
the same packets in the same order at the same instants and leave every
session with the same deadlines, place in the schedule and counters.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from aiobfd import core_build
from aiobfd.engine import wakeup
from aiobfd.engine.peer import Peer
from aiobfd.engine.receive import Receive
from aiobfd.engine.wakeup import Wakeup
from aiobfd.protocol.packet import State, decode, encode
from aiobfd.protocol.session import Session, SessionConfig
from tests.helpers import MS, pkt, up_session

#: Most sessions at one interval (cohorts form), some at others (a cohort
#: mixes jitter windows: those may not follow).
intervals = st.sampled_from([50 * MS, 50 * MS, 50 * MS, 50 * MS, 20 * MS, 300 * MS])
session_configs = st.builds(
    SessionConfig, intervals, st.just(50 * MS), st.sampled_from([3, 3, 3, 1, 5])
)


class FakeSocket:
    """A connected transmit socket that records what is sent, with the clock."""

    def __init__(self, name: int, sent: list[tuple[int, int, bytes]], clock: list[int]) -> None:
        self._name = name
        self._sent = sent
        self._clock = clock

    def send(self, data: bytes) -> int:
        self._sent.append((self._clock[0], self._name, data))
        return len(data)


class QuietReceive:
    """A receive side with nothing to read: the world feeds packets itself."""

    def drain(self) -> None:
        pass

    def read_pending(self, peer: Peer) -> None:
        pass

    def restamp(self, peer: Peer) -> bool:
        return False

    def follow_up_at(self, at: int | None) -> int | None:
        return None

    def wakeup_armed(self, at: int | None) -> None:
        pass


class World:
    """Sessions Up with a quiet remote, served by one Wakeup on a test clock
    that moves on a little at every reading."""

    def __init__(self, configs: list[SessionConfig], seed: int, remote_mult: int) -> None:
        self.sent: list[tuple[int, int, bytes]] = []
        self.clock = [1_000_000]
        self._ticks = random.Random(seed)
        self.peers: list[Peer] = []
        self.wake = Wakeup(self._read_clock, self._flush, cast(Receive, QuietReceive()), self._live)
        self.wake.start(asyncio.get_running_loop())  # a test clock: call_at, never awaited
        self.remote = encode(pkt(State.UP, tx=50 * MS, rx=50 * MS, mult=remote_mult))
        for i, config in enumerate(configs):
            session = up_session(
                config,
                now=self.clock[0],
                remote_tx=50 * MS,
                remote_rx=50 * MS,
                remote_mult=remote_mult,
                seed=seed + i,
            )
            session.tx_instants = self.wake.tx_instants
            sock = FakeSocket(i, self.sent, self.clock)
            peer = Peer(cast(Any, i), session, cast(Any, sock), cast(Any, None), connected=True)
            self.peers.append(peer)
            self.wake.arm(peer)

    def _live(self) -> int:
        return len(self.peers)

    def _read_clock(self) -> int:
        self.clock[0] += self._ticks.randrange(0, 400)  # serving takes time
        return self.clock[0]

    def _flush(self, peer: Peer, now: int) -> None:
        session = peer.session
        deadline = session.get_timer()
        if deadline is not None and deadline <= now:
            session.handle_timer(now)
        for data in session.datagrams_to_send():
            peer.sock.send(data)
        while session.next_event() is not None:
            pass
        self.wake.arm(peer)

    def hear(self, now: int, silent: set[int]) -> None:
        """The remote's periodic packet for every session but the ``silent``
        ones, as the drain reads it."""
        for peer in self.peers:
            if peer.spec in silent:
                continue
            session = cast(Session, peer.session)
            timer = session.receive_repeat(self.remote, now)
            if timer is None:
                session.receive(decode(self.remote), now, self.remote)
                while session.next_event() is not None:
                    pass
                for data in session.datagrams_to_send():
                    peer.sock.send(data)
            peer.timer_at = None  # what the drain's arm does when the deadline moved
            self.wake.arm(peer)

    def view(self) -> list[tuple[Any, ...]]:
        out = []
        for peer in self.peers:
            s = cast(Session, peer.session)
            c = s.counters
            out.append((peer.timer_at, s.next_tx_us, s.last_tx_us, s.state, c.packets_out))
        return out


def run(
    configs: list[SessionConfig],
    seed: int,
    stirs: list[tuple[int, int, int]],
    seconds: float,
    remote_mult: int = 3,
    silences: tuple[tuple[int, int, int], ...] = (),
) -> World:
    """``seconds`` of the world; ``stirs``: (wake-up, session, interval) of the
    owner's calls; ``silences``: (session, from, for how long, in ms) of a
    remote that falls silent (its session goes Down and stays there).  The
    remote is heard every 40 ms: with its Detect Mult at 1 (a Detection Time
    of 50 ms) a session's next transmission often comes after its Detection
    Time."""
    world = World(configs, seed, remote_mult)
    wake = world.wake
    stir_at = {r: (i, interval) for r, i, interval in stirs}
    start = heard = world.clock[0]
    end = heard + int(seconds * 1_000_000)
    r = 0
    while world.clock[0] < end:
        r += 1
        at = wake.armed_at
        assert at is not None
        if heard + 40 * MS <= at:  # the remote's packets keep them Up
            heard = world.clock[0] = max(world.clock[0], heard + 40 * MS)
            ms = (heard - start) // MS
            world.hear(heard, {i for i, t, n in silences if t <= ms < t + n})
        else:
            world.clock[0] = max(world.clock[0], at)
            wake._on_wakeup()
        if r in stir_at:  # an owner's call: that session is not steady for a while
            i, interval = stir_at[r]
            peer = world.peers[i % len(world.peers)]
            peer.session.set_timers(world.clock[0], desired_min_tx_us=interval)
            world._flush(peer, world.clock[0])
    wake.close()
    return world


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    configs=st.integers(2, 160).flatmap(
        lambda n: st.lists(session_configs, min_size=n, max_size=n)
    ),
    seed=st.integers(0, 2**16),
    stirs=st.lists(st.tuples(st.integers(0, 300), st.integers(0, 200), intervals), max_size=6),
    remote_mult=st.sampled_from([3, 3, 1]),
    silences=st.lists(
        st.tuples(st.integers(0, 160), st.integers(0, 900), st.integers(10, 300)), max_size=8
    ),
)
def test_a_cohort_following_sends_what_each_would_alone(
    configs: list[SessionConfig],
    seed: int,
    stirs: list[tuple[int, int, int]],
    remote_mult: int,
    silences: list[tuple[int, int, int]],
) -> None:
    asyncio.run(_compare(configs, seed, stirs, remote_mult, tuple(silences)))


async def _compare(
    configs: list[SessionConfig],
    seed: int,
    stirs: list[tuple[int, int, int]],
    remote_mult: int,
    silences: tuple[tuple[int, int, int], ...],
) -> None:
    fast = run(configs, seed, stirs, 1.0, remote_mult, silences)
    with pytest.MonkeyPatch.context() as mp:
        # The wake-up follows only a leader of this very class: with a
        # stand-in for it there, every session goes through periodic_packet.
        mp.setattr(wakeup, "Session", _NoFollowing)
        full = run(configs, seed, stirs, 1.0, remote_mult, silences)
    assert fast.sent == full.sent
    assert fast.view() == full.view()
    downs = sum(s[3] is not State.UP for s in fast.view())
    event(f"sessions not Up at the end: {'none' if not downs else 'some'}")


class _NoFollowing:
    """Not the class of any session."""


def test_the_cohort_follows() -> None:
    """The property above is not vacuous: 150 sessions at 50 ms mostly follow,
    up to the cohort's room."""
    if core_build() != "python":
        pytest.skip("counts calls of a method the compiled core does not let be replaced")
    followed = [0]
    follow = Session.follow

    def counting(self: Session, leader: Session, now: int) -> bytes | None:
        data = follow(self, leader, now)
        followed[0] += data is not None
        return data

    async def go() -> World:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(Session, "follow", counting)
            return run([SessionConfig(50 * MS, 50 * MS, 3)] * 150, 5, [], 1.0)

    world = asyncio.run(go())
    packets = len(world.sent)
    assert followed[0] > packets // 2
    cohorts = world.wake.tx_instants
    assert all(len(cohorts.items_at(i)) <= cohorts.cohort_limit for i in list(cohorts._instants))
