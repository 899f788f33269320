"""RFC 5880 §6.8.6 state transitions: the table itself, then through a session."""

from __future__ import annotations

import pytest

from aiobfd.protocol import fsm
from aiobfd.protocol.errors import DropReason, PacketError
from aiobfd.protocol.packet import Diag, State
from aiobfd.protocol.session import Session, SessionConfig
from tests.helpers import LOCAL, MS, deliver, drain, make_session, pkt, state_changes, up_session

D, A, I, U = State.DOWN, State.ADMIN_DOWN, State.INIT, State.UP  # noqa: E741
NODIAG = Diag.NO_DIAGNOSTIC
NEIGHBOR = Diag.NEIGHBOR_SIGNALED_SESSION_DOWN

#: (local, received) -> (new local state, diag), or None for "no change".
EXPECTED: dict[tuple[State, State], tuple[State, Diag] | None] = {
    (D, A): None,  # Down stays Down on AdminDown
    (D, D): (I, NODIAG),
    (D, I): (U, NODIAG),
    (D, U): None,  # a remote that is Up must first go Down
    (I, A): (D, NEIGHBOR),
    (I, D): None,  # Init stays Init on Down
    (I, I): (U, NODIAG),
    (I, U): (U, NODIAG),
    (U, A): (D, NEIGHBOR),
    (U, D): (D, NEIGHBOR),
    (U, I): None,
    (U, U): None,
}


@pytest.mark.parametrize(("local", "remote"), list(EXPECTED))
def test_table(local: State, remote: State) -> None:
    assert fsm.on_receive(local, remote) == EXPECTED[(local, remote)]


def test_table_has_nothing_for_admin_down() -> None:
    # A session in AdminDown never consults the table: it discards packets.
    for remote in State:
        assert fsm.on_receive(A, remote) is None


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        (A, None),
        (D, None),
        (I, (D, Diag.CONTROL_DETECTION_TIME_EXPIRED)),
        (U, (D, Diag.CONTROL_DETECTION_TIME_EXPIRED)),
    ],
)
def test_detection_timeout(local: State, expected: tuple[State, Diag] | None) -> None:
    assert fsm.on_detection_timeout(local) == expected


# ------------------------------------------------------------- through a real session


def session_in(state: State, now: int) -> Session:
    """A session in ``state`` with a remote it knows, outputs drained."""
    if state is U:
        return up_session(now=now)
    s = make_session(SessionConfig(300 * MS, 300 * MS, 3), discr=LOCAL, now=now)
    s.handle_timer(now)
    if state is I:
        deliver(s, pkt(D, your=0), now)
    drain(s)
    state_changes(s)
    assert s.state is state
    return s


@pytest.mark.parametrize(("local", "remote"), [k for k in EXPECTED if k[0] is not A])
def test_session_applies_table(local: State, remote: State) -> None:
    s = session_in(local, now=1_000)
    old_diag = s.local_diag
    your = 0 if remote in (D, A) and local is D else LOCAL
    deliver(s, pkt(remote, your=your, diag=Diag.PATH_DOWN), now=2_000)
    assert s.remote_state is remote
    assert s.remote_diag is Diag.PATH_DOWN
    changes = state_changes(s)
    expected = EXPECTED[(local, remote)]
    if expected is None:
        assert s.state is local
        assert s.local_diag is old_diag
        assert changes == []
        return
    new, diag = expected
    assert s.state is new
    assert s.local_diag is diag
    assert len(changes) == 1
    ev = changes[0]
    assert (ev.old_state, ev.new_state, ev.diag) == (local, new, diag)
    assert (ev.remote_state, ev.remote_diag) == (remote, Diag.PATH_DOWN)
    assert ev.at_us == ev.last_rx_us == 2_000
    # A state change is announced at once, not at the next periodic tick.
    assert s.get_timer() == 2_000
    s.handle_timer(2_000)
    sent = drain(s)
    assert len(sent) == 1
    assert sent[0].state is new
    assert sent[0].diag is diag
    assert sent[0].your_discr == s.remote_discr


def test_full_handshake_from_down() -> None:
    s = make_session(SessionConfig(300 * MS, 300 * MS, 3), discr=LOCAL)
    deliver(s, pkt(D, your=0), 10)
    deliver(s, pkt(I), 20)
    assert [(e.old_state, e.new_state) for e in state_changes(s)] == [(D, I), (I, U)]
    assert s.counters.session_up == 1


def test_down_on_init_goes_up_directly() -> None:
    s = make_session(discr=LOCAL)
    deliver(s, pkt(I), 10)
    assert s.state is U


@pytest.mark.parametrize("remote", [D, A])
def test_up_to_down_counts(remote: State) -> None:
    s = up_session()
    deliver(s, pkt(remote), 10)
    assert s.state is D
    assert s.local_diag is NEIGHBOR
    assert s.counters.session_down == 1


def test_admin_down_session_ignores_everything() -> None:
    s = up_session()
    s.disable(5)
    state_changes(s)
    for remote in State:
        with pytest.raises(PacketError) as info:
            deliver(s, pkt(remote), 10)
        assert info.value.reason is DropReason.SESSION_ADMIN_DOWN
    assert s.state is A
    assert state_changes(s) == []
