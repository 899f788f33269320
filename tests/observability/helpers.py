"""Shared pieces of the observability tests: loopback daemons, tools, ports."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from collections.abc import Callable

import pytest

from aiobfd.config import PeerSpec
from aiobfd.engine import Daemon, Peer
from aiobfd.protocol.events import Event, StateChanged
from aiobfd.protocol.session import SessionConfig

MS = 1000
FAST = SessionConfig(desired_min_tx_us=50 * MS, required_min_rx_us=50 * MS, detect_mult=3)


def spec(local: str, remote: str, cfg: SessionConfig = FAST) -> PeerSpec:
    return PeerSpec(remote, local, socket.AF_INET, session=cfg)


def require_tool(name: str) -> str:
    """The path of ``name``; skip without it, but fail under CI (CI=true)."""
    path = shutil.which(name) or (
        f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None
    )
    if path is None:
        message = f"{name} not installed (Debian package prometheus; scripts/test.sh installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the OS's choice)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Changes:
    """Records a daemon's state changes; ``wait_for`` waits for a matching one."""

    def __init__(self, daemon: Daemon) -> None:
        self.seen: list[tuple[Peer, StateChanged]] = []
        daemon.add_listener(self._on_event)

    def _on_event(self, peer: Peer, event: Event) -> None:
        if isinstance(event, StateChanged):
            self.seen.append((peer, event))

    async def wait_for(
        self, pred: Callable[[StateChanged], bool], timeout: float = 5.0
    ) -> StateChanged:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            for _, ev in self.seen:
                if pred(ev):
                    return ev
            assert loop.time() < end, f"no such state change; saw {[e for _, e in self.seen]}"
            await asyncio.sleep(0.01)


async def wait_until(pred: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        assert loop.time() < end, f"timed out waiting for {what or pred}"
        await asyncio.sleep(0.02)
