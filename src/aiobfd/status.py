"""Session status as plain data, for the control socket and ``aiobfdctl``.

Intervals are in milliseconds (as FRR's ``show bfd peers json``), instants in
seconds of the monotonic clock, counters as integers.

An RFC 9747 unaffiliated echo session has the keys of a Control session
(its packets are the echo packets it sent and got back, its remote is itself
through the gateway), ``"mode": "unaffiliated_echo"`` (``"control"`` for the
others) and an ``echo`` object: the interval, the packets, and where they go
(the interface and the gateway's link-layer address, None while the kernel
has not resolved it).

A Control session with the RFC 5880 Echo function (an echo interval, or a
Required Min Echo RX Interval advertised) has an ``echo`` object with the same
keys, for our echo toward the BFD peer (``interface`` and ``gateway_mac``: the
peer's; ``interval_ms`` None without our echo), and ``"mode": "rfc5880"``,
``active``, ``required_min_echo_rx_ms`` (advertised),
``remote_required_min_echo_rx_ms``, ``detection_expiries`` and the peer's echo
packets looped back: ``reflected``, ``reflect_limited``.  Other Control
sessions have ``"echo": null``.
"""

from __future__ import annotations

from typing import Any

from .engine import Peer
from .protocol.echo import EchoFunction, EchoSession
from .protocol.errors import DropReason
from .protocol.packet import State
from .protocol.session import Session


def _ms(us: int) -> float:
    return us / 1000


def _s(us: int | None) -> float | None:
    return None if us is None else us / 1_000_000


def _echo_info(peer: Peer, session: EchoSession) -> dict[str, Any]:
    """The echo side of an unaffiliated echo session."""
    dest: Any = peer.dest
    # A packet socket's address once the gateway is resolved (see engine.echo);
    # an IP socket address (plain UDP to the gateway) until then.
    resolved = isinstance(dest, tuple) and len(dest) == 5 and isinstance(dest[4], bytes)
    c = session.counters
    return {
        "interval_ms": _ms(session.config.interval_us),
        "tx_interval_ms": _ms(session.transmit_interval_us),
        "detect_mult": session.config.detect_mult,
        "packets_in": c.packets_in,
        "packets_out": c.packets_out,
        "interface": dest[0] if resolved else None,
        "gateway_mac": ":".join(f"{b:02x}" for b in dest[4]) if resolved else None,
        "min_rx_ttl": session.min_rx_ttl,
    }


def _peer_echo_info(session: Session) -> dict[str, Any] | None:
    """The RFC 5880 Echo function of a Control session, None without one."""
    echo = session.echo
    advertised = session.required_min_echo_rx_us
    if echo is None and not advertised:
        return None
    info: dict[str, Any] = {
        "mode": "rfc5880",
        "interval_ms": None,
        "tx_interval_ms": None,
        "detect_mult": session.detect_mult,
        "packets_in": 0,
        "packets_out": 0,
        "interface": None,
        "gateway_mac": None,
        "min_rx_ttl": None,
        "active": False,
        "detection_expiries": 0,
    }
    carrier = echo.carrier if echo is not None else None
    if echo is not None and isinstance(carrier, Peer):
        info.update(_echo_info(carrier, echo))
        info["active"] = echo.active
        info["tx_interval_ms"] = _ms(echo.transmit_interval_us) if echo.active else None
        info["detection_expiries"] = echo.counters.detection_expiries
    c = session.counters
    info["required_min_echo_rx_ms"] = _ms(advertised)
    info["remote_required_min_echo_rx_ms"] = _ms(session.remote_min_echo_rx_us)
    info["reflected"] = c.echo_reflected
    info["reflect_limited"] = c.echo_reflect_limited
    return info


def session_info(peer: Peer, now: int) -> dict[str, Any]:
    """Everything an operator asks about one session."""
    s = peer.session
    c = s.counters
    drops = peer.drops()
    spec = peer.spec
    echo: EchoSession | None = (
        s if isinstance(s, EchoSession) and not isinstance(s, EchoFunction) else None
    )
    return {
        "remote": spec.remote,
        "local": spec.local,
        "interface": spec.interface or None,
        "vrf": spec.vrf or None,
        "netns": spec.netns or None,
        "peer": spec.display_remote(),
        "dynamic": peer.dynamic,
        "runtime": peer.runtime,
        "profile": spec.profile or None,
        "shutdown_configured": spec.shutdown,
        "passive": s.config.passive,
        "multihop": spec.multihop,
        "min_rx_ttl": s.min_rx_ttl,
        "authentication": s.auth.auth_type.name.lower() if s.auth is not None else None,
        "state": s.state.label,
        "remote_state": s.remote_state.label,
        "local_diag": int(s.local_diag),
        "local_diag_name": s.local_diag.label,
        "remote_diag": int(s.remote_diag),
        "remote_diag_name": s.remote_diag.label,
        "local_discr": s.local_discr,
        "remote_discr": s.remote_discr,
        "mode": "control" if echo is None else "unaffiliated_echo",
        "source_port": peer.source_port if echo is None else None,
        "receive_socket": "own" if peer.rx_sock is not None else "shared",
        "uptime_s": round((now - s.last_state_change_us) / 1e6, 3) if s.state is State.UP else None,
        "since_last_change_s": round((now - s.last_state_change_us) / 1e6, 3),
        "last_state_change_monotonic": _s(s.last_state_change_us),
        "last_rx_monotonic": _s(s.last_rx_us),
        "last_tx_monotonic": _s(s.last_tx_us),
        "detect_mult": s.detect_mult,
        "configured_tx_ms": _ms(s.config.desired_min_tx_us),
        "configured_rx_ms": _ms(s.config.required_min_rx_us),
        "desired_min_tx_ms": _ms(s.desired_min_tx_us),
        "required_min_rx_ms": _ms(s.required_min_rx_us),
        "remote_desired_min_tx_ms": _ms(s.remote_desired_min_tx_us),
        "remote_required_min_rx_ms": _ms(s.remote_min_rx_us),
        "remote_detect_mult": s.remote_detect_mult,
        "remote_demand_mode": s.remote_demand_mode,
        "tx_interval_ms": _ms(s.transmit_interval_us),
        "rx_interval_ms": _ms(max(s.required_min_rx_us, s.remote_desired_min_tx_us)),
        "detect_time_ms": _ms(s.detection_time_us),
        "max_rx_gap_ms": _ms(s.max_rx_gap_us),
        "poll_active": s.poll_active,
        "echo": (
            _echo_info(peer, echo)
            if echo is not None
            else _peer_echo_info(s)
            if isinstance(s, Session)
            else None
        ),
        "counters": {
            "packets_in": c.packets_in,
            "packets_out": c.packets_out,
            "packets_dropped": c.packets_dropped + drops.get(DropReason.KERNEL.value, 0),
            "session_up": c.session_up,
            "session_down": c.session_down,
            "poll_sequences": c.poll_sequences,
            "finals_sent": c.finals_sent,
            "detection_expiries": c.detection_expiries,
            "drops": drops,
            "send_errors": dict(peer.send_errors),
        },
    }
