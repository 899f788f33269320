"""Receive sockets of their own: a limit (the sessions beyond it read from the shared
listener stay Up), and a bounded number opened in one read of a listener."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from typing import Any

import pytest

from aiobfd.config import PeerSpec
from aiobfd.engine import Daemon, monotonic_us
from aiobfd.engine import receive as receive_module
from aiobfd.io import sockets
from aiobfd.protocol.packet import State
from aiobfd.protocol.session import SessionConfig
from aiobfd.status import session_info

MS = 1000
FAST = SessionConfig(desired_min_tx_us=50 * MS, required_min_rx_us=50 * MS, detect_mult=3)
REMOTES = [f"127.0.1.{i}" for i in range(1, 5)]


def spec(local: str, remote: str) -> PeerSpec:
    return PeerSpec(remote, local, socket.AF_INET, session=FAST)


def receive_sockets(daemon: Daemon) -> Counter[str]:
    now = monotonic_us()
    return Counter(session_info(p, now)["receive_socket"] for p in daemon.peers.values())


async def until(predicate: object, timeout: float = 5.0) -> None:
    assert callable(predicate)
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_the_limit_holds_and_the_sessions_beyond_it_stay_up() -> None:
    a = Daemon([spec("127.0.0.1", r) for r in REMOTES])
    b = Daemon([spec(r, "127.0.0.1") for r in REMOTES])
    a.receive.limit_sockets(2)
    downs: list[str] = []
    a.add_listener(
        lambda peer, event: (
            downs.append(peer.spec.remote)
            if getattr(event, "old_state", None) is State.UP
            else None
        )
    )
    await a.start()
    await b.start()
    try:
        await until(lambda: all(p.session.state is State.UP for p in a.peers.values()))
        await asyncio.sleep(1.2)  # every session has been offered a socket
        assert a.session_sockets == 2
        assert receive_sockets(a) == {"own": 2, "shared": 2}
        shared = [p for p in a.peers.values() if p.rx_sock is None]
        before = [p.session.counters.packets_in for p in shared]
        await asyncio.sleep(0.5)
        # Read from the listener: 10 packets each in 0.5 s at 50 ms.
        assert all(
            p.session.counters.packets_in - n >= 7 for p, n in zip(shared, before, strict=True)
        )

        a.receive.limit_sockets(1)  # a reload that needs descriptors: closed at once
        assert a.session_sockets == 1
        await asyncio.sleep(0.5)

        a.receive.limit_sockets(None)  # room again: every session gets one within a second
        await until(lambda: a.session_sockets == 4, timeout=3)
        assert receive_sockets(a) == {"own": 4}
        assert downs == []
    finally:
        a.close()
        b.close()


async def test_a_read_of_the_listener_opens_a_bounded_number_of_sockets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Binding a socket on a crowded address and port costs the kernel a walk
    over the others: one read of the listener opens at most DEDICATE_PER_READ."""
    remotes = [f"127.0.2.{i}" for i in range(1, 41)]
    opened: list[int] = []
    reads: list[int] = []
    real_open = sockets.open_session_socket
    real_read = receive_module.Receive._on_readable

    def counting_open(*args: Any, **kwargs: Any) -> socket.socket:
        opened.append(1)
        return real_open(*args, **kwargs)

    def counting_read(self: receive_module.Receive, listener: Any) -> None:
        before = len(opened)
        real_read(self, listener)
        reads.append(len(opened) - before)

    monkeypatch.setattr(receive_module, "open_session_socket", counting_open)
    monkeypatch.setattr(receive_module.Receive, "_on_readable", counting_read)
    a = Daemon([spec("127.0.0.1", r) for r in remotes])
    b = Daemon([spec(r, "127.0.0.1") for r in remotes])
    await b.start()
    # The peers' first packets queue on a's listener before a reads it.
    await asyncio.sleep(0.2)
    await a.start()
    try:
        await until(lambda: a.session_sockets == len(remotes), timeout=5)
        assert reads and max(reads) <= receive_module.DEDICATE_PER_READ
    finally:
        a.close()
        b.close()
