"""Properties of a session (and a table of them) under arbitrary input.

Whatever valid-looking packets arrive, in whatever order, and however the
timers fire: only PacketError escapes, deadlines move forward, every packet
sent decodes, and the table keeps no state for peers it does not know.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from aiobfd.protocol.errors import DropReason, PacketError
from aiobfd.protocol.events import StateChanged
from aiobfd.protocol.packet import ControlPacket, Diag, State, decode, encode
from aiobfd.protocol.registry import PeerKey, SessionTable
from aiobfd.protocol.session import Session, SessionConfig

from .strategies import diags, flag_sets, valid_packets

SECOND = 1_000_000
LOCAL_DISCR = 0x1111
REMOTE_DISCRS = [0x2222, 0x3333]

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: Intervals a session is likely to see, plus a few extremes.
small_intervals = st.one_of(
    st.sampled_from([0, 1, 10_000, 50_000, 300_000, 1_000_000, 3_000_000]),
    st.integers(0, 2_000_000),
    st.just(0xFFFF_FFFF),
)
configs = st.builds(
    SessionConfig,
    st.sampled_from([1, 10_000, 300_000, 1_000_000, 2_000_000]),
    st.sampled_from([1, 10_000, 300_000, 1_000_000, 2_000_000]),
    st.integers(1, 5),
    st.booleans(),
)


#: Remote states, weighted so that handshakes complete often.
peer_states = st.sampled_from(
    [State.DOWN, State.DOWN, State.INIT, State.UP, State.UP, State.UP, State.ADMIN_DOWN]
)


@st.composite
def peer_packets(draw: st.DrawFn, local_discrs: list[int]) -> ControlPacket:
    """Mostly plausible packets from a peer; sometimes anything that decodes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(valid_packets())
    state = draw(peer_states)
    return ControlPacket(
        state,
        draw(diags),
        draw(flag_sets),
        draw(st.integers(1, 5) | st.just(255)),
        draw(st.sampled_from(REMOTE_DISCRS) | st.integers(1, 0xFFFF_FFFF)),
        draw(st.sampled_from([0, *local_discrs]) | st.integers(0, 0xFFFF_FFFF)),
        draw(small_intervals),
        draw(small_intervals),
        0,
    )


#: One step of a run: ("rx", wait, packet), ("wait", us), ("admin", bool), ...
Step = tuple[Any, ...]


def actions(local_discrs: list[int]) -> st.SearchStrategy[list[Step]]:
    return st.lists(
        st.one_of(
            st.tuples(st.just("rx"), st.integers(0, 2 * SECOND), peer_packets(local_discrs)),
            st.tuples(st.just("rx"), st.integers(0, 2 * SECOND), peer_packets(local_discrs)),
            st.tuples(st.just("wait"), st.integers(0, 5 * SECOND)),
            st.tuples(st.just("due")),  # jump to the next deadline and fire it
            st.tuples(st.just("due")),
            st.tuples(st.just("fire")),  # fire now, due or not
            st.tuples(st.just("admin"), st.booleans()),
            st.tuples(
                st.just("timers"),
                st.sampled_from([1, 10_000, 300_000, 1_000_000, 2_000_000]),
                st.sampled_from([1, 10_000, 300_000, 1_000_000, 2_000_000]),
                st.integers(1, 5),
            ),
        ),
        max_size=60,
    )


@dataclass
class Watcher:
    """Checks the outputs of one session after every input."""

    session: Session
    last_state: State = State.DOWN
    sent: int = 0
    changes: list[StateChanged] = field(default_factory=list)
    next_tx: int | None = None
    expiries: int = 0

    def check(self, now: int, *, fired: bool) -> None:
        s = self.session
        deadline = s.get_timer()
        if fired and deadline is not None:
            # handle_timer ran at `now`: nothing may be left due at `now`.
            assert deadline > now, (deadline, now)
        # A transmit deadline computed at `now` lies at `now` or later; one that
        # was already overdue may stay so until the timer is fired.
        if s.next_tx_us is not None and s.next_tx_us != self.next_tx:
            assert s.next_tx_us >= now, (s.next_tx_us, now)
        self.next_tx = s.next_tx_us
        # Detection is always "a Detection Time after the last packet"; when
        # the Detection Time shrinks that instant may already be past (then
        # the session is due to expire at once).
        if s.detect_deadline_us is not None:
            assert s.last_rx_us is not None
            assert s.detect_deadline_us == s.last_rx_us + s.detection_time_us
        # Each expiry forgets the remote (RFC 5880 §6.8.1).
        if s.counters.detection_expiries != self.expiries:
            assert fired
            assert s.remote_discr == 0
            self.expiries = s.counters.detection_expiries
        for data in s.datagrams_to_send():
            pkt = decode(data)  # never PacketError for our own packets
            assert pkt.my_discr == s.local_discr != 0
            assert pkt.auth is None
            self.sent += 1
        assert s.counters.packets_out == self.sent
        while (ev := s.next_event()) is not None:
            if isinstance(ev, StateChanged):
                assert ev.old_state is self.last_state
                assert ev.new_state is not ev.old_state
                assert ev.at_us == now
                self.last_state = ev.new_state
                self.changes.append(ev)
        assert s.state is self.last_state
        if s.state in (State.INIT, State.UP):
            assert s.remote_discr != 0
        if s.state is State.ADMIN_DOWN:
            assert s.detect_deadline_us is None


def run(
    session: Session,
    watcher: Watcher,
    steps: list[Step],
    deliver: Callable[[ControlPacket, int], None],
) -> None:
    now = 0
    for step in steps:
        kind = step[0]
        fired = False
        if kind == "rx":
            now += step[1]
            deliver(step[2], now)
        elif kind == "wait":
            now += step[1]
            deadline = session.get_timer()
            if deadline is not None and deadline <= now:
                session.handle_timer(now)
                fired = True
        elif kind == "due":
            deadline = session.get_timer()
            if deadline is not None:
                now = max(now, deadline)
            session.handle_timer(now)
            fired = True
        elif kind == "fire":
            session.handle_timer(now)
            fired = True
        elif kind == "admin":
            if step[1]:
                session.disable(now)
            else:
                session.enable(now)
        else:
            session.set_timers(
                now, desired_min_tx_us=step[1], required_min_rx_us=step[2], detect_mult=step[3]
            )
        watcher.check(now, fired=fired)


#: A handshake to put in front of the arbitrary steps, so that they often act
#: on a session that is Up (and polling).
HANDSHAKE = [
    ("rx", 0, ControlPacket(State.DOWN, Diag(0), 0, 3, REMOTE_DISCRS[0], 0, 10_000, 10_000)),
    (
        "rx",
        1,
        ControlPacket(State.UP, Diag(0), 0, 3, REMOTE_DISCRS[0], LOCAL_DISCR, 10_000, 10_000),
    ),
]


@settings(SETTINGS, max_examples=300)
@given(configs, st.integers(0, 2**32), st.booleans(), actions([LOCAL_DISCR]))
def test_session_survives_anything(
    config: SessionConfig, seed: int, handshake: bool, steps: list[Step]
) -> None:
    session = Session(config, LOCAL_DISCR, now=0, rng=random.Random(seed))
    watcher = Watcher(session)
    watcher.check(0, fired=False)
    if handshake:
        steps = HANDSHAKE + steps

    def deliver(pkt: ControlPacket, now: int) -> None:
        try:
            session.receive(decode(encode(pkt)), now)
        except PacketError as exc:
            assert isinstance(exc.reason, DropReason)

    run(session, watcher, steps, deliver)
    report(watcher)


def report(watcher: Watcher) -> None:
    """Label the example for ``--hypothesis-show-statistics``."""
    reached = {ev.new_state for ev in watcher.changes}
    event("reached Up" if State.UP in reached else "never Up")
    if watcher.session.counters.detection_expiries:
        event("detection expired")
    if watcher.session.counters.poll_sequences:
        event("polled")


SOURCES = ["10.0.0.1", "10.0.0.2", "10.0.0.9", "fe80::1"]
LOCALS = ["10.0.0.254", "10.0.0.253"]


@settings(SETTINGS, max_examples=100)
@given(
    st.integers(0, 2**32),
    st.lists(
        st.tuples(
            st.integers(0, 2 * SECOND),
            st.integers(0, 3),  # which known session to aim at (2, 3: none)
            st.one_of(  # the addresses: the target's own most of the time
                st.none(),
                st.none(),
                st.none(),
                st.tuples(
                    st.sampled_from(SOURCES), st.sampled_from(LOCALS), st.sampled_from([0, 3])
                ),
            ),
            st.booleans(),  # fire timers afterwards
        ),
        max_size=60,
    ),
    st.data(),
)
def test_table_keeps_no_state_for_strangers(
    seed: int, arrivals: list[Any], data: st.DataObject
) -> None:
    table = SessionTable(random.Random(seed))
    keys = [PeerKey("10.0.0.1", "10.0.0.254"), PeerKey("10.0.0.2", "10.0.0.254")]
    sessions = [table.add(k, SessionConfig(300_000, 300_000, 3), now=0) for k in keys]
    discrs = [s.local_discr for s in sessions]
    assert all(discrs) and len(set(discrs)) == len(discrs)
    watchers = [Watcher(s) for s in sessions]
    for w in watchers:
        w.check(0, fired=False)
    now = 0
    failures = 0
    for delay, target, addresses, fire in arrivals:
        now += delay
        pkt = data.draw(peer_packets(discrs))
        if target < len(keys):
            if pkt.state is not State.DOWN:
                pkt = pkt._replace(your_discr=discrs[target])
            remote, local, scope = keys[target][:3]
        else:
            remote, local, scope = "10.0.0.9", "10.0.0.254", 0
        if addresses is not None:
            remote, local, scope = addresses
        try:
            decoded = decode(encode(pkt))
        except PacketError:
            continue
        try:
            session = table.demultiplex(decoded, remote, local, scope)
        except PacketError as exc:
            assert exc.reason in (
                DropReason.UNKNOWN_DISCR,
                DropReason.UNKNOWN_PEER,
                DropReason.WRONG_PEER,
            )
            failures += 1
        else:
            assert session.key.remote == remote
            with contextlib.suppress(PacketError):
                session.receive(decoded, now)
        for s, w in zip(sessions, watchers, strict=True):
            fired = False
            if fire:
                deadline = s.get_timer()
                if deadline is not None and deadline <= now:
                    s.handle_timer(now)
                    fired = True
            w.check(now, fired=fired)
        assert len(table) == len(keys)
        assert sorted(s.key for s in table) == sorted(keys)
        assert sum(table.drops.values()) == failures
    for s, d in zip(sessions, discrs, strict=True):
        assert table.by_discriminator(d) is s
    report(watchers[0])
