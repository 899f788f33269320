"""Reload and run-time control against FRR's bfdd, in network namespaces.

Our daemon runs from a configuration file (``OurDaemon.from_config``); FRR is
the peer and tells what it saw: its counters (``session-down``), the remote
timers it learnt from us and the diagnostic we sent.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from aiobfd.client import ClientError as CtlError
from aiobfd.lab import FrrPeer, FrrSession, Lab, OurDaemon

from .conftest import FrrFactory

Json = dict[str, Any]
FAMILIES = ["ipv4", "ipv6"]


def addrs(lab: Lab, family: str) -> tuple[str, str]:
    """(our address, FRR's address)."""
    return getattr(lab.host, family), getattr(lab.peer, family)


def write_config(path: Path, local: str, *peers: Json, extra: str = "") -> Path:
    """One [[peers]] table per dict (its 'remote' and timers); local is ours."""
    lines = ["[defaults]", "rx_interval_ms = 100", "tx_interval_ms = 100", "detect_mult = 3", ""]
    for peer in peers:
        lines.append("[[peers]]")
        lines.append(f'local = "{local}"')
        for key, value in peer.items():
            text = f'"{value}"' if isinstance(value, str) else str(value).lower()
            lines.append(f"{key} = {text}")
        lines.append("")
    path.write_text("\n".join(lines) + extra)
    return path


def frr_counters(frr: FrrPeer, ours_ip: str, frr_ip: str) -> Json:
    for c in frr.counters():
        if c["peer"] == ours_ip and c.get("local") == frr_ip:
            return c
    raise AssertionError(f"FRR has no counters for {ours_ip} from {frr_ip}: {frr.counters()}")


def frr_status(frr: FrrPeer, ours_ip: str, local: str | None = None) -> str:
    peer = frr.peer(ours_ip, local)
    assert peer is not None, f"FRR has no session toward {ours_ip}: {frr.peers()}"
    return str(peer["status"])


def wait_polls_done(ours: OurDaemon, remote: str) -> Json:
    return dict(
        ours.wait(
            lambda: (s := ours.session(remote))["state"] == "up" and not s["poll_active"] and s,
            5,
            f"{remote}: Up with no Poll Sequence running",
        )
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_reload_changes_timers_without_a_flap(
    lab: Lab, frr_peer: FrrFactory, tmp_path: Path, family: str
) -> None:
    ours_ip, frr_ip = addrs(lab, family)
    frr = frr_peer("peer", [FrrSession(ours_ip, frr_ip, rx_ms=100, tx_ms=100, multiplier=3)])
    config = write_config(tmp_path / "aiobfd.toml", ours_ip, {"remote": frr_ip})
    ours = OurDaemon.from_config(lab, "host", config).start()
    ours.wait_state(frr_ip, "up")
    frr.wait_status(ours_ip, "up")
    before = wait_polls_done(ours, frr_ip)
    frr_before = frr.peer(ours_ip)
    assert frr_before is not None
    assert frr_before["remote-id"] == before["local_discr"]

    # Slower first (TX up, RX up, multiplier up), then faster than at the start.
    for tx, rx, mult in ((300, 250, 5), (50, 60, 4)):
        write_config(
            config,
            ours_ip,
            {"remote": frr_ip, "tx_interval_ms": tx, "rx_interval_ms": rx, "detect_mult": mult},
        )
        summary = ours.reload()
        assert summary == {"added": [], "removed": [], "changed": [frr_ip], "unchanged": []}

        def ours_now(p: dict[str, Any], tx: int = tx, rx: int = rx, mult: int = mult) -> bool:
            return bool(
                p["remote-transmit-interval"] == tx
                and p["remote-receive-interval"] == rx
                and p["remote-detect-multiplier"] == mult
            )

        seen = frr.wait_peer(
            ours_ip,
            ours_now,
            timeout=5,
            what=f"our new timers tx {tx} rx {rx} mult {mult}",
        )
        assert seen["status"] == "up"
        info = wait_polls_done(ours, frr_ip)
        assert (info["configured_tx_ms"], info["configured_rx_ms"], info["detect_mult"]) == (
            tx,
            rx,
            mult,
        )
        time.sleep(1.0)  # longer than any Detection Time in play: a flap would show
        counters = frr_counters(frr, ours_ip, frr_ip)
        assert counters["session-down"] == 0, counters
        assert counters["session-up"] == 1, counters
        info = ours.session(frr_ip)
        assert info["state"] == "up"
        assert info["local_discr"] == before["local_discr"]
        assert info["remote_discr"] == before["remote_discr"]
        assert info["counters"]["session_down"] == 0
        after = frr.peer(ours_ip)
        assert after is not None and after["status"] == "up"
        assert (after["id"], after["remote-id"]) == (frr_before["id"], frr_before["remote-id"])
    assert info["counters"]["poll_sequences"] >= before["counters"]["poll_sequences"] + 2


def test_removed_peer_says_admin_down_and_added_peer_comes_up(
    lab: Lab, frr_peer: FrrFactory, tmp_path: Path
) -> None:
    """Two FRR addresses (one macvlan each: FRR keys sessions by interface); the file
    moves from the first to the second, and SIGHUP applies it."""
    ours_ip = lab.host.ipv4
    first, second = "198.51.100.3", "198.51.100.4"
    m0 = lab.add_macvlan("peer", "m0", first)
    m1 = lab.add_macvlan("peer", "m1", second)
    # The first session detects slowly (3 x 400 ms): a prompt Down is our AdminDown.
    frr = frr_peer(
        "peer",
        [
            FrrSession(ours_ip, first, rx_ms=400, tx_ms=400, multiplier=3, interface=m0),
            FrrSession(ours_ip, second, rx_ms=100, tx_ms=100, multiplier=3, interface=m1),
        ],
    )
    config = write_config(
        tmp_path / "aiobfd.toml",
        ours_ip,
        {"remote": first, "rx_interval_ms": 400, "tx_interval_ms": 400},
    )
    ours = OurDaemon.from_config(lab, "host", config).start()
    ours.wait_state(first, "up")
    frr.wait_status(ours_ip, "up", local=first)
    assert frr_status(frr, ours_ip, second) == "down"

    write_config(config, ours_ip, {"remote": second})
    started = time.monotonic()
    ours.hup()
    gone = frr.wait_peer(
        ours_ip,
        lambda p: p["status"] == "down",
        timeout=3,
        what="the removed session to go down",
        local=first,
    )
    elapsed = time.monotonic() - started
    assert gone["remote-diagnostic"] == "administratively down", gone
    assert gone["diagnostic"] == "neighbor signaled session down", gone
    assert elapsed < 1.2, elapsed  # before FRR's Detection Time could have run out
    ours.wait_state(second, "up")
    frr.wait_status(ours_ip, "up", local=second)
    assert [s["remote"] for s in ours.sessions()] == [second]
    # FRR keeps its session toward us and stays Down (we no longer answer it).
    time.sleep(0.5)
    assert frr_status(frr, ours_ip, first) == "down"
    assert frr_counters(frr, ours_ip, second)["session-down"] == 0


def test_broken_config_is_refused_and_nothing_changes(
    lab: Lab, frr_peer: FrrFactory, tmp_path: Path
) -> None:
    ours_ip, frr_ip = addrs(lab, "ipv4")
    frr = frr_peer("peer", [FrrSession(ours_ip, frr_ip, rx_ms=100, tx_ms=100, multiplier=3)])
    config = write_config(tmp_path / "aiobfd.toml", ours_ip, {"remote": frr_ip})
    ours = OurDaemon.from_config(lab, "host", config).start()
    ours.wait_state(frr_ip, "up")
    frr.wait_status(ours_ip, "up")
    before = wait_polls_done(ours, frr_ip)
    time.sleep(0.3)
    frr_before = frr.peer(ours_ip)
    assert frr_before is not None

    # Good changes (new timers, a second peer) next to an error: nothing applies.
    write_config(
        config,
        ours_ip,
        {"remote": frr_ip, "tx_interval_ms": 500},
        {"remote": "198.51.100.9"},
        {"remote": "198.51.100.10", "detect_mult": 0},
    )
    result = ours.ctl("reload")
    assert result.returncode == 1, result
    assert result.stderr.strip() == (
        "aiobfdctl: reload refused, running configuration kept: "
        f"{config}: peers[2].detect_mult: must be a whole number from 1 to 255"
    )
    with pytest.raises(CtlError, match="reload refused"):
        ours.reload()
    ours.hup()
    ours.wait(lambda: ours.log.read_text().count("reload refused") >= 3, 5, "SIGHUP reload refused")

    time.sleep(1.0)
    info = ours.session(frr_ip)
    assert [s["remote"] for s in ours.sessions()] == [frr_ip]
    assert info["state"] == "up"
    assert info["local_discr"] == before["local_discr"]
    assert info["configured_tx_ms"] == 100
    assert info["counters"]["poll_sequences"] == before["counters"]["poll_sequences"]
    after = frr.peer(ours_ip)
    assert after is not None and after["status"] == "up"
    assert after["remote-transmit-interval"] == frr_before["remote-transmit-interval"] == 100
    assert after["remote-id"] == frr_before["remote-id"]
    assert frr_counters(frr, ours_ip, frr_ip)["session-down"] == 0


@pytest.mark.parametrize("family", FAMILIES)
def test_peer_shutdown_and_enable(
    lab: Lab, frr_peer: FrrFactory, tmp_path: Path, family: str
) -> None:
    ours_ip, frr_ip = addrs(lab, family)
    frr = frr_peer("peer", [FrrSession(ours_ip, frr_ip, rx_ms=100, tx_ms=100, multiplier=3)])
    config = write_config(tmp_path / "aiobfd.toml", ours_ip, {"remote": frr_ip})
    ours = OurDaemon.from_config(lab, "host", config).start()
    ours.wait_state(frr_ip, "up")
    frr.wait_status(ours_ip, "up")
    discr = ours.session(frr_ip)["local_discr"]

    result = ours.ctl("peer", "shutdown", frr_ip)
    assert result.returncode == 0, result
    down = frr.wait_peer(ours_ip, lambda p: p["status"] == "down", timeout=2, what="our AdminDown")
    assert down["remote-diagnostic"] == "administratively down", down
    assert down["diagnostic"] == "neighbor signaled session down", down
    info = ours.session(frr_ip)
    assert (info["state"], info["local_diag"], info["runtime"]) == ("admin_down", 7, True)
    time.sleep(0.5)  # AdminDown holds: FRR does not come back by itself
    assert frr_status(frr, ours_ip) == "down"

    result = ours.ctl("peer", "enable", frr_ip)
    assert result.returncode == 0, result
    ours.wait_state(frr_ip, "up", timeout=5)
    frr.wait_status(ours_ip, "up", timeout=5)
    assert ours.session(frr_ip)["local_discr"] == discr
    counters = frr_counters(frr, ours_ip, frr_ip)
    assert (counters["session-up"], counters["session-down"]) == (2, 1)

    # peer del says AdminDown too; peer add brings a new session Up.
    result = ours.ctl("peer", "del", frr_ip)
    assert result.returncode == 0 and f"removed {frr_ip}" in result.stdout
    down = frr.wait_peer(ours_ip, lambda p: p["status"] == "down", timeout=2, what="del")
    assert down["remote-diagnostic"] == "administratively down", down
    result = ours.ctl("peer", "add", frr_ip, "--local", ours_ip, "-r", "100", "-t", "100")
    assert result.returncode == 0, result
    ours.wait_state(frr_ip, "up", timeout=5)
    frr.wait_status(ours_ip, "up", timeout=5)
    assert ours.session(frr_ip)["runtime"] is True
    assert ours.session(frr_ip)["local_discr"] != discr

    # A reload puts the file's session back in place of the run-time one, without a flap
    # (same timers: only the run-time mark goes).
    assert ours.reload() == {"added": [], "removed": [], "changed": [frr_ip], "unchanged": []}
    time.sleep(0.5)
    info = ours.session(frr_ip)
    assert info["state"] == "up" and info["runtime"] is False
    assert frr_counters(frr, ours_ip, frr_ip)["session-down"] == 2
