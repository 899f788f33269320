"""Kernel routes benchmark: next-hop removal after a session Down, and route churn.

The setup of tests/integration/test_kernel_routes.py, in network namespaces of
aiobfd's own lab (``aiobfd.lab``; documentation addresses only, removed
afterwards; root only)::

    gw1 (FRR bfdd) 198.51.100.2 --veth-- 198.51.100.1  host  203.0.113.1 --veth-- 203.0.113.2 gw2 (FRR bfdd)

Our daemon in 'host' runs one session to each gateway at ``--interval`` ms x 3
and one ``[[routes]]`` default route (metric 100) over both, without dampening
(a next hop is back as soon as its session is Up).

``removal``: ``--trials`` times, alternating between the gateways, the
gateway's BFD is cut by one ``nft`` command in its namespace (UDP 3784 dropped
in and out, ``--trigger nft``: the session times out, diag 1) or FRR is told
``shutdown`` for the session (``--trigger shutdown``: AdminDown, our session
goes Down with diag 3). The latency is from the session's Down - the daemon's
own CLOCK_MONOTONIC stamp of the change (``last_state_change_monotonic`` from
the control socket) - to the kernel's route event, stamped with
CLOCK_MONOTONIC by a netlink listener (RTMGRP_IPV4_ROUTE) in the host's
namespace when it reads it: the listener's own wake-up is included. The next
hop must then be gone from the route (``ip -j route``). Then the drop is
removed (or ``no shutdown``) and the route must have both next hops again.
Target: p99 under 5 ms.

``churn``: ``--soak`` seconds of both sessions Up: every route event of the
host's namespace is counted (target 0), with the sessions' Down count.

    python bench/routes.py [--trials 100] [--soak 120] [--interval 50] [--trigger nft]
    python bench/routes.py --only removal --trials 20

Each part prints one JSON line and appends it to bench/results/routes.jsonl
(``--results``). Needs root, iproute2, nftables and FRR (``apt-get install frr``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiobfd.lab import (
    BFDD,
    VTYSH,
    ZEBRA,
    FrrPeer,
    FrrSession,
    Lab,
    LabError,
    Naming,
    OurDaemon,
    cleanup_stale,
    frr_version,
    missing_tools,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RESULTS = ROOT / "bench" / "results" / "routes.jsonl"
NAMING = Naming("abfdr-", "ar")
"""This benchmark's namespaces and links: apart from the tests' and the other benches'."""
GW1, GW2 = "198.51.100.2", "203.0.113.2"
HOST1, HOST2 = "198.51.100.1", "203.0.113.1"
MULT = 3
TARGET_P99_MS = 5.0
TABLE = "aiobfd_routes_bench"
Json = dict[str, Any]

#: Stamps each route message of the namespace with CLOCK_MONOTONIC when it is read:
#: "TIME TYPE PROTOCOL" (24 new, 25 deleted; protocol 200 is aiobfd's), flushed at once.
WATCHER = r"""
import socket, struct, sys, time
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
s.bind((0, 0x40 | 0x400))  # RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE
out = open(sys.argv[1], "a", buffering=1)
out.write("ready\n")
while True:
    data = s.recv(65536)
    now = time.monotonic()
    at = 0
    while at + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, at)
        protocol = data[at + 21] if length >= 28 else -1
        out.write(f"{now:.6f} {kind} {protocol}\n")
        at += (length + 3) & ~3
"""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def machine() -> Json:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "frr": frr_version(),
        "commit": commit or "unknown",
        "load_1m": round(os.getloadavg()[0], 2),
    }


def nearest_rank(values: Sequence[float], q: float) -> float:
    """The q-quantile by nearest rank (with 100 values, p99 is the 99th smallest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def summary(latencies_ms: Sequence[float], digits: int = 2) -> Json:
    if not latencies_ms:
        return {"n": 0}
    return {
        "n": len(latencies_ms),
        "min_ms": round(min(latencies_ms), digits),
        "p50_ms": round(statistics.median(latencies_ms), digits),
        "p99_ms": round(nearest_rank(latencies_ms, 0.99), digits),
        "max_ms": round(max(latencies_ms), digits),
    }


def save(result: Json, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(result) + "\n")
    print(json.dumps(result), flush=True)


def wait_for(probe: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.01)


def config(interval_ms: int, holdoff_ms: int | None = None) -> str:
    daemon = "" if holdoff_ms is None else f"[daemon]\nreceive_holdoff_ms = {holdoff_ms}\n"
    return f"""
{daemon}
[defaults]
rx_interval_ms = {interval_ms}
tx_interval_ms = {interval_ms}
detect_mult = {MULT}

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
"""


@dataclass
class Setup:
    lab: Lab
    daemon: OurDaemon
    gateways: dict[str, tuple[str, FrrPeer]]
    """Gateway address -> (its namespace, its FRR)."""
    events: Path

    def ours(self) -> list[str] | None:
        """The next hops of aiobfd's default route (None: there is none)."""
        out = self.lab.ip("host", "-j route show default").stdout
        for route in json.loads(out or "[]"):
            if str(route.get("protocol")) == "200":
                if "nexthops" in route:
                    return sorted(h["gateway"] for h in route["nexthops"])
                return [route["gateway"]]
        return None

    def route_events(self) -> list[tuple[float, int, int]]:
        """(monotonic, type, protocol) of every route message seen so far."""
        out = []
        for line in self.events.read_text().splitlines()[1:]:
            stamp, kind, protocol = line.split()
            out.append((float(stamp), int(kind), int(protocol)))
        return out


@contextmanager
def two_gateways(interval_ms: int, workdir: Path, holdoff_ms: int | None = None) -> Iterator[Setup]:
    """The lab of tests/integration/test_kernel_routes.py, our daemon Up with both."""
    cleanup_stale(NAMING)
    with Lab(NAMING) as lab:
        gw2 = lab.add_namespace("gw2", "g")
        host_if, gw2_if = lab.ifname("hg"), lab.ifname("g")
        lab.add_veth(lab.host.ns, host_if, gw2, gw2_if)
        lab.ip("host", f"addr add {HOST2}/24 dev {host_if}")
        lab.ip("host", f"link set {host_if} up")
        lab.ip(gw2, f"addr add {GW2}/24 dev {gw2_if}")
        lab.ip(gw2, f"link set {gw2_if} up")
        peers: dict[str, tuple[str, FrrPeer]] = {}
        try:
            for ns, local, remote in (("peer", HOST1, GW1), (gw2, HOST2, GW2)):
                session = FrrSession(
                    local, remote, rx_ms=interval_ms, tx_ms=interval_ms, multiplier=MULT
                )
                peer = FrrPeer(lab, ns, workdir / f"frr-{lab.role(ns)}", [session])
                peer.start()
                peers[remote] = (ns, peer)
            events = lab.rundir / "route-events.txt"
            lab.popen("host", sys.executable, "-c", WATCHER, str(events))
            wait_for(lambda: events.exists() and events.read_text().startswith("ready"), 5,
                     "the route listener")  # fmt: skip
            path = lab.rundir / "aiobfd.toml"
            path.write_text(config(interval_ms, holdoff_ms))
            # As from_config() does, at log level INFO: the bench times the daemon.
            daemon = OurDaemon(lab, "host", "", (), "--config", str(path), log_level="INFO")
            daemon.start()
            setup = Setup(lab, daemon, peers, events)
            for gw in (GW1, GW2):
                daemon.wait_state(gw, "up", 15)
            wait_for(lambda: setup.ours() == [GW1, GW2], 5, "both next hops")
            yield setup
            daemon.stop()
        finally:
            for _ns, peer in peers.values():
                peer.stop()


def cut(setup: Setup, gw: str, trigger: str) -> None:
    ns, peer = setup.gateways[gw]
    if trigger == "nft":
        setup.lab.run(
            ns,
            "nft",
            f"add table inet {TABLE} ; "
            f"add chain inet {TABLE} in {{ type filter hook input priority 0 ; }} ; "
            f"add chain inet {TABLE} out {{ type filter hook output priority 0 ; }} ; "
            f"add rule inet {TABLE} in udp dport 3784 drop ; "
            f"add rule inet {TABLE} out udp dport 3784 drop",
        )
    else:
        [session] = peer.sessions
        peer.configure(session.remote, session.local, "shutdown")


def restore(setup: Setup, gw: str, trigger: str) -> None:
    ns, peer = setup.gateways[gw]
    if trigger == "nft":
        setup.lab.run(ns, "nft", "delete", "table", "inet", TABLE)
    else:
        [session] = peer.sessions
        peer.configure(session.remote, session.local, "no shutdown")


def removal(setup: Setup, opts: argparse.Namespace) -> Json:
    """Session Down -> the kernel's route event, `opts.trials` times."""
    detect_s = opts.interval * MULT / 1000
    down_to_route: list[float] = []
    cut_to_route: list[float] = []
    diags: dict[str, int] = {}
    failures: list[str] = []
    started = time.monotonic()
    for trial in range(opts.trials):
        gw = (GW1, GW2)[trial % 2]
        left = [GW2 if gw == GW1 else GW1]
        wait_for(lambda: setup.ours() == [GW1, GW2], 10, "both next hops")
        time.sleep(2 * detect_s + random.uniform(0, opts.interval / 1000))
        seen = len(setup.route_events())
        cut_at = time.monotonic()
        cut(setup, gw, opts.trigger)
        try:
            wait_for(lambda: setup.ours() == left, detect_s + 5, f"{gw} removed")  # noqa: B023
            info = setup.daemon.session(gw)
            if info["state"] != "down":
                raise LabError(f"{gw} is {info['state']}, not down")
            down_at = float(info["last_state_change_monotonic"])
            diag = str(info.get("local_diag"))
            diags[diag] = diags.get(diag, 0) + 1
            # The listener may write its line a little after `ip route` shows the change.
            new = wait_for(lambda: setup.route_events()[seen:], 2, "the route event")  # noqa: B023
            stamp, kind, protocol = new[0]
            if kind != 24 or protocol != 200:
                raise LabError(f"first route event: type {kind}, protocol {protocol}")
            down_to_route.append((stamp - down_at) * 1000)
            cut_to_route.append((stamp - cut_at) * 1000)
        except LabError as exc:
            failures.append(f"trial {trial} ({gw}): {exc}")
        finally:
            restore(setup, gw, opts.trigger)
        setup.daemon.wait_state(gw, "up", 15)
        if (trial + 1) % 20 == 0:
            log(f"removal: {trial + 1}/{opts.trials}: {summary(down_to_route)}")
    wait_for(lambda: setup.ours() == [GW1, GW2], 10, "both next hops")
    stats = summary(down_to_route)
    return {
        "part": "removal",
        "trigger": opts.trigger,
        "receive_holdoff_ms": opts.receive_holdoff,
        "interval_ms": opts.interval,
        "detect_mult": MULT,
        "trials": opts.trials,
        "down_to_route": stats,
        "cut_to_route": summary(cut_to_route, 1),
        "local_diags": diags,
        "target_p99_ms": TARGET_P99_MS,
        "pass": not failures and stats.get("p99_ms", math.inf) < TARGET_P99_MS,
        "failures": failures,
        "down_to_route_ms": [round(x, 3) for x in down_to_route],
        "elapsed_s": round(time.monotonic() - started, 1),
    }


def churn(setup: Setup, opts: argparse.Namespace) -> Json:
    """`opts.soak` seconds of steady sessions: every route event counted."""
    wait_for(lambda: setup.ours() == [GW1, GW2], 10, "both next hops")
    for gw in (GW1, GW2):
        setup.daemon.wait_state(gw, "up", 15)
    time.sleep(2)
    before = {gw: setup.daemon.session(gw) for gw in (GW1, GW2)}
    seen = len(setup.route_events())
    started = time.monotonic()
    time.sleep(opts.soak)
    elapsed = time.monotonic() - started
    events = setup.route_events()[seen:]
    after = {gw: setup.daemon.session(gw) for gw in (GW1, GW2)}
    downs = 0
    for gw in (GW1, GW2):
        # A flap in between would show as a newer state change.
        if after[gw]["last_state_change_monotonic"] != before[gw]["last_state_change_monotonic"]:
            downs += 1
    return {
        "part": "churn",
        "interval_ms": opts.interval,
        "detect_mult": MULT,
        "seconds": round(elapsed, 1),
        "route_events": len(events),
        "route_events_ours": sum(1 for e in events if e[2] == 200),
        "sessions_changed": downs,
        "states_at_end": {gw: after[gw]["state"] for gw in (GW1, GW2)},
        "next_hops_at_end": setup.ours(),
        "packets_in": {gw: after[gw]["counters"]["packets_in"] for gw in (GW1, GW2)},
        "pass": not events and not downs,
    }


PARTS: dict[str, Callable[[Setup, argparse.Namespace], Json]] = {
    "removal": removal,
    "churn": churn,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=100, help="removal trials (default 100)")
    parser.add_argument("--soak", type=float, default=120.0, help="churn seconds (default 120)")
    parser.add_argument(
        "--interval", type=int, default=50, help="BFD interval, ms (x 3; default 50)"
    )
    parser.add_argument(
        "--trigger",
        choices=("nft", "shutdown"),
        default="nft",
        help="how a gateway's session is taken Down (default nft: the Detection Time expires)",
    )
    parser.add_argument(
        "--receive-holdoff",
        type=int,
        metavar="MS",
        help="[daemon] receive_holdoff_ms (default: the daemon's, 5 ms at 50 ms intervals)",
    )
    parser.add_argument(
        "--only", default=",".join(PARTS), help=f"comma-separated parts of {','.join(PARTS)}"
    )
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="JSON lines file")
    opts = parser.parse_args(argv)
    parts = [p for p in opts.only.split(",") if p]
    if bad := [p for p in parts if p not in PARTS]:
        parser.error(f"unknown part(s) {bad}")
    if os.geteuid() != 0:
        parser.error("run as root (network namespaces)")
    if missing := missing_tools("ip", "nft", ZEBRA, BFDD, VTYSH):
        parser.error(f"missing {', '.join(missing)} (apt-get install frr nftables)")
    workdir = Path(tempfile.mkdtemp(prefix="aiobfd-routes-bench-"))
    try:
        with two_gateways(opts.interval, workdir, opts.receive_holdoff) as setup:
            for part in parts:
                log(f"{part} ...")
                result = PARTS[part](setup, opts)
                result["date"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
                result["machine"] = machine()
                save(result, opts.results)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
