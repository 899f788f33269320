"""A drain over loopback: two daemons, the control socket, the ExaBGP helper's logic.

``drain`` makes the helper withdraw while BFD is still Up, the AdminDown comes
after the wait, ``undrain`` brings the session and the announcement back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest

from aiobfd import client, exabgp
from aiobfd.control import ControlServer
from aiobfd.engine import Daemon
from aiobfd.protocol.packet import Diag, State
from tests.daemon.test_loopback import Recorder, entered, spec

ROUTE = "203.0.113.53/32"


async def test_drain_withdraws_first_then_admin_down_and_undrain_brings_it_back(
    tmp_path: Path,
) -> None:
    a = Daemon([spec("127.0.0.1", "127.0.0.2")])
    b = Daemon([spec("127.0.0.2", "127.0.0.1")])
    ra, rb = Recorder(a), Recorder(b)
    await a.start()
    await b.start()
    server = ControlServer(a, str(tmp_path / "a.sock"))
    await server.start()
    lines: list[tuple[float, str]] = []
    announcer = exabgp.Announcer(
        [ROUTE], "self", lambda line: lines.append((time.monotonic(), line))
    )
    stream = await client.AsyncWatch.open(server.path, 5.0)
    helper = asyncio.ensure_future(exabgp.follow(stream, exabgp.Selection(), announcer))
    try:
        await ra.wait_for(entered(State.UP))
        await rb.wait_for(entered(State.UP))
        for _ in range(100):
            if lines and lines[-1][1].startswith("announce"):
                break
            await asyncio.sleep(0.01)
        assert lines[-1][1] == f"announce route {ROUTE} next-hop self"

        t0 = time.monotonic()
        answer = await server.handle({"command": "drain", "all": True, "wait_ms": 300})
        assert answer == {"draining": ["127.0.0.2"], "wait_ms": 300}
        admin = await ra.wait_for(entered(State.ADMIN_DOWN))
        t_admin = time.monotonic()
        withdraws = [t for t, line in lines if line.startswith("withdraw")]
        assert withdraws, lines
        # The withdrawal came first, while BFD was still Up; AdminDown after the wait.
        assert withdraws[0] < t0 + 0.1
        assert t_admin - t0 >= 0.29
        assert admin.diag is Diag.ADMINISTRATIVELY_DOWN
        remote = await rb.wait_for(entered(State.DOWN, "127.0.0.1"))
        assert remote.diag is Diag.NEIGHBOR_SIGNALED_SESSION_DOWN
        info = (await server.handle({"command": "show session", "peer": "127.0.0.2"}))["session"]
        assert info["draining"] and info["state"] == "admin_down"
        await asyncio.sleep(0.3)
        assert a.peers[next(iter(a.peers))].session.state is State.ADMIN_DOWN  # it idles

        ra.changes.clear()
        answer = await server.handle({"command": "undrain", "peer": "127.0.0.2"})
        assert answer == {"undrained": ["127.0.0.2"]}
        await ra.wait_for(entered(State.UP), timeout=5)
        for _ in range(100):
            if lines[-1][1].startswith("announce"):
                break
            await asyncio.sleep(0.01)
        assert lines[-1][1] == f"announce route {ROUTE} next-hop self"
    finally:
        helper.cancel()
        with contextlib.suppress(asyncio.CancelledError, client.ClientError):
            await helper
        stream.close()
        await server.close()
        a.close()
        b.close()


async def test_undrain_during_the_wait_cancels_the_admin_down(tmp_path: Path) -> None:
    a = Daemon([spec("127.0.0.1", "127.0.0.2")])
    b = Daemon([spec("127.0.0.2", "127.0.0.1")])
    ra = Recorder(a)
    await a.start()
    await b.start()
    server = ControlServer(a, str(tmp_path / "a.sock"))
    try:
        await ra.wait_for(entered(State.UP))
        await server.handle({"command": "drain", "peer": "127.0.0.2", "wait_ms": 200})
        await server.handle({"command": "undrain", "all": True})
        await asyncio.sleep(0.4)
        assert all(c.new_state is not State.ADMIN_DOWN for _, c in ra.changes)
        with pytest.raises(Exception, match="wait_ms"):
            await server.handle({"command": "drain", "all": True, "wait_ms": -1})
    finally:
        a.close()
        b.close()
