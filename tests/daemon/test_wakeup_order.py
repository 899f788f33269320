"""The order of a wake-up's work: an expiring Detection Time before the drain.

The drain reads every established session's socket; with thousands of
sessions that is hundreds of packets, milliseconds of work.  A Down that is
due in the same wake-up must not wait behind it, while transmissions still
follow the drain (what it reads, a Final or a slower interval, changes what is
sent).  The wake-up is driven here on a test clock, with a receive side that
only records what it is asked to do.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from aiobfd.engine.peer import Peer
from aiobfd.engine.receive import Receive
from aiobfd.engine.wakeup import Wakeup

Log = list[tuple[str, object]]


class ScriptedSession:
    """A session's deadlines, and nothing else."""

    def __init__(self, *, detect: int | None = None, tx: int | None = None) -> None:
        self.detect_deadline_us = detect
        self.next_tx_us = tx

    def get_timer(self) -> int | None:
        due = [t for t in (self.detect_deadline_us, self.next_tx_us) if t is not None]
        return min(due) if due else None

    def periodic_packet(self, now: int) -> bytes | None:
        return None  # always the full path: the flush below


class RecordingReceive:
    """What the wake-up asks of the receive side, in order."""

    def __init__(self, log: Log) -> None:
        self.log = log

    def drain(self) -> None:
        self.log.append(("drain", ""))

    def read_pending(self, peer: Peer) -> None:
        self.log.append(("read", peer.spec))

    def restamp(self, peer: Peer) -> bool:
        return False

    def follow_up_at(self, at: int | None) -> int | None:
        return None

    def wakeup_armed(self, at: int | None) -> None:
        pass


Clock = list[int]


@pytest.fixture
async def wakeup() -> AsyncIterator[tuple[Wakeup, Log, Clock]]:
    """A wake-up on a test clock (at 1 s), the log of what it did, and the clock."""
    log: Log = []
    now: Clock = [1_000_000]

    def flush(peer: Peer, at: int) -> None:
        session = cast(ScriptedSession, peer.session)
        log.append(("detect" if session.detect_deadline_us == at else "tx", peer.spec))
        session.detect_deadline_us = session.next_tx_us = None

    receive = cast(Receive, RecordingReceive(log))
    wake = Wakeup(lambda: now[0], flush, receive, lambda: 2)
    wake.start(asyncio.get_running_loop())  # a test clock: call_at, no timerfd
    try:
        yield wake, log, now
    finally:
        wake.close()


def peer(name: str, session: ScriptedSession) -> Peer:
    return Peer(cast(Any, name), cast(Any, session), cast(Any, None), cast(Any, None))


async def test_an_expiring_detection_time_goes_before_the_drain(
    wakeup: tuple[Wakeup, Log, Clock],
) -> None:
    wake, log, _ = wakeup
    wake.arm(peer("sending", ScriptedSession(tx=1_000_000)))
    wake.arm(peer("expiring", ScriptedSession(detect=1_000_000)))
    wake._on_wakeup()
    # Its own socket read first (the packet that restarts it may wait there),
    # then the Down, then the transmission, and the drain after.
    assert log == [
        ("read", "expiring"),
        ("detect", "expiring"),
        ("tx", "sending"),
        ("drain", ""),
    ]


async def test_transmissions_alone_come_after_the_drain(
    wakeup: tuple[Wakeup, Log, Clock],
) -> None:
    wake, log, now = wakeup
    # A Detection Time armed, but later: this wake-up is for a transmission.
    wake.arm(peer("later", ScriptedSession(detect=1_200_000)))
    wake.arm(peer("sending", ScriptedSession(tx=1_000_000)))
    wake._on_wakeup()
    assert log == [("drain", ""), ("tx", "sending")]
    now[0] = 1_200_000
    log.clear()
    wake._on_wakeup()
    assert log == [("read", "later"), ("detect", "later"), ("drain", "")]


class PeriodicSession(ScriptedSession):
    """Up and quiet: the same packet every 50 ms."""

    def periodic_packet(self, now: int) -> bytes | None:
        assert self.next_tx_us is not None and now >= self.next_tx_us
        self.next_tx_us = now + 50_000
        return b"packet"


class SentTo:
    """A session's transmit socket: what went out on it."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> int:
        self.sent.append(data)
        return len(data)


async def test_every_periodic_transmission_counts_once_with_its_lateness(
    wakeup: tuple[Wakeup, Log, Clock],
) -> None:
    """Transmissions served at one look at the clock are recorded together
    (a run of equal lateness); each still counts once, with its own."""
    wake, _, now = wakeup
    sockets = []
    for i, instant in enumerate([1_000_000] * 5 + [1_000_100] * 2):
        sock = SentTo()
        sockets.append(sock)
        p = Peer(
            cast(Any, f"p{i}"),
            cast(Any, PeriodicSession(tx=instant)),
            cast(Any, sock),
            cast(Any, None),
        )
        p.connected = True
        wake.arm(p)
    now[0] = 1_000_300
    wake._on_wakeup()
    assert [s.sent for s in sockets] == [[b"packet"]] * 7
    lateness = wake.timing.tx_lateness
    assert (lateness.total, lateness.sum_us, lateness.max_us) == (7, 5 * 300 + 2 * 200, 300)
    assert dict(lateness.cumulative())[250e-6] == 2
