"""The control socket's watch stream: a snapshot, then every state change."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

from aiobfd.config import PeerSpec
from aiobfd.control import WATCH_QUEUE, ControlServer
from aiobfd.engine import Daemon
from aiobfd.protocol.session import SessionConfig

MS = 1000
FAST = SessionConfig(desired_min_tx_us=30 * MS, required_min_rx_us=30 * MS, detect_mult=3)


async def test_watch_streams_snapshot_then_changes(tmp_path: Path) -> None:
    a = Daemon([PeerSpec("127.0.0.2", "127.0.0.1", socket.AF_INET, session=FAST)])
    b = Daemon([PeerSpec("127.0.0.1", "127.0.0.2", socket.AF_INET, session=FAST)])
    await a.start()
    server = ControlServer(a, str(tmp_path / "c.sock"))
    await server.start()
    try:
        reader, writer = await asyncio.open_unix_connection(str(tmp_path / "c.sock"))
        writer.write(b'{"command": "watch"}\n')
        assert json.loads(await reader.readline()) == {"ok": True, "watching": True, "sessions": 1}
        snap = json.loads(await reader.readline())
        assert snap["event"] == "snapshot" and snap["state"] == "down"
        await b.start()
        states = []
        while "up" not in states:
            rec = json.loads(await asyncio.wait_for(reader.readline(), 5))
            assert rec["event"] == "state" and rec["remote"] == "127.0.0.2"
            states.append(rec["state"])
        b.close()
        rec = json.loads(await asyncio.wait_for(reader.readline(), 5))
        assert (rec["old_state"], rec["state"], rec["diag"]) == ("up", "down", 1)
        a.remove_peer(next(iter(a.peers)))
        rec = json.loads(await asyncio.wait_for(reader.readline(), 5))
        assert (rec["event"], rec["state"]) == ("state", "admin_down")  # the goodbye
        rec = json.loads(await asyncio.wait_for(reader.readline(), 5))
        assert rec["event"] == "removed" and rec["remote"] == "127.0.0.2"
        writer.close()
        await asyncio.sleep(0.1)
        assert len(a.reporter.listeners) == 0  # the watcher's listener is gone with it
        assert WATCH_QUEUE > 0
    finally:
        await server.close()
        a.close()
        b.close()
