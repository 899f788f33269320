"""Descriptors: what the sessions need, RLIMIT_NOFILE raised to it, and the refusal."""

from __future__ import annotations

import ipaddress
import resource
import socket
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from aiobfd import app
from aiobfd.config import ConfigError, DaemonSettings, PeerSpec, Settings, UnsolicitedConfig
from aiobfd.control import MAX_CLIENTS
from aiobfd.hooks import MAX_RUNNING
from aiobfd.io import fdlimit
from aiobfd.metrics.http import HttpLimits
from aiobfd.protocol.session import SessionConfig

INF = resource.RLIM_INFINITY


@dataclass
class FakeRlimit:
    """RLIMIT_NOFILE as the kernel keeps it: the soft limit at most the hard one;
    only a privileged process raises the hard one, and never above fs.nr_open."""

    soft: int
    hard: int
    privileged: bool = False
    nr_open: int = 1 << 20
    calls: list[tuple[int, int]] = field(default_factory=list)

    def getrlimit(self, kind: int) -> tuple[int, int]:
        assert kind == resource.RLIMIT_NOFILE
        return self.soft, self.hard

    def setrlimit(self, kind: int, limits: tuple[int, int]) -> None:
        assert kind == resource.RLIMIT_NOFILE
        self.calls.append(limits)
        soft, hard = limits
        if hard != INF and (soft == INF or soft > hard):  # INF is -1 here
            raise ValueError("current limit exceeds maximum limit")
        if hard != self.hard and (self.hard != INF and hard > self.hard) and not self.privileged:
            raise ValueError("not allowed to raise maximum limit")
        if hard != self.hard and hard > self.nr_open:
            raise ValueError("not allowed to raise maximum limit")  # EPERM as well
        self.soft, self.hard = soft, hard


@pytest.fixture
def limit(monkeypatch: pytest.MonkeyPatch) -> FakeRlimit:
    fake = FakeRlimit(1024, 4096)
    monkeypatch.setattr(resource, "getrlimit", fake.getrlimit)
    monkeypatch.setattr(resource, "setrlimit", fake.setrlimit)
    return fake


def nr_open_of(fake: FakeRlimit) -> int:
    return fake.nr_open


def test_the_need_counts_two_a_session_and_the_fixed_allowances() -> None:
    base = fdlimit.needed(0, 0)
    assert base == fdlimit.CONTROL_CONNECTIONS + fdlimit.METRICS_CONNECTIONS + fdlimit.PROCESS
    assert fdlimit.needed(10_000, 0) - base == 20_000
    assert fdlimit.needed(0, 3) - base == 3
    assert fdlimit.needed(0, 0, unsolicited=100) - base == 200
    assert fdlimit.needed(0, 0, hooks=8) - base == 8 * fdlimit.PER_HOOK
    assert fdlimit.needed(0, 0, farewells=50) - base == 50
    # 16,384 sessions (every source port once) fit in the unit's LimitNOFILE=65536.
    assert fdlimit.needed(16_384, 16, unsolicited=16_000, hooks=MAX_RUNNING) <= 65536


def test_the_allowances_match_the_caps_they_stand_for() -> None:
    assert MAX_CLIENTS == fdlimit.CONTROL_CONNECTIONS
    assert HttpLimits().max_connections == fdlimit.METRICS_CONNECTIONS


def test_the_soft_limit_goes_up_to_the_hard_one(limit: FakeRlimit) -> None:
    fit = fdlimit.fit(2000, nr_open=lambda: pytest.fail("fs.nr_open read needlessly"))
    assert (limit.soft, limit.hard) == (4096, 4096)
    assert fit.raised and fit.before == (1024, 4096) and fit.after == (4096, 4096)


def test_nothing_is_set_when_the_limit_is_enough(limit: FakeRlimit) -> None:
    limit.soft = 4096
    fit = fdlimit.fit(4096)
    assert not fit.raised and limit.calls == []


def test_a_privileged_process_raises_the_hard_limit_to_the_need(limit: FakeRlimit) -> None:
    limit.privileged = True
    fit = fdlimit.fit(20_200, nr_open=lambda: nr_open_of(limit))
    assert (limit.soft, limit.hard) == (20_200, 20_200)
    assert fit.after == (20_200, 20_200)


def test_without_privilege_a_short_hard_limit_is_refused_in_one_line(limit: FakeRlimit) -> None:
    with pytest.raises(fdlimit.FileLimitError) as info:
        fdlimit.fit(20_200, "10000 session(s)", nr_open=lambda: nr_open_of(limit))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("RLIMIT_NOFILE too low: 10000 session(s) need 20200 descriptors")
    assert "the limit is 4096 (hard limit 4096)" in message
    assert "LimitNOFILE=20200" in message and "ulimit -n 20200" in message
    assert "nr_open" not in message
    # What could be raised was: the soft limit to the hard one.
    assert limit.soft == 4096


def test_above_nr_open_even_root_is_refused_naming_the_sysctl(limit: FakeRlimit) -> None:
    limit.privileged = True
    limit.nr_open = 8192
    with pytest.raises(fdlimit.FileLimitError) as info:
        fdlimit.fit(20_200, nr_open=lambda: nr_open_of(limit))
    message = str(info.value)
    assert "LimitNOFILE=20200" in message
    assert "sysctl fs.nr_open=20200" in message and "allows 8192" in message
    assert (limit.soft, limit.hard) == (8192, 8192)  # as far as it goes


def test_between_the_minimum_and_the_need_it_says_how_many_receive_sockets_fit(
    limit: FakeRlimit,
) -> None:
    limit.soft, limit.hard = 1024, 20_000
    fit = fdlimit.fit(20_225, minimum=10_225, nr_open=lambda: nr_open_of(limit))
    assert (limit.soft, limit.hard) == (20_000, 20_000)
    assert fit.receive_sockets == 20_000 - 10_225
    line = fdlimit.shortfall(fit, 10_000, "10000 session(s)")
    assert "\n" not in line
    assert "up to 225 session(s) will be read from the shared listener" in line
    assert "LimitNOFILE=20225" in line
    # Below the minimum: refused, naming both.
    with pytest.raises(
        fdlimit.FileLimitError, match=r"need 30225 descriptors \(20225 at the least\)"
    ):
        fdlimit.fit(30_225, minimum=20_225, nr_open=lambda: nr_open_of(limit))


def test_the_minimum_is_one_descriptor_a_session() -> None:
    assert fdlimit.needed(10_000, 1, receive_sockets=False) == fdlimit.needed(0, 1) + 10_000
    assert (
        fdlimit.needed(0, 0, unsolicited=100, receive_sockets=False) == fdlimit.needed(0, 0) + 100
    )


def test_an_unlimited_hard_limit(limit: FakeRlimit) -> None:
    limit.hard = INF
    fdlimit.fit(5000)
    assert (limit.soft, limit.hard) == (5000, INF)
    assert fdlimit.describe((5000, INF)) == "5000/unlimited"
    assert fdlimit.covers(INF, 10**9)


def test_nr_open_is_read_from_proc(tmp_path: Path) -> None:
    path = tmp_path / "nr_open"
    path.write_text("2097152\n")
    assert fdlimit.read_nr_open(str(path)) == 2097152
    path.write_text("garbage")
    assert fdlimit.read_nr_open(str(path)) == fdlimit.NR_OPEN_DEFAULT
    assert fdlimit.read_nr_open(str(tmp_path / "none")) == fdlimit.NR_OPEN_DEFAULT


def peers(n: int, locals_: int = 1, multihop: bool = False) -> tuple[PeerSpec, ...]:
    cfg = SessionConfig(multihop=multihop)
    return tuple(
        PeerSpec(f"127.1.{i // 250}.{i % 250 + 1}", f"127.0.0.{i % locals_ + 1}", socket.AF_INET,
                 session=cfg)
        for i in range(n)
    )  # fmt: skip


def test_the_application_counts_sessions_listeners_unsolicited_and_hooks(
    limit: FakeRlimit,
) -> None:
    limit.soft = limit.hard = 1 << 20
    settings = Settings(peers=peers(1000, locals_=4) + peers(10, multihop=True))
    base = fdlimit.needed(0, 0, hooks=MAX_RUNNING)
    assert app.fit_file_limit(settings).need == base + 2 * 1010 + 5
    unsolicited = UnsolicitedConfig(
        (ipaddress.ip_network("127.0.0.0/8"),),
        ("127.0.0.1", "127.0.0.9"),
        multihop=True,
        max_sessions=500,
    )
    settings = Settings(
        peers=peers(1000, locals_=4),
        daemon=DaemonSettings(hook_max_running=100),
        unsolicited=unsolicited,
    )
    need = app.fit_file_limit(settings).need
    assert need == fdlimit.needed(1000, 4 + 2 * 2, unsolicited=500, hooks=100)


def test_a_reload_counts_the_running_tables_and_the_farewells(limit: FakeRlimit) -> None:
    limit.soft = limit.hard = 1 << 20
    running = Settings(peers=peers(100), daemon=DaemonSettings(hook_max_running=1))
    new = Settings(peers=peers(150)[50:], daemon=DaemonSettings(hook_max_running=1000))
    # [daemon] takes effect at the next restart: the running one's hooks count.
    need = app.fit_file_limit(new, running).need
    assert need == fdlimit.needed(100, 1, hooks=1, farewells=50)


def test_the_application_runs_a_short_limit_with_fewer_receive_sockets(
    limit: FakeRlimit, caplog: pytest.LogCaptureFixture
) -> None:
    limit.soft = limit.hard = 3000
    settings = Settings(peers=peers(2000))
    fit = app.fit_file_limit(settings)
    minimum = fdlimit.needed(2000, 1, hooks=MAX_RUNNING, receive_sockets=False)
    assert fit.need == fdlimit.needed(2000, 1, hooks=MAX_RUNNING)
    assert fit.receive_sockets == 3000 - minimum
    (record,) = [r for r in caplog.records if "shared listener" in r.getMessage()]
    assert record.levelname == "WARNING" and f"LimitNOFILE={fit.need}" in record.getMessage()


def test_a_reload_that_does_not_fit_is_refused_as_a_configuration_error(
    limit: FakeRlimit,
) -> None:
    limit.soft = limit.hard = 1500
    running = Settings(peers=peers(10))
    with pytest.raises(ConfigError, match=r"^RLIMIT_NOFILE too low: 2000 session\(s\) need"):
        app._read_fitted(lambda: Settings(peers=peers(2000)), running)
    # Room for every transmit socket but not every receive socket: accepted.
    _, fit = app._read_fitted(lambda: Settings(peers=peers(1000)), running)
    assert fit.receive_sockets is not None and 0 < fit.receive_sockets < 1000
    new, fit = app._read_fitted(lambda: Settings(peers=peers(500)), running)
    assert new.peers == peers(500) and fit.receive_sockets is None
