"""How long a scrape of /metrics takes with 1,000 sessions, and whether it disturbs them.

Two daemons run in this process over loopback: a hub on 127.0.200.1 with 1,000
sessions, and 1,000 spokes (127.0.201.1 ... 127.0.204.232, one daemon with one
session per local address) answering it, so every session is really Up and
exchanging packets while it is scraped.  Then:

1. the collector alone, as the daemon renders it and through
   ``prometheus_client``'s ``generate_latest``, in the loop's thread (nothing
   else runs meanwhile);
2. the full endpoint (``GET /metrics``, gzip, process metrics included) is
   timed from another process while the daemons keep running;
3. the hub's transmit-timer lateness is compared between a quiet period, one
   with a scrape a second and one of back-to-back scrapes (Prometheus scrapes
   every 15 s or so).

Target (issue 4): a scrape under 100 ms.  Run: ``.venv/bin/python bench/metrics_scrape.py``
(needs about 4,100 file descriptors; it raises the soft limit if it can).
``--threaded`` serves with ``prometheus_client.start_http_server`` instead, to
show why the daemon does not: its scrape thread holds the GIL for hundreds of
milliseconds and the event loop's timers wait (see ``aiobfd.metrics.http``).

Both daemons share one event loop, so the loop does twice the work of a real
hub; on a busy machine the lateness figures are noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import resource
import socket
import statistics
import sys
import time
from asyncio.subprocess import PIPE

from prometheus_client import CollectorRegistry, generate_latest, start_http_server

from aiobfd.config import PeerSpec
from aiobfd.engine import Daemon
from aiobfd.metrics import BfdCollector, start_metrics_server
from aiobfd.protocol.packet import State
from aiobfd.protocol.session import SessionConfig
from aiobfd.protocol.stats import LatencyHistogram, TimingStats

HUB = "127.0.200.1"
MS = 1000


def spoke_address(i: int) -> str:
    return f"127.0.{201 + i // 250}.{1 + i % 250}"


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        new = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


#: The scraper runs in a process of its own, as Prometheus does: a client thread
#: in this process would compete for the GIL and distort what is measured.
CLIENT = """
import json, sys, time, urllib.request
url, count, seconds, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
times, end = [], time.monotonic() + seconds
while len(times) < count or time.monotonic() < end:
    if times:
        time.sleep(pause)
    t0 = time.perf_counter()
    request = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()
    times.append((time.perf_counter() - t0) * 1000)
print(json.dumps(times))
"""


async def fetch(
    url: str, *, count: int = 0, seconds: float = 0.0, pause: float = 0.0
) -> list[float]:
    """Scrape ``url`` ``count`` times, or for ``seconds``, ``pause`` seconds apart.

    Answers the time each scrape took, in milliseconds.
    """
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CLIENT, url, str(count), str(seconds), str(pause), stdout=PIPE
    )
    out, _ = await proc.communicate()
    if proc.returncode:
        sys.exit("the scraping client failed")
    return list(json.loads(out))


class GcWatch:
    """Counts the cyclic garbage collector's runs and its longest pause."""

    def __init__(self) -> None:
        self.runs = [0, 0, 0]
        self.longest_ms = 0.0
        self._t0 = 0.0
        gc.callbacks.append(self._callback)

    def reset(self) -> None:
        self.runs = [0, 0, 0]
        self.longest_ms = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.runs[info["generation"]] += 1
            self.longest_ms = max(self.longest_ms, (time.perf_counter() - self._t0) * 1000)

    def __str__(self) -> str:
        return f"GC runs by generation {self.runs}, longest pause {self.longest_ms:.1f} ms"


def reset_timing(daemon: Daemon) -> None:
    """Zero the daemon's timing stats in place (``Daemon.timing`` is read-only)."""
    fresh = TimingStats()
    for f in dataclasses.fields(TimingStats):
        setattr(daemon.timing, f.name, getattr(fresh, f.name))


def quantile(hist: LatencyHistogram, q: float) -> float:
    """Upper bound (ms) of the bucket holding quantile q; inf past the last bound."""
    if not hist.total:
        return 0.0
    rank = q * hist.total
    running = 0
    for bound, count in zip(hist.bounds_us, hist.counts, strict=False):
        running += count
        if running >= rank:
            return bound / MS
    return float("inf")


def describe(hist: LatencyHistogram) -> str:
    mean = hist.sum_us / hist.total / MS if hist.total else 0.0
    return (
        f"{hist.total} timers, mean {mean:.2f} ms, p50 <= {quantile(hist, 0.5):g} ms, "
        f"p99 <= {quantile(hist, 0.99):g} ms, max {hist.max_us / MS:.1f} ms"
    )


async def main(sessions: int, scrapes: int, interval_ms: int, threaded: bool) -> None:
    raise_fd_limit(4 * sessions + 100)
    cfg = SessionConfig(interval_ms * MS, interval_ms * MS, 3)
    remotes = [spoke_address(i) for i in range(sessions)]
    hub = Daemon([PeerSpec(r, HUB, socket.AF_INET, session=cfg) for r in remotes])
    spokes = Daemon([PeerSpec(HUB, r, socket.AF_INET, session=cfg) for r in remotes])
    await hub.start()
    await spokes.start()
    server = None
    httpd = None
    try:
        print(f"{sessions} sessions, {interval_ms} ms intervals: waiting for them to come Up")
        deadline = time.monotonic() + 60
        while sum(p.session.state is State.UP for p in hub.peers.values()) < sessions:
            if time.monotonic() > deadline:
                sys.exit("sessions did not all come up within 60 s")
            await asyncio.sleep(0.2)
        await asyncio.sleep(2)  # Poll Sequences settle

        # 1. The collector alone, in the loop thread (the loop is blocked meanwhile):
        #    the daemon's renderer, and prometheus_client's generate_latest of it.
        collector = BfdCollector(hub)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(collector)
        for label, scrape in (
            ("BfdCollector.render (served)", collector.render),
            ("generate_latest(collector)  ", lambda: generate_latest(registry)),
        ):
            body = scrape()
            times = []
            for _ in range(scrapes):
                t0 = time.perf_counter()
                body = scrape()
                times.append((time.perf_counter() - t0) * 1000)
                await asyncio.sleep(0.05)
            text = body if isinstance(body, str) else body.decode()
            samples = sum(1 for line in text.splitlines() if not line.startswith("#"))
            print(
                f"{label}: {len(text) / 1024:.0f} KiB, {samples} samples; median "
                f"{statistics.median(times):.1f} ms, max {max(times):.1f} ms over {scrapes}"
            )

        # 2. The HTTP endpoint, fetched by another process while the daemons run.
        if threaded:
            # For comparison: prometheus_client's own server, a thread per scrape.
            httpd, _ = start_http_server(0, "127.0.0.1", registry)
            url = f"http://127.0.0.1:{httpd.server_port}/metrics"
            print("(served by prometheus_client.start_http_server, in a thread)")
        else:
            server = await start_metrics_server(hub, "127.0.0.1", 0)
            url = server.url
        await fetch(url, count=1)
        http_times = await fetch(url, count=scrapes)
        print(
            f"GET /metrics (gzip): median "
            f"{statistics.median(http_times):.1f} ms, max {max(http_times):.1f} ms "
            f"over {scrapes} (daemons running meanwhile)"
        )

        # 3. Timer lateness: no scrapes, a scrape a second, scrapes back to back.
        window = 5.0
        watch = GcWatch()
        reset_timing(hub)
        await asyncio.sleep(window)
        print(f"TX lateness, no scrapes:               {describe(hub.timing.tx_lateness)}")
        print(f"    {watch}")
        for label, pause in (("a scrape a second", 1.0), ("back to back", 0.0)):
            reset_timing(hub)
            watch.reset()
            done = await fetch(url, seconds=window, pause=pause)
            title = f"{len(done)} scrapes, {label}:"
            print(f"TX lateness, {title:26s} {describe(hub.timing.tx_lateness)}")
            print(f"    {watch}")
        down = sum(p.session.state is not State.UP for p in hub.peers.values())
        print(f"sessions not Up after the scrapes: {down}")
    finally:
        if server is not None:
            await server.close()
        if httpd is not None:
            httpd.shutdown()
        hub.close()
        spokes.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--scrapes", type=int, default=20)
    parser.add_argument("--interval-ms", type=int, default=1000)
    parser.add_argument(
        "--threaded",
        action="store_true",
        help="serve with prometheus_client.start_http_server instead, for comparison",
    )
    args = parser.parse_args()
    asyncio.run(main(args.sessions, args.scrapes, args.interval_ms, args.threaded))
