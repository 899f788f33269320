#!/usr/bin/env python3
"""Anycast failover lab: FRR as the router, ExaBGP + aiobfd on two anycast hosts.

Five network namespaces (root only), documentation addresses only::

                         switch (bridge)
       host a --------------+--------------- host b
    198.51.100.11           |            198.51.100.12
    lo 192.0.2.53/32        |            lo 192.0.2.53/32
    ExaBGP + aiobfd         |            ExaBGP + aiobfd
                      198.51.100.1
                       router: FRR zebra, bgpd, bfdd (AS 65000)
                      203.0.113.1
                            |
                      203.0.113.10 client

Both hosts announce 192.0.2.53/32 over eBGP (AS 65001) from ExaBGP, whose
``aiobfd-exabgp`` process announces it while the host's BFD session to the router
is Up. The router has ``neighbor ... bfd profile anycast`` (100 ms x 3), so
bgpd drops a host's session, and its path, as soon as BFD says the host is gone.
The hosts hang off a bridge in a switch namespace: a host's link going down is
invisible to the router's own interface, as behind a real switch.

One host (a) is failed N times in each of three ways and the time until the
router's FIB stops pointing at it is measured from ``ip -ts monitor route``
timestamps (CLOCK_REALTIME, as ``time.time()`` when the failure is made):

* ``link``: the host's link goes down (its port on the switch is set down);
* ``stop``: every process of the host (aiobfd, ExaBGP, aiobfd-exabgp) gets SIGSTOP;
* ``drop``: nftables in the host drops all IP in and out of its interface.

Each trial then undoes the failure and waits until the route points at both
hosts again. ``--no-bfd`` runs the same lab without BFD (BGP keepalive 3 s /
hold time 9 s, routes announced statically by ExaBGP): the BGP-only baseline.

    sudo .venv/bin/python examples/anycast/lab.py                  # 20 trials per mode
    sudo .venv/bin/python examples/anycast/lab.py --no-bfd -n 5    # the BGP-only figure
    sudo .venv/bin/python examples/anycast/lab.py --modes link -n 3 --keep /tmp/anycast-logs

``--loss`` measures a client's stream instead: 1,000 UDP packets a second from the
client to the anycast address over 16 flows (the router hashes them over both hosts,
``fib_multipath_hash_policy`` 1), each host's service counting what it receives,
while host a is taken out: ``drain`` (``aiobfdctl drain --all --wait MS``, then its
service stops once the session is AdminDown), ``term`` (SIGTERM to aiobfd, ExaBGP and
the service at once), ``kill`` (SIGKILL to the same) or ``link`` (its port down).
It reports the packets that reached neither host and when the router's FIB moved:

    sudo .venv/bin/python examples/anycast/lab.py --loss drain,term,kill,link -n 5 -i 50

Needs iproute2, FRR (/usr/lib/frr/{zebra,bgpd,bfdd}, vtysh), exabgp and nft, and
aiobfd installed (the lab is built with ``aiobfd.lab``). Namespaces are named
``abfdx-<tag><role>``; everything is removed on exit, also on failure, and
namespaces left behind by a crashed run are removed at start.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import re
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from aiobfd.client import ClientError, request
from aiobfd.lab import (
    BFDD,
    BGPD,
    ZEBRA,
    CommandError,
    FrrInstance,
    LabError,
    Naming,
    NetnsLab,
    aiobfd_command,
    cleanup_stale,
    daemon_env,
    log_tail,
    missing_tools,
    wait_until,
)

NAMING = Naming("abfdx-", "x")
"""Namespaces of this lab: 'abfdx-' + 6 hex digits + one of 'rsabc'; links 'x' + the
same 6 hex digits + two of 'rsabc' (this namespace, the other end's)."""

ANYCAST = "192.0.2.53"
ROUTE = f"{ANYCAST}/32"
ROUTER_LAN, CLIENT_LAN = "198.51.100.1", "203.0.113.1"
CLIENT = "203.0.113.10"
HOSTS = {"a": "198.51.100.11", "b": "198.51.100.12"}
ROUTER_AS, HOSTS_AS = 65000, 65001
MODES = ("link", "stop", "drop")
LOSS_VARIANTS = ("drain", "term", "kill", "link")
"""How `AnycastLab.loss_round` takes host a out under the client's stream: ``drain``
(``aiobfdctl drain --all``, then the service stops once the sessions are AdminDown),
``term`` (SIGTERM to aiobfd, ExaBGP and the service at once: a plain stop), ``kill``
(SIGKILL to the same: a crash), ``link`` (its port on the switch goes down)."""

TOOLS: tuple[str | Path, ...] = ("ip", "vtysh", "exabgp", "nft", ZEBRA, BGPD, BFDD)

T = TypeVar("T")


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p95 of 20 values is the 19th smallest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


# -- the router's FIB, as `ip monitor` reports it -----------------------------------------

_EVENT_RE = re.compile(r"^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)\] (.*)$")
_VIA_RE = re.compile(r"\bvia (?:inet6? )?(\S+)")


@dataclass(frozen=True)
class RouteEvent:
    time: float
    """CLOCK_REALTIME seconds, as stamped by `ip -ts monitor` when it read the message."""
    deleted: bool
    nexthops: frozenset[str]
    text: str

    def points_at(self, gateway: str) -> bool:
        return not self.deleted and gateway in self.nexthops


def _parse_stamp(stamp: str) -> float:
    # `ip -ts` prints local time without a zone; the monitor runs with TZ=UTC.
    from datetime import UTC, datetime

    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC).timestamp()


class RouteMonitor:
    """`ip -n NS -ts monitor route`, keeping the events for one prefix."""

    def __init__(self, ns: str, prefix: str, log: Path) -> None:
        self.prefix = prefix.removesuffix("/32").removesuffix("/128")
        self.events: list[RouteEvent] = []
        self._cond = threading.Condition()
        self._log = log.open("a")
        self.proc = subprocess.Popen(
            ["ip", "-n", ns, "-ts", "monitor", "route"],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, stderr=subprocess.STDOUT,
            env={**os.environ, "TZ": "UTC"}, start_new_session=True,
        )  # fmt: skip
        self._thread = threading.Thread(target=self._read, daemon=True, name="monitor")
        self._thread.start()

    def _read(self) -> None:
        """Parse ip's output into events: a line with a timestamp starts one, indented
        lines ("nexthop via ...") continue it. ip prints an event at once, so a pause
        of 20 ms also ends it (the timestamps, not this, are what is measured)."""
        import select

        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        block: list[str] = []
        stamp = 0.0
        partial = ""
        while True:
            if block and not select.select([fd], [], [], 0.02)[0]:
                self._flush(stamp, block)
                block = []
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            text = chunk.decode(errors="replace")
            self._log.write(text)
            self._log.flush()
            *lines, partial = (partial + text).split("\n")
            for line in lines:
                match = _EVENT_RE.match(line)
                if match:
                    self._flush(stamp, block)
                    stamp, block = _parse_stamp(match.group(1)), [match.group(2)]
                elif line[:1].isspace() and block:
                    block.append(line.strip())
        self._flush(stamp, block)

    def _flush(self, stamp: float, block: list[str]) -> None:
        if not block:
            return
        first = block[0]
        deleted = first.startswith("Deleted ")
        words = first.removeprefix("Deleted ").split()
        if not words or words[0] not in (self.prefix, f"{self.prefix}/32"):
            return
        text = " ".join(block)
        event = RouteEvent(stamp, deleted, frozenset(_VIA_RE.findall(text)), text)
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def mark(self) -> int:
        with self._cond:
            return len(self.events)

    def wait(
        self, since: int, predicate: Callable[[RouteEvent], bool], timeout: float
    ) -> RouteEvent | None:
        """The first event from index `since` on that satisfies `predicate`, or None."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in self.events[since:]:
                    if predicate(event):
                        return event
                since = len(self.events)
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(3)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(3)
        self._thread.join(3)
        self._log.close()


# -- the anycast service: a UDP responder on each host, a query from the client -------------

SERVICE_PORT = 5353
_SERVE = f"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], {SERVICE_PORT}))
while True:
    data, peer = s.recvfrom(512)
    s.sendto(sys.argv[2].encode(), peer)
"""
_ASK = f"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(float(sys.argv[2]))
s.sendto(b"who", (sys.argv[1], {SERVICE_PORT}))
print(s.recvfrom(512)[0].decode())
"""

# -- a client's UDP stream through the router, and a sink on each host ------------------

STREAM_PORT = 5354
STREAM_RATE = 1000
"""Packets a second: at this rate one lost packet is one millisecond without service."""
STREAM_FLOWS = 16
"""Source ports the stream is spread over: the router hashes flows over both hosts
(``fib_multipath_hash_policy`` 1), so each host carries part of it."""
_SINK = f"""
import os, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
s.bind((sys.argv[1], {STREAM_PORT}))
fd = os.open(sys.argv[2], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
while True:
    data = s.recv(64)
    if len(data) == 4:
        os.write(fd, data)  # unbuffered: what was received is on disk even after a kill
"""
_SEND = f"""
import json, socket, struct, sys, time
dst, first, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range({STREAM_FLOWS})]
for s in socks:
    s.bind(("0.0.0.0", 0))
start, wall, late = time.monotonic(), time.time(), 0.0
for i in range(count):
    wait = start + i / {STREAM_RATE} - time.monotonic()
    if wait > 0:
        time.sleep(wait)
    else:
        late = max(late, -wait)
    socks[i % len(socks)].sendto(struct.pack("!I", first + i), (dst, {STREAM_PORT}))
print(json.dumps({{"sent": count, "start": wall, "late_ms": late * 1000}}))
"""


# -- the lab -----------------------------------------------------------------------------


@dataclass
class Trial:
    mode: str
    failover_s: float | None
    """Failure to the first FIB update without the host; None: not within the timeout."""
    recovery_s: float | None
    """Recovery action to the first FIB update with the host again."""
    action_s: float
    """How long the failure action itself took (its start is the reference)."""


@dataclass
class Results:
    bfd: bool
    interval_ms: int
    multiplier: int
    trials: list[Trial] = field(default_factory=list)

    def summary(self, mode: str) -> dict[str, Any]:
        runs = [t for t in self.trials if t.mode == mode]
        fail = [t.failover_s for t in runs if t.failover_s is not None]
        rec = [t.recovery_s for t in runs if t.recovery_s is not None]
        out: dict[str, Any] = {"mode": mode, "n": len(runs), "missed": len(runs) - len(fail)}
        if fail:
            out.update(
                median_ms=statistics.median(fail) * 1000,
                p95_ms=percentile(fail, 95) * 1000,
                min_ms=min(fail) * 1000,
                max_ms=max(fail) * 1000,
            )
        if rec:
            out.update(recovery_median_s=statistics.median(rec), recovery_max_s=max(rec))
        if runs:
            out["action_median_ms"] = statistics.median(t.action_s for t in runs) * 1000
        return out

    def table(self) -> str:
        what = (
            f"with BFD {self.interval_ms} ms x {self.multiplier}"
            if self.bfd
            else "BGP only (keepalive 3 s, hold 9 s)"
        )
        lines = [
            f"Failover, {what}: failure -> router FIB without the host",
            "| failure | N | median | p95 | min | max | route back (median / max) | action |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for mode in dict.fromkeys(t.mode for t in self.trials):
            s = self.summary(mode)
            if "median_ms" not in s:
                lines.append(f"| {mode} | {s['n']} | missed all | | | | | |")
                continue
            missed = f" ({s['missed']} missed)" if s["missed"] else ""
            rec = (
                f"{s['recovery_median_s']:.1f} s / {s['recovery_max_s']:.1f} s"
                if "recovery_median_s" in s
                else "-"
            )
            lines.append(
                f"| {mode} | {s['n']}{missed} | {s['median_ms']:.0f} ms | {s['p95_ms']:.0f} ms"
                f" | {s['min_ms']:.0f} ms | {s['max_ms']:.0f} ms | {rec}"
                f" | {s['action_median_ms']:.1f} ms |"
            )
        lines.append(
            "(p95: nearest rank; 'action': how long making the failure took, included"
            " in the figures since timing starts when the action starts)"
        )
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        modes = dict.fromkeys(t.mode for t in self.trials)
        return {
            "bfd": self.bfd,
            "interval_ms": self.interval_ms,
            "multiplier": self.multiplier,
            "summary": [self.summary(m) for m in modes],
            "trials": [t.__dict__ for t in self.trials],
        }


@dataclass
class LossRound:
    """One round of `AnycastLab.loss_round`: the client's stream while host a goes."""

    variant: str
    interval_ms: int
    multiplier: int
    sent: int
    lost: int
    """Packets of the stream that reached neither host."""
    lost_window_ms: float | None
    """From the first lost packet to the last, at the stream's rate (None: none lost)."""
    lost_from_ms: float | None
    """When the first lost packet was sent, ms after the action started."""
    last_to_host_ms: float | None
    """When the last packet that host a received was sent, ms after the action started."""
    withdrawn_ms: float | None
    """The action's start -> the router's FIB without host a (`ip monitor`'s stamp)."""
    back_s: float | None
    """The restore's start -> the router's FIB with host a again."""
    sender_late_ms: float
    """The sender's worst lateness against its schedule (it is a Python loop)."""
    drain_wait_ms: int | None = None


def loss_table(rounds: Sequence[LossRound]) -> str:
    lines = [
        "| variant | timers | sent | lost | lost window | lost from | last packet to host a"
        " | FIB without host a | route back |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f} ms"

    for r in rounds:
        variant = r.variant + (f" ({r.drain_wait_ms} ms)" if r.drain_wait_ms is not None else "")
        back = "-" if r.back_s is None else f"{r.back_s:.1f} s"
        lines.append(
            f"| {variant} | {r.interval_ms} ms x {r.multiplier} | {r.sent} | {r.lost}"
            f" | {ms(r.lost_window_ms)} | {ms(r.lost_from_ms)} | {ms(r.last_to_host_ms)}"
            f" | {ms(r.withdrawn_ms)} | {back} |"
        )
    lines.append(
        f"(a UDP stream of {STREAM_RATE} packets/s over {STREAM_FLOWS} flows from the client"
        " to the anycast address; times are ms after the action started)"
    )
    return "\n".join(lines)


class AnycastLab(NetnsLab):
    """The five namespaces, FRR on the router, ExaBGP (+ aiobfd) on the hosts.

    A context manager: `close()` stops every process (SIGCONT first, a frozen one
    would ignore SIGTERM), deletes the namespaces and the scratch directory, and
    copies configs and logs to `workdir` when one is given.
    """

    def __init__(
        self,
        *,
        bfd: bool = True,
        interval_ms: int = 100,
        multiplier: int = 3,
        keepalive_s: int = 3,
        hold_s: int = 9,
        workdir: Path | None = None,
        log: Callable[[str], None] = lambda s: None,
        verbose: bool = False,
    ) -> None:
        super().__init__(NAMING)
        self.bfd = bfd
        self.interval_ms = interval_ms
        self.multiplier = multiplier
        self.keepalive_s = keepalive_s
        self.hold_s = hold_s
        self.workdir = workdir
        self.say = log
        self.verbose = verbose
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        """The processes by name, watched for an early death by every wait."""
        self.monitor: RouteMonitor | None = None
        self._failed: dict[str, str] = {}

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> None:
        removed = cleanup_stale(NAMING)
        if removed:
            self.say(f"removed stale lab leftovers: {removed}")
        super().start()  # the network; the rest is undone by close() if it fails
        try:
            self._start_router()
            for host in HOSTS:
                self._start_host(host)
            self.monitor = RouteMonitor(self.netns("r"), ROUTE, self.rundir / "monitor.log")
            self.wait_steady(timeout)
        except BaseException:
            self.close(raise_errors=False)
            raise

    def close(self, raise_errors: bool = False) -> None:
        """Stop everything, keep the logs (with `workdir`), remove namespaces and the
        scratch directory. Idempotent.

        Raises LabError if a namespace could not be removed (unless not `raise_errors`,
        so that the error that made us close is the one reported).
        """
        if self.monitor is not None:
            self.monitor.close()
            self.monitor = None
        self.stop_processes()
        self.procs.clear()
        if self.workdir is not None and self.rundir.is_dir():
            self._keep(self.workdir)
        super().close(raise_errors)

    def _keep(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        for path in self.rundir.rglob("*"):
            if path.is_file() and path.suffix in (".conf", ".log", ".out", ".env"):
                rel = path.relative_to(self.rundir)
                dest = workdir / str(rel).replace("/", "-")
                with contextlib.suppress(OSError):
                    shutil.copy(path, dest)

    # -- building ------------------------------------------------------------------------

    def link(self, role: str, peer: str) -> str:
        """The interface in namespace `role` that leads to `peer` (15 chars at most)."""
        return self.ifname(f"{role}{peer}")

    def _build(self) -> None:
        for role in "rsabc":
            self.add_namespace(role, role)
            self.sysctl(role, "net.ipv6.conf.all.disable_ipv6", 1)
        # The switch: a bridge with a port toward the router and one per host.
        self.ip("s", "link add br0 type bridge")
        self.ip("s", "link set br0 up")
        for role in ("r", "a", "b"):
            here, there = self.link(role, "s"), self.link("s", role)
            self.add_veth(role, here, "s", there)
            self.ip("s", f"link set {there} master br0")
            self.ip("s", f"link set {there} up")
        # Router <-> client.
        rc, cr = self.link("r", "c"), self.link("c", "r")
        self.add_veth("r", rc, "c", cr)
        self.ip("r", f"addr add {ROUTER_LAN}/24 dev {self.link('r', 's')}")
        self.ip("r", f"addr add {CLIENT_LAN}/24 dev {rc}")
        self.ip("r", f"link set {self.link('r', 's')} up")
        self.ip("r", f"link set {rc} up")
        self.sysctl("r", "net.ipv4.ip_forward", 1)
        # Hash flows by ports too: the client's stream (many source ports) is then
        # carried by both hosts, as real clients are.
        self.sysctl("r", "net.ipv4.fib_multipath_hash_policy", 1)
        self.ip("c", f"addr add {CLIENT}/24 dev {cr}")
        self.ip("c", f"link set {cr} up")
        self.ip("c", f"route add default via {CLIENT_LAN}")
        for host, addr in HOSTS.items():
            dev = self.link(host, "s")
            self.ip(host, f"addr add {addr}/24 dev {dev}")
            self.ip(host, f"addr add {ANYCAST}/32 dev lo")
            self.ip(host, f"link set {dev} up")
            self.ip(host, f"route add default via {ROUTER_LAN}")

    def spawn(self, role: str, name: str, *cmd: str, env: dict[str, str] | None = None) -> None:
        """Start `cmd` in namespace `role` as `name`; its output goes to <name>.out."""
        self.procs[name] = self.popen(role, *cmd, log=self.rundir / f"{name}.out", extra_env=env)

    # -- the router ----------------------------------------------------------------------

    @property
    def frr(self) -> FrrInstance:
        """zebra, bfdd and bgpd on the router; their logs have milliseconds (`log file`
        in their configurations: `--log file:` ignores the precision)."""
        return FrrInstance(self, "r", self.rundir / "frr", log_file=False)

    @property
    def frr_dir(self) -> Path:
        return self.frr.rundir

    def _frr_log(self, name: str) -> list[str]:
        return ["log timestamp precision 3", f"log file {self.frr_dir / name}.log debugging"]

    def bgpd_conf(self) -> str:
        group = [
            " neighbor hosts peer-group",
            f" neighbor hosts remote-as {HOSTS_AS}",
            f" neighbor hosts timers {self.keepalive_s} {self.hold_s}",
            " neighbor hosts timers connect 1",
        ]
        if self.bfd:
            group.append(" neighbor hosts bfd profile anycast")
        members = [f" neighbor {addr} peer-group hosts" for addr in HOSTS.values()]
        return "\n".join(
            [
                "frr defaults traditional",
                "hostname router",
                *self._frr_log("bgpd"),
                "debug bgp neighbor-events",
                "debug bgp bfd",
                "!",
                f"router bgp {ROUTER_AS}",
                f" bgp router-id {ROUTER_LAN}",
                " no bgp ebgp-requires-policy",
                " no bgp network import-check",
                *group,
                *members,
                " address-family ipv4 unicast",
                "  maximum-paths 4",
                " exit-address-family",
                "!",
                "",
            ]
        )

    def bfdd_conf(self) -> str:
        return "\n".join(
            [
                *self._frr_log("bfdd"),
                "debug bfd peer",
                "!",
                "bfd",
                " profile anycast",
                f"  receive-interval {self.interval_ms}",
                f"  transmit-interval {self.interval_ms}",
                f"  detect-multiplier {self.multiplier}",
                " !",
                "!",
                "",
            ]
        )

    def _start_router(self) -> None:
        frr = self.frr
        zebra = "\n".join(["hostname router", *self._frr_log("zebra"), ""])
        frr.write_configs({"zebra": zebra, "bgpd": self.bgpd_conf(), "bfdd": self.bfdd_conf()})
        self.procs["zebra"] = frr.spawn("zebra")
        self._wait(frr.zebra_ready, 10, "zebra's socket")
        self.procs["bfdd"] = frr.spawn("bfdd")
        self._wait(lambda: self.vtysh("bfdd", "show bfd peers json", check=False), 10, "bfdd")
        self.procs["bgpd"] = frr.spawn("bgpd")
        self._wait(lambda: self.vtysh("bgpd", "show bgp summary json", check=False), 10, "bgpd")

    def vtysh(self, daemon: str, *commands: str, check: bool = True) -> str:
        return self.frr.vtysh(daemon, *commands, check=check)

    def bgp_neighbors(self) -> dict[str, Any]:
        out = self.vtysh("bgpd", "show bgp neighbors json", check=False)
        try:
            return dict(json.loads(out)) if out else {}
        except ValueError:
            return {}

    def bfd_peers(self) -> dict[str, dict[str, Any]]:
        """bfdd's sessions by peer address (`status`, `transmit-interval`, ... in ms)."""
        out = self.vtysh("bfdd", "show bfd peers json", check=False)
        try:
            return {p["peer"]: p for p in json.loads(out)} if out else {}
        except (ValueError, KeyError, TypeError):
            return {}

    def fib(self) -> set[str]:
        """Gateways of the router's kernel route to the anycast prefix."""
        out = self.ip("r", f"-j route show {ROUTE}", check=False).stdout
        gateways: set[str] = set()
        for route in json.loads(out or "[]"):
            if "gateway" in route:
                gateways.add(route["gateway"])
            for hop in route.get("nexthops", []):
                if "gateway" in hop:
                    gateways.add(hop["gateway"])
        return gateways

    # -- the hosts -----------------------------------------------------------------------

    def control_socket(self, host: str) -> Path:
        return self.rundir / f"aiobfd-{host}.sock"

    def helper_command(self, host: str) -> list[str]:
        """How ExaBGP runs aiobfd-exabgp (the console script when installed beside us)."""
        script = Path(sys.executable).parent / "aiobfd-exabgp"
        base = [str(script)] if script.is_file() else [sys.executable, "-m", "aiobfd.exabgp"]
        return [
            *base, "-s", str(self.control_socket(host)), "--route", ROUTE,
            "--peer", ROUTER_LAN, "--max-backoff", "1",
        ]  # fmt: skip

    def exabgp_conf(self, host: str) -> str:
        addr = HOSTS[host]
        neighbor = [
            f"neighbor {ROUTER_LAN} {{",
            f"    router-id {addr};",
            f"    local-address {addr};",
            f"    local-as {HOSTS_AS};",
            f"    peer-as {ROUTER_AS};",
            f"    hold-time {self.hold_s};",
            # Accept the router's connections too: ExaBGP 4.2 waits a little longer
            # before each new attempt of its own after every lost session (up to 60 s),
            # and only an incoming connection resets that backoff.
            "    listen 179;",
        ]
        if self.bfd:
            process = [
                "process aiobfd {",
                f"    run {' '.join(self.helper_command(host))};",
                "    encoder text;",
                "}",
                "",
            ]
            neighbor += ["    api {", "        processes [ aiobfd ];", "    }"]
        else:
            process = []
            neighbor += ["    static {", f"        route {ROUTE} next-hop self;", "    }"]
        return "\n".join([*process, *neighbor, "}", ""])

    def exabgp_env(self, host: str) -> dict[str, str]:
        """ExaBGP's settings as environment variables: foreground, root, no CLI pipes."""
        return {
            "exabgp_daemon_user": "root",
            "exabgp_daemon_daemonize": "false",
            "exabgp_daemon_drop": "false",
            "exabgp_daemon_pid": "",
            "exabgp_log_destination": str(self.rundir / f"exabgp-{host}.log"),
            "exabgp_log_level": "INFO",
            "exabgp_log_processes": "true",
            "exabgp_api_cli": "false",
            "exabgp_api_ack": "false",
            "exabgp_tcp_bind": "",  # listening is per neighbor (`listen 179`)
            **daemon_env(),  # the helper is the aiobfd this lab is built with
        }

    def _start_host(self, host: str) -> None:
        conf = self.rundir / f"exabgp-{host}.conf"
        conf.write_text(self.exabgp_conf(host))
        env = self.exabgp_env(host)
        (self.rundir / f"exabgp-{host}.env").write_text(
            "".join(f"{k}={v}\n" for k, v in env.items())
        )
        if self.bfd:
            self.start_aiobfd(host)
        self.spawn(host, f"exabgp-{host}", "exabgp", str(conf), env=env)
        self.spawn(host, f"service-{host}", sys.executable, "-c", _SERVE, ANYCAST, host)
        self.start_sink(host)

    def sink_file(self, host: str) -> Path:
        """The sequence numbers (4 bytes each) of the stream's packets `host` received."""
        return self.rundir / f"sink-{host}.bin"

    def start_sink(self, host: str) -> None:
        """The service the stream is for on `host` (appends to `sink_file`)."""
        self.spawn(host, f"sink-{host}", sys.executable, "-c", _SINK, ANYCAST,
                   str(self.sink_file(host)))  # fmt: skip

    def start_aiobfd(self, host: str) -> None:
        """aiobfd on `host`: one session toward the router."""
        ms = str(self.interval_ms)
        self.spawn(
            host, f"aiobfd-{host}", *aiobfd_command(HOSTS[host], ROUTER_LAN,
            "-r", ms, "-t", ms, "-m", str(self.multiplier),
            "--control-socket", str(self.control_socket(host)), "--metrics-port", "0"),
            env=daemon_env(),
        )  # fmt: skip

    def kill_aiobfd(self, host: str) -> None:
        """SIGKILL aiobfd on `host`: it dies without a word (no AdminDown)."""
        proc = self.procs.pop(f"aiobfd-{host}")
        proc.kill()
        proc.wait(5)

    def ctl(self, host: str, *args: str) -> str:
        """``aiobfdctl -s SOCKET ARGS`` for `host`'s aiobfd; its output."""
        argv = [sys.executable, "-m", "aiobfd.ctl", "-s", str(self.control_socket(host)), *args]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10,
                              env={**os.environ, **daemon_env()})  # fmt: skip
        if proc.returncode != 0:
            raise CommandError(argv, proc.returncode, proc.stdout, proc.stderr)
        return proc.stdout

    def session_states(self, host: str) -> list[str]:
        """States of `host`'s aiobfd sessions ([] while it does not answer)."""
        try:
            answer = request(str(self.control_socket(host)), {"command": "show sessions"})
        except ClientError:
            return []
        return [str(s["state"]) for s in answer["sessions"]]

    def received(self, first: int, count: int) -> dict[str, list[int]]:
        """Sequence numbers of [first, first + count) that each host's sink received."""
        out: dict[str, list[int]] = {}
        for host in HOSTS:
            path = self.sink_file(host)
            data = path.read_bytes() if path.exists() else b""
            data = data[: len(data) // 4 * 4]
            seqs = struct.unpack(f"!{len(data) // 4}I", data)
            out[host] = sorted(q for q in seqs if first <= q < first + count)
        return out

    def loss_round(
        self, variant: str, host: str = "a", *, drain_wait_ms: int = 2000, first: int = 0,
        before_s: float = 1.0, after_s: float = 1.5, timeout: float = 60.0,
    ) -> LossRound:  # fmt: skip
        """Take `host` out in `variant` (see LOSS_VARIANTS) under the client's stream,
        count what was lost, then bring the host back.

        The stream runs `before_s` before the action, and `drain_wait_ms` + `after_s`
        after it; its sequence numbers start at `first` (the sinks' files accumulate)."""
        if variant not in LOSS_VARIANTS:
            raise ValueError(f"unknown variant {variant!r}")
        assert self.monitor is not None
        gateway = HOSTS[host]
        self.wait_steady(timeout)
        count = round((before_s + drain_wait_ms / 1000 + after_s) * STREAM_RATE)
        sender = self.popen("c", sys.executable, "-c", _SEND, ANYCAST, str(first), str(count),
                            stdout=subprocess.PIPE)  # fmt: skip
        time.sleep(before_s)
        mark = self.monitor.mark()
        t_action = time.time()
        victims = [f"aiobfd-{host}", f"exabgp-{host}", f"sink-{host}"]
        stopped: list[subprocess.Popen[bytes]] = []
        if variant == "drain":
            self.ctl(host, "drain", "--all", "--wait", str(drain_wait_ms))
            # The planned work starts once aiobfd has taken the sessions AdminDown.
            self._wait(lambda: self.session_states(host) == ["admin_down"],
                       drain_wait_ms / 1000 + 5, f"host {host} AdminDown")  # fmt: skip
            sink = self.procs.pop(f"sink-{host}")
            self.stop_process(sink)
        elif variant in ("term", "kill"):
            sig = signal.SIGTERM if variant == "term" else signal.SIGKILL
            stopped = [self.procs.pop(name) for name in victims]
            for proc in stopped:
                proc.send_signal(sig)
        else:
            self.fail(host, "link")
        gone = self.monitor.wait(mark, lambda e: not e.points_at(gateway), 15)
        for proc in stopped:
            self.stop_process(proc, 5)
        out, _ = sender.communicate(timeout=count / STREAM_RATE + 30)
        sent = json.loads(out)
        seen = self.received(first, count)
        got = set(seen["a"]) | set(seen["b"])
        lost = [q for q in range(first, first + count) if q not in got]

        def after_action(seq: int) -> float:
            """When packet `seq` was due to be sent, ms after the action started."""
            return (float(sent["start"]) + (seq - first) / STREAM_RATE - t_action) * 1000

        # Bring the host back.
        mark = self.monitor.mark()
        t_restore = time.time()
        if variant == "drain":
            self.start_sink(host)
            self.ctl(host, "undrain", "--all")
        elif variant in ("term", "kill"):
            with contextlib.suppress(FileNotFoundError):
                self.control_socket(host).unlink()  # a killed aiobfd leaves it
            self.start_sink(host)
            self.start_aiobfd(host)
            self.spawn(host, f"exabgp-{host}", "exabgp", str(self.rundir / f"exabgp-{host}.conf"),
                       env=self.exabgp_env(host))  # fmt: skip
        else:
            self.recover(host)
        back = self.monitor.wait(mark, lambda e: e.points_at(gateway), timeout)
        self.wait_steady(timeout)
        return LossRound(
            variant=variant,
            interval_ms=self.interval_ms,
            multiplier=self.multiplier,
            sent=int(sent["sent"]),
            lost=len(lost),
            lost_window_ms=(lost[-1] - lost[0] + 1) * 1000 / STREAM_RATE if lost else None,
            lost_from_ms=after_action(lost[0]) if lost else None,
            last_to_host_ms=after_action(seen[host][-1]) if seen[host] else None,
            withdrawn_ms=(gone.time - t_action) * 1000 if gone is not None else None,
            back_s=back.time - t_restore if back is not None else None,
            sender_late_ms=float(sent["late_ms"]),
            drain_wait_ms=drain_wait_ms if variant == "drain" else None,
        )

    # -- state -----------------------------------------------------------------------------

    def _wait(self, probe: Callable[[], T | None], timeout: float, what: str) -> T:
        def checked() -> T | None:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise LabError(f"{name} exited with {proc.returncode}\n{self.log_tails()}")
            return probe()

        try:
            return wait_until(checked, timeout, what, interval=0.02)
        except TimeoutError as exc:
            raise LabError(f"{exc}\n{self.log_tails()}") from None

    def log_tails(self) -> str:
        files = sorted(p for p in self.rundir.rglob("*") if p.suffix in (".log", ".out"))
        return "\n".join(log_tail(p, 15) for p in files)

    def established(self) -> set[str]:
        return {
            addr
            for addr, info in self.bgp_neighbors().items()
            if isinstance(info, dict) and info.get("bgpState") == "Established"
        }

    def steady(self) -> bool:
        """Both hosts in the FIB, BGP Established with both (and BFD Up with both)."""
        want = set(HOSTS.values())
        if self.fib() != want or self.established() != want:
            return False
        if self.bfd:
            # Up, and past the Poll Sequence that leaves the 1 s slow-start interval.
            peers = self.bfd_peers()
            return all(
                peers.get(a, {}).get("status") == "up"
                and peers[a].get("remote-transmit-interval") == self.interval_ms
                for a in want
            )
        return True

    def wait_steady(self, timeout: float = 60.0) -> None:
        self._wait(self.steady, timeout, f"the router to reach both hosts for {ROUTE}")

    # -- failures --------------------------------------------------------------------------

    def fail(self, host: str, mode: str) -> tuple[float, float]:
        """Make `host` fail in `mode` ('link', 'stop' or 'drop').

        Returns the wall-clock times (`time.time()`) just before and just after the
        action that makes the failure: the first is the reference for failover times.
        """
        if mode == "link":
            argv = ["ip", "-n", self.netns("s"), "link", "set", self.link("s", host), "down"]
            rules = None
        elif mode == "drop":
            dev = self.link(host, "s")
            argv = ["ip", "netns", "exec", self.netns(host), "nft", "-f", "-"]
            rules = (
                "table inet abfdx_drop {\n"
                f'  chain in {{ type filter hook input priority -300; iifname "{dev}" drop; }}\n'
                f'  chain out {{ type filter hook output priority -300; oifname "{dev}" drop; }}\n'
                "}\n"
            )
        elif mode == "stop":
            pids = self.pids(host)
            start = time.time()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
            self._failed[host] = mode
            return start, time.time()
        else:
            raise ValueError(f"unknown failure mode {mode!r}")
        start = time.time()
        proc = subprocess.run(argv, input=rules, capture_output=True, text=True, timeout=10)
        end = time.time()
        if proc.returncode != 0:
            raise CommandError(argv, proc.returncode, proc.stdout, proc.stderr)
        self._failed[host] = mode
        return start, end

    def recover(self, host: str) -> None:
        """Undo `fail(host, ...)`."""
        mode = self._failed.pop(host, None)
        if mode == "link":
            self.ip("s", f"link set {self.link('s', host)} up")
        elif mode == "stop":
            for pid in self.pids(host):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
        elif mode == "drop":
            self.run(host, "nft", "delete", "table", "inet", "abfdx_drop")

    def ask_anycast(self, timeout: float = 1.0) -> str | None:
        """Which host answers the client at the anycast address ('a', 'b'), or None."""
        proc = self.run(
            "c", sys.executable, "-c", _ASK, ANYCAST, str(timeout), check=False,
            timeout=timeout + 10,
        )  # fmt: skip
        answer = proc.stdout.strip()
        return answer if proc.returncode == 0 and answer in HOSTS else None

    def trial(
        self, mode: str, host: str = "a", fail_timeout: float | None = None,
        recover_timeout: float = 60.0, while_failed: Callable[[], None] | None = None,
    ) -> Trial:  # fmt: skip
        """Fail `host`, time the FIB update, recover it, time the route's return.

        `while_failed` is called once the FIB has dropped the host, before recovery.
        """
        assert self.monitor is not None
        gateway = HOSTS[host]
        if fail_timeout is None:
            fail_timeout = self.hold_s + 10.0
        self.wait_steady(recover_timeout)
        # Fail at a random instant: BGP-only failover depends on when the last
        # keepalive came (hold time minus 0-3 s), BFD's on the last packet's phase.
        time.sleep(random.uniform(0.5, 0.5 + (1.0 if self.bfd else self.keepalive_s)))
        self.wait_steady(recover_timeout)
        mark = self.monitor.mark()
        t_fail, t_done = self.fail(host, mode)
        action_s = t_done - t_fail
        gone = self.monitor.wait(mark, lambda e: not e.points_at(gateway), fail_timeout)
        failover = gone.time - t_fail if gone is not None else None
        if self.verbose:
            self.say(f"    failed at {t_fail:.6f} (action {action_s * 1000:.1f} ms); {gone}")
        if gone is not None and self.fib() != {HOSTS[h] for h in HOSTS if h != host}:
            # The FIB must now point at the other host only.
            raise LabError(f"unexpected FIB after failover: {self.fib()}")
        if while_failed is not None:
            while_failed()
        mark = self.monitor.mark()
        t_recover = time.time()
        self.recover(host)
        back = self.monitor.wait(mark, lambda e: e.points_at(gateway), recover_timeout)
        recovery = back.time - t_recover if back is not None else None
        if back is None:
            raise LabError(
                f"{ROUTE} did not return to {gateway} within {recover_timeout:g} s after"
                f" {mode} recovery\n{self.log_tails()}"
            )
        return Trial(mode, failover, recovery, action_s)


# -- the command line ----------------------------------------------------------------------


def run(
    modes: Sequence[str],
    trials: int,
    *,
    bfd: bool = True,
    interval_ms: int = 100,
    multiplier: int = 3,
    workdir: Path | None = None,
    say: Callable[[str], None] = print,
    verbose: bool = False,
) -> Results:
    """Build the lab, run `trials` trials of each mode on host a, tear it down."""
    results = Results(bfd, interval_ms, multiplier)
    started = time.monotonic()
    with AnycastLab(
        bfd=bfd, interval_ms=interval_ms, multiplier=multiplier, workdir=workdir, log=say,
        verbose=verbose,
    ) as lab:  # fmt: skip
        say(
            f"lab up in {time.monotonic() - started:.1f} s: {ROUTE} via {sorted(lab.fib())};"
            f" the client's query to {ANYCAST} is answered by host {lab.ask_anycast()}"
        )
        for mode in modes:
            for i in range(1, trials + 1):
                trial = lab.trial(mode)
                results.trials.append(trial)
                fo = (
                    f"{trial.failover_s * 1000:7.0f} ms"
                    if trial.failover_s is not None
                    else "missed"
                )
                rc = f"{trial.recovery_s:.1f} s" if trial.recovery_s is not None else "-"
                say(f"  {mode:4} {i:2}/{trials}: failover {fo}, route back after {rc}")
    return results


def run_loss(
    variants: Sequence[str],
    rounds: int,
    *,
    interval_ms: int = 100,
    multiplier: int = 3,
    drain_wait_ms: int = 2000,
    workdir: Path | None = None,
    say: Callable[[str], None] = print,
) -> list[LossRound]:
    """Build the lab, run `rounds` rounds of each variant on host a under the client's
    stream (see `AnycastLab.loss_round`), tear it down."""
    out: list[LossRound] = []
    started = time.monotonic()
    with AnycastLab(
        interval_ms=interval_ms, multiplier=multiplier, workdir=workdir, log=say
    ) as lab:
        say(f"lab up in {time.monotonic() - started:.1f} s: {ROUTE} via {sorted(lab.fib())}")
        for i in range(1, rounds + 1):
            for variant in variants:
                r = lab.loss_round(variant, drain_wait_ms=drain_wait_ms, first=len(out) * 10**6)
                out.append(r)
                say(
                    f"  {variant:5} {i}/{rounds}: lost {r.lost}/{r.sent}"
                    f" (window {r.lost_window_ms} ms), FIB without host a after"
                    f" {r.withdrawn_ms and round(r.withdrawn_ms)} ms, last packet to it at"
                    f" {r.last_to_host_ms and round(r.last_to_host_ms)} ms"
                )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "-n",
        "--trials",
        type=int,
        default=None,
        help="trials per failure mode (default 20 with BFD, 5 without)",
    )
    parser.add_argument(
        "--modes",
        default=",".join(MODES),
        help=f"comma-separated failure modes (default {','.join(MODES)})",
    )
    parser.add_argument(
        "--no-bfd",
        dest="bfd",
        action="store_false",
        help="BGP only: no BFD, keepalive 3 s / hold time 9 s",
    )
    parser.add_argument(
        "--both",
        action="store_true",
        help="run with BFD, then without (with --trials-no-bfd trials)",
    )
    parser.add_argument(
        "--trials-no-bfd",
        type=int,
        default=5,
        help="trials per mode without BFD when --both (default 5)",
    )
    parser.add_argument(
        "-i",
        "--interval",
        type=int,
        default=100,
        metavar="MS",
        help="BFD interval, ms (default 100)",
    )
    parser.add_argument(
        "-m", "--multiplier", type=int, default=3, help="BFD detect multiplier (default 3)"
    )
    parser.add_argument(
        "--keep", type=Path, metavar="DIR", help="copy configs and logs into DIR at the end"
    )
    parser.add_argument(
        "--loss",
        metavar="VARIANTS",
        help="instead of the FIB failover trials: a client's stream of"
        f" {STREAM_RATE} packets/s while host a goes, counting lost packets; comma-separated"
        f" from {','.join(LOSS_VARIANTS)} (default rounds: 3)",
    )
    parser.add_argument(
        "--drain-wait",
        type=int,
        default=2000,
        metavar="MS",
        help="with --loss drain: aiobfdctl drain --wait MS (default 2000)",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the results as JSON")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="print each trial's route event"
    )
    args = parser.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    if bad := [m for m in modes if m not in MODES]:
        parser.error(f"unknown mode(s) {bad}; choose from {', '.join(MODES)}")
    if os.geteuid() != 0:
        parser.error("run as root (network namespaces)")
    if missing := missing_tools(*TOOLS):
        parser.error(f"missing {', '.join(missing)} (apt-get install frr exabgp nftables)")
    if args.loss is not None:
        variants = [v for v in args.loss.split(",") if v]
        if bad := [v for v in variants if v not in LOSS_VARIANTS]:
            parser.error(f"unknown variant(s) {bad}; choose from {', '.join(LOSS_VARIANTS)}")
        print(f"== loss, BFD {args.interval} ms x {args.multiplier}: {', '.join(variants)}")
        rounds = run_loss(
            variants, args.trials or 3, interval_ms=args.interval, multiplier=args.multiplier,
            drain_wait_ms=args.drain_wait, workdir=args.keep,
            say=lambda s: print(s, flush=True),
        )  # fmt: skip
        print(loss_table(rounds), flush=True)
        if args.json:
            args.json.write_text(json.dumps([r.__dict__ for r in rounds], indent=2) + "\n")
        return 0
    runs = [(True, args.trials or 20), (False, args.trials_no_bfd)] if args.both else [
        (args.bfd, args.trials or (20 if args.bfd else 5))
    ]  # fmt: skip
    everything = []
    tables = []
    for bfd, n in runs:
        label = f"BFD {args.interval} ms x {args.multiplier}" if bfd else "BGP only (3 s / 9 s)"
        print(f"== {label}: {n} trial(s) per mode: {', '.join(modes)}", flush=True)
        keep = args.keep / ("bfd" if bfd else "bgp") if args.keep else None
        results = run(
            modes, n, bfd=bfd, interval_ms=args.interval, multiplier=args.multiplier,
            workdir=keep, say=lambda s: print(s, flush=True), verbose=args.verbose,
        )  # fmt: skip
        tables.append(results.table())
        print(tables[-1], flush=True)
        everything.append(results.as_json())
    if len(tables) > 1:
        print("\n== all results\n" + "\n\n".join(tables), flush=True)
    if args.json:
        args.json.write_text(json.dumps(everything, indent=2) + "\n")
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)  # so that `kill` still cleans up
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
    raise SystemExit(130)


__all__ = [
    "AnycastLab",
    "LabError",
    "LossRound",
    "Results",
    "RouteEvent",
    "Trial",
    "loss_table",
    "missing_tools",
    "run",
    "run_loss",
]
