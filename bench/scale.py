"""Scale benchmark: N BFD sessions between two network namespaces (root only).

Our daemon (``python -m aiobfd``), on uvloop (``ours-uvloop``), or the original
aiobfd 0.2 (``aiobfd02``, one process with N remotes) runs in one namespace,
pinned to CPU 0; the peer (FRR's bfdd, or our daemon) in the other, pinned to
CPU 1.  Per run it reports sessions, interval, multiplier, duration, CPU of each
daemon (user and system apart, seconds per wall second from /proc/PID/stat),
RSS, packets per second, false flaps (session Down events while nothing was done
to the path) and, for our daemon, detection latency: a peer is silenced with an
nftables drop at a recorded instant, and

    lateness = our Down event - last packet received - negotiated Detection Time

from our daemon's own CLOCK_MONOTONIC timestamps (``show session``).

    python bench/scale.py run --dut ours --peer frr -n 100 -i 50 -d 30 --trials 20
    python bench/scale.py side-by-side            # the issue's points, ratios (~10 min)
    python bench/scale.py sweep -i 100 -n 10,25,50,100,200 --duts ours,aiobfd02
    python bench/scale.py curve -d 30 --trials 20   # ours vs ours at 1,000-5,000, the floor beside
    python bench/scale.py plot                     # PNGs under docs/img/
    python bench/scale.py cleanup                  # namespaces left by a killed run

Every run appends one JSON line to the results file (default
bench/results/scale.jsonl) and prints a table row.  Needs: root, iproute2,
nftables, taskset, FRR (``apt-get install frr``) for ``--peer frr``, and for
``aiobfd02`` a virtual environment with ``aiobfd 'bitstring<4'`` (made under
/tmp on first use).  Pictures need matplotlib (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import datetime as dt
import functools
import json
import os
import platform
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from aiobfd.lab import LabError, cleanup_stale, frr_version, wait_until

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling modules below

from floor import ksoftirqd_pids
from scalelab import (
    NAMING,
    Frr,
    Pair,
    ScaleLab,
    cpu_busy,
    cpu_stat,
    ctl_request,
    proc_rss_kb,
    proc_sched,
    proc_times,
    softnet_drops,
    udp_errors,
)

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
DEFAULT_RESULTS = BENCH / "results" / "scale.jsonl"
AIOBFD02_VENV = Path("/tmp/aiobfd02-venv")
DUTS = ("ours", "ours-uvloop", "aiobfd02")
PEERS = ("frr", "ours", "ours-uvloop")
DUT_CPU, PEER_CPU = 0, 1
METRICS_PORT = 13784
NAMES = {
    "ours": "aiobfd (this)",
    "ours-uvloop": "aiobfd (this, uvloop)",
    "aiobfd02": "aiobfd 0.2",
    "frr": "FRR bfdd",
}


class Interrupted(Exception):
    """SIGTERM: unwind and clean up as for Ctrl-C."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Interrupted()


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class RunSpec:
    dut: str = "ours"
    peer: str = "frr"
    sessions: int = 10
    interval_ms: int = 300
    mult: int = 3
    duration_s: float = 30.0
    trials: int = 0
    per_trial: int = 1
    """Peers silenced at once in each round of detection trials."""
    family: str = "auto"
    locals: str = "one"
    """'one': our side has one address, N remotes (as `aiobfd LOCAL REMOTE...`);
    'many': one local address per session (a TOML config file)."""
    settle_s: float = 3.0
    label: str = ""
    suite: str = "run"
    up_timeout_s: float = 0.0
    """0: 20 s plus 20 ms per session."""

    def point(self) -> str:
        return f"{self.sessions} @ {self.interval_ms} ms x{self.mult}"


# ------------------------------------------------------------------ daemons


class Daemon:
    """One BFD daemon process in a lab namespace, with what we can read from it."""

    kind = ""

    def __init__(self, lab: ScaleLab, role: str, spec: RunSpec, cpu: int) -> None:
        self.lab = lab
        self.role = role  # "dut" or "peer"
        self.spec = spec
        self.cpu = cpu
        self.ns = lab.host_ns if role == "dut" else lab.peer_ns
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = lab.rundir / f"{role}.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        raise NotImplementedError

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            tail = (
                self.log.read_text(errors="replace").splitlines()[-15:] if self.log.exists() else []
            )
            raise LabError(
                f"{self.kind} ({self.role}) exited with {self.proc.returncode}:\n" + "\n".join(tail)
            )

    def up_count(self) -> int | None:
        """Sessions Up as this daemon sees them, or None if it cannot tell."""
        return None

    def snapshot(self) -> dict[str, Any] | None:
        """Counter totals: pkts_in, pkts_out, downs, ups, up (None if not available)."""
        return None

    def cpu_pids(self) -> list[int]:
        return [self.pid]

    def sched(self) -> tuple[float, float]:
        """(seconds on CPU, seconds waiting on a run queue) of the daemon."""
        return proc_sched(self.pid)

    def rss_kb(self) -> int:
        return proc_rss_kb(self.pid)


class Ours(Daemon):
    kind = "ours"

    def __init__(
        self,
        lab: ScaleLab,
        role: str,
        spec: RunSpec,
        cpu: int,
        uvloop: bool,
        pairs: list[Pair] | None = None,
        name: str = "",
    ) -> None:
        super().__init__(lab, role, spec, cpu)
        self.kind = "ours-uvloop" if uvloop else "ours"
        self.uvloop = uvloop
        self.pairs = lab.pairs if pairs is None else pairs
        """The sessions of this process (a shard of the peer side: all but a slice)."""
        self.name = name or role
        """Its files under the run directory: NAME.sock, NAME.log, NAME.toml."""
        self.socket = lab.rundir / f"{self.name}.sock"
        self.log = lab.rundir / f"{self.name}.log"
        self.core_site: Path | None = None
        """Where a compiled build of ours is installed (--core mypyc); None: this tree."""
        self.ready_s = 0.0
        """Seconds from the start to the control socket's first answer."""
        self.from_file = False
        """Configure the daemon under test by a file (as the peer side always is)."""
        self.nofile = 0
        """Start it with this hard RLIMIT_NOFILE (0: inherited)."""
        self.realtime = 0
        """Run its loop at this SCHED_FIFO priority (--realtime-priority; 0: not)."""
        self.lateness = False
        """Serve /metrics (in the daemon's namespace) to read its timer lateness histograms."""

    @property
    def event_loop(self) -> str:
        return "uvloop" if self.uvloop else "asyncio"

    @property
    def core(self) -> str:
        return "python" if self.core_site is None else "mypyc"

    def argv(self) -> list[str]:
        spec, lab = self.spec, self.lab
        metrics = str(METRICS_PORT) if self.lateness else "0"
        tail = ["--metrics-port", metrics, "--control-socket", str(self.socket)]
        if self.realtime:
            tail += ["--realtime-priority", str(self.realtime)]
        if has_event_loop_option():
            # The daemon picks uvloop by itself when it is installed: say which one.
            head = [sys.executable, "-m", "aiobfd"]
            tail += ["--event-loop", self.event_loop]
        elif self.uvloop:
            head = [sys.executable, str(BENCH / "uvloop_main.py")]
        else:
            head = [sys.executable, "-m", "aiobfd"]
        if self.nofile:
            head = ["prlimit", f"--nofile={self.nofile}:{self.nofile}", "--", *head]
        one_local = self.role == "dut" and not lab.many_locals
        if one_local and not self.from_file:
            i = str(spec.interval_ms)
            return [
                *head,
                self.pairs[0].host,
                *(p.peer for p in self.pairs),
                "-r",
                i,
                "-t",
                i,
                "-m",
                str(spec.mult),
                *tail,
            ]
        # Several local addresses (or a reload to come): a configuration file.
        return [*head, "--config", str(self.write_config()), *tail]

    def write_config(self, changed: int | None = None) -> Path:
        """The daemon's configuration file; ``changed``: that session (an index
        into its pairs) with a detection multiplier one higher."""
        spec = self.spec
        lines = [
            "[defaults]",
            f"rx_interval_ms = {spec.interval_ms}",
            f"tx_interval_ms = {spec.interval_ms}",
            f"detect_mult = {spec.mult}",
        ]
        for k, p in enumerate(self.pairs):
            local, remote = (p.host, p.peer) if self.role == "dut" else (p.peer, p.host)
            lines += ["[[peers]]", f'local = "{local}"', f'remote = "{remote}"']
            if k == changed:
                lines.append(f"detect_mult = {spec.mult + 1}")
        conf = self.lab.rundir / f"{self.name}.toml"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def reload(self, timeout: float = 60) -> dict[str, Any]:
        return dict(ctl_request(self.socket, {"command": "reload"}, timeout)["reload"])

    def start(self) -> None:
        env = None
        if self.core_site is not None:
            env = {**os.environ, "PYTHONPATH": str(self.core_site)}
        self.proc = self.lab.popen(self.ns, *self.argv(), cpu=self.cpu, log=self.log, env=env)

        def ready() -> bool:
            self.check_alive()
            try:
                ctl_request(self.socket, {"command": "version"}, timeout=5)
            except (OSError, LabError, ValueError):
                return False
            return True

        t0 = time.monotonic()
        wait_until(
            ready, 30 + self.spec.sessions / 50, f"{self.kind} ({self.name}) control socket", 0.1
        )
        # The control socket opens once every session has its sockets and a
        # first transmission scheduled (aiobfd.app's start order).
        self.ready_s = time.monotonic() - t0

    def sessions(self) -> list[dict[str, Any]]:
        timeout = 30 + self.spec.sessions / 20
        return list(ctl_request(self.socket, {"command": "show sessions"}, timeout)["sessions"])

    def session(self, remote: str) -> dict[str, Any]:
        return dict(
            ctl_request(self.socket, {"command": "show session", "peer": remote})["session"]
        )

    def up_count(self) -> int:
        return sum(s["state"] == "up" for s in self.sessions())

    def timer_lateness(self) -> dict[str, Any]:
        """Cumulative histograms of timer lateness from /metrics: {metric: {le_ms: count}},
        and the daemon's wake-ups since it started: {"wakeups": {cause: count}}."""
        script = (
            "import urllib.request;"
            f"print(urllib.request.urlopen('http://127.0.0.1:{METRICS_PORT}/metrics', timeout=30)"
            ".read().decode())"
        )
        text = subprocess.run(
            ["ip", "netns", "exec", self.ns, sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        out: dict[str, dict[str, int]] = {}
        for line in text.splitlines():
            for name in ("transmit", "detection"):
                prefix = f'aiobfd_{name}_lateness_seconds_bucket{{le="'
                if line.startswith(prefix):
                    le, _, count = line[len(prefix) :].partition('"} ')
                    key = "inf" if le == "+Inf" else f"{float(le) * 1000:g}"
                    out.setdefault(name, {})[key] = int(float(count))
            if line.startswith('aiobfd_wakeups_total{cause="'):
                cause, _, count = line[len('aiobfd_wakeups_total{cause="') :].partition('"} ')
                out.setdefault("wakeups", {})[cause] = int(float(count))
        return out

    def snapshot(self) -> dict[str, Any]:
        sessions = self.sessions()
        c = [s["counters"] for s in sessions]
        return {
            "pkts_in": sum(x["packets_in"] for x in c),
            "pkts_out": sum(x["packets_out"] for x in c),
            "downs": sum(x["session_down"] for x in c),
            "ups": sum(x["session_up"] for x in c),
            "up": sum(s["state"] == "up" for s in sessions),
            "max_rx_gap_ratio": max(
                (s["max_rx_gap_ms"] / s["detect_time_ms"] for s in sessions if s["detect_time_ms"]),
                default=0.0,
            ),
        }


class Shards(Daemon):
    """The peer side as several of our processes, each with a slice of the sessions,
    all on the peer's core: when one process would need more descriptors than
    the hard RLIMIT_NOFILE allows (the peer side holds a listener per session,
    three descriptors a session)."""

    def __init__(self, shards: list[Ours]) -> None:
        first = shards[0]
        super().__init__(first.lab, first.role, first.spec, first.cpu)
        self.kind = first.kind
        self.shards = shards

    @property
    def pid(self) -> int:
        return self.shards[0].pid

    def start(self) -> None:
        for shard in self.shards:
            shard.start()

    def check_alive(self) -> None:
        for shard in self.shards:
            shard.check_alive()

    def cpu_pids(self) -> list[int]:
        return [shard.pid for shard in self.shards]

    def sched(self) -> tuple[float, float]:
        on, waiting = zip(*(shard.sched() for shard in self.shards), strict=True)
        return sum(on), sum(waiting)

    def rss_kb(self) -> int:
        return sum(shard.rss_kb() for shard in self.shards)

    def up_count(self) -> int:
        return sum(shard.up_count() for shard in self.shards)

    def snapshot(self) -> dict[str, Any]:
        parts = [shard.snapshot() for shard in self.shards]
        out = {k: sum(p[k] for p in parts) for k in ("pkts_in", "pkts_out", "downs", "ups", "up")}
        out["max_rx_gap_ratio"] = max(p["max_rx_gap_ratio"] for p in parts)
        return out


def peer_shards(lab: ScaleLab, spec: RunSpec) -> int:
    """How many of our processes the peer side needs to stay within the hard RLIMIT_NOFILE."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        return 1
    # A listener, a transmit and a receive socket a session, and the allowances.
    per_session, allowance = 3, 512
    return max(1, -(-(per_session * spec.sessions + allowance) // hard))


@functools.cache
def has_event_loop_option() -> bool:
    """Whether this aiobfd takes --event-loop (newer ones choose uvloop when installed)."""
    from aiobfd.cli import build_parser

    return any("--event-loop" in a.option_strings for a in build_parser()._actions)


class FrrDaemon(Daemon):
    kind = "frr"

    def start(self) -> None:
        self.frr = Frr(self.lab, self.spec.interval_ms, self.spec.mult, self.cpu)
        self.frr.start(timeout=30 + self.spec.sessions / 10)
        self.proc = self.frr.bfdd
        self.log = self.frr.dir / "bfdd.log"

    def cpu_pids(self) -> list[int]:
        return [self.pid]

    def up_count(self) -> int:
        return sum(p["status"] == "up" for p in self.frr.peers())

    def snapshot(self) -> dict[str, Any]:
        c = self.frr.counters()
        return {
            "pkts_in": sum(x["control-packet-input"] for x in c),
            "pkts_out": sum(x["control-packet-output"] for x in c),
            "downs": sum(x["session-down"] for x in c),
            "ups": sum(x["session-up"] for x in c),
            "up": self.up_count(),
        }


class Aiobfd02(Daemon):
    kind = "aiobfd02"

    def __init__(self, lab: ScaleLab, role: str, spec: RunSpec, cpu: int, python: Path) -> None:
        super().__init__(lab, role, spec, cpu)
        self.python = python

    def start(self) -> None:
        if self.role != "dut" or self.lab.many_locals:
            raise LabError("aiobfd 0.2 runs only as the daemon under test, with one local address")
        i = str(self.spec.interval_ms)
        argv = [
            str(self.python),
            str(BENCH / "aiobfd02_driver.py"),
            self.lab.pairs[0].host,
            *(p.peer for p in self.lab.pairs),
            "-r",
            i,
            "-t",
            i,
            "-m",
            str(self.spec.mult),
        ]

        def ready() -> bool:
            self.check_alive()
            return "running" in self.log.read_text(errors="replace")

        # aiobfd 0.2 picks each source port at random without retrying: with
        # 100 sessions two collide about one start in four.  Start it again.
        for attempt in range(1, 9):
            self.proc = self.lab.popen(self.ns, *argv, cpu=self.cpu, log=self.log)
            try:
                wait_until(ready, 30 + self.spec.sessions / 10, "aiobfd 0.2 to start", 0.1)
                return
            except LabError:
                text = self.log.read_text(errors="replace")
                if "Address already in use" not in text or attempt == 8:
                    raise
                log("  aiobfd 0.2 drew a source port twice (its bug); starting it again")
                self.log.write_text("")

    def snapshot(self) -> dict[str, Any]:
        text = self.log.read_text(errors="replace")
        return {
            "downs": text.count("going DOWN") + text.count("going ADMIN_DOWN"),
            "ups": text.count("going to UP state"),
        }


def ensure_aiobfd02(python: Path) -> Path:
    """The Python of a virtual environment with aiobfd 0.2; made under /tmp if missing."""
    if python.exists():
        return python
    venv = python.parents[1]
    log(f"making a virtual environment for aiobfd 0.2 in {venv}")
    subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "aiobfd==0.2", "bitstring<4"], check=True
    )
    return python


_CORE_SITE: list[Path] = []


def compiled_core() -> Path:
    """This tree built as an operator would with the compiled core
    (``AIOBFD_MYPYC=1 pip wheel``), installed into a directory of its own; once
    per invocation.  Our daemons run from it by PYTHONPATH."""
    if not _CORE_SITE:
        where = Path(tempfile.mkdtemp(prefix="aiobfd-core-"))
        atexit.register(shutil.rmtree, where, ignore_errors=True)
        log("building the mypyc-compiled core (AIOBFD_MYPYC=1 pip wheel; about a minute)")
        pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
        env = {**os.environ, "AIOBFD_MYPYC": "1"}
        subprocess.run([*pip, "wheel", "--no-deps", "-w", str(where / "wheel"), str(ROOT)],
                       check=True, env=env)  # fmt: skip
        wheels = sorted((where / "wheel").glob("aiobfd-*.whl"))
        subprocess.run([*pip, "install", "--no-deps", "--target", str(where / "site"), *wheels],
                       check=True)  # fmt: skip
        _CORE_SITE.append(where / "site")
    return _CORE_SITE[0]


def make_daemon(
    kind: str, lab: ScaleLab, role: str, spec: RunSpec, opts: argparse.Namespace
) -> Daemon:
    cpu = DUT_CPU if role == "dut" else PEER_CPU
    if kind in ("ours", "ours-uvloop"):
        count = peer_shards(lab, spec) if role == "peer" else 1
        shards = []
        for k in range(count):
            ours = Ours(
                lab,
                role,
                spec,
                cpu,
                uvloop=kind == "ours-uvloop",
                pairs=lab.pairs[k::count],
                name=role if count == 1 else f"{role}{k}",
            )
            ours.lateness = bool(getattr(opts, "lateness", False)) and k == 0
            if getattr(opts, "core", "python") == "mypyc":
                ours.core_site = compiled_core()
            shards.append(ours)
        if count > 1:
            log(f"  the peer side is {count} processes (hard RLIMIT_NOFILE)")
            return Shards(shards)
        return shards[0]
    if kind == "frr":
        return FrrDaemon(lab, role, spec, cpu)
    if kind == "aiobfd02":
        return Aiobfd02(lab, role, spec, cpu, ensure_aiobfd02(Path(opts.aiobfd02_python)))
    raise ValueError(kind)


# ---------------------------------------------------------------- one run


def cpu_reading(daemons: list[Daemon]) -> dict[str, Any]:
    return {
        "t": time.monotonic(),
        "stat": cpu_stat(),
        "procs": {d.role: [proc_times(p) for p in d.cpu_pids()] for d in daemons},
        "sched": {d.role: d.sched() for d in daemons},
        # Packet work the kernel deferred to its softirq threads is billed to no daemon.
        "ksoftirqd": {c: sum(proc_times(pid)) for c, pid in ksoftirqd_pids().items()},
    }


def cpu_delta(a: dict[str, Any], b: dict[str, Any], role: str) -> tuple[float, float]:
    wall = b["t"] - a["t"]
    user = sum(y[0] - x[0] for x, y in zip(a["procs"][role], b["procs"][role], strict=True))
    system = sum(y[1] - x[1] for x, y in zip(a["procs"][role], b["procs"][role], strict=True))
    return user / wall, system / wall


def snapshot(daemons: list[Daemon]) -> dict[str, Any]:
    out: dict[str, Any] = {"t": time.monotonic()}
    for d in daemons:
        t0 = time.monotonic()
        out[d.role] = d.snapshot()
        out[f"{d.role}_query_s"] = time.monotonic() - t0
    return out


def wait_all_up(dut: Daemon, peer: Daemon, spec: RunSpec) -> tuple[int, float]:
    """Wait until every session is Up (as the DUT, else the peer, sees it); (count, seconds)."""
    source = dut if not isinstance(dut, Aiobfd02) else peer
    timeout = spec.up_timeout_s or 20 + spec.sessions * 0.02
    t0 = time.monotonic()
    last_print = t0
    count = 0
    # Our daemon: follow its watch stream rather than asking `show sessions` again and again.
    watch = Watch(source.socket) if isinstance(source, Ours) else None
    try:
        while True:
            dut.check_alive()
            peer.check_alive()
            if watch is not None and watch.closed:
                # The daemon drops a watcher that falls more than 1,024 events behind.
                watch.close()
                watch = None
            if watch is not None:
                with watch.cond:
                    count = sum(state == "up" for state in watch.state.values())
            else:
                with contextlib.suppress(LabError, OSError, ValueError):
                    count = source.up_count() or 0
            if count >= spec.sessions:
                return count, time.monotonic() - t0
            now = time.monotonic()
            if now - t0 > timeout:
                log(
                    f"  only {count}/{spec.sessions} sessions Up after {timeout:.0f} s; "
                    "measuring anyway"
                )
                return count, now - t0
            if now - last_print > 5:
                log(f"  {count}/{spec.sessions} sessions Up")
                last_print = now
            time.sleep(0.2 if spec.sessions <= 200 else 0.5)
    finally:
        if watch is not None:
            watch.close()


class Watch:
    """Our daemon's watch stream (docs/control.md), read by a thread: state per remote.

    Following state changes this way costs the daemon nothing while it waits,
    whereas ``show session`` looks the peer up among all sessions.
    """

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(60)
        self.sock.connect(str(path))
        self.sock.sendall(b'{"command": "watch"}\n')
        self.state: dict[str, str] = {}
        self.snapshots = 0
        self.cond = threading.Condition()
        self.closed = False
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        buf = b""
        try:
            while True:
                chunk = self.sock.recv(1 << 16)
                if not chunk:
                    break
                buf += chunk
                *lines, buf = buf.split(b"\n")
                with self.cond:
                    for line in lines:
                        rec = json.loads(line)
                        if rec.get("event") == "snapshot":
                            self.snapshots += 1
                        if rec.get("event") in ("snapshot", "state"):
                            self.state[rec["remote"]] = rec["state"]
                    self.cond.notify_all()
        except (OSError, ValueError):
            pass
        finally:
            with self.cond:
                self.closed = True
                self.cond.notify_all()

    def wait(self, predicate: Any, timeout: float) -> bool:
        with self.cond:
            return bool(self.cond.wait_for(lambda: predicate() or self.closed, timeout))

    def wait_snapshot(self, sessions: int, timeout: float = 60) -> None:
        """Wait for the snapshot of every session that opens the stream."""
        if not self.wait(lambda: self.snapshots >= sessions, timeout) or self.closed:
            raise LabError("no complete snapshot on the watch stream")

    def none_up(self, remotes: list[str]) -> bool:
        """Whether no session toward ``remotes`` is Up (call with ``cond`` held)."""
        return all(self.state.get(r) != "up" for r in remotes)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def detection_trials(
    lab: ScaleLab, dut: Ours, spec: RunSpec, budget_s: float = 120.0
) -> list[dict[str, Any]]:
    """Silence peers (nftables drop in our namespace) and time our Down; one result a peer.

    Each round silences ``spec.per_trial`` peers whose sessions are Up at once, in a
    shuffled order (a peer is used again once it is Up again), waits for their Down
    on the watch stream, reads the daemon's timestamps, and lets the peers speak again.
    """
    detect = {s["remote"]: float(s["detect_time_ms"]) for s in dut.sessions()}
    order = list(lab.pairs)
    random.Random(7).shuffle(order)
    results: list[dict[str, Any]] = []
    k = 0
    t_start = time.monotonic()
    watch = Watch(dut.socket)
    try:
        watch.wait_snapshot(len(order))
        while len(results) < spec.trials:
            if time.monotonic() - t_start > budget_s:
                log(f"  trial time budget ({budget_s:g} s) spent after {len(results)} trials")
                break
            if watch.closed:  # dropped by the daemon for falling behind: watch again
                watch.close()
                watch = Watch(dut.socket)
                watch.wait_snapshot(len(order))
            want = min(spec.per_trial, spec.trials - len(results), len(order))
            chosen: list[Any] = []
            deadline = time.monotonic() + 30
            while len(chosen) < want:
                pair = order[k % len(order)]
                k += 1
                with watch.cond:
                    up = watch.state.get(pair.peer) == "up"
                if up and detect.get(pair.peer, 0) > 0 and pair not in chosen:
                    chosen.append(pair)
                elif k % len(order) == 0:
                    if time.monotonic() > deadline:
                        log("  no session Up to silence; trials stopped")
                        return results
                    time.sleep(0.2)
            peers = [p.peer for p in chosen]
            lab.silence(peers)
            silenced_at = time.monotonic()
            limit = 3 * max(detect[p] for p in peers) / 1000 + 5
            try:
                watch.wait(functools.partial(watch.none_up, peers), limit)
                # Read the timestamps before the peers may speak again (Down -> Init).
                after: dict[str, dict[str, Any] | None] = {}
                for p in peers:
                    info = dut.session(p)
                    after[p] = info if info["state"] != "up" else None
            finally:
                lab.silence(peers, on=False)
            for p in peers:
                seen = after[p]
                if seen is None:
                    results.append({"peer": p, "detect_ms": detect[p], "missed": True})
                    continue
                down = seen["last_state_change_monotonic"]
                late = (down - seen["last_rx_monotonic"]) * 1000 - detect[p]
                results.append(
                    {
                        "peer": p,
                        "detect_ms": detect[p],
                        "diag": seen["local_diag"],
                        "late_ms": round(late, 3),
                        "since_silence_ms": round((down - silenced_at) * 1000, 3),
                        "round": k,
                    }
                )
            if len(results) // 25 != (len(results) - len(chosen)) // 25:
                elapsed = time.monotonic() - t_start
                log(f"  detection trial {len(results)}/{spec.trials} ({elapsed:.0f} s)")
    finally:
        watch.close()
    return results


def summarize_trials(trials: list[dict[str, Any]]) -> dict[str, Any]:
    late = sorted(t["late_ms"] for t in trials if "late_ms" in t)
    out: dict[str, Any] = {
        "trials": len(trials),
        "missed": sum(1 for t in trials if t.get("missed")),
        "wrong_diag": sum(1 for t in trials if "diag" in t and t["diag"] != 1),
    }
    if late:
        q = (
            statistics.quantiles(late, n=100, method="inclusive")
            if len(late) > 1
            else [late[0]] * 99
        )
        out.update(
            detect_ms=trials[0]["detect_ms"],
            late_min_ms=late[0],
            late_p50_ms=round(statistics.median(late), 3),
            late_p95_ms=round(q[94], 3),
            late_p99_ms=round(q[98], 3),
            late_max_ms=late[-1],
            late_ms=late,
            # Per trial (round, ms from the silencing to our Down, ms late), to
            # tell whether the late ones share a round or come later in one.
            detail=[
                (t["round"], t["since_silence_ms"], t["late_ms"]) for t in trials if "late_ms" in t
            ],
        )
    return out


def lateness_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Timer lateness between two /metrics readings: per histogram, the timers
    counted, the bound of the lowest bucket that holds them all (ms), how many
    came more than 5 ms late, and the cumulative counts by bound (ms)."""
    out: dict[str, Any] = {}
    for name in ("transmit", "detection"):
        a, b = before.get(name, {}), after.get(name, {})
        delta = {le: b[le] - a.get(le, 0) for le in b}
        total = delta.get("inf", 0)
        bounds = sorted((float(le), n) for le, n in delta.items() if le != "inf")
        worst = next((le for le, n in bounds if n == total), None)
        within_5 = next((n for le, n in bounds if le == 5.0), total)
        out[name] = {
            "timers": total,
            "all_within_ms": worst,
            "over_5ms": total - within_5,
            "cumulative": {f"{le:g}": n for le, n in bounds},
        }
    return out


def control_probes(dut: Ours, rounds: int) -> dict[str, Any]:
    """What an operator's requests cost the sessions: ``rounds`` times nothing
    (the baseline: the /metrics readings themselves), ``show sessions``, and,
    when the daemon runs from a file, a reload that changes one peer; for each,
    the replies' seconds, the flaps and how late the timers fired meanwhile."""
    out: dict[str, Any] = {}
    kinds = ["idle", "show", "reload"] if dut.from_file else ["idle", "show"]
    for what in kinds:
        downs0 = dut.snapshot()["downs"]
        lateness0 = dut.timer_lateness()
        sched0 = dut.sched()
        times = []
        for k in range(rounds):
            t0 = time.monotonic()
            if what == "show":
                dut.sessions()
            elif what == "reload":
                # Peer 0's multiplier goes up, then back: one change a reload.
                dut.write_config(changed=0 if k % 2 == 0 else None)
                t0 = time.monotonic()
                summary = dut.reload()
                if len(summary.get("changed", [])) != 1:
                    raise LabError(f"reload changed {summary.get('changed')}, not one peer")
            times.append(time.monotonic() - t0)
            time.sleep(1.0)
        lateness1 = dut.timer_lateness()
        sched1 = dut.sched()
        out[what] = {
            "rounds": rounds,
            "max_s": round(max(times), 3),
            "median_s": round(statistics.median(times), 3),
            "flaps": dut.snapshot()["downs"] - downs0,
            "lateness": lateness_delta(lateness0, lateness1),
            # The loop thread's time ready but not running (another task had
            # its CPU): lateness that is the host's, not the daemon's.
            "runqueue_wait_ms": round((sched1[1] - sched0[1]) * 1000, 1),
        }
        log(f"  {what} x{rounds}: max {out[what]['max_s']} s, {out[what]}")
    return out


def family_for(spec: RunSpec) -> int:
    if spec.family in ("4", "6"):
        return int(spec.family)
    need = spec.sessions + (spec.sessions if spec.locals == "many" else 1)
    return 4 if need <= 252 else 6


def run_one(spec: RunSpec, opts: argparse.Namespace, index: str = "") -> dict[str, Any]:
    family = family_for(spec)
    title = f"{index}{NAMES[spec.dut]} vs {NAMES[spec.peer]}, {spec.point()}, {spec.duration_s:g} s"
    log(f"{title}: setting up (IPv{family}, {spec.locals} local address(es))")
    t_setup = time.monotonic()
    result: dict[str, Any] = {
        "ts": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **{k: v for k, v in asdict(spec).items() if k not in ("up_timeout_s",)},
        "family": family,
    }
    result["nice"] = opts.nice
    with ScaleLab(
        spec.sessions,
        family=family,
        many_locals=spec.locals == "many",
        macvlans=spec.peer == "frr",
        nice=opts.nice,
    ) as lab:
        peer = make_daemon(spec.peer, lab, "peer", spec, opts)
        dut = make_daemon(spec.dut, lab, "dut", spec, opts)
        if isinstance(dut, Ours) and int(getattr(opts, "probes", 0)):
            dut.from_file = True  # for the reloads
        if isinstance(dut, Ours):
            dut.nofile = int(getattr(opts, "dut_nofile", 0))
            dut.realtime = int(getattr(opts, "dut_realtime", 0))
            if dut.realtime:
                result["dut_realtime_priority"] = dut.realtime
        peer.start()
        dut.start()
        # Memory with every session configured, before any `show sessions` answer
        # (a large JSON reply leaves freed memory in the allocator's arenas).
        result["dut_rss_kb_ready"] = proc_rss_kb(dut.pid)
        if isinstance(dut, Ours):
            result["dut_ready_s"] = round(dut.ready_s, 2)
        for d in (dut, peer):
            if isinstance(d, Ours):
                result[f"{d.role}_event_loop"] = d.event_loop
                result[f"{d.role}_core"] = d.core
        up, up_s = wait_all_up(dut, peer, spec)
        result["dut_rss_kb_up"] = proc_rss_kb(dut.pid)
        result["setup_s"] = round(time.monotonic() - t_setup, 1)
        result["up_after_s"] = round(up_s, 1)
        result["up_at_start"] = up
        if spec.settle_s:
            time.sleep(spec.settle_s)
        daemons = [dut, peer]
        rss0 = proc_rss_kb(dut.pid)
        kern_a = kernel_counters(lab)
        snap_a = snapshot(daemons)
        cpu_a = cpu_reading(daemons)
        profiler = start_profiler(opts, dut, spec) if opts.profile else None
        end = cpu_a["t"] + spec.duration_s
        next_progress = cpu_a["t"] + (opts.progress or 1e9)
        while (now := time.monotonic()) < end:
            time.sleep(min(0.5, end - now))
            dut.check_alive()
            peer.check_alive()
            if time.monotonic() >= next_progress and time.monotonic() < end - 1:
                next_progress += opts.progress
                mid = cpu_reading(daemons)
                du, ds = cpu_delta(cpu_a, mid, "dut")
                pu, ps = cpu_delta(cpu_a, mid, "peer")
                log(
                    f"  {mid['t'] - cpu_a['t']:.0f}/{spec.duration_s:g} s: {spec.dut} "
                    f"{100 * (du + ds):.1f} % ({100 * du:.1f} user), {spec.peer} "
                    f"{100 * (pu + ps):.1f} % ({100 * pu:.1f} user)"
                )
        cpu_b = cpu_reading(daemons)
        snap_b = snapshot(daemons)
        kern_b = kernel_counters(lab)
        if isinstance(dut, Ours):
            # How long one `show session` holds the daemon's loop (the lookup is by scan).
            t0 = time.monotonic()
            dut.session(lab.pairs[-1].peer)
            result["dut_show_session_s"] = round(time.monotonic() - t0, 4)
        for d in daemons:
            if isinstance(d, Ours) and d.lateness:
                result[f"{d.role}_timer_lateness"] = d.timer_lateness()
        result["kernel_drops"] = {
            k: kern_b[k] - kern_a[k] for k in kern_a if kern_b[k] != kern_a[k]
        }
        if profiler is not None:
            result["profile"] = finish_profiler(profiler)
        wall = cpu_b["t"] - cpu_a["t"]
        for d in daemons:
            user, system = cpu_delta(cpu_a, cpu_b, d.role)
            result[f"{d.role}_cpu_user"] = round(user, 4)
            result[f"{d.role}_cpu_sys"] = round(system, 4)
            result[f"{d.role}_cpu"] = round(user + system, 4)
            result[f"{d.role}_rss_kb"] = d.rss_kb()
            waited = cpu_b["sched"][d.role][1] - cpu_a["sched"][d.role][1]
            result[f"{d.role}_runqueue_wait"] = round(waited / wall, 4)
        result["dut_rss_kb_start"] = rss0
        for cpu in (DUT_CPU, PEER_CPU):
            busy = cpu_busy(cpu_a["stat"], cpu_b["stat"], f"cpu{cpu}")
            result[f"core{cpu}_busy"] = round(busy["busy"] / wall, 4)
            result[f"core{cpu}_softirq"] = round(busy["softirq"] / wall, 4)
            result[f"core{cpu}_steal"] = round(busy["steal"] / wall, 4)
            if cpu in cpu_a["ksoftirqd"] and cpu in cpu_b["ksoftirqd"]:
                spent = cpu_b["ksoftirqd"][cpu] - cpu_a["ksoftirqd"][cpu]
                result[f"ksoftirqd{cpu}_cpu"] = round(spent / wall, 4)
        total = cpu_busy(cpu_a["stat"], cpu_b["stat"], "cpu")
        result["other_cpu"] = round(
            total["busy"] / wall - result["dut_cpu"] - result["peer_cpu"], 4
        )
        # Packets per second and flaps over the counter window (which brackets the CPU window).
        span = snap_b["t"] - snap_a["t"]
        for role in ("dut", "peer"):
            a, b = snap_a[role], snap_b[role]
            if a is not None and "pkts_out" in a:
                result[f"{role}_pps_tx"] = round((b["pkts_out"] - a["pkts_out"]) / span, 1)
                result[f"{role}_pps_rx"] = round((b["pkts_in"] - a["pkts_in"]) / span, 1)
            if a is not None and "downs" in a:
                result[f"{role}_flaps"] = b["downs"] - a["downs"]
            if b is not None and "up" in b:
                result[f"{role}_up_at_end"] = b["up"]
            if b is not None and "max_rx_gap_ratio" in b:
                result[f"{role}_max_rx_gap_ratio"] = round(b["max_rx_gap_ratio"], 3)
            result[f"{role}_query_s"] = round(snap_b[f"{role}_query_s"], 3)
        if "dut_pps_tx" not in result and "peer_pps_tx" in result:
            # aiobfd 0.2 counts nothing: what the peer received, it sent.
            result["dut_pps_tx"] = result["peer_pps_rx"]
            result["dut_pps_rx"] = result["peer_pps_tx"]
            result["dut_pps_from_peer"] = True
        result["measured_s"] = round(wall, 2)
        probes = int(getattr(opts, "probes", 0))
        if probes and isinstance(dut, Ours) and dut.lateness:
            result["probes"] = control_probes(dut, probes)
        if spec.trials and isinstance(dut, Ours):
            up_end = result.get("dut_up_at_end", 0)
            if up_end < 0.9 * spec.sessions:
                log(f"  no detection trials: only {up_end}/{spec.sessions} sessions Up")
                result["detection"] = {"skipped": f"only {up_end} sessions Up"}
            else:
                log(f"  {spec.trials} detection trials")
                budget = getattr(opts, "trial_budget", 120.0)
                result["detection"] = summarize_trials(detection_trials(lab, dut, spec, budget))
                if dut.lateness:
                    # The daemon's own view: how late its detection timers fired.
                    after = dut.timer_lateness()
                    result["dut_timer_lateness_after_trials"] = {
                        k: after[k] for k in ("detection", "wakeups") if k in after
                    }
        if opts.keep_logs:
            keep_logs(
                lab,
                Path(opts.keep_logs),
                f"{spec.dut}-{spec.peer}-{spec.sessions}-{spec.interval_ms}",
            )
    result["machine"] = machine()
    return result


def kernel_counters(lab: ScaleLab) -> dict[str, int]:
    """Packets the kernel dropped: per-CPU backlog (global) and UDP errors per namespace."""
    out = softnet_drops()
    for side, ns in (("dut", lab.host_ns), ("peer", lab.peer_ns)):
        for k, v in udp_errors(ns).items():
            out[f"{side}_udp_{k}"] = v
    return out


def start_profiler(
    opts: argparse.Namespace, dut: Daemon, spec: RunSpec
) -> tuple[subprocess.Popen[bytes], Path]:
    """py-spy record (non-blocking: the daemon is not paused) for the measured window."""
    where = Path(opts.profile)
    where.mkdir(parents=True, exist_ok=True)
    out = where / f"{time.strftime('%H%M%S')}-{spec.dut}-{spec.sessions}-{spec.interval_ms}.txt"
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    argv = [pyspy, "record", "--pid", str(dut.pid), "--duration", str(int(spec.duration_s)),
            "--rate", "200", "--nonblocking", "--format", "raw", "-o", str(out)]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), out


def finish_profiler(profiler: tuple[subprocess.Popen[bytes], Path]) -> str:
    proc, out = profiler
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
    log(f"  profile (collapsed stacks) in {out}; summary: python bench/profsummary.py {out}")
    return str(out)


def keep_logs(lab: ScaleLab, where: Path, name: str) -> None:
    """Copy the daemons' logs and configurations out of the lab before it goes."""
    dest = where / f"{time.strftime('%H%M%S')}-{name}"
    dest.mkdir(parents=True, exist_ok=True)
    for path in [*lab.rundir.iterdir(), *(lab.rundir / "frr").glob("*")]:
        if path.is_file() and path.suffix in (".log", ".out", ".conf", ".toml"):
            shutil.copy(path, dest / path.name)
    log(f"  logs kept in {dest}")


# ---------------------------------------------------------------- reporting


_MACHINE: dict[str, Any] = {}


def machine() -> dict[str, Any]:
    if not _MACHINE:
        model = ""
        with contextlib.suppress(OSError):
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        rev = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "src"], capture_output=True, text=True
        ).stdout.strip()
        _MACHINE.update(
            cpu=model,
            cpus=os.cpu_count(),
            kernel=platform.release(),
            python=platform.python_version(),
            frr=frr_version(),
            commit=rev + ("+dirty" if dirty else ""),
        )
    return _MACHINE


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def table_row(r: dict[str, Any]) -> list[str]:
    det = r.get("detection") or {}
    late = (
        f"{det['late_p50_ms']:.2f}/{det['late_p99_ms']:.2f}/{det['late_max_ms']:.2f} ({len(det['late_ms'])})"
        if det.get("late_ms")
        else "-"
    )
    pps = "-"
    if "dut_pps_tx" in r:
        pps = f"{r['dut_pps_tx']:.0f}/{r['dut_pps_rx']:.0f}"

    def name(role: str) -> str:
        # A compiled core is marked: "ours/mypyc".
        core = r.get(f"{role}_core", "python")
        return r[role] if core == "python" else f"{r[role]}/{core}"

    return [
        name("dut"),
        name("peer"),
        f"{r['sessions']}@{r['interval_ms']}x{r['mult']}",
        f"{r['measured_s']:.0f}",
        f"{pct(r['dut_cpu'])} ({pct(r['dut_cpu_user'])}/{pct(r['dut_cpu_sys'])})",
        f"{pct(r['peer_cpu'])} ({pct(r['peer_cpu_user'])}/{pct(r['peer_cpu_sys'])})",
        f"{r['dut_rss_kb'] / 1024:.1f}",
        pps,
        f"{r.get('dut_flaps', '-')}/{r.get('peer_flaps', '-')}",
        f"{r['up_at_start']}/{r['sessions']}",
        late,
        pct(r.get("other_cpu")),
    ]


HEADER = [
    "dut",
    "peer",
    "sessions@ms",
    "s",
    "dut CPU % (usr/sys)",
    "peer CPU % (usr/sys)",
    "dut RSS MB",
    "dut pps tx/rx",
    "flaps dut/peer",
    "up",
    "late ms p50/p99/max (n)",
    "other %",
]


def print_table(rows: list[dict[str, Any]], markdown: bool = False) -> None:
    cells = [HEADER] + [table_row(r) for r in rows]
    if markdown:
        print("| " + " | ".join(HEADER) + " |")
        print("|" + "---|" * len(HEADER))
        for row in cells[1:]:
            print("| " + " | ".join(row) + " |")
        return
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]
    for n, row in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def save(result: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(result) + "\n")


def execute(specs: list[RunSpec], opts: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    t0 = time.monotonic()
    for n, spec in enumerate(specs, 1):
        try:
            result = run_one(spec, opts, f"[{n}/{len(specs)}] ")
        except LabError as exc:
            log(f"run failed: {exc}")
            result = {**asdict(spec), "error": str(exc), "machine": machine()}
            save(result, Path(opts.results))
            if opts.stop_on_error:
                raise
            continue
        save(result, Path(opts.results))
        results.append(result)
        if result.get("other_cpu", 0) > 0.15:
            log(
                f"  note: {pct(result['other_cpu'])} % of a core went to other processes "
                "during this run: the figures may be noisy"
            )
        log(
            f"  done: {spec.dut} {pct(result['dut_cpu'])} % ({pct(result['dut_cpu_user'])} user), "
            f"{spec.peer} {pct(result['peer_cpu'])} %, flaps {result.get('dut_flaps', '-')}/"
            f"{result.get('peer_flaps', '-')}; {time.monotonic() - t0:.0f} s so far"
        )
    return results


# ------------------------------------------------------------- side by side

POINTS = [(10, 300), (50, 100), (100, 50), (10, 20)]


def side_by_side_specs(opts: argparse.Namespace) -> list[RunSpec]:
    base = RunSpec(mult=3, duration_s=opts.duration, suite="side-by-side", family=opts.family)
    specs = []
    duts = ["ours", *(["ours-uvloop"] if opts.uvloop else []), "aiobfd02"]
    for n, interval in POINTS:
        for dut in duts:
            trials = opts.trials if dut != "aiobfd02" else 0
            specs.append(
                replace(base, dut=dut, peer="frr", sessions=n, interval_ms=interval, trials=trials)
            )
    big = replace(
        base,
        dut="ours",
        peer=opts.big_peer,
        sessions=opts.big_sessions,
        interval_ms=50,
        duration_s=opts.big_duration,
        trials=opts.big_trials,
        per_trial=5,
        label="big",
    )
    specs.append(big)
    if opts.detect_interval:
        # Detection with 1,000 sessions running, at a rate the daemon holds.
        specs.append(
            replace(
                big,
                interval_ms=opts.detect_interval,
                duration_s=opts.detect_duration,
                label="detect",
            )
        )
    if not opts.no_extras:
        specs.append(
            replace(
                base,
                dut="ours",
                peer="frr",
                sessions=100,
                interval_ms=1000,
                label="idle",
                settle_s=5,
            )
        )
        specs.append(
            replace(
                base,
                dut="ours",
                peer="ours",
                sessions=20,
                interval_ms=10,
                duration_s=opts.fast_duration,
                label="fast",
            )
        )
    return specs


def ratios(results: list[dict[str, Any]]) -> None:
    def find(dut: str, n: int, interval: int, peer: str = "frr") -> dict[str, Any] | None:
        for r in results:
            if (r["dut"], r["peer"], r["sessions"], r["interval_ms"]) == (dut, peer, n, interval):
                return r
        return None

    print()
    print("Side by side, FRR bfdd as the peer (% of one core, user+system):")
    rows = [
        [
            "point",
            "ours",
            "FRR (vs ours)",
            "aiobfd 0.2",
            "FRR (vs 0.2)",
            "ours/FRR",
            "0.2/ours",
            "flaps ours",
            "flaps 0.2",
            "target: below FRR, no flap",
        ]
    ]
    for n, interval in POINTS:
        a, b = find("ours", n, interval), find("aiobfd02", n, interval)
        ok = "-"
        if a is not None:
            flap_ok = a.get("dut_flaps", 0) == 0 and a.get("peer_flaps", 0) == 0
            ok = "yes" if a["dut_cpu"] < a["peer_cpu"] and flap_ok else "NO"
        rows.append(
            [
                f"{n} @ {interval} ms",
                pct(a["dut_cpu"]) if a else "-",
                pct(a["peer_cpu"]) if a else "-",
                pct(b["dut_cpu"]) if b else "-",
                pct(b["peer_cpu"]) if b else "-",
                f"{a['dut_cpu'] / a['peer_cpu']:.2f}" if a and a["peer_cpu"] else "-",
                f"{b['dut_cpu'] / a['dut_cpu']:.0f}x" if a and b and a["dut_cpu"] else "-",
                str(a.get("dut_flaps", "-")) if a else "-",
                f"{b.get('dut_flaps', '-')} (FRR saw {b.get('peer_flaps', '-')})" if b else "-",
                ok,
            ]
        )
        u = find("ours-uvloop", n, interval)
        if u is not None:
            rows.append(
                [
                    "  uvloop",
                    pct(u["dut_cpu"]),
                    pct(u["peer_cpu"]),
                    "",
                    "",
                    f"{u['dut_cpu'] / u['peer_cpu']:.2f}" if u["peer_cpu"] else "-",
                    "",
                    str(u.get("dut_flaps", "-")),
                    "",
                    "",
                ]
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print()
    for line in targets(results):
        print(line)


def targets(results: list[dict[str, Any]]) -> list[str]:
    """The issue's targets that these results decide, one line each."""
    out = []

    def by(**kw: Any) -> list[dict[str, Any]]:
        return [r for r in results if all(r.get(k) == v for k, v in kw.items())]

    small = by(dut="ours", peer="frr", sessions=10, interval_ms=300)
    old = by(dut="aiobfd02", peer="frr", sessions=10, interval_ms=300)
    if small and old:
        factor = old[0]["dut_cpu"] / max(small[0]["dut_cpu"], 1e-9)
        out.append(
            f"10 @ 300 ms: aiobfd 0.2 / ours = {factor:.0f}x (target >= 50x): "
            f"{'met' if factor >= 50 else 'MISSED'}"
        )
    for r in [r for r in results if r["dut"] == "ours" and r["sessions"] >= 500]:
        worst = max(r["dut_cpu"], r["peer_cpu"] if r["peer"].startswith("ours") else 0)
        flaps = r.get("dut_flaps", 0) + r.get("peer_flaps", 0)
        ok = worst < 0.6 and flaps == 0
        out.append(
            f"{r['sessions']} @ {r['interval_ms']} ms ({r['peer']} peer, {r['measured_s']:.0f} s): "
            f"ours {pct(r['dut_cpu'])} %, peer {pct(r['peer_cpu'])} %, flaps {flaps} "
            f"(target < 60 % each, 0 flaps over 120 s): {'met' if ok else 'MISSED'}"
            + ("" if r["measured_s"] >= 119 else " [shorter than 120 s]")
        )
        det = r.get("detection") or {}
        if det.get("late_ms"):
            n = len(det["late_ms"])
            ok = det["late_p99_ms"] <= 2.0 and not det["missed"]
            out.append(
                f"detection with {r['sessions']} sessions: p99 {det['late_p99_ms']:.2f} ms after "
                f"the Detection Time over {n} trials (target <= 2 ms, 100 trials): "
                f"{'met' if ok else 'MISSED'}" + ("" if n >= 100 else " [fewer than 100 trials]")
            )
    for r in by(dut="ours", interval_ms=1000, sessions=100):
        out.append(
            f"100 idle sessions at 1 s: {pct(r['dut_cpu'])} % (target < 1 %): "
            f"{'met' if r['dut_cpu'] < 0.01 else 'MISSED'}"
        )
    for r in [r for r in results if r["dut"] == "ours" and r["interval_ms"] == 10]:
        flaps = r.get("dut_flaps", 0) + r.get("peer_flaps", 0)
        out.append(
            f"{r['sessions']} @ 10 ms x{r['mult']} ({r['measured_s']:.0f} s): flaps {flaps} "
            f"(target 0 over 120 s): {'met' if flaps == 0 else 'MISSED'}"
            + ("" if r["measured_s"] >= 119 else " [shorter than 120 s]")
        )
    ours_one = sorted(
        (r for r in results if r["dut"] == "ours" and r["locals"] == "one"),
        key=lambda r: r["sessions"],
    )
    if len(ours_one) >= 2 and ours_one[-1]["sessions"] - ours_one[0]["sessions"] >= 100:
        lo, hi = ours_one[0], ours_one[-1]
        key = (
            "dut_rss_kb_ready"
            if "dut_rss_kb_ready" in lo and "dut_rss_kb_ready" in hi
            else "dut_rss_kb"
        )
        per = (hi[key] - lo[key]) / (hi["sessions"] - lo["sessions"])
        out.append(
            f"memory: {per:.1f} KB of RSS per additional session ({lo['sessions']} -> "
            f"{hi['sessions']} sessions; target < 5 KB): {'met' if per < 5 else 'MISSED'}"
        )
    return out


# -------------------------------------------------------------------- curve


def parse_points(text: str) -> list[tuple[int, int]]:
    """'1000@50,20@10' -> [(1000, 50), (20, 10)]."""
    out = []
    for item in text.split(","):
        if item.strip():
            n, _, ms = item.partition("@")
            out.append((int(n), int(ms)))
    return out


#: Descriptors a floor worker holds besides its sockets (Python, the lab's pipes).
FLOOR_FD_SLACK = 64


def floor_rx(sessions: int) -> str:
    """How the one-call floor receives at ``sessions``: on a connected socket a
    peer, as the daemon does, while the hard RLIMIT_NOFILE holds two sockets a
    session; else on one socket (one ``recv`` a packet still, the same kernel
    work a packet but no epoll set: a little below the daemon's way)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    fits = hard == resource.RLIM_INFINITY or 2 * sessions + FLOOR_FD_SLACK <= hard
    return "peer" if fits else "one"


def curve(opts: argparse.Namespace) -> list[dict[str, Any]]:
    """Our daemon on both sides at each point, and the floor (bench/floor.py) beside it.

    At each point the daemon run and the floor's variants follow one another,
    in alternating order from one point to the next (daemon first, then floors
    first), so that the machine's drift falls on both.  Every run, and every
    failure (a point that does not start), is appended to the results file.
    """
    from floor import run_floor

    points = [(n, i) for i in opts.intervals for n in opts.sessions]
    points += [p for p in parse_points(opts.extra) if p not in points]
    variants = [v for v in opts.floor.split(",") if v]
    records: list[dict[str, Any]] = []
    for k, (n, interval) in enumerate(points):
        daemon_first = (k % 2 == 0) == (opts.start_with == "daemon")
        steps = ["daemon", *variants] if daemon_first else [*reversed(variants), "daemon"]
        for step in steps:
            title = f"[{k + 1}/{len(points)}] "
            if step == "daemon":
                spec = RunSpec(
                    dut="ours",
                    peer="ours",
                    sessions=n,
                    interval_ms=interval,
                    mult=3,
                    duration_s=opts.duration,
                    trials=opts.trials,
                    per_trial=opts.per_trial,
                    family=opts.family,
                    suite=opts.suite,
                )
                try:
                    result = run_one(spec, opts, title)
                except (LabError, OSError) as exc:
                    # OSError: a query timed out (an overloaded point answers
                    # `show sessions` very slowly); the next point still runs.
                    log(f"run failed: {exc!r}")
                    result = {**asdict(spec), "error": repr(exc), "machine": machine()}
            else:
                try:
                    result = run_floor(
                        n,
                        interval,
                        step,
                        opts.duration,
                        rx=floor_rx(n),
                        family=opts.family,
                        nice=opts.nice,
                        suite=opts.suite,
                    )
                except (LabError, RuntimeError, OSError) as exc:
                    log(f"floor run failed: {exc}")
                    result = {
                        "bench": "floor",
                        "variant": step,
                        "sessions": n,
                        "interval_ms": interval,
                        "suite": opts.suite,
                        "error": str(exc),
                        "machine": machine(),
                    }
            result["curve_order"] = steps.index(step)
            save(result, Path(opts.results))
            records.append(result)
            if "error" not in result and result.get("other_cpu", 0) > 0.15:
                log(f"  note: other processes used {pct(result['other_cpu'])} % of a core")
    return records


def curve_table(records: list[dict[str, Any]], markdown: bool = False) -> None:
    """One row a point: our daemon (both sides), the floor's CPU beside it, the ratios."""
    daemons: dict[tuple[int, int], dict[str, Any]] = {}
    floors: dict[tuple[int, int, str], dict[str, Any]] = {}
    for r in records:
        key = (r["sessions"], r["interval_ms"])
        if r.get("bench") == "floor":
            at = (*key, r["variant"])
            one = r["variant"] == "call" and r.get("rx", "one") == "one"
            if one and at in floors and floors[at].get("rx") != "one":
                # The call variant on one socket is not the daemon's receive
                # path: only where that one could not run (the table says so).
                continue
            floors[at] = r
        elif r.get("dut") == "ours" and r.get("peer") == "ours":
            daemons[key] = r
    header = [
        "sessions@ms",
        "ours CPU % (usr/sys)",
        "peer CPU %",
        "RSS MB",
        "KB/session",
        "pps tx/rx",
        "flaps",
        "late ms p50/p99/max (n)",
        "floor 1 call/pkt % (usr/sys)",
        "floor batched %",
        "ours / floor",
        "other %",
    ]
    rows = []
    smallest: dict[int, dict[str, Any]] = {}
    for (_n, interval), r in sorted(daemons.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        if "error" not in r and "dut_cpu" in r:
            smallest.setdefault(interval, r)
    for (n, interval), r in sorted(daemons.items(), key=lambda kv: (-kv[0][1], kv[0][0])):
        call = floors.get((n, interval, "call"))
        batch = floors.get((n, interval, "batch"))

        def floor_cell(f: dict[str, Any] | None, detail: bool) -> str:
            if f is None:
                return "-"
            if "error" in f:
                return "failed"
            cell = pct(f["host_cpu"])
            if detail and f.get("rx") == "one":
                cell += " one rx socket"
            return (
                f"{cell} ({pct(f['host_cpu_user'])}/{pct(f['host_cpu_sys'])})" if detail else cell
            )

        if "error" in r or "dut_cpu" not in r:
            reason = r.get("error", "no result").strip().splitlines()
            line = next((x for x in reason if "error" in x.lower()), reason[0] if reason else "")
            rows.append([f"{n}@{interval}", f"did not start: {line.strip()[:150]}"]
                        + [""] * (len(header) - 2))  # fmt: skip
            continue
        base = smallest.get(interval)
        per = "-"
        if base is not None and base is not r and "dut_rss_kb_ready" in r:
            per = (
                f"{(r['dut_rss_kb_ready'] - base['dut_rss_kb_ready']) / (n - base['sessions']):.1f}"
            )
        det = r.get("detection") or {}
        late = (
            f"{det['late_p50_ms']:.2f}/{det['late_p99_ms']:.2f}/{det['late_max_ms']:.2f} "
            f"({len(det['late_ms'])}{', missed ' + str(det['missed']) if det.get('missed') else ''})"
            if det.get("late_ms")
            else "-"
        )
        ratios = []
        for f in (call, batch):
            ok = f is not None and "error" not in f and f.get("host_cpu")
            ratios.append(f"{r['dut_cpu'] / f['host_cpu']:.2f}" if ok and f else "-")
        rows.append(
            [
                f"{n}@{interval}",
                f"{pct(r['dut_cpu'])} ({pct(r['dut_cpu_user'])}/{pct(r['dut_cpu_sys'])})",
                pct(r["peer_cpu"]),
                f"{r['dut_rss_kb'] / 1024:.1f}",
                per,
                f"{r.get('dut_pps_tx', 0):.0f}/{r.get('dut_pps_rx', 0):.0f}",
                f"{r.get('dut_flaps', '-')}/{r.get('peer_flaps', '-')}",
                late,
                floor_cell(call, True),
                floor_cell(batch, False),
                f"{ratios[0]} / {ratios[1]}",
                pct(r.get("other_cpu")),
            ]
        )
    if markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in rows:
            print("| " + " | ".join(row) + " |")
        return
    cells = [header, *rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    for k, row in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))
    print(
        "\nours / floor: our daemon's CPU (the side with one address and N remotes) over the"
        " floor's on the same side, one system call a packet / batched; KB/session: RSS with"
        " every session configured, per session added since the smallest point at that interval"
    )


def load_records(path: Path, suite: str | None) -> list[dict[str, Any]]:
    """Every line of a results file (failures and floor runs too), optionally of one suite."""
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            if suite in (None, r.get("suite")):
                out.append(r)
    return out


# -------------------------------------------------------------------- main


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", default=str(DEFAULT_RESULTS), help="JSON lines file (appended)")
    p.add_argument(
        "--family",
        choices=["auto", "4", "6"],
        default="auto",
        help="auto: IPv4 when the addresses fit in a /24, else IPv6",
    )
    p.add_argument(
        "--aiobfd02-python",
        default=str(AIOBFD02_VENV / "bin" / "python"),
        help="Python of a venv with aiobfd 0.2 and bitstring<4 (made if missing)",
    )
    p.add_argument("--progress", type=float, default=10.0, help="seconds between progress lines")
    p.add_argument("--stop-on-error", action="store_true")
    p.add_argument(
        "--trial-budget", type=float, default=120.0, help="seconds at most for a run's trials"
    )
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    p.add_argument("--keep-logs", metavar="DIR", help="copy each run's daemon logs into DIR")
    p.add_argument(
        "--nice",
        type=int,
        default=-10,
        help="niceness of both daemons (default -10: ahead of other work on a shared machine)",
    )
    p.add_argument(
        "--lateness",
        action="store_true",
        help="serve /metrics in our daemons' namespaces and keep their timer lateness histograms",
    )
    p.add_argument(
        "--core",
        choices=["python", "mypyc"],
        default="python",
        help="our daemons' core: plain Python, or compiled by mypyc (AIOBFD_MYPYC=1, see setup.py;"
        " the wheel is built once per invocation)",
    )
    p.add_argument(
        "--profile",
        metavar="DIR",
        help="py-spy the daemon under test during the measured window (flags the run)",
    )


def parse_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="one run")
    add_common(p)
    p.add_argument("--dut", choices=DUTS, default="ours")
    p.add_argument("--peer", choices=PEERS, default="frr")
    p.add_argument("-n", "--sessions", type=int, default=10)
    p.add_argument("-i", "--interval", type=int, default=300, help="ms (TX and RX)")
    p.add_argument("-m", "--mult", type=int, default=3)
    p.add_argument("-d", "--duration", type=float, default=30.0, help="measured seconds")
    p.add_argument("--trials", type=int, default=0, help="detection trials (our daemon only)")
    p.add_argument("--per-trial", type=int, default=1, help="peers silenced at once per round")
    p.add_argument("--locals", choices=["one", "many"], default="one")
    p.add_argument("--settle", type=float, default=3.0, help="seconds after all Up")
    p.add_argument("--suite", default="run", help="suite name recorded with the result")
    p.add_argument(
        "--dut-nofile",
        type=int,
        default=0,
        metavar="N",
        help="start the daemon under test with a hard RLIMIT_NOFILE of N (fewer receive "
        "sockets of its own when N is short of two a session)",
    )
    p.add_argument(
        "--dut-realtime",
        type=int,
        default=0,
        metavar="N",
        help="run the daemon under test's loop at SCHED_FIFO priority N (--realtime-priority, "
        "as docs/configuration.md advises on a busy host; 0: not)",
    )
    p.add_argument(
        "--probes",
        type=int,
        default=0,
        metavar="N",
        help="after the measured window, N show sessions and N reloads changing one peer "
        "(the daemon under test then runs from a file; needs --lateness): their seconds, "
        "flaps and timer lateness",
    )

    p = sub.add_parser("side-by-side", help="the issue's points with ours and aiobfd 0.2, ratios")
    add_common(p)
    p.add_argument("-d", "--duration", type=float, default=30.0, help="seconds per point")
    p.add_argument("--trials", type=int, default=10, help="detection trials per point (ours)")
    p.add_argument("--big-sessions", type=int, default=1000)
    p.add_argument("--big-peer", choices=PEERS, default="ours")
    p.add_argument("--big-duration", type=float, default=30.0)
    p.add_argument("--big-trials", type=int, default=100)
    p.add_argument("--fast-duration", type=float, default=30.0, help="20 @ 10 ms run")
    p.add_argument(
        "--detect-interval",
        type=int,
        default=300,
        help="also run the big session count at this interval for the detection trials (0: no)",
    )
    p.add_argument("--detect-duration", type=float, default=15.0)
    p.add_argument("--no-extras", action="store_true", help="skip 100 @ 1 s and 20 @ 10 ms")
    p.add_argument("--uvloop", action="store_true", help="also run ours on uvloop at each point")

    p = sub.add_parser("sweep", help="CPU against sessions at one interval")
    add_common(p)
    p.add_argument("-i", "--interval", type=int, default=100)
    p.add_argument("-m", "--mult", type=int, default=3)
    p.add_argument("-n", "--sessions", type=parse_list, default=[10, 25, 50, 100, 200])
    p.add_argument("--duts", default="ours,aiobfd02")
    p.add_argument("--peer", choices=PEERS, default="frr")
    p.add_argument("-d", "--duration", type=float, default=20.0)

    p = sub.add_parser(
        "curve", help="our daemon on both sides at several sizes and intervals, the floor beside it"
    )
    add_common(p)
    p.add_argument("-n", "--sessions", type=parse_list, default=[1000, 2000, 5000])
    p.add_argument("-i", "--intervals", type=parse_list, default=[300, 1000], help="ms")
    p.add_argument("--extra", default="1000@50", help="more points, N@MS comma-separated")
    p.add_argument("-d", "--duration", type=float, default=30.0, help="measured seconds a run")
    p.add_argument("--trials", type=int, default=20, help="detection trials a point")
    p.add_argument("--per-trial", type=int, default=5, help="peers silenced at once")
    p.add_argument(
        "--floor", default="call,batch", help="bench/floor.py variants at each point ('': none)"
    )
    p.add_argument(
        "--start-with",
        choices=["daemon", "floor"],
        default="daemon",
        help="what runs first at the first point (then alternately)",
    )
    p.add_argument("--suite", default="curve", help="suite name recorded with the results")

    p = sub.add_parser("plot", help="PNG pictures from a results file")
    p.add_argument("--results", default=str(DEFAULT_RESULTS))
    p.add_argument("--out", default=str(ROOT / "docs" / "img"))
    p.add_argument("--only", help="one picture: cpu_sessions, side_by_side, detection or curve")
    p.add_argument(
        "--curve-suite", default="curve", help="the curve picture: runs of this suite (curve)"
    )

    p = sub.add_parser(
        "table", help="print a results file: table, side-by-side ratios, targets (last run wins)"
    )
    p.add_argument("--results", default=str(DEFAULT_RESULTS))
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--suite", default=None, help="only runs of this suite")
    p.add_argument(
        "--curve", action="store_true", help="the scale curve: daemon and floor side by side"
    )

    sub.add_parser("cleanup", help="remove namespaces left by a killed run")

    opts = parser.parse_args(argv)
    if opts.command in ("run", "side-by-side", "sweep", "curve") and hasattr(
        os, "sched_setaffinity"
    ):
        # The harness (and the ip and nft it runs) on the peer's core: its
        # work, a burst of it at every detection trial, must not land on the
        # core of the daemon it measures.  The daemons are pinned by taskset.
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {PEER_CPU})
    if opts.command == "plot":
        from scaleplot import plot_all

        for path in plot_all(Path(opts.results), Path(opts.out), opts.only, opts.curve_suite):
            print(path)
        return 0
    if opts.command == "table" and opts.curve:
        curve_table(load_records(Path(opts.results), opts.suite or "curve"), opts.markdown)
        return 0
    if opts.command == "table":
        from scaleplot import load

        rows = [r for r in load(Path(opts.results)) if opts.suite in (None, r.get("suite"))]
        rows.sort(key=lambda r: r["ts"])
        print_table(rows, opts.markdown)
        if any(r.get("suite") == "side-by-side" for r in rows):
            ratios([r for r in rows if r.get("suite") == "side-by-side"])
        else:
            print()
            for line in targets(rows):
                print(line)
        return 0
    if os.geteuid() != 0:
        print("scale.py: needs root (network namespaces)", file=sys.stderr)
        return 2
    stale = cleanup_stale(NAMING)
    if stale:
        log(f"removed stale namespaces: {', '.join(stale)}")
    if opts.command == "cleanup":
        return 0
    # Ctrl-C unwinds too when started from a shell that ignores SIGINT in the background.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGHUP, _on_sigterm)
    if getattr(opts, "core", "python") == "mypyc":
        compiled_core()  # before any namespace exists
    if opts.command == "curve":
        t0 = time.monotonic()
        try:
            records = curve(opts)
        except (KeyboardInterrupt, Interrupted):
            log("interrupted; namespaces removed")
            return 130
        print()
        print(f"{len(records)} run(s) in {time.monotonic() - t0:.0f} s; machine: "
              f"{json.dumps(machine())}")  # fmt: skip
        curve_table(records, opts.markdown)
        print(f"\nresults appended to {opts.results}")
        return 0
    if opts.command == "run":
        specs = [
            RunSpec(
                dut=opts.dut,
                peer=opts.peer,
                sessions=opts.sessions,
                interval_ms=opts.interval,
                mult=opts.mult,
                duration_s=opts.duration,
                trials=opts.trials,
                per_trial=opts.per_trial,
                family=opts.family,
                locals=opts.locals,
                settle_s=opts.settle,
                suite=opts.suite,
            )
        ]
    elif opts.command == "side-by-side":
        specs = side_by_side_specs(opts)
    else:
        specs = [
            RunSpec(
                dut=d,
                peer=opts.peer,
                sessions=n,
                interval_ms=opts.interval,
                mult=opts.mult,
                duration_s=opts.duration,
                family=opts.family,
                suite="sweep",
            )
            for n in opts.sessions
            for d in opts.duts.split(",")
        ]
    t0 = time.monotonic()
    try:
        results = execute(specs, opts)
    except (KeyboardInterrupt, Interrupted):
        log("interrupted; namespaces removed")
        return 130
    print()
    print(
        f"{len(results)} run(s) in {time.monotonic() - t0:.0f} s; machine: {json.dumps(machine())}"
    )
    print_table(results, opts.markdown)
    if opts.command == "side-by-side":
        ratios(results)
    print(f"\nresults appended to {opts.results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
