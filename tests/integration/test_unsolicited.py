"""RFC 9468: FRR starts sessions toward us that we never configured."""

from __future__ import annotations

import time

from aiobfd.lab import FrrSession, Lab, OurDaemon

from .conftest import FrrFactory


def test_frr_starts_a_session_we_accept(lab: Lab, frr_peer: FrrFactory) -> None:
    ours_ip, frr_ip = lab.host.ipv4, lab.peer.ipv4
    frr = frr_peer("peer", [FrrSession(ours_ip, frr_ip, rx_ms=100, tx_ms=100, multiplier=3)])
    ours = OurDaemon(
        lab, "host", ours_ip, [], "--unsolicited", "198.51.100.0/24", "-r", "100", "-t", "100"
    ).start()
    info = ours.wait_state(frr_ip, "up")
    assert info["dynamic"] and info["passive"]
    frr.wait_status(ours_ip, "up")
    brief = ours.sessions()
    assert len(brief) == 1


def test_frr_ipv6_outside_the_prefixes_gets_nothing(lab: Lab, frr_peer: FrrFactory) -> None:
    ours_ip, frr_ip = lab.host.ipv6, lab.peer.ipv6
    frr_peer("peer", [FrrSession(ours_ip, frr_ip, rx_ms=100, tx_ms=100, multiplier=3)])
    ours = OurDaemon(lab, "host", ours_ip, [], "--unsolicited", "2001:db8:ffff::/48").start()
    time.sleep(2.5)  # FRR sends Down packets once a second meanwhile
    assert ours.sessions() == []
