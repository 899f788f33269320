"""The TOML configuration file: every error names the file and the key; precedence.

Valid peers use loopback addresses (127.0.0.0/8 is local on Linux), so the
"LOCAL is an address of this host" check passes without any setup.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path

import pytest

from aiobfd.config import (
    DEFAULT_PATH,
    ConfigError,
    DaemonSettings,
    DampeningSettings,
    SessionSettings,
    Settings,
    load_config,
)
from aiobfd.protocol.packet import AuthType

SECRET = "s3cr3t-Value"
"""A secret that must never appear in an error message."""

PEER = """
[[peers]]
remote = "127.0.0.2"
local = "127.0.0.1"
"""


def write(tmp_path: Path, text: str, name: str = "aiobfd.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Settings:
    return load_config(str(write(tmp_path, text)), {"BFD_KEY": SECRET} if env is None else env)


def error_of(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(str(path), {"BFD_KEY": SECRET} if env is None else env)
    message = str(info.value)
    assert "\n" not in message, message
    assert SECRET not in message
    return message


def key_file(tmp_path: Path, secret: str = SECRET, name: str = "bfd.key") -> Path:
    path = tmp_path / name
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return path


class Raw(str):
    """A value written into the TOML as it is (inline tables, nan)."""


def peer(**keys: object) -> str:
    """A [[peers]] table with the valid loopback pair, plus (or replaced by) ``keys``.

    ``None`` leaves a key out; strings are quoted unless they are :class:`Raw`.
    """
    table: dict[str, object] = {"remote": "127.0.0.2", "local": "127.0.0.1", **keys}
    lines = ["[[peers]]"]
    for name, value in table.items():
        if value is None:
            continue
        lines.append(f"{name} = {_toml(value)}")
    return "\n".join(lines) + "\n"


def _toml(value: object) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)


# ------------------------------------------------------------------ error cases

# (file text, the key the message must name, words the message must contain)
ERRORS: list[tuple[str, str, str]] = [
    # unknown keys, at every level
    ("bogus = 1\n" + PEER, "bogus", "unknown key"),
    ("[defaults]\nrx_interval = 100\n" + PEER, "defaults.rx_interval", "unknown key"),
    ("[profiles.fast]\ntx = 100\n" + PEER, "profiles.fast.tx", "unknown key"),
    (peer(transmit_interval=100), "peers[0].transmit_interval", "unknown key"),
    ("[daemon]\nlog_file = 'x'\n" + PEER, "daemon.log_file", "unknown key"),
    ("[dampening]\nhalflife = 3\n" + PEER, "dampening.halflife", "unknown key"),
    (
        peer(auth=Raw("{type = 'simple', keys = [{id = 1, env = 'BFD_KEY'}], secret = 'x'}")),
        "peers[0].auth.secret",
        "unknown key",
    ),
    (
        peer(auth=Raw("{type = 'simple', keys = [{id = 1, env = 'BFD_KEY', password = 'x'}]}")),
        "peers[0].auth.keys[0].password",
        "unknown key",
    ),
    # tables that are not tables
    ("defaults = 5\n" + PEER, "defaults", "must be a table"),
    ("daemon = 'x'\n" + PEER, "daemon", "must be a table"),
    ("profiles = 5\n" + PEER, "profiles", "must be a table"),
    ("[profiles]\nfast = 5\n" + PEER, "profiles.fast", "must be a table"),
    ("dampening = true\n" + PEER, "dampening", "must be a table"),
    ("[peers]\nremote = '127.0.0.2'\n", "peers", "array of tables"),
    ("peers = [5]\n", "peers[0]", "must be a table"),
    (peer(auth=Raw("'simple'")), "peers[0].auth", "must be a table"),
    # wrong types
    (peer(rx_interval_ms="100"), "peers[0].rx_interval_ms", "whole number"),
    (peer(tx_interval_ms=100.0), "peers[0].tx_interval_ms", "whole number"),
    (peer(tx_interval_ms=True), "peers[0].tx_interval_ms", "whole number"),
    (peer(detect_mult="3"), "peers[0].detect_mult", "whole number"),
    (peer(passive=1), "peers[0].passive", "true or false"),
    (peer(shutdown="yes"), "peers[0].shutdown", "true or false"),
    (peer(multihop="yes"), "peers[0].multihop", "true or false"),
    ("[defaults]\nmultihop = 1\n", "defaults.multihop", "true or false"),
    (peer(min_ttl=254.0), "peers[0].min_ttl", "whole number"),
    (peer(on_up=5), "peers[0].on_up", "shell command"),
    (peer(on_change=["a"]), "peers[0].on_change", "shell command"),
    (peer(hook_timeout_s=0), "peers[0].hook_timeout_s", "positive"),
    (peer(hook_timeout_s=Raw("nan")), "peers[0].hook_timeout_s", "positive"),
    (peer(hook_timeout_s=float("inf")), "peers[0].hook_timeout_s", "positive"),
    (peer(interface=5), "peers[0].interface", "interface name"),
    (peer(remote=5), "peers[0].remote", "required"),
    (peer(local=""), "peers[0].local", "required"),
    (peer(profile=5), "peers[0].profile", "unknown profile"),
    ("[daemon]\nlog_level = 'LOUD'\n" + PEER, "daemon.log_level", "must be one of"),
    ("[daemon]\nlog_level = 10\n" + PEER, "daemon.log_level", "must be one of"),
    ("[daemon]\nlog_format = 'xml'\n" + PEER, "daemon.log_format", "'text' or 'json'"),
    ("[daemon]\ncontrol_socket = 5\n" + PEER, "daemon.control_socket", "string"),
    ("[daemon]\nmetrics_address = false\n" + PEER, "daemon.metrics_address", "string"),
    ("[daemon]\nmetrics_port = '9000'\n" + PEER, "daemon.metrics_port", "port number"),
    ("[daemon]\nmetrics_port = 65536\n" + PEER, "daemon.metrics_port", "port number"),
    ("[daemon]\nttl_check = 'no'\n" + PEER, "daemon.ttl_check", "true or false"),
    ("[daemon]\nreceive_holdoff_ms = 1001\n" + PEER, "daemon.receive_holdoff_ms", "0-1000"),
    ("[daemon]\nreceive_holdoff_ms = true\n" + PEER, "daemon.receive_holdoff_ms", "0-1000"),
    ("[dampening]\nenabled = 'yes'\n" + PEER, "dampening.enabled", "true or false"),
    ("[dampening]\npenalty = -1\n" + PEER, "dampening.penalty", "positive"),
    ("[dampening]\nhalf_life_s = 'x'\n" + PEER, "dampening.half_life_s", "positive"),
    ("[dampening]\nmax_hold_s = nan\n" + PEER, "dampening.max_hold_s", "positive"),
    # ranges
    (peer(rx_interval_ms=0), "peers[0].rx_interval_ms", "from 1 to 4294967 ms"),
    (peer(tx_interval_ms=0), "peers[0].tx_interval_ms", "from 1 to 4294967 ms"),
    (peer(tx_interval_ms=4294968), "peers[0].tx_interval_ms", "from 1 to 4294967 ms"),
    (peer(rx_interval_ms=-5), "peers[0].rx_interval_ms", "from 1 to 4294967 ms"),
    (peer(detect_mult=0), "peers[0].detect_mult", "from 1 to 255"),
    (peer(detect_mult=256), "peers[0].detect_mult", "from 1 to 255"),
    (peer(min_ttl=0), "peers[0].min_ttl", "from 1 to 255"),
    (peer(min_ttl=256), "peers[0].min_ttl", "from 1 to 255"),
    # the same in [defaults] and profiles: named where written, used or not
    ("[defaults]\nrx_interval_ms = 0\n" + PEER, "defaults.rx_interval_ms", "from 1 to"),
    ("[defaults]\ndetect_mult = 256\n", "defaults.detect_mult", "from 1 to 255"),
    ("[defaults]\npassive = 'no'\n" + PEER, "defaults.passive", "true or false"),
    ("[profiles.slow]\ntx_interval_ms = 4294968\n", "profiles.slow.tx_interval_ms", "from 1"),
    ("[profiles.f]\nmin_ttl = 0\n" + peer(profile="f"), "profiles.f.min_ttl", "from 1 to 255"),
    ("[profiles.f]\nhook_timeout_s = -1\n", "profiles.f.hook_timeout_s", "positive"),
    # references and addresses
    (peer(profile="fast"), "peers[0].profile", "unknown profile 'fast' (none defined)"),
    (
        "[unsolicited]\nprefixes = ['10.0.0.0/8']\nlisten = ['127.0.0.1']\nprofile = ['x']\n",
        "unsolicited.profile",
        "unknown profile ['x']",
    ),
    ("[profiles.slow]\n" + peer(profile="fast"), "peers[0].profile", "'fast' (slow)"),
    (peer(remote=None), "peers[0].remote", "required"),
    (peer(local=None), "peers[0].local", "required"),
    (PEER + PEER, "peers[1]", "duplicate of peers[0]"),
    (
        PEER + peer(remote="127.0.0.3") + peer(rx_interval_ms=50),
        "peers[2]",
        "duplicate of peers[0]",
    ),
    (peer(remote="no-such-host.invalid"), "peers[0].remote", "cannot resolve"),
    (peer(local="::1"), "peers[0]", "not of the same address family"),
    (peer(remote="fe80::1"), "peers[0].remote", "link-local"),
    (peer(interface="a/b"), "peers[0].interface", "not an interface name"),
    (peer(interface="x" * 16), "peers[0].interface", "not an interface name"),
    (peer(vrf=5), "peers[0].vrf", "must be a VRF name"),
    (peer(vrf="blue red"), "peers[0].vrf", "not an interface name"),
    (peer(netns=""), "peers[0].netns", "network namespace name"),
    (peer(netns=".."), "peers[0].netns", "not a network namespace name"),
    (peer(netns="blue", echo_interval_ms=50), "peers[0].netns", "echo is not supported"),
    # authentication
    (
        peer(auth=Raw("{type = 'md4', keys = [{id = 1, env = 'BFD_KEY'}]}")),
        "peers[0].auth.type",
        "must be one of simple, keyed-md5",
    ),
    (
        peer(auth=Raw("{type = ['simple'], keys = [{id = 1, env = 'BFD_KEY'}]}")),
        "peers[0].auth.type",
        "must be one of",
    ),
    (
        peer(auth=Raw("{keys = [{id = 1, env = 'BFD_KEY'}]}")),
        "peers[0].auth.type",
        "must be one of",
    ),
    (peer(auth=Raw("{type = 'simple'}")), "peers[0].auth.keys", "at least one key"),
    (peer(auth=Raw("{type = 'simple', keys = []}")), "peers[0].auth.keys", "at least one key"),
    (peer(auth=Raw("{type = 'simple', keys = [5]}")), "peers[0].auth.keys[0]", "must be a table"),
    (
        peer(auth=Raw("{type = 'simple', keys = [{id = 1, env = 'BFD_KEY', file = 'bfd.key'}]}")),
        "peers[0].auth.keys[0]",
        "exactly one of file or env",
    ),
    (
        peer(auth=Raw("{type = 'simple', keys = [{id = 1}]}")),
        "peers[0].auth.keys[0]",
        "exactly one of file or env",
    ),
    (
        peer(auth=Raw("{type = 'simple', keys = [{env = 'BFD_KEY'}]}")),
        "peers[0].auth.keys[0].id",
        "from 0 to 255",
    ),
    (
        peer(auth=Raw("{type = 'simple', keys = [{id = 256, env = 'BFD_KEY'}]}")),
        "peers[0].auth.keys[0].id",
        "from 0 to 255",
    ),
    (
        peer(
            auth=Raw(
                "{type = 'simple', keys = [{id = 1, env = 'BFD_KEY'}, {id = 1, env = 'BFD_KEY'}]}"
            )
        ),
        "peers[0].auth.keys[1].id",
        "given twice",
    ),
    (
        peer(auth=Raw("{type = 'simple', keys = [{id = 1, file = 'missing.key'}]}")),
        "peers[0].auth.keys[0].file",
        "missing.key: cannot read it",
    ),
    (
        peer(auth=Raw("{type = 'simple', keys = [{id = 1, file = 5}]}")),
        "peers[0].auth.keys[0].file",
        "must be a file name",
    ),
    (
        peer(auth=Raw("{type = 'simple', keys = [{id = 1, env = 'NOT_SET_ANYWHERE'}]}")),
        "peers[0].auth.keys[0].env",
        "NOT_SET_ANYWHERE is not set",
    ),
    (
        peer(auth=Raw("{type = 'simple', keys = [{id = 1, env = ''}]}")),
        "peers[0].auth.keys[0].env",
        "environment variable name",
    ),
    (
        peer(
            auth=Raw("{type = 'simple', keys = [{id = 1, env = 'BFD_KEY'}], transmit_key_id = 2}")
        ),
        "peers[0].auth.transmit_key_id",
        "key id 2 is not among the keys (1)",
    ),
    (
        peer(
            auth=Raw("{type = 'simple', keys = [{id = 1, env = 'BFD_KEY'}], transmit_key_id = '1'}")
        ),
        "peers[0].auth.transmit_key_id",
        "whole number",
    ),
    (
        "[defaults]\nauth = {type = 'keyed-sha1', keys = []}\n" + PEER,
        "defaults.auth.keys",
        "at least one key",
    ),
    (
        "[profiles.a]\nauth = {type = 'keyed-md5', keys = [{id = 1, file = 'nope'}]}\n",
        "profiles.a.auth.keys[0].file",
        "cannot read it",
    ),
]


@pytest.mark.parametrize(
    ("text", "key", "words"), ERRORS, ids=[f"{i}-{key}" for i, (_, key, _) in enumerate(ERRORS)]
)
def test_error_names_file_and_key(tmp_path: Path, text: str, key: str, words: str) -> None:
    message = error_of(tmp_path, text)
    path = tmp_path / "aiobfd.toml"
    assert message.startswith(f"{path}: {key}: "), message
    assert words in message, message


@pytest.mark.parametrize(
    ("auth_type", "secret", "limit"),
    [
        ("simple", "x" * 17, 16),
        ("keyed-md5", "y" * 17, 16),
        ("meticulous-keyed-sha1", "z" * 21, 20),
    ],
)
def test_too_long_secret_names_its_source_never_its_value(
    tmp_path: Path, auth_type: str, secret: str, limit: int
) -> None:
    key_file(tmp_path, secret, "long.key")
    for source, where, env in (
        ("file = 'long.key'", "file", {}),
        ("env = 'LONG'", "env", {"LONG": secret}),
    ):
        text = peer(auth=Raw(f"{{type = '{auth_type}', keys = [{{id = 3, {source}}}]}}"))
        message = error_of(tmp_path, text, env)
        assert f"peers[0].auth.keys[0].{where}: " in message, message
        assert f"longer than the {limit} bytes" in message
        assert secret not in message and secret[:8] not in message


def test_empty_secret_file(tmp_path: Path) -> None:
    (tmp_path / "empty.key").write_text("\n")
    message = error_of(
        tmp_path, peer(auth=Raw("{type = 'simple', keys = [{id = 1, file = 'empty.key'}]}"))
    )
    assert "peers[0].auth.keys[0].file: " in message and "empty" in message


def test_secret_is_not_in_any_error_even_after_it_was_loaded(tmp_path: Path) -> None:
    """Errors found after the secrets were read (later keys, later peers) do not show them."""
    key_file(tmp_path)
    auth = "{type = 'keyed-sha1', keys = [{id = 1, file = 'bfd.key'}, {id = 2, env = 'BFD_KEY'}]"
    for text in (
        peer(auth=Raw(auth + ", transmit_key_id = 9}")),
        peer(auth=Raw(auth + "}")) + peer(auth=Raw(auth + "}")),  # a duplicate peer
        peer(auth=Raw(auth + "}"), detect_mult=0),
        f"[defaults]\nauth = {auth}}}\n" + peer(remote="no-such-host.invalid"),
    ):
        message = error_of(tmp_path, text)
        assert SECRET not in message


def test_bad_toml_syntax(tmp_path: Path) -> None:
    message = error_of(tmp_path, "[[peers]\nremote = '127.0.0.2'\n")
    assert message.startswith(f"{tmp_path / 'aiobfd.toml'}: not valid TOML: ")
    assert "line 1" in message


def test_bad_toml_syntax_around_a_secret_like_value_is_not_echoed(tmp_path: Path) -> None:
    """tomllib reports positions, not contents: a mistyped value does not leak."""
    message = error_of(tmp_path, PEER + f"password = {SECRET}\n")
    assert "not valid TOML" in message and "line 5" in message


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "aiobfd.toml"
    path.write_bytes(b"[daemon]\nlog_level = '\xff'\n")
    with pytest.raises(ConfigError, match=r"aiobfd\.toml: not valid TOML: not UTF-8"):
        load_config(str(path))


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert str(info.value) == f"{path}: no such file"


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path))
    assert str(info.value).startswith(f"{tmp_path}: cannot read it")


def test_first_error_wins_and_nothing_is_returned(tmp_path: Path) -> None:
    """A file with an error yields no configuration at all, even if some peers are fine."""
    message = error_of(tmp_path, PEER + peer(remote="127.0.0.3", detect_mult=0))
    assert "peers[1].detect_mult" in message


# ------------------------------------------------------------------ resolution


def test_empty_file_is_valid_with_no_peers(tmp_path: Path) -> None:
    config = load(tmp_path, "")
    assert config.peers == ()
    assert config.daemon == DaemonSettings()
    assert config.dampening is None
    assert config.path == str(tmp_path / "aiobfd.toml")


def test_builtin_defaults(tmp_path: Path) -> None:
    [spec] = load(tmp_path, PEER).peers
    s = spec.session
    assert (s.desired_min_tx_us, s.required_min_rx_us, s.detect_mult) == (1_000_000,) * 2 + (3,)
    assert s.passive is False and s.auth is None
    assert s.min_ttl is None  # 255 single hop (with authentication), 254 multihop
    assert s.multihop is False
    assert spec.shutdown is False
    assert spec.hooks.timeout_s == SessionSettings().hook_timeout_s == 10.0
    assert not spec.hooks
    assert spec.profile == ""
    assert (spec.remote, spec.local, spec.family, spec.scope) == (
        "127.0.0.2",
        "127.0.0.1",
        socket.AF_INET,
        0,
    )


def test_precedence_builtin_defaults_profile_peer(tmp_path: Path) -> None:
    """builtin < [defaults] < [profiles.NAME] < [[peers]], key by key."""
    text = """
[defaults]
rx_interval_ms = 500
tx_interval_ms = 400
detect_mult = 4
on_up = "echo defaults-up"
hook_timeout_s = 3

[profiles.fast]
tx_interval_ms = 100
detect_mult = 5
passive = true
on_down = "echo fast-down"

[[peers]]
remote = "127.0.0.2"
local = "127.0.0.1"
profile = "fast"
detect_mult = 6
hook_timeout_s = 2.5

[[peers]]
remote = "127.0.0.3"
local = "127.0.0.1"
profile = "fast"

[[peers]]
remote = "127.0.0.4"
local = "127.0.0.1"

[[peers]]
remote = "127.0.0.5"
local = "127.0.0.1"
rx_interval_ms = 50
passive = false
min_ttl = 200
shutdown = true
"""
    a, b, c, d = load(tmp_path, text).peers
    # peer > profile > defaults
    assert a.session.detect_mult == 6
    assert a.session.desired_min_tx_us == 100_000  # profile
    assert a.session.required_min_rx_us == 500_000  # defaults
    assert a.session.passive is True  # profile
    assert a.session.min_ttl is None  # builtin
    assert a.hooks.on_up == "echo defaults-up" and a.hooks.on_down == "echo fast-down"
    assert a.hooks.timeout_s == 2.5
    assert a.profile == "fast"
    # profile > defaults
    assert (b.session.desired_min_tx_us, b.session.detect_mult) == (100_000, 5)
    assert b.hooks.timeout_s == 3.0
    # defaults only
    assert (c.session.desired_min_tx_us, c.session.required_min_rx_us) == (400_000, 500_000)
    assert c.session.detect_mult == 4 and c.session.passive is False
    assert c.hooks.on_down == "" and c.profile == ""
    # peer > defaults
    assert d.session.required_min_rx_us == 50_000 and d.session.desired_min_tx_us == 400_000
    assert d.session.min_ttl == 200
    assert d.shutdown is True
    assert [p.remote for p in (a, b, c, d)] == ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]


def test_profiles_do_not_leak_into_each_other(tmp_path: Path) -> None:
    text = (
        """
[profiles.a]
tx_interval_ms = 10
[profiles.b]
rx_interval_ms = 20
"""
        + peer(profile="a")
        + peer(remote="127.0.0.3", profile="b")
    )
    a, b = load(tmp_path, text).peers
    assert (a.session.desired_min_tx_us, a.session.required_min_rx_us) == (10_000, 1_000_000)
    assert (b.session.desired_min_tx_us, b.session.required_min_rx_us) == (1_000_000, 20_000)


def test_same_remote_from_two_local_addresses_is_not_a_duplicate(tmp_path: Path) -> None:
    text = PEER + peer(local="127.0.0.3")
    a, b = load(tmp_path, text).peers
    assert a.key != b.key


def test_host_names_resolve(tmp_path: Path) -> None:
    [spec] = load(tmp_path, peer(local="localhost", remote="127.0.0.2")).peers
    assert spec.local == "127.0.0.1"


def test_ipv6_link_local_takes_the_interface(tmp_path: Path) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sock.bind(("::1", 0))
        sock.close()
    except OSError:
        pytest.skip("no ::1")
    [spec] = load(tmp_path, peer(remote="fe80::1", local="::1", interface="lo")).peers
    assert spec.remote == "fe80::1"
    assert spec.interface == "lo"
    assert spec.scope == socket.if_nametoindex("lo")
    assert spec.display_remote() == "fe80::1%lo"
    message = error_of(tmp_path, peer(remote="fe80::1", local="::1", interface="nosuchif0"))
    assert "peers[0].remote: " in message and "no interface named 'nosuchif0'" in message


def test_daemon_and_dampening_tables(tmp_path: Path) -> None:
    text = """
[daemon]
log_level = "debug"
log_format = "json"
control_socket = "/run/aiobfd/aiobfd.sock"
metrics_address = "127.0.0.1"
metrics_port = 0
ttl_check = false
receive_holdoff_ms = 0

[dampening]
penalty = 500
half_life_s = 7.5
"""
    config = load(tmp_path, text + PEER)
    assert config.daemon == DaemonSettings(
        log_level="DEBUG",
        log_format="json",
        control_socket="/run/aiobfd/aiobfd.sock",
        metrics_address="127.0.0.1",
        metrics_port=0,
        ttl_check=False,
        receive_holdoff_ms=0,
    )
    assert config.dampening == DampeningSettings(penalty=500.0, half_life_s=7.5)
    off = load(tmp_path, "[dampening]\nenabled = false\npenalty = 5\n")
    assert off.dampening is None
    on = load(tmp_path, "[dampening]\n")
    assert on.dampening == DampeningSettings()


# ------------------------------------------------------------------ secrets


def test_secret_from_file_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    key_file(keys, "from-a-file")
    monkeypatch.chdir("/")  # relative names do not depend on the working directory
    [spec] = load(
        tmp_path, peer(auth=Raw("{type = 'keyed-md5', keys = [{id = 7, file = 'keys/bfd.key'}]}"))
    ).peers
    auth = spec.session.auth
    assert auth is not None
    assert auth.auth_type is AuthType.KEYED_MD5
    assert [(k.key_id, k.secret) for k in auth.keys] == [(7, b"from-a-file")]
    assert auth.transmit_key_id == 7


def test_secret_from_absolute_file(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "secrets").mkdir()
    path = key_file(tmp_path / "secrets", "absolute")
    text = peer(auth=Raw(f"{{type = 'simple', keys = [{{id = 1, file = '{path}'}}]}}"))
    [spec] = load(tmp_path / "etc", text).peers
    assert spec.session.auth is not None
    assert spec.session.auth.keys[0].secret == b"absolute"


def test_secret_from_environment_and_key_rotation(tmp_path: Path) -> None:
    key_file(tmp_path, "old-key")
    text = peer(
        auth=Raw(
            "{type = 'meticulous-keyed-sha1', transmit_key_id = 2, keys = "
            "[{id = 1, file = 'bfd.key'}, {id = 2, env = 'BFD_KEY'}]}"
        )
    )
    [spec] = load(tmp_path, text).peers
    auth = spec.session.auth
    assert auth is not None
    assert auth.auth_type is AuthType.METICULOUS_KEYED_SHA1
    assert {k.key_id: k.secret for k in auth.keys} == {1: b"old-key", 2: SECRET.encode()}
    assert auth.transmit_key_id == 2


def test_auth_inherits_and_is_overridden(tmp_path: Path) -> None:
    key_file(tmp_path, "profile-key", "p.key")
    text = (
        "[defaults]\nauth = {type = 'simple', keys = [{id = 1, env = 'BFD_KEY'}]}\n"
        "[profiles.p]\nauth = {type = 'keyed-sha1', keys = [{id = 5, file = 'p.key'}]}\n"
        + PEER
        + peer(remote="127.0.0.3", profile="p")
        + peer(
            remote="127.0.0.4",
            profile="p",
            auth=Raw("{type = 'keyed-md5', keys = [{id = 9, env = 'BFD_KEY'}]}"),
        )
    )
    a, b, c = load(tmp_path, text).peers
    assert a.session.auth is not None and b.session.auth is not None and c.session.auth is not None
    assert (a.session.auth.auth_type, a.session.auth.key_ids) == (AuthType.SIMPLE_PASSWORD, (1,))
    assert (b.session.auth.auth_type, b.session.auth.key_ids) == (AuthType.KEYED_SHA1, (5,))
    assert b.session.auth.keys[0].secret == b"profile-key"
    assert (c.session.auth.auth_type, c.session.auth.key_ids) == (AuthType.KEYED_MD5, (9,))


def test_secret_never_in_repr_of_the_loaded_config(tmp_path: Path) -> None:
    config = load(tmp_path, peer(auth=Raw("{type = 'simple', keys = [{id = 1, env = 'BFD_KEY'}]}")))
    assert SECRET not in repr(config) and SECRET not in str(config)


def test_reading_again_sees_a_changed_secret(tmp_path: Path) -> None:
    """A reload reads the secrets again (key rotation without restart)."""
    path = key_file(tmp_path, "first")
    text = peer(auth=Raw("{type = 'simple', keys = [{id = 1, file = 'bfd.key'}]}"))
    [first] = load(tmp_path, text).peers
    path.write_text("second\n")
    [second] = load(tmp_path, text).peers
    assert first.session.auth is not None and second.session.auth is not None
    assert (first.session.auth.keys[0].secret, second.session.auth.keys[0].secret) == (
        b"first",
        b"second",
    )


def test_default_path() -> None:
    assert DEFAULT_PATH == "/etc/aiobfd/aiobfd.toml"


# ------------------------------------------------------------------ the example


EXAMPLE = Path(__file__).resolve().parents[2] / "contrib" / "aiobfd.toml"


def test_example_config_is_valid_and_shows_the_real_defaults(tmp_path: Path) -> None:
    """contrib/aiobfd.toml loads once its addresses are local and its keys exist,
    and the built-in values it shows are the code's."""
    import shutil
    import tomllib

    from aiobfd.cli import build_parser
    from aiobfd.hooks import Dampening
    from aiobfd.metrics import DEFAULT_METRICS_ADDRESS, DEFAULT_METRICS_PORT
    from aiobfd.paths import default_socket_path

    data = tomllib.loads(EXAMPLE.read_text())
    builtin = dataclasses.asdict(SessionSettings())
    assert data["defaults"] == {k: v for k, v in builtin.items() if v not in (None, "")}
    assert data["daemon"]["metrics_port"] == DEFAULT_METRICS_PORT
    assert data["daemon"]["metrics_address"] == DEFAULT_METRICS_ADDRESS
    assert data["daemon"]["log_level"] == "INFO" and data["daemon"]["log_format"] == "text"
    assert build_parser().parse_args(["127.0.0.1", "127.0.0.2"]).log_level is None  # INFO
    if os.geteuid() == 0:
        assert data["daemon"]["control_socket"] == default_socket_path()
    # the commented [dampening] shows the built-in values
    shown = {}
    for line in EXAMPLE.read_text().split("[dampening]")[1].splitlines()[1:8]:
        key, _, rest = line.lstrip("# ").partition(" = ")
        if key not in ("", "enabled"):
            shown[key] = float(rest.split()[0])
    assert shown == {
        k: getattr(Dampening(), k)
        for k in ("penalty", "suppress", "reuse", "half_life_s", "max_hold_s")
    }
    assert dataclasses.asdict(DampeningSettings()) == shown  # the settings' defaults are the hooks'

    text = EXAMPLE.read_text()
    for n, peer in enumerate(data["peers"]):
        for key in ("remote", "local"):
            text = text.replace(
                f'"{peer[key]}"', f'"127.0.{n + 1}.{1 if key == "local" else 2}"', 1
            )
    text = text.replace('interface = "eth0"', "")
    shutil.copy(EXAMPLE, tmp_path / "unused")
    (tmp_path / "keys").mkdir()
    key_file(tmp_path / "keys", "old-secret", "core-old.key")
    key_file(tmp_path / "keys", "new-secret", "core.key")
    config = load(tmp_path, text)
    assert len(config.peers) == len(data["peers"]) == 5
    fast, fast5, wan, signed, off = config.peers
    assert (fast.session.desired_min_tx_us, fast.session.detect_mult) == (50_000, 3)
    assert fast5.session.detect_mult == 5
    assert wan.session.passive and wan.session.required_min_rx_us == 300_000
    assert signed.session.auth is not None and signed.session.auth.transmit_key_id == 2
    assert signed.session.min_ttl == 254
    assert off.shutdown
    assert config.dampening is None


# ------------------------------------------------------------------ one model, two sources


def test_session_keys_are_the_fields_of_session_settings() -> None:
    keys = {f.name for f in dataclasses.fields(SessionSettings)}
    assert keys == {
        "rx_interval_ms",
        "tx_interval_ms",
        "detect_mult",
        "passive",
        "min_ttl",
        "multihop",
        "auth",
        "on_up",
        "on_down",
        "on_change",
        "hook_timeout_s",
        "unaffiliated_echo",
        "echo_interval_ms",
        "echo_rx_interval_ms",
    }


def test_the_command_line_means_the_same_as_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LOCAL REMOTE... with options gives the peers of a file with the options as
    [defaults] and one [[peers]] table per REMOTE (docs/configuration.md)."""
    from aiobfd.cli import parse

    monkeypatch.setenv("BFD_KEY", SECRET)
    key_file(tmp_path)
    _, cli, _ = parse(
        [
            *("127.0.0.1", "127.0.0.2", "127.0.0.3", "-r", "50", "-t", "60", "-m", "4", "-p"),
            *("--min-ttl", "250", "--on-up", "echo up", "--hook-timeout", "3"),
            *("--auth-type", "keyed-sha1", "--auth-key-id", "5", "--auth-key-id", "6"),
            *("--auth-key-file", str(tmp_path / "bfd.key"), "--auth-key-env", "BFD_KEY"),
            *("--auth-transmit-key-id", "6"),
        ]
    )
    text = (
        "[defaults]\nrx_interval_ms = 50\ntx_interval_ms = 60\ndetect_mult = 4\npassive = true\n"
        "min_ttl = 250\non_up = 'echo up'\nhook_timeout_s = 3\nauth = {type = 'keyed-sha1', "
        "keys = [{id = 5, file = 'bfd.key'}, {id = 6, env = 'BFD_KEY'}], transmit_key_id = 6}\n"
        + PEER
        + peer(remote="127.0.0.3")
    )
    config = load(tmp_path, text)
    assert cli.peers == config.peers
    assert cli.path is None and cli.source == "command line"
    assert cli.peers[0].session.auth is not None
    assert cli.peers[0].session.auth.transmit_key_id == 6


def test_unsolicited_from_either_source_is_the_same(tmp_path: Path) -> None:
    from aiobfd.cli import parse

    _, cli, _ = parse(["127.0.0.1", "--unsolicited", "198.51.100.0/24", "-r", "50", "-t", "50"])
    config = load(
        tmp_path,
        "[defaults]\nrx_interval_ms = 50\ntx_interval_ms = 50\n"
        "[unsolicited]\nprefixes = ['198.51.100.0/24']\nlisten = ['127.0.0.1']\n",
    )
    assert cli.unsolicited is not None and cli.unsolicited == config.unsolicited
    assert cli.unsolicited.session.passive and cli.unsolicited.session.desired_min_tx_us == 50_000
    assert cli.peers == config.peers == ()


def test_command_line_options_win_over_the_file_field_by_field(tmp_path: Path) -> None:
    from aiobfd.cli import parse

    text = (
        "[daemon]\nlog_level = 'debug'\nlog_format = 'json'\nmetrics_port = 0\n"
        "control_socket = '/run/x.sock'\nreceive_holdoff_ms = 5\n[dampening]\npenalty = 5\n"
    )
    path = write(tmp_path, text + PEER)
    _, untouched, _ = parse(["--config", str(path)])
    assert untouched.daemon == DaemonSettings(
        log_level="DEBUG",
        log_format="json",
        metrics_port=0,
        control_socket="/run/x.sock",
        receive_holdoff_ms=5,
    )
    assert untouched.dampening == DampeningSettings(penalty=5.0)
    _, settings, overrides = parse(
        [
            *("--config", str(path), "-l", "error", "--metrics-port", "9000", "--no-ttl-check"),
            *("--metrics-address", "::1", "--receive-holdoff", "0", "--dampening", "-o", "-f"),
            *("--event-loop", "asyncio"),
        ]
    )
    assert settings.daemon == DaemonSettings(
        log_level="ERROR",
        log_format="json",  # from the file
        log_to_stdout=False,
        log_file="/var/log/aiobfd.log",
        control_socket="/run/x.sock",  # from the file
        metrics_address="::1",
        metrics_port=9000,
        ttl_check=False,
        receive_holdoff_ms=0,
        event_loop="asyncio",
    )
    assert settings.dampening == DampeningSettings()  # --dampening: the built-in values
    assert settings.peers == untouched.peers
    assert overrides.apply(load_config(str(path))) == settings  # as a reload reads it again


def test_auth_errors_of_the_command_line_are_one_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from aiobfd.cli import parse

    key_file(tmp_path)
    key = str(tmp_path / "bfd.key")
    for args, words in (
        (["--auth-key-id", "1"], "--auth-key-* needs --auth-type"),
        (["--auth-type", "simple"], "needs --auth-key-file PATH or --auth-key-env NAME"),
        (["--auth-type", "simple", "--auth-key-id", "1", "--auth-key-id", "2", "--auth-key-file", key],
         "give one --auth-key-id per"),
        (["--auth-type", "simple", "--auth-key-file", str(tmp_path / "nope.key")],
         "nope.key: cannot read it"),
        (["--auth-type", "simple", "--auth-key-file", key, "--auth-transmit-key-id", "9"],
         "key id 9 is not among the keys (1)"),
    ):  # fmt: skip
        with pytest.raises(SystemExit) as info:
            parse(["127.0.0.1", "127.0.0.2", *args])
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("aiobfd: error: ") and words in err and err.count("\n") == 1, err


def test_a_local_address_not_on_the_host_is_waited_for(tmp_path: Path) -> None:
    """Not an error in the file (an interface that comes up later): a warning,
    and the daemon keeps the session waiting (aiobfd.engine.links)."""
    settings = load(tmp_path, peer(local="192.0.2.55"))
    assert settings.peers[0].local == "192.0.2.55"
    assert any("192.0.2.55 is not on this host now" in w for w in settings.warnings)
