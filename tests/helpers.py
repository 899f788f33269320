"""Test helpers: a fake link between two sans-IO sessions driven by one fake clock."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable

from aiobfd.protocol.events import Event, StateChanged
from aiobfd.protocol.packet import ControlPacket, decode
from aiobfd.protocol.session import Session, SessionConfig

MS = 1_000
SECOND = 1_000_000


def make_session(
    config: SessionConfig | None = None, discr: int = 1, now: int = 0, seed: int = 1
) -> Session:
    return Session(config or SessionConfig(), discr, now=now, rng=random.Random(seed))


def drain(session: Session) -> list[ControlPacket]:
    """Decode everything the session wants to send."""
    return [decode(d) for d in session.datagrams_to_send()]


def events(session: Session) -> list[Event]:
    out = []
    while (ev := session.next_event()) is not None:
        out.append(ev)
    return out


class SessionPair:
    """Two sessions with a fake link in between and one fake clock.

    ``run_until(t)`` advances time deadline by deadline, delivering every
    packet with ``delay`` microseconds of latency.  ``link_up`` cuts or
    restores the path in either direction; ``drop`` can filter packets.
    """

    def __init__(
        self,
        a: SessionConfig | None = None,
        b: SessionConfig | None = None,
        delay: int = 100,
        seed: int = 7,
    ) -> None:
        self.now = 0
        self.delay = delay
        self.a = make_session(a, discr=0x1111, seed=seed)
        self.b = make_session(b, discr=0x2222, seed=seed + 1)
        self.a_to_b = True
        self.b_to_a = True
        self.in_flight: list[tuple[int, Session, bytes]] = []
        self.events: list[tuple[str, StateChanged]] = []
        self.sent: dict[str, list[tuple[int, ControlPacket]]] = {"a": [], "b": []}
        self.filter: Callable[[str, ControlPacket], bool] | None = None

    def name(self, s: Session) -> str:
        return "a" if s is self.a else "b"

    def _collect(self, s: Session) -> None:
        peer = self.b if s is self.a else self.a
        up = self.a_to_b if s is self.a else self.b_to_a
        for data in s.datagrams_to_send():
            pkt = decode(data)
            self.sent[self.name(s)].append((self.now, pkt))
            if up and (self.filter is None or self.filter(self.name(s), pkt)):
                self.in_flight.append((self.now + self.delay, peer, data))
        while (ev := s.next_event()) is not None:
            if isinstance(ev, StateChanged):
                self.events.append((self.name(s), ev))

    def next_deadline(self) -> int | None:
        times = [t for t, _, _ in self.in_flight]
        for s in (self.a, self.b):
            t = s.get_timer()
            if t is not None:
                times.append(t)
        return min(times) if times else None

    def step(self) -> bool:
        self._collect(self.a)
        self._collect(self.b)
        t = self.next_deadline()
        if t is None:
            return False
        self.now = max(self.now, t)
        due = [f for f in self.in_flight if f[0] <= self.now]
        self.in_flight = [f for f in self.in_flight if f[0] > self.now]
        for _, dest, data in due:
            with contextlib.suppress(ValueError):
                dest.receive(decode(data), self.now)
        for s in (self.a, self.b):
            t = s.get_timer()
            if t is not None and t <= self.now:
                s.handle_timer(self.now)
        self._collect(self.a)
        self._collect(self.b)
        return True

    def run_until(self, t: int) -> None:
        while True:
            nxt = self.next_deadline()
            if nxt is None or nxt > t:
                break
            self.step()
        self.now = max(self.now, t)

    def run_for(self, duration: int) -> None:
        self.run_until(self.now + duration)
