"""``show sessions`` over the control socket, written in slices, is one JSON line."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

from aiobfd.config import PeerSpec
from aiobfd.control import SHOW_SLICE, ControlServer
from aiobfd.daemon import Daemon
from aiobfd.session import SessionConfig


async def test_show_sessions_in_slices_is_one_json_line(tmp_path: Path) -> None:
    n = 2 * SHOW_SLICE + 7
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
