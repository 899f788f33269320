"""One BFD session, sans-IO (RFC 5880 §6.8).

A :class:`Session` holds the state variables of RFC 5880 §6.8.1 and is driven
by three inputs, after aioquic's ``QuicConnection``:

* :meth:`Session.receive` - a decoded Control packet that was demultiplexed to
  this session, with the monotonic time it arrived;
* :meth:`Session.handle_timer` - the deadline from :meth:`Session.get_timer`
  has passed;
* administrative calls: :meth:`Session.disable`, :meth:`Session.enable`,
  :meth:`Session.set_timers`.

It answers with values: encoded packets from :meth:`Session.datagrams_to_send`,
events from :meth:`Session.next_event`, and the next deadline from
:meth:`Session.get_timer`.  It never reads a clock and never does I/O; every
time is an integer count of microseconds from a monotonic clock.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from . import fsm
from .auth import AuthConfig, Authenticator
from .constants import (
    DEFAULT_MULTIHOP_MIN_TTL,
    MAX_DETECT_MULT,
    MAX_INTERVAL_US,
    SLOW_TX_INTERVAL_US,
    TTL_SINGLE_HOP,
)
from .errors import DropReason, LocalProtocolError, PacketError
from .events import Event, PollSequenceCompleted, StateChanged
from .packet import (
    FLAG_DEMAND,
    FLAG_FINAL,
    FLAG_POLL,
    ControlPacket,
    Diag,
    State,
    encode,
)
from .timers import (
    RandomSource,
    SharedInstants,
    aligned_transmission,
    detection_time,
    jitter_bounds,
    transmit_interval,
    tx_grid,
)

if TYPE_CHECKING:
    from .echo import EchoFunction

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """What an operator configures for one session."""

    desired_min_tx_us: int = 1_000_000
    """bfd.DesiredMinTxInterval once Up, in microseconds."""
    required_min_rx_us: int = 1_000_000
    """bfd.RequiredMinRxInterval, in microseconds."""
    detect_mult: int = 3
    """bfd.DetectMult."""
    passive: bool = False
    """RFC 5880 §6.1: wait for the remote to speak first."""
    auth: AuthConfig | None = None
    """RFC 5880 §6.7 authentication, or None."""
    min_ttl: int | None = None
    """Lowest received TTL accepted.  Single hop (RFC 5881 §5): always 255
    without authentication, this value (default 255) with it.  Multihop
    (RFC 5883 §5): this value, default 254."""
    multihop: bool = False
    """RFC 5883 multihop session (UDP 4784, no interface, TTL checked against min_ttl)."""
    required_min_echo_rx_us: int = 0
    """Required Min Echo RX Interval we advertise (RFC 5880 §4.1, §6.4): how
    fast we are willing to loop the remote's echo packets back; 0: not willing."""
    echo_tx_us: int = 0
    """RFC 5880 Echo function: our echo transmit interval when the remote
    accepts echo packets (see protocol.echo.EchoFunction); 0: no echo."""

    def __post_init__(self) -> None:
        check_timers(self.desired_min_tx_us, self.required_min_rx_us, self.detect_mult)
        for name, value in (
            ("required minimum echo RX interval", self.required_min_echo_rx_us),
            ("echo transmit interval", self.echo_tx_us),
        ):
            if not 0 <= value <= MAX_INTERVAL_US:
                raise ValueError(
                    f"{name} must be between 0 and {MAX_INTERVAL_US} microseconds, not {value}"
                )
        if self.min_ttl is not None and not 1 <= self.min_ttl <= 255:
            raise ValueError(f"minimum TTL must be between 1 and 255, not {self.min_ttl}")


def minimum_rx_ttl(config: SessionConfig) -> int:
    """The lowest received TTL / Hop Limit a session of ``config`` accepts.

    Single hop (RFC 5881 §5): 255 without authentication; with it, the
    configured minimum.  Multihop (RFC 5883 §5): the configured minimum,
    254 by default."""
    if config.multihop:
        return DEFAULT_MULTIHOP_MIN_TTL if config.min_ttl is None else config.min_ttl
    if config.auth is None or config.min_ttl is None:
        return TTL_SINGLE_HOP
    return config.min_ttl


def check_timers(desired_min_tx_us: int, required_min_rx_us: int, detect_mult: int) -> None:
    """Raise ``ValueError`` unless the values fit their wire fields and make sense."""
    for name, value in (
        ("desired minimum TX interval", desired_min_tx_us),
        ("required minimum RX interval", required_min_rx_us),
    ):
        if not 0 < value <= MAX_INTERVAL_US:
            raise ValueError(
                f"{name} must be between 1 and {MAX_INTERVAL_US} microseconds, not {value}"
            )
    if not 0 < detect_mult <= MAX_DETECT_MULT:
        raise ValueError(f"detect multiplier must be between 1 and 255, not {detect_mult}")


@dataclass(slots=True)
class SessionCounters:
    """Plain counters, read by metrics and the control socket at their own pace."""

    packets_in: int = 0
    packets_out: int = 0
    packets_dropped: int = 0
    session_up: int = 0
    session_down: int = 0
    poll_sequences: int = 0
    finals_sent: int = 0
    detection_expiries: int = 0
    drops: dict[str, int] = field(default_factory=dict)
    echo_reflected: int = 0
    """The remote's echo packets sent back to it (RFC 5880 §6.4; counted by
    the engine, which reflects them)."""
    echo_reflect_limited: int = 0
    """The remote's echo packets not sent back: faster than we advertised."""


@dataclass(frozen=True, slots=True)
class EchoRescheduled(Event):
    """The session's Echo function (RFC 5880 §6.4) started, stopped or
    changed pace: its deadlines moved.  For the engine, which schedules it;
    never a listener's business."""

    at_us: int


class SessionOutputs:
    """What the owner reads of a session of either kind (a Control session,
    :class:`Session`, or an unaffiliated echo session): its two deadlines, its
    counters, and the datagrams and events it queued (the sans-IO outputs,
    after aioquic's ``get_timer`` / ``datagrams_to_send`` / ``next_event``)."""

    # The first slots of every session: what the packet path touches most.
    __slots__ = ("next_tx_us", "detect_deadline_us", "counters", "last_rx_us", "_outbox", "_events")  # noqa: RUF023

    next_tx_us: int | None
    """When the next periodic packet is due (None: none is).  Read-only
    outside the session, as is ``detect_deadline_us``."""
    detect_deadline_us: int | None
    """When the Detection Time expires (None: not running)."""
    counters: SessionCounters
    last_rx_us: int | None
    """When the last packet taken came (None: none yet)."""
    _outbox: list[bytes]
    _events: deque[Event]

    def get_timer(self) -> int | None:
        """The earliest deadline at which ``handle_timer`` must run, or None."""
        tx = self.next_tx_us
        detect = self.detect_deadline_us
        if tx is None:
            return detect
        if detect is None or tx < detect:
            return tx
        return detect

    def datagrams_to_send(self) -> list[bytes]:
        """Take the datagrams waiting to go out."""
        out = self._outbox
        if out:
            self._outbox = []
        return out

    def next_event(self) -> Event | None:
        """Pop the oldest event, or None."""
        return self._events.popleft() if self._events else None

    def has_output(self) -> bool:
        """Whether datagrams or events wait to be taken (see the two methods above)."""
        return bool(self._outbox or self._events)

    def arrived_later(self, at: int) -> bool:
        """The last packet taken came at ``at``, later than the time it was
        given with (a lower bound: the owner read it late and learnt its
        arrival later): move the Detection Time on by the difference.
        False if ``at`` is not later; nothing changes then."""
        last = self.last_rx_us
        detect = self.detect_deadline_us
        if last is None or detect is None or at <= last:
            return False
        self.detect_deadline_us = detect + (at - last)
        self.last_rx_us = at
        return True

    def reject(self, reason: DropReason, detail: str = "") -> None:
        """Count a packet the owner discarded for this session, and raise."""
        self._drop(reason, detail)

    def _drop(self, reason: DropReason, detail: str = "") -> None:
        counters = self.counters
        counters.packets_dropped += 1
        counters.drops[reason] = counters.drops.get(reason, 0) + 1
        raise PacketError(reason, detail)


class Session(SessionOutputs):
    """The protocol state of one BFD session; see the module docstring."""

    # A daemon holds thousands: no per-instance dict (smaller, faster attributes).
    # Slots are laid out in this order (after SessionOutputs's): what every
    # packet sent or received touches comes first, together in a few cache
    # lines; the rest follows.
    __slots__ = (  # noqa: RUF023
        "_steady",
        "state",
        "poll_active",
        "auth",
        "_rx_last",
        "_rx_in_force_us",
        "max_rx_gap_us",
        "_rx_last_detect_us",
        "remote_discr",
        "remote_min_rx_us",
        "remote_demand_mode",
        "_tx_key",
        "local_diag",
        "detect_mult",
        "desired_min_tx_us",
        "required_min_rx_us",
        "last_tx_us",
        "_tx_bytes",
        "_tx_interval_us",
        "_jitter_window",
        "align_tx",
        "tx_instants",
        "_rng",
        # Less often used.
        "_poll_pending",
        "_poll_sent",
        "_tx_in_force_us",
        "config",
        "created_at_us",
        "key",
        "last_state_change_us",
        "local_discr",
        "remote_desired_min_tx_us",
        "remote_detect_mult",
        "remote_diag",
        "remote_state",
        # The Echo function (RFC 5880 §6.4): none of the packet path's business.
        "echo",
        "required_min_echo_rx_us",
        "remote_min_echo_rx_us",
        "path_is_down",
    )

    def __init__(
        self,
        config: SessionConfig,
        local_discr: int,
        *,
        now: int,
        rng: RandomSource,
        key: Any = None,
        align_tx: bool = False,
    ) -> None:
        if not 0 < local_discr <= 0xFFFF_FFFF:
            raise LocalProtocolError("local discriminator must be a nonzero 32-bit value")
        self.config = config
        self.key = key
        """Opaque identity given by the owner (the peer), for its own bookkeeping."""
        self._rng = rng
        self.align_tx = align_tx
        """Draw periodic transmissions from a shared time grid (timers.tx_grid).
        Set before the session runs: periodic_packet keeps the grid it found."""
        self.tx_instants: SharedInstants | None = None
        """Instants other sessions transmit at, to join one inside the jitter window."""
        self.auth = Authenticator(config.auth, rng) if config.auth is not None else None
        self._events: deque[Event] = deque()
        self._steady = False
        """periodic_packet's conditions held when it last looked, and nothing
        but the fast paths (periodic_packet, receive_repeat, arrived_later)
        and the outputs' getters ran since: every other public method calls
        :meth:`_unsteady` first, so they need not be looked at again."""
        self._tx_key: tuple[object, ...] = ()
        self._tx_bytes = b""
        self._outbox: list[bytes] = []
        self.counters = SessionCounters()
        # The last packet received, kept while repeating it would change
        # nothing but the Detection Time (see receive_repeat): until a public
        # method other than the fast paths runs (_unsteady).
        self._rx_last = b""
        self._rx_last_detect_us = 0
        # (interval, detect mult, aligned) -> jitter bounds and grid, cached.
        self._jitter_window: tuple[int, int, bool, int, int, int] = (0, 0, False, 0, 0, 0)

        # RFC 5880 §6.8.1 state variables.
        self.state = State.DOWN
        self.remote_state = State.DOWN
        self.local_discr = local_discr
        self.remote_discr = 0
        self.local_diag = Diag.NO_DIAGNOSTIC
        self.remote_diag = Diag.NO_DIAGNOSTIC
        self.detect_mult = config.detect_mult
        self.remote_min_rx_us = 1  # §6.8.1: initialised to 1
        self.remote_desired_min_tx_us = 0
        self.remote_detect_mult = 0
        self.remote_demand_mode = False
        self.required_min_echo_rx_us = config.required_min_echo_rx_us
        """What our packets say in Required Min Echo RX Interval (part of the cached encoding)."""
        self.remote_min_echo_rx_us = 0
        """The remote's Required Min Echo RX Interval (kept only with an Echo function)."""
        self.echo: EchoFunction | None = None
        """Our Echo function, attached by its constructor (None: no echo)."""
        self.path_is_down = False
        """The local path is gone (the interface is down, or the local address
        was removed): see :meth:`path_down`."""

        # §6.8.3: the interval we advertise ("new") may differ from the one in
        # force until a Poll Sequence ends (after BIRD's des_min_tx_new/_int).
        self.desired_min_tx_us = max(config.desired_min_tx_us, SLOW_TX_INTERVAL_US)
        self._tx_in_force_us = self.desired_min_tx_us
        self.required_min_rx_us = config.required_min_rx_us
        self._rx_in_force_us = self.required_min_rx_us

        self.poll_active = False
        self._poll_pending = False
        self._poll_sent = False

        self.created_at_us = now
        self.last_state_change_us = now
        self.last_rx_us = None
        self.last_tx_us: int | None = None
        self.max_rx_gap_us = 0
        """Largest gap seen between two received packets while Up."""
        self._tx_interval_us = 0
        self.next_tx_us = None
        self.detect_deadline_us = None
        self._reschedule_tx(now, immediately=True)

    # -------------------------------------------------------------------- views

    @property
    def detection_time_us(self) -> int:
        """RFC 5880 §6.8.4 Detection Time now in force (0 before the remote spoke)."""
        return detection_time(
            self.remote_detect_mult, self._rx_in_force_us, self.remote_desired_min_tx_us
        )

    @property
    def transmit_interval_us(self) -> int:
        """The nominal periodic transmit interval in force (before jitter)."""
        return transmit_interval(self._tx_in_force_us, self.remote_min_rx_us)

    # ------------------------------------------------------------------- inputs

    def receive(self, pkt: ControlPacket, now: int, raw: bytes | None = None) -> None:
        """Process a packet demultiplexed to this session (RFC 5880 §6.8.6).

        ``raw`` is the datagram ``pkt`` was decoded from; it is needed to check
        a digest when the session uses authentication.  Raises
        :class:`PacketError` if the packet must be discarded; the session is
        then unchanged apart from its drop counter.
        """
        self._unsteady()
        if self.state is State.ADMIN_DOWN:
            self._drop(DropReason.SESSION_ADMIN_DOWN)
        auth = self.auth
        if auth is None:
            if pkt.auth is not None:
                # §6.8.6: the A bit without authentication in use.
                self._drop(DropReason.AUTH_MISMATCH, "authentication not configured")
        else:
            try:
                auth.verify(
                    pkt, raw if raw is not None else encode(pkt), now, self.detection_time_us
                )
            except PacketError as exc:
                self._drop(exc.reason, exc.detail)

        counters = self.counters
        counters.packets_in += 1
        last = self.last_rx_us
        if last is not None and self.state is State.UP and now - last > self.max_rx_gap_us:
            self.max_rx_gap_us = now - last
        self.last_rx_us = now

        flags = pkt.flags
        demand = bool(flags & FLAG_DEMAND)
        # What periodic transmission depends on (§6.8.7) may have changed.
        reschedule = (
            self.remote_discr == 0
            or demand is not self.remote_demand_mode
            or self.next_tx_us is None
        )
        self.remote_discr = pkt.my_discr
        self.remote_state = pkt.state
        self.remote_diag = pkt.diag
        self.remote_demand_mode = demand
        self.remote_detect_mult = pkt.detect_mult
        self.remote_desired_min_tx_us = remote_tx = pkt.desired_min_tx_us
        remote_rx_changed = pkt.required_min_rx_us != self.remote_min_rx_us
        self.remote_min_rx_us = pkt.required_min_rx_us

        if flags & FLAG_FINAL and self.poll_active:
            self._terminate_poll(now)
            reschedule = True

        echo = self.echo
        if echo is not None:
            # §6.8.9: echo only while the remote's last packet asks for it.
            self.remote_min_echo_rx_us = pkt.required_min_echo_rx_us
            echo.sync(now)

        transition = fsm.on_receive(self.state, pkt.state)
        if transition is not None:
            self._set_state(transition[0], transition[1], now)

        if flags & FLAG_POLL:
            # §6.8.6: answer a Poll with Final at once, outside the TX timer.
            self._emit(now, final=True)
            counters.finals_sent += 1

        # §6.8.4: a packet that was not discarded restarts detection (the
        # Detection Time, inline: this is the per-packet path).
        rx = self._rx_in_force_us
        detect = pkt.detect_mult * (rx if rx > remote_tx else remote_tx)
        self.detect_deadline_us = now + detect
        if transition is None and (reschedule or remote_rx_changed):
            # (A state change has already rescheduled transmission.)
            self._update_tx_schedule(now, interval_changed=remote_rx_changed)
        elif (
            transition is None
            and raw is not None
            and auth is None
            and not flags & (FLAG_POLL | FLAG_FINAL)
            and not self.poll_active
        ):
            self._rx_last = raw
            self._rx_last_detect_us = detect

    def receive_repeat(self, raw: bytes, now: int) -> int | None:
        """Take a datagram byte-identical to the last packet received, if it can
        change nothing but the Detection Time, and return the session's next
        deadline (:meth:`get_timer`); None: decode it and call :meth:`receive`.

        A peer that is Up and quiet sends the same bytes every interval; this
        is their path.  The last packet is kept only when it was processed in
        full with no Poll Sequence, no authentication, periodic transmission
        running and nothing to reschedule, and only until anything else runs
        (:meth:`_unsteady`): the state, the Required Min RX in force and the
        rest are as they were then.
        """
        tx = self.next_tx_us
        if raw != self._rx_last or not raw or tx is None:
            return None
        self.counters.packets_in += 1
        last = self.last_rx_us
        if last is not None and self.state is State.UP and now - last > self.max_rx_gap_us:
            self.max_rx_gap_us = now - last
        self.last_rx_us = now
        self.detect_deadline_us = detect = now + self._rx_last_detect_us
        return tx if tx < detect else detect

    def _unsteady(self) -> None:
        """Something may change what the fast paths trust (every public method
        but them and the outputs' getters calls this first): periodic_packet
        looks at its conditions again, and the next packet goes the full way."""
        self._steady = False
        self._rx_last = b""

    def periodic_packet(self, now: int) -> bytes | None:
        """The common case of :meth:`handle_timer`, for the transmit path.

        When nothing is due at ``now`` but the periodic packet of an Up-and-
        quiet session (no Poll Sequence, no authentication, no packet or
        event waiting, the same contents as the last packet), return that
        packet and schedule the next one, with no queue in between.  None:
        not that case; the caller runs :meth:`handle_timer` and takes the
        outputs as usual.

        Those conditions are looked at once; while nothing but this and the
        other fast paths runs (``_steady``), only the deadlines are.
        """
        tx = self.next_tx_us
        if tx is None or now < tx:
            return None
        detect = self.detect_deadline_us
        if detect is not None and now >= detect:
            return None
        if not self._steady:
            if (
                self.poll_active
                or self.auth is not None
                or self._outbox
                or self._events
                # §6.8.7: transmission allowed (see _periodic_tx_allowed).
                or not self.remote_discr
                or not self.remote_min_rx_us
                or self.remote_demand_mode
                or self._tx_key != self._contents(0)
            ):
                return None
            self._steady = True
            self.next_tx_us = self._next_periodic_tx(now)  # brings the window up to date
        else:
            # The jitter window cached as the interval and Detect Mult are now
            # (only methods that clear _steady change them).
            window = self._jitter_window
            self.next_tx_us = aligned_transmission(
                now, window[3], window[4], self._rng, window[5], self.tx_instants
            )
        self.last_tx_us = now
        self.counters.packets_out += 1
        return self._tx_bytes

    def handle_timer(self, now: int) -> None:
        """Run whatever deadlines have passed at ``now``."""
        self._unsteady()
        detect = self.detect_deadline_us
        if detect is not None and now >= detect:
            self._detection_timeout(now)
        tx = self.next_tx_us
        if tx is not None and now >= tx:
            if not self._periodic_tx_allowed():
                self.next_tx_us = None
                return
            self._emit(now)
            self.next_tx_us = self._next_periodic_tx(now)

    def disable(self, now: int, diag: Diag = Diag.ADMINISTRATIVELY_DOWN) -> None:
        """RFC 5880 §6.8.16: take the session administratively down."""
        self._unsteady()
        if self.state is State.ADMIN_DOWN:
            return
        self._set_state(State.ADMIN_DOWN, diag, now)

    def enable(self, now: int) -> None:
        """Leave AdminDown: the session starts over from Down."""
        self._unsteady()
        if self.state is not State.ADMIN_DOWN:
            return
        self._set_state(State.DOWN, Diag.NO_DIAGNOSTIC, now)

    def set_timers(
        self,
        now: int,
        *,
        desired_min_tx_us: int | None = None,
        required_min_rx_us: int | None = None,
        detect_mult: int | None = None,
    ) -> None:
        """Change the configured timers of a running session (RFC 5880 §6.8.3).

        Changes reach the remote through a Poll Sequence; an increase of our
        transmit interval and a decrease of our receive interval take effect
        only when it ends, so neither side can time out in between.
        """
        self._unsteady()
        cfg = self.config
        tx = cfg.desired_min_tx_us if desired_min_tx_us is None else desired_min_tx_us
        rx = cfg.required_min_rx_us if required_min_rx_us is None else required_min_rx_us
        mult = cfg.detect_mult if detect_mult is None else detect_mult
        self.config = replace(cfg, desired_min_tx_us=tx, required_min_rx_us=rx, detect_mult=mult)
        self.detect_mult = mult
        self._apply_desired_min_tx(now)
        self._set_required_min_rx(self._wanted_rx_us(), now)
        echo = self.echo
        if echo is not None and echo.config.detect_mult != mult:
            echo.set_config(replace(echo.config, detect_mult=mult), now)

    # ------------------------------------------------------- the Echo function

    def attach_echo(self, echo: EchoFunction, now: int) -> None:
        """Own ``echo`` (its constructor calls this): it runs from now on."""
        self._unsteady()
        self.echo = echo
        echo.sync(now)

    def detach_echo(self, now: int) -> None:
        """No Echo function any more (a reload turned it off)."""
        self._unsteady()
        echo = self.echo
        if echo is None:
            return
        self.echo = None
        self.remote_min_echo_rx_us = 0
        if echo.active:
            echo.stop(now)

    def set_echo_rx(self, value_us: int, now: int) -> None:
        """Advertise another Required Min Echo RX Interval (0: not willing);
        a Poll Sequence tells the remote at once (RFC 5880 §6.5)."""
        self._unsteady()
        if value_us == self.required_min_echo_rx_us:
            return
        self.config = replace(self.config, required_min_echo_rx_us=value_us)
        self.required_min_echo_rx_us = value_us
        self._tx_key = ()  # the cached encoding says the old value
        self._request_poll(now)

    def echo_rescheduled(self, now: int) -> None:
        """Our Echo function's deadlines moved (it tells us): say so to the owner."""
        self._unsteady()
        self._events.append(EchoRescheduled(now))

    def echo_active_changed(self, now: int) -> None:
        """Our Echo function started or stopped: RFC 5880 §6.8.3, "When the
        Echo function is active, a system SHOULD set bfd.RequiredMinRxInterval
        to a value of not less than one second", through a Poll Sequence."""
        self._unsteady()
        self._set_required_min_rx(self._wanted_rx_us(), now)

    def echo_failed(self, now: int, detect_time_us: int) -> None:
        """RFC 5880 §6.8.5: our echo packets stopped coming back: Down, diag 2."""
        self._unsteady()
        if self.state is State.UP or self.state is State.INIT:
            self._set_state(State.DOWN, Diag.ECHO_FUNCTION_FAILED, now, detect_time_us)

    # ---------------------------------------------------------- the local path

    def path_down(self, now: int) -> None:
        """The owner saw the session's interface go down or its local address
        go away: Down at once with diag 5, Path Down (RFC 5880 §4.1; FRR's
        bfdd uses it when an interface or VRF goes away, BIRD has it only in
        a commented-out close), rather than after the Detection Time.  The
        remote is forgotten as on a timeout (§6.8.1) and nothing is sent until
        :meth:`path_up`: packets could not leave anyway.  AdminDown stays
        AdminDown (quiet too)."""
        self._unsteady()
        if self.path_is_down:
            return
        self.path_is_down = True
        self.detect_deadline_us = None
        self.next_tx_us = None
        self._forget_remote()
        if self.state is State.UP or self.state is State.INIT:
            self._set_state(State.DOWN, Diag.PATH_DOWN, now)
        elif self.state is State.DOWN:
            self.local_diag = Diag.PATH_DOWN

    def path_up(self, now: int) -> None:
        """The path is back (interface up, local address present): the session
        starts again from Down, its first packet at once."""
        self._unsteady()
        if not self.path_is_down:
            return
        self.path_is_down = False
        self._reschedule_tx(now, immediately=True)

    def _wanted_rx_us(self) -> int:
        """bfd.RequiredMinRxInterval: the configured one, at least a second
        while our Echo function is active (§6.8.3)."""
        rx = self.config.required_min_rx_us
        echo = self.echo
        if echo is not None and echo.active and rx < SLOW_TX_INTERVAL_US:
            return SLOW_TX_INTERVAL_US
        return rx

    def transmit_now(self, now: int) -> None:
        """Queue one packet at once, outside the schedule (the AdminDown burst
        on shutdown).  A passive session that never heard its peer stays quiet,
        and so does a session whose path is down."""
        self._unsteady()
        if (self.remote_discr == 0 and self.config.passive) or self.path_is_down:
            return
        self._emit(now)

    def set_passive(self, passive: bool, now: int) -> None:
        self._unsteady()
        self.config = replace(self.config, passive=passive)
        self._update_tx_schedule(now, interval_changed=False)

    # ---------------------------------------------------------------- internals

    @property
    def min_rx_ttl(self) -> int:
        """The lowest received TTL / Hop Limit accepted (see :func:`minimum_rx_ttl`)."""
        return minimum_rx_ttl(self.config)

    def set_auth(self, config: AuthConfig | None) -> None:
        """Change keys (rotation keeps sequence numbers) or the auth type.

        Turning authentication on or off on a running session makes the remote
        drop our packets until it is reconfigured too: RFC 5880 §6.7.1 has no
        way to negotiate it.
        """
        self._unsteady()
        self.config = replace(self.config, auth=config)
        if config is None:
            self.auth = None
        elif self.auth is None:
            self.auth = Authenticator(config, self._rng)
        else:
            self.auth.set_config(config)

    def _set_state(
        self, new: State, diag: Diag, now: int, detect_time_us: int | None = None
    ) -> None:
        """The one place a state changes (after BIRD's bfd_session_update_state)."""
        old = self.state
        if new is old:
            return
        self.state = new
        self.local_diag = diag
        self.last_state_change_us = now
        if new is State.UP:
            self.counters.session_up += 1
            self.max_rx_gap_us = 0
        elif old is State.UP:
            self.counters.session_down += 1
        if new is State.ADMIN_DOWN:
            self.detect_deadline_us = None
            self.poll_active = self._poll_pending = False
        self._events.append(
            StateChanged(
                old,
                new,
                diag,
                self.remote_state,
                self.remote_diag,
                now,
                self.last_rx_us,
                self.detection_time_us if detect_time_us is None else detect_time_us,
            )
        )
        # §6.8.3: slow transmission while not Up, the configured rate when Up.
        self._apply_desired_min_tx(now)
        # Tell the remote at once rather than at the next (possibly slow) tick.
        self._reschedule_tx(now, immediately=True)
        echo = self.echo
        if echo is not None:
            echo.sync(now)  # §6.8.9: echo only while Up

    def _apply_desired_min_tx(self, now: int) -> None:
        wanted = self.config.desired_min_tx_us
        if self.state is not State.UP:
            wanted = max(wanted, SLOW_TX_INTERVAL_US)
        if wanted == self.desired_min_tx_us:
            return
        self.desired_min_tx_us = wanted
        # §6.8.3: an increase while Up waits for the Poll Sequence to end.
        if self.state is not State.UP or wanted < self._tx_in_force_us:
            self._tx_in_force_us = wanted
            self._update_tx_schedule(now, interval_changed=True)
        self._request_poll(now)

    def _set_required_min_rx(self, value: int, now: int) -> None:
        if value == self.required_min_rx_us:
            return
        self.required_min_rx_us = value
        # §6.8.3: a decrease while Up keeps the old value for detection until
        # the Poll Sequence ends; an increase is safe at once.
        if self.state is not State.UP or value > self._rx_in_force_us:
            self._rx_in_force_us = value
            if self.detect_deadline_us is not None and self.last_rx_us is not None:
                self.detect_deadline_us = self.last_rx_us + self.detection_time_us
        self._request_poll(now)

    def _request_poll(self, now: int) -> None:
        """RFC 5880 §6.5: tell the remote about changed parameters."""
        if self.remote_discr == 0 or self.state is State.ADMIN_DOWN:
            # Nobody to poll yet: the values go out in every packet anyway.
            self._tx_in_force_us = self.desired_min_tx_us
            self._rx_in_force_us = self.required_min_rx_us
            return
        if self.poll_active:
            # Values that change before the first Poll went out ride on it.
            if self._poll_sent:
                self._poll_pending = True
            return
        self._start_poll(now)

    def _start_poll(self, now: int) -> None:
        self.poll_active = True
        self._poll_sent = False
        self.counters.poll_sequences += 1
        # Send the first Poll now; the following ones go at the periodic rate.
        self._reschedule_tx(now, immediately=True)

    def _terminate_poll(self, now: int) -> None:
        self.poll_active = False
        self._events.append(
            PollSequenceCompleted(now, self.desired_min_tx_us, self.required_min_rx_us)
        )
        if self._poll_pending:
            # The values changed during this Poll Sequence, so this Final may
            # answer a Poll that carried older ones: what waits for a Poll (a TX
            # increase, an RX decrease) waits for the next one (§6.8.3; BIRD's
            # bfd_session_terminate_poll applies only what was not rescheduled).
            self._poll_pending = False
            self._start_poll(now)
            return
        tx_changed = self._tx_in_force_us != self.desired_min_tx_us
        self._tx_in_force_us = self.desired_min_tx_us
        self._rx_in_force_us = self.required_min_rx_us
        self._update_tx_schedule(now, interval_changed=tx_changed)

    def _detection_timeout(self, now: int) -> None:
        """RFC 5880 §6.8.4 and §6.8.1: nothing heard for a Detection Time."""
        self.detect_deadline_us = None
        self.counters.detection_expiries += 1
        expired_after = self.detection_time_us
        transition = fsm.on_detection_timeout(self.state)
        self._forget_remote()
        if transition is not None:
            self._set_state(transition[0], transition[1], now, expired_after)
        else:
            self._update_tx_schedule(now, interval_changed=True)

    def _forget_remote(self) -> None:
        """§6.8.1: bfd.RemoteDiscr is reset, and the remote's values with it
        (a Detection Time expired, or the path went down); the next packet,
        whatever its bytes, is processed in full (not as a repeat, see
        receive_repeat) so that they are learnt again."""
        self._rx_last = b""
        self.remote_discr = 0
        self.remote_state = State.DOWN
        self.remote_demand_mode = False
        self.remote_min_rx_us = 1
        self.remote_desired_min_tx_us = 0
        self.remote_detect_mult = 0
        self.remote_min_echo_rx_us = 0
        self.poll_active = self._poll_pending = False
        self._tx_in_force_us = self.desired_min_tx_us
        self._rx_in_force_us = self.required_min_rx_us

    def _periodic_tx_allowed(self) -> bool:
        """RFC 5880 §6.8.7: when periodic Control packets may be sent."""
        if self.path_is_down:
            return False  # nowhere to send them (see path_down)
        if self.remote_discr == 0 and self.config.passive:
            return False  # the Passive role waits for the remote
        if self.remote_min_rx_us == 0:
            return False  # the remote asked for no packets at all
        # The remote is in Demand mode: silence while both are Up, unless polling.
        return not (
            self.remote_demand_mode
            and self.state is State.UP
            and self.remote_state is State.UP
            and not self.poll_active
        )

    def _update_tx_schedule(self, now: int, *, interval_changed: bool) -> None:
        """Re-arm periodic transmission after something it depends on changed."""
        if not self._periodic_tx_allowed():
            self.next_tx_us = None
            return
        interval = self.transmit_interval_us
        pending = self.next_tx_us
        if pending is not None and (not interval_changed or pending <= now):
            if interval_changed:
                self._tx_interval_us = interval
            return
        self._tx_interval_us = interval
        base = self.last_tx_us if self.last_tx_us is not None else now
        self.next_tx_us = max(now, self._next_periodic_tx(base))

    def _reschedule_tx(self, now: int, *, immediately: bool) -> None:
        self._tx_interval_us = self.transmit_interval_us
        if not self._periodic_tx_allowed():
            self.next_tx_us = None
            # Passive or silenced sessions still announce administrative state
            # to a remote they know (RFC 5880 §6.8.16).
            if immediately and self.remote_discr and self.state is State.ADMIN_DOWN:
                self._emit(now)
            return
        self.next_tx_us = now if immediately else self._next_periodic_tx(now)

    def _next_periodic_tx(self, last_us: int) -> int:
        """§6.8.7: the jittered instant of the periodic packet after ``last_us``."""
        interval = self._tx_interval_us
        mult = self.detect_mult
        window = self._jitter_window
        if window[0] != interval or window[1] != mult or window[2] is not self.align_tx:
            low, high = jitter_bounds(interval, mult)
            grid = tx_grid(interval, mult) if self.align_tx else 0
            self._jitter_window = window = (interval, mult, self.align_tx, low, high, grid)
        return aligned_transmission(
            last_us, window[3], window[4], self._rng, window[5], self.tx_instants
        )

    def _emit(self, now: int, *, final: bool = False) -> None:
        """Queue one Control packet reflecting the current state (RFC 5880 §6.8.7)."""
        if final:
            flags = FLAG_FINAL  # a Final never carries Poll (§6.5)
        elif self.poll_active:
            flags = FLAG_POLL
            self._poll_sent = True
            self.last_tx_us = now
        else:
            flags = 0
            self.last_tx_us = now
        auth = self.auth
        if auth is None:
            # Most packets repeat the previous one: reuse its encoding.
            key = self._contents(flags)
            if key != self._tx_key:
                self._tx_key = key
                self._tx_bytes = encode(self._packet(flags))
            self._outbox.append(self._tx_bytes)
        else:
            self._outbox.append(auth.encode(self._packet(flags)))
        self.counters.packets_out += 1

    def _contents(self, flags: int) -> tuple[object, ...]:
        """What a packet with ``flags`` says that may change (the key of the
        cached encoding): every field of :meth:`_packet` but the constants."""
        return (
            self.state,
            self.local_diag,
            flags,
            self.detect_mult,
            self.remote_discr,
            self.desired_min_tx_us,
            self.required_min_rx_us,
        )

    def _packet(self, flags: int) -> ControlPacket:
        return ControlPacket(
            self.state,
            self.local_diag,
            flags,
            self.detect_mult,
            self.local_discr,
            self.remote_discr,
            self.desired_min_tx_us,
            self.required_min_rx_us,
            self.required_min_echo_rx_us,
            None,
        )

    def __repr__(self) -> str:
        return (
            f"<Session {self.key!r} discr={self.local_discr} {self.state.name} "
            f"remote={self.remote_discr}/{self.remote_state.name}>"
        )
