"""Kernel routes driven by sessions: the ``[[routes]]`` of the configuration.

:class:`KernelRoutes` listens to the daemon's session events (as the hooks
do, ``Daemon.add_listener``) and keeps each configured route in the kernel
with every next hop whose session is Up - one next hop as a plain gateway,
several as an ECMP route - under aiobfd's route protocol number
(:data:`aiobfd.io.kroutes.RTPROT_AIOBFD`, 200), over its own non-blocking
rtnetlink socket (:class:`aiobfd.io.kroutes.RouteSocket`).

* **Down.** A next hop whose session leaves Up is taken out of its routes
  in the listener call itself, on the event loop turn that saw the session
  go Down: one ``RTM_NEWROUTE`` with ``NLM_F_REPLACE`` (the kernel swaps the
  next-hop set at once, no moment without a route), handled by the kernel
  inside ``send``.
* **The last next hop.** When every next hop of a route is down, the route
  keeps the next hops it had (``keep_last``, the default): a host is better
  off trying a gateway that may be alive than having no route.  With
  ``keep_last = false`` the route is deleted then.
* **Up.** A next hop whose session comes Up goes back into its routes at
  once, or, with ``[dampening]``, after the dampening the hooks use
  (:class:`aiobfd.hooks.Dampening`, per next hop: each Up -> Down adds a
  penalty; above ``suppress``, an Up waits until it has decayed to
  ``reuse``, at most ``max_hold_s``).
* **Ownership.** aiobfd only ever changes routes of its own protocol.  Before
  its first install in a family it dumps the routing tables; a route of
  another protocol at the same prefix, table and metric is a conflict: one
  log line, and the route is left alone until that route goes away (route
  events tell).  A route of aiobfd's protocol found there (left by an
  earlier run with ``persist``, or a crash) is taken over.  Deletes name the
  protocol, so the kernel never matches another's route.
* **Stop and reload.** :meth:`KernelRoutes.freeze` (called as a stop begins)
  keeps the sessions' AdminDown from changing the routes; :meth:`close`
  then deletes what aiobfd installed, except the routes with ``persist``.
  A reload (:meth:`configure`) deletes the routes the file no longer has
  (unless they had ``persist``) and brings the others to the new next hops.
* **Bounded.** At most :data:`ROUTES_PER_TURN` route changes per turn of the
  event loop (a next hop shared by thousands of routes is spread over
  turns); refusals and events are read when the loop says the socket is
  readable, a batch at a time.

It needs CAP_NET_ADMIN (the kernel answers EPERM otherwise, logged with the
route).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from .config import RouteSpec
from .engine import Daemon, Peer
from .hooks import Dampening
from .io.kroutes import (
    RTPROT_AIOBFD,
    Message,
    NextHop,
    RouteKey,
    RouteSeen,
    RouteSocket,
    key_of,
)
from .io.netlink import DumpDone, NetlinkError
from .protocol.events import Event, SessionRemoved, StateChanged
from .protocol.packet import State
from .protocol.registry import PeerKey

log = logging.getLogger("aiobfd.routes")

#: Route changes sent per turn of the event loop at most; the rest follow on the next turns.
ROUTES_PER_TURN = 64
#: Requests remembered for the refusals that may come back (the oldest are forgotten).
PENDING_MAX = 1024
#: After the kernel's send buffer was full, try again this much later (seconds).
RETRY_S = 0.05


class RouteSink(Protocol):
    """What :class:`KernelRoutes` sends to: :class:`aiobfd.io.kroutes.RouteSocket` or a fake."""

    lost: int

    def fileno(self) -> int: ...
    def add(self, key: RouteKey, nexthops: tuple[NextHop, ...]) -> int: ...
    def replace(self, key: RouteKey, nexthops: tuple[NextHop, ...]) -> int: ...
    def delete(self, key: RouteKey) -> int: ...
    def dump(self, family: int) -> int: ...
    def read(self) -> list[Message]: ...
    def close(self) -> None: ...


@dataclass(eq=False, slots=True)
class _Hop:
    """A next hop: the sessions to it that are Up, and whether its routes use it."""

    name: str
    """``PeerSpec.display_remote()`` of its sessions."""
    gateway: NextHop
    up: set[PeerKey] = field(default_factory=set)
    usable: bool = False
    """In its routes: a session is Up and dampening has let it back."""
    penalty: float = 0.0
    penalty_at: float = 0.0
    held: asyncio.TimerHandle | None = None
    """A dampened Up waiting to be let back."""
    routes: list[_Route] = field(default_factory=list)


@dataclass(eq=False, slots=True)
class _Route:
    spec: RouteSpec
    key: RouteKey
    hops: tuple[_Hop, ...] = ()
    installed: tuple[NextHop, ...] | None = None
    """The next hops this process last put there (None: it has put nothing)."""
    present: bool = False
    """A route of aiobfd's protocol is at ``key`` (installed, or found by a dump)."""
    conflict: int | None = None
    """The protocol of another's route at ``key``: left alone (-1: unknown)."""
    ready: bool = False
    """Its family's table has been dumped: installs may begin."""


@dataclass(frozen=True, slots=True)
class _Request:
    route: _Route
    what: str
    installed: tuple[NextHop, ...] | None
    present: bool


class KernelRoutes:
    """Keeps the configured routes' next hops in step with their sessions.

    Built on the running loop after the engine has started; :meth:`configure`
    with the routes (at start and on every reload), :meth:`freeze` when a
    stop begins, :meth:`close` at the end.  ``sink`` makes the rtnetlink
    socket (a fake in tests); ``clock`` is the dampening's, in seconds.
    """

    def __init__(
        self,
        daemon: Daemon,
        *,
        dampening: Dampening | None = None,
        clock: Callable[[], float] = time.monotonic,
        sink: Callable[[], RouteSink] = RouteSocket,
    ) -> None:
        self._daemon = daemon
        self._dampening = dampening
        self._clock = clock
        self._make_sink = sink
        self._sink: RouteSink | None = None
        self._loop = asyncio.get_running_loop()
        self._routes: dict[RouteKey, _Route] = {}
        self._hops: dict[str, _Hop] = {}
        self._dirty: OrderedDict[RouteKey, _Route] = OrderedDict()
        self._flush_handle: asyncio.Handle | None = None
        self._pending: OrderedDict[int, _Request] = OrderedDict()
        self._dumps: dict[int, int] = {}
        """Sequence number -> family of the dumps under way."""
        self._dumped: set[int] = set()
        """Families whose tables have been dumped."""
        self._found: dict[RouteKey, tuple[bool, int | None]] = {}
        """What the dumps under way saw at the configured keys: ours, another's protocol."""
        self._lost_seen = 0
        self._frozen = False
        self.changes = 0
        """Route changes sent (adds, replaces, deletes)."""
        self.errors = 0
        """Changes the kernel refused."""
        daemon.add_listener(self._on_event)

    # ------------------------------------------------------------ configuration

    def configure(self, specs: Sequence[RouteSpec]) -> None:
        """Run these routes from now on (at start, and at each reload)."""
        if self._frozen:
            return
        wanted: dict[RouteKey, RouteSpec] = {}
        for spec in specs:
            wanted[key_of(spec.prefix, spec.table, spec.metric)] = spec
        for key, route in list(self._routes.items()):
            if key not in wanted:
                del self._routes[key]
                self._dirty.pop(key, None)
                if route.present and route.conflict is None and not route.spec.persist:
                    self._send(route, "delete", None)
                elif route.present:
                    log.info("route %s: no longer configured, left in place (persist)", key)
        self._rebuild_hops(wanted)
        for key, spec in wanted.items():
            route = self._routes.get(key) or _Route(spec, key, ready=key.family in self._dumped)
            self._routes[key] = route
            route.spec = spec
            route.hops = tuple(self._hops[name] for name in spec.nexthops)
            for hop in route.hops:
                hop.routes.append(route)
            self._dirty[key] = route
        if self._routes and self._sink is None:
            self._open()
        if self._sink is not None:
            for family in sorted({key.family for key in self._routes} - self._dumped):
                if family not in self._dumps.values():
                    self._dump(family)
        self._flush()

    def _rebuild_hops(self, wanted: dict[RouteKey, RouteSpec]) -> None:
        names = {name for spec in wanted.values() for name in spec.nexthops}
        for name, hop in list(self._hops.items()):
            hop.routes.clear()
            if name not in names:
                if hop.held is not None:
                    hop.held.cancel()
                del self._hops[name]
        peers: dict[str, list[Peer]] = {}
        for peer in self._daemon.peers.values():
            peers.setdefault(peer.spec.display_remote(), []).append(peer)
        for name in names:
            found = peers.get(name, [])
            scope = found[0].spec.scope if found else 0
            gateway = NextHop(name.partition("%")[0], scope)
            up = {p.spec.key for p in found if p.session.state is State.UP}
            old = self._hops.get(name)
            if old is None:
                self._hops[name] = _Hop(name, gateway, up, usable=bool(up))
                continue
            hop = old
            hop.gateway = gateway
            hop.up = up
            if not up:
                hop.usable = False
                if hop.held is not None:
                    hop.held.cancel()
                    hop.held = None
            elif hop.held is None:
                hop.usable = True

    def _open(self) -> None:
        sink = self._make_sink()
        self._sink = sink
        fd = sink.fileno()
        if fd >= 0:
            self._loop.add_reader(fd, self._on_readable)

    def _dump(self, family: int) -> None:
        assert self._sink is not None
        try:
            seq = self._sink.dump(family)
        except OSError as exc:
            log.error("routes: cannot read the routing tables: %s", exc)
            self._loop.call_later(RETRY_S, self._redump)
            return
        self._dumps[seq] = family
        for key in self._routes:
            if key.family == family:
                self._found.pop(key, None)

    def _redump(self) -> None:
        if self._sink is None or self._frozen:
            return
        for family in {key.family for key in self._routes}:
            if family not in self._dumps.values():
                self._dump(family)

    # ------------------------------------------------------------ session events

    def _on_event(self, peer: Peer, event: Event) -> None:
        if self._frozen:
            return
        hop = self._hops.get(peer.spec.display_remote())
        if hop is None:
            return
        if isinstance(event, StateChanged):
            lost_up = event.old_state is State.UP
            if event.new_state is State.UP:
                hop.up.add(peer.spec.key)
            else:
                hop.up.discard(peer.spec.key)
        elif isinstance(event, SessionRemoved):
            lost_up = False
            hop.up.discard(peer.spec.key)
        else:
            return
        self._hop_changed(hop, lost_up)

    def _hop_changed(self, hop: _Hop, lost_up: bool) -> None:
        damp = self._dampening
        if damp is not None:
            now = self._clock()
            hop.penalty = damp.decayed(hop.penalty, now - hop.penalty_at)
            hop.penalty_at = now
            if lost_up:
                hop.penalty += damp.penalty
        if not hop.up:
            if hop.held is not None:
                hop.held.cancel()
                hop.held = None
            if hop.usable:
                hop.usable = False
                self._mark(hop)
            return
        if hop.usable or hop.held is not None:
            return
        hold = damp.hold_time(hop.penalty) if damp is not None else 0.0
        if hold > 0:
            log.info(
                "next hop %s flapping (penalty %.0f): back in its routes after %.1f s",
                hop.name,
                hop.penalty,
                hold,
            )
            hop.held = self._loop.call_later(hold, self._release, hop)
            return
        hop.usable = True
        self._mark(hop)

    def _release(self, hop: _Hop) -> None:
        hop.held = None
        if hop.up and not self._frozen and self._hops.get(hop.name) is hop:
            hop.usable = True
            self._mark(hop)

    def _mark(self, hop: _Hop) -> None:
        for route in hop.routes:
            self._dirty[route.key] = route
        self._flush()

    # ------------------------------------------------------------ the kernel

    def _flush(self) -> None:
        """Bring up to :data:`ROUTES_PER_TURN` dirty routes to their next hops."""
        self._flush_handle = None
        if self._frozen or self._sink is None:
            return
        for _ in range(min(ROUTES_PER_TURN, len(self._dirty))):
            _, route = self._dirty.popitem(last=False)
            if not self._sync(route):
                break
        if self._dirty and self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush)

    def _sync(self, route: _Route) -> bool:
        """Send what brings ``route`` to its next hops; False when the kernel's
        buffer is full (the route is tried again shortly)."""
        if not route.ready or route.conflict is not None:
            return True
        want = tuple(hop.gateway for hop in route.hops if hop.usable)
        if not want:
            if route.spec.keep_last or not route.present:
                return True
            return self._send(route, "delete", None)
        if want == route.installed and route.present:
            return True
        return self._send(route, "replace" if route.present else "add", want)

    def _send(self, route: _Route, what: str, hops: tuple[NextHop, ...] | None) -> bool:
        sink = self._sink
        assert sink is not None
        try:
            if hops is None:
                seq = sink.delete(route.key)
            elif what == "add":
                seq = sink.add(route.key, hops)
            else:
                seq = sink.replace(route.key, hops)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ENOBUFS):
                log.error("route %s: %s failed: %s", route.key, what, exc)
                return True
            self._dirty[route.key] = route
            if self._flush_handle is None:
                self._flush_handle = self._loop.call_later(RETRY_S, self._flush)
            return False
        self._pending[seq] = _Request(route, what, route.installed, route.present)
        if len(self._pending) > PENDING_MAX:
            self._pending.popitem(last=False)
        route.installed = hops
        route.present = hops is not None
        self.changes += 1
        if hops is None:
            log.info("route %s: deleted", route.key)
        else:
            log.info("route %s: next hops %s", route.key, ", ".join(map(str, hops)))
        return True

    def _on_readable(self) -> None:
        sink = self._sink
        if sink is None:
            return
        try:
            messages = sink.read()
        except OSError as exc:
            log.error("routes: reading the netlink socket failed: %s", exc)
            return
        self.handle(messages)
        if sink.lost != self._lost_seen:
            self._lost_seen = sink.lost
            log.warning("routes: the kernel dropped route events; reading the tables again")
            self._redump()

    def handle(self, messages: Sequence[Message]) -> None:
        """What came back from the kernel: refusals, dumps, route events."""
        for msg in messages:
            if isinstance(msg, NetlinkError):
                self._refused(msg)
            elif isinstance(msg, DumpDone):
                self._dump_done(msg.seq)
            elif isinstance(msg, RouteSeen):
                self._seen(msg)
        self._flush()

    def _refused(self, err: NetlinkError) -> None:
        family = self._dumps.pop(err.seq, None)
        if family is not None:
            log.error("routes: the kernel refused a dump of its tables: %s", err.message)
            self._dump_done_family(family)
            return
        request = self._pending.pop(err.seq, None)
        if request is None:
            return
        route = request.route
        self.errors += 1
        if self._routes.get(route.key) is not route:
            if err.errno != errno.ESRCH:
                log.error("route %s: %s refused: %s", route.key, request.what, err.message)
            return
        route.installed, route.present = request.installed, request.present
        if err.errno == errno.EEXIST:
            route.conflict = -1
            log.warning(
                "route %s: another route is there already (not aiobfd's): left alone",
                route.key,
            )
        elif err.errno == errno.ESRCH and request.what == "delete":
            route.present = False
        elif err.errno == errno.EPERM:
            log.error(
                "route %s: %s refused: %s (changing routes needs CAP_NET_ADMIN; "
                "systemd: contrib/aiobfd-routes.conf)",
                route.key,
                request.what,
                err.message,
            )
        else:
            log.error("route %s: %s refused: %s", route.key, request.what, err.message)

    def _seen(self, seen: RouteSeen) -> None:
        route = self._routes.get(seen.key)
        if route is None:
            return
        ours = seen.protocol == RTPROT_AIOBFD
        if seen.dump and seen.seq in self._dumps:
            was_ours, other = self._found.get(seen.key, (False, None))
            self._found[seen.key] = (was_ours or ours, other if ours else seen.protocol)
            return
        if ours:
            return  # our own changes (and their echoes) are known already
        if seen.deleted:
            if route.conflict is not None:
                log.info(
                    "route %s: the route of protocol %d is gone: aiobfd's takes its place",
                    seen.key,
                    seen.protocol,
                )
                route.conflict = None
                self._dirty[route.key] = route
            return
        if route.conflict != seen.protocol:
            self._conflict(route, seen.protocol)

    def _conflict(self, route: _Route, protocol: int) -> None:
        route.conflict = protocol
        route.present = False  # a replace of ours by another's leaves none of ours
        route.installed = None
        log.warning(
            "route %s: a route of protocol %d (not aiobfd's %d) is there: left alone",
            route.key,
            protocol,
            RTPROT_AIOBFD,
        )

    def _dump_done(self, seq: int) -> None:
        family = self._dumps.pop(seq, None)
        if family is not None:
            self._dump_done_family(family)

    def _dump_done_family(self, family: int) -> None:
        self._dumped.add(family)
        for key, route in self._routes.items():
            if key.family != family:
                continue
            ours, other = self._found.pop(key, (False, None))
            route.ready = True
            if other is not None:
                if route.conflict != other:
                    self._conflict(route, other)
                continue
            if route.conflict is not None:
                log.info("route %s: no other route there any more: aiobfd's takes its place", key)
            route.conflict = None
            if ours and not route.present:
                log.info("route %s: found one of aiobfd's (an earlier run): taken over", key)
            route.present = ours or (route.present and route.installed is not None)
            self._dirty[key] = route

    # ------------------------------------------------------------ stop

    def freeze(self) -> None:
        """A stop begins: the sessions' AdminDown must not change the routes."""
        self._frozen = True
        for hop in self._hops.values():
            if hop.held is not None:
                hop.held.cancel()
                hop.held = None
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None

    def close(self) -> None:
        """Delete the routes aiobfd installed, except those with ``persist``; close."""
        self.freeze()
        self._daemon.remove_listener(self._on_event)
        sink = self._sink
        if sink is None:
            return
        removed = kept = 0
        for route in self._routes.values():
            if not route.present or route.conflict is not None:
                continue
            if route.spec.persist:
                kept += 1
                continue
            try:
                seq = sink.delete(route.key)
            except OSError as exc:
                log.error("route %s: delete failed: %s", route.key, exc)
                continue
            self._pending[seq] = _Request(route, "delete", route.installed, route.present)
            route.present = False
            removed += 1
        with contextlib.suppress(OSError):  # the kernel answered inside send
            for msg in sink.read():
                if isinstance(msg, NetlinkError):
                    self._refused(msg)
        if removed or kept:
            log.info("routes: %d deleted, %d left in place (persist)", removed, kept)
        fd = sink.fileno()
        if fd >= 0:
            self._loop.remove_reader(fd)
        sink.close()
        self._sink = None

    # ------------------------------------------------------------ status

    def status(self) -> list[dict[str, object]]:
        """Each route: its key, the next hops installed and whether it is in conflict."""
        out: list[dict[str, object]] = []
        for route in self._routes.values():
            out.append(
                {
                    "prefix": str(route.spec.prefix),
                    "table": route.key.table,
                    "metric": route.key.metric,
                    "installed": [str(h) for h in route.installed or ()] if route.present else [],
                    "usable": [h.name for h in route.hops if h.usable],
                    "conflict": route.conflict,
                }
            )
        return out
