"""Sessions with RFC 5880 §6.7 authentication, over the fake link."""

from __future__ import annotations

import pytest

from aiobfd.protocol.auth import AuthConfig, AuthKey
from aiobfd.protocol.errors import DropReason
from aiobfd.protocol.packet import AuthType, State
from aiobfd.protocol.session import SessionConfig
from tests.helpers import MS, SECOND, SessionPair

TYPES = list(AuthType)[1:]


def cfg(auth: AuthConfig | None) -> SessionConfig:
    return SessionConfig(100 * MS, 100 * MS, 3, auth=auth)


@pytest.mark.parametrize("auth_type", TYPES)
def test_pair_comes_up_with_each_type(auth_type: AuthType) -> None:
    auth = AuthConfig.single(auth_type, 7, b"s3cret")
    pair = SessionPair(cfg(auth), cfg(auth))
    pair.run_for(3 * SECOND)
    assert pair.a.state is State.UP and pair.b.state is State.UP
    assert pair.a.counters.packets_dropped == 0
    assert all(p.auth is not None and p.auth.auth_type == auth_type for _, p in pair.sent["a"])


@pytest.mark.parametrize(
    ("a", "b", "reason"),
    [
        (
            AuthConfig.single(AuthType.KEYED_SHA1, 7, b"s3cret"),
            AuthConfig.single(AuthType.KEYED_SHA1, 7, b"wrong"),
            DropReason.AUTH_FAILED,
        ),
        (
            AuthConfig.single(AuthType.KEYED_SHA1, 7, b"s3cret"),
            AuthConfig.single(AuthType.KEYED_SHA1, 8, b"s3cret"),
            DropReason.AUTH_FAILED,
        ),
        (
            AuthConfig.single(AuthType.KEYED_MD5, 7, b"s3cret"),
            AuthConfig.single(AuthType.METICULOUS_KEYED_MD5, 7, b"s3cret"),
            DropReason.AUTH_MISMATCH,
        ),
        (AuthConfig.single(AuthType.SIMPLE_PASSWORD, 7, b"s3cret"), None, DropReason.AUTH_MISMATCH),
    ],
)
def test_mismatch_never_comes_up(a: AuthConfig, b: AuthConfig | None, reason: DropReason) -> None:
    pair = SessionPair(cfg(a), cfg(b))
    pair.run_for(3 * SECOND)
    assert pair.a.state is State.DOWN and pair.b.state is not State.UP
    assert pair.a.counters.drops.get(reason, 0) > 0


def test_key_rotation_keeps_the_session_up() -> None:
    old, new = AuthKey(1, b"old-secret"), AuthKey(2, b"new-secret")
    both_tx_old = AuthConfig(AuthType.METICULOUS_KEYED_SHA1, (old, new), 1)
    pair = SessionPair(cfg(AuthConfig(AuthType.METICULOUS_KEYED_SHA1, (old,), 1)), cfg(both_tx_old))
    pair.run_for(3 * SECOND)
    assert pair.a.state is State.UP
    pair.a.set_auth(both_tx_old)  # a accepts both, still sends the old key
    pair.run_for(SECOND)
    pair.a.set_auth(AuthConfig(AuthType.METICULOUS_KEYED_SHA1, (old, new), 2))
    pair.b.set_auth(AuthConfig(AuthType.METICULOUS_KEYED_SHA1, (old, new), 2))
    pair.run_for(SECOND)
    only_new = AuthConfig(AuthType.METICULOUS_KEYED_SHA1, (new,), 2)
    pair.a.set_auth(only_new)
    pair.b.set_auth(only_new)
    pair.run_for(2 * SECOND)
    assert pair.a.state is State.UP and pair.b.state is State.UP
    assert pair.a.counters.session_down == 0 and pair.b.counters.session_down == 0
    assert pair.a.counters.packets_dropped == 0 and pair.b.counters.packets_dropped == 0
    assert pair.sent["a"][-1][1].auth.key_id == 2  # type: ignore[union-attr]


def test_min_ttl_applies_only_with_authentication() -> None:
    plain = SessionPair(SessionConfig(min_ttl=1)).a
    assert plain.min_rx_ttl == 255
    auth = AuthConfig.single(AuthType.KEYED_SHA1, 1, b"k")
    authed = SessionPair(SessionConfig(auth=auth, min_ttl=250)).a
    assert authed.min_rx_ttl == 250
