"""aiobfd against BIRD 2's BFD, over a veth between two network namespaces."""

from __future__ import annotations

import time

import pytest

from aiobfd.lab import BirdNeighbor, Lab, OurDaemon

from .conftest import BirdFactory


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_up_with_timers_then_bird_killed(lab: Lab, bird_peer: BirdFactory, family: str) -> None:
    ours_ip, bird_ip = getattr(lab.host, family), getattr(lab.peer, family)
    bird = bird_peer(
        "peer",
        [BirdNeighbor(ours_ip, local=bird_ip)],
        min_rx_ms=150,
        min_tx_ms=100,
        multiplier=4,
    )
    ours = OurDaemon(lab, "host", ours_ip, [bird_ip], "-r", "120", "-t", "80", "-m", "3").start()
    ours.wait_state(bird_ip, "up")
    bird.wait_state(ours_ip, "Up")
    time.sleep(0.6)  # Poll Sequences after Up
    info = ours.session(bird_ip)
    assert info["remote_desired_min_tx_ms"] == 100
    assert info["remote_required_min_rx_ms"] == 150
    assert info["remote_detect_mult"] == 4
    assert info["tx_interval_ms"] == 150  # max(our 80, BIRD's min rx 150)
    assert info["detect_time_ms"] == 4 * 120  # BIRD's mult x max(our rx 120, BIRD tx 100)
    seen = bird.session(ours_ip)
    assert seen is not None
    assert seen["interval"] == pytest.approx(0.120)  # BIRD's tx: max(100, our rx 120)
    assert seen["timeout"] == pytest.approx(3 * 0.150)  # our mult x max(its rx 150, our tx 80)

    bird.kill()
    down = ours.wait_state(bird_ip, "down", timeout=5)
    assert down["local_diag"] == 1
    detected_after = down["last_state_change_monotonic"] - down["last_rx_monotonic"]
    assert 0.480 * 0.999 <= detected_after <= 0.480 + 0.050, detected_after


def test_our_sigterm_takes_bird_down_without_timeout(lab: Lab, bird_peer: BirdFactory) -> None:
    ours_ip, bird_ip = lab.host.ipv4, lab.peer.ipv4
    bird = bird_peer("peer", [BirdNeighbor(ours_ip, local=bird_ip)], interval_ms=100)
    # Multiplier 30: BIRD would need 3 s to time us out, so a Down within a
    # second can only come from our AdminDown.
    ours = OurDaemon(lab, "host", ours_ip, [bird_ip], "-r", "100", "-t", "100", "-m", "30").start()
    bird.wait_state(ours_ip, "Up")
    time.sleep(0.5)
    theirs = bird.session(ours_ip)
    assert theirs is not None and theirs["timeout"] == pytest.approx(3.0)
    started = time.monotonic()
    assert ours.stop() == 0
    bird.wait_state(ours_ip, "Down", timeout=0.5)
    assert time.monotonic() - started < 1.0


def test_bird_reconfigures_intervals_while_up(lab: Lab, bird_peer: BirdFactory) -> None:
    ours_ip, bird_ip = lab.host.ipv6, lab.peer.ipv6
    bird = bird_peer("peer", [BirdNeighbor(ours_ip, local=bird_ip)], interval_ms=100)
    ours = OurDaemon(lab, "host", ours_ip, [bird_ip], "-r", "50", "-t", "50").start()
    ours.wait_state(bird_ip, "up")
    time.sleep(0.5)
    bird.reconfigure(interval_ms=300)
    info = ours.wait(
        lambda: (
            (s := ours.session(bird_ip))["remote_desired_min_tx_ms"] == 300
            and s["remote_required_min_rx_ms"] == 300
            and not s["poll_active"]
            and s
        ),
        timeout=5,
        what="BIRD's new timers",
    )
    assert info["tx_interval_ms"] == 300
    assert info["detect_time_ms"] == 900
    time.sleep(1.0)
    after = ours.session(bird_ip)
    assert after["state"] == "up" and after["counters"]["session_down"] == 0
    assert bird.state(ours_ip) == "Up"
