"""aiobfd-exabgp's decisions without a socket: which sessions count, when to announce.

What it tells ExaBGP over a (fake or real) control socket is in
tests/daemon/test_exabgp.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

from aiobfd import exabgp
from aiobfd.exabgp import Announcer, PeerPattern, Selection

ROUTE = "192.0.2.53/32"
ANNOUNCE = f"announce route {ROUTE} next-hop self"
WITHDRAW = f"withdraw route {ROUTE} next-hop self"


def record(remote: str, state: str, event: str = "state", **extra: Any) -> dict[str, Any]:
    """A record of the watch stream, as aiobfd sends it."""
    return {
        "event": event,
        "peer": remote,
        "remote": remote,
        "local": "198.51.100.11",
        "interface": None,
        "state": state,
        **extra,
    }


def selection(peers: Iterable[str] = (), require: str = "all", **states: str) -> Selection:
    """Sessions named a_1, a_2 (for 198.51.100.1, .2) in the given states."""
    sel = Selection(tuple(PeerPattern.parse(p) for p in peers), require)
    for name, state in states.items():
        assert sel.update(record(name.replace("a_", "198.51.100."), state))
    return sel


@pytest.mark.parametrize(
    ("states", "require", "wanted"),
    [
        ({}, "all", False),
        ({}, "any", False),
        ({"a_1": "up"}, "all", True),
        ({"a_1": "init"}, "all", False),
        ({"a_1": "up", "a_2": "down"}, "all", False),
        ({"a_1": "up", "a_2": "down"}, "any", True),
        ({"a_1": "admin_down", "a_2": "down"}, "any", False),
        ({"a_1": "up", "a_2": "up"}, "all", True),
    ],
)
def test_all_or_any_of_every_session(states: dict[str, str], require: str, wanted: bool) -> None:
    assert selection(require=require, **states).wanted() is wanted


def test_chosen_peers_only_count() -> None:
    sel = selection(["198.51.100.1"], a_1="up", a_2="down")
    assert sel.wanted()
    assert sel.describe() == "198.51.100.1 up"
    sel = selection(["198.51.100.2"], require="any", a_1="up", a_2="down")
    assert not sel.wanted()


def test_a_chosen_peer_missing_counts_as_down_with_all_only() -> None:
    for require, wanted in (("all", False), ("any", True)):
        sel = Selection(
            (PeerPattern.parse("198.51.100.1"), PeerPattern.parse("198.51.100.9")), require
        )
        sel.update(record("198.51.100.1", "up"))
        assert sel.wanted() is wanted
        assert not sel.all_named_seen()


def test_peer_patterns_compare_addresses_and_zones() -> None:
    v6 = PeerPattern.parse("2001:0db8::1")
    assert v6.matches(("2001:db8::1", "2001:db8::2", ""), "2001:db8::1")
    ll = PeerPattern.parse("fe80::1%eth0")
    assert ll.matches(("fe80::1", "fe80::2", "eth0"), "fe80::1%eth0")
    assert not ll.matches(("fe80::1", "fe80::2", "eth1"), "fe80::1%eth1")
    assert PeerPattern.parse("fe80::1").matches(("fe80::1", "fe80::2", "eth1"), "fe80::1%eth1")
    with pytest.raises(ValueError):
        PeerPattern.parse("router1")


@pytest.mark.parametrize(
    "bad",
    [
        {"event": "state"},
        {"event": "state", "remote": "a", "state": "sideways"},
        {"event": "state", "remote": 7, "state": "up"},
        {"event": "state", "remote": "a", "state": "up", "local": ["x"]},
        {"event": "state", "remote": "", "state": "up"},
    ],
)
def test_malformed_records_change_nothing(bad: dict[str, Any]) -> None:
    sel = Selection()
    assert not sel.update(bad)
    assert sel.sessions == {}


def test_announce_delay_on_a_fake_clock() -> None:
    """An announce waits out the delay, a withdraw never does; the first decision is written."""
    now = [0.0]
    out: list[str] = []
    announcer = Announcer([ROUTE], "self", out.append, delay_s=0.3, clock=lambda: now[0])
    announcer.set(False, "down")
    assert out == [WITHDRAW]
    announcer.set(True, "up")
    assert out == [WITHDRAW] and announcer.due_in() == pytest.approx(0.3)
    now[0] = 0.2
    announcer.set(False, "down again")  # not up for long enough: nothing announced
    assert out == [WITHDRAW] and announcer.due_in() is None
    announcer.set(True, "up")
    now[0] = 0.4
    announcer.set(True, "up")
    assert out == [WITHDRAW] and announcer.due_in() == pytest.approx(0.1)
    now[0] = 0.5
    announcer.set(True, "up")
    assert out == [WITHDRAW, ANNOUNCE] and announcer.due_in() is None
    announcer.set(False, "down")  # at once
    assert out == [WITHDRAW, ANNOUNCE, WITHDRAW]


@pytest.mark.parametrize(
    "args",
    [
        [],  # --route is required
        ["--route", "192.0.2.53/24"],  # host bits set
        ["--route", "banana"],
        ["--route", ROUTE, "--peer", "router"],
        ["--route", ROUTE, "--require", "most"],
        ["--route", ROUTE, "--next-hop", "there"],
        ["--route", ROUTE, "--max-backoff", "0"],
        ["--route", ROUTE, "--announce-delay", "-1"],
    ],
)
def test_bad_arguments_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        exabgp.main(args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("aiobfd-exabgp: error:") and len(err.splitlines()) == 1
