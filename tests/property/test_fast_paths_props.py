"""The session's fast paths change nothing: twins, one through them, one not.

``Session.periodic_packet`` and ``Session.receive_repeat`` skip the full
transmit and receive paths while a session is Up and quiet, trusting what
they looked at earlier (``_steady``, the last packet received) until a method
that may change it runs.  Two sessions with the same configuration and the
same random source go through the same arbitrary run: one takes the fast paths
wherever they apply, as the daemon does, the other only ``handle_timer`` and
``receive``.  After every step both must have sent the same bytes, reported
the same events and hold the same state and deadlines.
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import random
import textwrap
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from aiobfd import core_build
from aiobfd.protocol.auth import AuthConfig, AuthKey
from aiobfd.protocol.errors import PacketError
from aiobfd.protocol.events import Event
from aiobfd.protocol.packet import (
    FLAG_DEMAND,
    FLAG_FINAL,
    FLAG_POLL,
    AuthType,
    State,
    decode,
    encode,
)
from aiobfd.protocol.session import Session, SessionConfig
from tests.helpers import LOCAL, MS, SECOND, pkt

SETTINGS = settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

intervals = st.sampled_from([10 * MS, 50 * MS, 50 * MS, 300 * MS, 300 * MS, SECOND])
configs = st.builds(SessionConfig, intervals, intervals, st.integers(1, 4))

#: What the remote says: mostly the packets of a handshake and of an Up
#: session, with the occasional Poll, Final, Demand bit or new interval.
remote_packets = st.builds(
    lambda state, flags, tx, rx, mult, yours: encode(
        pkt(state, flags=flags, tx=tx, rx=rx, mult=mult, your=yours)
    ),
    st.sampled_from([State.DOWN, State.INIT, State.UP, State.UP, State.UP, State.ADMIN_DOWN]),
    st.sampled_from([0, 0, 0, 0, FLAG_POLL, FLAG_FINAL, FLAG_DEMAND]),
    intervals,
    st.sampled_from([0, 10 * MS, 50 * MS, 300 * MS, SECOND]),
    st.integers(1, 4),
    st.sampled_from([LOCAL, LOCAL, LOCAL, 0]),
)

#: One step: a packet (None: the last one again, as a quiet remote sends),
#: the remote's answer to what the session last sent (a handshake's next
#: step, a Final for a Poll), the next deadline fired, time passing, or one
#: of the owner's calls.
_quiet = st.one_of(
    st.tuples(st.just("reply"), st.integers(0, 20 * MS)),
    st.tuples(st.just("due")),
    st.tuples(st.just("due")),
    st.tuples(st.just("rx"), st.integers(0, 50 * MS), st.none()),
)
_stirring = st.one_of(
    st.tuples(st.just("rx"), st.integers(0, 400 * MS), remote_packets),
    st.tuples(st.just("wait"), st.integers(0, 3 * SECOND)),
    st.tuples(st.just("admin"), st.booleans()),
    st.tuples(st.just("timers"), intervals, intervals, st.integers(1, 4)),
    st.tuples(st.just("path"), st.booleans()),
    st.tuples(st.just("passive"), st.booleans()),
    st.tuples(st.just("transmit")),
)
#: Mostly the quiet steps, so that runs get Up and quiet between the stirs;
#: a stir is often followed at once by the next deadline (a fast path that
#: trusted something the stir changed would send the wrong packet there).
steps = st.lists(
    st.integers(0, 9).flatmap(
        lambda k: (
            st.tuples(_stirring, st.sampled_from([(), (("due",),)])).map(
                lambda pair: [pair[0], *pair[1]]
            )
            if k == 0
            else _quiet.map(lambda step: [step])
        )
    ),
    min_size=10,
    max_size=120,
).map(lambda segments: [step for segment in segments for step in segment])


def _outputs(session: Session, first: bytes | None = None) -> tuple[list[bytes], list[Event]]:
    sent = [] if first is None else [first]
    sent += session.datagrams_to_send()
    out = []
    while (ev := session.next_event()) is not None:
        out.append(ev)
    return sent, out


def _view(session: Session) -> dict[str, Any]:
    c = session.counters
    return {
        "state": session.state,
        "remote": (session.remote_discr, session.remote_state, session.remote_min_rx_us),
        "timers": (session.get_timer(), session.next_tx_us, session.detect_deadline_us),
        "times": (session.last_rx_us, session.last_tx_us, session.max_rx_gap_us),
        "poll": session.poll_active,
        "counters": (c.packets_in, c.packets_out, c.packets_dropped, c.finals_sent),
    }


#: The remote's state after hearing ours (RFC 5880 §6.8.6, from its side).
_ANSWER = {
    State.DOWN: State.INIT,
    State.INIT: State.UP,
    State.UP: State.UP,
    State.ADMIN_DOWN: State.DOWN,
}


def _answer(sent: bytes, remote_tx: int, remote_rx: int) -> bytes:
    """What a willing remote says back to ``sent``: the handshake's next state,
    a Final for a Poll."""
    ours = decode(sent)
    flags = FLAG_FINAL if ours.poll else 0
    return encode(pkt(_ANSWER[ours.state], flags=flags, tx=remote_tx, rx=remote_rx))


def _receive(session: Session, raw: bytes, now: int) -> None:
    with contextlib.suppress(PacketError):
        session.receive(decode(raw), now, raw)


class Twins:
    """Two sessions alike: ``fast`` takes the fast paths where they apply (as
    the daemon does), ``full`` never does.  :meth:`step` runs one step on
    both and checks they still agree."""

    def __init__(self, config: SessionConfig, seed: int, remote: tuple[int, int]) -> None:
        self.fast = Session(config, LOCAL, now=0, rng=random.Random(seed), align_tx=True)
        self.full = Session(config, LOCAL, now=0, rng=random.Random(seed), align_tx=True)
        self.remote = remote
        self.now = 0
        self.last = encode(pkt(State.DOWN, your=0))
        """What the remote sent last (an "rx" step with no packet repeats it)."""
        self.last_sent: bytes | None = None
        self.periodic = self.repeats = 0
        """Fast periodic packets and repeats taken."""

    def call(self, method: Callable[[Session, int], object]) -> None:
        """One of the owner's calls, on both."""
        for s in (self.fast, self.full):
            method(s, self.now)
        self._check()

    def step(self, step: tuple[Any, ...]) -> None:
        kind = step[0]
        fast, full = self.fast, self.full
        first: bytes | None = None
        if kind in ("rx", "reply"):
            self.now += step[1]
            if kind == "reply" and self.last_sent is not None:
                self.last = _answer(self.last_sent, *self.remote)
            elif kind == "rx" and step[2] is not None:
                self.last = step[2]
            timer = fast.receive_repeat(self.last, self.now)
            if timer is None:
                _receive(fast, self.last, self.now)
            else:
                self.repeats += 1
                assert timer == fast.get_timer()
            _receive(full, self.last, self.now)
        elif kind == "due":
            deadline = full.get_timer()
            if deadline is not None:
                self.now = max(self.now, deadline)
                first = fast.periodic_packet(self.now)
                if first is None:
                    fast.handle_timer(self.now)
                else:
                    self.periodic += 1
                full.handle_timer(self.now)
        elif kind == "wait":
            self.now += step[1]
        elif kind == "admin":
            self.call(Session.disable if step[1] else Session.enable)
        elif kind == "timers":
            self.call(
                lambda s, now: s.set_timers(
                    now, desired_min_tx_us=step[1], required_min_rx_us=step[2], detect_mult=step[3]
                )
            )
        elif kind == "path":
            self.call(Session.path_down if step[1] else Session.path_up)
        elif kind == "passive":
            self.call(lambda s, now: s.set_passive(step[1], now))
        else:
            assert kind == "transmit", kind
            self.call(Session.transmit_now)
        self._check(first)

    def _check(self, first: bytes | None = None) -> None:
        sent, reported = _outputs(self.full)
        assert _outputs(self.fast, first) == (sent, reported)
        assert _view(self.fast) == _view(self.full)
        if sent:
            self.last_sent = sent[-1]

    def quiet(self, rounds: int) -> None:
        """The next deadline, then the remote's answer, ``rounds`` times."""
        for _ in range(rounds):
            self.step(("due",))
            self.step(("reply", 1 * MS))


@SETTINGS
@given(
    config=configs,
    remote=st.tuples(intervals, intervals),
    seed=st.integers(0, 2**16),
    run=steps,
)
def test_the_fast_paths_do_what_the_full_paths_do(
    config: SessionConfig, remote: tuple[int, int], seed: int, run: list[tuple[Any, ...]]
) -> None:
    twins = Twins(config, seed, remote)
    for step in run:
        twins.step(step)
    event(f"fast periodic packets: {min(twins.periodic, 5)}+")
    event(f"repeats taken: {min(twins.repeats, 5)}+")


_AUTH = AuthConfig(AuthType.SIMPLE_PASSWORD, (AuthKey(1, b"secret"),), 1)

#: Each of the owner's calls that may change what a session sends, with what
#: must come before it (None: nothing) to make it matter.
OWNER_CALLS: dict[
    str, tuple[Callable[[Session, int], object] | None, Callable[[Session, int], object]]
] = {
    "disable": (None, Session.disable),
    "enable": (Session.disable, Session.enable),
    "slower transmission": (None, lambda s, now: s.set_timers(now, desired_min_tx_us=300 * MS)),
    "faster reception": (None, lambda s, now: s.set_timers(now, required_min_rx_us=10 * MS)),
    "detect mult": (None, lambda s, now: s.set_timers(now, detect_mult=5)),
    "path down": (None, Session.path_down),
    "path up": (Session.path_down, Session.path_up),
    "passive": (None, lambda s, now: s.set_passive(True, now)),
    "transmit now": (None, Session.transmit_now),
    "authentication on": (None, lambda s, now: s.set_auth(_AUTH)),
    "authentication off": (lambda s, now: s.set_auth(_AUTH), lambda s, now: s.set_auth(None)),
    "echo rx": (None, lambda s, now: s.set_echo_rx(50 * MS, now)),
    "echo failed": (None, lambda s, now: s.echo_failed(now, 150 * MS)),
}


@pytest.mark.parametrize("name", OWNER_CALLS)
def test_each_owner_call_ends_the_fast_paths_trust(name: str) -> None:
    """Up and quiet (both fast paths taken), then a call of the owner's, then
    the deadline at once: the fast twin sends what the full one does."""
    before, call = OWNER_CALLS[name]
    twins = Twins(SessionConfig(50 * MS, 50 * MS, 3), 7, (50 * MS, 50 * MS))
    twins.quiet(8)
    assert twins.periodic and twins.repeats
    if before is not None:
        twins.call(before)
        twins.step(("due",))
        twins.quiet(4)  # quiet again in that state, where it can be
        twins.step(("due",))
    twins.call(call)
    for _ in range(6):
        twins.step(("due",))
    twins.quiet(6)


def test_the_twins_reach_the_fast_paths() -> None:
    """The property above is not vacuous: a quiet Up session takes both."""
    twins = Twins(SessionConfig(50 * MS, 50 * MS, 3), 1, (50 * MS, 50 * MS))
    twins.quiet(40)
    assert twins.fast.state is State.UP
    assert twins.periodic >= 35 and twins.repeats >= 35


def test_a_detection_timeout_ends_the_fast_paths_trust() -> None:
    """Up and quiet, then the remote falls silent: the Detection Time expires
    in handle_timer, and the fast twin sends what the full one does (Down),
    then comes Up again with it."""
    twins = Twins(SessionConfig(50 * MS, 50 * MS, 3), 3, (50 * MS, 50 * MS))
    twins.quiet(8)
    for _ in range(8):
        twins.step(("due",))
    assert twins.full.state is State.DOWN
    twins.quiet(8)
    assert twins.full.state is State.UP


#: Session's public methods that may leave the fast paths' trust standing:
#: the fast paths themselves, the outputs' getters (taking outputs only makes
#: a session quieter) and counting a drop.
_TRUSTING = {
    "get_timer",
    "datagrams_to_send",
    "next_event",
    "has_output",
    "receive_repeat",
    "arrived_later",
    "periodic_packet",
    "reject",
}


def test_every_other_public_method_ends_the_trust_first() -> None:
    """A method added to Session later must call _unsteady first (or be named
    above): the property and the calls above only try the methods they know."""
    if core_build() != "python":
        pytest.skip("the compiled core has no source to read (the plain run checks it)")
    methods = {name: m for cls in reversed(Session.__mro__[:-1]) for name, m in vars(cls).items()}
    for name, member in methods.items():
        if name.startswith("_") or name in _TRUSTING or not inspect.isfunction(member):
            continue
        (fn,) = ast.parse(textwrap.dedent(inspect.getsource(member))).body
        assert isinstance(fn, ast.FunctionDef)
        body = fn.body
        if ast.get_docstring(fn) is not None:
            body = body[1:]
        first = ast.unparse(body[0])
        assert first == "self._unsteady()", f"Session.{name} begins with {first!r}"
