"""The process metrics: prometheus_client's families, the descriptors counted without a listing."""

from __future__ import annotations

import os
import socket

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.process_collector import ProcessCollector as LibraryCollector

from aiobfd.metrics.process import ProcessCollector, open_descriptors


def families(collector: object) -> dict[str, float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}


def test_the_same_series_as_prometheus_client() -> None:
    ours, theirs = families(ProcessCollector()), families(LibraryCollector(registry=None))
    assert set(ours) == set(theirs)
    assert ours["process_max_fds"] == theirs["process_max_fds"]
    assert ours["process_start_time_seconds"] == theirs["process_start_time_seconds"]
    assert (
        abs(ours["process_resident_memory_bytes"] - theirs["process_resident_memory_bytes"]) < 2**22
    )
    assert 0 < ours["process_cpu_seconds_total"] <= theirs["process_cpu_seconds_total"] + 0.1
    # The library's listing holds one more descriptor open while it counts.
    assert ours["process_open_fds"] in (theirs["process_open_fds"], theirs["process_open_fds"] - 1)


def test_open_descriptors_follow_what_is_opened() -> None:
    before = open_descriptors()
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(50)]
    try:
        assert open_descriptors() == before + 50
    finally:
        for s in socks:
            s.close()
    assert open_descriptors() == before


def test_without_a_size_the_descriptors_are_listed() -> None:
    """Before Linux 6.2 /proc/self/fd has no size (/proc/self/fdinfo, which
    lists the same descriptors, still has none): the count is a listing's."""
    assert os.stat("/proc/self/fdinfo").st_size == 0
    # The listing holds a descriptor of its own while it reads.
    assert open_descriptors("/proc/self/fdinfo") == open_descriptors() + 1
