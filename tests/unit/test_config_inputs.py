"""Hostile or careless configuration input (issue 18): each is one clear error, or a warning.

Address literals are strict, host names have a timeout, files are opened
without blocking and bounded, numbers are finite and within range, TOML nested
beyond the parser's depth is an error like any other; key files that others
may read are used with a warning the settings carry.
"""

from __future__ import annotations

import os
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aiobfd.config import (
    ConfigError,
    DaemonSettings,
    Overrides,
    Settings,
    addresses,
    load_config,
    resolve,
)
from aiobfd.protocol.packet import AuthType
from aiobfd.secret_sources import key_file_warning, load_secret_file, read_regular_file
from tests import helpers

PEER = '[[peers]]\nremote = "127.0.0.2"\nlocal = "127.0.0.1"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "aiobfd.toml"
    path.write_text(text)
    return path


def error_of(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(str(path), env or {})
    message = str(info.value)
    assert "\n" not in message and len(message) < 400, message
    assert message.startswith(f"{path}: "), message
    return message


def within(seconds: float, work: Callable[[], Any]) -> Any:
    """``work()``, which must end within ``seconds`` (a hang fails, not blocks, the test)."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = work()
        except BaseException as exc:
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    if "error" in out:
        raise out["error"]
    return out.get("result")


# ------------------------------------------------------------------ address literals


@pytest.mark.parametrize(
    "text",
    [
        "010.0.0.1",  # inet_aton: octal, 8.0.0.1
        "127.000.077.002",  # 127.0.63.2
        "127.1",  # 127.0.0.1
        "1",  # 0.0.0.1
        "0x7f.0.0.1",
        "0x7f000001",
        "127.0.0.1.",
        "1.2.3.4.5",
        "256.0.0.1",
        "peer.example.123",  # a host name cannot end in a number
    ],
)
def test_what_looks_like_an_ipv4_address_must_be_one(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve(text)
    assert str(info.value).startswith(f"{text} is not a valid IPv4 address")


@pytest.mark.parametrize("text", ["fe80::zz", "1::2::3", "::ffff:1.2.3", "2001:db8::1/64"])
def test_what_has_a_colon_must_be_an_ipv6_address(text: str) -> None:
    with pytest.raises(ConfigError, match="is not a valid IPv6 address"):
        resolve(text)


def test_valid_literals_and_names_still_work() -> None:
    assert resolve("127.0.0.1")[0].address == "127.0.0.1"
    assert resolve("::1")[0].address == "::1"
    assert resolve("0:0:0:0:0:0:0:1")[0].address == "::1"  # canonical
    assert any(a.address == "127.0.0.1" for a in resolve("localhost", socket.AF_INET))


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("a b", "is not a host name"),
        ("host\x00name", "is not a host name"),
        ("x" * 300, "too long"),
    ],
)
def test_what_cannot_be_a_host_name_is_not_resolved(text: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words) as info:
        resolve(text)
    assert len(str(info.value)) < 200


def test_strict_literals_in_the_file_name_the_key(tmp_path: Path) -> None:
    message = error_of(tmp_path, '[[peers]]\nremote = "010.0.0.1"\nlocal = "127.0.0.1"\n')
    assert "peers[0].remote: 010.0.0.1 is not a valid IPv4 address" in message
    message = error_of(tmp_path, '[[peers]]\nremote = "127.0.0.2"\nlocal = "127.000.0.1"\n')
    assert "peers[0].local: 127.000.0.1 is not a valid IPv4 address" in message


def test_unsolicited_listen_addresses_are_kept_resolved(tmp_path: Path) -> None:
    text = "[unsolicited]\nprefixes = ['10.0.0.0/8']\nlisten = ['localhost']\n"
    config = load_config(str(write(tmp_path, text)))
    assert config.unsolicited is not None
    assert config.unsolicited.listen[0] in ("127.0.0.1", "::1")


# ------------------------------------------------------------------ name lookups


@pytest.fixture
def silent_resolver(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """getaddrinfo never answers for *.never (until released)."""
    with helpers.silent_resolver(
        monkeypatch, lambda host: isinstance(host, str) and host.endswith(".never")
    ) as release:
        yield release
    assert addresses.stuck_lookups() == 0


def test_a_resolver_that_never_answers_is_given_up(silent_resolver: threading.Event) -> None:
    started = time.monotonic()
    with pytest.raises(ConfigError) as info:
        resolve("peer.never", timeout_s=0.3)
    assert 0.3 <= time.monotonic() - started < 1.5
    assert (
        str(info.value) == "cannot resolve 'peer.never': no answer from the resolver within 0.3 s"
    )
    assert addresses.stuck_lookups() == 1


def test_stuck_lookups_are_bounded(silent_resolver: threading.Event) -> None:
    for i in range(addresses.MAX_STUCK_LOOKUPS):
        with pytest.raises(ConfigError, match="no answer"):
            resolve(f"peer{i}.never", timeout_s=0.05)
    started = time.monotonic()
    with pytest.raises(ConfigError, match="has not answered 4 earlier lookups"):
        resolve("another.never", timeout_s=5)
    assert time.monotonic() - started < 0.5  # at once: no fifth thread
    assert resolve("127.0.0.1")[0].address == "127.0.0.1"  # literals need no resolver
    silent_resolver.set()
    deadline = time.monotonic() + 5
    while addresses.stuck_lookups() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert addresses.stuck_lookups() == 0


def test_the_file_names_the_key_of_an_unanswered_name(
    tmp_path: Path, silent_resolver: threading.Event, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(addresses, "RESOLVE_TIMEOUT_S", 0.2)
    message = error_of(tmp_path, '[[peers]]\nremote = "peer.never"\nlocal = "127.0.0.1"\n')
    assert message.endswith(
        "peers[0].remote: cannot resolve 'peer.never': no answer from the resolver within 0.2 s"
    )


# ------------------------------------------------------------------ files


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "aiobfd.toml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError) as info:
        within(2, lambda: load_config(str(fifo)))
    assert str(info.value) == f"{fifo}: cannot read it: a FIFO, not a regular file"
    key = tmp_path / "bfd.key"
    os.mkfifo(key)
    with pytest.raises(ValueError) as error:
        within(2, lambda: load_secret_file(key, AuthType.KEYED_SHA1))
    assert str(error.value) == f"secret file {key}: cannot read it (a FIFO, not a regular file)"


@pytest.mark.parametrize(
    ("path", "kind"), [("/dev/null", "a character device"), ("/", "a directory")]
)
def test_devices_and_directories_are_refused(path: str, kind: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: cannot read it: {kind}, not a regular file"


def test_size_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"#" * 5000)
    with pytest.raises(OSError, match="larger than 4096 bytes"):
        read_regular_file(big, 4096)
    with pytest.raises(ValueError, match=r"cannot read it \(larger than 4096 bytes\)"):
        load_secret_file(big, AuthType.SIMPLE_PASSWORD)
    data, st = read_regular_file(big, 5000)
    assert len(data) == 5000 and stat.S_ISREG(st.st_mode)
    from aiobfd.config import tomlfile

    assert tomlfile.MAX_CONFIG_BYTES == 16 * 2**20
    monkeypatch.setattr(tomlfile, "MAX_CONFIG_BYTES", 4096)
    with pytest.raises(ConfigError, match="cannot read it: larger than 4096 bytes"):
        load_config(str(big))


@pytest.mark.parametrize(
    "text",
    [
        "a = " + "[" * 100_000,  # beyond tomllib's recursion
        "a = " + "[" * 950 + "]" * 950,
        "a = " + "{b = " * 950 + "1" + "}" * 950,
        PEER + "profile = " + "[" * 900 + "]" * 900,
    ],
    ids=["unclosed", "arrays", "inline-tables", "profile-value"],
)
def test_toml_nested_too_deeply_is_one_error(tmp_path: Path, text: str) -> None:
    message = error_of(tmp_path, text)
    assert "nested too deeply" in message or "unknown profile" in message, message


# ------------------------------------------------------------------ numbers

NUMBERS = [
    (PEER.replace("\n", "\nhook_timeout_s = nan\n", 1), "peers[0].hook_timeout_s"),
    (PEER.replace("\n", "\nhook_timeout_s = inf\n", 1), "peers[0].hook_timeout_s"),
    (PEER.replace("\n", "\nhook_timeout_s = 3601\n", 1), "peers[0].hook_timeout_s"),
    ("[defaults]\nhook_timeout_s = 1e300\n", "defaults.hook_timeout_s"),
    ("[dampening]\npenalty = inf\n", "dampening.penalty"),
    ("[dampening]\nreuse = 1e7\n", "dampening.reuse"),
    ("[dampening]\nhalf_life_s = nan\n", "dampening.half_life_s"),
    ("[dampening]\nmax_hold_s = 86401\n", "dampening.max_hold_s"),
]
UNSOLICITED = "[unsolicited]\nprefixes = ['10.0.0.0/8']\nlisten = ['127.0.0.1']\n"
NUMBERS += [
    (UNSOLICITED + f"{key} = {value}\n", f"unsolicited.{key}")
    for key, value in (
        ("down_timeout_s", "nan"),
        ("down_timeout_s", "inf"),
        ("down_timeout_s", "-inf"),
        ("down_timeout_s", "0"),
        ("down_timeout_s", "86401"),
        ("rate_per_s", "nan"),
        ("rate_per_s", "1e9"),
        ("max_sessions", "inf"),
        ("max_sessions", "nan"),
        ("max_sessions", "10.5"),
        ("max_sessions", "100001"),
        ("burst", "1e300"),
        ("burst", "true"),
    )
]
NUMBERS += [
    ("[daemon]\nrealtime_priority = 0\n", "daemon.realtime_priority"),
    ("[daemon]\nrealtime_priority = 100\n", "daemon.realtime_priority"),
    ("[daemon]\nrealtime_priority = 5.0\n", "daemon.realtime_priority"),
    ("[daemon]\nhook_max_running = 0\n", "daemon.hook_max_running"),
    ("[daemon]\nlock_memory = 1\n", "daemon.lock_memory"),
    ("[daemon]\nhook_pass_env = 'HOME'\n", "daemon.hook_pass_env"),
    ("[daemon]\nhook_pass_env = ['HOME', 'A=B']\n", "daemon.hook_pass_env[1]"),
    ("[daemon]\nhook_pass_env = ['']\n", "daemon.hook_pass_env[0]"),
    ("[daemon]\nhook_pass_env = [5]\n", "daemon.hook_pass_env[0]"),
]


@pytest.mark.parametrize(
    ("text", "key"), NUMBERS, ids=[f"{i}-{k}" for i, (_, k) in enumerate(NUMBERS)]
)
def test_every_number_is_finite_and_in_range(tmp_path: Path, text: str, key: str) -> None:
    message = error_of(tmp_path, text)
    assert message.startswith(f"{tmp_path / 'aiobfd.toml'}: {key}: "), message


def test_the_new_daemon_keys(tmp_path: Path) -> None:
    text = (
        "[daemon]\nhook_pass_env = ['HOME', 'http_proxy']\nhook_max_running = 3\n"
        "realtime_priority = 10\nlock_memory = true\n"
    )
    config = load_config(str(write(tmp_path, text)))
    assert config.daemon == DaemonSettings(
        hook_pass_env=("HOME", "http_proxy"),
        hook_max_running=3,
        realtime_priority=10,
        lock_memory=True,
    )
    # the command line wins, field by field; its --hook-pass-env list replaces the file's
    over = Overrides(hook_pass_env=("PATH",), realtime_priority=20).apply(config)
    assert over.daemon.hook_pass_env == ("PATH",)
    assert (over.daemon.realtime_priority, over.daemon.hook_max_running) == (20, 3)
    assert over.daemon.lock_memory


def test_hooks_never_get_a_secret_variable(tmp_path: Path) -> None:
    auth = "auth = {type = 'simple', keys = [{id = 1, env = 'BFD_KEY'}]}\n"
    text = "[daemon]\nhook_pass_env = ['BFD_KEY']\n[defaults]\n" + auth
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        Overrides().apply(load_config(str(path), {"BFD_KEY": "x"}))
    assert str(info.value) == (
        f"{path}: daemon.hook_pass_env: BFD_KEY holds an authentication key "
        "(hooks never get a secret)"
    )
    settings = load_config(str(write(tmp_path, "[defaults]\n" + auth)), {"BFD_KEY": "x"})
    assert settings.secret_variables == frozenset({"BFD_KEY"})
    with pytest.raises(ConfigError, match=r"^--hook-pass-env: BFD_KEY holds"):
        Overrides(hook_pass_env=("BFD_KEY",)).apply(settings)


# ------------------------------------------------------------------ the command line


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--hook-timeout", "nan"], "argument --hook-timeout: 'nan' is out of range"),
        (["--hook-timeout", "inf"], "argument --hook-timeout: 'inf' is out of range"),
        (["--hook-timeout=-1"], "argument --hook-timeout: '-1' is out of range"),
        (["--hook-timeout", "0"], "argument --hook-timeout: '0' is out of range"),
        (["--hook-timeout", "1e400"], "argument --hook-timeout: '1e400' is out of range"),
        (["--hook-timeout", "soon"], "argument --hook-timeout: 'soon' is not a number"),
        (
            ["--unsolicited", "10.0.0.0/8", "--unsolicited-down-timeout", "nan"],
            "argument --unsolicited-down-timeout: 'nan' is out of range",
        ),
        (
            ["--unsolicited-down-timeout", "infinity"],
            "argument --unsolicited-down-timeout: 'infinity' is out of range",
        ),
        (["--hook-pass-env", "A=B"], "argument --hook-pass-env: 'A=B' cannot be"),
        (["--hook-pass-env", ""], "argument --hook-pass-env: must be an environment variable"),
        (["--hook-max-running", "0"], "argument --hook-max-running: 0 is out of range"),
        (["--realtime-priority", "0"], "argument --realtime-priority: 0 is out of range: 1 to 99"),
        (["--realtime-priority", "100"], "argument --realtime-priority: 100 is out of range"),
    ],
)
def test_bad_options_are_one_line_and_status_2(
    args: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from aiobfd.cli import parse

    with pytest.raises(SystemExit) as info:
        parse(["127.0.0.1", "127.0.0.2", *args])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("aiobfd: error: ") and words in err and err.count("\n") == 1, err


def test_the_new_options(monkeypatch: pytest.MonkeyPatch) -> None:
    from aiobfd.cli import parse

    monkeypatch.setenv("BFD_KEY", "x")
    _, settings, _ = parse(
        [
            *("127.0.0.1", "127.0.0.2", "--hook-pass-env", "HOME", "--hook-pass-env", "TERM"),
            *("--hook-max-running", "2", "--realtime-priority", "5", "--lock-memory"),
            *("--hook-timeout", "2.5"),
        ]
    )
    assert settings.daemon.hook_pass_env == ("HOME", "TERM")
    assert settings.daemon.hook_max_running == 2
    assert settings.daemon.realtime_priority == 5 and settings.daemon.lock_memory
    assert settings.peers[0].hooks.timeout_s == 2.5
    with pytest.raises(SystemExit):
        parse(
            [
                *("127.0.0.1", "127.0.0.2", "--auth-type", "simple", "--auth-key-env", "BFD_KEY"),
                *("--hook-pass-env", "BFD_KEY"),
            ]
        )


# ------------------------------------------------------------------ key files


def key(tmp_path: Path, mode: int, name: str = "bfd.key", gid: int | None = None) -> Path:
    path = tmp_path / name
    path.write_text("s3cret\n")
    if gid is not None:
        os.chown(path, -1, gid)
    path.chmod(mode)
    return path


def warnings_for(path: Path) -> list[str]:
    warnings: list[str] = []
    assert load_secret_file(path, AuthType.SIMPLE_PASSWORD, warnings) == b"s3cret"
    return warnings


def test_a_key_file_others_may_read_is_used_with_a_warning(tmp_path: Path) -> None:
    path = key(tmp_path, 0o644)
    assert warnings_for(path) == [
        f"secret file {path} can be read or written by everyone (mode 0644): "
        "make it 0600, or 0640 with the daemon's group"
    ]
    path.chmod(0o602)
    assert "by everyone (mode 0602)" in warnings_for(path)[0]
    for mode in (0o600, 0o400):
        path.chmod(mode)
        assert warnings_for(path) == []
    path.chmod(0o640)  # the file's group is ours (we created it)
    assert warnings_for(path) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the file another group")
def test_a_key_file_of_a_foreign_group(tmp_path: Path) -> None:
    foreign = next(g for g in range(60000, 65000) if g not in {os.getegid(), *os.getgroups()})
    path = key(tmp_path, 0o640, gid=foreign)
    assert warnings_for(path) == [
        f"secret file {path} can be read or written by group {foreign} (mode 0640): "
        "make it 0600, or 0640 with the daemon's group"
    ]


def test_symlinks_are_followed_and_the_target_is_what_counts(tmp_path: Path) -> None:
    target = key(tmp_path, 0o600, "store.key")
    link = tmp_path / "bfd.key"
    link.symlink_to(target)
    assert warnings_for(link) == []  # the common layout: a link to a proper file
    target.chmod(0o644)
    assert warnings_for(link) == [
        f"secret file {link} (a link to {target}) can be read or written by everyone "
        "(mode 0644): make it 0600, or 0640 with the daemon's group"
    ]


def test_the_settings_carry_the_warnings_once_per_file(tmp_path: Path) -> None:
    path = key(tmp_path, 0o644)
    auth = "auth = {type = 'simple', keys = [{id = 1, file = 'bfd.key'}]}\n"
    text = PEER + auth + PEER.replace("127.0.0.2", "127.0.0.3") + auth
    config = load_config(str(write(tmp_path, text)))
    assert config.warnings == (key_file_warning(path, path.stat()),)
    assert isinstance(config, Settings)


def test_check_config_prints_the_warnings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from aiobfd.cli import main

    path = key(tmp_path, 0o644)
    status = main(
        [
            "127.0.0.1",
            "127.0.0.2",
            "--auth-type",
            "simple",
            "--auth-key-file",
            str(path),
            "--check-config",
        ]
    )
    out, err = capsys.readouterr()
    assert status == 0
    assert out == "command line: configuration valid, 1 peer(s)\n"
    assert err == f"aiobfd: warning: {key_file_warning(path, path.stat())}\n"


# ------------------------------------------------------------------ refusals of the process settings


def test_realtime_refused_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from aiobfd import app

    def refuse(*args: Any) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    with pytest.raises(app.StartError) as info:
        app.configure_process(DaemonSettings(realtime_priority=7))
    message = str(info.value)
    assert message.startswith("realtime_priority 7: SCHED_FIFO refused (Operation not permitted)")
    assert "LimitRTPRIO=7" in message and "RestrictRealtime" in message and "\n" not in message


def test_lock_memory_refused_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import resource

    from aiobfd import app

    calls: list[int] = []

    def refuse(flags: int) -> None:
        calls.append(flags)
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(app, "_mlockall", refuse)
    monkeypatch.setattr(app, "_has_capability", lambda bit: True)
    with pytest.raises(app.StartError) as info:
        app.configure_process(DaemonSettings(lock_memory=True))
    assert str(info.value).startswith("lock_memory: mlockall refused (Operation not permitted)")
    assert "LimitMEMLOCK=infinity" in str(info.value)
    assert calls == [app.MCL_CURRENT]

    # Without CAP_IPC_LOCK, a finite limit is refused before mlockall is tried.
    calls.clear()
    monkeypatch.setattr(app, "_has_capability", lambda bit: False)
    monkeypatch.setattr(resource, "getrlimit", lambda which: (8 << 20, 8 << 20))
    with pytest.raises(app.StartError) as info:
        app.configure_process(DaemonSettings(lock_memory=True))
    assert str(info.value).startswith("lock_memory: RLIMIT_MEMLOCK is 8388608 bytes")
    assert calls == []


def test_mlockall_falls_back_without_mcl_onfault(monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from aiobfd import app

    calls: list[int] = []

    def mlockall(flags: int) -> None:
        calls.append(flags)
        if flags & app.MCL_ONFAULT:
            raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(app, "_mlockall", mlockall)
    monkeypatch.setattr(app, "_has_capability", lambda bit: True)
    app.lock_memory()
    assert calls == [
        app.MCL_CURRENT,
        app.MCL_CURRENT | app.MCL_FUTURE | app.MCL_ONFAULT,
        app.MCL_CURRENT | app.MCL_FUTURE,
    ]
