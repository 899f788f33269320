"""Deadlines of many sessions grouped by instant (pure: no clock, no I/O).

The daemon keeps every session's next deadline here and wakes once per
instant, serving all sessions due then.  Sessions draw their periodic
transmissions so that they share instants (:meth:`Schedule.pick`): a session
whose jitter window holds an instant others already transmit at joins it, up
to :data:`COHORT_MAX` sessions an instant; a session whose grid point holds
:data:`COHORT_LIMIT` takes an instant of its own
(``timers.aligned_transmission``).  Each session's intervals stay
random within the window RFC 5880 §6.8.7 allows; only their phase relative to
each other is given up, which is what turns N packets into one wake-up.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Callable
from typing import Generic, TypeVar

from .timers import RandomSource

T = TypeVar("T")

#: Sessions joining one instant at most: bounds a burst and its lateness.
COHORT_MAX = 64
#: Sessions an instant holds at most, however they came: a session drawn onto
#: a point of the transmit grid (``timers.tx_grid``) that holds this many
#: takes an instant of its own.  Grid points gather sessions by themselves
#: (at 1 s intervals the grid has 15 points a second: 700 sessions a point
#: with 10,000 sessions, the last served 10-25 ms late); a limit at
#: COHORT_MAX would also split the cohorts of 80-100 that 1,000 sessions @
#: 50 ms form on their 2 ms grid, and cost wake-ups there for nothing.
COHORT_LIMIT = 2 * COHORT_MAX


class Schedule(Generic[T]):
    """Items (sessions) due at instants (integer microseconds).

    An item may be listed at an instant it is no longer due at; the owner
    knows (the daemon compares with the peer's own deadline) and skips it.
    """

    def __init__(self, cohort_max: int = COHORT_MAX, cohort_limit: int = COHORT_LIMIT) -> None:
        self.cohort_max = cohort_max
        self.cohort_limit = max(cohort_limit, cohort_max)
        self._due: dict[int, list[T]] = {}
        self._instants: list[int] = []
        """The instants of ``_due``, ascending."""
        self._last: int | None = None
        """The instant an item was last listed at (see :meth:`pick`)."""
        self._last_items: list[T] = []
        """The items listed at ``_last`` (while that is not None)."""

    def __len__(self) -> int:
        return len(self._instants)

    def add(self, instant: int, item: T) -> bool:
        """List ``item`` at ``instant``; True if the instant is new."""
        if instant == self._last:
            # The instant the one before joined: a cohort moving on together.
            self._last_items.append(item)
            return False
        self._last = instant
        items = self._due.get(instant)
        if items is not None:
            items.append(item)
            self._last_items = items
            return False
        self._last_items = self._due[instant] = [item]
        insort(self._instants, instant)
        return True

    def earliest(self) -> int | None:
        return self._instants[0] if self._instants else None

    def items_at(self, instant: int) -> list[T]:
        return self._due.get(instant, [])

    def pop_earliest(self) -> tuple[int, list[T]]:
        """Remove the earliest instant and return it with its items."""
        instant = self._instants.pop(0)
        if instant == self._last:
            self._last = None
        return instant, self._due.pop(instant)

    def pick(self, earliest: int, latest: int, rng: RandomSource) -> int | None:
        """An instant in [earliest, latest) with room, or None.

        The instant an item was last listed at, if it is in the window: the
        sessions of a cohort are served one after another and each lists its
        next transmission before the next one picks, so a cohort moves on
        together, at the instant its first session drew (a random one).
        Otherwise one draw among the window's instants, no search: a full
        instant sends the session to a fresh one, which spreads a cohort that
        outgrew :data:`COHORT_MAX`.
        """
        last = self._last
        if (
            last is not None
            and earliest <= last < latest
            and len(self._last_items) < self.cohort_max
        ):
            return last
        instants = self._instants
        lo = bisect_left(instants, earliest)
        hi = bisect_left(instants, latest, lo)
        if lo == hi:
            return None
        at = instants[lo + int(rng.random() * (hi - lo))]
        return at if len(self._due[at]) < self.cohort_max else None

    def full(self, instant: int) -> bool:
        """Whether ``instant`` holds :attr:`cohort_limit` items already."""
        items = self._due.get(instant)
        return items is not None and len(items) >= self.cohort_limit

    def compact(self, live: Callable[[int, T], bool]) -> None:
        """Keep only the items for which ``live(instant, item)`` holds."""
        due: dict[int, list[T]] = {}
        for at, items in self._due.items():
            kept = [item for item in items if live(at, item)]
            if kept:
                due[at] = kept
        self._due = due
        self._instants = sorted(due)
        if self._last is not None:
            last_items = due.get(self._last)
            if last_items is None:
                self._last = None
            else:
                self._last_items = last_items

    def clear(self) -> None:
        self._due.clear()
        self._instants.clear()
        self._last = None
        self._last_items = []
