"""Helpers for tests of the sans-IO core: sessions on a fake clock.

Packet builders from the remote's side (:func:`pkt`, :func:`deliver`), a
driver that fires a session's timers at their deadlines (:func:`fire_until`),
a session brought Up by hand (:func:`up_session`), and :class:`SessionPair`:
two sessions with a fake link in between and one fake clock.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from aiobfd.protocol.events import Event, StateChanged
from aiobfd.protocol.packet import FLAG_FINAL, ControlPacket, Diag, State, decode, encode
from aiobfd.protocol.session import Session, SessionConfig

MS = 1_000
SECOND = 1_000_000
#: Discriminators of the session under test and of its remote.
LOCAL = 0x1111
REMOTE = 0x2222


def make_session(
    config: SessionConfig | None = None, discr: int = 1, now: int = 0, seed: int = 1
) -> Session:
    return Session(config or SessionConfig(), discr, now=now, rng=random.Random(seed))


def drain(session: Session) -> list[ControlPacket]:
    """Decode everything the session wants to send."""
    return [decode(d) for d in session.datagrams_to_send()]


def due(session: Session) -> int:
    """The session's next deadline (it must have one)."""
    deadline = session.get_timer()
    assert deadline is not None
    return deadline


def events(session: Session) -> list[Event]:
    out = []
    while (ev := session.next_event()) is not None:
        out.append(ev)
    return out


def pkt(
    state: State,
    *,
    flags: int = 0,
    diag: Diag = Diag.NO_DIAGNOSTIC,
    mult: int = 3,
    tx: int = 300 * MS,
    rx: int = 300 * MS,
    my: int = REMOTE,
    your: int = LOCAL,
) -> ControlPacket:
    """A packet from the remote (discriminator REMOTE) to the session under test (LOCAL)."""
    return ControlPacket(state, diag, flags, mult, my, your, tx, rx)


def deliver(session: Session, packet: ControlPacket, now: int) -> None:
    """Hand ``packet`` to the session as the daemon would: through the wire format."""
    session.receive(decode(encode(packet)), now)


def state_changes(session: Session) -> list[StateChanged]:
    return [ev for ev in events(session) if isinstance(ev, StateChanged)]


def fire_until(
    session: Session,
    end: int,
    *,
    start: int = 0,
    remote: ControlPacket | None = None,
    every: int = 0,
) -> list[tuple[int, ControlPacket]]:
    """Drive ``session`` on a fake clock from ``start`` to ``end`` inclusive.

    Timers fire exactly at their deadlines.  If ``remote`` is given it is
    delivered every ``every`` microseconds (first at ``start + every``), as a
    peer would send it.  Returns what the session sent, with the send times.
    """
    sent = [(start, p) for p in drain(session)]
    next_rx = start + every if remote is not None else None
    now = start
    while True:
        candidates = [t for t in (session.get_timer(), next_rx) if t is not None]
        if not candidates or min(candidates) > end:
            return sent
        now = max(now, min(candidates))
        if next_rx is not None and next_rx <= now:
            assert remote is not None
            deliver(session, remote, now)
            next_rx += every
        deadline = session.get_timer()
        if deadline is not None and deadline <= now:
            session.handle_timer(now)
            after = session.get_timer()
            assert after is None or after > now
        sent.extend((now, p) for p in drain(session))


def gaps(times: list[int]) -> list[int]:
    return [b - a for a, b in itertools.pairwise(times)]


def up_session(
    config: SessionConfig | None = None,
    *,
    now: int = 0,
    remote_tx: int = 300 * MS,
    remote_rx: int = 300 * MS,
    remote_mult: int = 3,
    seed: int = 1,
) -> Session:
    """A session brought Up by hand at ``now``, its initial Poll answered, outputs drained."""
    s = make_session(
        config or SessionConfig(300 * MS, 300 * MS, 3), discr=LOCAL, now=now, seed=seed
    )
    s.handle_timer(now)
    deliver(s, pkt(State.DOWN, your=0, tx=SECOND, rx=remote_rx, mult=remote_mult), now)
    assert s.state is State.INIT
    deliver(s, pkt(State.UP, tx=remote_tx, rx=remote_rx, mult=remote_mult), now)
    assert s.state is State.UP
    s.handle_timer(now)
    if s.poll_active:
        deliver(
            s, pkt(State.UP, flags=FLAG_FINAL, tx=remote_tx, rx=remote_rx, mult=remote_mult), now
        )
    assert not s.poll_active
    drain(s)
    events(s)
    return s


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


@contextlib.contextmanager
def silent_resolver(monkeypatch: Any, never: Callable[[object], bool]) -> Iterator[threading.Event]:
    """``socket.getaddrinfo`` never answers for the names ``never`` picks,
    until the yielded event is set (then, on the way out, it is, and the
    stuck lookups get up to 5 s to end)."""
    from aiobfd.config import addresses

    release = threading.Event()
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if never(host):
            release.wait()
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    try:
        yield release
    finally:
        release.set()
        deadline = time.monotonic() + 5
        while addresses.stuck_lookups() and time.monotonic() < deadline:
            time.sleep(0.01)
