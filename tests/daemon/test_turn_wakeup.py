"""Daemon.turn(): background work's turn ends before the sessions' next wake-up."""

from __future__ import annotations

import socket

from aiobfd.config import PeerSpec
from aiobfd.engine import Daemon, monotonic_us
from aiobfd.protocol.session import SessionConfig


async def test_a_turn_ends_before_the_armed_wakeup_however_large_its_budget() -> None:
    shift = [0]  # the daemon's clock, moved by hand for the turn (no await between)
    daemon = Daemon(
        [PeerSpec("127.0.3.1", "127.0.0.1", socket.AF_INET, session=SessionConfig())],
        port=0,
        clock=lambda: monotonic_us() + shift[0],
    )
    await daemon.start()
    try:
        armed = daemon.wakeup.armed_at
        assert armed is not None  # the session's first transmission
        shift[0] = armed - monotonic_us() - 1_000  # 1 ms before the wake-up
        turn = daemon.turn(budget_us=10**9)
        shift[0] += 100
        assert not turn.over()  # 0.9 ms left, a step of 0.1 ms
        shift[0] += 500
        assert turn.over()  # another step of 0.5 ms would pass the wake-up
    finally:
        daemon.close()
