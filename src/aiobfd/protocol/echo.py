"""BFD Echo, sans-IO: RFC 9747 unaffiliated echo sessions, and the RFC 5880
Echo function of a Control session (:class:`EchoFunction`, at the end).

:class:`EchoSession` is one unaffiliated echo session toward a gateway.

A host that runs BFD and a gateway that does not (a provider's or a cloud's
router, a switch nobody may configure): the host sends echo packets
addressed to itself to the gateway's link-layer address, the gateway's
forwarding sends them back, and the host learns that the path through the
gateway forwards.  The gateway takes no part beyond forwarding.

The packets (RFC 9747 §2, RFC 5881 §4)
    The Control packet format of RFC 5880 §4.1, on UDP port 3785, with the
    host's own address as IP source and destination.  This session fills it
    as a Control session would, the host playing both ends: My Discriminator
    is bfd.LocalDiscr; Your Discriminator is bfd.RemoteDiscr, which is learnt
    from the first packet that comes back (so it becomes our own
    discriminator); State and Diag are ours; Detect Mult is the provisioned
    one; Desired Min TX Interval is the interval we transmit at now; Required
    Min RX Interval and Required Min Echo RX Interval are 0 (nobody is asked to
    send anything).  No authentication: echo packets never leave the path
    between the host and its gateway, and a packet comes back only if it
    matches a session's discriminator, exactly as sent.

The procedure (RFC 9747 §2: RFC 5880's procedures over the echo port)
    * Transmission is periodic with RFC 5880 §6.8.7's jitter: one packet a
      second at most while not Up (the slow start of §6.8.3), the provisioned
      interval once Up.
    * A packet that comes back runs through RFC 5880 §6.8.6 as if the remote
      had sent it (the table of :mod:`.fsm`): our own Down packet back takes
      the session to Init, our own Init packet back takes it Up - a
      three-way handshake with ourselves through the gateway, two round trips
      after the first packet.  A packet that says another state than ours,
      other than the one just before ours in the handshake (still in flight
      when the state changed), was sent before our state last changed: a
      reordered or long-delayed packet, counted as ``stale_echo`` and acted
      upon in no way (a late Init packet must not bring a session Up that
      went Down meanwhile).
    * Detection (RFC 9747 §2, RFC 5880 §6.8.5): Detect Mult times the
      interval we transmit at, from the last packet that came back.  When it
      passes in Init or Up the session goes Down with diag 2 (Echo Function
      Failed); bfd.RemoteDiscr is forgotten (§6.8.1) and the slow rate
      resumes, and the handshake starts again when packets come back.
    * AdminDown (configuration, ``aiobfdctl peer shutdown``): no packets at
      all (nobody listens to them); enable starts over from Down.

:class:`EchoSession` has the surface of :class:`~.session.Session` that the
engine and what reads sessions use (``state``, ``remote_state``,
``local_diag``, ``counters``, ``detection_time_us``, ``get_timer``,
``handle_timer``, ``periodic_packet``, ...), and emits the same
:class:`~.events.StateChanged` events: hooks, metrics, the control socket and
the ExaBGP helper treat it as a control session.  What it sends is framed by
a function the owner gives (:meth:`EchoSession.set_frame`): the engine wraps
the payload in the IP and UDP headers of its packet socket.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from . import fsm
from .constants import MAX_DETECT_MULT, MAX_INTERVAL_US, SLOW_TX_INTERVAL_US
from .errors import DropReason, LocalProtocolError
from .events import Event, StateChanged
from .packet import ControlPacket, Diag, State, encode
from .session import Session, SessionCounters, SessionOutputs
from .timers import RandomSource, SharedInstants, aligned_transmission, jitter_bounds, tx_grid

#: RFC 5881 §4: echo packets go to this UDP port.
ECHO_PORT = 3785
#: Lowest TTL / Hop Limit a returning echo packet may have: sent with 255
#: (RFC 5881 §5), it crossed one router, the gateway (GTSM, RFC 5082).
ECHO_MIN_TTL = 254

#: A frame function: the echo payload in, what the transmit socket takes out.
Frame = Callable[[bytes], bytes]

#: The drop reason of a packet that comes back after our state moved on.
STALE = "stale_echo"
#: (our state, the state a packet that came back says) that are on time
#: although they differ: packets sent just before the handshake's last step.
_IN_FLIGHT = frozenset({(State.INIT, State.DOWN), (State.UP, State.INIT)})


@dataclass(frozen=True, slots=True)
class EchoConfig:
    """What an operator configures for one unaffiliated echo session."""

    interval_us: int = 1_000_000
    """The echo transmit interval once Up, in microseconds (provisioned, not
    negotiated: the gateway says nothing)."""
    detect_mult: int = 3
    """Packets that may fail to come back before the session goes Down."""
    min_ttl: int = ECHO_MIN_TTL
    """Lowest received TTL / Hop Limit accepted (see ECHO_MIN_TTL)."""

    def __post_init__(self) -> None:
        if not 0 < self.interval_us <= MAX_INTERVAL_US:
            raise ValueError(
                f"echo interval must be between 1 and {MAX_INTERVAL_US} microseconds, "
                f"not {self.interval_us}"
            )
        if not 0 < self.detect_mult <= MAX_DETECT_MULT:
            raise ValueError(f"detect multiplier must be between 1 and 255, not {self.detect_mult}")
        if not 1 <= self.min_ttl <= 255:
            raise ValueError(f"minimum TTL must be between 1 and 255, not {self.min_ttl}")

    # The names of SessionConfig that describe an echo session too.
    @property
    def desired_min_tx_us(self) -> int:
        return self.interval_us

    @property
    def required_min_rx_us(self) -> int:
        return 0

    @property
    def passive(self) -> bool:
        return False

    @property
    def multihop(self) -> bool:
        return False


class EchoSession(SessionOutputs):
    """The protocol state of one unaffiliated echo session; see the module docstring."""

    __slots__ = (  # noqa: RUF023
        "state",
        "last_tx_us",
        "max_rx_gap_us",
        "_tx_key",
        "_tx_bytes",
        "_frame",
        "_jitter_window",
        "_rng",
        "_detect_us",
        "_floor_us",
        "align_tx",
        "tx_instants",
        "config",
        "key",
        "local_discr",
        "remote_discr",
        "remote_state",
        "local_diag",
        "remote_diag",
        "remote_detect_mult",
        "remote_desired_min_tx_us",
        "created_at_us",
        "last_state_change_us",
    )

    def __init__(
        self,
        config: EchoConfig,
        local_discr: int,
        *,
        now: int,
        rng: RandomSource,
        key: Any = None,
        frame: Frame | None = None,
        align_tx: bool = False,
    ) -> None:
        if not 0 < local_discr <= 0xFFFF_FFFF:
            raise LocalProtocolError("local discriminator must be a nonzero 32-bit value")
        self.config = config
        self.key = key
        """Opaque identity given by the owner (the peer), for its own bookkeeping."""
        self._rng = rng
        self._frame = frame
        self.align_tx = align_tx
        self.tx_instants: SharedInstants | None = None
        self.counters = SessionCounters()
        self._events: deque[Event] = deque()
        self._outbox: list[bytes] = []
        self._tx_key: tuple[object, ...] = ()
        self._tx_bytes = b""
        self._jitter_window: tuple[int, int, bool, int, int, int] = (0, 0, False, 0, 0, 0)
        self.state = State.DOWN
        self.remote_state = State.DOWN
        self.local_discr = local_discr
        self.remote_discr = 0
        self.local_diag = Diag.NO_DIAGNOSTIC
        self.remote_diag = Diag.NO_DIAGNOSTIC
        self.remote_detect_mult = 0
        self.remote_desired_min_tx_us = 0
        self.created_at_us = now
        self.last_state_change_us = now
        self.last_rx_us = None
        self.last_tx_us: int | None = None
        self.max_rx_gap_us = 0
        """Largest gap between two packets that came back while Up."""
        self._detect_us = 0
        self._floor_us = 0
        """The shortest interval allowed (an RFC 5880 echo function: the
        remote's Required Min Echo RX Interval; 0 here)."""
        self.detect_deadline_us = None
        self.next_tx_us = now  # None in AdminDown

    # ------------------------------------------------------------------ views

    @property
    def detect_mult(self) -> int:
        return self.config.detect_mult

    @property
    def transmit_interval_us(self) -> int:
        """The interval in force before jitter: the provisioned one once Up,
        at least one second before (RFC 9747 §2, RFC 5880 §6.8.3)."""
        interval = self.config.interval_us
        floor = self._floor_us
        if floor > interval:
            interval = floor
        if self.state is State.UP:
            return interval
        return interval if interval > SLOW_TX_INTERVAL_US else SLOW_TX_INTERVAL_US

    @property
    def desired_min_tx_us(self) -> int:
        """What our packets say in Desired Min TX Interval: the interval in force."""
        return self.transmit_interval_us

    @property
    def detection_time_us(self) -> int:
        """Detect Mult times the interval of the last packet that came back
        (0 before one came back, and after a Detection Time passed)."""
        return self._detect_us

    @property
    def min_rx_ttl(self) -> int:
        return self.config.min_ttl

    # Never Poll Sequences, authentication or Demand mode; nobody is asked
    # for anything: what the engine and the status read on every session.
    @property
    def poll_active(self) -> bool:
        return False

    @property
    def auth(self) -> None:
        return None

    @property
    def remote_demand_mode(self) -> bool:
        return False

    @property
    def remote_min_rx_us(self) -> int:
        return 0

    @property
    def required_min_rx_us(self) -> int:
        """0: an echo session asks nobody for packets (which also keeps echo
        sessions out of the receive hold-off, a matter of Control sessions)."""
        return 0

    # ----------------------------------------------------------------- inputs

    def set_frame(self, frame: Frame | None) -> None:
        """Frame what is sent from now on with ``frame`` (None: the bare payload)."""
        self._frame = frame
        self._tx_key = ()

    def receive(self, pkt: ControlPacket, now: int, raw: bytes | None = None) -> None:
        """An echo packet came back: ``pkt`` names this session in My
        Discriminator (the owner demultiplexed it, and checked its addresses
        and TTL).  Raises :class:`PacketError` for a packet that must be
        dropped; the session is then unchanged apart from its drop counter."""
        if self.state is State.ADMIN_DOWN:
            self._drop(DropReason.SESSION_ADMIN_DOWN)
        if pkt.my_discr != self.local_discr:
            self._drop(DropReason.UNKNOWN_DISCR, f"{pkt.my_discr} is not {self.local_discr}")
        if pkt.your_discr not in (0, self.local_discr):
            # Not a packet we sent: we only ever put our own there.
            self._drop(DropReason.WRONG_PEER, f"your discriminator {pkt.your_discr}")
        if pkt.auth is not None:
            self._drop(DropReason.AUTH_MISMATCH, "echo packets carry no authentication")
        state = self.state
        counters = self.counters
        if pkt.state is not state and (state, pkt.state) not in _IN_FLIGHT:
            # Sent before our state last changed, and not just before: a
            # reordered or long-delayed packet that says nothing of the path
            # now.  Counted, never acted upon.
            counters.packets_dropped += 1
            counters.drops[STALE] = counters.drops.get(STALE, 0) + 1
            return
        counters.packets_in += 1
        last = self.last_rx_us
        if last is not None and state is State.UP and now - last > self.max_rx_gap_us:
            self.max_rx_gap_us = now - last
        self.last_rx_us = now
        self.remote_discr = pkt.my_discr
        self.remote_state = pkt.state
        self.remote_diag = pkt.diag
        self.remote_detect_mult = pkt.detect_mult
        self.remote_desired_min_tx_us = pkt.desired_min_tx_us
        transition = fsm.on_receive(state, pkt.state)
        if transition is not None:
            self._set_state(transition[0], transition[1], now)
        # RFC 9747 §2: Detect Mult packets that fail to come back.  The
        # interval is the one in force now (after a change of state: the
        # faster one once Up).
        self._detect_us = self.config.detect_mult * self.transmit_interval_us
        self.detect_deadline_us = now + self._detect_us

    def receive_repeat(self, raw: bytes, now: int) -> int | None:
        """Control sessions' shortcut for a repeated packet: never taken here."""
        return None

    def periodic_packet(self, now: int) -> bytes | None:
        """The steady case of :meth:`handle_timer`: the packet due at ``now``,
        the next one scheduled; None when it is not that case (the caller runs
        :meth:`handle_timer` and takes the outputs)."""
        tx = self.next_tx_us
        detect = self.detect_deadline_us
        if (
            tx is None
            or now < tx
            or (detect is not None and now >= detect)
            or self._outbox
            or self._events
            or self._tx_key != self._contents()
        ):
            return None
        self.last_tx_us = now
        self.counters.packets_out += 1
        self.next_tx_us = self._next_periodic_tx(now)
        return self._tx_bytes

    def handle_timer(self, now: int) -> None:
        """Run whatever deadlines have passed at ``now``."""
        detect = self.detect_deadline_us
        if detect is not None and now >= detect:
            self._detection_timeout(now)
        tx = self.next_tx_us
        if tx is not None and now >= tx:
            self._emit(now)
            self.next_tx_us = self._next_periodic_tx(now)

    def disable(self, now: int, diag: Diag = Diag.ADMINISTRATIVELY_DOWN) -> None:
        """AdminDown: no packets at all until :meth:`enable`."""
        if self.state is State.ADMIN_DOWN:
            return
        self._set_state(State.ADMIN_DOWN, diag, now)

    def enable(self, now: int) -> None:
        """Leave AdminDown: the session starts over from Down."""
        if self.state is not State.ADMIN_DOWN:
            return
        self._set_state(State.DOWN, Diag.NO_DIAGNOSTIC, now)

    def path_changed(self, now: int) -> None:
        """The way to the gateway changed (its address became known): unless
        Up (nothing to hurry) or AdminDown (nothing to send), the next packet
        goes at once rather than up to a slow second later."""
        if self.state is State.DOWN or self.state is State.INIT:
            self.next_tx_us = now

    def transmit_now(self, now: int) -> None:
        """Nothing: Control sessions tell their remote of a shutdown; the
        gateway of an echo session is told nothing."""

    def set_timers(
        self,
        now: int,
        *,
        desired_min_tx_us: int | None = None,
        required_min_rx_us: int | None = None,
        detect_mult: int | None = None,
    ) -> None:
        """Change the echo interval (``desired_min_tx_us``) or Detect Mult.

        Nobody is asked (there is no remote to negotiate with): the next
        packet goes at the new interval and says it; the Detection Time
        follows from the next packet that comes back, or at once when it
        gets longer.  ``required_min_rx_us`` has no meaning here.
        """
        cfg = self.config
        interval = cfg.interval_us if desired_min_tx_us is None else desired_min_tx_us
        mult = cfg.detect_mult if detect_mult is None else detect_mult
        self.set_config(replace(cfg, interval_us=interval, detect_mult=mult), now)

    def set_config(self, config: EchoConfig, now: int) -> None:
        """Take a new configuration (see :meth:`set_timers`)."""
        old_interval = self.transmit_interval_us
        self.config = config
        if self.detect_deadline_us is not None and self.last_rx_us is not None:
            detect = config.detect_mult * self.transmit_interval_us
            if detect > self._detect_us:
                self._detect_us = detect
                self.detect_deadline_us = self.last_rx_us + detect
        if self.transmit_interval_us != old_interval and self.next_tx_us is not None:
            base = self.last_tx_us if self.last_tx_us is not None else now
            self.next_tx_us = max(now, self._next_periodic_tx(base))

    # -------------------------------------------------------------- internals

    def _set_state(self, new: State, diag: Diag, now: int, detect_time_us: int = -1) -> None:
        """The one place the state changes: counts, reports, reschedules."""
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
        self._events.append(
            StateChanged(
                old,
                new,
                diag,
                self.remote_state,
                self.remote_diag,
                now,
                self.last_rx_us,
                self._detect_us if detect_time_us < 0 else detect_time_us,
            )
        )
        if new is State.ADMIN_DOWN:
            self.detect_deadline_us = None
            self._forget_remote()
            self.next_tx_us = None
        else:
            # A new state is worth a packet at once (the handshake with
            # ourselves takes two round trips, not two intervals).
            self.next_tx_us = now

    def _forget_remote(self) -> None:
        """RFC 5880 §6.8.1: bfd.RemoteDiscr is reset, the remote's values with it."""
        self._detect_us = 0
        self.remote_discr = 0
        self.remote_state = State.DOWN
        self.remote_detect_mult = 0
        self.remote_desired_min_tx_us = 0

    def _detection_timeout(self, now: int) -> None:
        """RFC 9747 §2: Detect Mult packets did not come back."""
        self.detect_deadline_us = None
        self.counters.detection_expiries += 1
        expired_after = self._detect_us
        transition = fsm.on_detection_timeout(self.state)
        self._forget_remote()
        if transition is not None:
            self._set_state(transition[0], Diag.ECHO_FUNCTION_FAILED, now, expired_after)

    def _next_periodic_tx(self, last_us: int) -> int:
        """RFC 5880 §6.8.7: the jittered instant of the packet after ``last_us``."""
        interval = self.transmit_interval_us
        mult = self.config.detect_mult
        window = self._jitter_window
        if window[0] != interval or window[1] != mult or window[2] is not self.align_tx:
            low, high = jitter_bounds(interval, mult)
            grid = tx_grid(interval, mult) if self.align_tx else 0
            self._jitter_window = window = (interval, mult, self.align_tx, low, high, grid)
        return aligned_transmission(
            last_us, window[3], window[4], self._rng, window[5], self.tx_instants
        )

    def _emit(self, now: int) -> None:
        """Queue one echo packet saying the current state."""
        self.last_tx_us = now
        self.counters.packets_out += 1
        key = self._contents()
        if key != self._tx_key:
            self._tx_key = key
            payload = encode(self.packet())
            frame = self._frame
            self._tx_bytes = payload if frame is None else frame(payload)
        self._outbox.append(self._tx_bytes)

    def _contents(self) -> tuple[object, ...]:
        """What a packet says that may change (the key of the cached frame)."""
        return (
            self.state,
            self.local_diag,
            self.config.detect_mult,
            self.remote_discr,
            self.transmit_interval_us,
        )

    def packet(self) -> ControlPacket:
        """The echo packet this session sends now (RFC 9747 §2)."""
        return ControlPacket(
            self.state,
            self.local_diag,
            0,
            self.config.detect_mult,
            self.local_discr,
            self.remote_discr,
            self.transmit_interval_us,
            0,
            0,
            None,
        )

    def __repr__(self) -> str:
        return (
            f"<EchoSession {self.key!r} discr={self.local_discr} {self.state.name} "
            f"remote={self.remote_discr}/{self.remote_state.name}>"
        )


@dataclass(frozen=True, slots=True)
class EchoFailed(Event):
    """The Echo function of a Control session stopped getting its packets
    back (RFC 5880 §6.8.5): the session went Down with diag 2.  Reported by
    the :class:`EchoFunction`, for its owner to act on (the engine sends the
    Control session's Down at once); never a listener's business."""

    at_us: int
    detection_time_us: int
    """Detect Mult times the echo interval: how long nothing came back."""


class EchoFunction(EchoSession):
    """The RFC 5880 Echo function of one Control session (§6.4, §6.8.9).

    Our echo packets are addressed to ourselves and sent to the remote's
    link-layer address; the remote system's forwarding sends them back.  The
    packets are those of :class:`EchoSession` (a Control packet on UDP 3785
    naming the Control session's discriminator, both My and Your
    Discriminator), framed and sent alike; what differs is when:

    * **Active** only while the owning :class:`~.session.Session` is Up and
      the last Control packet from the remote said a nonzero Required Min
      Echo RX Interval (§6.8.9); :meth:`sync` is how the session tells it.
      Inactive, nothing is sent and nothing is timed (``state`` is Down;
      Up while active).
    * **Interval**: the configured one, never shorter than the remote's
      Required Min Echo RX Interval, with the 75-100 % jitter §6.8.9 allows.
    * **Detection**: Detect Mult (the session's) times that interval without
      a packet coming back, from the last one back (or from activation):
      the owner goes Down with diag 2, Echo Function Failed (§6.8.5), and an
      :class:`EchoFailed` event is queued here.
    * While active the owner asks for Control packets no faster than one a
      second (§6.8.3, see ``Session.echo_active_changed``).

    It emits no :class:`~.events.StateChanged`: the session's state is the
    owner's.
    """

    __slots__ = ("carrier", "owner")

    def __init__(
        self,
        owner: Session,
        interval_us: int,
        *,
        now: int,
        rng: RandomSource,
        frame: Frame | None = None,
        align_tx: bool = False,
    ) -> None:
        config = EchoConfig(interval_us=interval_us, detect_mult=owner.detect_mult)
        super().__init__(
            config,
            owner.local_discr,
            now=now,
            rng=rng,
            key=owner.key,
            frame=frame,
            align_tx=align_tx,
        )
        self.owner = owner
        self.carrier: Any = None
        """What carries it, given by whoever drives it (the engine: its peer);
        opaque here, as ``key``."""
        self.next_tx_us = None  # inactive until sync() says otherwise
        self.remote_discr = owner.local_discr
        owner.attach_echo(self, now)

    @property
    def active(self) -> bool:
        """Whether echo packets are being sent (the session Up, the remote willing)."""
        return self.state is State.UP

    def sync(self, now: int) -> None:
        """The owner's state or the remote's Required Min Echo RX changed
        (or may have): start, stop or re-pace transmission."""
        owner = self.owner
        remote = owner.remote_min_echo_rx_us
        wanted = owner.state is State.UP and remote > 0
        if not wanted:
            if self.state is State.UP:
                self.stop(now)
            return
        if self.state is not State.UP:
            self._floor_us = remote
            self.state = State.UP
            self.local_diag = Diag.NO_DIAGNOSTIC
            self.last_state_change_us = now
            self.counters.session_up += 1
            self.max_rx_gap_us = 0
            self.last_rx_us = None
            self._detect_us = self.config.detect_mult * self.transmit_interval_us
            self.detect_deadline_us = now + self._detect_us
            self.next_tx_us = now  # the first one at once
            owner.echo_active_changed(now)
            owner.echo_rescheduled(now)
            return
        if remote != self._floor_us:
            old = self.transmit_interval_us
            self._floor_us = remote
            if self.transmit_interval_us != old:
                self._repace(now)
                owner.echo_rescheduled(now)

    def stop(self, now: int) -> None:
        """Stop sending and timing (the owner is not Up, or wants no echo)."""
        self.state = State.DOWN
        self.last_state_change_us = now
        self.counters.session_down += 1
        self.next_tx_us = None
        self.detect_deadline_us = None
        self._detect_us = 0
        self._floor_us = 0
        self.owner.echo_active_changed(now)
        self.owner.echo_rescheduled(now)

    def _repace(self, now: int) -> None:
        """The interval changed while active: the next packet and the
        Detection Time follow (a longer one at once, a shorter one from the
        next packet back)."""
        detect = self.config.detect_mult * self.transmit_interval_us
        if detect > self._detect_us and self.detect_deadline_us is not None:
            base = self.last_rx_us if self.last_rx_us is not None else now
            self.detect_deadline_us = max(self.detect_deadline_us, base + detect)
        self._detect_us = detect
        if self.next_tx_us is not None:
            base = self.last_tx_us if self.last_tx_us is not None else now
            self.next_tx_us = max(now, self._next_periodic_tx(base))

    def set_config(self, config: EchoConfig, now: int) -> None:
        """A new echo interval or Detect Mult (a reload, or the owner's timers)."""
        old = self.transmit_interval_us
        old_mult = self.config.detect_mult
        self.config = config
        if self.state is State.UP and (
            self.transmit_interval_us != old or config.detect_mult != old_mult
        ):
            self._repace(now)
            self.owner.echo_rescheduled(now)

    def receive(self, pkt: ControlPacket, now: int, raw: bytes | None = None) -> None:
        """One of our echo packets came back (the owner demultiplexed it by
        My Discriminator and checked its source and TTL)."""
        if pkt.my_discr != self.local_discr or pkt.your_discr != self.local_discr:
            self._drop(
                DropReason.WRONG_PEER, f"echo discriminators {pkt.my_discr}/{pkt.your_discr}"
            )
        if pkt.auth is not None:
            self._drop(DropReason.AUTH_MISMATCH, "echo packets carry no authentication")
        counters = self.counters
        if self.state is not State.UP:
            # Sent before the function stopped: it says nothing now.
            counters.packets_dropped += 1
            counters.drops[STALE] = counters.drops.get(STALE, 0) + 1
            return
        counters.packets_in += 1
        last = self.last_rx_us
        if last is not None and now - last > self.max_rx_gap_us:
            self.max_rx_gap_us = now - last
        self.last_rx_us = now
        self.detect_deadline_us = now + self._detect_us

    def _detection_timeout(self, now: int) -> None:
        """RFC 5880 §6.8.5: Detect Mult echo intervals and nothing came back."""
        expired_after = self._detect_us
        self.detect_deadline_us = None
        self.counters.detection_expiries += 1
        self._events.append(EchoFailed(now, expired_after))
        self.owner.echo_failed(now, expired_after)
        if self.state is State.UP:  # the owner was not Up after all
            self.stop(now)

    def path_changed(self, now: int) -> None:
        """Nothing to hurry: packets go at their interval while active."""

    def disable(self, now: int, diag: Diag = Diag.ADMINISTRATIVELY_DOWN) -> None:
        """Nothing: the owner's state decides (see :meth:`sync`)."""

    def enable(self, now: int) -> None:
        """Nothing: the owner's state decides (see :meth:`sync`)."""

    def __repr__(self) -> str:
        return f"<EchoFunction {self.key!r} discr={self.local_discr} {'active' if self.active else 'inactive'}>"
