"""The completions at work: aiobfdctl's PEER offers the peers of a running daemon
(bash, and zsh where it is installed), IPv6 addresses included."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .generator import ROOT

BASH = ROOT / "completions" / "bash" / "aiobfdctl"
ZSH = ROOT / "completions" / "zsh" / "_aiobfdctl"
CONFIG = """
[[peers]]
remote = "127.0.23.2"
local = "127.0.23.1"

[[peers]]
remote = "127.0.23.3"
local = "127.0.23.1"

[[peers]]
remote = "2001:db8::17"
local = "::1"
"""


@pytest.fixture(scope="module")
def socket_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A daemon with three peers, and its control socket."""
    tmp = tmp_path_factory.mktemp("completion")
    (tmp / "aiobfd.toml").write_text(CONFIG)
    sock = tmp / "ctl.sock"
    daemon = subprocess.Popen(
        [
            *(sys.executable, "-m", "aiobfd", "--config", str(tmp / "aiobfd.toml")),
            *("--control-socket", str(sock), "--metrics-port", "0"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            if daemon.poll() is not None or time.monotonic() > deadline:
                assert daemon.stderr is not None
                pytest.fail(f"the daemon did not start: {daemon.stderr.read().decode()}")
            time.sleep(0.05)
        yield sock
    finally:
        daemon.terminate()
        daemon.wait(10)


def environment() -> dict[str, str]:
    """aiobfdctl of this Python first on PATH, as an installed one would be."""
    bindir = Path(sys.executable).parent
    if not (bindir / "aiobfdctl").exists():
        pytest.skip("no aiobfdctl script beside this Python")
    return {**os.environ, "PATH": f"{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}"}


def bash_complete(line: str) -> list[str]:
    """What bash offers for the end of ``line``, as with TAB."""
    script = f"""
        source {BASH}
        COMP_LINE=$1 COMP_POINT=${{#1}} COMP_WORDS=() COMP_CWORD=0
        _aiobfdctl_complete
        printf '%s\\n' "${{COMPREPLY[@]}}"
    """
    result = subprocess.run(
        ["bash", "-c", script, "_", line],
        capture_output=True,
        text=True,
        env=environment(),
        check=True,
        timeout=30,
    )
    return sorted(filter(None, result.stdout.splitlines()))


def test_bash_completes_the_peers_of_the_running_daemon(socket_path: Path) -> None:
    line = f"aiobfdctl -s {socket_path} show session "
    assert bash_complete(line) == ["127.0.23.2", "127.0.23.3", "2001:db8::17"]
    assert bash_complete(line + "127.0.23.") == ["127.0.23.2", "127.0.23.3"]
    assert bash_complete(f"aiobfdctl --socket {socket_path} peer shutdown 12") == [
        "127.0.23.2",
        "127.0.23.3",
    ]


def test_bash_completes_an_ipv6_peer_after_its_colons(socket_path: Path) -> None:
    """bash replaces only what follows the last ':' (COMP_WORDBREAKS): the answer
    is what completes the address from there."""
    assert bash_complete(f"aiobfdctl -s {socket_path} peer del 2001:db8::") == ["17"]


def test_bash_completes_commands_and_options(socket_path: Path) -> None:
    assert bash_complete("aiobfdctl ") == ["drain", "peer", "reload", "show", "undrain", "watch"]
    assert bash_complete(f"aiobfdctl -s {socket_path} peer ") == [
        "add",
        "del",
        "enable",
        "shutdown",
    ]
    assert bash_complete("aiobfdctl --j") == ["--json"]


def test_bash_offers_nothing_without_a_daemon(tmp_path: Path) -> None:
    assert bash_complete(f"aiobfdctl -s {tmp_path}/none.sock show session ") == []


def test_zsh_completes_the_peers_of_the_running_daemon(socket_path: Path, tmp_path: Path) -> None:
    if shutil.which("zsh") is None:
        pytest.skip("no zsh")
    script = f"""
        autoload -Uz compinit && compinit -u -d {tmp_path}/zcompdump
        eval "$(<{ZSH})"
        compadd() {{ print -l -- ${{(P)${{@[-1]}}}}; }}
        words=(aiobfdctl -s {socket_path} show session ""); CURRENT=5
        _aiobfdctl_peers
    """
    result = subprocess.run(
        ["zsh", "-f", "-c", script],
        capture_output=True,
        text=True,
        env=environment(),
        check=True,
        timeout=30,
    )
    assert sorted(result.stdout.split()) == ["127.0.23.2", "127.0.23.3", "2001:db8::17"]
    assert result.stderr == ""
