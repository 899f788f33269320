"""The protocol clock: CLOCK_MONOTONIC in integer microseconds.

The same clock as the event loop's ``loop.time()`` and the timerfd's, so a
deadline computed by the core can be armed as it is.  Never the wall clock.
"""

from __future__ import annotations

import time


def monotonic_us() -> int:
    """The protocol clock: CLOCK_MONOTONIC in integer microseconds (= loop.time())."""
    return time.monotonic_ns() // 1000
