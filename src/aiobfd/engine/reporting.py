"""Reporting: session events to the log and to listeners, drops as summaries.

Every event a session emits goes through :meth:`Reporter.report`: a state
change is logged (WARNING when a session leaves Up, else INFO) with the
session's fields for JSON logs, then each listener (hooks, the control
socket's watchers, metrics) is called; a failing listener is logged and the
others still run.  Dropped packets are counted per source and reason and
logged as a summary at most every ``DROP_LOG_INTERVAL_US``.
"""

from __future__ import annotations

import logging
from typing import Any

from ..protocol.constants import US_PER_SECOND
from ..protocol.errors import PacketError
from ..protocol.events import Event, PollSequenceCompleted, StateChanged
from ..protocol.packet import State
from .peer import EventListener, Peer

log = logging.getLogger("aiobfd")

#: How often a drop summary may be logged, in microseconds.
DROP_LOG_INTERVAL_US = 10 * US_PER_SECOND
#: Distinct (reason, source) pairs kept between two summaries.
DROP_SOURCES_MAX = 1000


class Reporter:
    """Logs session events and passes them on to the listeners."""

    def __init__(self) -> None:
        self.listeners: list[EventListener] = []
        self._drop_pending: dict[tuple[str, str], int] = {}
        self._drop_logged_at = -DROP_LOG_INTERVAL_US

    def add_listener(self, listener: EventListener) -> None:
        self.listeners.append(listener)

    def remove_listener(self, listener: EventListener) -> None:
        if listener in self.listeners:
            self.listeners.remove(listener)

    def report(self, peer: Peer, event: Event) -> None:
        if isinstance(event, StateChanged):
            self._log_state_change(peer, event)
        elif isinstance(event, PollSequenceCompleted):
            log.debug(
                "session %s: poll sequence completed",
                peer.spec.display_remote(),
                extra=fields(peer),
            )
        for listener in tuple(self.listeners):
            try:
                listener(peer, event)
            except Exception:
                log.exception("event listener failed")

    def _log_state_change(self, peer: Peer, ev: StateChanged) -> None:
        extra = fields(peer)
        extra.update(
            old_state=ev.old_state.label,
            new_state=ev.new_state.label,
            diag=int(ev.diag),
            diag_name=ev.diag.label,
            # The Detection Time in force at the change: after an expiry the
            # session has already reset it to 0 with the remote's values.
            detect_time_ms=ev.detection_time_us / 1000,
        )
        if ev.diag == 1 and ev.last_rx_us is not None:
            extra["ms_since_last_packet"] = round((ev.at_us - ev.last_rx_us) / 1000, 3)
        level = (
            logging.INFO
            if ev.new_state is State.UP or ev.old_state is not State.UP
            else logging.WARNING
        )
        log.log(
            level,
            "session %s %s -> %s (diag %s)",
            peer.spec.display_remote(),
            ev.old_state.name,
            ev.new_state.name,
            ev.diag.label,
            extra=extra,
        )

    def log_drop(self, exc: PacketError, remote: str, now: int) -> None:
        """Count drops per source and reason; log a summary at most every 10 s."""
        if log.isEnabledFor(logging.DEBUG):
            log.debug("dropped a packet from %s: %s", remote, exc)
        pending = self._drop_pending
        key = (exc.reason.value, remote)
        if key in pending or len(pending) < DROP_SOURCES_MAX:
            pending[key] = pending.get(key, 0) + 1
        if now - self._drop_logged_at < DROP_LOG_INTERVAL_US:
            return
        self._drop_logged_at = now
        top = sorted(pending.items(), key=lambda kv: -kv[1])[:5]
        summary = ", ".join(f"{n} x {reason} from {src}" for (reason, src), n in top)
        more = len(pending) - len(top)
        log.warning("dropped packets: %s%s", summary, f" (+{more} more)" if more > 0 else "")
        pending.clear()


def fields(peer: Peer) -> dict[str, Any]:
    """A session's fields for structured (JSON) log lines."""
    s = peer.session
    return {
        "local": peer.spec.local,
        "remote": peer.spec.display_remote(),
        "local_discr": s.local_discr,
        "remote_discr": s.remote_discr,
        "state": s.state.label,
        "remote_diag": int(s.remote_diag),
        "tx_interval_ms": s.transmit_interval_us / 1000,
        "rx_interval_ms": max(s.required_min_rx_us, s.remote_desired_min_tx_us) / 1000,
        "detect_time_ms": s.detection_time_us / 1000,
    }
