"""Send errors are counted and logged, never fatal."""

from __future__ import annotations

import time

from aiobfd.lab import Lab, OurDaemon


def test_unreachable_peer_counts_send_errors(lab: Lab) -> None:
    # The host namespace has no route to 203.0.113.0/24: every sendto fails.
    ours = OurDaemon(lab, "host", lab.host.ipv4, ["203.0.113.9", lab.peer.ipv4], "-t", "50").start()
    info = ours.wait(
        lambda: (
            (s := ours.session("203.0.113.9"))["counters"]["send_errors"].get("ENETUNREACH", 0) >= 2
            and s
        ),
        timeout=5,
        what="ENETUNREACH counted",
    )
    assert info["state"] == "down"
    time.sleep(0.5)
    assert ours.proc is not None and ours.proc.poll() is None  # still running
    # The reachable peer runs no BFD: its host answers port unreachable, which
    # is counted as ECONNREFUSED, and nothing else.
    assert set(ours.session(lab.peer.ipv4)["counters"]["send_errors"]) <= {"ECONNREFUSED"}
