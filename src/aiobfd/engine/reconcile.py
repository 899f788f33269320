"""Reload: how a running session takes a new configuration without a flap.

:func:`changes` sorts the configured peers against the running ones
(removed, added, changed, unchanged); :func:`apply_spec` changes a running
session in place: authentication, minimum TTL and the passive role at once,
timers through a Poll Sequence (RFC 5880 §6.8.3), and the administrative
state.  The engine's facade (:meth:`~aiobfd.engine.Daemon.apply_config`)
opens and closes what has to be.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from ..config import PeerSpec
from ..protocol.packet import State
from ..protocol.registry import PeerKey
from ..protocol.session import Session
from .peer import Peer


@dataclass(slots=True)
class Changes:
    """What a reload does, in the order it does it."""

    removed: list[Peer] = field(default_factory=list)
    """Running peers the configuration no longer has (dynamic ones excepted)."""
    wanted: list[tuple[PeerSpec, Peer | None, bool]] = field(default_factory=list)
    """Each configured peer, its running session (None: new) and whether it changed."""


def changes(running: Mapping[PeerKey, Peer], specs: list[PeerSpec]) -> Changes:
    """Sort ``specs`` against the ``running`` peers: :func:`removed` and
    :func:`compare` (which a caller may run a slice at a time)."""
    wanted = {spec.key: spec for spec in specs}
    return Changes(removed(running.items(), wanted), compare(running, list(wanted.values())))


def removed(
    running: Iterable[tuple[PeerKey, Peer]], wanted: Mapping[PeerKey, PeerSpec]
) -> list[Peer]:
    """Running peers (key and peer) that ``wanted`` no longer has.  Dynamic
    (unsolicited) sessions are not the file's business."""
    return [p for k, p in running if k not in wanted and not p.dynamic]


def compare(
    running: Mapping[PeerKey, Peer], specs: list[PeerSpec]
) -> list[tuple[PeerSpec, Peer | None, bool]]:
    """Each of ``specs`` (of distinct keys), its running peer and whether it changed.

    A running peer is unchanged when its spec is equal and nothing changed it
    at run time (``aiobfdctl peer ...``): what the file says replaces that.  An
    unchanged peer takes the new spec object, which is equal: comparing it
    again (a full pass, :meth:`~aiobfd.engine.Daemon.apply_config`) is then a
    matter of identities.
    """
    out: list[tuple[PeerSpec, Peer | None, bool]] = []
    for spec in specs:
        peer = running.get(spec.key)
        changed = False
        if peer is not None:
            changed = peer.runtime or (peer.spec is not spec and peer.spec != spec)
            if not changed:
                peer.spec = spec
        out.append((spec, peer, changed))
    return out


def apply_spec(peer: Peer, spec: PeerSpec, now: int) -> None:
    """Change ``peer``'s session to ``spec``'s settings, in place (a Control
    session: an echo session's changes are the echo room's)."""
    session = peer.session
    assert isinstance(session, Session)
    old, new = session.config, spec.session
    peer.spec = spec
    peer.runtime = False
    if old.auth != new.auth:
        session.set_auth(new.auth)
    if old.min_ttl != new.min_ttl:
        session.config = replace(session.config, min_ttl=new.min_ttl)
    if old.passive != new.passive:
        session.set_passive(new.passive, now)
    if (old.desired_min_tx_us, old.required_min_rx_us, old.detect_mult) != (
        new.desired_min_tx_us,
        new.required_min_rx_us,
        new.detect_mult,
    ) or session.config != new:
        session.set_timers(
            now,
            desired_min_tx_us=new.desired_min_tx_us,
            required_min_rx_us=new.required_min_rx_us,
            detect_mult=new.detect_mult,
        )
    if spec.shutdown and session.state is not State.ADMIN_DOWN:
        session.disable(now)
    elif not spec.shutdown and session.state is State.ADMIN_DOWN:
        session.enable(now)
