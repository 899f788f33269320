"""The /metrics endpoint under a slowloris (issue 18), against two daemon processes.

Two ``aiobfd`` processes over loopback, in a private network namespace: A
(127.0.0.1, serving /metrics on 127.0.0.1:13784) and B (127.0.0.2), one
session at 50 ms x 3.  Once the pair is Up, an attacker process opens
``--connections`` TCP connections to A's endpoint and never finishes a request:
odd ones send an unfinished head and then one more header byte every
``--trickle`` seconds, even ones send nothing.  Each connection the daemon
closes is opened again (``--no-reconnect``: not), for ``--duration`` seconds.
Meanwhile a scraper GETs /metrics every second (30 s timeout) - over one kept
HTTP/1.1 connection, made before the attack, as Prometheus scrapes
(``--scraper fresh``: a new connection each time) - a pinger asks
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
import functools
import http.client
import multiprocessing
import select
import socket
import statistics
import time
import urllib.request
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path

from adversarial_pair import (
    A,
    B,
    Every,
    Json,
    Pinger,
    Proc,
    SendGaps,
    downs,
    enter_namespace,
    flaps,
    raise_nofile,
    run_and_print,
    rx_gaps,
    sessions,
)
from adversarial_pair import pair as established

METRICS_PORT = 13784
URL = f"http://{A}:{METRICS_PORT}/metrics"
PARTIAL = b"GET /metrics HTTP/1.1\r\nHost: aiobfd\r\nX-Slow: "


# ------------------------------------------------------------ the daemons


@contextlib.contextmanager
def pair(tmp: Path, args: argparse.Namespace) -> Iterator[tuple[Proc, Proc]]:
    timers = ["-r", "50", "-t", "50", "-m", "3", "--event-loop", args.loop, "-l", "INFO"]
    metrics = ["--metrics-address", A, "--metrics-port", str(METRICS_PORT)]
    with established(
        functools.partial(Proc, tmp, "a", [A, B, *timers, *metrics]),
        functools.partial(Proc, tmp, "b", [B, A, *timers, "--metrics-port", "0"]),
    ) as (a, b):
        yield a, b


# ------------------------------------------------------ watchers


class Watch:
    """A's descriptors and RSS (every 0.2 s), its control socket's answer time
    (every 50 ms) and /metrics (a GET every second)."""

    def __init__(self, a: Proc, keepalive: bool = True) -> None:
        self.a = a
        self.keepalive = keepalive
        self._conn: http.client.HTTPConnection | None = None
        self.rss0 = a.rss_kb()
        self.fds0 = a.fds()
        self.rss_max = self.rss0
        self.fds_max = self.fds0
        self.pinger = Pinger(a.sock)
        self.scrapes: list[float] = []
        self.failures: dict[str, int] = {}
        self.scraping_since: float | None = None
        if keepalive:
            self._get()  # connected before the attack, as a running Prometheus is
        self._threads = [
            Every(0.2, self._proc),
            Every(1.0, self._scrape),
        ]

    def _proc(self) -> None:
        with contextlib.suppress(OSError):
            self.fds_max = max(self.fds_max, self.a.fds())
            self.rss_max = max(self.rss_max, self.a.rss_kb())

    def _get(self) -> bytes:
        """One scrape: over the kept connection (a new one if it was closed),
        or a fresh connection each time."""
        if not self.keepalive:
            with urllib.request.urlopen(URL, timeout=30) as answer:
                return bytes(answer.read())
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(A, METRICS_PORT, timeout=30)
            try:
                self._conn.request("GET", "/metrics")
                return self._conn.getresponse().read()
            except (http.client.HTTPException, ConnectionError):
                self._conn.close()
                self._conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _scrape(self) -> None:
        started = self.scraping_since = time.monotonic()
        try:
            body = self._get()
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
        self.pinger.stop(0.5)


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


def wire(ready: Connection, ctl: Connection) -> None:
    """The largest gap between the pair's packets as each daemon sent them,
    until told to stop."""
    gaps = SendGaps()
    ready.send(True)
    while not ctl.poll():
        select.select([gaps.sock], [], [], 0.1)
        gaps.read()
    ctl.send({"a_sent": gaps.ms(A), "b_sent": gaps.ms(B)})


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
        down0 = (downs(a.session(B)), downs(b.session(A)))
        wire_ready, wire_ready_in = ctx.Pipe(duplex=False)
        wire_ctl, wire_ctl_child = ctx.Pipe()
        capture = ctx.Process(target=wire, args=(wire_ready_in, wire_ctl_child))
        capture.start()
        wire_ready_in.close()
        wire_ready.recv()
        watch = Watch(a, keepalive=args.scraper == "keepalive")
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
        a_info, b_info = sessions(a, b)
        counters = endpoint_counters()
        counters_at = time.monotonic() - started
        fds_now = a.fds()
        # SIGTERM, the attack still on.
        sigterm_to_exit = a.terminate(30)
        ctl.send("stop")
        attacker_stats = ctl.recv() if ctl.poll(30) else {}
        attacker.join(10)
    scrapes = watch.scrapes
    return {
        "connections": args.connections,
        "reconnect": args.reconnect,
        "scraper": args.scraper,
        "attack_s": args.duration,
        "attacker_opened_all_in_s": round(opened_in, 2),
        "flaps": flaps(a_info, b_info, down0),
        "largest_rx_gap_ms": rx_gaps(a_info, b_info),
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
        "a_control_worst_answer_ms": round(watch.pinger.worst * 1000, 1),
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
    p.add_argument(
        "--scraper",
        choices=["keepalive", "fresh"],
        default="keepalive",
        help="scrape over one kept connection (as Prometheus) or a new one each time",
    )
    args = p.parse_args()
    enter_namespace()
    raise_nofile()
    return run_and_print(run, args, "aiobfd-metrics-")


if __name__ == "__main__":
    raise SystemExit(main())
