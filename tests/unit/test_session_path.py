"""The local path going away and coming back (Session.path_down / path_up), on a fake clock."""

from __future__ import annotations

from aiobfd.protocol.packet import Diag, State
from aiobfd.protocol.session import SessionConfig
from tests.helpers import MS, SECOND, SessionPair, drain, events, state_changes, up_session


def test_path_down_takes_an_up_session_down_at_once_with_diag_5() -> None:
    s = up_session(now=10 * SECOND)
    now = 10 * SECOND + 5 * MS
    s.path_down(now)
    (change,) = state_changes(s)
    assert (change.old_state, change.new_state, change.diag) == (
        State.UP,
        State.DOWN,
        Diag.PATH_DOWN,
    )
    assert change.at_us == now
    assert s.path_is_down and s.remote_discr == 0
    # Quiet: no packet queued, no transmit deadline, no detection running.
    assert drain(s) == []
    assert s.get_timer() is None
    s.handle_timer(now + 10 * SECOND)
    assert drain(s) == [] and events(s) == []
    s.transmit_now(now)  # the shutdown burst has nowhere to go either
    assert drain(s) == []


def test_path_down_twice_reports_once_and_a_down_session_only_changes_its_diag() -> None:
    s = up_session()
    s.path_down(1)
    s.path_down(2)
    assert len(state_changes(s)) == 1
    s.path_up(3)
    drain(s)
    assert s.state is State.DOWN and s.local_diag is Diag.PATH_DOWN
    s2 = up_session()
    s2.disable(1)
    events(s2)
    drain(s2)
    s2.path_down(2)
    assert s2.state is State.ADMIN_DOWN and events(s2) == []


def test_path_up_starts_again_from_down_and_the_pair_comes_up() -> None:
    cfg = SessionConfig(50 * MS, 50 * MS, 3)
    pair = SessionPair(cfg, cfg)
    pair.run_for(3 * SECOND)
    assert pair.a.state is State.UP and pair.b.state is State.UP
    pair.a_to_b = pair.b_to_a = False  # the link is gone
    pair.a.path_down(pair.now)
    down_at = pair.now
    pair.run_for(2 * SECOND)
    assert pair.a.state is State.DOWN and pair.a.local_diag is Diag.PATH_DOWN
    assert [p for t, p in pair.sent["a"] if t > down_at] == []
    # b times out on its own (diag 1): it never heard from a again.
    assert pair.b.state is State.DOWN and pair.b.local_diag is Diag.CONTROL_DETECTION_TIME_EXPIRED
    pair.a_to_b = pair.b_to_a = True
    pair.a.path_up(pair.now)
    assert pair.a.get_timer() == pair.now  # the first packet goes out at once
    pair.run_for(3 * SECOND)
    assert pair.a.state is State.UP and pair.b.state is State.UP
    assert not pair.a.path_is_down


def test_passive_session_stays_quiet_after_path_up() -> None:
    s = up_session(SessionConfig(300 * MS, 300 * MS, 3, passive=True))
    s.path_down(1)
    s.path_up(2)
    assert s.get_timer() is None and drain(s) == []
