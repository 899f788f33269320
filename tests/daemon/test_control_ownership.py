"""Who may serve the control socket: the daemon checks its directory, the clients the daemon.

Another user must not be able to stand in for aiobfd (issue 18): the daemon
refuses to bind in a directory someone else controls, and aiobfdctl and
aiobfd-exabgp talk only to a daemon running as root or as their own user (or,
for root, as the owner of the socket's private directory: the systemd unit's
/run/aiobfd, owned by User=aiobfd).  The impostor is a process that drops to
uid 4343 before it listens; that needs root, else those cases are skipped and
the uid the kernel reports is faked instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiobfd import client, ctl
from aiobfd.client import AsyncWatch, NotOurDaemon, request
from aiobfd.control import ControlServer
from aiobfd.engine import Daemon
from aiobfd.paths import UnsafeDirectory

ROOT = os.geteuid() == 0
STRANGER = 4343
needs_root = pytest.mark.skipif(not ROOT, reason="another uid needs root")

IMPOSTOR = """
import os, socket, sys
path, uid = sys.argv[1], int(sys.argv[2])
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(path)
os.chmod(path, 0o666)
os.setgid(uid)
os.setuid(uid)
listener.listen(8)  # the credentials the clients see are the listener's now
print("ready", flush=True)
while True:
    conn, _ = listener.accept()
    if conn.recv(4096):
        conn.sendall(b'{"ok": true, "version": "impostor", "watching": true}\\n')
    conn.close()
"""


@contextlib.contextmanager
def served_by_stranger(path: Path) -> Iterator[Path]:
    """The socket ``path``, served by a process of uid 4343 (STRANGER)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", IMPOSTOR, str(path), str(STRANGER)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        yield path
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def impostor(tmp_path: Path) -> Iterator[Path]:
    """A socket in a directory of ours, served by a process of uid 4343."""
    with served_by_stranger(tmp_path / "aiobfd.sock") as path:
        yield path


REFUSED = rf"^refusing to talk to .*aiobfd.sock: it is served by uid {STRANGER}, not by root or this user \(0\)$"


@needs_root
def test_aiobfdctl_refuses_a_daemon_of_another_user(
    impostor: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(NotOurDaemon, match=REFUSED):
        request(str(impostor), {"command": "version"})
    assert ctl.main(["-s", str(impostor), "show", "sessions"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("aiobfdctl: refusing to talk to ") and err.count("\n") == 1


@needs_root
async def test_aiobfd_exabgp_refuses_a_daemon_of_another_user(impostor: Path) -> None:
    with pytest.raises(NotOurDaemon, match=REFUSED):
        await AsyncWatch.open(str(impostor), 5.0)


@needs_root
def test_root_talks_to_the_user_owning_a_private_directory(tmp_path: Path) -> None:
    """The systemd unit: /run/aiobfd belongs to User=aiobfd (mode 0750), and root
    runs aiobfdctl; a directory others may write in does not count."""
    run = tmp_path / "run-aiobfd"
    run.mkdir(mode=0o750)
    os.chown(run, STRANGER, STRANGER)
    with served_by_stranger(run / "aiobfd.sock") as path:
        assert request(str(path), {"command": "version"})["version"] == "impostor"
        run.chmod(0o770)
        with pytest.raises(NotOurDaemon):
            request(str(path), {"command": "version"})


def test_the_uid_the_kernel_reports_decides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without root: the same check, with the peer's uid faked."""
    import socket
    import threading

    path = tmp_path / "c.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(4)
    received: list[bytes] = []

    def serve() -> None:
        for _ in range(2):
            conn, _ = listener.accept()
            with conn:
                data = conn.recv(4096)
                received.append(data)
                if data:
                    conn.sendall(b'{"ok": true, "version": "x"}\n')

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        assert request(str(path), {"command": "version"}) == {"ok": True, "version": "x"}
        me = os.geteuid()
        monkeypatch.setattr(client, "peer_uid", lambda sock: me + 1)
        with pytest.raises(NotOurDaemon, match=f"it is served by uid {me + 1}, not by root"):
            request(str(path), {"command": "version"})
        thread.join(5)
        assert received[1] == b""  # refused before a word was written
    finally:
        listener.close()


# -- the daemon's side ----------------------------------------------------------------


@needs_root
async def test_the_daemon_refuses_a_directory_of_another_user(tmp_path: Path) -> None:
    taken = tmp_path / "aiobfd-4242"
    taken.mkdir(mode=0o700)
    os.chown(taken, STRANGER, STRANGER)
    server = ControlServer(Daemon([]), str(taken / "aiobfd.sock"))
    with pytest.raises(UnsafeDirectory, match=rf"belongs to uid {STRANGER}, not to this user"):
        await server.start()
    assert not (taken / "aiobfd.sock").exists()


async def test_the_daemon_refuses_a_directory_others_may_write_in(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    server = ControlServer(Daemon([]), str(shared / "aiobfd.sock"))
    with pytest.raises(OSError, match="may be written by other users"):
        await server.start()


async def test_the_daemon_makes_a_missing_directory_private(tmp_path: Path) -> None:
    server = ControlServer(Daemon([]), str(tmp_path / "aiobfd-4242" / "aiobfd.sock"))
    await server.start()
    try:
        assert (tmp_path / "aiobfd-4242").stat().st_mode & 0o777 == 0o700
        assert (tmp_path / "aiobfd-4242" / "aiobfd.sock").stat().st_mode & 0o777 == 0o600
        answer = await asyncio.to_thread(request, server.path, {"command": "version"})
        assert answer["ok"] is True
    finally:
        await server.close()


@needs_root
def test_aiobfd_says_so_in_one_line_and_exits_2(tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.mkdir(mode=0o700)
    os.chown(taken, STRANGER, STRANGER)
    result = subprocess.run(
        [sys.executable, "-m", "aiobfd", "127.0.0.1", "127.0.0.2", "--metrics-port", "0",
         "--control-socket", str(taken / "aiobfd.sock"), "-l", "ERROR"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("aiobfd: error: control socket: "), lines
    assert f"belongs to uid {STRANGER}" in lines[0]
