"""RFC 5883 multihop sessions across a router, against FRR and BIRD, IPv4 and IPv6."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiobfd.lab import BirdNeighbor, FrrSession, OurDaemon, RoutedLab

from .conftest import BirdFactory, FrrFactory

FAMILIES = ["ipv4", "ipv6"]


@pytest.fixture
def lab(_interop_session: None) -> Iterator[RoutedLab]:
    """host -- router ('peer') -- far, instead of the two-namespace lab: `frr_peer` and
    `bird_peer` start their peers in it."""
    with RoutedLab() as routed:
        yield routed


def addrs(lab: RoutedLab, family: str) -> tuple[str, str]:
    return getattr(lab.host, family), getattr(lab.far, family)


@pytest.mark.parametrize("family", FAMILIES)
def test_multihop_with_frr(lab: RoutedLab, frr_peer: FrrFactory, family: str) -> None:
    ours_ip, far_ip = addrs(lab, family)
    frr = frr_peer(
        "far", [FrrSession(ours_ip, far_ip, rx_ms=100, tx_ms=100, multiplier=3, multihop=True)]
    )
    ours = OurDaemon(lab, "host", ours_ip, [far_ip], "--multihop", "-r", "100", "-t", "100").start()
    info = ours.wait_state(far_ip, "up")
    assert info["multihop"] and info["min_rx_ttl"] == 254
    frr.wait_status(ours_ip, "up")
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
    lab: RoutedLab, bird_peer: BirdFactory, family: str
) -> None:
    ours_ip, far_ip = addrs(lab, family)
    bird = bird_peer(
        "far", [BirdNeighbor(ours_ip, local=far_ip, multihop=True)], interval_ms=100, multiplier=3
    )
    # BIRD sends multihop packets with the system's default TTL (64), not 255:
    # the minimum must allow for that (63 here, one router away).
    ours = OurDaemon(
        lab, "host", ours_ip, [far_ip], "--multihop", "--min-ttl", "63", "-r", "100", "-t", "100"
    ).start()
    ours.wait_state(far_ip, "up")
    bird.wait_state(ours_ip, "Up")
    bird.kill()
    down = ours.wait_state(far_ip, "down", timeout=3)
    assert down["local_diag"] == 1
    detected_after = down["last_state_change_monotonic"] - down["last_rx_monotonic"]
    assert detected_after <= 0.300 + 0.050


def test_multihop_min_ttl_drops_and_single_hop_coexists(
    lab: RoutedLab, frr_peer: FrrFactory
) -> None:
    """Minimum TTL 255 for a peer one router away: every packet (TTL 254) is dropped.

    Meanwhile a single-hop session toward the router itself and a multihop one toward
    the same router address stay distinct."""
    ours_ip, far_ip = addrs(lab, "ipv4")
    frr_peer(
        "far", [FrrSession(ours_ip, far_ip, rx_ms=100, tx_ms=100, multiplier=3, multihop=True)]
    )
    ours = OurDaemon(
        lab,
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
    lab: RoutedLab, frr_peer: FrrFactory, tmp_path: Path
) -> None:
    """The router runs FRR with a single-hop and a multihop session toward us."""
    ours_ip, router_ip = lab.host.ipv4, lab.peer.ipv4
    frr_peer(
        "peer",
        [
            FrrSession(ours_ip, router_ip, rx_ms=100, tx_ms=100, multiplier=3),
            FrrSession(ours_ip, router_ip, rx_ms=200, tx_ms=200, multiplier=3, multihop=True),
        ],
    )
    config = tmp_path / "aiobfd.toml"
    config.write_text(
        "[daemon]\nmetrics_port = 0\n"
        f'[[peers]]\nremote = "{router_ip}"\nlocal = "{ours_ip}"\nrx_interval_ms = 100\ntx_interval_ms = 100\n'
        f'[[peers]]\nremote = "{router_ip}"\nlocal = "{ours_ip}"\nmultihop = true\nmin_ttl = 255\n'
        "rx_interval_ms = 200\ntx_interval_ms = 200\n"
    )
    ours = OurDaemon(lab, "host", "", [], "--config", str(config)).start()
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
