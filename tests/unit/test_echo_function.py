"""The RFC 5880 Echo function of a Control session, sans-IO, on a fake clock.

A session with an :class:`EchoFunction` is brought Up by hand against a
remote that advertises (or not) a Required Min Echo RX Interval; what the
echo function sends comes back, or does not, as each test says.
"""

from __future__ import annotations

import itertools
import random

from aiobfd.protocol.constants import SLOW_TX_INTERVAL_US
from aiobfd.protocol.echo import EchoFailed, EchoFunction
from aiobfd.protocol.events import Event, StateChanged
from aiobfd.protocol.packet import FLAG_FINAL, FLAG_POLL, ControlPacket, Diag, State, decode
from aiobfd.protocol.session import EchoRescheduled, Session, SessionConfig

from ..helpers import LOCAL, MS, REMOTE, SECOND, deliver, drain, events, make_session

ECHO_MS = 50


def remote(
    state: State, *, echo_rx: int = 50 * MS, flags: int = 0, your: int = LOCAL, rx: int = 300 * MS
) -> ControlPacket:
    """A packet from the remote, which accepts echo packets every ``echo_rx`` µs."""
    return ControlPacket(state, Diag.NO_DIAGNOSTIC, flags, 3, REMOTE, your, 300 * MS, rx, echo_rx)


def echo_session(
    *, echo_ms: int = ECHO_MS, rx_ms: int = 300, advertise_ms: int = 0
) -> tuple[Session, EchoFunction]:
    config = SessionConfig(
        300 * MS,
        rx_ms * MS,
        3,
        echo_tx_us=echo_ms * MS,
        required_min_echo_rx_us=advertise_ms * MS,
    )
    s = make_session(config, discr=LOCAL)
    echo = EchoFunction(s, config.echo_tx_us, now=0, rng=random.Random(3))
    assert s.echo is echo
    return s, echo


def bring_up(s: Session, now: int = 0, echo_rx: int = 50 * MS) -> None:
    s.handle_timer(now)
    deliver(s, remote(State.DOWN, your=0, echo_rx=echo_rx), now)
    deliver(s, remote(State.UP, echo_rx=echo_rx), now)
    assert s.state is State.UP


def answer_polls(s: Session, now: int, echo_rx: int = 50 * MS) -> None:
    """Run the session's timer at ``now`` and answer its Poll (if any) with a Final."""
    if (t := s.get_timer()) is not None and t <= now:
        s.handle_timer(now)
    if s.poll_active:
        deliver(s, remote(State.UP, flags=FLAG_FINAL, echo_rx=echo_rx), now)


def test_no_echo_rx_advertised_by_default() -> None:
    s = make_session(SessionConfig(), discr=LOCAL)
    s.handle_timer(0)
    (packet,) = drain(s)
    assert packet.required_min_echo_rx_us == 0
    assert s.echo is None


def test_echo_rx_is_advertised_and_a_change_polls() -> None:
    s = make_session(SessionConfig(300 * MS, 300 * MS, 3, required_min_echo_rx_us=50 * MS), LOCAL)
    s.handle_timer(0)
    assert [p.required_min_echo_rx_us for p in drain(s)] == [50 * MS]
    bring_up(s)
    answer_polls(s, 0)
    drain(s)
    s.set_echo_rx(0, 10 * MS)
    assert s.poll_active
    s.handle_timer(10 * MS)
    (packet,) = drain(s)
    assert packet.required_min_echo_rx_us == 0 and packet.flags & FLAG_POLL


def test_inactive_until_up_and_the_remote_accepts_echo() -> None:
    s, echo = echo_session()
    assert not echo.active and echo.get_timer() is None
    s.handle_timer(0)
    deliver(s, remote(State.DOWN, your=0), 0)
    assert s.state is State.INIT and not echo.active  # §6.8.9: not before Up
    deliver(s, remote(State.UP, echo_rx=0), 0)
    assert s.state is State.UP and not echo.active  # the remote does not accept echo
    deliver(s, remote(State.UP), 1000)
    assert echo.active
    assert echo.next_tx_us == 1000  # the first one at once
    assert any(isinstance(e, EchoRescheduled) for e in events(s))


def test_interval_is_ours_but_never_faster_than_the_remote_accepts() -> None:
    s, echo = echo_session(echo_ms=20)
    bring_up(s, echo_rx=50 * MS)
    assert echo.transmit_interval_us == 50 * MS
    deliver(s, remote(State.UP, echo_rx=10 * MS), 1000)
    assert echo.transmit_interval_us == 20 * MS
    assert echo.detection_time_us == 3 * 20 * MS
    # Jittered to 75-100 % of the interval (§6.8.9), packets addressed as ours.
    now = 1000
    sent = []
    for _ in range(200):
        t = echo.get_timer()
        assert t is not None
        now = t
        echo.handle_timer(now)
        out = echo.datagrams_to_send()
        if out:
            sent.append(now)
            (packet,) = [decode(d) for d in out]
            assert packet.my_discr == packet.your_discr == LOCAL
            assert packet.state is State.UP
            echo.receive(packet, now + 100)  # it comes back
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert min(gaps) >= 15 * MS and max(gaps) <= 20 * MS
    assert echo.counters.packets_out == len(sent) and echo.counters.packets_in == len(sent)


def test_control_rx_slows_to_a_second_while_echo_is_active() -> None:
    """§6.8.3: bfd.RequiredMinRxInterval not less than one second, told by a Poll."""
    s, echo = echo_session(rx_ms=100)
    bring_up(s)
    assert echo.active
    assert s.required_min_rx_us == SLOW_TX_INTERVAL_US
    assert s.poll_active
    s.handle_timer(0)
    polls = [p for p in drain(s) if p.flags & FLAG_POLL]
    assert polls and polls[-1].required_min_rx_us == SLOW_TX_INTERVAL_US
    deliver(s, remote(State.UP, flags=FLAG_FINAL), 10 * MS)
    assert not s.poll_active
    # The remote stops accepting echo: back to the configured 100 ms, by a Poll.
    deliver(s, remote(State.UP, echo_rx=0), 20 * MS)
    assert not echo.active and echo.get_timer() is None
    assert s.required_min_rx_us == 100 * MS and s.poll_active


def test_echo_loss_takes_the_session_down_with_diag_2() -> None:
    s, echo = echo_session()
    bring_up(s)
    answer_polls(s, 0)
    events(s)
    # Packets come back for a while, then the path breaks at 500 ms.
    now = 0
    last_back = 0
    while True:
        t = echo.get_timer()
        assert t is not None
        now = t
        echo.handle_timer(now)
        for data in echo.datagrams_to_send():
            if now < 500 * MS:
                last_back = now + 200
                echo.receive(decode(data), last_back)
        if s.state is not State.UP:
            break
        # The Control side stays quiet-and-fine: feed it a packet now and then.
        if s.detect_deadline_us is not None and s.detect_deadline_us - now < 100 * MS:
            deliver(s, remote(State.UP), now)
    assert now == last_back + 3 * ECHO_MS * MS  # Detect Mult x the echo interval
    assert s.local_diag is Diag.ECHO_FUNCTION_FAILED
    assert not echo.active and echo.get_timer() is None
    failed = [e for e in echo_events(echo) if isinstance(e, EchoFailed)]
    assert failed == [EchoFailed(now, 3 * ECHO_MS * MS)]
    changes = [e for e in events(s) if isinstance(e, StateChanged)]
    assert changes[-1].new_state is State.DOWN
    assert changes[-1].diag is Diag.ECHO_FUNCTION_FAILED
    assert changes[-1].detection_time_us == 3 * ECHO_MS * MS
    assert echo.counters.detection_expiries == 1
    # Our Down is due at once; the Control session starts over.
    assert s.get_timer() == now
    s.handle_timer(now)
    assert [p.state for p in drain(s)][-1] is State.DOWN
    assert s.required_min_rx_us == 300 * MS


def echo_events(echo: EchoFunction) -> list[Event]:
    out = []
    while (e := echo.next_event()) is not None:
        out.append(e)
    return out


def test_control_detection_stops_the_echo() -> None:
    s, echo = echo_session()
    bring_up(s)
    assert echo.active
    s.handle_timer(10 * SECOND)  # the Control Detection Time passed long ago
    assert s.state is State.DOWN and s.local_diag is Diag.CONTROL_DETECTION_TIME_EXPIRED
    assert not echo.active and echo.get_timer() is None


def test_a_packet_back_after_the_echo_stopped_is_stale() -> None:
    s, echo = echo_session()
    bring_up(s)
    echo.handle_timer(0)
    (data,) = echo.datagrams_to_send()
    deliver(s, remote(State.UP, echo_rx=0), 10)
    echo.receive(decode(data), 20)
    assert echo.counters.packets_in == 0 and echo.counters.drops == {"stale_echo": 1}


def test_detach_restores_the_configured_rx() -> None:
    s, echo = echo_session(rx_ms=100)
    bring_up(s)
    answer_polls(s, 0)
    assert s.required_min_rx_us == SECOND
    s.detach_echo(10 * MS)
    assert s.echo is None and not echo.active
    assert s.required_min_rx_us == 100 * MS
