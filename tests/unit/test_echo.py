"""RFC 9747 unaffiliated echo, the sans-IO core, on a fake clock.

A :class:`Loop` plays the gateway: what the session sends comes back after a
delay, or is lost while the path is broken.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiobfd.protocol.echo import STALE, EchoConfig, EchoSession
from aiobfd.protocol.errors import DropReason, PacketError
from aiobfd.protocol.events import StateChanged
from aiobfd.protocol.packet import AuthSection, AuthType, ControlPacket, Diag, State, decode

MS = 1000
DISCR = 0x1234_5678


def make(
    interval_ms: int = 50,
    mult: int = 3,
    *,
    seed: int = 1,
    frame: Callable[[bytes], bytes] | None = None,
) -> EchoSession:
    return EchoSession(
        EchoConfig(interval_us=interval_ms * MS, detect_mult=mult),
        DISCR,
        now=0,
        rng=random.Random(seed),
        frame=frame,
    )


class Loop:
    """The gateway's forwarding: each packet comes back ``delay_us`` later, unless broken."""

    def __init__(self, session: EchoSession, delay_us: int = 100) -> None:
        self.session = session
        self.delay_us = delay_us
        self.now = 0
        self.broken = False
        self.in_flight: list[tuple[int, bytes]] = []
        self.sent: list[tuple[int, ControlPacket]] = []
        self.events: list[StateChanged] = []

    def _collect(self) -> None:
        for data in self.session.datagrams_to_send():
            self.sent.append((self.now, decode(data)))
            if not self.broken:
                self.in_flight.append((self.now + self.delay_us, data))
        while (event := self.session.next_event()) is not None:
            assert isinstance(event, StateChanged)
            self.events.append(event)

    def run_until(self, end: int) -> None:
        session = self.session
        self._collect()
        while True:
            timer = session.get_timer()
            arrival = min((at for at, _ in self.in_flight), default=None)
            candidates = [t for t in (timer, arrival) if t is not None and t <= end]
            if not candidates:
                break
            self.now = min(candidates)
            if arrival is not None and arrival == self.now:
                self.in_flight.sort(key=lambda item: item[0])
                _, data = self.in_flight.pop(0)
                session.receive(decode(data), self.now, data)
            else:
                # The wake-up's fast path first, as the engine does.
                periodic = session.periodic_packet(self.now)
                if periodic is not None:
                    self.sent.append((self.now, decode(periodic)))
                    if not self.broken:
                        self.in_flight.append((self.now + self.delay_us, periodic))
                else:
                    session.handle_timer(self.now)
            self._collect()
        self.now = end


def test_starts_down_and_sends_a_slow_down_packet_at_once() -> None:
    session = make()
    assert session.state is State.DOWN
    assert session.get_timer() == 0
    session.handle_timer(0)
    [data] = session.datagrams_to_send()
    pkt = decode(data)
    # RFC 9747 §2: the Control packet format; our discriminator, nothing learnt yet.
    assert pkt == ControlPacket(State.DOWN, Diag.NO_DIAGNOSTIC, 0, 3, DISCR, 0, 1_000_000, 0, 0)
    # Slow start: the next one 0.75-1 s later (RFC 5880 §6.8.3, §6.8.7).
    timer = session.get_timer()
    assert timer is not None and 750_000 <= timer < 1_000_000


def test_comes_up_after_two_round_trips_and_sends_at_the_interval() -> None:
    loop = Loop(make(), delay_us=200)
    loop.run_until(1000)
    assert [(e.old_state, e.new_state) for e in loop.events] == [
        (State.DOWN, State.INIT),
        (State.INIT, State.UP),
    ]
    assert loop.events[-1].at_us == 400  # two round trips of 200 us
    assert loop.session.remote_discr == DISCR
    loop.run_until(2 * 1_000_000)
    up_sent = [(t, p) for t, p in loop.sent if p.state is State.UP]
    assert all(p.your_discr == DISCR and p.desired_min_tx_us == 50 * MS for _, p in up_sent)
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(up_sent)]
    assert gaps and all(37_500 <= gap <= 50_000 for gap in gaps)  # 75-100 % (§6.8.7)
    assert loop.session.state is State.UP
    assert loop.session.detection_time_us == 150 * MS
    assert loop.session.counters.session_up == 1


def test_detect_mult_one_jitters_to_ninety_percent() -> None:
    loop = Loop(make(mult=1))
    loop.run_until(3_000_000)
    up = [t for t, p in loop.sent if p.state is State.UP]
    gaps = [b - a for a, b in itertools.pairwise(up)]
    assert gaps and max(gaps) < 45_000


def test_goes_down_with_diag_2_after_detect_mult_intervals_of_silence() -> None:
    loop = Loop(make())
    loop.run_until(1_000_000)
    assert loop.session.state is State.UP
    last_back = loop.session.last_rx_us
    assert last_back is not None
    loop.broken = True
    loop.run_until(2_000_000)
    down = loop.events[-1]
    assert (down.old_state, down.new_state, down.diag) == (
        State.UP,
        State.DOWN,
        Diag.ECHO_FUNCTION_FAILED,
    )
    # RFC 9747 §2: Detect Mult packets failed to come back: 3 x 50 ms after the last one.
    assert down.at_us == last_back + 150 * MS
    assert down.detection_time_us == 150 * MS
    assert down.last_rx_us == last_back
    session = loop.session
    assert session.local_diag is Diag.ECHO_FUNCTION_FAILED
    assert session.counters.detection_expiries == 1
    assert session.counters.session_down == 1
    # §6.8.1: bfd.RemoteDiscr forgotten; slow packets saying Down with diag 2.
    after = [p for t, p in loop.sent if t >= down.at_us]
    assert after and all(
        p.state is State.DOWN
        and p.your_discr == 0
        and p.diag is Diag.ECHO_FUNCTION_FAILED
        and p.desired_min_tx_us == 1_000_000
        for p in after
    )


def test_comes_back_up_when_the_path_is_restored() -> None:
    loop = Loop(make())
    loop.run_until(1_000_000)
    loop.broken = True
    loop.run_until(2_000_000)
    assert loop.session.state is State.DOWN
    loop.broken = False
    loop.run_until(4_000_000)
    assert loop.session.state is State.UP
    assert loop.session.counters.session_up == 2


def test_a_late_down_packet_while_up_changes_nothing() -> None:
    session = make()
    loop = Loop(session)
    loop.run_until(1_000_000)
    deadline = session.detect_deadline_us
    stale = ControlPacket(State.DOWN, Diag.NO_DIAGNOSTIC, 0, 3, DISCR, 0, 1_000_000, 0, 0)
    session.receive(stale, loop.now)
    assert session.state is State.UP
    assert session.detect_deadline_us == deadline  # restarts nothing
    assert session.counters.drops == {STALE: 1}
    assert session.next_event() is None


def test_a_late_init_packet_while_down_does_not_bring_it_up() -> None:
    session = make()
    late = ControlPacket(State.INIT, Diag.NO_DIAGNOSTIC, 0, 3, DISCR, DISCR, 1_000_000, 0, 0)
    session.receive(late, 10)
    assert session.state is State.DOWN
    assert session.counters.drops == {STALE: 1}


@pytest.mark.parametrize(
    ("pkt", "reason"),
    [
        (ControlPacket(State.DOWN, Diag(0), 0, 3, DISCR + 1, 0, 1, 0, 0), DropReason.UNKNOWN_DISCR),
        (ControlPacket(State.DOWN, Diag(0), 0, 3, DISCR, 99, 1, 0, 0), DropReason.WRONG_PEER),
        (
            ControlPacket(
                State.DOWN,
                Diag(0),
                0,
                3,
                DISCR,
                0,
                1,
                0,
                0,
                AuthSection(AuthType.SIMPLE_PASSWORD, 1, b"x"),
            ),
            DropReason.AUTH_MISMATCH,
        ),
    ],
)
def test_packets_we_did_not_send_are_dropped(pkt: ControlPacket, reason: DropReason) -> None:
    session = make()
    with pytest.raises(PacketError) as caught:
        session.receive(pkt, 10)
    assert caught.value.reason is reason
    assert session.counters.drops == {reason: 1}
    assert session.counters.packets_in == 0
    assert session.state is State.DOWN


def test_admin_down_sends_nothing_and_enable_starts_over() -> None:
    loop = Loop(make())
    loop.run_until(1_000_000)
    session = loop.session
    session.disable(loop.now)
    loop.run_until(loop.now)  # collect
    assert loop.events[-1].new_state is State.ADMIN_DOWN
    assert loop.events[-1].diag is Diag.ADMINISTRATIVELY_DOWN
    assert session.get_timer() is None
    sent = len(loop.sent)
    loop.in_flight.clear()
    loop.run_until(3_000_000)
    assert len(loop.sent) == sent  # nobody listens to an AdminDown echo
    with pytest.raises(PacketError) as caught:
        session.receive(ControlPacket(State.UP, Diag(0), 0, 3, DISCR, DISCR, 1, 0, 0), loop.now)
    assert caught.value.reason is DropReason.SESSION_ADMIN_DOWN
    session.enable(loop.now)
    assert session.state is State.DOWN
    assert session.get_timer() == loop.now
    loop.run_until(loop.now + 1_000_000)
    assert session.state is State.UP


def test_frames_what_it_sends_and_the_fast_path_reuses_the_frame() -> None:
    frames: list[bytes] = []

    def frame(payload: bytes) -> bytes:
        frames.append(payload)
        return b"HDR" + payload

    session = make(frame=frame)
    session.handle_timer(0)
    [data] = session.datagrams_to_send()
    assert data.startswith(b"HDR") and decode(data[3:]).state is State.DOWN
    timer = session.get_timer()
    assert timer is not None
    again = session.periodic_packet(timer)
    assert again == data
    assert len(frames) == 1  # framed once while the contents stay the same
    session.set_frame(None)
    timer = session.get_timer()
    assert timer is not None
    assert session.periodic_packet(timer) is None  # contents (frame) changed: the slow path
    session.handle_timer(timer)
    [bare] = session.datagrams_to_send()
    assert decode(bare).state is State.DOWN


def test_path_changed_sends_at_once_while_not_up() -> None:
    session = make()
    session.handle_timer(0)
    session.datagrams_to_send()
    session.path_changed(5)
    assert session.get_timer() == 5


def test_set_timers_changes_the_interval_and_detect_mult() -> None:
    loop = Loop(make())
    loop.run_until(1_000_000)
    session = loop.session
    session.set_timers(loop.now, desired_min_tx_us=200 * MS, detect_mult=5)
    loop.run_until(3_000_000)
    up = [(t, p) for t, p in loop.sent if t > 1_300_000]
    assert up and all(p.desired_min_tx_us == 200 * MS and p.detect_mult == 5 for _, p in up)
    assert session.detection_time_us == 1000 * MS
    assert session.transmit_interval_us == 200 * MS


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="echo interval"):
        EchoConfig(interval_us=0)
    with pytest.raises(ValueError, match="detect multiplier"):
        EchoConfig(detect_mult=256)


def test_has_what_the_engine_reads_of_a_session() -> None:
    session = make()
    assert session.poll_active is False
    assert session.auth is None
    assert session.required_min_rx_us == 0  # keeps echo out of the receive hold-off
    assert session.min_rx_ttl == 254
    assert session.receive_repeat(b"x", 0) is None
    assert session.arrived_later(5) is False


@settings(max_examples=60, deadline=None)
@given(
    interval_ms=st.integers(10, 300),
    mult=st.integers(1, 5),
    delay_us=st.integers(1, 5000),
    outage=st.tuples(st.integers(0, 3_000_000), st.integers(0, 2_000_000)),
    seed=st.integers(0, 2**32),
)
def test_down_exactly_when_and_only_when_packets_stop_coming_back(
    interval_ms: int, mult: int, delay_us: int, outage: tuple[int, int], seed: int
) -> None:
    """Up soon after the start; Down (diag 2) only for an outage of at least the
    Detection Time, at the last return plus Detect Mult intervals; Up again after."""
    session = make(interval_ms, mult, seed=seed)
    loop = Loop(session, delay_us)
    loop.run_until(2_000_000)
    assert session.state is State.UP
    start, length = outage
    start += 2_000_000
    loop.run_until(start)
    loop.broken = True
    loop.run_until(start + length)
    loop.broken = False
    loop.run_until(start + length + 3_000_000)
    downs = [e for e in loop.events if e.new_state is State.DOWN]
    for down in downs:
        assert down.diag is Diag.ECHO_FUNCTION_FAILED
        assert down.last_rx_us is not None
        assert down.at_us == down.last_rx_us + mult * interval_ms * MS
        assert start <= down.at_us <= start + length + mult * interval_ms * MS + delay_us
    lost = sum(1 for t, _ in loop.sent if start <= t < start + length)
    if lost < mult:  # fewer than Detect Mult packets in a row failed to come back
        assert not downs
    else:
        assert downs
    assert session.state is State.UP
