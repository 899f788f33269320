"""The standard ``process_*`` metrics, without listing the descriptor table.

``prometheus_client``'s ``ProcessCollector`` counts open descriptors by
listing ``/proc/self/fd``: with 10,000 sessions the daemon holds 20,000
descriptors, and the listing took 9-23 ms of the event loop at every scrape
(a stall in one piece: transmit timers that late).  Since Linux 6.2 a
``stat()`` of that directory gives the count as its size, at the cost of a
bitmap's population count; the listing remains for older kernels.

The families, names and help texts are ``prometheus_client``'s own, so
dashboards built on them keep working.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

PROC_SELF = "/proc/self"


def open_descriptors(fd_dir: str = f"{PROC_SELF}/fd") -> int:
    """How many descriptors the process holds: the directory's size where the
    kernel gives it (Linux >= 6.2), else the length of its listing."""
    size = os.stat(fd_dir).st_size
    return size if size > 0 else len(os.listdir(fd_dir))


def _boot_time() -> float:
    with open("/proc/stat", "rb") as f:
        for line in f:
            if line.startswith(b"btime "):
                return float(line.split()[1])
    return 0.0


class ProcessCollector(Collector):
    """Memory, CPU, start time and descriptors of this process, as
    ``prometheus_client`` names them (``process_`` prefix)."""

    def __init__(self) -> None:
        try:
            self._btime = _boot_time()
        except OSError:
            self._btime = 0.0  # no /proc: nothing to export
        self._ticks = os.sysconf("SC_CLK_TCK")
        self._pagesize = resource.getpagesize()

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        if not self._btime:
            return
        try:
            with open(f"{PROC_SELF}/stat", "rb") as f:
                # Fields after the command name, which may hold spaces and ')'.
                parts = f.read().rpartition(b")")[2].split()
        except OSError:
            pass
        else:
            yield GaugeMetricFamily(
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                value=float(parts[20]),
            )
            yield GaugeMetricFamily(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                value=float(parts[21]) * self._pagesize,
            )
            yield GaugeMetricFamily(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                value=float(parts[19]) / self._ticks + self._btime,
            )
            yield CounterMetricFamily(
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
                value=(float(parts[11]) + float(parts[12])) / self._ticks,
            )
        try:
            count = open_descriptors()
        except OSError:
            return
        yield GaugeMetricFamily(
            "process_open_fds", "Number of open file descriptors.", value=float(count)
        )
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        yield GaugeMetricFamily(
            "process_max_fds",
            "Maximum number of open file descriptors.",
            value=float(soft) if soft != resource.RLIM_INFINITY else float("inf"),
        )
