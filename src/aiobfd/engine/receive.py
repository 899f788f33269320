"""Receiving: from the sockets to the sessions, by one entry.

Two kinds of socket bring packets:

* A :class:`~.peer.Listener` per local address and port, read in batches
  with ``recvmsg`` (with the received TTL, RFC 5881 §5).  Unknown peers,
  first packets and strangers arrive here.
* Once a peer is established, a socket of its own connected to the peer's
  address and source port (:func:`~aiobfd.io.sockets.open_session_socket`),
  read bare with ``recv``: a socket filter checks the TTL in the kernel, and
  the kernel keeps the arrival time of the last packet.  These sockets sit in
  one epoll set that is read at every wake-up (receive coalescing), first
  thing, before what is due is sent; the loop watches the set only while no
  wake-up comes within the receive hold-off, and while packets keep coming
  a wake-up follows each read within the hold-off instead (see
  :meth:`Receive.follow_up_at`).

Every packet reaches the core through :meth:`Receive.deliver` (decode,
unsolicited admission, demultiplexing, the TTL rule, ``Session.receive``),
except a session socket's exact repeat of the peer's last packet, which
:meth:`Receive.take_session_packets` gives straight to
``Session.receive_repeat`` (the steady state, once per packet).  A packet
restarts the Detection Time from a lower bound of its arrival; before a
Detection Time may expire the session's socket is read and the kernel asked
when the last packet really came (:meth:`Receive.restamp`).
"""

from __future__ import annotations

import asyncio
import logging
import select
import socket
import time
from collections.abc import Callable
from typing import Any

from ..config import PeerSpec
from ..config.model import domain_of
from ..io.sockets import (
    LISTENER_ANCILLARY_SIZE,
    arrival,
    attach_min_ttl_filter,
    kernel_drops,
    last_arrival_ns,
    open_receive_socket,
    open_session_socket,
    sockaddr,
)
from ..protocol.constants import MAX_RECEIVE_HOLDOFF_MS, US_PER_SECOND
from ..protocol.errors import DropReason, PacketError
from ..protocol.packet import State, decode
from ..protocol.registry import PeerKey, SessionTable
from .admission import Admission
from .peer import Listener, Peer
from .reporting import Reporter

log = logging.getLogger("aiobfd")

#: Datagrams read from a listener per wake-up before yielding (bounded batch).
RECV_BATCH = 64
#: Receive coalescing: a packet on an established session's socket waits
#: unread for the daemon's next wake-up if that comes within the hold-off:
#: by default the shortest Required Min RX of the sessions, and never longer
#: than this.  Its arrival time still restarts the Detection Time, but what
#: it says waits: a Poll must be answered "as soon as practicable" (RFC 5880
#: §6.8.7), so the wait is kept to a few milliseconds (at 1,000 sessions @ 50 ms
#: a wake-up comes every 4 ms anyway: 5 ms costs no more wake-ups there, 2 ms
#: cost a fifth more CPU).
RX_HOLDOFF_AUTO_US = 5_000
#: The longest hold-off that may be configured.
RX_HOLDOFF_MAX_US = MAX_RECEIVE_HOLDOFF_MS * 1000
#: A peer's dedicated socket follows a new source port at most this often.
RECONNECT_INTERVAL_US = US_PER_SECOND
#: Session sockets opened in one read of a listener, at most: binding one more
#: socket to an address and port makes the kernel check every socket already
#: there (bind and connect: 13 us with 1,000 on it, 82-210 us with 9,000:
#: bench/udp_lookup.py), so 64 at once with 10,000 sessions would hold the loop
#: 5-13 ms.  The others wait for their peer's next packet.
DEDICATE_PER_READ = 8
#: epoll_wait rounds of one drain of the session sockets.
DRAIN_ROUNDS = 4
#: Before a Detection Time may expire, the session's socket is read until
#: empty, up to this many packets (after a stall it holds a queue; its last
#: packet is the one that counts).
EXPIRY_READ_MAX = 1024
#: Ready session sockets taken from one epoll_wait.
_EPOLL_MAX_EVENTS = 1024
#: Receive buffer: a Control packet is at most 255 octets (its Length field),
#: and what follows it in a datagram is ignored.  (256: small enough for
#: Python's own allocator; 512 went to malloc and a realloc per packet.)
RECV_SIZE = 256


def _never() -> None:
    """The callback of an event that does not come (see Receive.start)."""


def _arrived(remote: str, ifindex: int, domain: str) -> str:
    """Where a packet from ``remote`` came in, for a drop's log line."""
    where = f" on interface {ifindex}" if ifindex else ""
    return f"from {remote}{where} in {domain or 'the default namespace and VRF'}"


class Receive:
    """The engine's receive side: listeners, session sockets, the one entry."""

    def __init__(
        self,
        peers: dict[PeerKey, Peer],
        table: SessionTable,
        admission: Admission,
        reporter: Reporter,
        clock: Callable[[], int],
        flush: Callable[[Peer, int], None],
        ports: tuple[int, int],
        *,
        ttl_check: bool,
        rx_holdoff_us: int | None,
    ) -> None:
        self._peers = peers
        self._table = table
        self._admission = admission
        self._reporter = reporter
        self._clock = clock
        self._flush = flush
        self._port, self._multihop_port = ports
        self.ttl_check = ttl_check
        """RFC 5881 §5 / RFC 5883 §5: drop packets below the session's minimum TTL."""
        self.rx_holdoff_us = rx_holdoff_us
        """Receive coalescing: see RX_HOLDOFF_MAX_US (None: automatic, 0: off)."""
        self.receive_errors = 0
        self._arm: Callable[[Peer], None] = lambda peer: None
        self._on_ready: Callable[[], None] = lambda: None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listeners: dict[tuple[str, int, bool, str], Listener] = {}
        # Established sessions' sockets sit in an epoll set of their own,
        # read at every wake-up; the loop watches the set only while the next
        # wake-up is further away than the receive hold-off.
        self._session_poll: select.epoll | None = None
        self._session_fds: dict[int, Peer] = {}
        self._session_watch = False
        self._wakeup_at: int | None = None
        self._watch_stale = False
        """A session socket was added outside a wake-up: decide the watch again."""
        self._holdoff_us: int | None = None
        self._holdoff_count = 0
        """Sessions whose Required Min RX is the hold-off (when below the cap)."""
        self._drained_at = 0
        """When the last drain of the session sockets began: what it left
        arrived later (a bound on arrival times, whatever the wall clock does)."""
        self._flowing = False
        """The last drain read something: more is likely on its way."""
        self._dedications_left = DEDICATE_PER_READ
        """Session sockets this read of a listener may still open."""
        self._socket_limit: int | None = None
        """The most session sockets open at once (None: one for every
        established session): what RLIMIT_NOFILE leaves (aiobfd.io.fdlimit)."""

    def start(
        self,
        loop: asyncio.AbstractEventLoop,
        now: int,
        arm: Callable[[Peer], None],
        on_ready: Callable[[], None],
    ) -> None:
        """Open the session sockets' epoll set; ``arm`` re-arms a peer's
        deadline, ``on_ready`` is called when the loop sees a session packet."""
        self._loop = loop
        self._drained_at = now
        self._arm = arm
        self._on_ready = on_ready
        self._session_poll = poll = select.epoll()
        # The set stays registered with the loop for the whole run, for an
        # event it never reports (an epoll descriptor is never writable): so
        # watching it or not is an EPOLL_CTL_MOD.  Registering it afresh (an
        # EPOLL_CTL_ADD of one epoll set into another) makes the kernel walk
        # every socket of the set to check for loops: 0.5 ms with 5,000
        # sessions, and a fifth of the daemon's time at 5,000 @ 300 ms.
        loop.add_writer(poll.fileno(), _never)

    def close(self) -> None:
        for listener in self._listeners.values():
            self._unwatch(listener)
        self._listeners.clear()
        self._set_session_watch(False)
        poll = self._session_poll
        if poll is not None and not poll.closed:
            loop = self._loop
            if loop is not None and not loop.is_closed():
                loop.remove_writer(poll.fileno())
            poll.close()

    # ------------------------------------------------------------ listeners

    def port_of(self, spec: PeerSpec) -> int:
        """RFC 5881 §4 / RFC 5883 §5: the destination port of a session."""
        return self._multihop_port if spec.multihop else self._port

    def listen(
        self, family: int, local: str, scope: int, multihop: bool, netns: str = "", vrf: str = ""
    ) -> Listener:
        """The listener of a local address and port, opened on first use
        (OSError), in network namespace ``netns`` and VRF ``vrf`` ("": the
        daemon's own, the default).  It is not bound to an interface: sessions
        bound to one share it, and the arrival interface of each packet is
        checked (IP_PKTINFO), so a packet on another interface is counted."""
        key = (local, scope, multihop, domain_of(netns, vrf))
        listener = self._listeners.get(key)
        if listener is None:
            port = self._multihop_port if multihop else self._port
            sock = open_receive_socket(
                family, local, scope, port, netns=netns, device=vrf, pktinfo=True
            )
            listener = Listener(sock, local, family, scope, multihop, netns=netns, vrf=vrf)
            assert self._loop is not None
            self._loop.add_reader(sock.fileno(), self._on_readable, listener)
            self._listeners[key] = listener
        return listener

    def listener_for(self, spec: PeerSpec) -> Listener:
        return self.listen(spec.family, spec.local, spec.scope, spec.multihop, spec.netns, spec.vrf)

    def release_listener(self, spec: PeerSpec, *, used: bool = True) -> None:
        """A session of ``spec``'s address is gone (``used``: it had counted
        as a user); the listener closes with its last session unless kept."""
        key = (spec.local, spec.scope, spec.multihop, spec.domain)
        listener = self._listeners.get(key)
        if listener is None:
            return
        if used:
            listener.users -= 1
        if listener.users <= 0 and not listener.permanent:
            self._unwatch(listener)
            del self._listeners[key]

    def _unwatch(self, listener: Listener) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(listener.sock.fileno())
        listener.sock.close()

    def _on_readable(self, listener: Listener) -> None:
        recvmsg = listener.sock.recvmsg
        domain = listener.domain
        self._dedications_left = DEDICATE_PER_READ
        for _ in range(RECV_BATCH):
            try:
                data, ancdata, _flags, addr = recvmsg(RECV_SIZE, LISTENER_ANCILLARY_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self.receive_errors += 1
                log.debug("receive error on %s: %s", listener.local, exc)
                break
            ttl, ifindex = arrival(ancdata)
            self.deliver(
                data,
                addr,
                listener.local,
                ttl,
                multihop=listener.multihop,
                ifindex=ifindex,
                domain=domain,
            )
        if self._watch_stale:
            self.wakeup_armed(self._wakeup_at)  # a new session socket: watch the set?

    # ------------------------------------------------------------ the entry

    def deliver(
        self,
        data: bytes,
        addr: Any,
        local: str,
        ttl: int | None,
        now: int | None = None,
        *,
        multihop: bool = False,
        dedicated: Peer | None = None,
        ifindex: int = 0,
        domain: str = "",
    ) -> None:
        """Process one datagram that arrived on ``local`` from ``addr`` at ``now``
        (on a listener, or on the socket ``dedicated`` to a peer), through
        interface ``ifindex`` (0: unknown) in ``domain`` (the listener's
        network namespace and VRF, see PeerKey)."""
        if now is None:
            now = self._clock()
        if dedicated is not None:
            domain = dedicated.spec.domain  # its own socket, in its own namespace
        remote = addr[0]
        scope = 0
        if len(addr) == 4 and addr[3]:
            # IPv6 link-local: the scope (interface index) is part of the peer.
            scope = addr[3]
            remote = remote.partition("%")[0]
        table = self._table
        try:
            pkt = decode(data)
        except PacketError as exc:
            table.count_drop(exc.reason)
            self._reporter.log_drop(exc, remote, now)
            return
        try:
            if (
                self._admission.enabled
                and not pkt.your_discr
                and PeerKey(remote, local, scope, multihop, domain) not in self._peers
                and self._admission.admit(remote, local, scope, ttl, multihop, now) is None
            ):
                table.count_drop(DropReason.UNKNOWN_PEER)
                return
            session = table.demultiplex(pkt, remote, local, scope, multihop, domain)
            peer = self._peers[session.key]
            if dedicated is None and (
                session.key.domain != domain or (peer.ifindex and ifindex != peer.ifindex)
            ):
                # Bound to an interface, a VRF or a namespace, and heard on
                # another: a forged or misrouted packet (FRR 8.4 takes it).
                session.reject(DropReason.WRONG_INTERFACE, _arrived(remote, ifindex, domain))
            if self.ttl_check and ttl is not None and ttl < session.min_rx_ttl:
                session.reject(DropReason.TTL, f"TTL {ttl} from {remote}")
            session.receive(pkt, now, data)
        except PacketError as exc:
            if exc.reason is not DropReason.SESSION_ADMIN_DOWN:  # expected, not news
                self._reporter.log_drop(exc, remote, now)
            return
        if log.isEnabledFor(logging.DEBUG):
            log.debug("received from %s: %s", remote, pkt)
        if dedicated is None and (session.state is State.UP or not peer.dynamic):
            # An unsolicited session gets its own socket once Up: its source
            # may be spoofed until then (see admission).
            self._dedicate_socket(peer, addr, now)
        # Most packets change nothing we must act on: no packet to send, no
        # event, the same deadline (the next transmission) as before.
        if session.has_output() or session.get_timer() != peer.timer_at:
            self._flush(peer, now)

    # ------------------------------------------------------ session sockets

    def drain(self) -> None:
        """Read what waits on the established sessions' sockets (epoll_wait).

        Each packet arrived after the previous drain began (the ``floor``) and
        restarts the Detection Time from then: a little early, never late.
        The exact arrival is asked of the kernel only when it matters, before
        a Detection Time expires (:meth:`restamp`), so a packet read late by
        receive coalescing counts from its arrival, as if it had been read at
        once.
        """
        poll = self._session_poll
        self._flowing = False
        if poll is None or not self._session_fds:
            return
        fds = self._session_fds
        now = self._clock()
        floor = self._drained_at
        self._drained_at = now
        take = self.take_session_packets
        read = 0
        # Until no socket holds anything, within a few rounds (packets keep
        # coming while we read; timers must not starve): a socket left with a
        # packet in it would carry a standing queue into every later wake-up.
        for _ in range(DRAIN_ROUNDS):
            ready = poll.poll(0, _EPOLL_MAX_EVENTS)
            if not ready:
                break
            read += len(ready)
            # What each socket reported ready arrived before this (its oldest
            # packet, the one read now, was already there).
            ready_at = self._clock()
            # Read them all back to back, then process what came.
            got: list[tuple[Peer, bytes]] = []
            for fd, _mask in ready:
                peer = fds.get(fd)
                if peer is None or (sock := peer.rx_sock) is None:
                    continue
                try:
                    got.append((peer, sock.recv(RECV_SIZE)))
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError as exc:
                    self._count_receive_error(peer, exc)
            take(got, floor, ready_at)
        # Packets are coming (more than one, or one soon after the drain
        # before): read again one hold-off later rather than be woken by each
        # (follow_up_at).  A lone packet after a quiet spell - a few sessions,
        # or peers out of step with our wake-ups - is not a stream: the loop
        # watches the sockets instead, and a follow-up that would find nothing
        # (one wake-up more a packet) is saved.
        self._flowing = read > 1 or (read == 1 and now - floor <= 2 * self._rx_holdoff())

    def read_pending(self, peer: Peer) -> None:
        """Read ``peer``'s own socket until empty (before its Detection Time
        may expire: the packet that restarts it must not wait there)."""
        sock = peer.rx_sock
        floor = self._drained_at
        for _ in range(EXPIRY_READ_MAX):
            if sock is None:
                return
            try:
                data = sock.recv(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._count_receive_error(peer, exc)
                return
            self.take_session_packets([(peer, data)], floor, self._clock())
            sock = peer.rx_sock

    def take_session_packets(self, got: list[tuple[Peer, bytes]], floor: int, by: int) -> None:
        """Process packets just read from peers' own sockets: each arrived
        after ``floor`` and by ``by``.  Their TTL was checked by the kernel
        (attach_min_ttl_filter)."""
        arm = self._arm
        for peer, data in got:
            timer = peer.session.receive_repeat(data, floor)
            if timer is not None:
                # The common case: the peer said exactly what it said last
                # time; only the Detection Time moved (mostly past the next
                # transmission, which keeps the peer's place in the schedule).
                peer.rx_accepted_read = by
                if timer != peer.timer_at:
                    arm(peer)
            else:
                self._take_full(peer, data, floor)

    def _take_full(self, peer: Peer, data: bytes, floor: int) -> None:
        """Process a packet from ``peer``'s own socket the full way, at its exact arrival."""
        session = peer.session
        read_at = self._clock()
        sock = peer.rx_sock
        at = read_at if sock is None else self._arrival_us(sock, read_at)
        if at < floor:
            at = floor
        accepted = session.counters.packets_in
        spec = peer.spec
        self.deliver(
            data, peer.rx_from, spec.local, None, at, multihop=spec.multihop, dedicated=peer
        )
        if session.counters.packets_in != accepted:
            peer.rx_accepted_read = read_at
        else:
            peer.rx_dropped_read = read_at

    def _count_receive_error(self, peer: Peer, exc: OSError) -> None:
        self.receive_errors += 1
        log.debug("receive error from %s: %s", peer.spec.display_remote(), exc)

    def _arrival_us(self, sock: socket.socket, bound: int) -> int:
        """When the last packet read from ``sock`` arrived, on the protocol
        clock, at most ``bound`` (a time it had certainly come by); ``bound``
        itself if the kernel does not know."""
        # The kernel keeps the wall-clock time: its age is taken off ours.
        realtime = time.time_ns()
        now = self._clock()
        arrived_ns = last_arrival_ns(sock)
        if not arrived_ns:
            return bound
        at = now - (realtime - arrived_ns) // 1000
        return at if at < bound else bound

    def restamp(self, peer: Peer) -> bool:
        """Move the Detection Time of ``peer`` to the exact arrival of its last
        packet, if that came later than it was counted from (the drain it was
        read in began); True if the deadline moved (the caller re-arms).

        When the last packet read was dropped, the last accepted one arrived
        before it was read: that bound is taken (a Down then comes late by
        the time it waited, never early).
        """
        sock = peer.rx_sock
        if sock is None or not peer.rx_accepted_read:
            return False
        at = peer.rx_accepted_read
        if peer.rx_dropped_read < at:
            at = self._arrival_us(sock, at)
        return peer.session.arrived_later(at)

    # ------------------------------------------------------ coalescing

    def holdoff_changed(self) -> None:
        """Sessions or their receive intervals changed: recompute the hold-off."""
        self._holdoff_us = None

    def session_added(self, peer: Peer) -> None:
        """``peer`` is new: the hold-off moves only if it receives faster
        (O(1): unsolicited sessions come and go by the thousand)."""
        holdoff = self._holdoff_us
        if holdoff is None:
            return
        rx = peer.session.required_min_rx_us
        if 0 < rx < holdoff:
            self._holdoff_us = rx
            self._holdoff_count = 1
        elif rx == holdoff:
            self._holdoff_count += 1

    def session_removed(self, peer: Peer) -> None:
        """``peer`` is gone: the hold-off is recomputed only if it was the
        last session receiving at the hold-off's interval."""
        holdoff = self._holdoff_us
        if holdoff is None or holdoff == RX_HOLDOFF_AUTO_US:
            return  # removing a session never lowers it
        rx = peer.session.required_min_rx_us
        if rx <= 0 or rx > holdoff:
            return
        if rx == holdoff:
            self._holdoff_count -= 1
            if self._holdoff_count > 0:
                return
        self._holdoff_us = None

    @property
    def holdoff_in_force_us(self) -> int:
        """How long a packet on a session's socket may wait unread now."""
        return self._rx_holdoff()

    def _rx_holdoff(self) -> int:
        """How long a session packet may wait unread: see RX_HOLDOFF_MAX_US."""
        if self.rx_holdoff_us is not None:
            return self.rx_holdoff_us
        holdoff = self._holdoff_us
        if holdoff is None:
            holdoff = RX_HOLDOFF_AUTO_US
            count = 0
            for peer in self._peers.values():
                rx = peer.session.required_min_rx_us
                if 0 < rx < holdoff:
                    holdoff = rx
                    count = 1
                elif rx == holdoff:
                    count += 1
            self._holdoff_us = holdoff
            self._holdoff_count = count
        return holdoff

    def follow_up_at(self, at: int | None) -> int | None:
        """When to wake up next to read the session sockets, if the next
        wake-up (``at``, None: none) comes too late for packets on their way.

        While the last drain read something, more is coming: rather than be
        woken by each packet (the loop watching the sockets), read again one
        hold-off later.  So a packet waits at most the hold-off, and reading
        costs at most one wake-up a hold-off however many peers send.  Once a
        drain finds nothing, the loop watches the sockets again.
        """
        if not self._flowing or not self._session_fds:
            return None
        holdoff = self._rx_holdoff()
        if holdoff <= 0:
            return None
        soon = self._clock() + holdoff
        return soon if at is None or at > soon else None

    def wakeup_armed(self, at: int | None) -> None:
        """The next wake-up is at ``at`` (None: none): packets on session
        sockets wait for it when it comes soon enough; otherwise the loop
        watches the sockets and wakes us."""
        self._wakeup_at = at
        self._watch_stale = False
        if self._session_fds:
            self._set_session_watch(at is None or at - self._clock() > self._rx_holdoff())
        elif self._session_watch:
            self._set_session_watch(False)

    def _set_session_watch(self, watch: bool) -> None:
        if watch == self._session_watch:
            return
        loop = self._loop
        poll = self._session_poll
        if loop is None or loop.is_closed() or poll is None or poll.closed:
            self._session_watch = False
            return
        if watch:
            loop.add_reader(poll.fileno(), self._on_ready)
        else:
            loop.remove_reader(poll.fileno())
        self._session_watch = watch

    @property
    def session_sockets(self) -> int:
        """Established sessions read from a socket of their own (the others: a listener)."""
        return len(self._session_fds)

    def limit_sockets(self, limit: int | None) -> None:
        """Open at most ``limit`` session sockets (None: no limit), closing the
        newest beyond it now: their sessions are read from their listener, and
        the descriptors go to the transmit sockets of sessions still to come
        (the limit is what RLIMIT_NOFILE leaves beside them: aiobfd.io.fdlimit).
        A session without one gets one within a second of a socket's closing."""
        self._socket_limit = limit
        if limit is None:
            return
        excess = len(self._session_fds) - max(limit, 0)
        if excess > 0:
            for peer in list(reversed(self._session_fds.values()))[:excess]:
                self.release(peer)
            log.info("%d session(s) now read from the shared listener (RLIMIT_NOFILE)", excess)

    def _dedicate_socket(self, peer: Peer, addr: Any, now: int) -> None:
        """Give an established peer a receive socket of its own (see open_session_socket)."""
        if peer.rx_from == addr or now - peer.rx_connected_at < RECONNECT_INTERVAL_US:
            return
        if self._dedications_left <= 0:
            return  # enough binds in this read: at the peer's next packet
        peer.rx_connected_at = now
        limit = self._socket_limit
        if peer.rx_sock is None and limit is not None and len(self._session_fds) >= limit:
            return  # read from the listener; asked again in a second
        self.release(peer)
        spec = peer.spec
        try:
            sock = open_session_socket(
                spec.family,
                spec.local,
                spec.scope,
                sockaddr(spec.family, spec.remote, addr[1], spec.scope),
                self.port_of(spec),
                peer.session.min_rx_ttl if self.ttl_check else None,
                netns=spec.netns,
                device=spec.device,
            )
        except OSError as exc:
            log.debug("no dedicated socket for %s: %s", spec.display_remote(), exc)
            return
        self._dedications_left -= 1
        peer.rx_sock = sock
        peer.rx_from = addr
        peer.rx_accepted_read = peer.rx_dropped_read = 0
        assert self._session_poll is not None
        self._session_fds[sock.fileno()] = peer
        self._session_poll.register(sock.fileno(), select.EPOLLIN)
        self._watch_stale = True

    def refilter(self, peer: Peer) -> None:
        """The session's minimum TTL changed (authentication, min_ttl: RFC 5881 §5)."""
        if peer.rx_sock is not None and self.ttl_check:
            attach_min_ttl_filter(peer.rx_sock, peer.session.min_rx_ttl)

    def release(self, peer: Peer) -> None:
        """Close ``peer``'s own receive socket, keeping its kernel drop count."""
        sock = peer.rx_sock
        if sock is None:
            return
        fd = sock.fileno()
        poll = self._session_poll
        if self._session_fds.pop(fd, None) is not None and poll is not None and not poll.closed:
            poll.unregister(fd)
        peer.rx_kernel_drops += kernel_drops(sock)
        sock.close()
        peer.rx_sock = None
        peer.rx_from = None
