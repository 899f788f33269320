"""RFC 9468: real peers that start sessions toward us come Up and stay Up
past the bound that removes sessions never Up (spoofed sources, issue 18);
the interface check asks the kernel about a real veth."""

from __future__ import annotations

import time
from pathlib import Path

from aiobfd.engine.admission import NEVER_UP_TIMEOUT_S
from aiobfd.lab import BirdNeighbor, FrrSession, Lab, OurDaemon

from .conftest import BirdFactory, FrrFactory

PREFIX = "198.51.100.0/24"


def stays_up(ours: OurDaemon, remote: str) -> None:
    ours.wait_state(remote, "up")
    time.sleep(NEVER_UP_TIMEOUT_S + 2)
    info = ours.session(remote)
    assert info["dynamic"] and info["state"] == "up", info
    assert info["counters"]["session_up"] == 1 and info["counters"]["session_down"] == 0
    assert len(ours.sessions()) == 1


def test_frr_session_stays_up_past_the_never_up_bound(lab: Lab, frr_peer: FrrFactory) -> None:
    ours_ip, frr_ip = lab.host.ipv4, lab.peer.ipv4
    frr = frr_peer("peer", [FrrSession(ours_ip, frr_ip, rx_ms=100, tx_ms=100, multiplier=3)])
    ours = OurDaemon(
        lab, "host", ours_ip, [], "--unsolicited", PREFIX, "-r", "100", "-t", "100"
    ).start()
    stays_up(ours, frr_ip)
    frr.wait_status(ours_ip, "up")


def test_bird_session_stays_up_past_the_never_up_bound(lab: Lab, bird_peer: BirdFactory) -> None:
    ours_ip, bird_ip = lab.host.ipv4, lab.peer.ipv4
    bird = bird_peer("peer", [BirdNeighbor(ours_ip, local=bird_ip)], interval_ms=100)
    ours = OurDaemon(
        lab, "host", ours_ip, [], "--unsolicited", PREFIX, "-r", "100", "-t", "100"
    ).start()
    stays_up(ours, bird_ip)
    bird.wait_state(ours_ip, "up")


def unsolicited_config(path: Path, ours_ip: str, interface: str) -> Path:
    path.write_text(
        "[defaults]\nrx_interval_ms = 100\ntx_interval_ms = 100\ndetect_mult = 3\n\n"
        f'[unsolicited]\nprefixes = ["{PREFIX}"]\nlisten = ["{ours_ip}"]\n'
        f'interfaces = ["{interface}"]\n'
    )
    return path


def test_frr_on_an_allowed_interface_comes_up(
    lab: Lab, frr_peer: FrrFactory, tmp_path: Path
) -> None:
    ours_ip, frr_ip = lab.host.ipv4, lab.peer.ipv4
    frr = frr_peer("peer", [FrrSession(ours_ip, frr_ip, rx_ms=100, tx_ms=100, multiplier=3)])
    config = unsolicited_config(tmp_path / "aiobfd.toml", ours_ip, lab.host.ifname)
    ours = OurDaemon.from_config(lab, "host", config).start()
    ours.wait_state(frr_ip, "up")
    frr.wait_status(ours_ip, "up")


def test_frr_on_another_interface_gets_nothing(
    lab: Lab, frr_peer: FrrFactory, tmp_path: Path
) -> None:
    ours_ip, frr_ip = lab.host.ipv4, lab.peer.ipv4
    frr_peer("peer", [FrrSession(ours_ip, frr_ip, rx_ms=100, tx_ms=100, multiplier=3)])
    config = unsolicited_config(tmp_path / "aiobfd.toml", ours_ip, "lo")
    ours = OurDaemon.from_config(lab, "host", config).start()
    time.sleep(2.5)  # FRR sends Down packets once a second meanwhile
    assert ours.sessions() == []
