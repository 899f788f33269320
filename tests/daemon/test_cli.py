"""The command lines of ``aiobfd`` and ``aiobfdctl``, run as real processes."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

AIOBFD = [sys.executable, "-m", "aiobfd"]
CTL = [sys.executable, "-m", "aiobfd.ctl"]


def run(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*AIOBFD, *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["127.0.0.1", "127.0.0.2", "-r", "0"], "out of range"),
        (["127.0.0.1", "127.0.0.2", "-t", "4294968"], "out of range"),
        (["127.0.0.1", "127.0.0.2", "-t", "abc"], "not a whole number"),
        (["127.0.0.1", "127.0.0.2", "-m", "0"], "out of range"),
        (["127.0.0.1", "127.0.0.2", "-m", "256"], "out of range"),
        (["127.0.0.1", "127.0.0.2", "--receive-holdoff", "1001"], "out of range"),
        (["192.0.2.55", "127.0.0.2"], "not an address of this host"),
        (["127.0.0.1", "::1"], "same address family"),
        (["127.0.0.1", "127.0.0.2", "127.0.0.2"], "duplicate remote"),
        (["127.0.0.1", "no-such-host.invalid"], "cannot resolve"),
        (["-6", "127.0.0.1", "::1"], "not an IPv6 address"),
        (["::1", "fe80::1"], "link-local"),
        (["::1", "fe80::1%nosuchif0"], "no interface"),
        (["127.0.0.1"], "required"),
        (["127.0.0.1", "127.0.0.2", "--bogus"], "unrecognized"),
    ],
)
def test_bad_arguments_give_one_line_and_status_2(args: list[str], needle: str) -> None:
    result = run(*args)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert needle in lines[0]
    assert "Traceback" not in result.stderr


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("aiobfd ")
    assert "(core: python)" in result.stdout or "(core: mypyc)" in result.stdout


def _wait_for(path: Path, proc: subprocess.Popen[str] | None = None, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(
                f"aiobfd exited with {proc.returncode}: {proc.stdout.read() if proc.stdout else ''}"
            )
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def _ctl(sock: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CTL, "-s", str(sock), *args], capture_output=True, text=True, timeout=10
    )


def _sessions(sock: Path) -> list[dict[str, Any]]:
    result = _ctl(sock, "--json", "show", "sessions")
    assert result.returncode == 0, result.stderr
    sessions: list[dict[str, Any]] = json.loads(result.stdout)
    return sessions


def test_two_processes_over_loopback_and_sigterm(tmp_path: Path) -> None:
    """Hostnames resolve; SIGTERM ends with AdminDown and status 0 within 1 s."""
    sa, sb = tmp_path / "a.sock", tmp_path / "b.sock"
    common = ["-r", "50", "-t", "50", "-m", "3", "--metrics-port", "0"]
    a = subprocess.Popen(
        [*AIOBFD, "localhost", "127.0.0.2", "-4", *common, "--control-socket", str(sa)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    b = subprocess.Popen(
        [*AIOBFD, "127.0.0.2", "127.0.0.1", *common, "--control-socket", str(sb)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_for(sa, a)
        _wait_for(sb, b)
        assert stat.S_IMODE(os.stat(sa).st_mode) == 0o600
        deadline = time.monotonic() + 5
        while _sessions(sa)[0]["state"] != "up":
            assert time.monotonic() < deadline, "never came up"
            time.sleep(0.05)
        brief = _ctl(sa, "show", "sessions")
        assert brief.returncode == 0 and "127.0.0.2" in brief.stdout and " up " in brief.stdout
        detail = _ctl(sa, "show", "session", "127.0.0.2")
        assert detail.returncode == 0 and "Control packets in" in detail.stdout
        unknown = _ctl(sa, "show", "session", "192.0.2.9")
        assert unknown.returncode == 1 and "no session" in unknown.stderr

        started = time.monotonic()
        b.send_signal(signal.SIGTERM)
        assert b.wait(timeout=2) == 0
        assert time.monotonic() - started < 1.0
        info = _sessions(sa)[0]
        assert info["state"] == "down"
        assert info["local_diag"] == 3  # neighbor signaled session down
        assert info["remote_state"] == "admin_down"
        assert info["remote_diag"] == 7
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
                try:
                    p.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    p.kill()
    assert a.returncode == 0
    assert not sa.exists()  # the control socket is removed on exit


def test_ctl_without_daemon_names_the_socket(tmp_path: Path) -> None:
    sock = tmp_path / "none.sock"
    result = _ctl(sock, "show", "sessions")
    assert result.returncode == 1
    assert str(sock) in result.stderr and "not running" in result.stderr


def test_control_socket_that_cannot_be_made_gives_one_line_and_status_2(tmp_path: Path) -> None:
    path = tmp_path / "dir.sock"
    path.mkdir()  # not a socket: refused, not removed
    result = run("127.0.0.1", "127.0.0.2", "--metrics-port", "0", "--control-socket", str(path))
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aiobfd: error: control socket: "), lines
    assert path.is_dir()
