"""Every log line of a session's life, in JSON and in text.

Two daemons run in this event loop over loopback (127.0.4.1 <-> 127.0.4.2);
their lines are captured through the formatters the daemon uses
(``aiobfd.logs.make_formatter``) while the first one's session is created, comes Up, goes
Down because the peer vanished, and is taken AdminDown.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Iterator

import pytest

from aiobfd.engine import Daemon
from aiobfd.logs import make_formatter
from aiobfd.protocol.packet import Diag, State

from .helpers import Changes, spec

RFC3339_MS_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
TEXT_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<logger>\S+)\s+(?P<level>[A-Z]+)\s+(?P<message>.*)$"
)
SESSION_FIELDS = {
    "local",
    "remote",
    "local_discr",
    "remote_discr",
    "remote_diag",
    "tx_interval_ms",
    "rx_interval_ms",
    "detect_time_ms",
}
CHANGE_FIELDS = SESSION_FIELDS | {"old_state", "new_state", "diag", "diag_name"}


class Lines(logging.Handler):
    """Keeps each record as the given formatter writes it."""

    def __init__(self, fmt: str) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(make_formatter(fmt))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def captured() -> Iterator[tuple[Lines, Lines]]:
    logger = logging.getLogger("aiobfd")
    as_json, as_text = Lines("json"), Lines("text")
    old_level = logger.level
    logger.addHandler(as_json)
    logger.addHandler(as_text)
    logger.setLevel(logging.INFO)
    try:
        yield as_json, as_text
    finally:
        logger.removeHandler(as_json)
        logger.removeHandler(as_text)
        logger.setLevel(old_level)


async def live_a_session_life() -> None:
    a = Daemon([spec("127.0.4.1", "127.0.4.2")])
    b = Daemon([spec("127.0.4.2", "127.0.4.1")])
    changes = Changes(a)
    await a.start()
    try:
        await b.start()
        await changes.wait_for(lambda e: e.new_state is State.UP)
        await asyncio.sleep(0.3)  # the Poll Sequence to 50 ms intervals ends
        b.close()  # vanish: the first daemon detects the silence
        await changes.wait_for(lambda e: e.new_state is State.DOWN, timeout=2)
        a.disable(next(iter(a.peers)))
        await changes.wait_for(lambda e: e.new_state is State.ADMIN_DOWN, timeout=1)
    finally:
        a.close()
        b.close()


async def test_json_lines_of_a_session_life(captured: tuple[Lines, Lines]) -> None:
    await live_a_session_life()
    as_json, _ = captured
    records = [json.loads(line) for line in as_json.lines]  # every line is one object
    assert all("\n" not in line for line in as_json.lines)
    for rec in records:
        assert RFC3339_MS_UTC.match(rec["timestamp"]), rec
        assert rec["level"] in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
        assert rec["logger"].startswith("aiobfd")
        assert isinstance(rec["message"], str) and rec["message"]

    # The first daemon's session (the second one logs into the same logger).
    session = [r for r in records if r.get("local") == "127.0.4.1"]
    created, *changes = session
    assert "created" in created["message"]
    assert created.keys() >= SESSION_FIELDS
    assert (created["local"], created["remote"]) == ("127.0.4.1", "127.0.4.2")
    discr = created["local_discr"]
    assert isinstance(discr, int) and discr > 0

    for rec in changes:
        assert rec.keys() >= CHANGE_FIELDS, rec
        assert rec["local_discr"] == discr
        assert rec["diag_name"] == Diag(rec["diag"]).label
        assert rec["old_state"] != rec["new_state"]
    path = [(r["old_state"], r["new_state"]) for r in changes]
    assert path[-2:] == [("up", "down"), ("down", "admin_down")], path
    assert ("up", "down") in path and path.index(("up", "down")) >= 1
    assert path[: path.index(("up", "down"))][-1][1] == "up"

    up = next(r for r in changes if r["new_state"] == "up")
    assert up["level"] == "INFO"
    assert up["remote_discr"] > 0
    assert up["tx_interval_ms"] > 0 and up["rx_interval_ms"] > 0 and up["detect_time_ms"] > 0

    expiry = next(r for r in changes if r["old_state"] == "up")
    assert expiry["level"] == "WARNING"
    assert expiry["diag"] == 1 and expiry["diag_name"] == "control_detection_time_expired"
    # The Detection Time that ran out (50 ms x 3), not the reset value after it.
    assert expiry["detect_time_ms"] == 150.0
    assert 150.0 <= expiry["ms_since_last_packet"] < 150.0 + 100.0

    admin = changes[-1]
    assert admin["diag"] == 7 and admin["diag_name"] == "administratively_down"
    assert "ms_since_last_packet" not in admin


async def test_text_lines_of_a_session_life(captured: tuple[Lines, Lines]) -> None:
    await live_a_session_life()
    as_json, as_text = captured
    assert len(as_text.lines) == len(as_json.lines) >= 5
    for text, obj in zip(as_text.lines, map(json.loads, as_json.lines), strict=True):
        m = TEXT_LINE.match(text)
        assert m, text
        assert (m["logger"], m["level"], m["message"]) == (
            obj["logger"],
            obj["level"],
            obj["message"],
        )
    joined = "\n".join(as_text.lines)
    assert "session 127.0.4.2 created" in joined
    assert "UP -> DOWN (diag control_detection_time_expired)" in joined
    assert "DOWN -> ADMIN_DOWN (diag administratively_down)" in joined
