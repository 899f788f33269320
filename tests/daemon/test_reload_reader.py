"""A reload's reading in a child process: its result, its errors, its timeout."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from aiobfd import reload_reader
from aiobfd.config import ConfigError, PeerSpec, Settings
from aiobfd.protocol.auth import AuthConfig, AuthKey
from aiobfd.protocol.echo import EchoConfig
from aiobfd.protocol.packet import AuthType
from aiobfd.protocol.session import SessionConfig


def count(settings: Settings) -> int:
    return len(settings.peers)


def settings_of(n: int) -> Settings:
    return Settings(
        peers=tuple(
            PeerSpec(f"127.1.{i // 250}.{i % 250 + 1}", "127.0.0.1", socket.AF_INET)
            for i in range(n)
        ),
        path="/etc/aiobfd.toml",
        warnings=("a warning",),
    )


async def test_the_result_comes_back_whole_and_measured_in_the_child(tmp_path: Path) -> None:
    expected = settings_of(3000)  # a dozen chunks
    marker = tmp_path / "pid"

    def read() -> Settings:
        marker.write_text(str(os.getpid()))
        return expected

    result = await reload_reader.read_in_child(read, lambda s: (os.getpid(), len(s.peers)), 10)
    assert result.settings == expected
    child = int(marker.read_text())
    assert child != os.getpid() and result.measured == (child, 3000)


async def test_the_core_s_frozen_configurations_come_back_too() -> None:
    """Sessions with authentication and echo: frozen dataclasses of the
    protocol core, which pickle cannot restore field by field once mypyc has
    compiled them (CI runs this on both cores)."""
    auth = AuthConfig(AuthType.KEYED_SHA1, (AuthKey(1, b"s1"), AuthKey(2, b"s2")), 2)
    session = SessionConfig(desired_min_tx_us=300_000, required_min_rx_us=300_000, auth=auth)
    expected = Settings(
        peers=(
            PeerSpec("127.1.0.1", "127.0.0.1", socket.AF_INET, session=session),
            PeerSpec("127.1.0.2", "127.0.0.1", socket.AF_INET, echo=EchoConfig(50_000, 5)),
        ),
        path="/etc/aiobfd.toml",
    )
    result = await reload_reader.read_in_child(lambda: expected, count, 10)
    assert result.settings == expected
    got = result.settings.peers[0].session.auth
    assert got is not None and got.keys[1].secret == b"s2" and got.transmit_key_id == 2


async def test_a_running_peer_comes_back_as_the_running_object() -> None:
    """A peer the file did not change is sent as its position among the
    running ones and taken back from there: what the loop unpickles is what
    changed, not the whole file."""
    running = settings_of(3000).peers
    slower = SessionConfig(desired_min_tx_us=900_000, required_min_rx_us=900_000)

    def read() -> Settings:  # built anew: equal objects, not the same ones
        peers = [*settings_of(3000).peers[1:]]  # the first one is gone
        peers[10] = dataclasses.replace(peers[10], session=slower)  # one changed
        peers.append(PeerSpec("127.9.0.1", "127.0.0.1", socket.AF_INET))  # one new
        return Settings(peers=tuple(peers), path="/etc/aiobfd.toml")

    result = await reload_reader.read_in_child(read, count, 10, running)
    got = result.settings.peers
    assert result.settings == read()
    assert got[10] == read().peers[10] and got[10] is not running[11]
    assert got[-1].remote == "127.9.0.1"
    same = [i for i, spec in enumerate(got) if spec is running[i + 1 if i < 2999 else 0]]
    assert len(same) == 2998 and 10 not in same


def test_a_chunk_holds_few_new_specs_and_many_positions() -> None:
    running = settings_of(600).peers
    new = tuple(
        dataclasses.replace(spec, remote=f"127.8.{i // 250}.{i % 250 + 1}") if i % 2 else spec
        for i, spec in enumerate(running)
    )
    chunks = reload_reader._chunks(new, running)
    specs = [[item for item in chunk if not isinstance(item, int)] for chunk in chunks]
    most = reload_reader.CHUNK_PEERS
    assert [len(c) for c in specs] == [most] * (300 // most) + [300 % most]
    assert [item for chunk in chunks for item in chunk if isinstance(item, int)] == list(
        range(0, 600, 2)
    )
    assert len(reload_reader._chunks(running, running)) == 1  # 600 positions, one chunk
    many = reload_reader.CHUNK_ITEMS
    assert [len(c) for c in reload_reader._chunks(running * 4, running)] == [many] * (
        2400 // many
    ) + [2400 % many]


async def test_a_configuration_error_is_raised_here_with_its_message() -> None:
    def read() -> Settings:
        raise ConfigError("/etc/aiobfd.toml: peers[2].remote: not an address")

    with pytest.raises(ConfigError, match=r"^/etc/aiobfd.toml: peers\[2\]\.remote: not an"):
        await reload_reader.read_in_child(read, count, 10)


async def test_a_bug_in_the_child_is_one_line() -> None:
    def read() -> Settings:
        table: dict[str, Settings] = {}
        return table["missing"]

    with pytest.raises(reload_reader.ReadFailed, match=r"^KeyError: 'missing'$"):
        await reload_reader.read_in_child(read, count, 10)


async def test_a_child_that_takes_too_long_is_killed_and_collected(tmp_path: Path) -> None:
    marker = tmp_path / "pid"

    def read() -> Settings:
        marker.write_text(str(os.getpid()))
        time.sleep(60)
        return Settings()

    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        await reload_reader.read_in_child(read, count, 0.5)
    assert loop.time() - started < 2
    child = int(marker.read_text())
    for _ in range(100):  # reaped shortly after the kill: no zombie left
        if not Path(f"/proc/{child}").exists():
            break
        await asyncio.sleep(0.02)
    assert not Path(f"/proc/{child}").exists()


async def test_the_loop_turns_while_the_child_reads() -> None:
    def read() -> Settings:
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:  # busy, as parsing is
            pass
        return settings_of(10)

    loop = asyncio.get_running_loop()
    turns: list[float] = []

    async def ticker() -> None:
        while True:
            turns.append(loop.time())
            await asyncio.sleep(0.005)

    task = loop.create_task(ticker())
    try:
        await reload_reader.read_in_child(read, count, 10)
    finally:
        task.cancel()
    gaps = [b - a for a, b in itertools.pairwise(turns)]
    assert len(turns) > 40 and max(gaps) < 0.05


@pytest.mark.parametrize("realtime", [False, True])
async def test_the_child_reads_below_the_daemon_unless_the_loop_is_real_time(
    realtime: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CHILD_NICE below the daemon; beside a real-time loop (which no
    SCHED_OTHER process delays) the daemon's own niceness, not the 0 that
    SCHED_RESET_ON_FORK would leave it and CHILD_NICE on top."""
    monkeypatch.setattr(reload_reader, "_realtime", lambda: realtime)
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    result = await reload_reader.read_in_child(
        lambda: settings_of(1), lambda s: os.getpriority(os.PRIO_PROCESS, 0), 10
    )
    expected = ours if realtime else min(ours + reload_reader.CHILD_NICE, reload_reader.MAX_NICE)
    assert result.measured == expected


# ------------------------------------------------------------ the reader host


def gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


async def until_gone(pid: int) -> bool:
    for _ in range(100):  # reaped shortly after the kill: no zombie left
        if gone(pid):
            return True
        await asyncio.sleep(0.02)
    return gone(pid)


def counted_file(path: Path) -> Callable[[], Settings]:
    """A reading of ``path``: how many peers; "hang" hangs."""

    def read() -> Settings:
        text = path.read_text()
        if text == "hang":
            time.sleep(60)
        return settings_of(int(text))

    return read


def in_force(new: Settings, running: Settings) -> tuple[int, int]:
    """Measured in the host: who measured, and how many peers it takes for running."""
    return os.getpid(), len(running.peers)


async def test_the_host_reads_each_reload_against_the_configuration_in_force(
    tmp_path: Path,
) -> None:
    """Forked once, the host keeps what the daemon runs: its start, then each
    reading the daemon says it applied; a running peer comes back as the
    daemon's own object, whichever reading made it."""
    path = tmp_path / "peers"
    start = settings_of(3)
    host = reload_reader.ReaderHost.start(counted_file(path), in_force, start)
    try:
        path.write_text("5")
        first = await host.read(start, 10)
        assert first.measured == (host.pid, 3) and host.pid != os.getpid()
        assert Path(f"/proc/{host.pid}/comm").read_text().strip() == "aiobfd-reader"
        assert first.settings == settings_of(5)
        assert all(a is b for a, b in zip(first.settings.peers, start.peers, strict=False))
        assert host.serves(start) and host.serves(first.settings)
        # Not applied (refused, say): the next reading is against the start still.
        path.write_text("4")
        second = await host.read(start, 10)
        assert second.measured == (host.pid, 3)
        assert [
            p is q for p, q in zip(second.settings.peers, first.settings.peers, strict=False)
        ] == [
            True,
            True,
            True,
            False,
        ]
        assert not host.serves(first.settings)
        # Applied: the next reading is against it.
        path.write_text("6")
        third = await host.read(second.settings, 10)
        assert third.measured == (host.pid, 4)
        assert all(
            a is b for a, b in zip(third.settings.peers, second.settings.peers, strict=False)
        )
        assert third.settings.peers[3] is second.settings.peers[3]
        # An error leaves what is in force as it was.
        path.write_text("not a number")
        with pytest.raises(reload_reader.ReadFailed, match="ValueError"):
            await host.read(second.settings, 10)
        assert host.alive and host.serves(second.settings)
    finally:
        host.close()
    assert not host.alive and await until_gone(host.pid)


async def test_a_host_that_takes_too_long_is_killed_and_given_up(tmp_path: Path) -> None:
    path = tmp_path / "peers"
    path.write_text("hang")
    start = settings_of(1)
    host = reload_reader.ReaderHost.start(counted_file(path), in_force, start)
    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(TimeoutError):
        await host.read(start, 0.5)
    assert loop.time() - began < 2
    assert not host.alive and not host.serves(start)
    assert await until_gone(host.pid)


async def test_a_host_that_died_says_so(tmp_path: Path) -> None:
    path = tmp_path / "peers"
    path.write_text("1")
    start = settings_of(1)
    host = reload_reader.ReaderHost.start(counted_file(path), in_force, start)
    os.kill(host.pid, signal.SIGKILL)
    with pytest.raises(reload_reader.ReadFailed, match="reader process"):
        await host.read(start, 10)
    assert not host.alive
    assert await until_gone(host.pid)
