"""Link and address events (issue 20, part 2), in namespaces with FRR's bfdd as the peer.

Our daemon in 'host', FRR in 'peer', 50 ms x 3 (a Detection Time of 150 ms):
the host's veth set down takes our session Down at once (diag 5, Path Down),
long before the Detection Time, a hook runs, and link up brings it back Up.
A local address that is not configured at start is waited for.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

from aiobfd.lab import FrrSession, Lab, OurDaemon
from tests.integration.conftest import FrrFactory

TRIALS = 3


def _config(tmp_path: Path, local: str, remote: str, hook: Path) -> Path:
    path = tmp_path / "aiobfd.toml"
    path.write_text(
        f"""
[[peers]]
local = "{local}"
remote = "{remote}"
tx_interval_ms = 50
rx_interval_ms = 50
detect_mult = 3
on_down = "{hook}"
"""
    )
    return path


def _hook(tmp_path: Path) -> tuple[Path, Path]:
    out = tmp_path / "hook.out"
    hook = tmp_path / "on_down.sh"
    hook.write_text(f'#!/bin/sh\necho "$BFD_STATE $BFD_DIAG" >> {out}\n')
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR)
    os.chmod(tmp_path, 0o755)
    return hook, out


def _runs(out: Path) -> int:
    return len(out.read_text().splitlines()) if out.exists() else 0


def test_link_down_takes_the_session_down_at_once_and_link_up_brings_it_back(
    lab: Lab, frr_peer: FrrFactory, tmp_path: Path
) -> None:
    ours_ip, frr_ip = lab.host.ipv4, lab.peer.ipv4
    hook, out = _hook(tmp_path)
    frr_peer("peer", [FrrSession(ours_ip, frr_ip, rx_ms=50, tx_ms=50, multiplier=3)])
    ours = OurDaemon.from_config(lab, "host", _config(tmp_path, ours_ip, frr_ip, hook)).start()
    latencies = []
    for trial in range(TRIALS):
        ours.wait_state(frr_ip, "up", timeout=15)
        started = time.monotonic()
        lab.ip("host", f"link set {lab.host.ifname} down")
        info = ours.wait_state(frr_ip, "down", timeout=2)
        latencies.append((info["last_state_change_monotonic"] - started) * 1000)
        assert info["local_diag"] == 5, info  # Path Down
        assert info["path_down"] == f"interface {lab.host.ifname} is down"
        time.sleep(0.3)
        assert ours.session(frr_ip)["state"] == "down"  # quiet while the path is down
        lab.ip("host", f"link set {lab.host.ifname} up")
        ours.wait_state(frr_ip, "up", timeout=15)
        ours.wait(lambda: _runs(out) > trial, 5, "hook")  # noqa: B023 (called at once)
    print(f"link down -> session Down, ms: {', '.join(f'{x:.2f}' for x in latencies)}")
    assert max(latencies) < 20, latencies
    assert all(line == "down 5" for line in out.read_text().splitlines())


def test_a_local_address_configured_later_is_waited_for(
    lab: Lab, frr_peer: FrrFactory, tmp_path: Path
) -> None:
    later, frr_ip = "198.51.100.77", lab.peer.ipv4
    hook, _ = _hook(tmp_path)
    frr_peer("peer", [FrrSession(later, frr_ip, rx_ms=50, tx_ms=50, multiplier=3)])
    lab.ip("peer", f"route add {later}/32 dev {lab.peer.ifname}")
    ours = OurDaemon.from_config(lab, "host", _config(tmp_path, later, frr_ip, hook)).start()
    [waiting] = ours.sessions()
    assert waiting["state"] == "down" and "not on this host" in waiting["waiting"]
    time.sleep(0.5)
    assert ours.proc is not None and ours.proc.poll() is None  # it runs
    lab.ip("host", f"addr add {later}/32 dev {lab.host.ifname}")
    ours.wait_state(frr_ip, "up", timeout=15)
    assert "waits for its local address" in ours.log.read_text()
    # The address removed again: Down at once, diag 5; back: Up.
    lab.ip("host", f"addr del {later}/32 dev {lab.host.ifname}")
    info = ours.wait_state(frr_ip, "down", timeout=2)
    assert info["local_diag"] == 5
    lab.ip("host", f"addr add {later}/32 dev {lab.host.ifname}")
    ours.wait_state(frr_ip, "up", timeout=15)
