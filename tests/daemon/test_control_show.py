"""``show sessions`` and a watcher's snapshot over the control socket, written in slices."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from aiobfd import control
from aiobfd.config import PeerSpec
from aiobfd.control import SHOW_BATCH, ControlServer
from aiobfd.engine import Daemon
from aiobfd.engine.turns import TURN_BUDGET_US
from aiobfd.protocol.session import SessionConfig
from aiobfd.status import session_info


async def test_show_sessions_in_slices_is_one_json_line(tmp_path: Path) -> None:
    n = 13 * SHOW_BATCH + 5
    daemon = Daemon(
        [
            PeerSpec(f"127.0.3.{i}", "127.0.0.1", socket.AF_INET, session=SessionConfig())
            for i in range(1, n + 1)
        ],
        port=0,
    )
    await daemon.start()
    server = ControlServer(daemon, str(tmp_path / "ctl.sock"))
    await server.start()
    try:
        reader, writer = await asyncio.open_unix_connection(server.path, limit=2**22)
        for _ in range(2):  # the connection stays usable after a sliced reply
            writer.write(b'{"command": "show sessions"}\n')
            reply = json.loads(await reader.readline())
            assert reply["ok"] is True
            assert [s["peer"] for s in reply["sessions"]] == [
                f"127.0.3.{i}" for i in range(1, n + 1)
            ]
        writer.write(b'{"command": "version"}\n')
        assert json.loads(await reader.readline())["ok"] is True
        writer.close()
    finally:
        await server.close()
        daemon.close()


async def test_watch_snapshot_lets_the_loop_run_between_slices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A watcher's snapshot of many sessions is written a slice at a time: the
    sessions' timers run in between (it held them all for 100 ms and more)."""
    n = 13 * SHOW_BATCH + 5
    daemon = Daemon(
        [
            PeerSpec(f"127.0.3.{i}", "127.0.0.1", socket.AF_INET, session=SessionConfig())
            for i in range(1, n + 1)
        ],
        port=0,
    )
    written = [0]
    real = session_info

    def counting(*args: Any, **kwargs: Any) -> Any:
        written[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(control, "session_info", counting)
    await daemon.start()
    server = ControlServer(daemon, str(tmp_path / "ctl.sock"))
    await server.start()
    seen: list[int] = []
    loop = asyncio.get_running_loop()

    def tick() -> None:  # what the loop saw each time it ran something else
        seen.append(written[0])
        if written[0] < n and len(seen) < 100_000:
            loop.call_soon(tick)

    try:
        reader, writer = await asyncio.open_unix_connection(server.path, limit=2**22)
        loop.call_soon(tick)
        writer.write(b'{"command": "watch"}\n')
        assert json.loads(await reader.readline())["watching"] is True
        for _ in range(n):
            assert json.loads(await reader.readline())["event"] == "snapshot"
        assert any(0 < k < n for k in seen), seen
        writer.close()
    finally:
        await server.close()
        daemon.close()


async def test_show_sessions_yields_within_its_turn_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sessions slow to encode (as 10,000 are, out of the caches) make a
    turn end sooner: the loop runs again within about TURN_BUDGET_US, whatever
    the number of sessions a turn would otherwise hold."""
    n = 40 * SHOW_BATCH
    daemon = Daemon(
        [
            PeerSpec(f"127.0.3.{i}", "127.0.0.1", socket.AF_INET, session=SessionConfig())
            for i in range(1, n + 1)
        ],
        port=0,
    )
    real = session_info

    def slow(*args: Any, **kwargs: Any) -> Any:
        deadline = time.perf_counter() + 0.0002  # 0.2 ms a session
        while time.perf_counter() < deadline:
            pass
        return real(*args, **kwargs)

    monkeypatch.setattr(control, "session_info", slow)
    await daemon.start()
    server = ControlServer(daemon, str(tmp_path / "ctl.sock"))
    await server.start()
    loop = asyncio.get_running_loop()
    gaps: list[float] = []
    last = [time.perf_counter()]
    running = [True]

    def tick() -> None:
        now = time.perf_counter()
        gaps.append(now - last[0])
        last[0] = now
        if running[0]:
            loop.call_soon(tick)

    try:
        reader, writer = await asyncio.open_unix_connection(server.path, limit=2**22)
        loop.call_soon(tick)
        writer.write(b'{"command": "show sessions"}\n')
        reply = json.loads(await reader.readline())
        running[0] = False
        assert len(reply["sessions"]) == n
        # A turn stops at the first look at the clock past the budget: at
        # most a batch (1.6 ms here) beyond it.
        assert max(gaps) < TURN_BUDGET_US / 1e6 + SHOW_BATCH * 0.0002 + 0.003, max(gaps)
        writer.close()
    finally:
        await server.close()
        daemon.close()
