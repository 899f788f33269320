"""[[routes]] in the TOML file: read into RouteSpec, every mistake one clear line."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest

from aiobfd.config import ConfigError, RouteSpec, load_config

PEERS = """
[[peers]]
remote = "127.0.0.2"
local = "127.0.0.1"
[[peers]]
remote = "127.0.0.3"
local = "127.0.0.1"
[[peers]]
remote = "127.0.0.4"
local = "127.0.0.1"
multihop = true
"""


def load(tmp_path: Path, routes: str) -> list[RouteSpec]:
    path = tmp_path / "aiobfd.toml"
    path.write_text(PEERS + routes)
    return list(load_config(str(path), {}).routes)


def error_of(tmp_path: Path, routes: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, routes)
    message = str(info.value)
    assert "\n" not in message
    return message.split(": ", 1)[1]


def test_a_route_with_defaults(tmp_path: Path) -> None:
    [route] = load(
        tmp_path, '[[routes]]\nprefix = "0.0.0.0/0"\nnexthops = ["127.0.0.2", "127.0.0.3"]\n'
    )
    assert route == RouteSpec(ipaddress.ip_network("0.0.0.0/0"), ("127.0.0.2", "127.0.0.3"))
    assert (route.table, route.metric, route.keep_last, route.persist) == (254, None, True, False)


def test_every_key(tmp_path: Path) -> None:
    [route] = load(
        tmp_path,
        '[[routes]]\nprefix = "203.0.113.0/24"\nnexthops = ["127.0.0.2"]\n'
        "table = 100\nmetric = 5\nkeep_last = false\npersist = true\n",
    )
    assert (route.table, route.metric, route.keep_last, route.persist) == (100, 5, False, True)


def test_no_routes(tmp_path: Path) -> None:
    assert load(tmp_path, "") == []


@pytest.mark.parametrize(
    ("routes", "message"),
    [
        ('[[routes]]\nnexthops = ["127.0.0.2"]\n', "routes[0].prefix: required"),
        ('[[routes]]\nprefix = "203.0.113.1/24"\nnexthops = ["127.0.0.2"]\n', "host bits set"),
        ('[[routes]]\nprefix = "nonsense"\nnexthops = ["127.0.0.2"]\n', "routes[0].prefix: not a"),
        ('[[routes]]\nprefix = "0.0.0.0/0"\n', "routes[0].nexthops: required"),
        ('[[routes]]\nprefix = "0.0.0.0/0"\nnexthops = []\n', "routes[0].nexthops: required"),
        (
            '[[routes]]\nprefix = "0.0.0.0/0"\nnexthops = ["127.0.0.9"]\n',
            "routes[0].nexthops[0]: 127.0.0.9 is not the remote of a configured session",
        ),
        (
            '[[routes]]\nprefix = "::/0"\nnexthops = ["127.0.0.2"]\n',
            "routes[0].nexthops[0]: 127.0.0.2 is IPv4, ::/0 is IPv6",
        ),
        (
            '[[routes]]\nprefix = "0.0.0.0/0"\nnexthops = ["127.0.0.2", "127.0.0.2"]\n',
            "routes[0].nexthops[1]: 127.0.0.2 is listed twice",
        ),
        ('[[routes]]\nprefix = "0.0.0.0/0"\nnexthops = ["gw"]\n', "nexthops[0]: not an address"),
        ('[[routes]]\nprefix = "0.0.0.0/0"\nnexthops = ["127.0.0.4"]\n', "is multihop"),
        ('[[routes]]\nprefix = "0.0.0.0/0"\nnexthops = ["127.0.0.2"]\ntable = 0\n', "table"),
        ('[[routes]]\nprefix = "0.0.0.0/0"\nnexthops = ["127.0.0.2"]\ntable = 255\n', "local"),
        ('[[routes]]\nprefix = "0.0.0.0/0"\nnexthops = ["127.0.0.2"]\nmetric = -1\n', "metric"),
        ('[[routes]]\nprefix = "0.0.0.0/0"\nnexthops = ["127.0.0.2"]\npersist = 1\n', "persist"),
        ('[[routes]]\nprefix = "0.0.0.0/0"\nnexthops = ["127.0.0.2"]\nvia = 1\n', "unknown key"),
        (
            '[[routes]]\nprefix = "0.0.0.0/0"\nnexthops = ["127.0.0.2"]\n'
            '[[routes]]\nprefix = "0.0.0.0/0"\nnexthops = ["127.0.0.3"]\nmetric = 0\n',
            "routes[1]: duplicate of routes[0] (0.0.0.0/0 table 254 metric 0)",
        ),
    ],
)
def test_errors(tmp_path: Path, routes: str, message: str) -> None:
    assert message in error_of(tmp_path, routes)


def test_same_prefix_other_metric_is_fine(tmp_path: Path) -> None:
    routes = load(
        tmp_path,
        '[[routes]]\nprefix = "0.0.0.0/0"\nnexthops = ["127.0.0.2"]\n'
        '[[routes]]\nprefix = "0.0.0.0/0"\nnexthops = ["127.0.0.3"]\nmetric = 10\n',
    )
    assert len(routes) == 2


def test_routes_must_be_tables(tmp_path: Path) -> None:
    path = tmp_path / "aiobfd.toml"
    path.write_text("routes = 3\n" + PEERS)
    with pytest.raises(ConfigError, match="routes: must be an array of tables"):
        load_config(str(path), {})


def test_with_routes_the_automatic_receive_holdoff_is_zero() -> None:
    """A route follows a Down the peer signals at once: with [[routes]] the
    packets of established sessions are read as they come, unless the file
    says otherwise."""
    from types import SimpleNamespace

    from aiobfd.app import _holdoff_us

    with_routes: Any = SimpleNamespace(routes=("a route",))
    without: Any = SimpleNamespace(routes=())
    assert _holdoff_us(None, with_routes) == 0
    assert _holdoff_us(None, without) is None  # automatic (engine.receive)
    assert _holdoff_us(3, with_routes) == 3000
