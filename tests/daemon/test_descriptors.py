"""Descriptors and source ports of a running daemon: RLIMIT_NOFILE raised to
what the sessions need (or one line why not), and a source port per session
unique over all local addresses (RFC 5881 §4)."""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from aiobfd.app import Application
from aiobfd.config import DaemonSettings, PeerSpec, Settings
from aiobfd.control import ControlError
from aiobfd.engine import Daemon
from aiobfd.io import fdlimit
from aiobfd.protocol.constants import SOURCE_PORT_MAX, SOURCE_PORT_MIN
from aiobfd.protocol.session import SessionConfig

AIOBFD = [sys.executable, "-m", "aiobfd"]
#: Two sessions, no metrics endpoint; the control socket says when it runs.
ARGS = ["127.0.0.1", "127.0.0.2", "127.0.0.3", "--metrics-port", "0"]
#: Below what two sessions need (about 200 with the allowances), above what
#: the interpreter needs to get there.
SMALL = 100
ROOT = os.geteuid() == 0
#: Root raises its own hard limit; without CAP_SYS_RESOURCE it cannot.
NO_CAPS = ["setpriv", "--bounding-set=-all", "--inh-caps=-all"] if ROOT else []
_CAP_SYS_RESOURCE = 24


def _has_sys_resource() -> bool:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> _CAP_SYS_RESOURCE & 1)
    return False


SLOW = SessionConfig(desired_min_tx_us=1_000_000, required_min_rx_us=1_000_000)


async def test_sessions_of_several_local_addresses_get_distinct_source_ports() -> None:
    specs = [
        PeerSpec(f"127.0.1.{i + 1}", f"127.0.0.{i % 6 + 1}", socket.AF_INET, session=SLOW)
        for i in range(120)
    ]
    daemon = Daemon(specs)
    await daemon.start()
    try:
        ports = {key: peer.source_port for key, peer in daemon.peers.items()}
        assert len(set(ports.values())) == 120
        assert all(SOURCE_PORT_MIN <= p <= SOURCE_PORT_MAX for p in ports.values())
        assert daemon.ports.sessions == daemon.ports.held == 120
        gone = [spec.key for spec in specs[:20]]
        for key in gone:
            daemon.remove_peer(key)
        # Their transmit sockets say AdminDown for 100 ms, then give the port back.
        assert daemon.ports.sessions == 120
        await asyncio.sleep(0.3)
        assert daemon.ports.sessions == 100
        assert all(daemon.ports.uses(ports[key]) == 0 for key in gone)
        peer = daemon.add_peer(specs[0])
        assert daemon.ports.uses(peer.source_port) == 1
    finally:
        daemon.close()
    assert daemon.ports.sessions == 0 and daemon.ports.held == 0


def limits(soft: int, hard: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return apply


def open_files(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no Max open files in /proc/PID/limits")


def run_until_ready(
    tmp_path: Path, preexec: Callable[[], None], prefix: list[str] | None = None
) -> tuple[tuple[int, int], str]:
    """Start aiobfd, wait until its control socket is there, and give its
    RLIMIT_NOFILE then and its log (on stdout); stop it (status 0)."""
    sock = tmp_path / "ctl.sock"
    proc = subprocess.Popen(
        [*(prefix or []), *AIOBFD, *ARGS, "--control-socket", str(sock)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=preexec,
    )
    try:
        deadline = time.monotonic() + 8
        while not sock.exists():
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "the control socket never appeared"
            time.sleep(0.02)
        found = open_files(proc.pid)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=8)
        assert proc.returncode == 0, out
        return found, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_small_soft_limit_is_raised_to_the_hard_one(tmp_path: Path) -> None:
    assert run_until_ready(tmp_path, limits(SMALL, 4096), NO_CAPS)[0] == (4096, 4096)


@pytest.mark.skipif(
    not _has_sys_resource(), reason="needs CAP_SYS_RESOURCE (a container's root may lack it)"
)
def test_root_raises_a_small_hard_limit_to_the_need(tmp_path: Path) -> None:
    (soft, hard), _ = run_until_ready(tmp_path, limits(SMALL, SMALL))
    need = fdlimit.needed(2, 1, hooks=8)
    assert soft == hard == need


def test_a_limit_that_cannot_be_raised_ends_the_start_with_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [*NO_CAPS, *AIOBFD, *ARGS, "--control-socket", str(tmp_path / "ctl.sock")],
        capture_output=True,
        text=True,
        timeout=10,
        preexec_fn=limits(SMALL, SMALL),
    )
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    need = fdlimit.needed(2, 1, hooks=8)
    least = fdlimit.needed(2, 1, hooks=8, receive_sockets=False)
    assert lines[0] == (
        f"aiobfd: error: RLIMIT_NOFILE too low: 2 session(s) need {need} descriptors "
        f"({least} at the least) and "
        f"the limit is {SMALL} (hard limit {SMALL}); set LimitNOFILE={need} in the systemd "
        f"unit, or ulimit -n {need} in the shell that starts aiobfd"
    )
    assert not (tmp_path / "ctl.sock").exists()


def test_a_limit_short_of_the_receive_sockets_only_starts_and_says_so(tmp_path: Path) -> None:
    least = fdlimit.needed(2, 1, hooks=8, receive_sockets=False)
    need = fdlimit.needed(2, 1, hooks=8)
    assert need == least + 2
    found, out = run_until_ready(tmp_path, limits(least + 1, least + 1), NO_CAPS)
    assert found == (least + 1, least + 1)
    lines = [x for x in out.splitlines() if "shared listener" in x]
    assert len(lines) == 1, out
    (line,) = lines
    assert "up to 1 session(s) will be read from the shared listener" in line
    assert f"LimitNOFILE={need}" in line


async def test_a_reload_that_does_not_fit_is_refused_and_the_running_one_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    quiet = DaemonSettings(control_socket="none", metrics_port=0)
    one = PeerSpec("127.0.1.1", "127.0.0.1", socket.AF_INET, session=SLOW)
    running = Settings(peers=(one,), daemon=quiet)
    many = Settings(
        peers=tuple(
            PeerSpec(f"127.0.1.{i + 1}", "127.0.0.1", socket.AF_INET, session=SLOW)
            for i in range(200)
        ),
        daemon=quiet,
    )
    app = Application(running, lambda: many)
    await app.start()
    try:
        # From now on a limit of 300 that cannot be raised (the reload's thread sees it).
        monkeypatch.setattr(resource, "getrlimit", lambda kind: (300, 300))

        def refuse(kind: int, limits: tuple[int, int]) -> None:
            raise ValueError("not allowed to raise maximum limit")

        monkeypatch.setattr(resource, "setrlimit", refuse)
        need = fdlimit.needed(200, 1, hooks=8)
        least = fdlimit.needed(200, 1, hooks=8, receive_sockets=False)
        with pytest.raises(ControlError) as info:
            await app.reload_async()
        assert str(info.value) == (
            "reload refused, running configuration kept: RLIMIT_NOFILE too low: 200 session(s) "
            f"need {need} descriptors ({least} at the least) and the limit is 300 (hard limit "
            "300); set "
            f"LimitNOFILE={need} in the systemd unit, or ulimit -n {need} in the shell that "
            "starts aiobfd"
        )
        assert app.settings is running and list(app.daemon.peers) == [one.key]
    finally:
        app.stop()
        await asyncio.wait_for(app.daemon.serve_forever(), 2)
        await app.close()
