"""The deadline schedule: instants in order, and sessions joining each other's instants."""

from __future__ import annotations

import random

from aiobfd.protocol.packet import State
from aiobfd.protocol.schedule import COHORT_LIMIT, Schedule
from aiobfd.protocol.session import Session, SessionConfig
from aiobfd.protocol.timers import TX_GRID_MIN_US, aligned_transmission, jitter_bounds, tx_grid
from tests.helpers import MS, SECOND, fire_until, gaps, pkt, up_session


def test_instants_come_out_in_order_with_their_items() -> None:
    s: Schedule[str] = Schedule()
    assert s.earliest() is None
    assert s.add(30, "c") and s.add(10, "a") and s.add(20, "b")
    assert not s.add(10, "a2")  # an instant that exists already
    assert len(s) == 3
    assert s.pop_earliest() == (10, ["a", "a2"])
    assert s.earliest() == 20
    assert s.items_at(30) == ["c"]
    assert s.items_at(99) == []


def test_pick_only_inside_the_window_and_only_with_room() -> None:
    s: Schedule[int] = Schedule(cohort_max=2)
    rng = random.Random(1)
    assert s.pick(0, 100, rng) is None
    s.add(50, 1)
    assert s.pick(0, 50, rng) is None  # the window's end is open
    assert s.pick(51, 100, rng) is None
    assert s.pick(50, 51, rng) == 50
    s.add(50, 2)
    assert s.pick(0, 100, rng) is None  # full
    s.add(70, 3)
    s.add(500, 4)  # the instant last joined, outside the window
    assert {s.pick(0, 100, rng) for _ in range(50)} == {70, None}  # one draw, no search


def test_pick_follows_the_instant_last_joined_while_it_has_room() -> None:
    s: Schedule[int] = Schedule(cohort_max=3)
    rng = random.Random(1)
    for at in (10, 20, 30, 40):
        s.add(at, at)
    s.add(30, 31)  # a cohort's first session moved on to 30
    assert {s.pick(0, 100, rng) for _ in range(50)} == {30}  # the rest follow it
    assert s.pick(31, 100, rng) != 30  # not outside the window
    s.add(30, 32)  # full now: one random draw again
    assert {s.pick(0, 100, rng) for _ in range(200)} == {10, 20, 40, None}


def test_pick_is_random_among_instants_with_room() -> None:
    s: Schedule[int] = Schedule()
    for at in (10, 20, 30, 40, 500):
        s.add(at, at)
    rng = random.Random(2)
    assert {s.pick(0, 100, rng) for _ in range(200)} == {10, 20, 30, 40}


def test_compact_keeps_live_items() -> None:
    s: Schedule[int] = Schedule()
    for at, item in ((10, 1), (10, 2), (20, 3)):
        s.add(at, item)
    s.compact(lambda at, item: item != 2 and item != 3)
    assert len(s) == 1
    assert s.pop_earliest() == (10, [1])


def test_sessions_join_common_instants_and_keep_their_jitter() -> None:
    shared: Schedule[Session] = Schedule()
    sessions = []
    for seed in range(5):
        s = up_session(
            SessionConfig(300 * MS, 300 * MS, 3), remote_tx=300 * MS, remote_rx=300 * MS, seed=seed
        )
        s.align_tx = True
        s.tx_instants = shared
        sessions.append(s)
    remote = pkt(State.UP, tx=300 * MS, rx=300 * MS)
    sent = {}
    for s in sessions:
        # Each session runs alone on the fake clock and lists its instants, as
        # the daemon does when it arms a session's timer.
        times = []
        now = 0
        while now < 30 * SECOND:
            s.handle_timer(now)
            if s.datagrams_to_send():
                times.append(now)
            s.receive(remote, now)
            nxt = s.get_timer()
            assert nxt is not None
            shared.add(nxt, s)
            now = nxt
        sent[id(s)] = times
    low, high = jitter_bounds(300 * MS, 3)
    for times in sent.values():
        intervals = gaps(times[2:])
        assert all(low <= i < high for i in intervals)  # RFC 5880 §6.8.7
        assert len(set(intervals)) >= 3  # still random (on a 16 ms grid)
    # The later sessions transmit at the instants of the first.
    first = set(sent[id(sessions[0])])
    assert all(len(first & set(t)) > len(t) // 2 for t in list(sent.values())[1:])


def test_a_session_without_shared_instants_still_transmits() -> None:
    s = up_session(SessionConfig(50 * MS, 50 * MS, 3), remote_tx=50 * MS, remote_rx=50 * MS)
    s.tx_instants = Schedule()  # empty: nothing to join, a fresh instant each time
    sent = fire_until(s, 5 * SECOND, remote=pkt(State.UP, tx=50 * MS, rx=50 * MS), every=20 * MS)
    assert len(sent) > 90


def test_thousands_of_sessions_keep_their_cohorts_bounded() -> None:
    """3,000 sessions at 1 s share a 65 ms grid (15 points a second, 200
    sessions a point): a session whose grid point is full takes an instant of
    its own, so that no instant serves more than COHORT_LIMIT sessions, and
    every interval stays in the window (RFC 5880 §6.8.7)."""
    rng = random.Random(5880)
    low, high = jitter_bounds(1 * SECOND, 3)
    grid = tx_grid(1 * SECOND, 3)
    s: Schedule[int] = Schedule()
    last: dict[int, int] = {}
    for n in range(3000):  # sessions coming up one after another over a second
        start = n * SECOND // 3000
        last[n] = start
        s.add(aligned_transmission(start, low, high, rng, grid, s), n)
    largest = 0
    while (earliest := s.earliest()) is not None and earliest < 20 * SECOND:
        at, cohort = s.pop_earliest()
        largest = max(largest, len(cohort))
        for n in cohort:  # served one after another, as the wake-up does
            assert low <= at - last[n] < high
            last[n] = at
            s.add(aligned_transmission(at, low, high, rng, grid, s), n)
    assert largest <= COHORT_LIMIT
    assert len(s) >= 3000 // COHORT_LIMIT  # instants for everyone, not a handful


def test_a_full_grid_point_sends_the_session_to_a_finer_grid() -> None:
    rng = random.Random(1)
    low, high = jitter_bounds(1 * SECOND, 3)
    grid = tx_grid(1 * SECOND, 3)
    s: Schedule[int] = Schedule(cohort_max=1, cohort_limit=1)
    # Every grid point of the window holds a full cohort (one, here).
    points = range(-(-low // grid) * grid, high, grid)
    for n, point in enumerate(points):
        s.add(point, n)
    assert all(s.full(p) for p in points)
    drawn = {aligned_transmission(0, low, high, rng, grid, s) for _ in range(50)}
    assert all(low <= at < high and at % grid and at % TX_GRID_MIN_US == 0 for at in drawn)


def test_off_every_grid_only_when_every_grid_is_full() -> None:
    rng = random.Random(2)
    low, high = 750, 1000  # a grid of 64 us, finer than TX_GRID_MIN_US allows: none below it
    s: Schedule[int] = Schedule(cohort_max=1, cohort_limit=1)
    for n, point in enumerate(range(768, 1000, 64)):
        s.add(point, n)
    drawn = {aligned_transmission(0, low, high, rng, 64, s) for _ in range(50)}
    assert all(low <= at < high for at in drawn) and any(at % 64 for at in drawn)


def test_ten_thousand_sessions_at_1_s_are_served_within_5_ms() -> None:
    """The cohorts of instants drawn close together are served back to back:
    with 10,000 sessions @ 1 s and a loop that spends 28 us a session (its
    packet out and its peer's in, as measured at that scale), no transmission
    may come more than 5 ms late.  Off-grid instants drawn anywhere made 1.2 %
    of them 5-8 ms late; the finer grids keep the instants apart."""
    rng = random.Random(9)
    low, high = jitter_bounds(1 * SECOND, 3)
    grid = tx_grid(1 * SECOND, 3)
    s: Schedule[int] = Schedule()
    for n in range(10_000):
        s.add(int(rng.random() * SECOND), n)
    busy_until = worst = 0
    while (earliest := s.earliest()) is not None and earliest < 12 * SECOND:
        at, cohort = s.pop_earliest()
        done = max(at, busy_until)
        for n in cohort:
            done += 28
            if at > 4 * SECOND:  # past the start, when every session came at once
                worst = max(worst, done - at)
            s.add(aligned_transmission(at, low, high, rng, grid, s), n)
        busy_until = done
    assert worst < 5 * MS


def test_the_instant_last_joined_is_forgotten_once_it_is_taken_out() -> None:
    """The schedule keeps the items of the instant last listed at hand (a
    cohort moving on together joins it without a lookup); once that instant
    is taken out, compacted away or cleared, nothing joins it any more."""
    rng = random.Random(1)
    s: Schedule[int] = Schedule(cohort_max=4)
    s.add(50, 1)
    s.add(50, 2)  # joins the instant at hand
    assert s.pop_earliest() == (50, [1, 2])
    assert s.pick(0, 100, rng) is None  # not the popped instant
    assert s.add(50, 3)  # a new instant again, with a list of its own
    assert s.items_at(50) == [3]
    s.add(60, 4)
    s.compact(lambda _instant, item: item != 4)
    assert s.pick(0, 100, rng) == 50  # 60 went with its only item
    s.add(50, 5)
    assert s.items_at(50) == [3, 5]
    s.compact(lambda _instant, item: item == 5)
    s.add(50, 6)  # the instant at hand is the compacted list
    assert s.items_at(50) == [5, 6]
    s.clear()
    assert s.pick(0, 100, rng) is None
    assert s.add(50, 7) and s.items_at(50) == [7]
