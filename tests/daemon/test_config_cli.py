"""``aiobfd --config``: check, run, reload (aiobfdctl and SIGHUP) and run-time peer control.

Real processes over loopback: A runs from a configuration file on 127.0.0.1;
its peers B (127.0.0.2) and C (127.0.0.3) run the classic command line.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aiobfd.client import ClientError as CtlError
from aiobfd.client import request

AIOBFD = [sys.executable, "-m", "aiobfd"]
CTL = [sys.executable, "-m", "aiobfd.ctl"]
FAST = ["-r", "50", "-t", "50", "-m", "3"]

Json = dict[str, Any]


def config_text(
    *peers: str, control: Path | None = None, profile: str = "tx_interval_ms = 50", extra: str = ""
) -> str:
    """A file with a profile 'fast' and one peer per remote address, local 127.0.0.1.

    A remote written as 'ADDR key = value; key = value' adds keys to its table.
    """
    lines = ["[daemon]", "metrics_port = 0"]
    if control is not None:
        lines.append(f'control_socket = "{control}"')
    lines += [
        "",
        "[defaults]",
        "rx_interval_ms = 50",
        "tx_interval_ms = 50",
        "",
        "[profiles.fast]",
        profile,
        "",
    ]
    for entry in peers:
        remote, _, keys = entry.partition(" ")
        lines += ["[[peers]]", f'remote = "{remote}"', 'local = "127.0.0.1"', 'profile = "fast"']
        lines += [k.strip() for k in keys.split(";") if k.strip()]
        lines.append("")
    return "\n".join(lines) + extra


def wait_for(probe: Callable[[], Any], what: str, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = probe()
        if last:
            return last
        assert time.monotonic() < deadline, f"timed out waiting for {what}; last: {last}"
        time.sleep(0.05)


class Daemon:
    """One aiobfd process with its control socket; its output goes to a log file."""

    def __init__(self, tmp_path: Path, name: str, *args: str, socket: Path | None = None) -> None:
        """``socket``: where the file puts the control socket; else --control-socket."""
        self.name = name
        self.socket = socket or tmp_path / f"{name}.sock"
        self.log = tmp_path / f"{name}.log"
        argv = [*AIOBFD, *args, "-l", "DEBUG"]
        if socket is None:
            argv += ["--control-socket", str(self.socket)]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        wait_for(lambda: self.alive() and self.answers(), f"{name} to answer")

    def alive(self) -> bool:
        assert self.proc.poll() is None, f"{self.name} exited {self.proc.returncode}\n{self.text()}"
        return True

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CTL, "-s", str(self.socket), *args], capture_output=True, text=True, timeout=10
        )

    def answers(self) -> bool:
        try:
            request(str(self.socket), {"command": "version"})
        except CtlError:
            return False
        return True

    def sessions(self) -> dict[str, Json]:
        """By display name; asked in-process (aiobfdctl itself is tested by ``ctl``)."""
        answer = request(str(self.socket), {"command": "show sessions"})
        return {s["peer"]: s for s in answer["sessions"]}

    def session(self, remote: str) -> Json:
        return self.sessions()[remote]

    def wait_state(self, remote: str, state: str, timeout: float = 5.0) -> Json:
        def probe() -> Json | None:
            self.alive()
            info = self.sessions().get(remote)
            return info if info is not None and info["state"] == state else None

        return dict(wait_for(probe, f"{self.name}: {remote} {state}", timeout))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(timeout=3)


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def start(name: str, *args: str, socket: Path | None = None) -> Daemon:
        daemon = Daemon(tmp_path, name, *args, socket=socket)
        started.append(daemon)
        return daemon

    yield start
    for daemon in reversed(started):
        daemon.stop()


def classic(start: Callable[..., Daemon], name: str, local: str) -> Daemon:
    """A peer on the classic command line toward 127.0.0.1, 50 ms timers."""
    return start(name, local, "127.0.0.1", *FAST, "--metrics-port", "0")


# ------------------------------------------------------------------ --check-config


def test_check_config_valid_prints_a_summary(tmp_path: Path) -> None:
    path = tmp_path / "aiobfd.toml"
    path.write_text(config_text("127.0.0.2", "127.0.0.3 shutdown = true"))
    result = subprocess.run(
        [*AIOBFD, "--config", str(path), "--check-config"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{path}: configuration valid, 2 peer(s)"
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (config_text("127.0.0.2 detect_mult = 0"), "peers[0].detect_mult"),
        (config_text("127.0.0.2") + "\n[profiles.slow]\nrx = 5\n", "profiles.slow.rx"),
        (config_text("127.0.0.2 local = 'no-such-host.invalid'").replace('local = "127.0.0.1"\n', "", 1),
         "peers[0].local"),
        (config_text("127.0.0.2", "127.0.0.2"), "peers[1]"),
        (config_text("127.0.0.2 profile = 'none'").replace('profile = "fast"\n', "", 1),
         "peers[0].profile"),
        ("[daemon]\nmetrics_port = -1\n", "daemon.metrics_port"),
        (config_text("127.0.0.2 auth = {type = 'simple', keys = [{id = 1, file = 'x.key'}]}"),
         "peers[0].auth.keys[0].file"),
    ],
)  # fmt: skip
def test_check_config_broken_gives_one_line_and_status_2(
    tmp_path: Path, text: str, key: str
) -> None:
    path = tmp_path / "aiobfd.toml"
    path.write_text(text)
    for extra in (["--check-config"], []):  # the daemon refuses to start the same way
        result = subprocess.run(
            [*AIOBFD, "--config", str(path), "--metrics-port", "0", *extra],
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert result.returncode == 2, result
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith(f"aiobfd: error: {path}: {key}: "), lines[0]
        assert "Traceback" not in result.stderr
        assert result.stdout == ""


def test_check_config_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    result = subprocess.run(
        [*AIOBFD, "--config", str(path), "--check-config"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"aiobfd: error: {path}: no such file"


def test_config_and_positional_addresses_are_exclusive(tmp_path: Path) -> None:
    path = tmp_path / "aiobfd.toml"
    path.write_text(config_text("127.0.0.2"))
    result = subprocess.run(
        [*AIOBFD, "127.0.0.1", "127.0.0.2", "--config", str(path), "--check-config"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "not both" in result.stderr


def test_check_config_of_the_classic_command_line() -> None:
    result = subprocess.run(
        [*AIOBFD, "127.0.0.1", "127.0.0.2", "127.0.0.3", "--check-config"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0
    assert result.stdout.strip() == "command line: configuration valid, 2 peer(s)"


# ------------------------------------------------------------------ run and reload


def test_runs_from_the_file_and_reload_changes_timers_without_a_flap(
    tmp_path: Path, daemons: Callable[..., Daemon]
) -> None:
    """[daemon] control_socket is used; a timer change goes through a Poll Sequence:
    same discriminator, no Down on either side, the peer sees the new values; the
    untouched peer is not touched at all."""
    path = tmp_path / "aiobfd.toml"
    sock = tmp_path / "from-file.sock"
    path.write_text(config_text("127.0.0.2", "127.0.0.3", control=sock))
    b = classic(daemons, "b", "127.0.0.2")
    c = classic(daemons, "c", "127.0.0.3")
    a = daemons("a", "--config", str(path), socket=sock)
    a.wait_state("127.0.0.2", "up")
    a.wait_state("127.0.0.3", "up")
    b.wait_state("127.0.0.1", "up")
    c.wait_state("127.0.0.1", "up")
    wait_for(lambda: not any(s["poll_active"] for s in a.sessions().values()), "polls to end")
    before = a.sessions()
    assert before["127.0.0.2"]["profile"] == "fast"
    assert not before["127.0.0.2"]["runtime"]

    path.write_text(
        config_text(
            "127.0.0.2 tx_interval_ms = 100; rx_interval_ms = 80; detect_mult = 4",
            "127.0.0.3",
            control=sock,
        )
    )
    result = a.ctl("reload")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "reloaded: added 0, removed 0, changed 1 (127.0.0.2), unchanged 1"
    )

    seen = wait_for(
        lambda: (
            (s := b.session("127.0.0.1"))["remote_desired_min_tx_ms"] == 100
            and s["remote_required_min_rx_ms"] == 80
            and s["remote_detect_mult"] == 4
            and not s["poll_active"]
            and s
        ),
        "B to see A's new timers",
    )
    assert seen["state"] == "up"
    time.sleep(0.5)  # longer than every Detection Time in play
    after = a.sessions()
    changed, untouched = after["127.0.0.2"], after["127.0.0.3"]
    assert changed["state"] == "up"
    assert changed["local_discr"] == before["127.0.0.2"]["local_discr"]
    assert changed["source_port"] == before["127.0.0.2"]["source_port"]
    assert (changed["configured_tx_ms"], changed["configured_rx_ms"]) == (100, 80)
    assert changed["detect_mult"] == 4
    assert changed["counters"]["session_down"] == 0
    assert changed["counters"]["poll_sequences"] > before["127.0.0.2"]["counters"]["poll_sequences"]
    assert changed["tx_interval_ms"] == 100  # max(our 100, B's required 50)
    assert b.session("127.0.0.1")["counters"]["session_down"] == 0
    assert b.session("127.0.0.1")["counters"]["session_up"] == 1
    assert untouched["state"] == "up"
    assert untouched["local_discr"] == before["127.0.0.3"]["local_discr"]
    assert (
        untouched["counters"]["poll_sequences"] == before["127.0.0.3"]["counters"]["poll_sequences"]
    )
    assert "configuration reloaded: 0 added, 0 removed, 1 changed, 1 unchanged" in a.text()

    # JSON form of the answer
    result = a.ctl("--json", "reload")
    assert result.returncode == 0
    assert json.loads(result.stdout) == {
        "added": [],
        "removed": [],
        "changed": [],
        "unchanged": ["127.0.0.2", "127.0.0.3"],
    }


def test_sighup_adds_and_removes_peers(tmp_path: Path, daemons: Callable[..., Daemon]) -> None:
    path = tmp_path / "aiobfd.toml"
    path.write_text(config_text("127.0.0.2"))
    b = classic(daemons, "b", "127.0.0.2")
    c = classic(daemons, "c", "127.0.0.3")
    a = daemons("a", "--config", str(path))
    a.wait_state("127.0.0.2", "up")
    b.wait_state("127.0.0.1", "up")
    assert c.session("127.0.0.1")["state"] == "down"

    path.write_text(config_text("127.0.0.3"))
    a.proc.send_signal(signal.SIGHUP)
    c.wait_state("127.0.0.1", "up")
    a.wait_state("127.0.0.3", "up")
    gone = b.wait_state("127.0.0.1", "down", timeout=2)
    # the removed peer said AdminDown: B did not just time out
    assert gone["local_diag"] == 3  # neighbor signaled session down
    assert gone["remote_state"] == "admin_down"
    assert gone["remote_diag"] == 7
    assert list(a.sessions()) == ["127.0.0.3"]
    assert a.alive()
    assert "configuration reloaded: 1 added, 1 removed, 0 changed, 0 unchanged" in a.text()


def test_broken_file_on_reload_is_refused_and_nothing_changes(
    tmp_path: Path, daemons: Callable[..., Daemon]
) -> None:
    path = tmp_path / "aiobfd.toml"
    good = config_text("127.0.0.2")
    path.write_text(good)
    b = classic(daemons, "b", "127.0.0.2")
    c = classic(daemons, "c", "127.0.0.3")
    a = daemons("a", "--config", str(path))
    a.wait_state("127.0.0.2", "up")
    wait_for(lambda: not a.session("127.0.0.2")["poll_active"], "polls to end")
    before = a.session("127.0.0.2")

    # A good change (timers, a new peer) next to a bad one: none of it applies.
    path.write_text(
        config_text("127.0.0.2 tx_interval_ms = 200", "127.0.0.3", "127.0.0.4 detect_mult = 0")
    )
    result = a.ctl("reload")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"aiobfdctl: reload refused, running configuration kept: "
        f"{path}: peers[2].detect_mult: must be a whole number from 1 to 255"
    )
    a.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: a.text().count("reload refused") >= 2, "the SIGHUP reload to be refused")
    path.write_text("[[peers]\n")  # not even TOML
    result = a.ctl("reload")
    assert result.returncode == 1 and "not valid TOML" in result.stderr
    path.unlink()
    result = a.ctl("reload")
    assert result.returncode == 1 and f"{path}: no such file" in result.stderr

    time.sleep(0.3)
    assert a.alive()
    after = a.sessions()
    assert list(after) == ["127.0.0.2"]
    info = after["127.0.0.2"]
    assert info["state"] == "up"
    assert info["local_discr"] == before["local_discr"]
    assert info["configured_tx_ms"] == before["configured_tx_ms"] == 50
    assert info["counters"]["poll_sequences"] == before["counters"]["poll_sequences"]
    assert info["counters"]["session_down"] == 0
    assert c.session("127.0.0.1")["state"] == "down"
    assert b.session("127.0.0.1")["counters"]["session_down"] == 0

    path.write_text(good)  # fixed: reloads fine, nothing to change
    result = a.ctl("reload")
    assert result.returncode == 0
    assert result.stdout.strip() == "reloaded: added 0, removed 0, changed 0, unchanged 1"


def test_runtime_peer_control_and_reload_restores_the_file(
    tmp_path: Path, daemons: Callable[..., Daemon]
) -> None:
    path = tmp_path / "aiobfd.toml"
    path.write_text(config_text("127.0.0.2"))
    b = classic(daemons, "b", "127.0.0.2")
    c = classic(daemons, "c", "127.0.0.3")
    a = daemons("a", "--config", str(path))
    a.wait_state("127.0.0.2", "up")
    discr_b = a.session("127.0.0.2")["local_discr"]

    # peer add: a run-time session, marked as such
    added = a.ctl("peer", "add", "127.0.0.3", "-r", "50", "-t", "50", "-m", "3")
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("127.0.0.3: ") and "run-time change" in added.stdout
    a.wait_state("127.0.0.3", "up")
    c.wait_state("127.0.0.1", "up")
    info = a.session("127.0.0.3")
    assert info["runtime"] is True and info["local"] == "127.0.0.1"  # local of the others
    assert (info["configured_tx_ms"], info["configured_rx_ms"]) == (50, 50)
    assert a.session("127.0.0.2")["runtime"] is False
    brief = a.ctl("show", "sessions").stdout
    assert "127.0.0.3 +" in brief and "127.0.0.2 +" not in brief
    assert "+ changed at run time with aiobfdctl (a reload restores the file)" in brief

    # peer shutdown: AdminDown with diag 7 for the remote; peer enable: back Up
    result = a.ctl("peer", "shutdown", "127.0.0.2")
    assert result.returncode == 0, result.stderr
    down = b.wait_state("127.0.0.1", "down", timeout=2)
    assert (down["remote_state"], down["remote_diag"], down["local_diag"]) == ("admin_down", 7, 3)
    info = a.session("127.0.0.2")
    assert info["state"] == "admin_down" and info["local_diag"] == 7 and info["runtime"] is True
    assert "127.0.0.2 +" in a.ctl("show", "sessions").stdout
    assert a.ctl("peer", "enable", "127.0.0.2").returncode == 0
    a.wait_state("127.0.0.2", "up")
    b.wait_state("127.0.0.1", "up")
    assert a.session("127.0.0.2")["local_discr"] == discr_b

    # A reload restores the file: the added peer goes (with AdminDown), a shut
    # down peer comes back, run-time marks disappear.
    assert a.ctl("peer", "shutdown", "127.0.0.2").returncode == 0
    b.wait_state("127.0.0.1", "down", timeout=2)
    result = a.ctl("reload")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "reloaded: added 0, removed 1 (127.0.0.3), changed 1 (127.0.0.2), unchanged 0"
    )
    gone = c.wait_state("127.0.0.1", "down", timeout=2)
    assert (gone["remote_state"], gone["remote_diag"]) == ("admin_down", 7)
    a.wait_state("127.0.0.2", "up")
    b.wait_state("127.0.0.1", "up")
    sessions = a.sessions()
    assert list(sessions) == ["127.0.0.2"]
    assert sessions["127.0.0.2"]["runtime"] is False
    assert sessions["127.0.0.2"]["local_discr"] == discr_b
    assert "+" not in a.ctl("show", "sessions").stdout

    # peer del: AdminDown and gone until the next reload, which brings it back
    result = a.ctl("peer", "del", "127.0.0.2")
    assert result.returncode == 0 and result.stdout.strip() == "removed 127.0.0.2"
    gone = b.wait_state("127.0.0.1", "down", timeout=2)
    assert (gone["remote_state"], gone["remote_diag"]) == ("admin_down", 7)
    assert a.sessions() == {}
    result = a.ctl("reload")
    assert (
        result.stdout.strip() == "reloaded: added 1 (127.0.0.2), removed 0, changed 0, unchanged 0"
    )
    a.wait_state("127.0.0.2", "up")
    assert a.session("127.0.0.2")["local_discr"] != discr_b  # a new session

    # errors: exit status 1 with the reason
    for args, words in (
        (["peer", "del", "192.0.2.9"], "no session with peer 192.0.2.9"),
        (["peer", "shutdown", "192.0.2.9"], "no session with peer 192.0.2.9"),
        (["peer", "enable", "192.0.2.9"], "no session with peer 192.0.2.9"),
        (["peer", "add", "127.0.0.2"], "exists already"),
        (["peer", "add", "127.0.0.9", "--local", "192.0.2.55"], "not an address of this host"),
        (["peer", "add", "127.0.0.9", "-m", "0"], "detect multiplier"),
        (["peer", "add", "::1"], "same address family"),
    ):
        result = a.ctl(*args)
        assert result.returncode == 1, (args, result)
        assert result.stderr.startswith("aiobfdctl: ") and words in result.stderr, result.stderr
    assert list(a.sessions()) == ["127.0.0.2"]


def test_runtime_control_json(tmp_path: Path, daemons: Callable[..., Daemon]) -> None:
    path = tmp_path / "aiobfd.toml"
    path.write_text(config_text("127.0.0.2"))
    a = daemons("a", "--config", str(path))
    result = a.ctl("--json", "peer", "add", "127.0.0.3", "--local", "127.0.0.1", "--passive")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)["session"]
    assert info["peer"] == "127.0.0.3" and info["runtime"] is True and info["passive"] is True
    result = a.ctl("--json", "peer", "shutdown", "127.0.0.2")
    assert json.loads(result.stdout)["session"]["state"] == "admin_down"
    result = a.ctl("--json", "peer", "del", "127.0.0.3")
    assert json.loads(result.stdout) == {"removed": "127.0.0.3"}

    # The protocol itself: wrong types are refused, not coerced ("false" is not false).
    for fields, words in (
        ({"remote": "127.0.0.3", "passive": "false"}, "passive must be true or false"),
        ({"remote": "127.0.0.3", "detect_mult": "3"}, "detect_mult must be a whole number"),
        ({"remote": "127.0.0.3", "detect_mult": True}, "detect_mult must be a whole number"),
        ({"remote": "127.0.0.3", "tx_interval_ms": 1.5}, "tx_interval_ms must be a whole"),
        ({"remote": "127.0.0.3", "interface": 5}, "interface must be an interface name"),
        ({"remote": 5}, "peer add needs a remote address"),
        ({}, "peer add needs a remote address"),
    ):
        with pytest.raises(CtlError, match=words):
            request(str(a.socket), {"command": "peer add", **fields})
    for command in ("peer del", "peer shutdown", "peer enable"):
        with pytest.raises(CtlError, match="no peer given"):
            request(str(a.socket), {"command": command})
    assert list(a.sessions()) == ["127.0.0.2"]


def test_reload_without_a_file_is_refused(daemons: Callable[..., Daemon]) -> None:
    b = classic(daemons, "b", "127.0.0.2")
    result = b.ctl("reload")
    assert result.returncode == 1
    assert "no configuration file to reload" in result.stderr
    b.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "SIGHUP ignored" in b.text(), "the SIGHUP to be ignored")
    assert b.alive()


# ------------------------------------------------------------------ the application, in process


async def test_application_reload_all_or_nothing_then_stop(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What SIGHUP and ``aiobfdctl reload`` call: a refused reload keeps the running
    configuration; an accepted one replaces it and says which tables wait for a restart."""
    from aiobfd.app import Application
    from aiobfd.cli import from_file
    from aiobfd.config import Overrides
    from aiobfd.control import ControlError

    path = tmp_path / "aiobfd.toml"
    path.write_text(config_text("127.0.0.2"))
    sock = tmp_path / "app.sock"
    reload_from = functools.partial(from_file, str(path), Overrides(control_socket=str(sock)))
    first = reload_from()
    app = Application(first, reload_from)
    await app.start()
    try:
        assert app.control is not None and sock.exists()
        assert app.metrics is None  # metrics_port = 0 in the file
        assert [peer.spec.remote for peer in app.daemon.peers.values()] == ["127.0.0.2"]

        path.write_text(config_text("127.0.0.2", "127.0.0.3 detect_mult = 0"))
        with pytest.raises(ControlError, match=r"^reload refused, running configuration kept: "):
            app.reload()
        assert app.settings is first
        assert list(app.daemon.peers) == [first.peers[0].key]

        path.write_text(config_text("127.0.0.2", "127.0.0.3", extra="\n[dampening]\n"))
        with caplog.at_level(logging.WARNING, logger="aiobfd"):
            summary = app.reload()
        assert summary["added"] == ["127.0.0.3"] and summary["unchanged"] == ["127.0.0.2"]
        assert [p.remote for p in app.settings.peers] == ["127.0.0.2", "127.0.0.3"]
        assert len(app.daemon.peers) == 2
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert warnings == ["reload: changes in [dampening] take effect at the next restart"]
    finally:
        app.stop()
        await asyncio.wait_for(app.daemon.serve_forever(), 2)
        await app.close()
    assert not sock.exists()


async def test_application_without_a_file_cannot_reload(tmp_path: Path) -> None:
    from aiobfd.app import Application
    from aiobfd.config import DaemonSettings, Settings
    from aiobfd.control import ControlError

    app = Application(Settings(daemon=DaemonSettings(control_socket="none", metrics_port=0)))
    await app.start()
    try:
        assert app.control is None and app.metrics is None
        with pytest.raises(ControlError, match="no configuration file to reload"):
            app.reload()
    finally:
        app.stop()
        await asyncio.wait_for(app.daemon.serve_forever(), 2)
        await app.close()
