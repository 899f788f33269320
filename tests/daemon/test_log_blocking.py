"""A log destination that stops taking lines does not stop the sessions.

stdout is a pipe nobody reads (a stalled journald, ``aiobfd | less`` left
alone): once its 64 KB are full every write blocks.  The daemon's log records
go to a writer thread through a bounded queue (``aiobfd.logs``), so the event
loop goes on: the sessions stay Up, what does not fit in the queue is dropped
and counted, and once the pipe is read again a line says how many were lost.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import threading

import pytest

from aiobfd import logs
from aiobfd.config import PeerSpec
from aiobfd.engine import Daemon
from aiobfd.protocol.packet import State
from aiobfd.protocol.session import SessionConfig

MS = 1000
FAST = SessionConfig(desired_min_tx_us=20 * MS, required_min_rx_us=20 * MS, detect_mult=3)


def _up(*daemons: Daemon) -> bool:
    return all(p.session.state is State.UP for d in daemons for p in d.peers.values())


async def test_a_stalled_log_destination_does_not_stop_the_sessions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    read_end, write_end = os.pipe()
    stalled = os.fdopen(write_end, "w", buffering=1)  # a write a line, as to journald
    monkeypatch.setattr(sys, "stdout", stalled)
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    monkeypatch.setattr(logs, "LOG_QUEUE_MAX", 5_000)
    writer = logs.setup_logging(level="INFO", to_stdout=True)
    a = Daemon([PeerSpec("127.0.0.2", "127.0.0.1", socket.AF_INET, session=FAST)])
    b = Daemon([PeerSpec("127.0.0.1", "127.0.0.2", socket.AF_INET, session=FAST)])
    drained: list[bytes] = []
    try:
        await a.start()
        await b.start()
        for _ in range(100):
            if _up(a, b):
                break
            await asyncio.sleep(0.05)
        assert _up(a, b)
        log = logging.getLogger("aiobfd")
        # 20,000 lines of 100 octets, a slice a turn: the pipe is full after
        # the first few hundred, the queue after 5,000.
        for _ in range(40):
            for i in range(500):
                log.info("line %05d %s", i, "x" * 80)
            await asyncio.sleep(0.002)
        await asyncio.sleep(0.5)  # 25 intervals, 8 Detection Times
        assert _up(a, b)
        for d in (a, b):
            for p in d.peers.values():
                assert p.session.counters.session_down == 0
                assert p.session.max_rx_gap_us < 60 * MS
        assert logs.dropped_log_records() > 10_000

        # Read again: what was queued comes out, and the count of what was lost.
        reader = threading.Thread(target=lambda: drained.append(_read_all(read_end)))
        reader.start()
        assert writer.flush(10)
        log.info("the pipe is read again")
        assert writer.flush(10)
        logs.stop_logging()
        stalled.close()
        reader.join(10)
        text = b"".join(drained).decode()
        assert "log record(s) dropped" in text
        assert "the pipe is read again" in text
    finally:
        a.close()
        b.close()
        if not stalled.closed:  # failed early: let the writer finish, then end
            threading.Thread(target=_read_all, args=(read_end,), daemon=True).start()
        logs.stop_logging()
        stalled.close()
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])


def _read_all(fd: int) -> bytes:
    """Everything until the write end closes; the read end is closed then."""
    with open(fd, "rb") as pipe:
        return pipe.read()
