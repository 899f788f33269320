"""Unsolicited sessions (RFC 9468): who may create one, how fast, for how long.

Off unless configured.  A packet with Your Discriminator 0 from an unknown
address creates a passive session only if it passes, in this order: the
multihop setting, the allowed prefixes, the TTL rule (single hop: 255), the
session limit and a token bucket (``rate_per_s``, ``burst``); last, within
the rate only, the interface check, which may ask the kernel for a route.
Each refusal is counted by reason.  A dynamic session that stays down for
``down_timeout_s`` is removed.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
from collections.abc import Callable
from dataclasses import replace

from ..config import PeerSpec, UnsolicitedConfig
from ..protocol.events import StateChanged
from ..protocol.packet import State
from .peer import Peer

log = logging.getLogger("aiobfd")

#: Seconds ``ip route get`` may take before the interface check fails.
ROUTE_LOOKUP_TIMEOUT_S = 2


class Admission:
    """Admits unsolicited sessions and expires those that stay down."""

    def __init__(self, config: UnsolicitedConfig | None, *, ttl_check: bool) -> None:
        self.config = config
        self.ttl_check = ttl_check
        self.refused: dict[str, int] = {}
        """Unsolicited sessions not created, by reason (prefix, limit, rate, ...)."""
        self.sessions = 0
        """Sessions created by unsolicited packets that exist now."""
        self._tokens = float(config.burst) if config else 0.0
        self._tokens_at = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._create: Callable[[PeerSpec], Peer] | None = None
        self._remove: Callable[[Peer], None] | None = None

    @property
    def enabled(self) -> bool:
        return self.config is not None

    def start(
        self,
        loop: asyncio.AbstractEventLoop,
        now: int,
        create: Callable[[PeerSpec], Peer],
        remove: Callable[[Peer], None],
    ) -> None:
        """``create`` starts a dynamic session (OSError, ValueError);
        ``remove`` takes away one that stayed down."""
        self._loop = loop
        self._tokens_at = now
        self._create = create
        self._remove = remove

    def admit(
        self, remote: str, local: str, scope: int, ttl: int | None, multihop: bool, now: int
    ) -> Peer | None:
        """A session for an unknown peer in an allowed prefix, or None (counted)."""
        cfg = self.config
        assert cfg is not None and self._create is not None
        reason = ""
        if multihop and not cfg.multihop:
            reason = "multihop"
        elif not cfg.allows(remote):
            reason = "prefix"
        elif self.ttl_check and not multihop and ttl is not None and ttl < 255:
            reason = "ttl"
        elif self.sessions >= cfg.max_sessions:
            reason = "limit"
        else:
            self._tokens = min(
                float(cfg.burst), self._tokens + (now - self._tokens_at) * cfg.rate_per_s / 1e6
            )
            self._tokens_at = now
            if self._tokens < 1:
                reason = "rate"
            else:
                self._tokens -= 1
                # Last, as it may ask the kernel for a route: only within the rate.
                if cfg.interfaces and not multihop and not _on_interfaces(remote, scope, cfg):
                    reason = "interface"
        if reason:
            self._refuse(reason)
            return None
        family = socket.AF_INET6 if ":" in remote else socket.AF_INET
        interface = socket.if_indextoname(scope) if scope else ""
        spec = PeerSpec(
            remote,
            local,
            family,
            scope,
            interface,
            replace(cfg.session, passive=True, multihop=multihop),
        )
        try:
            peer = self._create(spec)
        except (OSError, ValueError) as exc:
            self._refuse("error")
            log.warning("cannot create unsolicited session for %s: %s", remote, exc)
            return None
        log.info("unsolicited session from %s accepted (RFC 9468)", spec.display_remote())
        self.expire_later(peer)
        return peer

    def _refuse(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def adopt(self, peer: Peer) -> None:
        """``peer`` was created by an unsolicited packet: count it."""
        peer.dynamic = True
        self.sessions += 1

    def forget(self, peer: Peer) -> None:
        """``peer`` goes, or the configuration now owns it: no longer dynamic."""
        if peer.dynamic:
            peer.dynamic = False
            self.sessions -= 1
        if peer.expiry is not None:
            peer.expiry.cancel()
            peer.expiry = None

    def state_changed(self, peer: Peer, event: StateChanged) -> None:
        """A dynamic session that leaves Up expires unless it comes back."""
        if event.new_state is State.UP:
            if peer.expiry is not None:
                peer.expiry.cancel()
                peer.expiry = None
        elif event.old_state is State.UP:
            self.expire_later(peer)

    def expire_later(self, peer: Peer) -> None:
        cfg = self.config
        if cfg is None or self._loop is None:
            return
        if peer.expiry is not None:
            peer.expiry.cancel()
        peer.expiry = self._loop.call_later(cfg.down_timeout_s, self._expire, peer)

    def _expire(self, peer: Peer) -> None:
        peer.expiry = None
        if not peer.dynamic or peer.session.state is State.UP:
            return
        log.info("unsolicited session %s removed after staying down", peer.spec.display_remote())
        assert self._remove is not None
        self._remove(peer)


def _on_interfaces(remote: str, scope: int, cfg: UnsolicitedConfig) -> bool:
    """Whether a single-hop peer is reached through one of the allowed interfaces."""
    if scope:
        return socket.if_indextoname(scope) in cfg.interfaces
    return route_interface(remote) in cfg.interfaces


def route_interface(remote: str) -> str:
    """The interface of the connected route to ``remote`` (single hop: on-link)."""
    try:
        out = subprocess.run(
            ["ip", "-o", "route", "get", remote],
            capture_output=True,
            text=True,
            timeout=ROUTE_LOOKUP_TIMEOUT_S,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return ""
    return out[out.index("dev") + 1] if "dev" in out else ""
