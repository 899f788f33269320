"""The one list of metric families: name, type, help, labels and how each is read.

:func:`families` is the only place a metric is defined; both renderers are built
from it (:mod:`.collector` for ``prometheus_client``, :mod:`.exposition` for the
daemon's own endpoint), so adding a metric is adding one entry here.

A family is read from the daemon once a scrape (:data:`DaemonFamily`) or from
every session (:data:`SessionFamily`; its series carry :data:`SESSION_LABELS`
before the family's own labels).  Its getter either answers one value
(:class:`Scalar`) or a sample per tuple of label values (:class:`Labelled`);
:class:`Histogram` reads one of the daemon's timer-lateness histograms.

Getters only read what sessions and the daemon keep anyway (plain counters,
intervals, dicts they copy).  The one reading counted here, state transitions
by from/to state, comes from ``StateChanged`` events (:class:`StateChanges`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Generic, Literal, NamedTuple, TypeVar

from .. import __version__, core_build
from ..engine import Daemon, Peer
from ..logs import dropped_log_records
from ..protocol.echo import EchoSession
from ..protocol.events import Event, StateChanged
from ..protocol.packet import State
from ..protocol.registry import PeerKey
from ..protocol.stats import LatencyHistogram

#: ``info`` is a gauge of value 1 whose labels say something (``aiobfd_build_info``);
#: its name ends in ``_info``.
Kind = Literal["counter", "gauge", "info"]
#: The label values of a :class:`Labelled` sample: a tuple in the order of the
#: family's labels, or for a family of one label just its value (so the items
#: of a dict of counts by reason are samples as they are).
LabelKey = str | tuple[str, ...]
#: One sample of a :class:`Labelled` family: its label values and its value.
Sample = tuple[LabelKey, float]
#: What a family is read from: the :class:`~aiobfd.engine.Daemon` or a :class:`~aiobfd.engine.Peer`.
Source = TypeVar("Source")

#: The labels of every per-session series, before the family's own.
SESSION_LABELS = ("local", "remote", "interface")
STATES = tuple(s.label for s in State)
#: The one transition a flap alert counts: its series exists from the start (at
#: 0), so ``increase()`` sees the first flap too.  Others appear when they happen.
UP_TO_DOWN = (State.UP.label, State.DOWN.label)

#: time.time() - time.monotonic(), taken once: turns the monotonic instants of
#: the protocol into unix seconds, for display only.
WALL_OFFSET = time.time() - time.monotonic()


@dataclass(frozen=True, slots=True)
class Scalar(Generic[Source]):
    """One sample a source and no labels of its own; a getter answering None
    leaves the source's sample out."""

    name: str
    kind: Kind
    help: str
    get: Callable[[Source], float | None]


@dataclass(frozen=True, slots=True)
class Labelled(Generic[Source]):
    """A sample per label values that the getter answers: a copy or an immutable
    tuple, never a live view of a dict that the daemon changes (``collect`` may
    run in a thread of its own)."""

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...]
    get: Callable[[Source], Iterable[Sample]]


@dataclass(frozen=True, slots=True)
class Histogram:
    """A daemon-wide histogram, in seconds."""

    name: str
    help: str
    get: Callable[[Daemon], LatencyHistogram]


DaemonFamily = Scalar[Daemon] | Labelled[Daemon] | Histogram
SessionFamily = Scalar[Peer] | Labelled[Peer]


class Families(NamedTuple):
    """The families in the order they are exposed: the daemon's, then the sessions'."""

    daemon: tuple[DaemonFamily, ...]
    session: tuple[SessionFamily, ...]


class StateChanges:
    """Each session's local state changes by (from, to) state, counted from events.

    Called for every session event, never per packet.  The samples of a session
    are built when it changes state, so a scrape only looks them up.  A lock
    guards the counts: ``prometheus_client`` may collect in a thread of its own.
    """

    def __init__(self, daemon: Daemon) -> None:
        self._lock = threading.Lock()
        self._counts: dict[PeerKey, dict[tuple[str, str], int]] = {}
        self._samples: dict[PeerKey, tuple[tuple[tuple[str, str], int], ...]] = {}
        daemon.add_listener(self._on_event)

    def _on_event(self, peer: Peer, event: Event) -> None:
        if not isinstance(event, StateChanged):
            return
        pair = (event.old_state.label, event.new_state.label)
        key = peer.spec.key
        with self._lock:
            counts = self._counts.setdefault(key, {})
            counts[pair] = counts.get(pair, 0) + 1
            # up->down first, at 0 until it happens.
            first = () if UP_TO_DOWN in counts else _NO_CHANGES
            self._samples[key] = (*first, *counts.items())

    def keep_only(self, live: Mapping[PeerKey, Peer]) -> None:
        """Forget the counts of sessions that are gone."""
        with self._lock:
            for key in [k for k in self._counts if k not in live]:
                del self._counts[key]
                del self._samples[key]

    def of(self, peer: Peer) -> tuple[tuple[tuple[str, str], int], ...]:
        """The session's counts, up->down first (at 0 until it happens).

        No lock: one dict lookup of a tuple that events replace whole.
        """
        return self._samples.get(peer.spec.key, _NO_CHANGES)


_NO_CHANGES = ((UP_TO_DOWN, 0),)


def session_label_values(p: Peer) -> list[str]:
    """The values of :data:`SESSION_LABELS` for a session."""
    spec = p.spec
    return [spec.local, spec.remote, spec.interface]


def label_values(key: LabelKey) -> tuple[str, ...]:
    """A sample's label values as strings, in the order of its family's labels."""
    if isinstance(key, tuple):
        return tuple(str(v) for v in key)
    return (str(key),)


# ---------------------------------------------------------------- what is read

#: The samples of aiobfd_session_state, indexed by the current state (the Sta
#: field, 0 to 3): 1 for it, 0 for the others.  Shared, nothing is built a scrape.
_STATE_SAMPLES = tuple(
    tuple((label, int(label == current.label)) for label in STATES) for current in State
)


def _rx(p: Peer) -> float:
    s = p.session
    return max(s.required_min_rx_us, s.remote_desired_min_tx_us) / 1e6


def _gap_ratio(p: Peer) -> float | None:
    s = p.session
    detect_us = s.detection_time_us
    return s.max_rx_gap_us / detect_us if detect_us else None


def _echo(p: Peer) -> EchoSession | None:
    """The session as an RFC 9747 unaffiliated echo session, or a Control
    session's RFC 5880 Echo function, or None."""
    s = p.session
    if isinstance(s, EchoSession):
        return s
    return s.echo


def _reflected(p: Peer) -> float | None:
    s = p.session
    if isinstance(s, EchoSession) or not s.required_min_echo_rx_us:
        return None
    return s.counters.echo_reflected


def _reflect_limited(p: Peer) -> float | None:
    s = p.session
    if isinstance(s, EchoSession) or not s.required_min_echo_rx_us:
        return None
    return s.counters.echo_reflect_limited


def _echo_sent(p: Peer) -> float | None:
    echo = _echo(p)
    return None if echo is None else echo.counters.packets_out


def _echo_received(p: Peer) -> float | None:
    echo = _echo(p)
    return None if echo is None else echo.counters.packets_in


def _echo_interval(p: Peer) -> float | None:
    echo = _echo(p)
    return None if echo is None else echo.transmit_interval_us / 1e6


def _wakeups(d: Daemon) -> tuple[tuple[str, int], ...]:
    timing = d.timing
    return (("timer", timing.timer_wakeups), ("receive", timing.receive_wakeups))


def families(changes: StateChanges) -> Families:
    """Every family aiobfd exports; ``changes`` counts the transitions of one daemon."""
    daemon: tuple[DaemonFamily, ...] = (
        Labelled(
            "aiobfd_build_info",
            "info",
            "aiobfd version, and whether its core is compiled.",
            ("version", "core"),
            lambda d: (((__version__, core_build()), 1),),
        ),
        Labelled(
            "aiobfd_packets_dropped_total",
            "counter",
            "Received packets discarded before they matched a session (malformed, unknown "
            "discriminator or peer), by reason; drops of packets that matched a session are "
            "in aiobfd_session_packets_dropped_total.",
            ("reason",),
            lambda d: list(d.table.drops.items()),
        ),
        Scalar(
            "aiobfd_receive_errors_total",
            "counter",
            "Errors reading from the receive sockets.",
            lambda d: d.receive_errors,
        ),
        Scalar(
            "aiobfd_log_records_dropped_total",
            "counter",
            "Log records dropped because the log destinations did not keep up (a full "
            "queue to the thread that writes them; the event loop never waits for a write).",
            lambda d: dropped_log_records(),
        ),
        Scalar(
            "aiobfd_receive_sockets",
            "gauge",
            "Established sessions read from a receive socket of their own; the others are "
            "read from their address's shared listener (RLIMIT_NOFILE too low for one each).",
            lambda d: d.session_sockets,
        ),
        Labelled(
            "aiobfd_wakeups_total",
            "counter",
            "Times the event loop woke the daemon, by cause: timer (session deadlines, each "
            "serving every session then due) or receive (packets on established sessions' "
            "sockets while no timer was near).",
            ("cause",),
            _wakeups,
        ),
        Labelled(
            "aiobfd_unsolicited_refused_total",
            "counter",
            "Unsolicited sessions (RFC 9468) not created, by reason (prefix, ttl, interface, "
            "limit, rate, busy, pending, multihop, error).",
            ("reason",),
            lambda d: list(d.unsolicited_refused.items()),
        ),
        Scalar(
            "aiobfd_unsolicited_sessions",
            "gauge",
            "Sessions that remotes created (RFC 9468 unsolicited).",
            lambda d: sum(1 for p in d.peers.values() if p.dynamic),
        ),
        Histogram(
            "aiobfd_transmit_lateness_seconds",
            "How late periodic transmissions went out against their schedule.",
            lambda d: d.timing.tx_lateness,
        ),
        Histogram(
            "aiobfd_detection_lateness_seconds",
            "How late detection timers fired against the Detection Time deadline.",
            lambda d: d.timing.detect_lateness,
        ),
    )
    session: tuple[SessionFamily, ...] = (
        Scalar(
            "aiobfd_session_up",
            "gauge",
            "1 if the session is Up, else 0.",
            lambda p: 1 if p.session.state is State.UP else 0,
        ),
        Scalar(
            "aiobfd_session_last_state_change_timestamp_seconds",
            "gauge",
            "Unix time of the last local state change (or of the session's creation).",
            lambda p: WALL_OFFSET + p.session.last_state_change_us / 1e6,
        ),
        Scalar(
            "aiobfd_session_packets_sent_total",
            "counter",
            "BFD Control packets sent (an unaffiliated echo session: its echo packets).",
            lambda p: p.session.counters.packets_out,
        ),
        Scalar(
            "aiobfd_session_packets_received_total",
            "counter",
            "BFD Control packets received and accepted by the session (an unaffiliated "
            "echo session: its echo packets that came back).",
            lambda p: p.session.counters.packets_in,
        ),
        Scalar(
            "aiobfd_session_echo_packets_sent_total",
            "counter",
            "Echo packets sent (RFC 9747 unaffiliated echo sessions, and Control sessions "
            "with an echo interval: RFC 5880 echo toward the BFD peer).",
            _echo_sent,
        ),
        Scalar(
            "aiobfd_session_echo_packets_received_total",
            "counter",
            "Echo packets that came back and were accepted (RFC 9747 unaffiliated echo "
            "sessions, and Control sessions with an echo interval).",
            _echo_received,
        ),
        Scalar(
            "aiobfd_session_echo_interval_seconds",
            "gauge",
            "Echo transmit interval in force, before jitter: the configured one once Up, "
            "at least 1 s before (unaffiliated echo sessions; Control sessions with an echo "
            "interval: at least the peer's Required Min Echo RX, 1 s while echo is not active).",
            _echo_interval,
        ),
        Scalar(
            "aiobfd_session_echo_reflected_total",
            "counter",
            "The BFD peer's echo packets looped back to it (Control sessions advertising a "
            "Required Min Echo RX Interval only; 0 where the interface forwards: the kernel "
            "loops them back).",
            _reflected,
        ),
        Scalar(
            "aiobfd_session_echo_reflect_limited_total",
            "counter",
            "The BFD peer's echo packets not looped back: the session not Up, or faster than "
            "the Required Min Echo RX Interval advertised allows.",
            _reflect_limited,
        ),
        Scalar(
            "aiobfd_session_transmit_interval_seconds",
            "gauge",
            "Negotiated periodic transmit interval, before jitter.",
            lambda p: p.session.transmit_interval_us / 1e6,
        ),
        Scalar(
            "aiobfd_session_receive_interval_seconds",
            "gauge",
            "Negotiated receive interval: the larger of our Required Min RX and the "
            "remote's Desired Min TX.",
            _rx,
        ),
        Scalar(
            "aiobfd_session_detection_time_seconds",
            "gauge",
            "Detection Time in force (0 until the remote has spoken).",
            lambda p: p.session.detection_time_us / 1e6,
        ),
        Scalar(
            "aiobfd_session_local_diag",
            "gauge",
            "Local diagnostic code (RFC 5880 section 4.1: 1 detection time expired, "
            "3 neighbor signaled session down, 7 administratively down, ...).",
            lambda p: int(p.session.local_diag),
        ),
        Scalar(
            "aiobfd_session_remote_diag",
            "gauge",
            "Diagnostic code in the last packet from the remote.",
            lambda p: int(p.session.remote_diag),
        ),
        Scalar(
            "aiobfd_session_poll_sequences_total",
            "counter",
            "Poll Sequences started (RFC 5880 section 6.5).",
            lambda p: p.session.counters.poll_sequences,
        ),
        Scalar(
            "aiobfd_session_detection_expiries_total",
            "counter",
            "Times the Detection Time passed without a packet from the remote.",
            lambda p: p.session.counters.detection_expiries,
        ),
        Scalar(
            "aiobfd_session_max_rx_gap_seconds",
            "gauge",
            "Largest gap between two received packets since the session last came Up.",
            lambda p: p.session.max_rx_gap_us / 1e6,
        ),
        Scalar(
            "aiobfd_session_max_rx_gap_ratio",
            "gauge",
            "Largest receive gap since the session last came Up divided by the Detection "
            "Time (1 would be a timeout); absent while there is no Detection Time.",
            _gap_ratio,
        ),
        Labelled(
            "aiobfd_session_state",
            "gauge",
            "Local session state (RFC 5880 section 4.1): 1 for the current state, else 0.",
            ("state",),
            lambda p: _STATE_SAMPLES[p.session.state],
        ),
        Labelled(
            "aiobfd_session_state_transitions_total",
            "counter",
            "Local state changes by old and new state (from=up,to=down exists from the start).",
            ("from", "to"),
            changes.of,
        ),
        Labelled(
            "aiobfd_session_packets_dropped_total",
            "counter",
            "Packets that matched the session but were discarded, by reason.",
            ("reason",),
            lambda p: p.drops().items(),  # a dict of its own
        ),
        Labelled(
            "aiobfd_session_send_errors_total",
            "counter",
            "Packets the kernel refused to send, by errno name.",
            ("errno",),
            lambda p: list(p.send_errors.items()),
        ),
    )
    return Families(daemon, session)
