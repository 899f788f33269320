"""aiobfd against FRR's bfdd, over a veth between two network namespaces."""

from __future__ import annotations

import time

import pytest

from aiobfd.lab import FrrSession, Lab, OurDaemon

from .conftest import FrrFactory, ThreePeers

FAMILIES = ["ipv4", "ipv6"]


def addrs(lab: Lab, family: str) -> tuple[str, str]:
    """(our address, FRR's address)."""
    return getattr(lab.host, family), getattr(lab.peer, family)


@pytest.mark.parametrize("family", FAMILIES)
def test_up_with_configured_timers_then_peer_killed(
    lab: Lab, frr_peer: FrrFactory, family: str
) -> None:
    ours_ip, frr_ip = addrs(lab, family)
    frr = frr_peer("peer", [FrrSession(ours_ip, frr_ip, rx_ms=200, tx_ms=150, multiplier=4)])
    ours = OurDaemon(lab, "host", ours_ip, [frr_ip], "-r", "100", "-t", "120", "-m", "3").start()

    ours.wait_state(frr_ip, "up")
    frr.wait_status(ours_ip, "up")
    # Let the Poll Sequences after Up finish, then read the timers on both sides.
    time.sleep(0.6)
    peer = frr.peer(ours_ip)
    assert peer is not None
    assert peer["remote-receive-interval"] == 100
    assert peer["remote-transmit-interval"] == 120
    assert peer["remote-detect-multiplier"] == 3
    info = ours.session(frr_ip)
    assert info["remote_desired_min_tx_ms"] == 150
    assert info["remote_required_min_rx_ms"] == 200
    assert info["remote_detect_mult"] == 4
    assert info["tx_interval_ms"] == 200  # max(our 120, FRR's required 200)
    assert info["detect_time_ms"] == 4 * 150  # FRR's mult x max(our rx 100, FRR tx 150)
    assert not info["poll_active"]

    frr.kill()  # SIGKILL: FRR goes silent without a word
    down = ours.wait_state(frr_ip, "down", timeout=5)
    assert down["local_diag"] == 1
    detected_after = down["last_state_change_monotonic"] - down["last_rx_monotonic"]
    assert detected_after <= (600 + 50) / 1000, detected_after
    assert detected_after >= 600 / 1000 * 0.999


@pytest.mark.parametrize("family", FAMILIES)
def test_our_sigterm_is_admin_down_for_frr(lab: Lab, frr_peer: FrrFactory, family: str) -> None:
    ours_ip, frr_ip = addrs(lab, family)
    frr = frr_peer("peer", [FrrSession(ours_ip, frr_ip, rx_ms=100, tx_ms=100, multiplier=3)])
    ours = OurDaemon(lab, "host", ours_ip, [frr_ip], "-r", "100", "-t", "100").start()
    frr.wait_status(ours_ip, "up")
    started = time.monotonic()
    assert ours.stop() == 0
    assert time.monotonic() - started < 1.0
    peer = frr.wait_peer(
        ours_ip, lambda p: p["status"] == "down", timeout=2, what="FRR sees us down"
    )
    assert peer["diagnostic"] == "neighbor signaled session down"
    assert peer["remote-diagnostic"] == "administratively down"


def test_frr_shutdown_and_no_shutdown(lab: Lab, frr_peer: FrrFactory) -> None:
    ours_ip, frr_ip = addrs(lab, "ipv4")
    frr = frr_peer("peer", [FrrSession(ours_ip, frr_ip, rx_ms=100, tx_ms=100, multiplier=3)])
    ours = OurDaemon(lab, "host", ours_ip, [frr_ip], "-r", "100", "-t", "100").start()
    ours.wait_state(frr_ip, "up")
    frr.configure(ours_ip, frr_ip, "shutdown")
    down = ours.wait_state(frr_ip, "down", timeout=2)
    assert down["local_diag"] == 3
    assert down["remote_state"] == "admin_down"
    # FRR 8.4 sends its AdminDown with diag 0, not 7: that is FRR's choice.
    frr.configure(ours_ip, frr_ip, "no shutdown")
    ours.wait_state(frr_ip, "up", timeout=5)
    frr.wait_status(ours_ip, "up", timeout=5)


def test_frr_changes_intervals_while_up(lab: Lab, frr_peer: FrrFactory) -> None:
    ours_ip, frr_ip = addrs(lab, "ipv6")
    frr = frr_peer("peer", [FrrSession(ours_ip, frr_ip, rx_ms=100, tx_ms=100, multiplier=3)])
    ours = OurDaemon(lab, "host", ours_ip, [frr_ip], "-r", "50", "-t", "50").start()
    ours.wait_state(frr_ip, "up")
    time.sleep(0.5)
    before = ours.session(frr_ip)["counters"]
    frr.configure(ours_ip, frr_ip, "transmit-interval 300", "receive-interval 250")
    info = ours.wait(
        lambda: (
            (s := ours.session(frr_ip))["remote_desired_min_tx_ms"] == 300
            and s["remote_required_min_rx_ms"] == 250
            and not s["poll_active"]
            and s
        ),
        timeout=5,
        what="FRR's new timers",
    )
    assert info["state"] == "up"
    assert info["tx_interval_ms"] == 250
    assert info["detect_time_ms"] == 3 * 300
    time.sleep(1.0)
    after = ours.session(frr_ip)
    assert after["state"] == "up"
    assert after["counters"]["session_down"] == before["session_down"] == 0
    counters = next(c for c in frr.counters() if c["peer"] == ours_ip)
    assert counters["session-down"] == 0


def test_three_peers_from_one_process(three_frr_peers: ThreePeers) -> None:
    """One aiobfd, three FRR sessions (one macvlan per FRR address: FRR keys by interface)."""
    ours, frr, ours_ip, remotes, ifnames = three_frr_peers
    sessions = ours.sessions()
    assert len({s["source_port"] for s in sessions}) == 3
    assert len({s["local_discr"] for s in sessions}) == 3
    frr.configure(ours_ip, remotes[1], "shutdown", interface=ifnames[1])
    ours.wait_state(remotes[1], "down", timeout=2)
    time.sleep(0.5)
    states = {s["remote"]: s["state"] for s in ours.sessions()}
    assert states == {remotes[0]: "up", remotes[1]: "down", remotes[2]: "up"}


def test_link_local_ipv6(lab: Lab, frr_peer: FrrFactory) -> None:
    ours_ll, frr_ll = lab.host.link_local, lab.peer.link_local
    frr = frr_peer(
        "peer",
        [
            FrrSession(
                ours_ll, frr_ll, rx_ms=100, tx_ms=100, multiplier=3, interface=lab.peer.ifname
            )
        ],
    )
    ours = OurDaemon(
        lab,
        "host",
        f"{ours_ll}%{lab.host.ifname}",
        [f"{frr_ll}%{lab.host.ifname}"],
        "-r",
        "100",
        "-t",
        "100",
    ).start()
    info = ours.wait_state(f"{frr_ll}%{lab.host.ifname}", "up")
    assert info["interface"] == lab.host.ifname
    frr.wait_status(ours_ll, "up")
