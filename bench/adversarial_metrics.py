"""The /metrics endpoint under a slowloris (issue 18), against two daemon processes.

Two ``aiobfd`` processes over loopback, in a private network namespace: A
(127.0.0.1, serving /metrics on 127.0.0.1:13784) and B (127.0.0.2), one
session at 50 ms x 3.  Once the pair is Up, an attacker process opens
``--connections`` TCP connections to A's endpoint and never finishes a request:
odd ones send an unfinished head and then one more header byte every
``--trickle`` seconds, even ones send nothing.  Each connection the daemon
closes is opened again (``--no-reconnect``: not), for ``--duration`` seconds.
Meanwhile a scraper GETs /metrics every second (30 s timeout), a pinger asks
A's control socket for its version every 50 ms, and a monitor reads A's file
descriptors and RSS from /proc every 0.2 s.  At the end, the attack still on,
A gets SIGTERM.

Figures: Down events of either side (flaps), the largest receive gap each
session counted while Up, the largest gap between each daemon's packets as
they left (captured on lo), A's RSS growth and most descriptors held, the
scrapes' latency and failures, A's control socket's worst answer time, A's CPU
time, how long each daemon waited for a CPU (schedstat: on a small machine
the attacker and the kernel's work for it compete with both daemons), SIGTERM
to exit, and the endpoint's own counters (``aiobfd_http_*``, when A has them).
A scrape still waiting when the attack ends is reported, not waited for.  Run
it as root; to compare with an older tree::

    git worktree add /tmp/metrics-before HEAD
    PYTHONPATH=/tmp/metrics-before/src python bench/adversarial_metrics.py
    python bench/adversarial_metrics.py
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import multiprocessing
import os
import resource
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

AIOBFD = [sys.executable, "-m", "aiobfd"]
A, B = "127.0.0.1", "127.0.0.2"
METRICS_PORT = 13784
URL = f"http://{A}:{METRICS_PORT}/metrics"
PARTIAL = b"GET /metrics HTTP/1.1\r\nHost: aiobfd\r\nX-Slow: "
Json = dict[str, Any]
# Linux's values, which Python's socket module does not name.
SO_ATTACH_FILTER = 26
SO_TIMESTAMPNS = 35


def enter_namespace() -> None:
    """Re-run this script in a private network namespace (as root)."""
    if os.environ.get("AIOBFD_BENCH_NS") == "1":
        return
    if os.geteuid() != 0:
        raise SystemExit("run as root: the bench makes a network namespace")
    os.environ["AIOBFD_BENCH_NS"] = "1"
    unshare = shutil.which("unshare") or "unshare"
    os.execvp(unshare, [unshare, "-n", "--", sys.executable, *sys.argv])


def raise_nofile() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard one (the daemons inherit it)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# ------------------------------------------------------------ the daemons


def request(path: Path, payload: Json, timeout: float) -> Json:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(json.dumps(payload).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            buf += chunk
    answer: Json = json.loads(buf)
    return answer


def wait_for(probe: Callable[[], Any], what: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.02)


class Proc:
    def __init__(self, tmp: Path, name: str, args: list[str]) -> None:
        self.name = name
        self.sock = tmp / f"{name}.sock"
        self.log = tmp / f"{name}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [*AIOBFD, *args, "-l", "INFO", "--control-socket", str(self.sock)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_for(self.answers, f"{name} to answer", 20)

    def answers(self) -> bool:
        if self.proc.poll() is not None:
            raise SystemExit(f"{self.name} exited:\n{self.log.read_text(errors='replace')}")
        try:
            request(self.sock, {"command": "version"}, 1)
        except OSError:
            return False
        return True

    def session(self, remote: str) -> Json:
        info: Json = request(self.sock, {"command": "show session", "peer": remote}, 60)["session"]
        return info

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def run_delay_s(self) -> float:
        """Time its threads waited for a CPU (schedstat), in seconds."""
        total = 0
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            with contextlib.suppress(OSError):
                total += int((task / "schedstat").read_text().split()[1])
        return total / 1e9

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextlib.contextmanager
def pair(tmp: Path, args: argparse.Namespace) -> Iterator[tuple[Proc, Proc]]:
    timers = ["-r", "50", "-t", "50", "-m", "3", "--event-loop", args.loop]
    a = Proc(tmp, "a", [A, B, *timers, "--metrics-address", A, "--metrics-port", str(METRICS_PORT)])
    b: Proc | None = None
    try:
        b = Proc(tmp, "b", [B, A, *timers, "--metrics-port", "0"])
        wait_for(lambda: a.session(B)["state"] == "up", "Up", 20)
        wait_for(lambda: b is not None and b.session(A)["state"] == "up", "Up", 20)
        wait_for(lambda: not a.session(B)["poll_active"], "polls to end", 20)
        yield a, b
    finally:
        if b is not None:
            b.stop()
        a.stop()


# ------------------------------------------------------ watchers


class Every:
    """Runs ``probe`` every ``period`` seconds in a thread until stopped."""

    def __init__(self, period: float, probe: Callable[[], None]) -> None:
        self.period = period
        self.probe = probe
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.probe()
            self._stop.wait(max(0.0, self.period - (time.monotonic() - started)))

    def stop(self) -> None:
        """Stop; a probe still running (a scrape waiting for its answer) is left to end alone."""
        self._stop.set()
        self._thread.join(0.5)


class Watch:
    """A's descriptors and RSS (every 0.2 s), its control socket's answer time
    (every 50 ms) and /metrics (a GET every second)."""

    def __init__(self, a: Proc) -> None:
        self.a = a
        self.rss0 = a.rss_kb()
        self.fds0 = a.fds()
        self.rss_max = self.rss0
        self.fds_max = self.fds0
        self.control_worst = 0.0
        self.scrapes: list[float] = []
        self.failures: dict[str, int] = {}
        self.scraping_since: float | None = None
        self._threads = [
            Every(0.2, self._proc),
            Every(0.05, self._ping),
            Every(1.0, self._scrape),
        ]

    def _proc(self) -> None:
        with contextlib.suppress(OSError):
            self.fds_max = max(self.fds_max, self.a.fds())
            self.rss_max = max(self.rss_max, self.a.rss_kb())

    def _ping(self) -> None:
        started = time.monotonic()
        with contextlib.suppress(OSError, ValueError):
            request(self.a.sock, {"command": "version"}, 60)
        self.control_worst = max(self.control_worst, time.monotonic() - started)

    def _scrape(self) -> None:
        started = self.scraping_since = time.monotonic()
        try:
            with urllib.request.urlopen(URL, timeout=30) as answer:
                body = answer.read()
            if b"aiobfd_session_up{" not in body:
                raise ValueError("no aiobfd_session_up")
        except Exception as exc:
            reason = getattr(exc, "reason", None)
            name = type(exc).__name__ + (f" ({reason})" if reason else "")
            self.failures[name] = self.failures.get(name, 0) + 1
            return
        finally:
            self.scraping_since = None
        self.scrapes.append(time.monotonic() - started)

    def stop(self) -> None:
        for thread in self._threads:
            thread.stop()


def endpoint_counters() -> dict[str, float]:
    """A's aiobfd_http_* samples (empty if it has none, or /metrics does not answer)."""
    out: dict[str, float] = {}
    try:
        with urllib.request.urlopen(URL, timeout=30) as answer:
            text = answer.read().decode()
    except OSError as exc:
        return {"unanswered": 1.0, type(exc).__name__: 1.0}
    for line in text.splitlines():
        if line.startswith("aiobfd_http_"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def pair_capture() -> socket.socket:
    """A packet socket on lo that sees only the pair's packets (A <-> B),
    stamped by the kernel as they are sent."""
    ip_a, ip_b = (int.from_bytes(socket.inet_aton(x), "big") for x in (A, B))
    code = [  # classic BPF over the (all-zero) Ethernet header of lo
        (0x28, 0, 0, 12),  # ldh [12]: EtherType
        (0x15, 0, 10, 0x0800),  # IPv4, else drop
        (0x30, 0, 0, 23),  # ldb [23]: protocol
        (0x15, 0, 8, 17),  # UDP, else drop
        (0x20, 0, 0, 26),  # ld [26]: source
        (0x15, 1, 0, ip_a),  # A: check the destination is B
        (0x15, 2, 5, ip_b),  # B: check the destination is A; else drop
        (0x20, 0, 0, 30),  # ld [30]: destination
        (0x15, 2, 3, ip_b),
        (0x20, 0, 0, 30),
        (0x15, 0, 1, ip_a),
        (0x06, 0, 0, 0xFFFF),  # accept
        (0x06, 0, 0, 0),  # drop
    ]
    prog = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *i) for i in code))
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    sock.setsockopt(
        socket.SOL_SOCKET, SO_ATTACH_FILTER, struct.pack("HL", len(code), ctypes.addressof(prog))
    )
    sock.bind(("lo", 0))
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    return sock


def wire(ready: Connection, ctl: Connection) -> None:
    """The largest gap between the pair's packets as each daemon sent them,
    until told to stop: whatever either daemon believes, this is when each
    one's packets left."""
    sock = pair_capture()
    sock.settimeout(0.1)
    ready.send(True)
    last: dict[bytes, float] = {}
    gaps: dict[bytes, float] = {}
    while not ctl.poll():
        try:
            frame, anc, _flags, addr = sock.recvmsg(64, 64)
        except TimeoutError:
            continue
        if addr[2] != 4:  # PACKET_OUTGOING: as sent (lo shows each packet twice)
            continue
        stamp = 0.0
        for level, kind, value in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = struct.unpack("qq", value[:16])
                stamp = sec + nsec / 1e9
        src = frame[26:30]
        if src in last:
            gaps[src] = max(gaps.get(src, 0.0), stamp - last[src])
        last[src] = stamp
    ctl.send(
        {
            "a_sent": round(gaps.get(socket.inet_aton(A), 0.0) * 1000, 1),
            "b_sent": round(gaps.get(socket.inet_aton(B), 0.0) * 1000, 1),
        }
    )


# ------------------------------------------------------------ the attacker


def attack(count: int, trickle: float, reconnect: bool, ready: Connection, ctl: Connection) -> None:
    """Hold ``count`` connections to A's endpoint until told to stop."""
    raise_nofile()
    poll = select.epoll()
    socks: dict[int, tuple[socket.socket, int]] = {}
    connected: set[int] = set()
    stats = {"opened": 0, "closed_by_daemon": 0, "connect_failed": 0, "open_errors": 0}
    gone = select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP | select.EPOLLRDHUP

    def open_one(n: int) -> None:
        try:
            s = socket.socket()
        except OSError:
            stats["open_errors"] += 1
            return
        s.setblocking(False)
        s.connect_ex((A, METRICS_PORT))
        socks[s.fileno()] = (s, n)
        poll.register(s.fileno(), select.EPOLLOUT)
        stats["opened"] += 1

    for n in range(count):
        open_one(n)
    poll.register(ctl.fileno(), select.EPOLLIN)
    ready.send(True)
    next_trickle = time.monotonic() + trickle
    while True:
        for fd, ev in poll.poll(0.1):
            if fd == ctl.fileno():
                ctl.recv()
                held = len(connected)
                for s, _ in socks.values():
                    s.close()
                ctl.send({**stats, "connected_at_stop": held})
                return
            s, n = socks[fd]
            if ev & gone:
                stats["closed_by_daemon" if fd in connected else "connect_failed"] += 1
                connected.discard(fd)
                poll.unregister(fd)
                s.close()
                del socks[fd]
                if reconnect:
                    open_one(n)
            elif ev & select.EPOLLOUT:
                connected.add(fd)
                if n % 2:
                    with contextlib.suppress(OSError):
                        s.send(PARTIAL)
                poll.modify(fd, gone)
        if time.monotonic() >= next_trickle:
            next_trickle += trickle
            for fd in list(connected):
                s, n = socks[fd]
                if n % 2:
                    with contextlib.suppress(OSError):
                        s.send(b"a")


# ------------------------------------------------------------------ the run


def run(args: argparse.Namespace, tmp: Path) -> Json:
    ctx = multiprocessing.get_context("fork")
    with pair(tmp, args) as (a, b):
        time.sleep(0.5)
        down0 = (
            a.session(B)["counters"]["session_down"],
            b.session(A)["counters"]["session_down"],
        )
        wire_ready, wire_ready_in = ctx.Pipe(duplex=False)
        wire_ctl, wire_ctl_child = ctx.Pipe()
        capture = ctx.Process(target=wire, args=(wire_ready_in, wire_ctl_child))
        capture.start()
        wire_ready_in.close()
        wire_ready.recv()
        watch = Watch(a)
        cpu0 = a.cpu_s()
        wait0 = (a.run_delay_s(), b.run_delay_s())
        ready, ready_in = ctx.Pipe(duplex=False)
        ctl, ctl_child = ctx.Pipe()
        attacker = ctx.Process(
            target=attack,
            args=(args.connections, args.trickle, args.reconnect, ready_in, ctl_child),
        )
        attacker.start()
        ready_in.close()
        started = time.monotonic()
        ready.recv()  # EOFError if it failed
        opened_in = time.monotonic() - started
        time.sleep(max(0.0, started + args.duration - time.monotonic()))
        cpu = a.cpu_s() - cpu0
        waited = (a.run_delay_s() - wait0[0], b.run_delay_s() - wait0[1])
        watch.stop()
        since = watch.scraping_since
        unanswered_for = None if since is None else time.monotonic() - since
        wire_ctl.send("stop")
        wire_gaps = wire_ctl.recv() if wire_ctl.poll(10) else {}
        capture.join(10)
        a_info, b_info = a.session(B), b.session(A)
        counters = endpoint_counters()
        counters_at = time.monotonic() - started
        fds_now = a.fds()
        # SIGTERM, the attack still on.
        term = time.monotonic()
        a.proc.send_signal(signal.SIGTERM)
        try:
            a.proc.wait(30)
            sigterm_to_exit: float | None = time.monotonic() - term
        except subprocess.TimeoutExpired:
            sigterm_to_exit = None
        ctl.send("stop")
        attacker_stats = ctl.recv() if ctl.poll(30) else {}
        attacker.join(10)
    scrapes = watch.scrapes
    return {
        "connections": args.connections,
        "reconnect": args.reconnect,
        "attack_s": args.duration,
        "attacker_opened_all_in_s": round(opened_in, 2),
        "flaps": {
            "a_session_down": a_info["counters"]["session_down"] - down0[0],
            "b_session_down": b_info["counters"]["session_down"] - down0[1],
            "a_state": a_info["state"],
            "b_state": b_info["state"],
        },
        "largest_rx_gap_ms": {"a_from_b": a_info["max_rx_gap_ms"], "b_from_a": b_info["max_rx_gap_ms"]},
        "largest_gap_on_the_wire_ms": wire_gaps,
        "a_rss_growth_mb": round((watch.rss_max - watch.rss0) / 1024, 1),
        "a_fds": {"before": watch.fds0, "most": watch.fds_max, "at_the_end": fds_now},
        "scrapes": {
            "answered": len(scrapes),
            "failed": watch.failures,
            "median_s": round(statistics.median(scrapes), 3) if scrapes else None,
            "max_s": round(max(scrapes), 3) if scrapes else None,
            "waiting_at_the_end_s": None if unanswered_for is None else round(unanswered_for, 1),
        },
        "a_control_worst_answer_ms": round(watch.control_worst * 1000, 1),
        "a_cpu_s": round(cpu, 2),
        "waited_for_a_cpu_s": {"a": round(waited[0], 2), "b": round(waited[1], 2)},
        "sigterm_to_exit_s": None if sigterm_to_exit is None else round(sigterm_to_exit, 2),
        "a_endpoint_counters": counters,
        "counters_read_s_into_the_attack": round(counters_at, 1),
        "attacker": attacker_stats,
    }  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--connections", type=int, default=15_000)
    p.add_argument("--duration", type=float, default=16.0, help="seconds of attack")
    p.add_argument("--trickle", type=float, default=5.0, help="seconds between header bytes")
    p.add_argument("--no-reconnect", dest="reconnect", action="store_false")
    p.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto")
    args = p.parse_args()
    enter_namespace()
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    raise_nofile()
    import aiobfd

    print(f"aiobfd from {Path(aiobfd.__file__).parent}", flush=True)
    with tempfile.TemporaryDirectory(prefix="aiobfd-metrics-") as name:
        result = run(args, Path(name))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
