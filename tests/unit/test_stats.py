"""Timing statistics of the packet path: a value recorded once or many times at once."""

from __future__ import annotations

from aiobfd.protocol.stats import LatencyHistogram


def test_a_value_recorded_many_times_at_once_counts_as_that_many_records() -> None:
    one_by_one, at_once = LatencyHistogram(), LatencyHistogram()
    for value, count in ((0, 5), (120, 3), (-7, 2), (2_000_000, 1)):
        for _ in range(count):
            one_by_one.record(value)
        at_once.record_many(value, count)
    at_once.record_many(999, 0)  # nothing
    assert at_once == one_by_one
    assert at_once.total == 11
    assert at_once.max_us == 2_000_000
    assert at_once.cumulative()[0] == (50e-6, 7)  # the negative ones count as 0
