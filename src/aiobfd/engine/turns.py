"""Turns of background work that end before the sessions' next wake-up.

Work that is not the protocol's - ``show sessions``, a watch snapshot, a
metrics scrape, a reload's slices - runs a slice at a time between the event
loop's other callbacks.  A slice bounded only by a time budget may begin just
before the wake-up that serves the sessions' timers and hold it for the whole
budget; at 10,000 sessions that wake-up serves up to 128 sessions, and a
millisecond's wait pushed the last of them past 5 ms late.

A :class:`Turn` ends when its budget is spent or when one more step, as long
as the last one took, would run into the daemon's next wake-up, whichever
comes first.  The first step of a turn always runs, so the work goes on
whatever the timers do.  A turn begins when the Turn is made; :meth:`Turn.pause`
after each step yields to the loop when the turn is over and begins the next.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

#: The longest one turn of background work holds the loop, in microseconds.
TURN_BUDGET_US = 1_000


class Turn:
    """The clock of one piece of background work, its first turn begun:
    :meth:`pause` after each step (or :meth:`over`, and :meth:`begin` the
    next turn after yielding)."""

    __slots__ = ("_clock", "_end", "_last", "_next_wakeup", "budget_us")

    def __init__(
        self,
        clock: Callable[[], int],
        next_wakeup: Callable[[], int | None],
        budget_us: int = TURN_BUDGET_US,
    ) -> None:
        self._clock = clock
        self._next_wakeup = next_wakeup
        self.budget_us = budget_us
        self._end = 0
        self._last = 0
        self.begin()

    def begin(self) -> None:
        """A new turn of the loop: its budget starts now."""
        now = self._clock()
        end = now + self.budget_us
        wakeup = self._next_wakeup()
        if wakeup is not None and wakeup < end:
            end = wakeup
        self._end = end
        self._last = now

    def over(self) -> bool:
        """After a step: whether this turn should end (its budget spent, or
        one more step like the last would reach the next wake-up)."""
        now = self._clock()
        step = now - self._last
        self._last = now
        return now + step > self._end

    async def pause(self) -> bool:
        """After a step: when this turn is over, yield to the loop and begin
        the next one (True: it yielded)."""
        if not self.over():
            return False
        await asyncio.sleep(0)
        self.begin()
        return True
