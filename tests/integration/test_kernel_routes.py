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
  ``persist = true`` aiobfd's route stays;
* a client's UDP stream through the host (1,000 numbered packets a second over
  16 flows to an address each gateway holds and counts what arrives at):
  each gateway in turn fails, its BFD and the stream dropped by nftables; the
  packets lost are only its flows', at most the Detection Time + 20 ms of them
  (170 packets in all), in a window of the packet numbers of at most 170 ms;
  back, its flows go through it again.

Needs root, FRR and nftables.
"""

from __future__ import annotations

import array
import json
import math
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


# -- a client's UDP stream through the two gateways ---------------------------------------

SINK = "192.0.2.100"
"""The stream's destination: held by each gateway (on its lo), reached through the
default route, so it sits behind both next hops. A documentation address, only in the
lab's namespaces."""
SINK_PORT = 9000
RATE = 1000
"""Packets a second, numbered, in turn over `FLOWS` sockets (source ports)."""
FLOWS = 16
MAX_LOST = 170
"""Detection Time + 20 ms of the whole stream at `RATE`: a safe bound whatever the share
of the flows that went through the cut gateway."""
CUT_TABLE = "aiobfd_routes_stream"

#: The client, in the host's namespace: packet i (4-byte number, 64 bytes) goes from
#: socket i % FLOWS, one every 1/RATE s; late, it resets its schedule rather than
#: catching up in a burst. Each send's CLOCK_MONOTONIC is written on SIGTERM.
SENDER = r"""
import array, os, signal, socket, struct, sys, time
sink, port, rate, flows, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
socks = []
for _ in range(flows):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 0))
    socks.append(s)
times = array.array("d")
period = 1 / rate
pad = bytes(60)
try:
    due = time.monotonic()
    seq = 0
    while True:
        now = time.monotonic()
        if now < due:
            time.sleep(due - now)
        elif now - due > 0.005:
            due = now
        stamp = time.monotonic()
        socks[seq % flows].sendto(struct.pack("!I", seq) + pad, (sink, port))
        times.append(stamp)
        seq += 1
        due += period
finally:
    with open(out + ".tmp", "wb") as f:
        times.tofile(f)
    os.rename(out + ".tmp", out)
"""

#: A sink, in a gateway's namespace: the number of each packet received, 4 bytes each,
#: written at once.
RECEIVER = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
s.bind((sys.argv[1], int(sys.argv[2])))
out = open(sys.argv[3], "wb", buffering=0)
open(sys.argv[3] + ".ready", "w").close()
while True:
    out.write(s.recv(2048)[:4])
"""


def cut_gateway(lab: Lab, ns: str) -> None:
    """The gateway fails: its BFD (UDP 3784, in and out) and the stream dropped at once."""
    lab.run(
        ns,
        "nft",
        f"add table inet {CUT_TABLE} ; "
        f"add chain inet {CUT_TABLE} in {{ type filter hook input priority 0 ; }} ; "
        f"add chain inet {CUT_TABLE} out {{ type filter hook output priority 0 ; }} ; "
        f"add rule inet {CUT_TABLE} in udp dport {{ 3784, {SINK_PORT} }} drop ; "
        f"add rule inet {CUT_TABLE} out udp dport 3784 drop",
    )


def received(path: Path) -> list[int]:
    data = path.read_bytes()
    return [int.from_bytes(data[i : i + 4], "big") for i in range(0, len(data) - 3, 4)]


def flows_between(seqs: list[int], sent: list[float], start: float, end: float) -> set[int]:
    """The flows of the packets in `seqs` sent in [start, end)."""
    return {s % FLOWS for s in seqs if start <= sent[s] < end}


def test_stream_loses_at_most_the_detection_time(
    two_gateways: tuple[Lab, str], tmp_path: Path
) -> None:
    """A gateway fails (BFD and the stream dropped on it): the stream's flows through it
    lose no more than the Detection Time + 20 ms, and go through it again once it is back."""
    lab, gw2 = two_gateways
    gateways = {GW1: "peer", GW2: gw2}
    lab.sysctl("host", "net.ipv4.fib_multipath_hash_policy", 1)  # ECMP by ports too
    sinks: dict[str, Path] = {}
    for gw, ns in gateways.items():
        lab.ip(ns, f"addr add {SINK}/32 dev lo")
        sinks[gw] = tmp_path / f"sink-{lab.role(ns)}.bin"
        lab.popen(ns, sys.executable, "-c", RECEIVER, SINK, str(SINK_PORT), str(sinks[gw]))
    for path in sinks.values():
        wait_for(lambda p=path: Path(f"{p}.ready").exists(), 5, "the sinks")
    daemon = start(lab, tmp_path)
    times = tmp_path / "sent.bin"
    sender = lab.popen(
        "host", sys.executable, "-c", SENDER, SINK, str(SINK_PORT), str(RATE), str(FLOWS),
        str(times),
    )  # fmt: skip

    # (gateway, before the cut, after it, its session's Down, removed, back in the route)
    trials: list[tuple[str, float, float, float, float, float]] = []
    try:
        time.sleep(1.0)
        for gw, ns in gateways.items():
            other = GW2 if gw == GW1 else GW1
            wait_for(lambda: ours(lab) == sorted([GW1, GW2]), HOLD_S + 5, "both next hops")
            time.sleep(0.5)
            before = time.monotonic()
            cut_gateway(lab, ns)
            after = time.monotonic()
            wait_for(lambda: ours(lab) == [other], 5, f"{gw} removed")  # noqa: B023
            removed = time.monotonic()
            info = daemon.session(gw)
            assert info["state"] == "down", info
            down = float(info["last_state_change_monotonic"])
            time.sleep(0.3)
            lab.run(ns, "nft", "delete", "table", "inet", CUT_TABLE)
            daemon.wait_state(gw, "up", 10)
            wait_for(lambda: ours(lab) == sorted([GW1, GW2]), HOLD_S + 3, f"{gw} back")
            trials.append((gw, before, after, down, removed, time.monotonic()))
        time.sleep(0.7)
    finally:
        lab.stop_process(sender)
    # Let the sinks read what is still on its way, then stop them.
    sizes: list[int] = []
    while len(sizes) < 3 or (sizes[-1] != sizes[-3] and len(sizes) < 50):
        time.sleep(0.1)
        sizes.append(sum(p.stat().st_size for p in sinks.values()))
    sent = array.array("d", times.read_bytes()).tolist()
    # (a packet sent as SIGTERM came, but not stamped, is left out)
    got = {gw: [s for s in received(path) if s < len(sent)] for gw, path in sinks.items()}
    assert sum(len(s) for s in got.values()) == len(set(got[GW1]) | set(got[GW2]))
    lost = sorted(set(range(len(sent))) - set(got[GW1]) - set(got[GW2]))
    lost_set = set(lost)
    end = sent[-1]

    figures = []
    unexplained = set(lost_set)
    for i, (gw, before, after, down, removed, back) in enumerate(trials):
        other = GW2 if gw == GW1 else GW1
        ahead = trials[i - 1][5] if i else sent[0]
        # The flows through each gateway before the cut (ECMP by ports: both have some).
        mine = flows_between(got[gw], sent, ahead, before)
        theirs = flows_between(got[other], sent, ahead, before)
        assert mine and theirs and not mine & theirs, (gw, sorted(mine), sorted(theirs))
        window = [s for s in lost if before - 0.005 <= sent[s] <= removed + 0.05]
        unexplained -= set(window)
        assert window, f"{gw}: nothing lost: the cut did not cut"
        assert {s % FLOWS for s in window} <= mine, (gw, sorted(mine), window)
        span_ms = (sent[window[-1]] - sent[window[0]]) * 1000
        # Bracketed by the packets of the same flows delivered just before and after.
        delivered = [s for s in range(len(sent)) if s % FLOWS in mine and s not in lost_set]
        last_ok = max(s for s in delivered if s < window[0])
        next_ok = min(s for s in delivered if s > window[-1])
        bracket_ms = (sent[next_ok] - sent[last_ok]) * 1000
        figure = (
            f"{gw}: {len(window)} packets lost ({len(mine)} of {FLOWS} flows through it), "
            f"loss window {span_ms:.1f} ms (between delivered packets {bracket_ms:.1f} ms; "
            f"first lost {1000 * (sent[window[0]] - after):+.1f} ms from the nft command's "
            f"return), session Down {1000 * (down - before):.1f} ms "
            f"after the cut, last lost {1000 * (sent[window[-1]] - down):+.1f} ms from it"
        )
        figures.append(figure)
        assert len(window) <= MAX_LOST, figure
        # No more than the Detection Time + 20 ms of the flows through it.
        per_flow = math.ceil(RATE / FLOWS * (DETECT_S + SLACK_S)) + 1
        assert len(window) <= len(mine) * per_flow, figure
        assert span_ms <= (DETECT_S + SLACK_S) * 1000, figure
        # Back: the gateway's flows go through it again, and nothing more is lost.
        following = trials[i + 1][1] if i + 1 < len(trials) else end
        again = flows_between(got[gw], sent, back + 0.05, following)
        assert again == mine, (gw, sorted(again), sorted(mine))
    print("; ".join(figures))
    assert not unexplained, f"lost outside the cuts: {sorted(unexplained)}; {figures}"
    assert daemon.stop() == 0
