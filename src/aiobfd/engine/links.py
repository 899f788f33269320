"""Links and addresses: a session's path, as the kernel tells it.

:class:`Links` follows the kernel's link and address notifications over one
rtnetlink socket (:class:`~aiobfd.io.netlink.LinkNetlink`: a dump at start,
then ``ip monitor link address``'s events, read when the loop says the socket
is readable).  A Control session's path is up while its local address is on
this host (not tentative) and, single hop, the interface it is on (or the
session's configured interface) is administratively up with a carrier.  When
the path goes the session goes Down at once with diag 5, Path Down, and stays
quiet (:meth:`Session.path_down`); when it comes back the session starts over
from Down (:meth:`Session.path_up`).

A configured session whose local address is not on the host yet is *waiting*
(kept by the daemon, not an error): when the address appears the daemon is
asked to open it.

Why a netlink socket of our own rather than pyroute2: four message types,
parsed in ~100 lines beside the route and neighbour queries the daemon already
makes (``aiobfd.io.netlink``); no dependency, nothing imported at start.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ..config import PeerSpec
from ..io.netlink import DumpDone, IfAddress, Link, LinkEvent, LinkNetlink, NetlinkError
from ..protocol.registry import PeerKey
from ..protocol.session import Session
from .peer import Peer

log = logging.getLogger("aiobfd")


class Links:
    """The host's links and addresses, and the paths of the sessions on them."""

    def __init__(
        self,
        peers: dict[PeerKey, Peer],
        waiting: dict[PeerKey, PeerSpec],
        on_path: Callable[[Peer, bool], None],
        retry: Callable[[PeerKey], None],
    ) -> None:
        self._peers = peers
        self._waiting = waiting
        self._on_path = on_path
        self._retry = retry
        self._nl: LinkNetlink | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.links: dict[int, Link] = {}
        self.addresses: dict[str, dict[int, IfAddress]] = {}
        """Usable and unusable addresses, by address then interface index."""
        self.removed: set[str] = set()
        """Addresses seen deleted and not back yet.  An address never listed
        may still be this host's (inside a local route, such as 127.0.0.2 on
        lo or an anycast prefix routed ``local``): only a removal counts."""
        self.reasons: dict[PeerKey, str] = {}
        """Why a session's path is down, by peer key (only those that are)."""
        self._lost = 0

    @property
    def active(self) -> bool:
        """Following the kernel (False: no netlink socket; every path counts as up)."""
        return self._nl is not None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            self._nl = LinkNetlink()
        except OSError as exc:
            log.warning("not following link and address changes: %s", exc)
            return
        self._loop = loop
        self._take(self._nl.dump(), full=True)
        loop.add_reader(self._nl.fileno(), self._on_readable)

    def close(self) -> None:
        nl, self._nl = self._nl, None
        if nl is None:
            return
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.remove_reader(nl.fileno())
        nl.close()

    # ----------------------------------------------------------- the kernel

    def _on_readable(self) -> None:
        nl = self._nl
        if nl is None:
            return
        try:
            events = nl.read()
        except OSError as exc:
            log.warning("link events: %s", exc)
            return
        if nl.lost != self._lost:
            # The kernel dropped events: ask for the whole picture again.
            self._lost = nl.lost
            self._take(nl.dump(), full=True)
        elif events:
            self._take(events, full=False)

    def _take(self, events: list[LinkEvent], *, full: bool) -> None:
        if full:
            self.links.clear()
            self.addresses.clear()
        appeared: set[str] = set()
        # What the events touched: only the sessions on those addresses and
        # interfaces are looked at again (a host's links may change often;
        # looking at 10,000 sessions costs tens of milliseconds of the loop).
        touched_links: set[int] = set()
        touched_names: set[str] = set()
        touched_addresses: set[str] = set()
        for ev in events:
            if isinstance(ev, Link):
                touched_links.add(ev.ifindex)
                touched_names.add(ev.name)
                known = self.links.get(ev.ifindex)
                if known is not None:
                    touched_names.add(known.name)  # (renamed or deleted)
                if ev.deleted:
                    self.links.pop(ev.ifindex, None)
                else:
                    self.links[ev.ifindex] = ev
            elif isinstance(ev, IfAddress):
                touched_addresses.add(ev.address)
                by_index = self.addresses.setdefault(ev.address, {})
                if ev.deleted:
                    by_index.pop(ev.ifindex, None)
                    if not by_index:
                        del self.addresses[ev.address]
                        self.removed.add(ev.address)
                else:
                    self.removed.discard(ev.address)
                    by_index[ev.ifindex] = ev
                    if ev.usable:
                        appeared.add(ev.address)
            elif isinstance(ev, NetlinkError):
                log.warning("link dump refused: %s", ev.message)
            else:
                assert isinstance(ev, DumpDone)
        for key, spec in list(self._waiting.items()):
            if spec.local in appeared or (full and self._address_ok(spec)):
                self._retry(key)
        if full:
            self.evaluate_all()
            return
        if touched_links:
            touched_addresses.update(
                address
                for address, by_index in self.addresses.items()
                if not touched_links.isdisjoint(by_index)
            )
        if not touched_addresses and not touched_names:
            return
        for peer in list(self._peers.values()):
            spec = peer.spec
            if (
                spec.local in touched_addresses
                or (spec.interface and spec.interface in touched_names)
                or (spec.scope and spec.scope in touched_links)
            ):
                self.evaluate(peer)

    # ------------------------------------------------------------- the paths

    def evaluate_all(self) -> None:
        for peer in list(self._peers.values()):
            self.evaluate(peer)

    def evaluate(self, peer: Peer) -> None:
        """Tell the daemon when ``peer``'s path changed (a Control session only)."""
        if not isinstance(peer.session, Session) or self._nl is None or peer.spec.netns:
            return  # (the links of another namespace are not followed)
        key = peer.spec.key
        reason = self.path_down_reason(peer.spec)
        if reason is None:
            self.reasons.pop(key, None)
        else:
            self.reasons[key] = reason
        if (reason is None) is peer.session.path_is_down:
            if reason is None:
                log.info("session %s: path up again", peer.spec.display_remote())
            else:
                log.warning("session %s: path down: %s", peer.spec.display_remote(), reason)
            self._on_path(peer, reason is None)

    def _address_ok(self, spec: PeerSpec) -> bool:
        return any(a.usable for a in self._addresses_of(spec))

    def _addresses_of(self, spec: PeerSpec) -> list[IfAddress]:
        found = self.addresses.get(spec.local)
        if not found:
            return []
        if spec.scope:
            entry = found.get(spec.scope)
            return [entry] if entry is not None else []
        return list(found.values())

    def _link_up(self, ifindex: int) -> bool:
        link = self.links.get(ifindex)
        return link is None or link.up  # an interface not (yet) known: assume up

    def path_down_reason(self, spec: PeerSpec) -> str | None:
        """Why ``spec``'s path is down, or None when it is up."""
        if self._nl is None:
            return None
        listed = self._addresses_of(spec)
        usable = [a for a in listed if a.usable]
        if not usable and (listed or spec.local in self.removed):
            return f"local address {spec.local} is not on this host"
        if spec.multihop:
            return None  # routed: the local address is all that counts here
        if spec.interface and not spec.scope:
            index = next((i for i, k in self.links.items() if k.name == spec.interface), None)
            if index is None:
                return f"interface {spec.interface} does not exist"
            return None if self._link_up(index) else f"interface {spec.interface} is down"
        if spec.scope:
            usable = usable or [IfAddress(spec.local, spec.scope, 0)]
        if not usable or any(self._link_up(a.ifindex) for a in usable):
            return None
        names = sorted({self.links[a.ifindex].name for a in usable if a.ifindex in self.links})
        return f"interface {', '.join(names)} is down"
