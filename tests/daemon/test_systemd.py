"""systemd's notify protocol, against a Unix datagram socket that plays systemd.

The daemon runs as a process with ``NOTIFY_SOCKET`` (and ``WATCHDOG_USEC``) set,
as ``Type=notify`` with ``WatchdogSec=`` would start it.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiobfd.systemd import Notifier

AIOBFD = [sys.executable, "-m", "aiobfd"]


class FakeSystemd:
    """A bound AF_UNIX datagram socket; each datagram is one notification."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address.replace("@", "\0", 1) if address.startswith("@") else address)

    def receive(self, timeout: float) -> tuple[float, dict[str, str]] | None:
        """(monotonic arrival time, the KEY=VALUE lines), or None after ``timeout``."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except TimeoutError:
            return None
        at = time.monotonic()
        fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
        return at, fields

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory: AF_UNIX paths are limited to 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="abfd-sd-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def systemd(short_dir: Path) -> Iterator[FakeSystemd]:
    fake = FakeSystemd(str(short_dir / "notify"))
    yield fake
    fake.close()


def start(short_dir: Path, notify: str, **env: str) -> subprocess.Popen[bytes]:
    environ = {k: v for k, v in os.environ.items() if k not in ("WATCHDOG_PID", "WATCHDOG_USEC")}
    environ.update(NOTIFY_SOCKET=notify, **env)
    return subprocess.Popen(
        [
            *AIOBFD, "127.0.0.1", "127.0.0.2", "-r", "50", "-t", "50",
            "--control-socket", str(short_dir / "ctl.sock"), "--metrics-port", "0",
        ],
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(5)


def port_3784_bound(address: str = "127.0.0.1") -> bool:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.bind((address, 3784))
    except OSError as exc:
        return exc.errno == errno.EADDRINUSE
    finally:
        probe.close()
    return False


def test_ready_watchdog_stopping(short_dir: Path, systemd: FakeSystemd) -> None:
    assert not port_3784_bound(), "127.0.0.1:3784 is busy: another BFD daemon runs"
    proc = start(short_dir, systemd.address, WATCHDOG_USEC="200000")
    try:
        first = systemd.receive(timeout=10)
        assert first is not None, "no READY=1"
        # Sockets are bound before READY=1 is sent.
        assert (short_dir / "ctl.sock").exists()
        assert port_3784_bound()
        _, fields = first
        assert fields.get("READY") == "1", fields
        assert fields.get("STATUS") == "1 session(s)"

        pings: list[float] = []
        others: list[dict[str, str]] = []
        until = time.monotonic() + 1.2
        while time.monotonic() < until:
            got = systemd.receive(timeout=0.5)
            assert got is not None, "watchdog pings stopped"
            at, fields = got
            if fields == {"WATCHDOG": "1"}:
                pings.append(at)
            else:
                others.append(fields)
        assert others == []  # READY=1 once, nothing else while running
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        # half of WATCHDOG_USEC: every 100 ms
        assert 9 <= len(pings) <= 14, gaps
        assert 0.08 <= statistics.median(gaps) <= 0.13, gaps
        assert max(gaps) < 0.2, gaps  # never as late as the watchdog timeout itself

        proc.send_signal(signal.SIGTERM)
        after: list[dict[str, str]] = []
        while (got := systemd.receive(timeout=2)) is not None:
            after.append(got[1])
            if got[1].get("STOPPING") == "1":
                break
        assert after and after[-1] == {"STOPPING": "1"}, after
        assert all(f == {"WATCHDOG": "1"} for f in after[:-1])
        assert len(after) <= 2  # at most one ping was on its way
        assert proc.wait(3) == 0
        assert systemd.receive(timeout=0.2) is None  # nothing after STOPPING=1
    finally:
        stop(proc)


def test_no_watchdog_without_watchdog_usec(short_dir: Path, systemd: FakeSystemd) -> None:
    proc = start(short_dir, systemd.address)
    try:
        first = systemd.receive(timeout=10)
        assert first is not None and first[1]["READY"] == "1"
        assert systemd.receive(timeout=0.5) is None
        proc.send_signal(signal.SIGINT)
        got = systemd.receive(timeout=2)
        assert got is not None and got[1] == {"STOPPING": "1"}
        assert proc.wait(3) == 0
    finally:
        stop(proc)


def test_watchdog_meant_for_another_process_is_ignored(
    short_dir: Path, systemd: FakeSystemd
) -> None:
    """WATCHDOG_PID names the process systemd watches; a child must not ping for it."""
    proc = start(short_dir, systemd.address, WATCHDOG_USEC="200000", WATCHDOG_PID="1")
    try:
        first = systemd.receive(timeout=10)
        assert first is not None and first[1]["READY"] == "1"
        assert systemd.receive(timeout=0.4) is None
    finally:
        stop(proc)


def test_abstract_notify_socket(short_dir: Path) -> None:
    fake = FakeSystemd(f"@aiobfd-test-{os.getpid()}")
    proc = start(short_dir, fake.address)
    try:
        got = fake.receive(timeout=10)
        assert got is not None and got[1]["READY"] == "1"
        proc.send_signal(signal.SIGTERM)
        got = fake.receive(timeout=2)
        assert got is not None and got[1] == {"STOPPING": "1"}
        assert proc.wait(3) == 0
    finally:
        stop(proc)
        fake.close()


def test_failed_start_sends_no_ready(short_dir: Path, systemd: FakeSystemd) -> None:
    """A daemon that cannot start (here: a foreign LOCAL) never says READY=1."""
    environ = {**os.environ, "NOTIFY_SOCKET": systemd.address}
    result = subprocess.run(
        [*AIOBFD, "192.0.2.55", "127.0.0.2", "--metrics-port", "0"],
        env=environ,
        capture_output=True,
        timeout=20,
    )
    assert result.returncode == 2
    assert systemd.receive(timeout=0.2) is None


# ------------------------------------------------------------------ in-process


def test_notifier_without_notify_socket_does_nothing() -> None:
    notifier = Notifier.from_environment({})
    assert not notifier.enabled
    notifier.ready("x")
    notifier.stopping()
    notifier.close()


def test_notifier_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "3000000"}
    assert Notifier.from_environment(env)._watchdog_s == 3.0
    assert Notifier.from_environment({**env, "WATCHDOG_PID": str(os.getpid())})._watchdog_s == 3.0
    assert Notifier.from_environment({**env, "WATCHDOG_PID": "1"})._watchdog_s == 0.0
    assert Notifier.from_environment({**env, "WATCHDOG_USEC": "abc"})._watchdog_s == 0.0


async def test_notifier_in_process(systemd: FakeSystemd) -> None:
    notifier = Notifier(systemd.address, watchdog_usec=100_000)
    assert notifier.enabled
    notifier.ready("2 session(s)")
    got = systemd.receive(timeout=1)
    assert got is not None and got[1] == {"READY": "1", "STATUS": "2 session(s)"}
    got = systemd.receive(timeout=1)
    assert got is not None and got[1] == {"WATCHDOG": "1"}  # the first ping at once
    await asyncio.sleep(0.12)  # two more, 50 ms apart
    notifier.stopping()
    notifier.stopping()  # once only
    notifier.close()
    seen = []
    while (got := systemd.receive(timeout=0.1)) is not None:
        seen.append(got[1])
    assert seen[-1] == {"STOPPING": "1"}
    assert seen[:-1] == [{"WATCHDOG": "1"}] * (len(seen) - 1) and 1 <= len(seen) - 1 <= 3


def test_notifier_survives_a_missing_systemd(short_dir: Path) -> None:
    """A notification nobody receives does not raise, and does not break the
    notifier: once systemd listens again, the next one arrives."""
    address = str(short_dir / "gone")
    notifier = Notifier(address)
    try:
        notifier.ready()  # nothing listens there: no exception
        systemd = FakeSystemd(address)
        try:
            notifier.stopping()
            got = systemd.receive(timeout=2)
            assert got is not None and got[1] == {"STOPPING": "1"}
        finally:
            systemd.close()
    finally:
        notifier.close()
