"""One session on a fake clock: detection, AdminDown, slow start, Poll/Final,
jitter, the Passive role, remote Demand mode and timer changes (RFC 5880 §6.8)."""

from __future__ import annotations

import random

import pytest

from aiobfd.protocol.errors import DropReason, LocalProtocolError, PacketError
from aiobfd.protocol.events import PollSequenceCompleted, StateChanged
from aiobfd.protocol.packet import (
    FLAG_DEMAND,
    FLAG_FINAL,
    FLAG_POLL,
    AuthSection,
    AuthType,
    ControlPacket,
    Diag,
    State,
    decode,
    encode,
)
from aiobfd.protocol.session import Session, SessionConfig
from aiobfd.protocol.timers import tx_grid
from tests.helpers import (
    LOCAL,
    MS,
    REMOTE,
    SECOND,
    SessionPair,
    deliver,
    drain,
    due,
    events,
    fire_until,
    gaps,
    make_session,
    pkt,
    state_changes,
    up_session,
)

FAST = SessionConfig(50 * MS, 50 * MS, 3)


def periodic(sent: list[tuple[int, ControlPacket]]) -> list[tuple[int, ControlPacket]]:
    """The packets that are not Finals (those go out at once, off the schedule)."""
    return [(t, p) for t, p in sent if not p.final]


def in_range(values: list[int], low: int, high: int) -> bool:
    return bool(values) and all(low <= v <= high for v in values)


# ------------------------------------------------------------------ construction


def test_initial_state() -> None:
    s = make_session(discr=LOCAL, now=500)
    assert s.state is State.DOWN
    assert s.remote_discr == 0
    assert s.local_diag is Diag.NO_DIAGNOSTIC
    assert s.get_timer() == 500  # the first packet goes out at once
    assert s.detect_deadline_us is None
    s.handle_timer(500)
    [first] = drain(s)
    assert first.state is State.DOWN
    assert (first.my_discr, first.your_discr) == (LOCAL, 0)
    assert first.flags == 0


@pytest.mark.parametrize("discr", [0, 1 << 32])
def test_bad_local_discriminator(discr: int) -> None:
    with pytest.raises(LocalProtocolError):
        make_session(discr=discr)


@pytest.mark.parametrize(
    ("tx", "rx", "mult"), [(0, 1, 3), (1, 0, 3), (1, 1, 0), (1, 1, 256), (1 << 32, 1, 3)]
)
def test_bad_config(tx: int, rx: int, mult: int) -> None:
    with pytest.raises(ValueError):
        SessionConfig(tx, rx, mult)


def test_packet_with_auth_is_dropped_without_auth_configured() -> None:
    s = up_session()
    auth = AuthSection(AuthType.SIMPLE_PASSWORD, 1, b"secret")
    with pytest.raises(PacketError) as info:
        deliver(s, pkt(State.DOWN)._replace(auth=auth), 10)
    assert info.value.reason is DropReason.AUTH_MISMATCH
    assert s.state is State.UP  # unchanged
    assert s.counters.drops == {DropReason.AUTH_MISMATCH: 1}
    assert s.counters.packets_dropped == 1


# ------------------------------------------------------------------ detection


def test_detection_expiry_in_up_exactly_at_deadline() -> None:
    s = up_session(now=0)
    deliver(s, pkt(State.UP), 1_000_000)
    dt = s.detection_time_us
    assert dt == 3 * 300 * MS
    assert s.detect_deadline_us == 1_000_000 + dt
    # Not a microsecond early, however often the timer is run.
    fire_until(s, 1_000_000 + dt - 1, start=1_000_000)
    assert s.state is State.UP
    timer = s.get_timer()
    assert timer is not None
    assert timer <= 1_000_000 + dt
    # Run the timer at the deadline: Down, diag 1.
    sent = fire_until(s, 1_000_000 + dt, start=1_000_000 + dt - 1)
    assert s.state is State.DOWN
    assert s.local_diag is Diag.CONTROL_DETECTION_TIME_EXPIRED
    [change] = state_changes(s)
    assert (change.old_state, change.new_state) == (State.UP, State.DOWN)
    assert change.diag is Diag.CONTROL_DETECTION_TIME_EXPIRED
    assert change.at_us == 1_000_000 + dt
    assert change.last_rx_us == 1_000_000
    assert change.detection_time_us == dt
    assert s.counters.detection_expiries == 1
    assert s.counters.session_down == 1
    # The remote's discriminator is forgotten (§6.8.1) and the next packet says so.
    assert s.remote_discr == 0
    assert sent[-1][0] == 1_000_000 + dt
    last = sent[-1][1]
    assert last.state is State.DOWN
    assert last.diag is Diag.CONTROL_DETECTION_TIME_EXPIRED
    assert last.your_discr == 0
    assert last.desired_min_tx_us == SECOND  # slow again


def test_detection_expiry_when_timer_fires_late() -> None:
    s = up_session()
    deliver(s, pkt(State.UP), 0)
    s.handle_timer(5 * SECOND)
    assert s.state is State.DOWN
    assert s.local_diag is Diag.CONTROL_DETECTION_TIME_EXPIRED


def test_detection_expiry_in_init() -> None:
    s = make_session(SessionConfig(300 * MS, 300 * MS, 3), discr=LOCAL)
    deliver(s, pkt(State.DOWN, your=0, tx=SECOND, mult=2), 100)
    assert s.state is State.INIT
    deadline = 100 + 2 * SECOND  # remote mult 2 x max(300 ms, 1 s)
    assert s.detect_deadline_us == deadline
    fire_until(s, deadline - 1, start=100)
    assert s.state is State.INIT
    fire_until(s, deadline, start=deadline - 1)
    assert s.state is State.DOWN
    assert s.local_diag is Diag.CONTROL_DETECTION_TIME_EXPIRED
    assert s.remote_discr == 0


def test_detection_expiry_in_down_forgets_remote() -> None:
    s = make_session(discr=LOCAL)
    deliver(s, pkt(State.UP), 0)  # remote Up, we Down: no transition
    assert s.state is State.DOWN
    assert s.remote_discr == REMOTE
    assert s.detect_deadline_us is not None
    fire_until(s, s.detect_deadline_us)
    assert s.state is State.DOWN
    assert s.local_diag is Diag.NO_DIAGNOSTIC
    assert s.remote_discr == 0
    assert state_changes(s) == []


def test_every_packet_restarts_detection() -> None:
    s = up_session()
    for t in range(0, 10 * SECOND, 800 * MS):  # just under the 900 ms detection time
        deliver(s, pkt(State.UP), t)
        fire_until(s, t + 799 * MS, start=t)
    assert s.state is State.UP
    assert s.counters.detection_expiries == 0


@pytest.mark.parametrize(
    ("our_rx", "remote_tx", "remote_mult", "expected"),
    [
        (300 * MS, 100 * MS, 3, 900 * MS),  # our Required Min RX dominates
        (200 * MS, 500 * MS, 5, 2_500 * MS),  # the remote's Desired Min TX dominates
        (50 * MS, 50 * MS, 1, 50 * MS),
    ],
)
def test_detection_time_formula(
    our_rx: int, remote_tx: int, remote_mult: int, expected: int
) -> None:
    s = up_session(SessionConfig(300 * MS, our_rx, 3), remote_tx=remote_tx, remote_mult=remote_mult)
    assert s.detection_time_us == expected
    deliver(s, pkt(State.UP, tx=remote_tx, mult=remote_mult), 7)
    assert s.detect_deadline_us == 7 + expected


def test_pair_detects_cut_link_at_last_rx_plus_detection_time() -> None:
    pair = SessionPair(FAST, FAST)
    pair.run_for(3 * SECOND)
    assert pair.a.state is pair.b.state is State.UP
    pair.events.clear()
    pair.b_to_a = False
    pair.run_for(2 * SECOND)
    downs = [(name, ev) for name, ev in pair.events if ev.new_state is State.DOWN]
    name, ev = downs[0]
    assert name == "a"
    assert ev.diag is Diag.CONTROL_DETECTION_TIME_EXPIRED
    assert ev.detection_time_us == 3 * 50 * MS
    assert ev.last_rx_us is not None
    assert ev.at_us == ev.last_rx_us + ev.detection_time_us
    # b hears a's Down (diag 1) and follows with diag 3.
    assert ("b", Diag.NEIGHBOR_SIGNALED_SESSION_DOWN) in [(n, e.diag) for n, e in downs]


# ------------------------------------------------------------------ AdminDown


def test_disable_sends_admin_down_diag_7() -> None:
    s = up_session()
    s.disable(1_000)
    [change] = state_changes(s)
    assert (change.old_state, change.new_state) == (State.UP, State.ADMIN_DOWN)
    assert change.diag is Diag.ADMINISTRATIVELY_DOWN
    assert s.detect_deadline_us is None
    sent = fire_until(s, 5 * SECOND, start=1_000)
    assert sent[0][0] == 1_000  # at once
    assert len(sent) >= 5  # and periodically after that
    for _, p in sent:
        assert p.state is State.ADMIN_DOWN
        assert p.diag is Diag.ADMINISTRATIVELY_DOWN
        assert p.your_discr == REMOTE
        assert p.desired_min_tx_us >= SECOND
    assert in_range(gaps([t for t, _ in sent]), 750 * MS, SECOND)
    # No detection in AdminDown: nothing expires, however long we wait.
    assert s.state is State.ADMIN_DOWN
    assert s.counters.detection_expiries == 0


def test_disable_twice_is_one_change() -> None:
    s = up_session()
    s.disable(1)
    s.disable(2)
    assert len(state_changes(s)) == 1


def test_admin_down_drops_received_packets() -> None:
    s = up_session()
    s.disable(1_000)
    drain(s)
    state_changes(s)
    before = s.counters.packets_in
    for p in (pkt(State.UP), pkt(State.DOWN, your=0), pkt(State.UP, flags=FLAG_POLL)):
        with pytest.raises(PacketError) as info:
            deliver(s, p, 2_000)
        assert info.value.reason is DropReason.SESSION_ADMIN_DOWN
    assert s.counters.packets_in == before
    assert s.counters.drops == {DropReason.SESSION_ADMIN_DOWN: 3}
    assert drain(s) == []  # not even a Final for the Poll
    assert s.state is State.ADMIN_DOWN


def test_enable_returns_to_down_and_comes_back_up() -> None:
    s = up_session()
    s.disable(1_000)
    s.enable(2_000)
    changes = state_changes(s)
    assert [(c.old_state, c.new_state) for c in changes] == [
        (State.UP, State.ADMIN_DOWN),
        (State.ADMIN_DOWN, State.DOWN),
    ]
    assert s.state is State.DOWN
    assert s.local_diag is Diag.NO_DIAGNOSTIC
    s.enable(2_500)  # no-op
    assert state_changes(s) == []
    sent = fire_until(s, 2_000, start=2_000)
    assert sent[-1][1].state is State.DOWN
    deliver(s, pkt(State.INIT), 3_000)
    assert s.state is State.UP


def test_remote_admin_down_in_pair() -> None:
    pair = SessionPair(FAST, FAST)
    pair.run_for(3 * SECOND)
    pair.events.clear()
    pair.b.disable(pair.now)
    pair.run_for(5 * SECOND)
    assert pair.b.state is State.ADMIN_DOWN
    assert pair.a.state is State.DOWN
    assert pair.a.local_diag is Diag.NEIGHBOR_SIGNALED_SESSION_DOWN
    # a stays Down (not Init) while b is AdminDown, and nothing flaps.
    assert [(n, e.new_state) for n, e in pair.events] == [
        ("b", State.ADMIN_DOWN),
        ("a", State.DOWN),
    ]
    pair.b.enable(pair.now)
    pair.run_for(5 * SECOND)
    assert pair.a.state is pair.b.state is State.UP
    assert not pair.a.poll_active and not pair.b.poll_active
    assert pair.a.transmit_interval_us == pair.b.transmit_interval_us == 50 * MS


def test_passive_session_announces_admin_down_to_known_remote() -> None:
    s = up_session(SessionConfig(300 * MS, 300 * MS, 3, passive=True))
    s.disable(10)
    sent = drain(s) + [p for _, p in fire_until(s, 10, start=10)]
    assert sent
    assert sent[0].state is State.ADMIN_DOWN


# ------------------------------------------------------------------ slow start


def test_slow_while_down() -> None:
    s = make_session(FAST, discr=LOCAL)
    sent = fire_until(s, 30 * SECOND)
    assert len(sent) >= 30
    assert all(p.state is State.DOWN for _, p in sent)
    # DesiredMinTxInterval is advertised as (at least) one second while not Up,
    # RequiredMinRxInterval as configured.
    assert all(p.desired_min_tx_us == SECOND for _, p in sent)
    assert all(p.required_min_rx_us == 50 * MS for _, p in sent)
    assert in_range(gaps([t for t, _ in sent]), 750 * MS, SECOND)


def test_slow_while_init() -> None:
    s = make_session(FAST, discr=LOCAL)
    deliver(s, pkt(State.DOWN, your=0, tx=SECOND, rx=10 * MS), 0)
    assert s.state is State.INIT
    sent = fire_until(s, 20 * SECOND, remote=pkt(State.DOWN, tx=SECOND, rx=10 * MS), every=SECOND)
    assert s.state is State.INIT
    assert all(p.state is State.INIT and p.desired_min_tx_us == SECOND for _, p in sent)
    assert in_range(gaps([t for t, _ in sent]), 750 * MS, SECOND)


def test_configured_interval_above_one_second_is_kept_while_down() -> None:
    s = make_session(SessionConfig(2 * SECOND, 50 * MS, 3), discr=LOCAL)
    sent = fire_until(s, 20 * SECOND)
    assert all(p.desired_min_tx_us == 2 * SECOND for _, p in sent)
    assert in_range(gaps([t for t, _ in sent]), 1_500 * MS, 2 * SECOND)


def test_after_up_poll_then_configured_rate() -> None:
    s = make_session(FAST, discr=LOCAL)
    deliver(s, pkt(State.DOWN, your=0, tx=SECOND, rx=10 * MS), 0)
    deliver(s, pkt(State.INIT, tx=SECOND, rx=10 * MS), 100)
    assert s.state is State.UP
    assert s.poll_active
    assert s.counters.poll_sequences == 1
    remote = pkt(State.UP, tx=SECOND, rx=10 * MS)
    sent = fire_until(s, 1_000 * MS, start=100, remote=remote, every=100 * MS)
    # The first Up packet goes out at once, with Poll and the configured interval;
    # the Poll is repeated at the new (faster, hence immediate) rate until answered.
    assert sent[0][0] == 100
    assert all(p.state is State.UP and p.poll for _, p in sent)
    assert all(p.desired_min_tx_us == 50 * MS for _, p in sent)
    assert in_range(gaps([t for t, _ in sent]), 37_500, 50 * MS)
    deliver(s, pkt(State.UP, flags=FLAG_FINAL, tx=SECOND, rx=10 * MS), 1_000 * MS + 1)
    assert not s.poll_active
    polls = [e for e in events(s) if isinstance(e, PollSequenceCompleted)]
    assert polls[-1].desired_min_tx_us == 50 * MS
    assert s.transmit_interval_us == 50 * MS
    sent = fire_until(s, 3 * SECOND, start=1_000 * MS + 1, remote=remote, every=100 * MS)
    assert not any(p.poll for _, p in sent)
    assert in_range(gaps([t for t, _ in sent]), 37_500, 50 * MS)


def test_slow_start_in_pair() -> None:
    pair = SessionPair(FAST, FAST)
    pair.run_for(5 * SECOND)
    assert pair.a.state is pair.b.state is State.UP
    up_at = next(e.at_us for n, e in pair.events if n == "a" and e.new_state is State.UP)
    before = [p for t, p in pair.sent["a"] if t < up_at]
    after = [(t, p) for t, p in pair.sent["a"] if t >= up_at + 10 * MS]
    assert all(p.desired_min_tx_us == SECOND for p in before)
    assert all(p.desired_min_tx_us == 50 * MS for _, p in after)
    assert any(p.poll for t, p in pair.sent["a"] if t >= up_at)
    assert not pair.a.poll_active and not pair.b.poll_active
    assert in_range(gaps([t for t, p in after if not p.final]), 37_500, 50 * MS)


# ------------------------------------------------------------------ Poll / Final


@pytest.mark.parametrize("state", [State.DOWN, State.INIT, State.UP])
def test_poll_is_answered_at_once_with_final(state: State) -> None:
    s = up_session() if state is State.UP else make_session(discr=LOCAL)
    if state is State.INIT:
        deliver(s, pkt(State.DOWN, your=0), 0)
    drain(s)
    remote_state = State.UP if state is State.UP else State.ADMIN_DOWN
    deliver(s, pkt(remote_state, flags=FLAG_POLL, your=LOCAL), 5_000)
    # Queued by receive() itself, without waiting for a timer.
    [final] = drain(s)
    assert final.final and not final.poll
    assert final.state is s.state
    assert final.your_discr == REMOTE
    assert s.counters.finals_sent == 1


def test_final_never_carries_our_own_poll() -> None:
    s = up_session()
    s.set_timers(10, desired_min_tx_us=600 * MS)
    assert s.poll_active
    deliver(s, pkt(State.UP, flags=FLAG_POLL), 20)
    [final] = drain(s)
    assert final.final and not final.poll
    assert s.poll_active  # the remote's Poll does not end ours
    s.handle_timer(20)
    [ours] = drain(s)
    assert ours.poll and not ours.final


def test_our_poll_is_repeated_until_final() -> None:
    s = up_session()
    s.set_timers(0, desired_min_tx_us=600 * MS)
    assert s.poll_active
    remote = pkt(State.UP)
    sent = fire_until(s, 5 * SECOND, remote=remote, every=250 * MS)
    assert len(sent) >= 15
    assert all(p.poll and not p.final for _, p in sent)
    assert all(p.desired_min_tx_us == 600 * MS for _, p in sent)
    # An increase while Up waits for the Final: still the old 300 ms rate.
    assert s.transmit_interval_us == 300 * MS
    assert in_range(gaps([t for t, _ in sent]), 225 * MS, 300 * MS)
    deliver(s, pkt(State.UP, flags=FLAG_FINAL), 5 * SECOND + 1)
    assert not s.poll_active
    assert s.transmit_interval_us == 600 * MS
    [done] = [e for e in events(s) if isinstance(e, PollSequenceCompleted)]
    assert done.at_us == 5 * SECOND + 1
    assert done.desired_min_tx_us == 600 * MS
    sent = fire_until(s, 15 * SECOND, start=5 * SECOND + 1, remote=remote, every=250 * MS)
    assert not any(p.poll for _, p in sent)
    assert in_range(gaps([t for t, _ in sent]), 450 * MS, 600 * MS)
    assert s.state is State.UP


def test_final_without_poll_is_harmless() -> None:
    s = up_session()
    deliver(s, pkt(State.UP, flags=FLAG_FINAL), 10)
    assert not s.poll_active
    assert [e for e in events(s) if isinstance(e, PollSequenceCompleted)] == []


def test_decrease_of_tx_applies_at_once() -> None:
    s = up_session(remote_rx=10 * MS)
    s.set_timers(0, desired_min_tx_us=100 * MS)
    assert s.transmit_interval_us == 100 * MS
    assert s.poll_active  # the remote is still told, by a Poll


def test_decrease_of_rx_keeps_old_detection_time_until_final() -> None:
    s = up_session(remote_tx=50 * MS)
    assert s.detection_time_us == 900 * MS  # 3 x max(300 ms, 50 ms)
    s.set_timers(0, required_min_rx_us=100 * MS)
    s.handle_timer(0)
    [poll] = drain(s)
    assert poll.poll and poll.required_min_rx_us == 100 * MS
    assert s.detection_time_us == 900 * MS
    deliver(s, pkt(State.UP, tx=50 * MS), 1_000)
    assert s.detect_deadline_us == 1_000 + 900 * MS
    s.handle_timer(1_000 + 400 * MS)
    assert s.state is State.UP  # the new 300 ms would have expired by now
    deliver(s, pkt(State.UP, tx=50 * MS, flags=FLAG_FINAL), 500 * MS)
    assert s.detection_time_us == 300 * MS
    assert s.detect_deadline_us == 500 * MS + 300 * MS


def test_increase_of_rx_applies_at_once() -> None:
    s = up_session(remote_tx=50 * MS)
    deliver(s, pkt(State.UP, tx=50 * MS), 1_000)
    s.set_timers(2_000, required_min_rx_us=SECOND)
    assert s.detection_time_us == 3 * SECOND
    assert s.detect_deadline_us == 1_000 + 3 * SECOND


def test_change_during_poll_gives_a_second_poll() -> None:
    s = up_session()
    s.set_timers(0, desired_min_tx_us=600 * MS)
    s.handle_timer(0)
    [first] = drain(s)
    assert first.poll and first.desired_min_tx_us == 600 * MS
    s.set_timers(10, desired_min_tx_us=900 * MS)
    assert s.counters.poll_sequences == 2  # the initial one after Up, and this one
    # The Final may answer a Poll that carried 600 ms: a second Poll follows at
    # once, carrying 900 ms.
    deliver(s, pkt(State.UP, flags=FLAG_FINAL), 20)
    assert s.poll_active
    assert s.counters.poll_sequences == 3
    s.handle_timer(20)
    [second] = drain(s)
    assert second.poll and second.desired_min_tx_us == 900 * MS
    deliver(s, pkt(State.UP, flags=FLAG_FINAL), 30)
    assert not s.poll_active
    assert s.transmit_interval_us == 900 * MS
    done = [e for e in events(s) if isinstance(e, PollSequenceCompleted)]
    assert [e.at_us for e in done] == [20, 30]


def test_tx_increase_during_poll_waits_for_the_poll_that_carries_it() -> None:
    # RFC 5880 §6.8.3: an increase of the transmit interval while Up MUST NOT
    # take effect before the Poll Sequence announcing it ends.  The first
    # Final may answer a Poll that still carried the earlier value.
    s = up_session(remote_rx=10 * MS)
    s.set_timers(0, desired_min_tx_us=600 * MS)
    s.handle_timer(0)
    drain(s)
    s.set_timers(10, desired_min_tx_us=900 * MS)
    deliver(s, pkt(State.UP, rx=10 * MS, flags=FLAG_FINAL), 20)
    assert s.transmit_interval_us <= 600 * MS
    deliver(s, pkt(State.UP, rx=10 * MS, flags=FLAG_FINAL), 30)
    assert s.transmit_interval_us == 900 * MS


def test_rx_decrease_during_poll_waits_for_the_poll_that_carries_it() -> None:
    # The mirror case for Required Min RX: detection must not shrink to a value
    # the remote has not acknowledged.
    s = up_session(remote_tx=10 * MS)
    assert s.detection_time_us == 900 * MS
    s.set_timers(0, required_min_rx_us=200 * MS)
    s.handle_timer(0)
    drain(s)
    s.set_timers(10, required_min_rx_us=50 * MS)
    deliver(s, pkt(State.UP, tx=10 * MS, flags=FLAG_FINAL), 20)
    assert s.detection_time_us >= 3 * 200 * MS
    deliver(s, pkt(State.UP, tx=10 * MS, flags=FLAG_FINAL), 30)
    assert s.detection_time_us == 3 * 50 * MS


def test_poll_survives_in_pair_with_loss() -> None:
    pair = SessionPair(FAST, FAST)
    pair.run_for(3 * SECOND)
    pair.events.clear()
    # Lose b's first three Finals: a keeps polling until one gets through.
    lost: list[ControlPacket] = []

    def drop_finals(name: str, p: ControlPacket) -> bool:
        if name == "b" and p.final and len(lost) < 3:
            lost.append(p)
            return False
        return True

    pair.filter = drop_finals
    pair.a.set_timers(pair.now, desired_min_tx_us=200 * MS)
    pair.run_for(3 * SECOND)
    assert len(lost) == 3
    assert not pair.a.poll_active
    assert pair.a.transmit_interval_us == 200 * MS
    assert pair.events == []


# ------------------------------------------------------------------ jitter


@pytest.mark.parametrize(("mult", "high"), [(3, 1.0), (1, 0.9)])
def test_jitter_over_many_intervals(mult: int, high: float) -> None:
    config = SessionConfig(10 * MS, 10 * MS, mult)
    s = up_session(config, remote_tx=10 * MS, remote_rx=10 * MS, seed=11)
    sent = fire_until(s, 30 * SECOND, remote=pkt(State.UP, tx=10 * MS, rx=10 * MS), every=5 * MS)
    intervals = gaps([t for t, _ in periodic(sent)])
    assert len(intervals) > 2_500
    assert in_range(intervals, 7_500, int(10 * MS * high))
    # Really random: both ends of the range are reached.
    assert min(intervals) < 7_700
    assert max(intervals) > 10 * MS * high - 200


def test_aligned_transmissions_fall_on_the_grid_within_the_jitter_window() -> None:
    s = up_session(SessionConfig(50 * MS, 50 * MS, 3), remote_tx=50 * MS, remote_rx=50 * MS)
    s.align_tx = True
    sent = fire_until(s, 20 * SECOND, remote=pkt(State.UP, tx=50 * MS, rx=50 * MS), every=20 * MS)
    times = [t for t, _ in periodic(sent)][1:]  # the first was due before alignment
    assert len(times) > 350
    assert all(t % tx_grid(50 * MS, 3) == 0 for t in times)
    intervals = gaps(times)
    assert in_range(intervals, 37_500, 50 * MS)
    assert len(set(intervals)) >= 3  # still jittered
    assert s.state is State.UP


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_jitter_slow_start_stays_in_range(seed: int) -> None:
    s = make_session(SessionConfig(SECOND, SECOND, 1), discr=LOCAL, seed=seed)
    sent = fire_until(s, 200 * SECOND)
    assert in_range(gaps([t for t, _ in sent]), 750 * MS, 900 * MS)


# ------------------------------------------------------------------ passive role


def test_passive_waits_for_the_remote() -> None:
    s = make_session(SessionConfig(300 * MS, 300 * MS, 3, passive=True), discr=LOCAL)
    assert s.get_timer() is None
    assert fire_until(s, 60 * SECOND) == []
    s.handle_timer(60 * SECOND)
    assert drain(s) == []
    deliver(s, pkt(State.DOWN, your=0), 61 * SECOND)
    assert s.state is State.INIT
    sent = fire_until(s, 62 * SECOND, start=61 * SECOND)
    assert sent[0][0] == 61 * SECOND  # answers at once
    assert sent[0][1].state is State.INIT
    assert sent[0][1].your_discr == REMOTE


def test_passive_answers_a_remote_it_cannot_sync_with_yet() -> None:
    s = make_session(SessionConfig(300 * MS, 300 * MS, 3, passive=True), discr=LOCAL)
    deliver(s, pkt(State.UP), 0)  # no transition, but the remote is known now
    assert s.state is State.DOWN
    sent = fire_until(s, 2 * SECOND)
    assert sent and all(p.state is State.DOWN and p.your_discr == REMOTE for _, p in sent)


def test_passive_falls_silent_after_expiry() -> None:
    s = make_session(SessionConfig(300 * MS, 300 * MS, 3, passive=True), discr=LOCAL)
    deliver(s, pkt(State.DOWN, your=0), 0)
    fire_until(s, 10 * SECOND)
    assert s.state is State.DOWN
    assert s.remote_discr == 0
    assert s.get_timer() is None
    assert fire_until(s, 20 * SECOND, start=10 * SECOND) == []


def test_passive_pair_comes_up() -> None:
    pair = SessionPair(SessionConfig(300 * MS, 300 * MS, 3, passive=True), FAST)
    pair.run_for(5 * SECOND)
    assert pair.a.state is pair.b.state is State.UP
    first_a = pair.sent["a"][0][0]
    first_b = pair.sent["b"][0][0]
    assert first_a > first_b


def test_set_passive_at_runtime() -> None:
    s = make_session(discr=LOCAL)
    s.set_passive(True, 0)
    assert s.get_timer() is None
    s.set_passive(False, 10)
    assert s.get_timer() is not None


# ------------------------------------------------------------------ remote Demand mode


def test_remote_demand_mode_silences_us_while_both_up() -> None:
    s = up_session(remote_rx=50 * MS)
    deliver(s, pkt(State.UP, flags=FLAG_DEMAND, rx=50 * MS), 1_000)
    assert s.remote_demand_mode
    assert s.next_tx_us is None
    assert s.get_timer() == s.detect_deadline_us  # detection still runs
    sent = fire_until(
        s,
        5 * SECOND,
        start=1_000,
        remote=pkt(State.UP, flags=FLAG_DEMAND, rx=50 * MS),
        every=100 * MS,
    )
    assert sent == []
    assert s.state is State.UP
    # A Poll is still answered with a Final.
    deliver(s, pkt(State.UP, flags=FLAG_DEMAND | FLAG_POLL, rx=50 * MS), 5 * SECOND + 1)
    [final] = drain(s)
    assert final.final and not final.poll
    assert s.next_tx_us is None
    # D cleared: periodic transmission resumes.
    deliver(s, pkt(State.UP, rx=50 * MS), 6 * SECOND)
    assert s.next_tx_us is not None
    sent = fire_until(
        s, 8 * SECOND, start=6 * SECOND, remote=pkt(State.UP, rx=50 * MS), every=100 * MS
    )
    assert sent[0][0] - 6 * SECOND <= 300 * MS
    assert in_range(gaps([t for t, _ in sent]), 225 * MS, 300 * MS)


def test_remote_demand_mode_ignored_unless_both_up() -> None:
    s = make_session(discr=LOCAL)
    deliver(s, pkt(State.DOWN, your=0, flags=FLAG_DEMAND), 0)
    assert s.state is State.INIT
    assert s.next_tx_us is not None
    sent = fire_until(s, 3 * SECOND, remote=pkt(State.DOWN, flags=FLAG_DEMAND), every=SECOND)
    assert len(sent) >= 3


def test_our_poll_goes_out_despite_remote_demand() -> None:
    s = up_session()
    deliver(s, pkt(State.UP, flags=FLAG_DEMAND), 0)
    assert s.next_tx_us is None
    s.set_timers(10, desired_min_tx_us=400 * MS)
    sent = fire_until(
        s, 700 * MS, start=10, remote=pkt(State.UP, flags=FLAG_DEMAND), every=100 * MS
    )
    assert len(sent) >= 2
    assert all(p.poll for _, p in sent)
    deliver(s, pkt(State.UP, flags=FLAG_DEMAND | FLAG_FINAL), 700 * MS + 1)
    assert not s.poll_active
    assert s.next_tx_us is None


# ------------------------------------------------------------------ remote intervals


def test_remote_required_min_rx_zero_stops_periodic_packets() -> None:
    s = up_session()
    deliver(s, pkt(State.UP, rx=0), 1_000)
    assert s.next_tx_us is None
    sent = fire_until(s, 5 * SECOND, start=1_000, remote=pkt(State.UP, rx=0), every=200 * MS)
    assert sent == []
    assert s.state is State.UP
    deliver(s, pkt(State.UP, rx=0, flags=FLAG_POLL), 5 * SECOND)
    [final] = drain(s)
    assert final.final
    deliver(s, pkt(State.UP, rx=300 * MS), 6 * SECOND)
    assert fire_until(s, 7 * SECOND, start=6 * SECOND, remote=pkt(State.UP), every=200 * MS)


def test_remote_required_min_rx_zero_before_up() -> None:
    s = make_session(discr=LOCAL)
    s.handle_timer(0)
    drain(s)
    deliver(s, pkt(State.DOWN, your=0, rx=0), 10)
    assert s.state is State.INIT
    assert fire_until(s, 3 * SECOND, start=10, remote=pkt(State.DOWN, rx=0), every=SECOND) == []


@pytest.mark.parametrize(
    ("remote_rx", "expected"), [(2 * SECOND, 2 * SECOND), (10 * MS, 300 * MS), (300 * MS, 300 * MS)]
)
def test_remote_changes_its_intervals_while_up(remote_rx: int, expected: int) -> None:
    s = up_session(remote_rx=300 * MS)
    deliver(s, pkt(State.UP, flags=FLAG_POLL, rx=remote_rx, tx=500 * MS), 1_000)
    [final] = drain(s)
    assert final.final
    assert s.state is State.UP
    assert s.transmit_interval_us == expected  # max(our desired tx, remote min rx)
    assert s.detection_time_us == 3 * 500 * MS  # the remote's new desired tx
    remote = pkt(State.UP, rx=remote_rx, tx=500 * MS)
    sent = fire_until(s, 30 * SECOND, start=1_000, remote=remote, every=400 * MS)
    intervals = gaps([t for t, _ in periodic(sent)])
    assert in_range(intervals[1:], expected * 3 // 4, expected)
    assert s.state is State.UP
    assert state_changes(s) == []


def test_remote_slowing_down_reschedules_pending_packet() -> None:
    s = up_session()
    s.handle_timer(due(s))
    drain(s)
    last = s.last_tx_us
    assert last is not None
    deliver(s, pkt(State.UP, rx=5 * SECOND), last + 1)
    assert s.next_tx_us is not None
    assert s.next_tx_us >= last + 3_750 * MS


# ------------------------------------------------------------------ set_timers


def test_set_timers_before_remote_known_needs_no_poll() -> None:
    s = make_session(FAST, discr=LOCAL)
    s.set_timers(0, desired_min_tx_us=2 * SECOND, required_min_rx_us=20 * MS)
    assert not s.poll_active
    assert s.desired_min_tx_us == 2 * SECOND
    assert s.required_min_rx_us == 20 * MS
    s.handle_timer(0)
    [p] = drain(s)
    assert (p.desired_min_tx_us, p.required_min_rx_us) == (2 * SECOND, 20 * MS)


def test_set_timers_keeps_other_values() -> None:
    s = up_session()
    s.set_timers(0, detect_mult=7)
    assert s.config == SessionConfig(300 * MS, 300 * MS, 7)
    s.handle_timer(due(s))
    assert all(p.detect_mult == 7 for p in drain(s))


@pytest.mark.parametrize(
    "change",
    [
        {"desired_min_tx_us": 2 * SECOND},
        {"desired_min_tx_us": 10 * MS},
        {"required_min_rx_us": 10 * MS},
        {"required_min_rx_us": 2 * SECOND},
        {"detect_mult": 1},
        {"detect_mult": 10},
        {"desired_min_tx_us": 1_500 * MS, "required_min_rx_us": 20 * MS, "detect_mult": 2},
    ],
)
def test_set_timers_while_up_does_not_flap(change: dict[str, int]) -> None:
    pair = SessionPair(FAST, FAST, seed=3)
    pair.run_for(3 * SECOND)
    assert pair.a.state is pair.b.state is State.UP
    pair.events.clear()
    pair.a.set_timers(pair.now, **change)
    pair.run_for(20 * SECOND)
    assert pair.events == []
    assert pair.a.state is pair.b.state is State.UP
    assert not pair.a.poll_active
    cfg = pair.a.config
    assert pair.a.desired_min_tx_us == cfg.desired_min_tx_us
    assert pair.a.transmit_interval_us == max(cfg.desired_min_tx_us, 50 * MS)
    assert pair.b.detection_time_us == cfg.detect_mult * max(50 * MS, cfg.desired_min_tx_us)
    assert pair.a.detection_time_us == 3 * max(cfg.required_min_rx_us, 50 * MS)
    # And b, told by the Poll, sends at a rate a accepts.
    assert pair.b.transmit_interval_us == max(50 * MS, cfg.required_min_rx_us)


def test_repeated_changes_in_pair_do_not_flap() -> None:
    pair = SessionPair(FAST, FAST, seed=9)
    pair.run_for(3 * SECOND)
    pair.events.clear()
    rng = random.Random(4)
    for _ in range(40):
        pair.a.set_timers(
            pair.now,
            desired_min_tx_us=rng.choice([10 * MS, 50 * MS, 300 * MS, SECOND]),
            required_min_rx_us=rng.choice([10 * MS, 50 * MS, 300 * MS, SECOND]),
            detect_mult=rng.randint(1, 5),
        )
        pair.run_for(rng.randint(1, 400) * MS)
    pair.run_for(10 * SECOND)
    assert pair.events == []
    assert not pair.a.poll_active


# ------------------------------------------------------------------ counters, events


def test_counters_and_gap() -> None:
    s = up_session()
    before_in = s.counters.packets_in
    for i in range(1, 6):
        deliver(s, pkt(State.UP), i * 200 * MS)
    assert s.counters.packets_in == before_in + 5
    assert s.max_rx_gap_us == 200 * MS
    assert s.last_rx_us == SECOND
    s.handle_timer(due(s))
    n = len(drain(s))
    assert n >= 1
    assert s.counters.packets_out >= n


def test_state_changed_carries_detection_details() -> None:
    s = make_session(discr=LOCAL)
    deliver(s, pkt(State.DOWN, your=0, tx=SECOND, mult=4), 123)
    [ev] = state_changes(s)
    assert isinstance(ev, StateChanged)
    assert ev.at_us == ev.last_rx_us == 123
    assert ev.detection_time_us == 4 * SECOND


def test_repr_mentions_state() -> None:
    s: Session = up_session()
    assert "UP" in repr(s)


def test_remote_restart_in_pair() -> None:
    pair = SessionPair(FAST, FAST)
    pair.run_for(3 * SECOND)
    pair.events.clear()
    # b restarts with a new discriminator; its Down (Your Discriminator 0)
    # takes a Down with diag 3, then both come back Up.
    pair.b = make_session(FAST, discr=0x3333, now=pair.now, seed=5)
    pair.run_for(5 * SECOND)
    assert pair.a.state is pair.b.state is State.UP
    assert pair.a.remote_discr == 0x3333
    a_changes = [(e.new_state, e.diag) for n, e in pair.events if n == "a"]
    assert a_changes[0] == (State.DOWN, Diag.NEIGHBOR_SIGNALED_SESSION_DOWN)
    assert a_changes[-1][0] is State.UP


def test_transmit_now() -> None:
    s = up_session()
    s.transmit_now(10)
    [p] = drain(s)
    assert p.state is State.UP and p.your_discr == REMOTE
    quiet = make_session(SessionConfig(passive=True), discr=LOCAL)
    quiet.transmit_now(10)
    assert drain(quiet) == []


def test_tx_and_rx_changed_together_make_one_poll() -> None:
    s = up_session()
    s.set_timers(0, desired_min_tx_us=600 * MS, required_min_rx_us=200 * MS)
    assert s.counters.poll_sequences == 2  # the initial one after Up, and this one
    s.handle_timer(0)
    [poll] = drain(s)
    assert poll.poll
    assert (poll.desired_min_tx_us, poll.required_min_rx_us) == (600 * MS, 200 * MS)
    deliver(s, pkt(State.UP, flags=FLAG_FINAL), 10)
    assert not s.poll_active
    assert s.counters.poll_sequences == 2
    assert s.transmit_interval_us == 600 * MS
    assert s.detection_time_us == 3 * 300 * MS  # remote tx 300 > our new rx 200


# ------------------------------------------------------------------ repeated packets


def test_a_repeated_packet_only_restarts_detection() -> None:
    s = up_session(SessionConfig(50 * MS, 50 * MS, 3), remote_tx=50 * MS, remote_rx=50 * MS)
    raw = encode(pkt(State.UP, tx=50 * MS, rx=50 * MS))
    s.receive(decode(raw), SECOND, raw)
    drain(s)
    before = (s.counters.packets_in, s.state, s.get_timer())
    assert s.receive_repeat(raw, SECOND + 40 * MS)
    assert s.counters.packets_in == before[0] + 1
    assert s.last_rx_us == SECOND + 40 * MS
    assert s.detect_deadline_us == SECOND + 40 * MS + 150 * MS
    assert s.state is before[1] and drain(s) == [] and events(s) == []
    # Other bytes go the full way.
    assert not s.receive_repeat(encode(pkt(State.UP, tx=60 * MS, rx=50 * MS)), SECOND + 50 * MS)


def test_a_repeated_packet_goes_the_full_way_once_something_changed() -> None:
    s = up_session(SessionConfig(50 * MS, 50 * MS, 3), remote_tx=50 * MS, remote_rx=50 * MS)
    raw = encode(pkt(State.UP, tx=50 * MS, rx=50 * MS))
    s.receive(decode(raw), SECOND, raw)
    s.set_timers(SECOND, required_min_rx_us=100 * MS)  # a Poll Sequence starts
    assert s.poll_active
    assert not s.receive_repeat(raw, SECOND + 10 * MS)
    s.receive(decode(raw), SECOND + 20 * MS, raw)
    s.disable(SECOND + 30 * MS)  # the state changes
    assert not s.receive_repeat(raw, SECOND + 40 * MS)
    # A packet with Poll or Final, or a session with authentication, is never repeated.
    polled = encode(pkt(State.UP, flags=FLAG_POLL, tx=50 * MS, rx=50 * MS))
    t = up_session(SessionConfig(50 * MS, 50 * MS, 3), remote_tx=50 * MS, remote_rx=50 * MS)
    t.receive(decode(polled), SECOND, polled)
    assert not t.receive_repeat(polled, SECOND + 10 * MS)


def test_the_same_packets_after_an_expiry_teach_the_remote_discriminator_again() -> None:
    """§6.8.1: bfd.RemoteDiscr is reset when the Detection Time expires; a peer
    that then sends exactly the bytes it sent before (here AdminDown, which
    leaves our Down as it is) is learnt again, not taken as a repeat that only
    restarts the timer."""
    s = make_session(SessionConfig(300 * MS, 300 * MS, 3))
    raw = encode(pkt(State.ADMIN_DOWN, my=77, your=0, tx=300 * MS, rx=300 * MS))
    s.receive(decode(raw), 0, raw)
    s.receive(decode(raw), 300 * MS, raw)
    assert s.remote_discr == 77
    assert s.detect_deadline_us is not None
    expiry = s.detect_deadline_us
    s.handle_timer(expiry)  # silence for a Detection Time
    assert s.remote_discr == 0
    assert not s.receive_repeat(raw, expiry + 100 * MS)
    drain(s)
    s.receive(decode(raw), expiry + 100 * MS, raw)
    assert s.remote_discr == 77
    s.transmit_now(expiry + 100 * MS)
    assert [p.your_discr for p in drain(s)] == [77]


# ------------------------------------------------------------- periodic fast path


def test_periodic_packet_is_what_the_full_path_would_send() -> None:
    """Two twins, same seed: one through periodic_packet, one through handle_timer."""
    config = SessionConfig(50 * MS, 50 * MS, 3)
    fast = up_session(config, remote_tx=50 * MS, remote_rx=50 * MS, seed=5)
    full = up_session(config, remote_tx=50 * MS, remote_rx=50 * MS, seed=5)
    taken = 0
    for _ in range(20):
        assert fast.next_tx_us == full.next_tx_us
        at = fast.next_tx_us
        assert at is not None
        # Keep both alive: a packet from the remote before each transmission.
        for s in (fast, full):
            deliver(s, pkt(State.UP, tx=50 * MS, rx=50 * MS), at - 1)
        data = fast.periodic_packet(at)
        full.handle_timer(at)
        if data is None:
            # The last packet out differed (a Final, say): encoded in full once.
            fast.handle_timer(at)
            (data,) = fast.datagrams_to_send()
        else:
            taken += 1
        assert [data] == full.datagrams_to_send()
        assert fast.datagrams_to_send() == [] and events(fast) == []
        assert fast.last_tx_us == full.last_tx_us == at
        assert fast.counters.packets_out == full.counters.packets_out
    assert taken >= 19
    low, high = 50 * MS * 3 // 4, 50 * MS
    assert low <= fast.next_tx_us - fast.last_tx_us < high  # type: ignore[operator]


def test_periodic_packet_leaves_everything_else_to_the_full_path() -> None:
    config = SessionConfig(50 * MS, 50 * MS, 3)
    s = up_session(config, remote_tx=50 * MS, remote_rx=50 * MS)
    tx = s.next_tx_us
    assert tx is not None
    assert s.periodic_packet(tx - 1) is None  # not due yet
    # The Detection Time is due too: the full path must run it.
    detect = s.detect_deadline_us
    assert detect is not None
    assert s.periodic_packet(detect) is None
    # A Poll Sequence carries the Poll bit: not the cached packet.
    s.set_timers(tx, required_min_rx_us=100 * MS)
    assert s.poll_active and s.periodic_packet(s.next_tx_us or tx) is None
    # A session still coming up (no remote discriminator) takes the full path.
    fresh = make_session(config, discr=LOCAL)
    assert fresh.periodic_packet(0) is None
    # So does a remote in Demand mode.
    d = up_session(config, remote_tx=50 * MS, remote_rx=50 * MS)
    deliver(d, pkt(State.UP, flags=FLAG_DEMAND, tx=50 * MS, rx=50 * MS), 1)
    assert d.periodic_packet(10 * SECOND) is None


def test_a_later_arrival_moves_the_detection_time_on() -> None:
    s = up_session(SessionConfig(50 * MS, 50 * MS, 3), remote_tx=50 * MS, remote_rx=50 * MS)
    raw = encode(pkt(State.UP, tx=50 * MS, rx=50 * MS))
    s.receive(decode(raw), SECOND, raw)
    assert s.detect_deadline_us == SECOND + 150 * MS
    # Read late, first counted from a lower bound: the exact arrival comes later.
    assert s.arrived_later(SECOND + 7 * MS)
    assert (s.last_rx_us, s.detect_deadline_us) == (SECOND + 7 * MS, SECOND + 157 * MS)
    # Never backwards.
    assert not s.arrived_later(SECOND)
    assert s.detect_deadline_us == SECOND + 157 * MS
