"""Starvation: an established BFD pair at 50 ms x 3 on a host whose CPU is taken (root only).

Issue 18, case 6: "both daemons at nice 19 beside four busy loops: 8 flaps at
50 ms x 3". Two network namespaces made by ``aiobfd.lab`` (host 198.51.100.1
<-> peer 198.51.100.2 over a veth pair). The daemon under test (DUT) runs in
'host', pinned to CPU 0, where the load is; its peer runs in 'peer', pinned to
CPU 1, unloaded. Once the session is Up at the configured intervals, the load
runs for ``--duration`` seconds (default 20) and the bench reports:

* flaps: Down events of either side (``session_down`` of ``aiobfdctl show
  session``; for FRR, ``session-down`` of ``show bfd peers counters json``);
* the largest gap between the DUT's packets as they reach the peer's veth, only
  gaps that follow a packet in which the DUT said Up (an AF_PACKET socket in
  the peer namespace, kernel timestamps): how long the DUT fell silent while Up;
  and how many such gaps exceeded the Detection Time;
* ``max_rx_gap_ms`` of our daemons (the largest gap between packets taken while
  Up; it starts again at each Up, so after a flap it covers only the last Up);
* the DUT's CPU (user + system, % of one core) and how long its main thread
  waited on a run queue (``/proc/PID/schedstat``), over the window.

The cases:

* ``baseline``: ours vs ours, no load;
* ``nice``, ``nice-rt``: both daemons at nice 19, four SCHED_OTHER busy loops
  (``taskset -c 0 python3 -c 'while 1: pass'``) on CPU 0; ``nice-rt`` starts
  the DUT with ``--realtime-priority 10``;
* ``fifo``, ``fifo-rt``: one SCHED_FIFO priority 1 busy loop on CPU 0 (``chrt
  -f 1``), which leaves SCHED_OTHER tasks only what the kernel's real-time
  throttling keeps for them (``kernel.sched_rt_runtime_us`` 950000 of each
  second's 1000000: 5 %); ``fifo-rt`` starts the DUT with ``--realtime-priority 10``;
* ``frr-baseline``, ``frr-fifo``, ``frr-fifo-chrt``: FRR's bfdd (and its zebra)
  as the DUT on CPU 0, our daemon as the peer on CPU 1; no load, then the same
  SCHED_FIFO loop; ``frr-fifo-chrt`` puts bfdd's threads under ``chrt -f 10``
  as an operator could (FRR has no real-time setting of its own).

The daemons and the busy loops run in this process's session: with
``kernel.sched_autogroup_enabled=1`` (as on the test VM) nice orders tasks only
within one session's autogroup, so loops and daemons in sessions of their own
would each get an equal share whatever their nice. SCHED_FIFO is not touched
by autogroups.

    python bench/starvation.py                          # every case once (about 3 min)
    python bench/starvation.py --case fifo --case fifo-rt --runs 2
    python bench/starvation.py --case nice -d 30 --loops 4
    python bench/starvation.py cleanup                  # what a killed run left

Every run appends one JSON line to ``--results`` (default
bench/results/starvation.jsonl) and the end prints a Markdown table. The busy
loops are killed by pid when the window ends, the bench fails or gets SIGTERM or
Ctrl-C (the lab, its namespaces and daemons go too); each loop also dies with
the bench (PR_SET_PDEATHSIG, for SIGKILL: then ``cleanup`` removes the rest) and
ends by itself ``--duration`` + 30 s after it started. Needs root, iproute2,
taskset, chrt and, for the frr cases, FRR (``apt-get install frr``).
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiobfd.client import ClientError
from aiobfd.lab import (
    FrrInstance,
    FrrSession,
    Lab,
    LabError,
    Naming,
    OurDaemon,
    cleanup_stale,
    daemon_env,
    frr_version,
    run,
    wait_until,
)

NAMING = Naming("abfdv-", "av")
"""Namespaces 'abfdv-<tag>h' and 'abfdv-<tag>p', links 'av<tag>h' and 'av<tag>p'."""
RESULTS = Path(__file__).resolve().parent / "results" / "starvation.jsonl"
CLK_TCK = os.sysconf("SC_CLK_TCK")
Json = dict[str, Any]


@dataclass(frozen=True)
class Case:
    name: str
    dut: str
    """'ours' or 'frr'."""
    load: str
    """'none', 'nice' (SCHED_OTHER busy loops, daemons at nice 19) or 'fifo'."""
    realtime: bool = False
    """Ours: --realtime-priority on the DUT. FRR: chrt -f on bfdd's threads."""
    what: str = ""


CASES = {
    c.name: c
    for c in (
        Case("baseline", "ours", "none", what="ours vs ours, no load"),
        Case("nice", "ours", "nice", what="nice 19, SCHED_OTHER busy loops"),
        Case("nice-rt", "ours", "nice", True, "nice 19, busy loops, --realtime-priority"),
        Case("fifo", "ours", "fifo", what="SCHED_FIFO busy loop"),
        Case("fifo-rt", "ours", "fifo", True, "SCHED_FIFO busy loop, --realtime-priority"),
        Case("frr-baseline", "frr", "none", what="FRR bfdd as DUT, no load"),
        Case("frr-fifo", "frr", "fifo", what="FRR bfdd as DUT, SCHED_FIFO busy loop"),
        Case("frr-fifo-chrt", "frr", "fifo", True, "FRR bfdd under chrt -f, SCHED_FIFO loop"),
    )
}

BUSY_LOOP = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass\n"
"""A busy loop that ends by itself, should everything else fail to stop it."""

SNIFFER = r"""
import json, select, socket, struct, sys, time
ifname, src, seconds, detect_ms = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
SO_TIMESTAMPNS = 35
sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
sock.bind((ifname, 0x0800))
sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
srcb = socket.inet_aton(src)
end = time.monotonic() + seconds
packets = up_packets = over = 0
last = last_up = None
max_gap = max_up_gap = 0.0
print("ready", flush=True)
while (left := end - time.monotonic()) > 0:
    if not select.select([sock], [], [], left)[0]:
        break
    data, anc, _, addr = sock.recvmsg(2048, 64)
    if addr[2] == socket.PACKET_OUTGOING or len(data) < 28:
        continue
    ihl = (data[0] & 15) * 4
    if data[9] != 17 or data[12:16] != srcb or len(data) < ihl + 10:
        continue
    if struct.unpack_from("!H", data, ihl + 2)[0] != 3784:
        continue
    ts = time.time()
    for level, kind, value in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            sec, nsec = struct.unpack("qq", value[:16])
            ts = sec + nsec / 1e9
    packets += 1
    if last is not None:
        max_gap = max(max_gap, ts - last)
    if last_up is not None:
        gap = ts - last_up
        max_up_gap = max(max_up_gap, gap)
        over += gap * 1000 > detect_ms
    last = ts
    up = data[ihl + 9] >> 6 == 3
    up_packets += up
    last_up = ts if up else None
print(json.dumps({"packets": packets, "up_packets": up_packets,
                  "max_gap_ms": round(max_gap * 1000, 1),
                  "max_up_gap_ms": round(max_up_gap * 1000, 1),
                  "up_gaps_over_detect": over}), flush=True)
"""
"""Run in the peer namespace: the gaps between the DUT's BFD packets on the peer's veth.
A gap counts as 'while Up' when the packet before it said state Up (Sta = 3)."""


# ------------------------------------------------------------------ /proc


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def run_queue_wait_s(pid: int) -> float:
    """Seconds the process's main thread has waited on a run queue (schedstat)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9


def cpu_busy_ticks(cpu: int) -> tuple[int, int]:
    """(busy, total) ticks of one CPU from /proc/stat."""
    for line in Path("/proc/stat").read_text().splitlines():
        name, *vals = line.split()
        if name == f"cpu{cpu}":
            v = [int(x) for x in vals[:8]]
            return sum(v) - v[3] - v[4], sum(v)
    raise LabError(f"no cpu{cpu} in /proc/stat")


def policy_name(pid: int) -> str:
    """The main thread's scheduling policy and priority, as chrt would say it."""
    policy = os.sched_getscheduler(pid) & ~getattr(os, "SCHED_RESET_ON_FORK", 0x40000000)
    names = {os.SCHED_OTHER: "other", os.SCHED_FIFO: "fifo", os.SCHED_RR: "rr"}
    prio = os.sched_getparam(pid).sched_priority
    return f"{names.get(policy, str(policy))}/{prio}" if prio else names.get(policy, str(policy))


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the bench dies (PR_SET_PDEATHSIG)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)


# ------------------------------------------------------------------ the pair


@dataclass
class Options:
    duration: float
    interval_ms: int
    mult: int
    dut_cpu: int
    peer_cpu: int
    loops_nice: int
    loop_priority: int
    realtime: int
    nice: int
    event_loop: str
    settle: float = 1.0


@dataclass
class Result:
    case: str
    what: str
    dut: str
    duration_s: float
    interval_ms: int
    mult: int
    flaps: int = 0
    dut_downs: int = 0
    peer_downs: int = 0
    dut_detection_expiries: int | None = None
    peer_detection_expiries: int | None = None
    dut_state_after: str = ""
    peer_state_after: str = ""
    wire: Json = field(default_factory=dict)
    dut_max_rx_gap_ms: float | None = None
    peer_max_rx_gap_ms: float | None = None
    dut_cpu_pct: float = 0.0
    dut_run_queue_wait_s: float = 0.0
    cpu0_busy_pct: float = 0.0
    dut_policy: str = ""
    loops: list[str] = field(default_factory=list)
    when: str = ""
    host: str = ""
    frr: str = ""
    error: str = ""


class Pair:
    """The DUT in 'host' (our daemon or FRR's bfdd) and our daemon in 'peer'."""

    def __init__(self, lab: Lab, case: Case, opts: Options) -> None:
        self.lab, self.case, self.opts = lab, case, opts
        niceness = opts.nice if case.load == "nice" else 0
        timers = ["-r", str(opts.interval_ms), "-t", str(opts.interval_ms), "-m", str(opts.mult)]
        common = [*timers, "--event-loop", opts.event_loop]
        self.peer = OurDaemon(lab, "peer", lab.peer.ipv4, [lab.host.ipv4], *common,
                              name="peer", log_level="INFO")  # fmt: skip
        self.peer_proc = self._start(self.peer, opts.peer_cpu, niceness)
        self.dut: OurDaemon | None = None
        self.frr: FrrInstance | None = None
        if case.dut == "ours":
            rt = ["--realtime-priority", str(opts.realtime)] if case.realtime else []
            self.dut = OurDaemon(lab, "host", lab.host.ipv4, [lab.peer.ipv4], *common, *rt,
                                 name="dut", log_level="INFO")  # fmt: skip
            self.dut_pid = self._start(self.dut, opts.dut_cpu, niceness).pid
        else:
            self.dut_pid = self._start_frr()

    def _start(self, daemon: OurDaemon, cpu: int, niceness: int) -> subprocess.Popen[bytes]:
        """OurDaemon.start, pinned and niced, in this session (see the module docstring)."""
        daemon.proc = self.lab.popen(daemon.ns, *daemon.argv, log=daemon.log,
                                     extra_env=daemon_env(), cpu=cpu, nice=niceness,
                                     start_new_session=False)  # fmt: skip
        daemon.wait(lambda: daemon.sessions() is not None, 15, "control socket")
        return daemon.proc

    def _start_frr(self) -> int:
        frr = FrrInstance(self.lab, "host", self.lab.rundir / "frr", cpu=self.opts.dut_cpu)
        session = FrrSession(self.lab.peer.ipv4, self.lab.host.ipv4, self.opts.interval_ms,
                             self.opts.interval_ms, self.opts.mult)  # fmt: skip
        frr.write_configs({"zebra": "", "bfdd": f"bfd\n{session.config()}\n!\n"})
        frr.spawn("zebra")
        wait_until(frr.zebra_ready, 10, "zebra's socket", 0.1)
        bfdd = frr.spawn("bfdd")
        wait_until(lambda: _try(frr.bfd_peers), 10, "bfdd to list its peer", 0.1)
        self.frr = frr
        if self.case.realtime:
            run("chrt", "-a", "-f", "-p", str(self.opts.realtime), str(bfdd.pid))
        return bfdd.pid

    # -- state and counters

    def _ours(self, daemon: OurDaemon, remote: str) -> Json:
        return daemon.session(remote)

    def dut_session(self) -> Json:
        """The DUT's view: state, session_down, detection_expiries, max_rx_gap_ms."""
        if self.dut is not None:
            s = self._ours(self.dut, self.lab.peer.ipv4)
            c = s["counters"]
            return {"state": s["state"], "down": c["session_down"],
                    "expiries": c["detection_expiries"], "gap": s["max_rx_gap_ms"],
                    "tx": s["tx_interval_ms"]}  # fmt: skip
        assert self.frr is not None
        [peer] = [p for p in self.frr.bfd_peers() if p["peer"] == self.lab.peer.ipv4]
        [count] = [c for c in self.frr.bfd_counters() if c["peer"] == self.lab.peer.ipv4]
        return {"state": peer["status"], "down": count["session-down"], "expiries": None,
                "gap": None, "tx": peer.get("transmit-interval")}  # fmt: skip

    def peer_session(self) -> Json:
        s = self._ours(self.peer, self.lab.host.ipv4)
        c = s["counters"]
        return {"state": s["state"], "down": c["session_down"],
                "expiries": c["detection_expiries"], "gap": s["max_rx_gap_ms"],
                "tx": s["tx_interval_ms"]}  # fmt: skip

    def wait_up(self, timeout: float = 20.0) -> None:
        """Both sides Up, transmitting at the configured interval (the poll is over)."""

        def up() -> bool:
            d, p = self.dut_session(), self.peer_session()
            return (d["state"] == "up" and p["state"] == "up"
                    and p["tx"] == self.opts.interval_ms
                    and d["tx"] in (None, self.opts.interval_ms))  # fmt: skip

        wait_until(lambda: _try(up), timeout, "the pair to come Up", 0.1)


def _try(probe: Callable[[], Any]) -> Any:
    """`probe()`, or None when a daemon is not answering yet."""
    try:
        return probe()
    except (ClientError, LabError, OSError, ValueError, KeyError):
        return None


# ------------------------------------------------------------------ the load


def start_loops(lab: Lab, case: Case, opts: Options, loops: list[subprocess.Popen[bytes]]) -> None:
    """Start the busy loops of the case, pinned to the DUT's CPU, in this session, and
    add each to `loops` as soon as it runs (so that a failure halfway still stops it)."""
    if case.load == "none":
        return
    code = BUSY_LOOP.format(seconds=opts.duration + 30)
    if case.load == "nice":
        argv: list[str] = [sys.executable, "-c", code]
        count = opts.loops_nice
    else:
        argv = ["chrt", "-f", str(opts.loop_priority), sys.executable, "-c", code]
        count = 1
    for _ in range(count):
        loops.append(lab.popen("host", *argv, cpu=opts.dut_cpu, nice=0,
                               start_new_session=False, preexec_fn=_die_with_parent))  # fmt: skip


def stop_loops(loops: list[subprocess.Popen[bytes]]) -> None:
    """SIGKILL each busy loop by its pid and reap it."""
    for proc in loops:
        if proc.poll() is None:
            proc.kill()
    for proc in loops:
        proc.wait(10)


# ------------------------------------------------------------------ a run


def run_case(case: Case, opts: Options) -> Result:
    """One run of a case in a lab of its own; errors end up in `Result.error`."""
    res = Result(case.name, case.what, case.dut, opts.duration, opts.interval_ms, opts.mult)
    res.when = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    res.host = platform.node()
    if case.dut == "frr":
        res.frr = frr_version()
    try:
        with Lab(NAMING) as lab:
            measure(lab, case, opts, res)
    except (
        ClientError,
        LabError,
        subprocess.SubprocessError,
        OSError,
        ValueError,
        KeyError,
    ) as exc:
        res.error = f"{type(exc).__name__}: {exc}"
    return res


def measure(lab: Lab, case: Case, opts: Options, res: Result) -> None:
    """Start the pair, wait for Up, run the load for the duration, fill in `res`."""
    pair = Pair(lab, case, opts)
    pair.wait_up()
    time.sleep(opts.settle)
    d0, p0 = pair.dut_session(), pair.peer_session()
    res.dut_policy = policy_name(pair.dut_pid)
    detect_ms = opts.interval_ms * opts.mult
    sniffer = lab.popen("peer", sys.executable, "-c", SNIFFER, lab.peer.ifname, lab.host.ipv4,
                        str(opts.duration), str(detect_ms), cpu=opts.peer_cpu,
                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
    assert sniffer.stdout is not None
    if sniffer.stdout.readline().strip() != b"ready":
        raise LabError("the sniffer did not start")
    cpu0, wait0, busy0 = (proc_cpu_s(pair.dut_pid), run_queue_wait_s(pair.dut_pid),
                          cpu_busy_ticks(opts.dut_cpu))  # fmt: skip
    t0 = time.monotonic()
    loops: list[subprocess.Popen[bytes]] = []
    try:
        start_loops(lab, case, opts, loops)
        res.loops = [policy_name(p.pid) for p in loops]
        time.sleep(max(0.0, opts.duration - (time.monotonic() - t0)))
    finally:
        stop_loops(loops)
    elapsed = time.monotonic() - t0
    cpu1, wait1, busy1 = (proc_cpu_s(pair.dut_pid), run_queue_wait_s(pair.dut_pid),
                          cpu_busy_ticks(opts.dut_cpu))  # fmt: skip
    out, _ = sniffer.communicate(timeout=opts.duration + 10)
    res.wire = json.loads(out.decode().strip().splitlines()[-1])
    d1, p1 = pair.dut_session(), pair.peer_session()
    res.dut_downs = d1["down"] - d0["down"]
    res.peer_downs = p1["down"] - p0["down"]
    res.flaps = res.dut_downs + res.peer_downs
    if d1["expiries"] is not None:
        res.dut_detection_expiries = d1["expiries"] - d0["expiries"]
    res.peer_detection_expiries = p1["expiries"] - p0["expiries"]
    res.dut_state_after, res.peer_state_after = d1["state"], p1["state"]
    res.dut_max_rx_gap_ms, res.peer_max_rx_gap_ms = d1["gap"], p1["gap"]
    res.dut_cpu_pct = round(100 * (cpu1 - cpu0) / elapsed, 2)
    res.dut_run_queue_wait_s = round(wait1 - wait0, 3)
    res.cpu0_busy_pct = round(100 * (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]), 1)


def row(r: Result) -> str:
    if r.error:
        return f"| {r.case} | error: {r.error.splitlines()[0]} |"
    gap = r.wire.get("max_up_gap_ms", "-")
    over = r.wire.get("up_gaps_over_detect", "-")
    dgap = "-" if r.dut_max_rx_gap_ms is None else f"{r.dut_max_rx_gap_ms:g}"
    pgap = "-" if r.peer_max_rx_gap_ms is None else f"{r.peer_max_rx_gap_ms:g}"
    return (
        f"| {r.case} | {r.flaps} ({r.dut_downs} / {r.peer_downs}) | {gap} ({over}) | {dgap} | "
        f"{pgap} | {r.dut_cpu_pct:.1f} % | {r.dut_run_queue_wait_s:.2f} s | "
        f"{r.dut_policy} | {r.cpu0_busy_pct:.0f} % |"
    )


HEADER = (
    "| case | flaps (DUT / peer Down) | largest gap of the DUT's packets while Up, ms "
    "(gaps > Detection Time) | DUT max_rx_gap, ms | peer max_rx_gap, ms | DUT CPU | "
    "DUT run-queue wait | DUT policy | CPU 0 busy |\n|---|---|---|---|---|---|---|---|---|"
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("action", nargs="?", choices=("run", "cleanup"), default="run")
    ap.add_argument("--case", action="append", choices=sorted(CASES),
                    help="a case to run (repeatable; default: every case)")  # fmt: skip
    ap.add_argument("-d", "--duration", type=float, default=20.0, help="seconds of load")
    ap.add_argument("--runs", type=int, default=1, help="runs of each case")
    ap.add_argument("-i", "--interval", type=int, default=50, help="ms, both directions")
    ap.add_argument("-m", "--mult", type=int, default=3)
    ap.add_argument("--dut-cpu", type=int, default=0)
    ap.add_argument("--peer-cpu", type=int, default=1)
    ap.add_argument("--loops", type=int, default=4, help="SCHED_OTHER loops of the nice cases")
    ap.add_argument("--loop-priority", type=int, default=1, help="SCHED_FIFO loop's priority")
    ap.add_argument("--realtime", type=int, default=10, help="the DUT's real-time priority")
    ap.add_argument("--nice", type=int, default=19, help="the daemons' nice in the nice cases")
    ap.add_argument("--event-loop", default="auto", choices=("auto", "asyncio", "uvloop"))
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("starvation.py needs root (network namespaces, SCHED_FIFO)", file=sys.stderr)
        return 2
    removed = cleanup_stale(NAMING)
    if removed or args.action == "cleanup":
        print(f"removed: {removed}", file=sys.stderr)
    if args.action == "cleanup":
        return 0
    opts = Options(args.duration, args.interval, args.mult, args.dut_cpu, args.peer_cpu,
                   args.loops, args.loop_priority, args.realtime, args.nice,
                   args.event_loop)  # fmt: skip
    # SIGTERM unwinds like Ctrl-C: the busy loops are killed and the lab is removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # The bench itself (clients, the sniffer) stays off the loaded CPU.
    os.sched_setaffinity(0, {args.peer_cpu})
    rt = Path("/proc/sys/kernel/sched_rt_runtime_us").read_text().strip()
    period = Path("/proc/sys/kernel/sched_rt_period_us").read_text().strip()
    autogroup = Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip()
    print(f"kernel {platform.release()}, sched_rt_runtime_us {rt} of {period}, "
          f"autogroup {autogroup}", file=sys.stderr)  # fmt: skip
    results = []
    args.results.parent.mkdir(parents=True, exist_ok=True)
    for name in args.case or list(CASES):
        for _ in range(args.runs):
            res = run_case(CASES[name], opts)
            results.append(res)
            print(row(res), file=sys.stderr, flush=True)
            with args.results.open("a") as f:
                f.write(json.dumps({**asdict(res), "sched_rt_runtime_us": int(rt),
                                    "kernel": platform.release()}) + "\n")  # fmt: skip
    print(HEADER)
    for res in results:
        print(row(res))
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
