"""Fixtures for interop tests: a namespace `lab` and factories for FRR and BIRD peers.

Tests using these fixtures are marked `interop`. When something they need is missing
(root, `ip`, FRR, BIRD) they are skipped, except with CI=true where they fail: interop
must not silently stop running in CI.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from .netns import Lab, cleanup_stale
from .peers import (
    BFDD,
    BIRD,
    BIRDC,
    VTYSH,
    ZEBRA,
    BirdNeighbor,
    BirdOptions,
    BirdPeer,
    FrrPeer,
    FrrSession,
)

INTEROP_FIXTURES = {"lab", "frr_peer", "bird_peer"}


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


def _found(tool: str | Path) -> bool:
    return shutil.which(tool) is not None if isinstance(tool, str) else Path(tool).is_file()


def require(*tools: str | Path, root: bool = True) -> None:
    """Skip the test if a tool (a name on PATH or a path) is missing or we are not root;
    fail it instead when CI=true."""
    missing = [str(t) for t in tools if not _found(t)]
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
    SIGTERM into KeyboardInterrupt so that a terminated run still cleans up its labs."""
    require("ip")
    removed = cleanup_stale()
    if removed:
        print(f"removed stale lab namespaces: {removed}")
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main else None
    yield
    if main:
        signal.signal(signal.SIGTERM, previous)


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
    started: list[FrrPeer] = []

    def make(
        ns: str = "peer", sessions: Sequence[FrrSession] = (), timeout: float = 10.0
    ) -> FrrPeer:
        workdir = tmp_path / f"frr{len(started)}-{lab.side(ns).role}"
        peer = FrrPeer(lab, ns, workdir, sessions)
        started.append(peer)
        peer.start(timeout)
        return peer

    yield make
    for peer in reversed(started):
        peer.stop()


@pytest.fixture
def bird_peer(lab: Lab, tmp_path: Path) -> Iterator[BirdFactory]:
    """`bird_peer(ns, neighbors, options=..., **option_fields) -> BirdPeer`, started;
    stopped after the test. Configs and logs end up in tmp_path under bird<n>-<side>."""
    require(BIRD, BIRDC)
    started: list[BirdPeer] = []

    def make(
        ns: str = "peer",
        neighbors: Sequence[BirdNeighbor] = (),
        options: BirdOptions | None = None,
        timeout: float = 10.0,
        **option_fields: Any,
    ) -> BirdPeer:
        opts = BirdOptions(**option_fields) if options is None else options
        workdir = tmp_path / f"bird{len(started)}-{lab.side(ns).role}"
        peer = BirdPeer(lab, ns, workdir, neighbors, opts)
        started.append(peer)
        peer.start(timeout)
        return peer

    yield make
    for peer in reversed(started):
        peer.stop()
