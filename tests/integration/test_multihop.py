"""RFC 5883 multihop sessions across a router, against FRR and BIRD, IPv4 and IPv6."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import require
from .ours import OurDaemon
from .peers import (
    BFDD,
    BIRD,
    VTYSH,
    ZEBRA,
    BirdNeighbor,
    BirdOptions,
    BirdPeer,
    FrrPeer,
    FrrSession,
)
from .routed import RoutedLab

FAMILIES = ["ipv4", "ipv6"]


@pytest.fixture
def routed(_interop_session: None) -> Iterator[RoutedLab]:
    require("ip")
    with RoutedLab() as lab:
        yield lab


@pytest.fixture
def far_frr(routed: RoutedLab, tmp_path: Path) -> Iterator[list[FrrPeer]]:
    require(ZEBRA, BFDD, VTYSH)
    started: list[FrrPeer] = []
    yield started
    for peer in started:
        peer.stop()


@pytest.fixture
def far_bird(routed: RoutedLab, tmp_path: Path) -> Iterator[list[BirdPeer]]:
    require(BIRD)
    started: list[BirdPeer] = []
    yield started
    for peer in started:
        peer.stop()


def addrs(lab: RoutedLab, family: str) -> tuple[str, str]:
    return getattr(lab.host, family), getattr(lab.far, family)


@pytest.mark.parametrize("family", FAMILIES)
def test_multihop_with_frr(
    routed: RoutedLab, far_frr: list[FrrPeer], tmp_path: Path, family: str
) -> None:
    ours_ip, far_ip = addrs(routed, family)
    frr = FrrPeer(
        routed,
        "far",
        tmp_path / "frr",
        [FrrSession(ours_ip, far_ip, rx_ms=100, tx_ms=100, multiplier=3, multihop=True)],
    )
    far_frr.append(frr)
    frr.start()
    ours = OurDaemon(
        routed, "host", ours_ip, [far_ip], "--multihop", "-r", "100", "-t", "100"
    ).start()
    info = ours.wait_state(far_ip, "up")
    assert info["multihop"] and info["min_rx_ttl"] == 254
    peer = frr.wait_status(ours_ip, "up")
    time.sleep(0.5)
    peer = frr.peer(ours_ip)
    assert peer is not None and peer["remote-receive-interval"] == 100
    # FRR shuts the session down: AdminDown reaches us across the router.
    frr.configure(ours_ip, far_ip, "shutdown")
    down = ours.wait_state(far_ip, "down", timeout=2)
    assert down["local_diag"] == 3 and down["remote_state"] == "admin_down"
    frr.configure(ours_ip, far_ip, "no shutdown")
    ours.wait_state(far_ip, "up", timeout=5)
    # We stop: FRR records AdminDown from us.
    assert ours.stop() == 0
    peer = frr.wait_peer(
        ours_ip, lambda p: p["status"] == "down", timeout=2, what="FRR sees us down"
    )
    assert peer["remote-diagnostic"] == "administratively down"


@pytest.mark.parametrize("family", FAMILIES)
def test_multihop_with_bird_and_detection(
    routed: RoutedLab, far_bird: list[BirdPeer], tmp_path: Path, family: str
) -> None:
    ours_ip, far_ip = addrs(routed, family)
    bird = BirdPeer(
        routed,
        "far",
        tmp_path / "bird",
        [BirdNeighbor(ours_ip, local=far_ip, multihop=True)],
        BirdOptions(interval_ms=100, multiplier=3),
    )
    far_bird.append(bird)
    bird.start()
    # BIRD sends multihop packets with the system's default TTL (64), not 255:
    # the minimum must allow for that (63 here, one router away).
    ours = OurDaemon(
        routed, "host", ours_ip, [far_ip], "--multihop", "--min-ttl", "63", "-r", "100", "-t", "100"
    ).start()
    ours.wait_state(far_ip, "up")
    bird.wait_state(ours_ip, "Up")
    bird.kill()
    down = ours.wait_state(far_ip, "down", timeout=3)
    assert down["local_diag"] == 1
    detected_after = down["last_state_change_monotonic"] - down["last_rx_monotonic"]
    assert detected_after <= 0.300 + 0.050


def test_multihop_min_ttl_drops_and_single_hop_coexists(
    routed: RoutedLab, far_frr: list[FrrPeer], tmp_path: Path
) -> None:
    """Minimum TTL 255 for a peer one router away: every packet (TTL 254) is dropped.

    Meanwhile a single-hop session toward the router itself and a multihop one toward
    the same router address stay distinct."""
    ours_ip, far_ip = addrs(routed, "ipv4")
    frr = FrrPeer(
        routed,
        "far",
        tmp_path / "frr",
        [FrrSession(ours_ip, far_ip, rx_ms=100, tx_ms=100, multiplier=3, multihop=True)],
    )
    far_frr.append(frr)
    frr.start()
    ours = OurDaemon(
        routed,
        "host",
        ours_ip,
        [far_ip],
        "--multihop",
        "--min-ttl",
        "255",
        "-r",
        "100",
        "-t",
        "100",
    ).start()
    info = ours.wait(
        lambda: (s := ours.session(far_ip))["counters"]["drops"].get("ttl", 0) >= 3 and s,
        timeout=5,
        what="TTL drops",
    )
    assert info["state"] != "up"


def test_single_hop_and_multihop_to_one_remote_coexist(
    routed: RoutedLab, far_frr: list[FrrPeer], tmp_path: Path
) -> None:
    """The router runs FRR with a single-hop and a multihop session toward us."""
    ours_ip, router_ip = routed.host.ipv4, routed.peer.ipv4
    frr = FrrPeer(
        routed,
        "peer",
        tmp_path / "frr",
        [
            FrrSession(ours_ip, router_ip, rx_ms=100, tx_ms=100, multiplier=3),
            FrrSession(ours_ip, router_ip, rx_ms=200, tx_ms=200, multiplier=3, multihop=True),
        ],
    )
    far_frr.append(frr)
    frr.start()
    config = tmp_path / "aiobfd.toml"
    config.write_text(
        "[daemon]\nmetrics_port = 0\n"
        f'[[peers]]\nremote = "{router_ip}"\nlocal = "{ours_ip}"\nrx_interval_ms = 100\ntx_interval_ms = 100\n'
        f'[[peers]]\nremote = "{router_ip}"\nlocal = "{ours_ip}"\nmultihop = true\nmin_ttl = 255\n'
        "rx_interval_ms = 200\ntx_interval_ms = 200\n"
    )
    ours = OurDaemon(routed, "host", "", [], "--config", str(config)).start()
    # FRR announces its configured interval with a Poll after it is Up, a
    # little after we are: wait for that too (1000 ms is the slow-start rate).
    ours.wait(
        lambda: (
            len(ours.sessions()) == 2
            and all(
                s["state"] == "up" and s["remote_desired_min_tx_ms"] != 1000
                for s in ours.sessions()
            )
        ),
        timeout=8,
        what="both sessions up at FRR's intervals",
    )
    sessions = {s["multihop"]: s for s in ours.sessions()}
    assert sessions[False]["remote_desired_min_tx_ms"] == 100
    assert sessions[True]["remote_desired_min_tx_ms"] == 200
    assert sessions[False]["local_discr"] != sessions[True]["local_discr"]
