"""aiobfd.routes: next hops follow their sessions, with a fake netlink sink.

A fake daemon (listeners and peers) and a fake sink that records every
request and plays the kernel's answers back; time for the dampening is a
fake clock.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, cast

from aiobfd.config import PeerSpec, RouteSpec
from aiobfd.engine import Daemon, Peer
from aiobfd.hooks import Dampening
from aiobfd.io.kroutes import RTPROT_AIOBFD, Message, NextHop, RouteKey, RouteSeen
from aiobfd.io.netlink import DumpDone, NetlinkError
from aiobfd.protocol.events import Event, SessionRemoved, StateChanged
from aiobfd.protocol.packet import Diag, State
from aiobfd.routes import ROUTES_PER_TURN, KernelRoutes

GW1, GW2 = "192.0.2.1", "192.0.2.5"
DEFAULT = RouteKey(socket.AF_INET, "0.0.0.0", 0, 254, 0)


@dataclass
class FakeSink:
    requests: list[tuple[str, Any, Any]] = field(default_factory=list)
    answers: list[Message] = field(default_factory=list)
    lost: int = 0
    closed: bool = False
    seq: int = 0

    def fileno(self) -> int:
        return -1

    def _note(self, what: str, key: Any, hops: Any = None) -> int:
        self.seq += 1
        self.requests.append((what, key, hops))
        return self.seq

    def add(self, key: RouteKey, nexthops: tuple[NextHop, ...]) -> int:
        return self._note("add", key, tuple(h.gateway for h in nexthops))

    def replace(self, key: RouteKey, nexthops: tuple[NextHop, ...]) -> int:
        return self._note("replace", key, tuple(h.gateway for h in nexthops))

    def delete(self, key: RouteKey) -> int:
        return self._note("delete", key)

    def dump(self, family: int) -> int:
        return self._note("dump", family)

    def read(self) -> list[Message]:
        out, self.answers = self.answers, []
        return out

    def close(self) -> None:
        self.closed = True

    def take(self) -> list[tuple[str, Any, Any]]:
        out, self.requests = self.requests, []
        return out


class FakeDaemon:
    def __init__(self, remotes: list[str]) -> None:
        self.listeners: list[Any] = []
        self.peers: dict[Any, Any] = {}
        for remote in remotes:
            spec = PeerSpec(remote, "192.0.2.10", socket.AF_INET)
            self.peers[spec.key] = SimpleNamespace(
                spec=spec, session=SimpleNamespace(state=State.DOWN)
            )

    def add_listener(self, listener: Any) -> None:
        self.listeners.append(listener)

    def remove_listener(self, listener: Any) -> None:
        self.listeners.remove(listener)

    def peer(self, remote: str) -> Any:
        return next(p for p in self.peers.values() if p.spec.remote == remote)

    def change(self, remote: str, new: State) -> None:
        peer = self.peer(remote)
        old = peer.session.state
        peer.session.state = new
        self.emit(
            peer, StateChanged(old, new, Diag.NO_DIAGNOSTIC, new, Diag.NO_DIAGNOSTIC, 0, None, 0)
        )

    def emit(self, peer: Any, event: Event) -> None:
        for listener in list(self.listeners):
            listener(cast(Peer, peer), event)


def route(*hops: str, **kw: Any) -> RouteSpec:
    return RouteSpec(ipaddress.ip_network(kw.pop("prefix", "0.0.0.0/0")), hops, **kw)


def make(
    specs: list[RouteSpec], remotes: tuple[str, ...] = (GW1, GW2), **kw: Any
) -> tuple[KernelRoutes, FakeDaemon, FakeSink]:
    daemon = FakeDaemon(list(remotes))
    sink = FakeSink()
    routes = KernelRoutes(cast(Daemon, daemon), sink=lambda: sink, **kw)
    routes.configure(specs)
    [(what, family, _)] = sink.take()
    assert (what, family) == ("dump", socket.AF_INET)
    routes.handle([DumpDone(sink.seq)])
    return routes, daemon, sink


async def test_hops_follow_sessions() -> None:
    routes, daemon, sink = make([route(GW1, GW2)])
    assert sink.take() == []  # nothing Up: no route
    daemon.change(GW1, State.UP)
    assert sink.take() == [("add", DEFAULT, (GW1,))]
    daemon.change(GW2, State.UP)
    assert sink.take() == [("replace", DEFAULT, (GW1, GW2))]
    daemon.change(GW1, State.DOWN)
    assert sink.take() == [("replace", DEFAULT, (GW2,))]
    daemon.change(GW1, State.UP)
    assert sink.take() == [("replace", DEFAULT, (GW1, GW2))]
    routes.close()
    assert sink.take() == [("delete", DEFAULT, None)]
    assert sink.closed


async def test_keep_last() -> None:
    _, daemon, sink = make([route(GW1, GW2)])
    daemon.change(GW1, State.UP)
    daemon.change(GW2, State.UP)
    daemon.change(GW1, State.DOWN)
    sink.take()
    daemon.change(GW2, State.DOWN)  # the last one: kept
    assert sink.take() == []
    daemon.change(GW1, State.UP)
    assert sink.take() == [("replace", DEFAULT, (GW1,))]


async def test_keep_last_false_deletes() -> None:
    _, daemon, sink = make([route(GW1, GW2, keep_last=False)])
    daemon.change(GW1, State.UP)
    daemon.change(GW1, State.ADMIN_DOWN)
    assert sink.take() == [("add", DEFAULT, (GW1,)), ("delete", DEFAULT, None)]
    daemon.change(GW2, State.UP)
    assert sink.take() == [("add", DEFAULT, (GW2,))]


async def test_persist_keeps_on_stop_and_freeze_ignores_admin_down() -> None:
    routes, daemon, sink = make([route(GW1, GW2, persist=True)])
    daemon.change(GW1, State.UP)
    daemon.change(GW2, State.UP)
    sink.take()
    routes.freeze()  # a stop: AdminDown everywhere changes nothing
    daemon.change(GW1, State.ADMIN_DOWN)
    daemon.change(GW2, State.ADMIN_DOWN)
    routes.close()
    assert sink.take() == []


async def test_session_removed_takes_the_hop_out() -> None:
    _, daemon, sink = make([route(GW1, GW2)])
    daemon.change(GW1, State.UP)
    daemon.change(GW2, State.UP)
    sink.take()
    daemon.emit(daemon.peer(GW2), SessionRemoved(0))
    assert sink.take() == [("replace", DEFAULT, (GW1,))]


async def test_other_hops_and_events_are_ignored() -> None:
    _, daemon, sink = make([route(GW1)], remotes=(GW1, GW2))
    daemon.change(GW2, State.UP)
    assert sink.take() == []


async def test_conflict_found_by_dump_is_left_alone() -> None:
    daemon = FakeDaemon([GW1, GW2])
    sink = FakeSink()
    routes = KernelRoutes(cast(Daemon, daemon), sink=lambda: sink)
    routes.configure([route(GW1, GW2)])
    daemon.change(GW1, State.UP)  # before the dump's end: waits
    assert [r[0] for r in sink.take()] == ["dump"]
    routes.handle([RouteSeen(1, DEFAULT, 4, dump=True), DumpDone(1)])
    assert sink.take() == []
    assert routes.status()[0]["conflict"] == 4
    daemon.change(GW2, State.UP)
    assert sink.take() == []
    # The other route goes: ours takes its place.
    routes.handle([RouteSeen(77, DEFAULT, 4, deleted=True)])
    assert sink.take() == [("add", DEFAULT, (GW1, GW2))]
    # Someone replaces it with theirs: left alone, and not deleted at stop.
    routes.handle([RouteSeen(78, DEFAULT, 3)])
    daemon.change(GW1, State.DOWN)
    routes.close()
    assert sink.take() == []


async def test_refused_add_is_a_conflict() -> None:
    routes, daemon, sink = make([route(GW1, GW2)])
    daemon.change(GW1, State.UP)
    assert sink.take() == [("add", DEFAULT, (GW1,))]
    routes.handle([NetlinkError(sink.seq, errno.EEXIST)])
    assert routes.status()[0]["conflict"] == -1
    daemon.change(GW2, State.UP)
    assert sink.take() == []


async def test_earlier_route_of_ours_is_taken_over() -> None:
    daemon = FakeDaemon([GW1, GW2])
    sink = FakeSink()
    routes = KernelRoutes(cast(Daemon, daemon), sink=lambda: sink)
    routes.configure([route(GW1, GW2)])
    sink.take()
    routes.handle([RouteSeen(1, DEFAULT, RTPROT_AIOBFD, dump=True), DumpDone(1)])
    assert sink.take() == []  # nothing Up yet: left as it was
    daemon.change(GW2, State.UP)
    assert sink.take() == [("replace", DEFAULT, (GW2,))]


async def test_dampening_holds_an_up_back() -> None:
    now = [0.0]
    damp = Dampening(penalty=1000, suppress=500, reuse=400, half_life_s=1, max_hold_s=0.05)
    _, daemon, sink = make([route(GW1, GW2)], dampening=damp, clock=lambda: now[0])
    daemon.change(GW1, State.UP)
    daemon.change(GW2, State.UP)
    daemon.change(GW1, State.DOWN)  # penalty 1000 > suppress
    sink.take()
    daemon.change(GW1, State.UP)
    assert sink.take() == []  # held back
    await asyncio.sleep(0.08)
    assert sink.take() == [("replace", DEFAULT, (GW1, GW2))]
    # A flap while held: the Up never reaches the route.
    daemon.change(GW1, State.DOWN)
    assert sink.take() == [("replace", DEFAULT, (GW2,))]
    daemon.change(GW1, State.UP)
    daemon.change(GW1, State.DOWN)
    await asyncio.sleep(0.08)
    assert sink.take() == []


async def test_reload_drops_and_changes_routes() -> None:
    other = RouteKey(socket.AF_INET, "203.0.113.0", 24, 254, 0)
    routes, daemon, sink = make([route(GW1, GW2), route(GW1, prefix="203.0.113.0/24")])
    daemon.change(GW1, State.UP)
    daemon.change(GW2, State.UP)
    sink.take()
    routes.configure([route(GW2, prefix="203.0.113.0/24")])
    assert sink.take() == [("delete", DEFAULT, None), ("replace", other, (GW2,))]
    routes.configure([route(GW2, prefix="203.0.113.0/24", persist=True)])
    routes.configure([])
    assert sink.take() == []  # persist: left in place


async def test_bounded_work_per_turn() -> None:
    many = [route(GW1, prefix=f"203.0.113.{i}/32") for i in range(ROUTES_PER_TURN + 10)]
    _, daemon, sink = make(many)
    daemon.change(GW1, State.UP)
    assert len(sink.take()) == ROUTES_PER_TURN
    await asyncio.sleep(0)
    assert len(sink.take()) == 10


async def test_reload_reads_session_states() -> None:
    routes, daemon, sink = make([route(GW1)])
    daemon.peer(GW2).session.state = State.UP
    routes.configure([route(GW1, GW2)])
    assert sink.take() == [("add", DEFAULT, (GW2,))]
