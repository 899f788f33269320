"""The loop's precise wake-up (io/timerfd.py): when it fires, moving it, and the fallback."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from aiobfd.config import PeerSpec
from aiobfd.engine import Daemon, monotonic_us
from aiobfd.io.timerfd import PreciseTimer, open_precise_timer
from aiobfd.protocol.packet import State
from aiobfd.protocol.session import SessionConfig

MS = 1000


@pytest.fixture
async def timer_and_fired() -> AsyncIterator[tuple[PreciseTimer, list[int]]]:
    """A timer on the running loop, and when it fired (protocol clock)."""
    fired: list[int] = []
    timer = open_precise_timer(asyncio.get_running_loop(), lambda: fired.append(monotonic_us()))
    assert timer is not None
    try:
        yield timer, fired
    finally:
        timer.close()


async def test_fires_once_at_its_instant_never_before(
    timer_and_fired: tuple[PreciseTimer, list[int]],
) -> None:
    timer, fired = timer_and_fired
    at = monotonic_us() + 20 * MS
    timer.arm(at)
    assert timer.armed_at == at
    await asyncio.sleep(0.1)
    assert len(fired) == 1 and fired[0] >= at
    assert timer.armed_at is None


async def test_moving_or_disarming_forgets_the_old_instant(
    timer_and_fired: tuple[PreciseTimer, list[int]],
) -> None:
    timer, fired = timer_and_fired
    timer.arm(monotonic_us() + 5 * MS)
    later = monotonic_us() + 60 * MS
    timer.arm(later)
    await asyncio.sleep(0.03)
    assert fired == []  # not at the first instant
    await asyncio.sleep(0.08)
    assert len(fired) == 1 and fired[0] >= later
    timer.arm(monotonic_us() + 5 * MS)
    timer.disarm()
    await asyncio.sleep(0.03)
    assert len(fired) == 1
    timer.arm(0)  # an instant long past: at once
    await asyncio.sleep(0.01)
    assert len(fired) == 2
    timer.close()
    timer.close()  # twice is harmless (and once more by the fixture)


async def _come_up(a: Daemon, b: Daemon) -> None:
    """Start ``a`` and ``b`` (peers of each other) and see their sessions Up."""
    await a.start()
    await b.start()
    for _ in range(100):
        if all(p.session.state is State.UP for d in (a, b) for p in d.peers.values()):
            break
        await asyncio.sleep(0.05)
    assert all(p.session.state is State.UP for d in (a, b) for p in d.peers.values())


FAST = SessionConfig(desired_min_tx_us=50 * MS, required_min_rx_us=50 * MS, detect_mult=3)


async def test_a_daemon_on_another_clock_keeps_call_at() -> None:
    """The timerfd runs on CLOCK_MONOTONIC: a daemon given another clock (a
    test's, say) wakes by call_at, and still works."""
    a = Daemon([PeerSpec("127.0.0.2", "127.0.0.1", socket.AF_INET, session=FAST)])
    b = Daemon(
        [PeerSpec("127.0.0.1", "127.0.0.2", socket.AF_INET, session=FAST)],
        clock=lambda: monotonic_us(),
    )
    try:
        await _come_up(a, b)
        assert a.wakeup.precise and not b.wakeup.precise
    finally:
        a.close()
        b.close()
    assert not a.wakeup.precise


async def test_a_timerfd_that_fails_gives_way_to_call_at(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: PreciseTimer, at_us: int) -> None:
        raise OSError(22, "timerfd_settime failed")

    monkeypatch.setattr(PreciseTimer, "arm", broken)
    a = Daemon([PeerSpec("127.0.0.2", "127.0.0.1", socket.AF_INET, session=FAST)])
    b = Daemon([PeerSpec("127.0.0.1", "127.0.0.2", socket.AF_INET, session=FAST)])
    try:
        await _come_up(a, b)
        assert not a.wakeup.precise and not b.wakeup.precise  # closed at the first arm
    finally:
        a.close()
        b.close()
