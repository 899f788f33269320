"""RFC 5880 Echo function with FRR 8.4's bfdd, in network namespaces.

FRR's echo toward us: FRR (``echo-mode``) sends echo packets addressed to
itself to our MAC; our daemon, advertising ``--echo-rx-interval``, loops them
back on its packet socket ('host' does not forward).  An nftables drop of UDP
3785 at 'host''s ingress takes FRR's session Down with diag 2 (Echo Function
Failed) while the Control packets still flow.

Our echo toward FRR: our daemon (``--echo-interval``) sends echo packets
addressed to itself to FRR's MAC; 'peer' forwards (``ip_forward=1``) and they
come back.  Control packets slow to a second meanwhile (RFC 5880 §6.8.3).  A
drop of UDP 3785 in 'peer''s forward chain takes our session Down with diag 2
within the echo Detection Time + 20 ms, and the hook runs.  Needs root, FRR
and nftables.
"""

from __future__ import annotations

import datetime
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from aiobfd.lab import FrrPeer, FrrSession, Lab, OurDaemon

from .conftest import FrrFactory, require

ECHO_MS = 50
MULT = 3
DETECT_S = ECHO_MS * MULT / 1000
SLACK_S = 0.020
TRIALS = 5


def _frr_with_echo(lab: Lab, frr_peer: FrrFactory, *lines: str) -> tuple[FrrPeer, str, str]:
    ours_ip, frr_ip = lab.host.ipv4, lab.peer.ipv4
    # FRR sends its IPv4 echo on a packet socket of the session's interface.
    frr = frr_peer(
        "peer",
        [
            FrrSession(
                ours_ip, frr_ip, rx_ms=300, tx_ms=300, multiplier=3, interface=lab.peer.ifname
            )
        ],
    )
    key = frr.sessions[0].key
    # (echo-mode answers with a '%' note about IPv6: not an error; checked below.)
    for line in lines:
        frr.instance.vtysh("bfdd", "configure terminal", "bfd", key, line, check=False)
    if "echo-mode" in lines:
        assert "echo-mode" in frr.instance.vtysh("bfdd", "show running-config")
    return frr, ours_ip, frr_ip


def _counters(frr: FrrPeer, remote: str) -> dict[str, Any]:
    for c in frr.counters():
        if c["peer"] == remote:
            return c
    raise AssertionError(f"no FRR counters for {remote}: {frr.counters()}")


def _wait(probe: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = probe()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _echo_down_after(log: Path, offset: int) -> float | None:
    """When the first "UP -> DOWN (diag echo_function_failed)" after ``offset``
    of the daemon's log was logged (wall clock, ms), or None."""
    with log.open("rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    for line in text.splitlines():
        if "UP -> DOWN (diag echo_function_failed)" in line:
            stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
            return stamp.timestamp()
    return None


def test_frr_echo_is_looped_back_and_its_loss_is_diag_2(lab: Lab, frr_peer: FrrFactory) -> None:
    require("nft")
    frr, ours_ip, frr_ip = _frr_with_echo(
        lab, frr_peer, "echo-mode", f"echo transmit-interval {ECHO_MS}"
    )
    ours = OurDaemon(
        lab, "host", ours_ip, [frr_ip], "-r", "300", "-t", "300", "--echo-rx-interval", "50"
    ).start()
    ours.wait_state(frr_ip, "up")
    frr.wait_status(ours_ip, "up")
    peer = frr.wait_peer(
        ours_ip, lambda p: p.get("remote-echo-receive-interval") == 50, what="our echo RX"
    )
    assert peer["remote-echo-receive-interval"] == 50
    before = _counters(frr, ours_ip)
    time.sleep(1.0)
    after = _counters(frr, ours_ip)
    # 1 s at 50 ms: about 20 of FRR's echo packets out, and back.
    sent = after["echo-packet-output"] - before["echo-packet-output"]
    back = after["echo-packet-input"] - before["echo-packet-input"]
    print(f"FRR echo in 1 s: {sent} out, {back} back")
    assert sent >= 15 and back >= sent - 2, (before, after)
    info = ours.session(frr_ip)
    echo = info["echo"]
    assert echo["mode"] == "rfc5880" and echo["required_min_echo_rx_ms"] == 50
    assert echo["reflected"] >= 15 and echo["interval_ms"] is None
    assert frr.peer(ours_ip)["status"] == "up"  # type: ignore[index]

    # Drop UDP 3785 as it reaches 'host' (before our packet socket sees it).
    table = "aiobfd_echo_frr"
    ifname = lab.host.ifname
    lab.run(
        "host",
        "nft",
        f"add table netdev {table} ; "
        f"add chain netdev {table} in {{ type filter hook ingress device {ifname} priority 0 ; }} ; "
        f"add rule netdev {table} in udp dport 3785 drop",
    )
    counted = _counters(frr, ours_ip)
    control_before = counted["control-packet-input"]
    downs_before = counted["session-down"]
    log = frr.rundir / "bfdd.log"
    logged_before = log.read_text().count("reason:echo-failed")
    try:
        # FRR goes Down and, the Control packets still flowing, straight back
        # Up within milliseconds: its status is too quick to catch; its count
        # of Downs and its log say what happened.
        _wait(
            lambda: (
                _counters(frr, ours_ip)["session-down"] > downs_before
                and log.read_text().count("reason:echo-failed") > logged_before
            ),
            5,
            "FRR Down with Echo Function Failed",
        )
        print(f"FRR after the drop: {frr.peer(ours_ip)}")
        time.sleep(0.5)
        # Control packets still flow both ways meanwhile.
        assert _counters(frr, ours_ip)["control-packet-input"] > control_before
    finally:
        lab.run("host", "nft", "delete", "table", "netdev", table)
    frr.wait_status(ours_ip, "up", timeout=10)


def test_our_echo_through_frr_and_its_loss(lab: Lab, frr_peer: FrrFactory, tmp_path: Path) -> None:
    require("nft")
    lab.sysctl("peer", "net.ipv4.ip_forward", 1)
    lab.sysctl("host", f"net.ipv4.conf.{lab.host.ifname}.accept_local", 1)
    frr, ours_ip, frr_ip = _frr_with_echo(lab, frr_peer, f"echo receive-interval {ECHO_MS}")
    hook_log = tmp_path / "hooks.log"
    hook = f'echo "$BFD_REMOTE $BFD_OLD_STATE $BFD_STATE $BFD_DIAG" >> {hook_log}'
    ours = OurDaemon(
        lab,
        "host",
        ours_ip,
        [frr_ip],
        "-r",
        "300",
        "-t",
        "300",
        "-m",
        str(MULT),
        "--echo-interval",
        str(ECHO_MS),
        "--on-change",
        hook,
    ).start()
    ours.wait_state(frr_ip, "up")

    def active() -> dict[str, Any] | None:
        info = ours.session(frr_ip)
        return info if info["echo"] and info["echo"]["active"] else None

    info = _wait(active, 10, "our echo active")
    assert info["echo"]["gateway_mac"] is not None
    # §6.8.3: while echo is active we ask for Control packets once a second.
    frr.wait_peer(ours_ip, lambda p: p["remote-receive-interval"] == 1000, what="our RX at 1 s")
    time.sleep(1.0)
    before = ours.session(frr_ip)
    time.sleep(2.0)
    after = ours.session(frr_ip)
    echo_out = after["echo"]["packets_out"] - before["echo"]["packets_out"]
    echo_in = after["echo"]["packets_in"] - before["echo"]["packets_in"]
    control_in = after["counters"]["packets_in"] - before["counters"]["packets_in"]
    print(f"in 2 s: echo {echo_out} out, {echo_in} back; control packets in: {control_in}")
    assert echo_out >= 30 and echo_in >= echo_out - 2
    assert control_in <= 4  # FRR sends once a second now (300 ms before)
    assert after["echo"]["tx_interval_ms"] == ECHO_MS

    table = "aiobfd_echo_fwd"
    latencies: list[float] = []
    for _ in range(TRIALS):
        ours.wait_state(frr_ip, "up", 15)
        _wait(active, 10, "our echo active")
        time.sleep(3 * DETECT_S)
        offset = ours.log.stat().st_size
        lab.run(
            "peer",
            "nft",
            f"add table inet {table} ; "
            f"add chain inet {table} forward {{ type filter hook forward priority 0 ; }} ; "
            f"add rule inet {table} forward udp dport 3785 drop",
        )
        cut_at = time.time()
        try:
            # Control packets still flow: the session comes back Up within
            # a few ms and fails again while the drop lasts, faster than
            # the control socket can be asked.  The log says when it went Down.
            down_at = _wait(partial(_echo_down_after, ours.log, offset), 5, "Down, diag 2")
        finally:
            lab.run("peer", "nft", "delete", "table", "inet", table)
        latencies.append(down_at - cut_at)
    print(
        f"our echo Down after a forwarding failure: {[round(x * 1000, 1) for x in latencies]} ms"
        f" (median {statistics.median(latencies) * 1000:.1f})"
    )
    for latency in latencies:
        assert latency <= DETECT_S + SLACK_S, latencies
    ours.wait_state(frr_ip, "up", 15)

    def hook_lines() -> list[str]:
        return hook_log.read_text().splitlines() if hook_log.exists() else []

    _wait(lambda: hook_lines().count(f"{frr_ip} up down 2") >= TRIALS, 10, "hooks")
