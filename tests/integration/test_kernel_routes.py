"""Kernel routes driven by sessions ([[routes]]), in network namespaces.

A host ('host', our daemon) with two gateways, each a namespace running FRR's
bfdd on a veth of its own: gw1 is the lab's 'peer' (198.51.100.2), gw2 a
namespace added here (203.0.113.2).  The host's default route is aiobfd's
(``[[routes]]``, metric 100) with both gateways as next hops; a default
route added by hand (protocol static, metric 200) stands beside it.

* both sessions Up: both next hops installed, under protocol 200;
* an nftables drop of UDP 3784 on gw1: its next hop goes within the
  Detection Time (50 ms x 3) + 20 ms of the drop, measured from the drop to
  the kernel's route event (a netlink listener in the host namespace stamps
  each event with CLOCK_MONOTONIC, the clock of the test and the daemon),
  and within 5 ms of the session's Down;
* restored: gw1 comes back after the dampening's hold;
* stop: aiobfd's route is gone, the hand-made one untouched; with
  ``persist = true`` aiobfd's route stays.

Needs root, FRR and nftables.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aiobfd.lab import BFDD, VTYSH, ZEBRA, FrrPeer, FrrSession, Lab, OurDaemon

from .conftest import require

GW1, GW2 = "198.51.100.2", "203.0.113.2"
HOST1, HOST2 = "198.51.100.1", "203.0.113.1"
INTERVAL_MS = 50
MULT = 3
DETECT_S = INTERVAL_MS * MULT / 1000
SLACK_S = 0.020
TRIALS = 5
HOLD_S = 1.0
"""The dampening's max_hold_s: every restore after the first flap is held this long."""
TABLE = "aiobfd_routes_test"

#: Stamps each IPv4 route event of the namespace with CLOCK_MONOTONIC, one line
#: each: "TIME TYPE" (24 new, 25 deleted), flushed at once.
WATCHER = r"""
import socket, struct, sys, time
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
s.bind((0, 0x40))
out = open(sys.argv[1], "a", buffering=1)
out.write("ready\n")
while True:
    data = s.recv(65536)
    now = time.monotonic()
    at = 0
    while at + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, at)
        out.write(f"{now:.6f} {kind}\n")
        at += (length + 3) & ~3
"""


def config(persist: bool = False) -> str:
    return f"""
[defaults]
rx_interval_ms = {INTERVAL_MS}
tx_interval_ms = {INTERVAL_MS}
detect_mult = {MULT}

[dampening]
penalty = 1000
suppress = 500
reuse = 400
half_life_s = 60
max_hold_s = {HOLD_S}

[[peers]]
remote = "{GW1}"
local = "{HOST1}"

[[peers]]
remote = "{GW2}"
local = "{HOST2}"

[[routes]]
prefix = "0.0.0.0/0"
nexthops = ["{GW1}", "{GW2}"]
metric = 100
persist = {"true" if persist else "false"}
"""


@pytest.fixture
def two_gateways(lab: Lab, tmp_path: Path) -> Iterator[tuple[Lab, str]]:
    """The lab plus a second gateway namespace on a veth of its own, FRR on both."""
    require(ZEBRA, BFDD, VTYSH, "nft")
    gw2 = lab.add_namespace("gw2", "g")
    host_if, gw2_if = lab.ifname("hg"), lab.ifname("g")
    lab.add_veth(lab.host.ns, host_if, gw2, gw2_if)
    lab.ip("host", f"addr add {HOST2}/24 dev {host_if}")
    lab.ip("host", f"link set {host_if} up")
    lab.ip(gw2, f"addr add {GW2}/24 dev {gw2_if}")
    lab.ip(gw2, f"link set {gw2_if} up")
    peers = []
    for ns, ours, theirs in (("peer", HOST1, GW1), (gw2, HOST2, GW2)):
        peer = FrrPeer(
            lab,
            ns,
            tmp_path / f"frr-{lab.role(ns)}",
            [FrrSession(ours, theirs, rx_ms=INTERVAL_MS, tx_ms=INTERVAL_MS, multiplier=MULT)],
        )
        peer.start()
        peers.append(peer)
    try:
        yield lab, gw2
    finally:
        for peer in peers:
            peer.stop()


def default_routes(lab: Lab) -> list[dict[str, Any]]:
    out = lab.ip("host", "-j route show default").stdout
    return list(json.loads(out or "[]"))


def ours(lab: Lab) -> list[str] | None:
    """The next hops of aiobfd's default route (None: there is none)."""
    for route in default_routes(lab):
        if route.get("protocol") == "200" or route.get("protocol") == 200:
            if "nexthops" in route:
                return sorted(h["gateway"] for h in route["nexthops"])
            return [route["gateway"]]
    return None


def wait_for(probe: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def events_after(path: Path, since: float) -> list[float]:
    out = []
    for line in path.read_text().splitlines()[1:]:
        stamp, _kind = line.split()
        if float(stamp) >= since:
            out.append(float(stamp))
    return out


def start(lab: Lab, tmp_path: Path, persist: bool = False, name: str = "a") -> OurDaemon:
    path = tmp_path / f"aiobfd-{name}.toml"
    path.write_text(config(persist))
    daemon = OurDaemon.from_config(lab, "host", path, name=name).start()
    for gw in (GW1, GW2):
        daemon.wait_state(gw, "up", 15)
    wait_for(lambda: ours(lab) == sorted([GW1, GW2]), 5, "both next hops")
    return daemon


def test_next_hops_follow_sessions(two_gateways: tuple[Lab, str], tmp_path: Path) -> None:
    lab, _ = two_gateways
    lab.ip("host", f"route add default via {GW2} metric 200 proto static")
    events = tmp_path / "route-events.txt"
    lab.popen("host", sys.executable, "-c", WATCHER, str(events))
    wait_for(lambda: events.exists() and events.read_text().startswith("ready"), 5, "watcher")
    daemon = start(lab, tmp_path)
    protocols = sorted(str(r.get("protocol")) for r in default_routes(lab))
    assert protocols == ["200", "static"], default_routes(lab)

    from_drop: list[float] = []
    from_down: list[float] = []
    for trial in range(TRIALS):
        time.sleep(4 * DETECT_S)
        lab.run(
            "peer",
            "nft",
            f"add table inet {TABLE} ; "
            f"add chain inet {TABLE} in {{ type filter hook input priority 0 ; }} ; "
            f"add chain inet {TABLE} out {{ type filter hook output priority 0 ; }} ; "
            f"add rule inet {TABLE} in udp dport 3784 drop ; "
            f"add rule inet {TABLE} out udp dport 3784 drop",
        )
        dropped_at = time.monotonic()
        wait_for(lambda: ours(lab) == [GW2], 5, "gw1 removed")
        info = daemon.session(GW1)
        assert info["state"] == "down", info
        down_at = float(info["last_state_change_monotonic"])
        [changed_at, *_] = events_after(events, dropped_at)
        from_drop.append(changed_at - dropped_at)
        from_down.append(changed_at - down_at)
        lab.run("peer", "nft", "delete", "table", "inet", TABLE)
        info = daemon.wait_state(GW1, "up", 10)
        up_at = float(info["last_state_change_monotonic"])
        wait_for(lambda: ours(lab) == sorted([GW1, GW2]), HOLD_S + 3, "gw1 back")
        back_at = time.monotonic()
        # Every flap is dampened (penalty 1000 > suppress 500): held max_hold_s.
        assert back_at - up_at >= HOLD_S - 0.05, (trial, back_at - up_at)

    ms = [round(x * 1000, 1) for x in from_drop]
    down_ms = [round(x * 1000, 2) for x in from_down]
    print(f"drop -> next hop removed: {ms} ms; session Down -> removed: {down_ms} ms")
    print(
        f"Down -> removed p50 {statistics.median(down_ms):.2f} ms, max {max(down_ms):.2f} ms; "
        f"drop -> removed p50 {statistics.median(ms):.1f} ms, max {max(ms):.1f} ms"
    )
    for latency in from_drop:
        assert latency <= DETECT_S + SLACK_S, ms
    for latency in from_down:
        assert -0.001 <= latency <= 0.005, down_ms

    daemon.stop()
    assert ours(lab) is None
    [static] = default_routes(lab)
    assert static["protocol"] == "static" and static["gateway"] == GW2


def test_persist_keeps_the_route(two_gateways: tuple[Lab, str], tmp_path: Path) -> None:
    lab, _ = two_gateways
    daemon = start(lab, tmp_path, persist=True)
    assert daemon.stop() == 0
    assert ours(lab) == sorted([GW1, GW2])
    # A new run takes it over, and (without persist) removes it at its stop.
    daemon = start(lab, tmp_path, persist=False, name="b")
    assert daemon.stop() == 0
    assert ours(lab) is None


def test_conflicting_route_is_left_alone(two_gateways: tuple[Lab, str], tmp_path: Path) -> None:
    lab, _ = two_gateways
    lab.ip("host", f"route add default via {GW1} metric 100 proto static")
    path = tmp_path / "aiobfd.toml"
    path.write_text(config())
    daemon = OurDaemon.from_config(lab, "host", path).start()
    for gw in (GW1, GW2):
        daemon.wait_state(gw, "up", 15)
    time.sleep(0.3)
    [route] = default_routes(lab)
    assert route["protocol"] == "static" and route["gateway"] == GW1
    daemon.stop()
    [route] = default_routes(lab)
    assert route["protocol"] == "static"
    log = daemon.log.read_text()
    assert "a route of protocol 4 (not aiobfd's 200) is there: left alone" in log
