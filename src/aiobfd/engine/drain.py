"""A drain: planned work without losing a packet (the anycast use case).

``aiobfdctl drain`` (or SIGUSR1 for every session) does it in two steps:

1. the sessions are marked *draining* and a :class:`DrainChanged` event goes
   to the listeners: the control socket's watchers see it, and the ExaBGP
   helper (``aiobfd-exabgp``) withdraws the host's routes at once, while BFD
   is still Up and traffic still flows;
2. after ``wait_ms`` (the router has moved the traffic by then) each session
   goes AdminDown (diag 7) and stays there.

``aiobfdctl undrain`` ends it: the wait is cancelled, the sessions are
enabled (they start again from Down) and the helper announces again once
they are Up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from ..protocol.events import DrainChanged, Event
from ..protocol.packet import State
from ..protocol.registry import PeerKey
from .peer import Peer

log = logging.getLogger("aiobfd")

#: How long a drain waits between the withdrawal and the AdminDown, by default.
DEFAULT_DRAIN_WAIT_MS = 5000


class Drain:
    """Which sessions are draining, and their pending AdminDown."""

    def __init__(
        self,
        peers: dict[PeerKey, Peer],
        report: Callable[[Peer, Event], None],
        disable: Callable[[PeerKey], None],
        enable: Callable[[PeerKey], None],
        wait_ms: int = DEFAULT_DRAIN_WAIT_MS,
    ) -> None:
        self._peers = peers
        self._report = report
        self._disable = disable
        self._enable = enable
        self.wait_ms = wait_ms
        """The default wait between withdrawal and AdminDown, ms."""
        self.draining: dict[PeerKey, asyncio.TimerHandle | None] = {}
        """Draining sessions, with their pending AdminDown (None: done)."""

    def is_draining(self, key: PeerKey) -> bool:
        return key in self.draining

    def drain(self, keys: Iterable[PeerKey], now: int, wait_ms: int | None = None) -> list[Peer]:
        """Start draining ``keys`` (those already draining are left as they are)."""
        wait = self.wait_ms if wait_ms is None else wait_ms
        loop = asyncio.get_running_loop()
        started: list[Peer] = []
        for key in keys:
            peer = self._peers.get(key)
            if peer is None or key in self.draining:
                continue
            self.draining[key] = loop.call_later(wait / 1000, self._finish, key)
            started.append(peer)
            log.warning(
                "session %s draining: withdraw now, AdminDown in %d ms",
                peer.spec.display_remote(),
                wait,
            )
            self._report(peer, DrainChanged(True, now))
        return started

    def _finish(self, key: PeerKey) -> None:
        if key not in self.draining or key not in self._peers:
            return
        self.draining[key] = None
        peer = self._peers[key]
        if peer.session.state is not State.ADMIN_DOWN:
            self._disable(key)

    def undrain(self, keys: Iterable[PeerKey], now: int) -> list[Peer]:
        """End the drain of ``keys``: enable them again."""
        ended: list[Peer] = []
        for key in keys:
            if key not in self.draining:
                continue
            handle = self.draining.pop(key)
            if handle is not None:
                handle.cancel()
            peer = self._peers.get(key)
            if peer is None:
                continue
            ended.append(peer)
            log.warning("session %s undrained", peer.spec.display_remote())
            self._report(peer, DrainChanged(False, now))
            if handle is None and not peer.spec.shutdown:
                self._enable(key)
        return ended

    def forget(self, key: PeerKey) -> None:
        handle = self.draining.pop(key, None)
        if handle is not None:
            handle.cancel()

    def close(self) -> None:
        for handle in self.draining.values():
            if handle is not None:
                handle.cancel()
        self.draining.clear()
