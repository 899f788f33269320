"""BFD Echo: RFC 9747 unaffiliated echo sessions, and the RFC 5880 Echo
function with a BFD peer (ours, and looping the peer's back).

Our RFC 5880 echo (:class:`~aiobfd.protocol.echo.EchoFunction`, owned by a
Control session) is an echo session of this room too, on a peer of its own
that is not one of the daemon's peers (:meth:`Echo.attach`): it is sent,
resolved and received exactly as below, toward the BFD peer's address.  A
failure (:class:`~aiobfd.protocol.echo.EchoFailed`) is the daemon's to act on.

The BFD peer's echo (:meth:`Echo.reflect_for`): its packets are addressed to
the peer itself and come to our link-layer address; a host that does not
forward drops them.  One packet socket sees them
(:func:`aiobfd.io.echo.open_reflect_socket`); each is sent back to the
link-layer address it came from, its TTL one less (what a router's
forwarding would do), if it comes from a session's remote that we told a
nonzero Required Min Echo RX Interval, the session is Up, and no faster than
that interval allows (:data:`REFLECT_BURST`); counted on the session.  Where
the interface forwards (``net.ipv4.conf.IFACE.forwarding``), the kernel
sends them back already and we do not.

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
    ETH_P_IP,
    PEER_ECHO,
    UNAFFILIATED,
    EchoFrame,
    accepts_local,
    forwards,
    link_address,
    open_echo_receive_socket,
    open_packet_socket,
    open_probe_socket,
    open_reflect_socket,
    reflected,
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
from ..protocol.echo import EchoFunction, EchoSession
from ..protocol.errors import DropReason, PacketError
from ..protocol.packet import State, decode, encode
from ..protocol.registry import PeerKey, SessionTable
from ..protocol.session import Session
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
#: A BFD peer's echo packet looped back: any size up to an Ethernet MTU.
REFLECT_SIZE = 1500
#: Looping back: packets a session may send back at once after a pause;
#: after that one per 3/4 of the interval advertised (the remote may jitter
#: its packets down to 75 % of it, RFC 5880 §6.8.9).
REFLECT_BURST = 4
#: How long whether an interface forwards is taken as known.
FORWARDING_CHECK_US = 5 * US_PER_SECOND


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


@dataclass(eq=False, slots=True)
class _Reflected:
    """A session whose remote's echo packets we loop back, and its budget."""

    peer: Peer
    tokens: float = REFLECT_BURST
    at: int = 0


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
        self._reflect_sock: socket.socket | None = None
        self._reflecting: dict[str, _Reflected] = {}
        """Remote address -> the session looping its echo packets back."""
        self._forwarding: dict[str, tuple[bool, int]] = {}
        """Interface -> whether it forwards, and when that was read."""
        self.reflect_unknown = 0
        """Echo packets of no session's remote seen by the loop-back socket."""
        self.reflect_errors = 0
        """Echo packets the kernel refused to send back."""

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
        if self._reflect_sock is not None:
            self._unwatch(self._reflect_sock)
            self._reflect_sock = None
        self._reflecting.clear()
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
        """The path of an echo session, or of a Control session's Echo
        function (for display); None for other sessions."""
        key = peer.spec.key
        echo = self._by_key.get(key)
        if echo is peer or (echo is not None and echo is self.echo_peer_of(peer)):
            return self._paths.get(key)
        return None

    def echo_peer_of(self, peer: Peer) -> Peer | None:
        """The peer of a Control session's Echo function (see :meth:`attach`), or None."""
        echo = self._by_key.get(peer.spec.key)
        if echo is None or echo is peer:
            return None
        session = echo.session
        if isinstance(session, EchoFunction) and session.owner is peer.session:
            return echo
        return None

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
        receiver, probe = self._open_for(spec, UNAFFILIATED)
        discr = self._new_discriminator()
        session = EchoSession(
            config, discr, now=now, rng=self._session_rng, key=spec.key, align_tx=align_tx
        )
        session.tx_instants = tx_instants
        if spec.shutdown:
            session.disable(now)
        return self._register(spec, session, receiver, probe, now)

    def attach(
        self,
        owner: Peer,
        now: int,
        *,
        align_tx: bool = False,
        tx_instants: SharedInstants | None = None,
    ) -> Peer:
        """Give a Control session its RFC 5880 Echo function (``echo_tx_us``):
        the returned peer carries it (scheduled by the daemon's wake-up like
        any peer, but not one of the daemon's peers).  OSError when a socket
        cannot be opened, :class:`~aiobfd.io.echo.EchoCapabilityError`
        without CAP_NET_RAW."""
        spec = owner.spec
        control = owner.session
        assert isinstance(control, Session), "not a Control session"
        receiver, probe = self._open_for(spec, PEER_ECHO)
        session = EchoFunction(
            control,
            spec.session.echo_tx_us,
            now=now,
            rng=self._session_rng,
            align_tx=align_tx,
        )
        session.tx_instants = tx_instants
        carrier = self._register(spec, session, receiver, probe, now)
        session.carrier = carrier
        return carrier

    def _open_for(self, spec: PeerSpec, purpose: str) -> tuple[EchoReceiver, socket.socket]:
        """The sockets an echo session needs (opened on the first one)."""
        sockets = self._open(purpose)
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
            if not receiver.users:
                receiver.users = 1
                self._release_receiver(receiver)
            raise
        return receiver, probe

    def _register(
        self,
        spec: PeerSpec,
        session: EchoSession,
        receiver: EchoReceiver,
        probe: socket.socket,
        now: int,
    ) -> Peer:
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
        self._by_discr[session.local_discr] = peer
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

    def detach(self, owner: Peer) -> None:
        """Forget a Control session's Echo function and its peer (see :meth:`attach`)."""
        echo = self.echo_peer_of(owner)
        if echo is not None:
            self.remove(echo)
            control = owner.session
            if isinstance(control, Session):
                control.detach_echo(self._clock())

    # ----------------------------------------------- the BFD peer's echo

    def reflect_for(self, peer: Peer) -> None:
        """Loop back the echo packets of ``peer``'s remote (its session
        advertises a nonzero Required Min Echo RX Interval).  Opens the
        loop-back socket on the first (EchoCapabilityError without CAP_NET_RAW)."""
        if self._reflect_sock is None:
            sock = open_reflect_socket()
            assert self._loop is not None
            self._loop.add_reader(sock.fileno(), self._on_reflect)
            self._reflect_sock = sock
        self._reflecting[peer.spec.remote] = _Reflected(peer, at=self._clock())

    def unreflect(self, peer: Peer) -> None:
        """No more looping back for ``peer``'s remote (closes the socket after the last)."""
        entry = self._reflecting.get(peer.spec.remote)
        if entry is None or entry.peer is not peer:
            return
        del self._reflecting[peer.spec.remote]
        if not self._reflecting and self._reflect_sock is not None:
            self._unwatch(self._reflect_sock)
            self._reflect_sock = None

    def reflecting(self, peer: Peer) -> bool:
        entry = self._reflecting.get(peer.spec.remote)
        return entry is not None and entry.peer is peer

    def _forwards(self, ifname: str, now: int) -> bool:
        known = self._forwarding.get(ifname)
        if known is None or now - known[1] > FORWARDING_CHECK_US:
            value = forwards(ifname)
            if known is None or known[0] != value:
                log.info(
                    "echo: %s %s: %s",
                    ifname,
                    "forwards" if value else "does not forward",
                    "the kernel loops BFD peers' echo packets back there"
                    if value
                    else "aiobfd loops BFD peers' echo packets back there",
                )
            known = self._forwarding[ifname] = (value, now)
        return known[0]

    def _on_reflect(self) -> None:
        """A peer's echo packets came: each back to where it came from (bounded per turn)."""
        sock = self._reflect_sock
        if sock is None:
            return
        now = self._clock()
        for _ in range(RECV_BATCH):
            try:
                data, addr = sock.recvfrom(REFLECT_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.receive_errors += 1
                log.debug("echo loop-back receive error: %s", exc)
                return
            got = reflected(data)
            entry = self._reflecting.get(got[0]) if got is not None else None
            if got is None or entry is None:
                self.reflect_unknown += 1
                continue
            session = entry.peer.session
            if not isinstance(session, Session):
                continue
            rx = session.required_min_echo_rx_us
            counters = session.counters
            if rx <= 0 or session.state is not State.UP:
                counters.echo_reflect_limited += 1
                continue
            ifname = addr[0]
            if self._forwards(ifname, now):
                continue  # the kernel sends it back
            # A token per 3/4 of the advertised interval, at most REFLECT_BURST.
            tokens = entry.tokens + (now - entry.at) / (rx * 0.75)
            entry.at = now
            if tokens > REFLECT_BURST:
                tokens = REFLECT_BURST
            if tokens < 1:
                entry.tokens = tokens
                counters.echo_reflect_limited += 1
                continue
            entry.tokens = tokens - 1
            try:
                sock.sendto(got[1], (ifname, ETH_P_IP, 0, 0, addr[4]))
            except OSError as exc:
                self.reflect_errors += 1
                log.debug("echo loop-back to %s failed: %s", got[0], exc)
                continue
            counters.echo_reflected += 1

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

    def _open(self, purpose: str) -> _Sockets:
        sockets = self._sockets
        if sockets is None:
            packet = open_packet_socket(purpose)
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
