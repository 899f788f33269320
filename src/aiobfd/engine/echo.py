"""Unaffiliated BFD Echo (RFC 9747): echo sessions' sockets, paths and packets.

An echo session (:class:`~aiobfd.protocol.echo.EchoSession`) is a
:class:`~.peer.Peer` of the daemon like any other: it is in ``Daemon.peers``,
in the one wake-up schedule (:mod:`.wakeup` sends its periodic packets and
runs its Detection Time), and its events go through the reporter to the log,
hooks, metrics and the control socket.  What differs is here:

* **Sending.**  An echo packet is addressed to this host and must reach the
  gateway's link-layer address: it goes out on the daemon's one packet socket
  (:func:`aiobfd.io.echo.open_packet_socket`, CAP_NET_RAW), framed with IP
  and UDP headers by the session (:class:`aiobfd.io.echo.EchoFrame`); the
  peer's ``sock`` is that socket and its ``dest`` the interface and the
  gateway's address.
* **The path.**  Where the gateway is comes from the kernel over rtnetlink
  (:mod:`aiobfd.io.netlink`), never by waiting: the route to the gateway
  (it must be on a directly connected network: the route's output interface,
  no ``via``) and its neighbour entry.  Neighbour changes are heard as they
  happen (a new link-layer address after a failover is used at once).  While
  the address is not known, the session's packets go as plain UDP
  datagrams to the gateway (the peer's ``sock`` is then a UDP socket): the
  kernel resolves the address (ARP, Neighbour Discovery) to send them, and
  its neighbour entry, heard here, switches the session to the packet socket.
  While a session is not Up its path is asked again every
  :data:`RESOLVE_INTERVAL_US`; then, if the entry is not confirmed
  (reachable, permanent), one plain datagram makes the kernel confirm it.
* **Receiving.**  What comes back arrives on a UDP socket of the local
  address, port 3785 (one per address), read as soon as the loop sees it:
  decoded, matched to its session by My Discriminator, its source (this
  host's own address) and its TTL (255 less the gateway's hop) checked, and
  given to the session.  Drops are counted as for Control packets.

Nothing here blocks: netlink answers are in the socket by the time the
query's send returns, and read at once; events are read when the loop says
so.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from ..config import PeerSpec
from ..io.echo import (
    ECHO_PORT,
    EchoFrame,
    accepts_local,
    link_address,
    open_echo_receive_socket,
    open_packet_socket,
    open_probe_socket,
)
from ..io.netlink import (
    NUD_CONFIRMED,
    RTN_LOCAL,
    RTN_UNICAST,
    Neighbour,
    NetlinkError,
    Route,
    RouteNetlink,
)
from ..io.sockets import ANCILLARY_SIZE, received_ttl, sockaddr
from ..protocol.constants import SOURCE_PORT_MAX, SOURCE_PORT_MIN, US_PER_SECOND
from ..protocol.echo import EchoSession
from ..protocol.errors import DropReason, PacketError
from ..protocol.packet import State, decode, encode
from ..protocol.registry import PeerKey, SessionTable
from ..protocol.timers import RandomSource, SharedInstants
from .peer import Peer
from .reporting import Reporter

if TYPE_CHECKING:
    from ..io.sockets import SockAddr

log = logging.getLogger("aiobfd")

#: A session that is not Up asks for its path again this often (route and
#: neighbour entry; a plain datagram then confirms an unconfirmed entry).
RESOLVE_INTERVAL_US = 5 * US_PER_SECOND
#: How often the room looks for such sessions.
REFRESH_S = 1.0
#: Datagrams read from an echo socket per readiness before yielding.
RECV_BATCH = 64
#: An echo packet is a Control packet (at most 255 octets).
RECV_SIZE = 256


@dataclass(eq=False, slots=True)
class EchoPath:
    """Where an echo session's packets go: the gateway's interface and address."""

    frame: EchoFrame
    """The IP and UDP headers of the session's packets."""
    ifindex: int = 0
    ifname: str = ""
    lladdr: bytes | None = None
    """The gateway's link-layer address (None: not known; plain UDP meanwhile)."""
    confirmed: bool = False
    """The neighbour entry was reachable or permanent when last asked."""
    asked_at: int = 0
    """When the route was last asked (protocol clock, µs)."""
    problem: str = ""
    """What is wrong with the path, as last logged (each is logged once)."""


@dataclass(eq=False, slots=True)
class EchoReceiver:
    """The UDP socket on a local address and port 3785 where echo packets come back."""

    sock: socket.socket
    local: str
    scope: int
    users: int = 0


@dataclass(slots=True)
class _Asked:
    key: PeerKey
    what: str  # "route" or "neighbour"


@dataclass(eq=False, slots=True)
class _Sockets:
    """What the room opens on its first session (none without echo sessions)."""

    packet: socket.socket
    netlink: RouteNetlink
    probes: dict[tuple[str, int], socket.socket] = field(default_factory=dict)


class Echo:
    """The unaffiliated echo sessions of a daemon (see the module docstring)."""

    def __init__(
        self,
        table: SessionTable,
        reporter: Reporter,
        clock: Callable[[], int],
        flush: Callable[[Peer, int], None],
        rng: RandomSource,
        session_rng: RandomSource,
        *,
        ttl_check: bool = True,
    ) -> None:
        self._table = table
        self._reporter = reporter
        self._clock = clock
        self._flush = flush
        self._rng = rng
        """Discriminators and source ports."""
        self._session_rng = session_rng
        """Jitter."""
        self.ttl_check = ttl_check
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sockets: _Sockets | None = None
        self._receivers: dict[tuple[str, int], EchoReceiver] = {}
        self._by_discr: dict[int, Peer] = {}
        self._by_key: dict[PeerKey, Peer] = {}
        """The echo sessions (also in the daemon's peers once added there)."""
        self._paths: dict[PeerKey, EchoPath] = {}
        self._watch: dict[tuple[str, int], set[PeerKey]] = {}
        """Neighbour (address, interface) -> the sessions whose gateway it is."""
        self._asked: dict[int, _Asked] = {}
        self._refresh: asyncio.TimerHandle | None = None
        self.receive_errors = 0

    # ------------------------------------------------------------- lifecycle

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def close(self) -> None:
        """Release every socket and timer (the sessions are the daemon's to forget)."""
        for receiver in self._receivers.values():
            self._unwatch(receiver.sock)
        self._receivers.clear()
        if self._refresh is not None:
            self._refresh.cancel()
            self._refresh = None
        sockets = self._sockets
        if sockets is not None:
            self._unwatch(sockets.netlink.sock)
            sockets.packet.close()
            for probe in sockets.probes.values():
                probe.close()
            self._sockets = None
        self._by_discr.clear()
        self._by_key.clear()
        self._paths.clear()
        self._watch.clear()
        self._asked.clear()

    def _unwatch(self, sock: socket.socket) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed() and sock.fileno() != -1:
            loop.remove_reader(sock.fileno())
        sock.close()

    def path_of(self, peer: Peer) -> EchoPath | None:
        """The path of an echo session (for display), None for other sessions."""
        return self._paths.get(peer.spec.key) if self._by_key.get(peer.spec.key) is peer else None

    # ------------------------------------------------------------- sessions

    def add(
        self,
        spec: PeerSpec,
        now: int,
        *,
        align_tx: bool = False,
        tx_instants: SharedInstants | None = None,
    ) -> Peer:
        """Create the echo session of ``spec`` (OSError when a socket cannot be opened;
        :class:`~aiobfd.io.echo.EchoCapabilityError` without CAP_NET_RAW)."""
        config = spec.echo
        assert config is not None, "not an echo session"
        sockets = self._open(spec)
        key = (spec.local, spec.scope)
        receiver = self._receivers.get(key)
        if receiver is None:
            rsock = open_echo_receive_socket(spec.family, spec.local, spec.scope)
            receiver = EchoReceiver(rsock, spec.local, spec.scope)
            assert self._loop is not None
            self._loop.add_reader(rsock.fileno(), self._on_readable, receiver)
            self._receivers[key] = receiver
        try:
            probe = self._probe_socket(sockets, spec)
        except OSError:
            self._release_receiver(receiver)
            raise
        discr = self._new_discriminator()
        session = EchoSession(
            config, discr, now=now, rng=self._session_rng, key=spec.key, align_tx=align_tx
        )
        session.tx_instants = tx_instants
        if spec.shutdown:
            session.disable(now)
        # EchoSession offers what the engine and its listeners read of a
        # Session: the wake-up, the reporter, hooks, metrics, status.
        peer = Peer(
            spec,
            session,
            probe,
            sockaddr(spec.family, spec.remote, ECHO_PORT, spec.scope),
        )
        port = SOURCE_PORT_MIN + self._rng.getrandbits(16) % (SOURCE_PORT_MAX - SOURCE_PORT_MIN + 1)
        self._paths[spec.key] = EchoPath(EchoFrame(spec.family, spec.local, port))
        self._by_discr[discr] = peer
        self._by_key[spec.key] = peer
        receiver.users += 1
        self._resolve(peer, now)
        self._arm_refresh()
        return peer

    def remove(self, peer: Peer) -> None:
        """Forget an echo session's path and sockets (its session is the daemon's)."""
        session = peer.session
        if self._by_discr.get(session.local_discr) is not peer:
            return
        del self._by_discr[session.local_discr]
        key = peer.spec.key
        self._by_key.pop(key, None)
        path = self._paths.pop(key, None)
        if path is not None:
            self._unwatch_neighbour(key, path)
        peer.timer_at = None  # its schedule entries are stale now
        receiver = self._receivers.get((peer.spec.local, peer.spec.scope))
        if receiver is not None:
            self._release_receiver(receiver)

    def change(self, peer: Peer, spec: PeerSpec, now: int) -> None:
        """A reload: the echo interval, Detect Mult, hooks or shutdown changed in place."""
        assert spec.echo is not None
        session = self._session(peer)
        peer.spec = spec
        peer.runtime = False
        session.set_config(spec.echo, now)
        if spec.shutdown and session.state is not State.ADMIN_DOWN:
            session.disable(now)
        elif not spec.shutdown and session.state is State.ADMIN_DOWN:
            session.enable(now)

    @staticmethod
    def _session(peer: Peer) -> EchoSession:
        session = peer.session
        assert isinstance(session, EchoSession)
        return session

    def _release_receiver(self, receiver: EchoReceiver) -> None:
        receiver.users -= 1
        if receiver.users <= 0:
            self._receivers.pop((receiver.local, receiver.scope), None)
            self._unwatch(receiver.sock)

    def _open(self, spec: PeerSpec) -> _Sockets:
        sockets = self._sockets
        if sockets is None:
            packet = open_packet_socket()
            try:
                netlink = RouteNetlink(neighbours=True)
            except BaseException:
                packet.close()
                raise
            assert self._loop is not None
            self._loop.add_reader(netlink.fileno(), self._read_netlink)
            self._sockets = sockets = _Sockets(packet, netlink)
        return sockets

    def _probe_socket(self, sockets: _Sockets, spec: PeerSpec) -> socket.socket:
        key = (spec.local, spec.scope)
        probe = sockets.probes.get(key)
        if probe is None:
            probe = sockets.probes[key] = open_probe_socket(spec.family, spec.local, spec.scope)
        return probe

    def _new_discriminator(self) -> int:
        while True:
            discr = self._rng.getrandbits(32)
            if (
                discr
                and discr not in self._by_discr
                and self._table.by_discriminator(discr) is None
            ):
                return discr

    # ----------------------------------------------------------------- paths

    def _resolve(self, peer: Peer, now: int) -> None:
        """Ask the kernel for the route to the gateway (its answer follows at once)."""
        path = self._paths[peer.spec.key]
        path.asked_at = now
        self._ask(peer, "route")
        self._read_netlink()

    def _ask(self, peer: Peer, what: str) -> None:
        sockets = self._sockets
        if sockets is None:
            return
        remote = peer.spec.remote
        try:
            if what == "route":
                seq = sockets.netlink.ask_route(remote)
            else:
                seq = sockets.netlink.ask_neighbour(remote, self._paths[peer.spec.key].ifindex)
        except OSError as exc:
            log.debug("echo toward %s: %s query failed: %s", remote, what, exc)
            return
        asked = self._asked
        asked[seq] = _Asked(peer.spec.key, what)
        while len(asked) > 4 * len(self._paths) + 16:
            del asked[next(iter(asked))]

    def _read_netlink(self) -> None:
        sockets = self._sockets
        if sockets is None:
            return
        try:
            answers = sockets.netlink.read()
        except OSError as exc:
            log.warning("echo: reading rtnetlink failed: %s", exc)
            return
        for answer in answers:
            if answer.seq == 0:
                if isinstance(answer, Neighbour):
                    self._neighbour_event(answer)
                continue
            asked = self._asked.pop(answer.seq, None)
            if asked is None:
                continue
            peer = self._by_key.get(asked.key)
            path = self._paths.get(asked.key)
            if peer is None or path is None:
                continue
            if isinstance(answer, Route):
                self._route(peer, path, answer)
            elif isinstance(answer, Neighbour):
                self._neighbour(peer, path, answer, asked=True)
            elif isinstance(answer, NetlinkError):
                if asked.what == "route":
                    self._problem(peer, path, f"no route to it ({answer.message})")
                else:
                    self._no_neighbour(peer, path)

    def _route(self, peer: Peer, path: EchoPath, route: Route) -> None:
        remote = peer.spec.remote
        if route.kind == RTN_LOCAL:
            self._problem(peer, path, "it is an address of this host")
            return
        if route.kind != RTN_UNICAST or not route.ifindex:
            self._problem(peer, path, "no route to it")
            return
        if route.gateway is not None and route.gateway != remote:
            self._problem(
                peer,
                path,
                f"it is not on a directly connected network (the route goes via {route.gateway})",
            )
            return
        if route.ifindex != path.ifindex:
            try:
                ifname = socket.if_indextoname(route.ifindex)
            except OSError:
                return  # gone meanwhile: the next refresh asks again
            self._unwatch_neighbour(peer.spec.key, path)
            path.ifindex, path.ifname, path.lladdr, path.confirmed = (
                route.ifindex,
                ifname,
                None,
                False,
            )
            self._watch.setdefault((remote, route.ifindex), set()).add(peer.spec.key)
            self._use_path(peer, path)
        if peer.spec.family == socket.AF_INET and accepts_local(path.ifname) is False:
            self._problem(
                peer,
                path,
                f"echo packets come back with this host's own address as their source, which "
                f"Linux drops unless net.ipv4.conf.{path.ifname}.accept_local is 1 "
                f"(sysctl -w net.ipv4.conf.{path.ifname}.accept_local=1)",
            )
        else:
            path.problem = ""
        self._ask(peer, "neighbour")

    def _neighbour_event(self, neighbour: Neighbour) -> None:
        keys = self._watch.get((neighbour.address, neighbour.ifindex))
        if not keys:
            return
        for key in list(keys):
            peer = self._by_key.get(key)
            path = self._paths.get(key)
            if peer is not None and path is not None:
                self._neighbour(peer, path, neighbour, asked=False)

    def _neighbour(self, peer: Peer, path: EchoPath, neighbour: Neighbour, *, asked: bool) -> None:
        if neighbour.ifindex != path.ifindex:
            return
        lladdr = neighbour.lladdr
        if neighbour.usable and lladdr is not None:
            path.confirmed = bool(neighbour.state & NUD_CONFIRMED)
            if lladdr != path.lladdr:
                old = path.lladdr
                path.lladdr = lladdr
                log.log(
                    logging.INFO if old is None else logging.WARNING,
                    "echo toward %s: gateway at %s on %s%s",
                    peer.spec.display_remote(),
                    _mac(lladdr),
                    path.ifname,
                    "" if old is None else f" (was {_mac(old)})",
                )
                self._use_path(peer, path)
        else:
            path.confirmed = False
        if asked and not path.confirmed and path.lladdr is not None:
            self._probe(peer)

    def _no_neighbour(self, peer: Peer, path: EchoPath) -> None:
        """The kernel has no entry: the session's own packets go as plain UDP
        while no address is known (they make the kernel resolve it); with one
        known, a single datagram asks the kernel to confirm it."""
        path.confirmed = False
        if path.lladdr is not None:
            self._probe(peer)

    def _use_path(self, peer: Peer, path: EchoPath) -> None:
        """Send the session's packets on the packet socket to the gateway's
        address, or as plain UDP datagrams to it while that is not known."""
        sockets = self._sockets
        session = self._session(peer)
        spec = peer.spec
        if sockets is not None and path.lladdr is not None and path.ifname:
            peer.sock = sockets.packet
            # A packet socket's address (Peer.dest is annotated for IP sockets).
            peer.dest = cast("SockAddr", link_address(path.ifname, spec.family, path.lladdr))
            session.set_frame(path.frame)
            if peer.timer_at is not None:  # running (not while being added)
                now = self._clock()
                session.path_changed(now)
                self._flush(peer, now)
        else:
            if sockets is not None:
                peer.sock = self._probe_socket(sockets, spec)
            peer.dest = sockaddr(spec.family, spec.remote, ECHO_PORT, spec.scope)
            session.set_frame(None)
        peer.connected = False

    def _unwatch_neighbour(self, key: PeerKey, path: EchoPath) -> None:
        if not path.ifindex:
            return
        remote = key.remote
        keys = self._watch.get((remote, path.ifindex))
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._watch[(remote, path.ifindex)]

    def _probe(self, peer: Peer) -> None:
        """One plain UDP datagram to the gateway: the kernel confirms its address."""
        sockets = self._sockets
        if sockets is None:
            return
        spec = peer.spec
        try:
            self._probe_socket(sockets, spec).sendto(
                encode(self._session(peer).packet()),
                sockaddr(spec.family, spec.remote, ECHO_PORT, spec.scope),
            )
        except OSError as exc:
            log.debug("echo toward %s: probe not sent: %s", spec.display_remote(), exc)

    def _problem(self, peer: Peer, path: EchoPath, problem: str) -> None:
        if problem != path.problem:
            path.problem = problem
            log.error("echo toward %s: %s", peer.spec.display_remote(), problem)

    def _arm_refresh(self) -> None:
        if self._refresh is None and self._loop is not None and self._paths:
            self._refresh = self._loop.call_later(REFRESH_S, self._on_refresh)

    def _on_refresh(self) -> None:
        """Ask again for the paths of sessions that are not Up (see RESOLVE_INTERVAL_US)."""
        self._refresh = None
        now = self._clock()
        for key, path in list(self._paths.items()):
            peer = self._by_key.get(key)
            if peer is None:
                continue
            state = peer.session.state
            if state in (State.UP, State.ADMIN_DOWN) or now - path.asked_at < RESOLVE_INTERVAL_US:
                continue
            self._resolve(peer, now)
        self._arm_refresh()

    # ------------------------------------------------------------ receiving

    def _on_readable(self, receiver: EchoReceiver) -> None:
        recvmsg = receiver.sock.recvmsg
        for _ in range(RECV_BATCH):
            try:
                data, ancdata, _flags, addr = recvmsg(RECV_SIZE, ANCILLARY_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self.receive_errors += 1
                log.debug("echo receive error on %s: %s", receiver.local, exc)
                break
            self.deliver(data, addr[0].partition("%")[0], receiver.local, received_ttl(ancdata))

    def deliver(
        self, data: bytes, source: str, local: str, ttl: int | None, now: int | None = None
    ) -> None:
        """One datagram that came to ``local``:3785 from ``source``."""
        if now is None:
            now = self._clock()
        table = self._table
        try:
            pkt = decode(data)
        except PacketError as exc:
            table.count_drop(exc.reason)
            self._reporter.log_drop(exc, source, now)
            return
        peer = self._by_discr.get(pkt.my_discr)
        if peer is None or peer.spec.local != local:
            unknown = PacketError(DropReason.UNKNOWN_DISCR, f"echo {pkt.my_discr} from {source}")
            table.count_drop(unknown.reason)
            self._reporter.log_drop(unknown, source, now)
            return
        session = self._session(peer)
        try:
            if source != local:
                # What comes back was sent by this host: a packet from elsewhere
                # naming our discriminator is not ours.
                session.reject(DropReason.WRONG_PEER, f"echo from {source}")
            if self.ttl_check and ttl is not None and ttl < session.min_rx_ttl:
                session.reject(DropReason.TTL, f"TTL {ttl} from {source}")
            session.receive(pkt, now, data)
        except PacketError as exc:
            if exc.reason is not DropReason.SESSION_ADMIN_DOWN:
                self._reporter.log_drop(exc, source, now)
            return
        if session.has_output() or session.get_timer() != peer.timer_at:
            self._flush(peer, now)


def _mac(lladdr: bytes) -> str:
    return ":".join(f"{b:02x}" for b in lladdr)
