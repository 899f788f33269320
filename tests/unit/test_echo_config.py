"""Unaffiliated echo (RFC 9747) in the configuration file and on the command line."""

from __future__ import annotations

import socket
from dataclasses import replace
from pathlib import Path

import pytest

from aiobfd import cli
from aiobfd.config import ConfigError, PeerSpec, check_echo_peer, load_config
from aiobfd.protocol.echo import EchoConfig


def load(tmp_path: Path, text: str) -> list[EchoConfig | None]:
    path = tmp_path / "aiobfd.toml"
    path.write_text(text)
    return [spec.echo for spec in load_config(str(path)).peers]


PEERS = """
[defaults]
tx_interval_ms = 300
[profiles.gw]
unaffiliated_echo = true
echo_interval_ms = 50
detect_mult = 4
[[peers]]
remote = "127.0.0.2"
local = "127.0.0.1"
unaffiliated_echo = true
[[peers]]
remote = "127.0.0.3"
local = "127.0.0.1"
profile = "gw"
[[peers]]
remote = "127.0.0.4"
local = "127.0.0.1"
"""


def test_file_keys(tmp_path: Path) -> None:
    first, second, third = load(tmp_path, PEERS)
    # The echo interval defaults to the TX interval.
    assert first == EchoConfig(interval_us=300_000, detect_mult=3)
    assert second == EchoConfig(interval_us=50_000, detect_mult=4)
    assert third is None  # a Control session


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("echo_interval_ms = 0", "peers[0].echo_interval_ms: must be a whole number from 1"),
        ('interface = "lo"', "peers[0].interface: echo is not supported on a session bound"),
        ("passive = true", "peers[0].passive: an unaffiliated echo session cannot be passive"),
        ("multihop = true", "peers[0].multihop: an unaffiliated echo session cannot be multihop"),
    ],
)
def test_file_errors_name_the_key(tmp_path: Path, extra: str, message: str) -> None:
    text = (
        f'[[peers]]\nremote = "127.0.0.2"\nlocal = "127.0.0.1"\nunaffiliated_echo = true\n{extra}\n'
    )
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load(tmp_path, text)


def test_bad_value(tmp_path: Path) -> None:
    text = '[[peers]]\nremote = "127.0.0.2"\nlocal = "127.0.0.1"\nunaffiliated_echo = "yes"\n'
    with pytest.raises(ConfigError, match="unaffiliated_echo: must be true or false"):
        load(tmp_path, text)


def test_link_local_is_refused() -> None:
    spec = PeerSpec("fe80::1", "fe80::2", socket.AF_INET6, 1, "lo", echo=EchoConfig())
    with pytest.raises(ConfigError, match="global addresses"):
        check_echo_peer(spec)
    check_echo_peer(replace(spec, scope=0, interface=""))  # fine


def test_command_line() -> None:
    _, settings, _ = cli.parse(
        [
            "127.0.0.1",
            "127.0.0.2",
            "127.0.0.3",
            "--unaffiliated-echo",
            "--echo-interval",
            "20",
            "-m",
            "5",
        ]
    )
    assert [p.echo for p in settings.peers] == [EchoConfig(interval_us=20_000, detect_mult=5)] * 2
    _, settings, _ = cli.parse(["127.0.0.1", "127.0.0.2", "--unaffiliated-echo", "-t", "70"])
    assert settings.peers[0].echo == EchoConfig(interval_us=70_000)
    _, settings, _ = cli.parse(["127.0.0.1", "127.0.0.2"])
    assert settings.peers[0].echo is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--echo-rx-interval", "20", "--unaffiliated-echo"], "is for Control sessions"),
        (["--echo-interval", "20", "--multihop"], "single hop only"),
        (["--unaffiliated-echo", "--passive"], "cannot be passive"),
        (["--unaffiliated-echo", "--unsolicited", "127.0.0.0/8"], "cannot be combined"),
    ],
)
def test_command_line_errors(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.parse(["127.0.0.1", "127.0.0.2", *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
