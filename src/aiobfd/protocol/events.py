"""Events the protocol core reports to whoever drives it (frozen, slotted values)."""

from __future__ import annotations

from dataclasses import dataclass

from .packet import Diag, State


@dataclass(frozen=True, slots=True)
class Event:
    """Base of all events."""


@dataclass(frozen=True, slots=True)
class StateChanged(Event):
    """The local session state changed (RFC 5880 §6.8.6 or administrative action)."""

    old_state: State
    new_state: State
    diag: Diag
    """bfd.LocalDiag after the change: why we went Down (or 0)."""
    remote_state: State
    remote_diag: Diag
    """The Diag field of the last packet received from the remote."""
    at_us: int
    """Monotonic time of the change, in microseconds."""
    last_rx_us: int | None
    """Monotonic time of the last packet received, for detection-latency reports."""
    detection_time_us: int
    """The Detection Time in force when the change happened."""


@dataclass(frozen=True, slots=True)
class SessionRemoved(Event):
    """The daemon removed the session (configuration, aiobfdctl, or an expired
    unsolicited session).  Reported by the daemon, not by the sans-IO core."""

    at_us: int


@dataclass(frozen=True, slots=True)
class DrainChanged(Event):
    """A session started draining (``draining``) or was undrained.  Reported
    by the engine (aiobfd.engine.drain), not by the sans-IO core; here because
    mypyc compiles this module, and an interpreted class cannot derive from a
    compiled one."""

    draining: bool
    at_us: int


@dataclass(frozen=True, slots=True)
class PollSequenceCompleted(Event):
    """A Poll Sequence we started was answered with Final (RFC 5880 §6.5)."""

    at_us: int
    desired_min_tx_us: int
    required_min_rx_us: int
