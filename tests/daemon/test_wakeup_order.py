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
from typing import Any, cast

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


def make(now: list[int]) -> tuple[Wakeup, Log]:
    log: Log = []

    def flush(peer: Peer, at: int) -> None:
        session = cast(ScriptedSession, peer.session)
        log.append(("detect" if session.detect_deadline_us == at else "tx", peer.spec))
        session.detect_deadline_us = session.next_tx_us = None

    receive = cast(Receive, RecordingReceive(log))
    wakeup = Wakeup(lambda: now[0], flush, receive, lambda: 2)
    wakeup.start(asyncio.get_running_loop())  # a test clock: call_at, no timerfd
    return wakeup, log


def peer(name: str, session: ScriptedSession) -> Peer:
    return Peer(cast(Any, name), cast(Any, session), cast(Any, None), cast(Any, None))


async def test_an_expiring_detection_time_goes_before_the_drain() -> None:
    now = [1_000_000]
    wakeup, log = make(now)
    try:
        expiring = peer("expiring", ScriptedSession(detect=1_000_000))
        sending = peer("sending", ScriptedSession(tx=1_000_000))
        wakeup.arm(sending)
        wakeup.arm(expiring)
        wakeup._on_wakeup()
        # Its own socket read first (the packet that restarts it may wait
        # there), then the Down, then the transmission, and the drain after.
        assert log == [
            ("read", "expiring"),
            ("detect", "expiring"),
            ("tx", "sending"),
            ("drain", ""),
        ]
    finally:
        wakeup.close()


async def test_transmissions_alone_come_after_the_drain() -> None:
    now = [1_000_000]
    wakeup, log = make(now)
    try:
        # A Detection Time armed, but later: this wake-up is for a transmission.
        later = peer("later", ScriptedSession(detect=1_200_000))
        sending = peer("sending", ScriptedSession(tx=1_000_000))
        wakeup.arm(later)
        wakeup.arm(sending)
        wakeup._on_wakeup()
        assert log == [("drain", ""), ("tx", "sending")]
        now[0] = 1_200_000
        log.clear()
        wakeup._on_wakeup()
        assert log == [("read", "later"), ("detect", "later"), ("drain", "")]
    finally:
        wakeup.close()
