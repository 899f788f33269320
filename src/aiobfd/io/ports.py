"""Source ports for the daemon's sessions: unique among all of them (RFC 5881 §4).

RFC 5881 §4 asks for a source port of 49152-65535 that "SHOULD be unique among
all BFD sessions on the system".  The kernel only refuses a port bound twice on
the same address, so two sessions from different local addresses could draw the
same one; :class:`SourcePorts` is the daemon-wide account of which ports its
sessions hold, whatever their local addresses:

* a new session gets a port none of our sessions holds, as long as one is left
  (16,384 sessions); beyond that the least used, so ports are shared as evenly
  as they can be;
* among the ports of the lowest use the choice is random (the port is one more
  thing a blind spoofer must guess);
* another process may hold a port: the bind says EADDRINUSE and another one is
  tried (as is a port our own sessions hold on the same address, beyond 16,384);
* each choice is O(1): ports are kept in one list per use count (a port moves
  between two lists by a swap), and the lowest count with a port in it is known.
  After :data:`RANDOM_ATTEMPTS` refusals every port is tried in order of use,
  so a bind still succeeds while any port is free.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator
from typing import Final

from ..protocol.constants import SOURCE_PORT_MAX, SOURCE_PORT_MIN
from ..protocol.timers import RandomSource

#: Ports of the lowest use tried at random before every port is tried in order.
RANDOM_ATTEMPTS: Final = 64


class SourcePorts:
    """Which source ports of ``first``-``last`` the daemon's sessions hold, how often.

    :meth:`bind` chooses a port and binds it (through the callable given);
    :meth:`release` gives it back when the session's transmit socket closes.
    """

    def __init__(
        self,
        rng: RandomSource,
        first: int = SOURCE_PORT_MIN,
        last: int = SOURCE_PORT_MAX,
        attempts: int = RANDOM_ATTEMPTS,
    ) -> None:
        if not 0 < first <= last <= 65535:
            raise ValueError(f"bad port range {first}-{last}")
        self._rng = rng
        self.first = first
        self.last = last
        self._attempts = attempts
        size = last - first + 1
        self._uses = [0] * size
        """Sessions holding each port (by port - first)."""
        self._levels: list[list[int]] = [list(range(size))]
        """The ports (as offsets) held by exactly n sessions, at index n."""
        self._where = list(range(size))
        """Each port's index in its level's list."""
        self._least = 0
        """The lowest level with a port in it."""
        self.sessions = 0
        """Sessions holding a port now."""

    def __len__(self) -> int:
        """Ports in the range."""
        return len(self._uses)

    def uses(self, port: int) -> int:
        """How many of our sessions hold ``port``."""
        return self._uses[self._offset(port)]

    @property
    def held(self) -> int:
        """Distinct ports held by at least one session."""
        return len(self._uses) - len(self._levels[0])

    @property
    def least_used(self) -> int:
        """The lowest use of any port (0 while some port is free of our sessions)."""
        return self._least

    def bind(self, bind: Callable[[int], object]) -> int:
        """Bind a port of the lowest use with ``bind(port)`` and count it; the port.

        ``bind`` raises OSError with EADDRINUSE when the port is taken (by another
        process, or by a session of ours on the same address): another port is
        tried.  Any other error is raised at once.  OSError(EADDRINUSE) when
        every port of the range was refused.
        """
        refused: set[int] = set()
        for offset in self._candidates(refused):
            try:
                bind(self.first + offset)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                refused.add(offset)
                continue
            self._move(offset, +1)
            self.sessions += 1
            return self.first + offset
        raise OSError(errno.EADDRINUSE, f"no free source port in {self.first}-{self.last}")

    def release(self, port: int) -> None:
        """A session's transmit socket bound to ``port`` is closed."""
        offset = self._offset(port)
        if self._uses[offset] <= 0:
            raise ValueError(f"source port {port} is not held")
        self._move(offset, -1)
        self.sessions -= 1

    # ------------------------------------------------------------ internals

    def _offset(self, port: int) -> int:
        offset = port - self.first
        if not 0 <= offset < len(self._uses):
            raise ValueError(f"source port {port} is outside {self.first}-{self.last}")
        return offset

    def _candidates(self, refused: set[int]) -> Iterator[int]:
        """Random ports of the lowest use, then every port by use (lowest first)."""
        levels = self._levels
        random = self._rng.random
        for _ in range(self._attempts):
            level = levels[self._least]
            offset = level[int(random() * len(level))]
            if offset not in refused:
                yield offset
        for level in list(levels[self._least :]):
            for offset in sorted(level):
                if offset not in refused:
                    yield offset

    def _move(self, offset: int, step: int) -> None:
        """Change a port's use by ``step`` (+1 or -1), moving it between levels."""
        uses, levels, where = self._uses, self._levels, self._where
        old = uses[offset]
        new = old + step
        # Out of its level's list: the last one takes its place.
        level = levels[old]
        index = where[offset]
        last = level.pop()
        if last != offset:
            level[index] = last
            where[last] = index
        if new == len(levels):
            levels.append([])
        target = levels[new]
        where[offset] = len(target)
        target.append(offset)
        uses[offset] = new
        if new < self._least:
            self._least = new
        elif not levels[self._least]:
            self._least = new  # the one that left the lowest level went one up
