"""Shared helpers for the session unit tests: packet builders and a fake-clock driver."""

from __future__ import annotations

import itertools

from aiobfd.protocol.events import StateChanged
from aiobfd.protocol.packet import FLAG_FINAL, ControlPacket, Diag, State, decode, encode
from aiobfd.protocol.session import Session, SessionConfig
from tests.helpers import MS, SECOND, drain, events, make_session

__all__ = [
    "LOCAL",
    "MS",
    "REMOTE",
    "SECOND",
    "deliver",
    "drain",
    "events",
    "fire_until",
    "gaps",
    "make_session",
    "pkt",
    "state_changes",
    "up_session",
]

LOCAL = 0x1111
REMOTE = 0x2222


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
