"""Fixtures for interop tests: a namespace `lab`, factories for FRR and BIRD peers, and
one aiobfd with three FRR sessions. The labs, peers and our daemon are `aiobfd.lab`'s.

Tests using these fixtures are marked `interop`. When something they need is missing
(root, `ip`, FRR, BIRD) they are skipped, except with CI=true where they fail: interop
must not silently stop running in CI.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, NamedTuple

import pytest

from aiobfd.lab import (
    BFDD,
    BIRD,
    BIRDC,
    LAB_NAMING,
    VTYSH,
    ZEBRA,
    BirdNeighbor,
    BirdOptions,
    BirdPeer,
    FrrPeer,
    FrrSession,
    Lab,
    OurDaemon,
    cleanup_stale,
    missing_tools,
)

INTEROP_FIXTURES = {"lab", "frr_peer", "bird_peer", "three_frr_peers"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "interop: runs real BFD peers (FRR, BIRD) in network namespaces; needs root"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if INTEROP_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.interop)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def require(*tools: str | Path, root: bool = True) -> None:
    """Skip the test if a tool (a name on PATH or a path) is missing or we are not root;
    fail it instead when CI=true."""
    missing = missing_tools(*tools)
    problems = [f"missing {', '.join(missing)}"] if missing else []
    if root and os.geteuid() != 0:
        problems.append("not root (network namespaces need it)")
    if problems:
        reason = "interop environment incomplete: " + "; ".join(problems)
        if in_ci():
            pytest.fail(reason + " (CI=true: not skipping)", pytrace=False)
        pytest.skip(reason)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def _interop_session() -> Iterator[None]:
    """Once per run: remove namespaces that crashed earlier runs left behind, and turn
    SIGTERM into KeyboardInterrupt so that a terminated run still cleans up its labs.
    At the end, remove whatever of this run no open lab holds any more."""
    require("ip")
    removed = cleanup_stale(LAB_NAMING)
    if removed:
        print(f"removed stale lab namespaces: {removed}")
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main else None
    try:
        yield
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
        if left := cleanup_stale(LAB_NAMING):
            print(f"removed lab leftovers of this run: {left}")


@pytest.fixture
def lab(_interop_session: None) -> Iterator[Lab]:
    """Two namespaces, 'host' and 'peer', joined by a veth; removed after the test."""
    with Lab() as the_lab:
        yield the_lab


FrrFactory = Callable[..., FrrPeer]
BirdFactory = Callable[..., BirdPeer]


@pytest.fixture
def frr_peer(lab: Lab, tmp_path: Path) -> Iterator[FrrFactory]:
    """`frr_peer(ns, sessions) -> FrrPeer`, started; stopped after the test.

    Configs and logs end up in the test's tmp_path under frr<n>-<side>.
    """
    require(ZEBRA, BFDD, VTYSH)
    numbers = itertools.count()
    with contextlib.ExitStack() as stops:  # each is stopped, even if another stop fails

        def make(
            ns: str = "peer", sessions: Sequence[FrrSession] = (), timeout: float = 10.0
        ) -> FrrPeer:
            workdir = tmp_path / f"frr{next(numbers)}-{lab.role(ns)}"
            peer = FrrPeer(lab, ns, workdir, sessions)
            stops.callback(peer.stop)
            peer.start(timeout)
            return peer

        yield make


@pytest.fixture
def bird_peer(lab: Lab, tmp_path: Path) -> Iterator[BirdFactory]:
    """`bird_peer(ns, neighbors, options=..., **option_fields) -> BirdPeer`, started;
    stopped after the test. Configs and logs end up in tmp_path under bird<n>-<side>."""
    require(BIRD, BIRDC)
    numbers = itertools.count()
    with contextlib.ExitStack() as stops:

        def make(
            ns: str = "peer",
            neighbors: Sequence[BirdNeighbor] = (),
            options: BirdOptions | None = None,
            timeout: float = 10.0,
            **option_fields: Any,
        ) -> BirdPeer:
            opts = BirdOptions(**option_fields) if options is None else options
            workdir = tmp_path / f"bird{next(numbers)}-{lab.role(ns)}"
            peer = BirdPeer(lab, ns, workdir, neighbors, opts)
            stops.callback(peer.stop)
            peer.start(timeout)
            return peer

        yield make


class ThreePeers(NamedTuple):
    """One aiobfd on the host, three FRR sessions on the peer toward it, all Up."""

    ours: OurDaemon
    frr: FrrPeer
    local: str
    """Our address (the host's IPv4)."""
    remotes: list[str]
    """FRR's three addresses."""
    ifnames: list[str]
    """FRR's macvlan for each of them."""


@pytest.fixture
def three_frr_peers(lab: Lab, frr_peer: FrrFactory) -> ThreePeers:
    """One aiobfd with three FRR sessions at 100 ms x 3 (one macvlan per FRR address:
    FRR keys single-hop sessions by interface), once Up on both sides."""
    local = lab.host.ipv4
    remotes = ["198.51.100.3", "198.51.100.4", "198.51.100.5"]
    ifnames = [lab.add_macvlan("peer", f"m{i}", a) for i, a in enumerate(remotes)]
    frr = frr_peer(
        "peer",
        [
            FrrSession(local, a, rx_ms=100, tx_ms=100, multiplier=3, interface=i)
            for a, i in zip(remotes, ifnames, strict=True)
        ],
    )
    ours = OurDaemon(lab, "host", local, remotes, "-r", "100", "-t", "100").start()
    for remote in remotes:
        ours.wait_state(remote, "up")
        frr.wait_status(local, "up", local=remote)
    return ThreePeers(ours, frr, local, remotes, ifnames)
