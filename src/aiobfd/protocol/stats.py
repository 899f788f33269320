"""Cheap timing statistics kept on the packet path, read at scrape time.

A :class:`LatencyHistogram` is a fixed list of bucket counters: recording a
value is a short loop over at most a dozen bounds, with no allocation.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

#: Bucket upper bounds in microseconds: 50 us to 100 ms.
DEFAULT_BOUNDS_US: tuple[int, ...] = (
    50,
    100,
    250,
    500,
    1_000,
    2_000,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
)


@dataclass(slots=True)
class LatencyHistogram:
    """Counts of values (microseconds) at or below each bound, plus their sum."""

    bounds_us: tuple[int, ...] = DEFAULT_BOUNDS_US
    counts: list[int] = field(default_factory=list)
    """Non-cumulative: ``counts[i]`` values fell in bucket i; the last is +Inf."""
    total: int = 0
    sum_us: int = 0
    max_us: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds_us) + 1)

    def record(self, value_us: int) -> None:
        if value_us < 0:
            value_us = 0
        self.counts[bisect_left(self.bounds_us, value_us)] += 1
        self.total += 1
        self.sum_us += value_us
        if value_us > self.max_us:
            self.max_us = value_us

    def record_many(self, value_us: int, count: int) -> None:
        """Record ``value_us`` ``count`` times (a cohort served at one instant
        is as late as a whole: one call instead of one a session)."""
        if count <= 0:
            return
        if value_us < 0:
            value_us = 0
        self.counts[bisect_left(self.bounds_us, value_us)] += count
        self.total += count
        self.sum_us += value_us * count
        if value_us > self.max_us:
            self.max_us = value_us

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound in seconds, cumulative count) pairs, +Inf last."""
        out: list[tuple[float, int]] = []
        running = 0
        for bound, count in zip(self.bounds_us, self.counts, strict=False):
            running += count
            out.append((bound / 1e6, running))
        out.append((float("inf"), self.total))
        return out


@dataclass(slots=True)
class TimingStats:
    """How late timers fired against their deadlines, for the whole daemon."""

    tx_lateness: LatencyHistogram = field(default_factory=LatencyHistogram)
    """Periodic transmissions: actual send time minus scheduled time."""
    detect_lateness: LatencyHistogram = field(default_factory=LatencyHistogram)
    """Detection timers: expiry handled minus the Detection Time deadline."""
    timer_wakeups: int = 0
    """Times the loop woke the daemon for session deadlines."""
    receive_wakeups: int = 0
    """Times the loop woke the daemon for packets on established sessions' sockets."""
