"""Echo benchmark: detection latency, steady-state false Downs and CPU of the Echo function.

Everything runs in network namespaces of aiobfd's own lab (``aiobfd.lab``, the
integration tests' topology: 'host' 198.51.100.1 -- veth -- 'peer' 198.51.100.2,
documentation addresses only), removed afterwards.  Root only.

``unaffiliated`` (RFC 9747): 'peer' is a plain Linux router (``ip_forward=1``,
no BFD); our daemon in 'host' runs an unaffiliated echo session toward it at
``--echo-interval 50 -m 3`` (Detection Time 150 ms).  Each trial waits until the
session has been Up for a while (plus a random 0-100 ms, so the failure falls at
any phase of the echo timer), then stops the forwarding with one ``nft`` command
(a table whose forward chain has policy drop) and reads the session's Down from
the control socket: the daemon's own CLOCK_MONOTONIC timestamp of the change
(``last_state_change_monotonic``), the same clock as this process's
``time.monotonic()``.  Latency = that Down - the end of the ``nft`` command (the
drop is in force from then at the latest; ``nft_ms`` says how long the command
took, by which the true latency may be longer).  The diag must be 2, Echo
Function Failed.  Then the table is deleted and the session must come Up again.
After the trials, ``--soak`` seconds of steady echo: Down events (false Downs)
counted by the session's counters, and the largest gap between two echo packets
that came back (the daemon's ``max_rx_gap_ms``, reset at each Up, and a dumpcap
capture on the host's veth when dumpcap is installed).

``frr`` (RFC 5880 §6.4, with FRR 8.4 in 'peer', ``echo receive-interval 50``,
'peer' forwarding): our daemon's Control session (``-r 300 -t 300``) runs our
echo at ``--echo-interval 50 -m 3``; a trial drops UDP 3785 in the forward chain
of 'peer'.  The session comes back Up through the Control packets within a few
ms and fails again while the drop lasts, so the first Down is read from the
daemon's log (wall clock, millisecond resolution).  Then the same soak.

``cpu``: CPU of our daemon (user + system from /proc/PID/stat over
``--cpu-seconds``, pinned to CPU 0) with 100 unaffiliated echo sessions at 50 ms
x 3 (100 gateway addresses on the router's veth, one MAC: every session's echo
goes through the one router), against the same daemon with 100 Control sessions
at 50 ms x 3 toward a second aiobfd in 'peer' (pinned to CPU 1) - no echo, the
same packet rate per session (20 out and 20 in a second).

    python bench/echo.py [--trials 50] [--soak 120] [--frr-trials 20] [--cpu-seconds 30]
    python bench/echo.py --only unaffiliated,cpu

Each part prints one JSON line and appends it to bench/results/echo.jsonl
(``--results``).  Before measuring it waits (polling every 20 s) until no CI run
(``.ci/run``) and no ``bench/scale.py`` is running; ``--no-wait`` skips that.
Needs: root, iproute2, nftables, taskset; FRR (``apt-get install frr``) for
``frr``; dumpcap (``apt-get install tshark``) for the capture's gap.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import itertools
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
from pathlib import Path
from typing import Any

from aiobfd.client import ClientError, request
from aiobfd.lab import (
    FrrPeer,
    FrrSession,
    Lab,
    LabError,
    Naming,
    OurDaemon,
    aiobfd_command,
    cleanup_stale,
    daemon_env,
    frr_version,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RESULTS = ROOT / "bench" / "results" / "echo.jsonl"
NAMING = Naming("abfde-", "ae")
"""This benchmark's namespaces and links: apart from the tests' and the other benches'."""
ECHO_MS = 50
MULT = 3
DETECT_MS = ECHO_MS * MULT
TARGET_P99_MS = DETECT_MS + 20
TABLE = "aiobfd_echo_bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")
Json = dict[str, Any]


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
    }


def busy() -> list[str]:
    """Which of a CI run and a scale benchmark run now."""
    return [
        pattern
        for pattern in (".ci/run", "bench/scale.py")
        if subprocess.run(["pgrep", "-f", pattern], capture_output=True, check=False).stdout
    ]


def wait_quiet(poll_s: float = 20.0) -> None:
    """Wait until no CI run and no scale benchmark shares the machine."""
    while True:
        running = busy()
        if not running:
            return
        log(f"waiting: {', '.join(running)} running (polling every {poll_s:g} s)")
        time.sleep(poll_s)


def nearest_rank(values: Sequence[float], q: float) -> float:
    """The q-quantile by nearest rank (with 50 values, p99 is the largest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def summary(latencies_ms: Sequence[float]) -> Json:
    if not latencies_ms:
        return {"n": 0}
    return {
        "n": len(latencies_ms),
        "min_ms": round(min(latencies_ms), 1),
        "p50_ms": round(statistics.median(latencies_ms), 1),
        "p99_ms": round(nearest_rank(latencies_ms, 0.99), 1),
        "max_ms": round(max(latencies_ms), 1),
    }


def save(result: Json, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(result) + "\n")
    print(json.dumps(result), flush=True)


@contextmanager
def echo_lab() -> Iterator[Lab]:
    """The tests' two-namespace lab under this benchmark's names; 'peer' forwards and
    'host' accepts its own address as the source of what comes back."""
    cleanup_stale(NAMING)
    with Lab(NAMING) as lab:
        lab.sysctl("peer", "net.ipv4.ip_forward", 1)
        lab.sysctl("host", f"net.ipv4.conf.{lab.host.ifname}.accept_local", 1)
        yield lab


def nft_drop(lab: Lab, rule: str = "") -> tuple[float, float]:
    """Stop the forwarding in 'peer' (all of it, or what `rule` matches);
    (monotonic before, monotonic after) the nft command."""
    chain = (
        f"add chain inet {TABLE} forward {{ type filter hook forward priority 0 ; }} ; "
        f"add rule inet {TABLE} forward {rule} drop"
        if rule
        else f"add chain inet {TABLE} forward "
        "{ type filter hook forward priority 0 ; policy drop ; }"
    )
    before = time.monotonic()
    lab.run("peer", "nft", f"add table inet {TABLE} ; {chain}")
    return before, time.monotonic()


def nft_restore(lab: Lab) -> None:
    lab.run("peer", "nft", "delete", "table", "inet", TABLE)


class Capture:
    """dumpcap on the host's veth, UDP 3785; `gaps()` the largest gap between echo
    packets that came back (source = destination = our address, TTL 254)."""

    def __init__(self, lab: Lab, seconds: float) -> None:
        self.lab = lab
        self.path = Path(tempfile.mkstemp(prefix="echo-bench-", suffix=".pcap")[1])
        self.proc: subprocess.Popen[bytes] | None = None
        if shutil.which("dumpcap") and shutil.which("tshark"):
            self.proc = lab.popen(
                "host",
                "dumpcap",
                "-q",
                "-i",
                lab.host.ifname,
                "-f",
                "udp port 3785",
                "-a",
                f"duration:{seconds:g}",
                "-w",
                str(self.path),
            )

    def max_gap_ms(self) -> float | None:
        if self.proc is None:
            return None
        try:
            self.proc.wait(30)
            ours = self.lab.host.ipv4
            out = subprocess.run(
                [
                    *("tshark", "-r", str(self.path), "-T", "fields", "-E", "separator=,"),
                    *("-e", "frame.time_epoch", "-e", "ip.src", "-e", "ip.dst", "-e", "ip.ttl"),
                ],
                capture_output=True,
                text=True,
                timeout=120,
                check=True,
            ).stdout
        finally:
            self.path.unlink(missing_ok=True)
        times = [
            float(t)
            for t, src, dst, ttl in (line.split(",") for line in out.splitlines() if line)
            if src == ours and dst == ours and ttl == "254"
        ]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        return round(max(gaps) * 1000, 1) if gaps else None


def backlog_drops() -> int:
    """Packets the kernel dropped on a full per-CPU input backlog, all CPUs and
    namespaces (/proc/net/softnet_stat, second column): a veth's receive side."""
    return sum(
        int(line.split()[1], 16) for line in Path("/proc/net/softnet_stat").read_text().splitlines()
    )


def settle() -> None:
    """Steady at the fast rate, and a random phase of the echo timer."""
    time.sleep(2 * DETECT_MS / 1000 + random.uniform(0, 0.1))


# -- unaffiliated echo -------------------------------------------------------------------


def unaffiliated(opts: argparse.Namespace) -> Json:
    with echo_lab() as lab:
        remote = lab.peer.ipv4
        ours = OurDaemon(
            lab,
            "host",
            lab.host.ipv4,
            [remote],
            "--unaffiliated-echo",
            "--echo-interval",
            str(ECHO_MS),
            "-m",
            str(MULT),
            log_level="INFO",
        ).start()
        ours.wait_state(remote, "up", 15)
        trials: list[Json] = []
        failures: list[str] = []
        for n in range(opts.trials):
            ours.wait_state(remote, "up", 15)
            settle()
            before, after = nft_drop(lab)
            try:
                info = ours.wait_state(remote, "down", 5)
            except LabError as exc:
                failures.append(f"trial {n}: no Down: {exc}".splitlines()[0])
                nft_restore(lab)
                continue
            nft_restore(lab)
            down = float(info["last_state_change_monotonic"])
            last_rx = info["last_rx_monotonic"]
            trials.append(
                {
                    "latency_ms": round((down - after) * 1000, 2),
                    "nft_ms": round((after - before) * 1000, 2),
                    "since_last_rx_ms": (
                        round((down - float(last_rx)) * 1000, 2) if last_rx is not None else None
                    ),
                    "diag": info["local_diag"],
                }
            )
            if (n + 1) % 10 == 0:
                log(f"unaffiliated echo: trial {n + 1}/{opts.trials}")
        latencies = [t["latency_ms"] for t in trials]
        wrong_diag = sum(1 for t in trials if t["diag"] != 2)
        soak = steady(lab, ours, remote, opts.soak, unaffiliated=True)
        ours.stop()
    result: Json = {
        "part": "unaffiliated",
        "interval_ms": ECHO_MS,
        "detect_mult": MULT,
        "detect_time_ms": DETECT_MS,
        "failure": "nft forward chain policy drop in the router",
        "detection": {
            **summary(latencies),
            "trials": opts.trials,
            "missed": len(failures),
            "wrong_diag": wrong_diag,
            "target_p99_ms": TARGET_P99_MS,
            "met": bool(latencies)
            and not failures
            and not wrong_diag
            and nearest_rank(latencies, 0.99) <= TARGET_P99_MS,
            "nft_max_ms": round(max((t["nft_ms"] for t in trials), default=0), 2),
            "latency_ms": sorted(latencies),
            "failures": failures,
        },
        "soak": soak,
    }
    return result


def steady(lab: Lab, ours: OurDaemon, remote: str, seconds: float, unaffiliated: bool) -> Json:
    """`seconds` of echo with nothing done to the path: Down events, packets, gaps."""
    ours.wait_state(remote, "up", 15)
    if not unaffiliated:
        ours.wait(lambda: ours.session(remote)["echo"]["active"], 10, "our echo active")
    time.sleep(1)
    first = ours.session(remote)
    backlog0 = backlog_drops()
    capture = Capture(lab, seconds)
    time.sleep(seconds)
    last = ours.session(remote)
    backlog = backlog_drops() - backlog0
    others = busy()
    gap = capture.max_gap_ms()
    c0, c1 = first["counters"], last["counters"]
    e0, e1 = first["echo"], last["echo"]
    result: Json = {
        "seconds": seconds,
        "false_downs": c1["session_down"] - c0["session_down"],
        "state_at_end": last["state"],
        "echo_out": e1["packets_out"] - e0["packets_out"],
        "echo_back": e1["packets_in"] - e0["packets_in"],
        "max_gap_back_ms_capture": gap,
        "drops": c1["drops"],
        "send_errors": c1["send_errors"],
        "send_errors_in_soak": {
            k: v - c0["send_errors"].get(k, 0)
            for k, v in c1["send_errors"].items()
            if v != c0["send_errors"].get(k, 0)
        },
        "backlog_drops_machine": backlog,
        "others_running_at_end": others,
    }
    if unaffiliated:
        result["max_rx_gap_ms_daemon"] = last["max_rx_gap_ms"]
    else:
        result["echo_detection_expiries"] = e1["detection_expiries"] - e0["detection_expiries"]
        result["control_in"] = c1["packets_in"] - c0["packets_in"]
    return result


# -- RFC 5880 echo with FRR --------------------------------------------------------------


def _echo_down_wall(log_path: Path, offset: int) -> float | None:
    """Wall clock of the first 'UP -> DOWN (diag echo_function_failed)' after `offset`."""
    with log_path.open("rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    for line in text.splitlines():
        if "UP -> DOWN (diag echo_function_failed)" in line:
            stamp = dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
            return stamp.timestamp()
    return None


def frr(opts: argparse.Namespace) -> Json:
    with echo_lab() as lab, tempfile.TemporaryDirectory(prefix="echo-bench-frr-") as work:
        ours_ip, frr_ip = lab.host.ipv4, lab.peer.ipv4
        session = FrrSession(
            ours_ip, frr_ip, rx_ms=300, tx_ms=300, multiplier=3, interface=lab.peer.ifname
        )
        peer = FrrPeer(lab, "peer", Path(work), [session])
        peer.start(15)
        try:
            peer.instance.vtysh(
                "bfdd", "configure terminal", "bfd", session.key, f"echo receive-interval {ECHO_MS}"
            )
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
                log_level="INFO",
            ).start()

            def active() -> bool:
                info = ours.session(frr_ip)
                return bool(info["state"] == "up" and info["echo"] and info["echo"]["active"])

            ours.wait(active, 20, "our echo active")
            trials: list[Json] = []
            failures: list[str] = []
            for n in range(opts.frr_trials):
                ours.wait(active, 20, "our echo active")
                time.sleep(3 * DETECT_MS / 1000 + random.uniform(0, 0.1))
                offset = ours.log.stat().st_size
                wall_before = time.time()
                before, after = nft_drop(lab, "udp dport 3785")
                wall_after = wall_before + (after - before)
                try:
                    down = wait_until(
                        functools.partial(_echo_down_wall, ours.log, offset),
                        5,
                        "Down, diag 2, in the log",
                    )
                except LabError as exc:
                    failures.append(f"trial {n}: {exc}")
                    continue
                finally:
                    nft_restore(lab)
                trials.append(
                    {
                        "latency_ms": round((down - wall_after) * 1000, 1),
                        "nft_ms": round((after - before) * 1000, 2),
                    }
                )
                if (n + 1) % 10 == 0:
                    log(f"RFC 5880 echo with FRR: trial {n + 1}/{opts.frr_trials}")
            latencies = [t["latency_ms"] for t in trials]
            soak = steady(lab, ours, frr_ip, opts.frr_soak, unaffiliated=False)
            frr_peer = peer.peer(ours_ip) or {}
            ours.stop()
        finally:
            peer.stop()
    return {
        "part": "frr",
        "interval_ms": ECHO_MS,
        "detect_mult": MULT,
        "detect_time_ms": DETECT_MS,
        "control_ms": 300,
        "failure": "nft drop of UDP 3785 in FRR's forward chain",
        "detection": {
            **summary(latencies),
            "trials": opts.frr_trials,
            "missed": len(failures),
            "target_p99_ms": TARGET_P99_MS,
            "met": bool(latencies)
            and not failures
            and nearest_rank(latencies, 0.99) <= TARGET_P99_MS,
            "nft_max_ms": round(max((t["nft_ms"] for t in trials), default=0), 2),
            "resolution_ms": 1,
            "latency_ms": sorted(latencies),
            "failures": failures,
        },
        "soak": soak,
        "frr_status_at_end": frr_peer.get("status"),
    }


# -- CPU ---------------------------------------------------------------------------------


def proc_cpu_s(pid: int) -> tuple[float, float]:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def _all_up(sock: Path, n: int) -> Callable[[], bool]:
    def probe() -> bool:
        try:
            sessions = request(str(sock), {"command": "show sessions"})["sessions"]
        except (ClientError, OSError):
            return False
        return sum(1 for s in sessions if s["state"] == "up") >= n

    return probe


def _downs(sock: Path) -> int:
    sessions = request(str(sock), {"command": "show sessions"})["sessions"]
    return sum(int(s.get("counters", {}).get("session_down", 0)) for s in sessions)


def cpu_point(opts: argparse.Namespace, echo: bool) -> Json:
    n = opts.cpu_sessions
    gateways = [f"198.51.100.{10 + i}" for i in range(n)]
    with echo_lab() as lab:
        lab.ip_batch("peer", [f"addr add {g}/24 dev {lab.peer.ifname}" for g in gateways])
        env = daemon_env()
        if not echo:
            peers = "\n".join(
                f'[[peers]]\nremote = "{lab.host.ipv4}"\nlocal = "{g}"\n' for g in gateways
            )
            conf = lab.rundir / "peer.toml"
            conf.write_text(
                "[daemon]\nmetrics_port = 0\n"
                f'control_socket = "{lab.rundir / "p.sock"}"\n'
                f"[defaults]\ntx_interval_ms = {ECHO_MS}\nrx_interval_ms = {ECHO_MS}\n"
                f"detect_mult = {MULT}\n{peers}"
            )
            lab.popen(
                "peer",
                *aiobfd_command("--config", str(conf), "-l", "WARNING"),
                cpu=1,
                extra_env=env,
                log=lab.rundir / "peer.log",
            )
        mode = (
            ["--unaffiliated-echo", "--echo-interval", str(ECHO_MS)]
            if echo
            else ["-r", str(ECHO_MS), "-t", str(ECHO_MS)]
        )
        sock = lab.rundir / "h.sock"
        proc = lab.popen(
            "host",
            *aiobfd_command(
                lab.host.ipv4,
                *gateways,
                *mode,
                "-m",
                str(MULT),
                "--control-socket",
                str(sock),
                "--metrics-port",
                "0",
                "-l",
                "WARNING",
            ),
            cpu=0,
            extra_env=env,
            log=lab.rundir / "host.log",
        )
        wait_until(_all_up(sock, n), 60, f"{n} sessions Up")
        time.sleep(3)
        downs0 = _downs(sock)
        u0, s0 = proc_cpu_s(proc.pid)
        t0 = time.monotonic()
        time.sleep(opts.cpu_seconds)
        u1, s1 = proc_cpu_s(proc.pid)
        wall = time.monotonic() - t0
        others = busy()  # started meanwhile: the figure is disturbed
        downs = _downs(sock) - downs0
        up_at_end = sum(
            1
            for s in request(str(sock), {"command": "show sessions"})["sessions"]
            if s["state"] == "up"
        )
    user, system = (u1 - u0) / wall, (s1 - s0) / wall
    return {
        "mode": "unaffiliated_echo" if echo else "control",
        "sessions": n,
        "up_at_end": up_at_end,
        "downs": downs,
        "cpu_pct": round(100 * (user + system), 2),
        "user_pct": round(100 * user, 2),
        "system_pct": round(100 * system, 2),
        "cpu_pct_per_session": round(100 * (user + system) / n, 4),
        "seconds": round(wall, 1),
        "others_running_at_end": others,
    }


def cpu(opts: argparse.Namespace) -> Json:
    points = []
    for echo in (True, False):
        log(f"CPU: {opts.cpu_sessions} {'echo' if echo else 'control'} sessions")
        points.append(cpu_point(opts, echo))
    return {
        "part": "cpu",
        "interval_ms": ECHO_MS,
        "detect_mult": MULT,
        "event_loop": "uvloop" if _has_uvloop() else "asyncio",
        "points": points,
    }


def _has_uvloop() -> bool:
    import importlib.util

    return importlib.util.find_spec("uvloop") is not None


# -- main --------------------------------------------------------------------------------

PARTS: dict[str, Callable[[argparse.Namespace], Json]] = {
    "unaffiliated": unaffiliated,
    "frr": frr,
    "cpu": cpu,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=50, help="unaffiliated echo trials")
    parser.add_argument("--soak", type=float, default=120, help="seconds of steady echo")
    parser.add_argument("--frr-trials", type=int, default=20, help="RFC 5880 echo trials")
    parser.add_argument("--frr-soak", type=float, default=None, help="default: --soak")
    parser.add_argument("--cpu-sessions", type=int, default=100)
    parser.add_argument("--cpu-seconds", type=float, default=30)
    parser.add_argument("--only", default="unaffiliated,frr,cpu", help="parts, comma-separated")
    parser.add_argument("--results", default=str(DEFAULT_RESULTS), help="JSON lines (appended)")
    parser.add_argument("--no-wait", action="store_true", help="do not wait for a quiet machine")
    opts = parser.parse_args(argv)
    if opts.frr_soak is None:
        opts.frr_soak = opts.soak
    if os.geteuid() != 0:
        parser.error("needs root (network namespaces, CAP_NET_RAW)")
    parts = [p.strip() for p in opts.only.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts: {sorted(unknown)}")
    info = machine()
    status = 0
    for part in parts:
        if not opts.no_wait:
            wait_quiet()
        log(f"{part}: start")
        started = time.monotonic()
        try:
            result = PARTS[part](opts)
        except LabError as exc:
            result = {"part": part, "error": str(exc)}
            status = 1
        result["elapsed_s"] = round(time.monotonic() - started, 1)
        result["date"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        result["machine"] = info
        save(result, Path(opts.results))
    return status


if __name__ == "__main__":
    sys.exit(main())
