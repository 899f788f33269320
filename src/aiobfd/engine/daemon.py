"""The daemon: sessions from peer specs, driven by asyncio.

This is the only place where the sans-IO core meets the event loop.  It reads
datagrams (with their TTL), hands them to the session table, sends what sessions
queue and reports their events.  On a host each event-loop wake-up costs far
more than the packet it serves, so sessions share wake-ups:

* Session deadlines live in one :class:`~aiobfd.protocol.schedule.Schedule`; the loop
  holds a single wake-up at the earliest (after aioquic's ``transmit()`` /
  re-arm pattern), and each wake-up serves every session due by then.  The
  wake-up is a timerfd (:mod:`aiobfd.io.timerfd`), precise to the
  microsecond where ``call_at`` comes up to a millisecond late; ``call_at``
  where there is none.
* Sessions draw their periodic transmissions at instants others already use,
  inside the jitter window of RFC 5880 §6.8.7 (``Session.tx_instants``).
* Established peers' packets come on sockets of their own, gathered in an epoll
  set that is read at every wake-up and watched by the loop only while the
  next wake-up is further away than the receive hold-off.  A packet restarts
  the Detection Time from a lower bound of its arrival; before a Detection
  Time may expire, the session's socket is read and the kernel asked when the
  last packet really came.

Nothing here polls.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import random
import select
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from ..config import PeerSpec, UnsolicitedConfig, check_local_address, resolve
from ..io.sockets import (
    ANCILLARY_SIZE,
    SockAddr,
    attach_min_ttl_filter,
    kernel_drops,
    last_arrival_ns,
    open_receive_socket,
    open_session_socket,
    open_transmit_socket,
    received_ttl,
    sockaddr,
)
from ..io.timerfd import PreciseTimer, open_precise_timer
from ..protocol.constants import (
    MAX_RECEIVE_HOLDOFF_MS,
    MULTIHOP_PORT,
    SINGLE_HOP_PORT,
    US_PER_SECOND,
)
from ..protocol.errors import DropReason, PacketError
from ..protocol.events import Event, PollSequenceCompleted, SessionRemoved, StateChanged
from ..protocol.packet import State, decode
from ..protocol.registry import PeerKey, SessionTable
from ..protocol.schedule import Schedule
from ..protocol.session import Session
from ..protocol.stats import TimingStats

log = logging.getLogger("aiobfd")

#: Datagrams read per wake-up before yielding to timers (bounded batch).
RECV_BATCH = 64
#: A timer that fires at most this early is taken as on time.
EARLY_WAKEUP_US = 50
#: Without a timerfd the event loop sleeps in whole milliseconds (epoll_wait),
#: rounded up: for an expiring Detection Time it is woken this much early and
#: the rest is slept precisely, so that Down is declared at the deadline, not
#: up to 1 ms after.
DETECT_EARLY_US = 1000
#: At most one such sleep in this long (bounds the loop's time asleep to 10 %).
DETECT_SLEEP_GAP_US = 10_000
#: Receive coalescing: a packet on an established session's socket waits
#: unread for the daemon's next wake-up if that comes within the shortest
#: Required Min RX of the sessions (the peers' packet interval), and never
#: longer than this.  Its arrival time still restarts the Detection Time.
RX_HOLDOFF_MAX_US = MAX_RECEIVE_HOLDOFF_MS * 1000
#: A peer's dedicated socket follows a new source port at most this often.
RECONNECT_INTERVAL_US = US_PER_SECOND
#: Periodic packets sent back to back in a burst, after their bookkeeping;
#: and sessions served between two looks at the clock for deadlines that
#: came due meanwhile.
BURST_SLICE = 16
#: The same while a Detection Time is armed: a session costs tens of
#: microseconds when its objects are cold (16 took a millisecond at 300 ms
#: intervals), and an expiring Detection Time must not wait that long.
DUE_CHECK = 4
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
#: How often a drop summary may be logged, in microseconds.
DROP_LOG_INTERVAL_US = 10 * US_PER_SECOND
#: AdminDown burst on shutdown: packets per session and the gap between them.
SHUTDOWN_REPEATS = 3
SHUTDOWN_GAP_S = 0.05


def monotonic_us() -> int:
    """The protocol clock: CLOCK_MONOTONIC in integer microseconds (= loop.time())."""
    return time.monotonic_ns() // 1000


EventListener = Callable[["Peer", Event], None]


@dataclass(eq=False, slots=True)
class Peer:
    """A configured session with its I/O: transmit socket and timer.

    (What the packet path touches comes first: slots are laid out in order.)
    """

    spec: PeerSpec
    session: Session
    sock: socket.socket
    dest: SockAddr
    timer_at: int | None = None
    """The deadline this peer has in the daemon's heap (None: none, or closed)."""
    connected: bool = False
    """The transmit socket is connected to ``dest`` (send() without an address)."""
    rx_sock: socket.socket | None = None
    """Receive socket connected to the peer's address and source port."""
    rx_accepted_read: int = 0
    """A time by which the last packet accepted from ``rx_sock`` had come
    (when it was read, or when its socket was seen ready)."""
    send_errors: dict[str, int] = field(default_factory=dict)
    dynamic: bool = False
    """Created by an unsolicited packet (RFC 9468), not by configuration."""
    runtime: bool = False
    """Added or changed at run time (aiobfdctl), not by the configuration."""
    expiry: asyncio.TimerHandle | None = None
    """Removal of a dynamic session that stays down (RFC 9468)."""
    rx_from: Any = None
    rx_connected_at: int = 0
    rx_dropped_read: int = 0
    """When the last packet dropped from ``rx_sock`` was read."""
    rx_kernel_drops: int = 0
    """Packets the kernel dropped on former ``rx_sock`` sockets (see kernel_drops)."""

    @property
    def source_port(self) -> int:
        return int(self.sock.getsockname()[1])

    @property
    def kernel_drops(self) -> int:
        """Packets for this session the kernel dropped before the daemon saw them:
        a TTL below the minimum (the socket filter) or a full receive buffer."""
        sock = self.rx_sock
        return self.rx_kernel_drops + (kernel_drops(sock) if sock is not None else 0)

    def drops(self) -> dict[str, int]:
        """Packets of this session that were discarded, by reason (the kernel's too)."""
        out = {str(k): v for k, v in list(self.session.counters.drops.items())}
        kernel = self.kernel_drops
        if kernel:
            out[DropReason.KERNEL.value] = kernel
        return out


@dataclass(slots=True)
class _Receiver:
    sock: socket.socket
    local: str
    family: int
    scope: int
    multihop: bool
    users: int = 0
    """Sessions using it; 0 for a listener kept for unsolicited sessions."""
    permanent: bool = False


class Daemon:
    """Runs BFD sessions for a set of peers."""

    def __init__(
        self,
        peers: list[PeerSpec] | None = None,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], int] = monotonic_us,
        port: int = SINGLE_HOP_PORT,
        multihop_port: int = MULTIHOP_PORT,
        ttl_check: bool = True,
        unsolicited: UnsolicitedConfig | None = None,
        align_tx: bool = True,
        rx_holdoff_us: int | None = None,
    ) -> None:
        self._initial = list(peers or [])
        self._rng = rng or random.SystemRandom()
        self._clock = clock
        self._port = port
        self._multihop_port = multihop_port
        self.ttl_check = ttl_check
        """RFC 5881 §5 / RFC 5883 §5: drop packets below the session's minimum TTL."""
        self.align_tx = align_tx
        """Periodic transmissions on shared instants (see the module docstring)."""
        self.rx_holdoff_us = rx_holdoff_us
        """Receive coalescing: see RX_HOLDOFF_MAX_US (None: automatic, 0: off)."""
        self.unsolicited = unsolicited
        self.unsolicited_refused: dict[str, int] = {}
        """Unsolicited sessions not created, by reason (prefix, limit, rate, ...)."""
        self._tokens = float(unsolicited.burst) if unsolicited else 0.0
        self._tokens_at = 0
        self.dynamic_sessions = 0
        """Sessions created by unsolicited packets that exist now."""
        # Discriminators and source ports from the OS's generator; per-packet
        # jitter from a fast one seeded by it (one getrandom() a packet showed up
        # in profiles).
        jitter_rng = rng or random.Random(random.SystemRandom().getrandbits(64))
        self.table = SessionTable(self._rng, jitter_rng)
        self.peers: dict[PeerKey, Peer] = {}
        self._receivers: dict[tuple[str, int, bool], _Receiver] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listeners: list[EventListener] = []
        self._drop_pending: dict[tuple[str, str], int] = {}
        self._drop_logged_at = -DROP_LOG_INTERVAL_US
        self._stopped = asyncio.Event()
        # Deadlines by instant (transmissions share instants, see schedule.py).
        # A peer listed at an instant that is no longer its timer_at is stale
        # and skipped.
        self._schedule: Schedule[Peer] = Schedule()
        self._detect_instants: set[int] = set()
        """Instants of the schedule at which a Detection Time was armed (some
        may be stale); most instants are transmissions only."""
        self._wakeup: asyncio.TimerHandle | None = None
        self._precise: PreciseTimer | None = None
        """The loop's one wake-up as a timerfd (None: ``call_at``, see io/timerfd.py)."""
        self._wakeup_at: int | None = None
        self._in_wakeup = False
        self._slept_at = -DETECT_SLEEP_GAP_US
        # Established sessions' sockets sit in an epoll set of their own,
        # read at every wake-up; the loop watches the set only while the next
        # wake-up is further away than the receive hold-off.
        self._session_poll: select.epoll | None = None
        self._session_fds: dict[int, Peer] = {}
        self._session_watch = False
        self._holdoff_us: int | None = None
        self._drained_at = 0
        """When the last drain of the session sockets began: what it left
        arrived later (a bound on arrival times, whatever the wall clock does)."""
        self.started_at_us = 0
        self.receive_errors = 0
        self.timing = TimingStats()

    def now(self) -> int:
        """The protocol clock, in integer microseconds (monotonic)."""
        return self._clock()

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Bind sockets and start every configured session."""
        self._loop = asyncio.get_running_loop()
        self.started_at_us = self._drained_at = self._clock()
        self._session_poll = select.epoll()
        if self._clock is monotonic_us:  # the kernel's clock is the protocol clock
            self._precise = open_precise_timer(self._loop, self._on_wakeup)
        try:
            for spec in self._initial:
                self.add_peer(spec)
            if self.unsolicited is not None:
                self._tokens_at = self.started_at_us
                for address in self.unsolicited.listen:
                    self._listen_unsolicited(address)
        except BaseException:
            self.close()
            raise

    def add_listener(self, listener: EventListener) -> None:
        """Call ``listener(peer, event)`` for every session event."""
        self._listeners.append(listener)

    def remove_listener(self, listener: EventListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def add_peer(self, spec: PeerSpec, *, dynamic: bool = False) -> Peer:
        """Create and start a session for ``spec`` (OSError if sockets fail)."""
        assert self._loop is not None, "start() first"
        key = spec.key
        if key in self.peers:
            raise ValueError(f"a session for {spec.display_remote()} exists already")
        receiver = self._receiver_for(spec)
        try:
            sock = open_transmit_socket(spec.family, spec.local, spec.scope, self._rng)
        except OSError:
            if receiver.users == 0 and not receiver.permanent:
                self._unwatch(receiver)
                del self._receivers[(spec.local, spec.scope, spec.multihop)]
            raise
        now = self._clock()
        session = self.table.add(key, spec.session, now)
        session.align_tx = self.align_tx
        if self.align_tx:
            session.tx_instants = self._schedule
        if spec.shutdown:
            session.disable(now)
        peer = Peer(
            spec, session, sock, sockaddr(spec.family, spec.remote, self.port_of(spec), spec.scope)
        )
        try:
            # Connected, the kernel keeps the route and each send skips the
            # address; without a route yet, sendto() reports what is wrong.
            sock.connect(peer.dest)
            peer.connected = True
        except OSError as exc:
            log.debug("transmit socket for %s not connected: %s", spec.display_remote(), exc)
        peer.dynamic = dynamic
        if dynamic:
            self.dynamic_sessions += 1
        receiver.users += 1
        self.peers[key] = peer
        self._holdoff_us = None
        log.info(
            "session %s created: local discriminator %d, source port %d",
            spec.display_remote(),
            session.local_discr,
            peer.source_port,
            extra=self._fields(peer),
        )
        self._flush(peer, now)
        return peer

    def remove_peer(self, key: PeerKey) -> None:
        """Forget a session, telling the remote AdminDown (RFC 5880 §6.8.16).

        The AdminDown goes out at once and twice more 50 ms apart, as on
        shutdown, so one lost packet does not turn the goodbye into a timeout.
        """
        peer = self.peers.pop(key, None)
        if peer is None:
            return
        now = self._clock()
        peer.session.disable(now)
        self._flush(peer, now)
        self._close_peer(peer, keep_tx=True)
        self._report(peer, SessionRemoved(now))
        if self._loop is None or self._loop.is_closed():
            peer.sock.close()
            return
        self._loop.call_later(SHUTDOWN_GAP_S, self._farewell, peer, SHUTDOWN_REPEATS - 1)

    def _farewell(self, peer: Peer, remaining: int) -> None:
        peer.session.transmit_now(self._clock())
        datagrams = peer.session.datagrams_to_send()
        if datagrams:
            self._send(peer, datagrams)
        if remaining > 1 and self._loop is not None and not self._loop.is_closed():
            self._loop.call_later(SHUTDOWN_GAP_S, self._farewell, peer, remaining - 1)
        else:
            peer.sock.close()

    def close(self) -> None:
        """Release every socket and timer at once (no goodbye packets)."""
        for peer in list(self.peers.values()):
            self._close_peer(peer)
        self.peers.clear()
        if self._wakeup is not None:
            self._wakeup.cancel()
            self._wakeup = None
        if self._precise is not None:
            self._precise.close()
            self._precise = None
        self._wakeup_at = None
        self._schedule.clear()
        self._detect_instants.clear()
        for receiver in self._receivers.values():
            self._unwatch(receiver)
        self._receivers.clear()
        self._set_session_watch(False)
        if self._session_poll is not None:
            self._session_poll.close()

    async def shutdown(self) -> None:
        """RFC 5880 §6.8.16: tell every remote we are going AdminDown, then close.

        Each session sends AdminDown with diag 7 at once and twice more, 50 ms
        apart, so one lost packet does not turn our goodbye into a timeout.
        """
        now = self._clock()
        for peer in self.peers.values():
            peer.session.disable(now)
            self._flush(peer, now)
        for _ in range(SHUTDOWN_REPEATS - 1):
            await asyncio.sleep(SHUTDOWN_GAP_S)
            now = self._clock()
            for peer in self.peers.values():
                peer.session.transmit_now(now)
                self._flush(peer, now)
        self.close()
        self._stopped.set()

    def request_stop(self) -> None:
        """Ask :meth:`serve_forever` to shut down gracefully."""
        if self._loop is not None and not self._stopping:
            self._stopping = True
            self._loop.create_task(self.shutdown())

    _stopping = False

    async def serve_forever(self) -> None:
        await self._stopped.wait()

    # ------------------------------------------------------- administration

    def disable(self, key: PeerKey) -> None:
        peer = self.peers[key]
        now = self._clock()
        peer.session.disable(now)
        self._flush(peer, now)

    def enable(self, key: PeerKey) -> None:
        peer = self.peers[key]
        now = self._clock()
        peer.session.enable(now)
        self._flush(peer, now)

    def set_timers(self, key: PeerKey, **timers: int | None) -> None:
        peer = self.peers[key]
        now = self._clock()
        peer.session.set_timers(now, **timers)
        self._holdoff_us = None
        self._flush(peer, now)

    def apply_config(self, specs: list[PeerSpec]) -> dict[str, list[str]]:
        """Make the running sessions match ``specs`` (a reload), without flaps.

        Removed peers say AdminDown and go; new ones start; changed timers
        reach the remote through a Poll Sequence (RFC 5880 §6.8.3); passive,
        authentication and administrative state are changed in place.  A peer
        whose spec did not change is not touched at all.  Run-time changes
        (``aiobfdctl peer ...``) are replaced by what the file says.
        """
        wanted = {spec.key: spec for spec in specs}
        summary: dict[str, list[str]] = {"added": [], "removed": [], "changed": [], "unchanged": []}
        # Dynamic (unsolicited) sessions are not the file's business.
        for key in [k for k, p in self.peers.items() if k not in wanted and not p.dynamic]:
            summary["removed"].append(self.peers[key].spec.display_remote())
            self.remove_peer(key)
        for key, spec in wanted.items():
            peer = self.peers.get(key)
            if peer is None:
                self.add_peer(spec)
                summary["added"].append(spec.display_remote())
            elif peer.spec == spec and not peer.runtime:
                summary["unchanged"].append(spec.display_remote())
            else:
                self._change_peer(peer, spec)
                summary["changed"].append(spec.display_remote())
        return summary

    def _change_peer(self, peer: Peer, spec: PeerSpec) -> None:
        old, new = peer.session.config, spec.session
        session = peer.session
        now = self._clock()
        peer.spec = spec
        peer.runtime = False
        self._holdoff_us = None
        if peer.dynamic:  # the file now configures what a remote had started
            peer.dynamic = False
            self.dynamic_sessions -= 1
            if peer.expiry is not None:
                peer.expiry.cancel()
                peer.expiry = None
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
        if peer.rx_sock is not None and self.ttl_check:
            # The minimum TTL follows authentication and min_ttl (RFC 5881 §5).
            attach_min_ttl_filter(peer.rx_sock, session.min_rx_ttl)
        if spec.shutdown and session.state is not State.ADMIN_DOWN:
            session.disable(now)
        elif not spec.shutdown and session.state is State.ADMIN_DOWN:
            session.enable(now)
        self._flush(peer, now)

    # -------------------------------------------------------------- receive

    def port_of(self, spec: PeerSpec) -> int:
        """RFC 5881 §4 / RFC 5883 §5: the destination port of a session."""
        return self._multihop_port if spec.multihop else self._port

    def _receiver_for(self, spec: PeerSpec) -> _Receiver:
        return self._listen(spec.family, spec.local, spec.scope, spec.multihop)

    def _listen(self, family: int, local: str, scope: int, multihop: bool) -> _Receiver:
        rkey = (local, scope, multihop)
        receiver = self._receivers.get(rkey)
        if receiver is None:
            port = self._multihop_port if multihop else self._port
            sock = open_receive_socket(family, local, scope, port)
            receiver = _Receiver(sock, local, family, scope, multihop)
            assert self._loop is not None
            self._loop.add_reader(sock.fileno(), self._on_readable, receiver)
            self._receivers[rkey] = receiver
        return receiver

    def _listen_unsolicited(self, text: str) -> None:
        addr = resolve(text)[0]
        check_local_address(addr)
        modes = (False, True) if self.unsolicited and self.unsolicited.multihop else (False,)
        for multihop in modes:
            receiver = self._listen(addr.family, addr.address, addr.scope, multihop)
            receiver.permanent = True

    def _create_unsolicited(
        self,
        addr: Any,
        remote: str,
        local: str,
        scope: int,
        ttl: int | None,
        multihop: bool,
        now: int,
    ) -> Peer | None:
        """RFC 9468: a session for an unknown peer in an allowed prefix, or None."""
        cfg = self.unsolicited
        assert cfg is not None
        reason = ""
        if multihop and not cfg.multihop:
            reason = "multihop"
        elif not cfg.allows(remote):
            reason = "prefix"
        elif self.ttl_check and not multihop and ttl is not None and ttl < 255:
            reason = "ttl"
        elif self.dynamic_sessions >= cfg.max_sessions:
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
                if cfg.interfaces and not multihop and not self._on_interfaces(remote, scope, cfg):
                    reason = "interface"
        if reason:
            self.unsolicited_refused[reason] = self.unsolicited_refused.get(reason, 0) + 1
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
            peer = self.add_peer(spec, dynamic=True)
        except (OSError, ValueError) as exc:
            self.unsolicited_refused["error"] = self.unsolicited_refused.get("error", 0) + 1
            log.warning("cannot create unsolicited session for %s: %s", remote, exc)
            return None
        log.info("unsolicited session from %s accepted (RFC 9468)", spec.display_remote())
        self._expire_later(peer)
        return peer

    def _on_interfaces(self, remote: str, scope: int, cfg: UnsolicitedConfig) -> bool:
        """Whether a single-hop peer is reached through one of the allowed interfaces."""
        if scope:
            return socket.if_indextoname(scope) in cfg.interfaces
        return self._route_interface(remote) in cfg.interfaces

    @staticmethod
    def _route_interface(remote: str) -> str:
        """The interface of the connected route to ``remote`` (single hop: on-link)."""
        import subprocess

        try:
            out = subprocess.run(
                ["ip", "-o", "route", "get", remote], capture_output=True, text=True, timeout=2
            ).stdout.split()
        except (OSError, subprocess.SubprocessError):
            return ""
        return out[out.index("dev") + 1] if "dev" in out else ""

    def _expire_later(self, peer: Peer) -> None:
        cfg = self.unsolicited
        if cfg is None or self._loop is None:
            return
        if peer.expiry is not None:
            peer.expiry.cancel()
        peer.expiry = self._loop.call_later(cfg.down_timeout_s, self._expire, peer)

    def _expire(self, peer: Peer) -> None:
        peer.expiry = None
        key = peer.spec.key
        if self.peers.get(key) is not peer or peer.session.state is State.UP:
            return
        log.info("unsolicited session %s removed after staying down", peer.spec.display_remote())
        del self.peers[key]
        self._close_peer(peer)
        self._report(peer, SessionRemoved(self._clock()))

    def _on_readable(self, receiver: _Receiver) -> None:
        recvmsg = receiver.sock.recvmsg
        for _ in range(RECV_BATCH):
            try:
                data, ancdata, _flags, addr = recvmsg(RECV_SIZE, ANCILLARY_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.receive_errors += 1
                log.debug("receive error on %s: %s", receiver.local, exc)
                return
            self.datagram_received(
                data, addr, receiver.local, received_ttl(ancdata), multihop=receiver.multihop
            )

    def _on_sessions_readable(self) -> None:
        """The loop woke us for a packet on an established session's socket."""
        self.timing.receive_wakeups += 1
        self._in_wakeup = True
        try:
            self._drain_sessions()
        finally:
            self._in_wakeup = False
        self._schedule_wakeup()

    def _drain_sessions(self) -> None:
        """Read what waits on the established sessions' sockets (epoll_wait).

        Each packet arrived after the previous drain began (the ``floor``) and
        restarts the Detection Time from then: a little early, never late.
        The exact arrival is asked of the kernel only when it matters, before
        a Detection Time expires (:meth:`_restamp`), so a packet read late by
        receive coalescing counts from its arrival, as if it had been read at
        once.
        """
        poll = self._session_poll
        if poll is None or not self._session_fds:
            return
        fds = self._session_fds
        now = self._clock()
        floor = self._drained_at
        self._drained_at = now
        arm = self._arm
        # Until no socket holds anything, within a few rounds (packets keep
        # coming while we read; timers must not starve): a socket left with a
        # packet in it would carry a standing queue into every later wake-up.
        for _ in range(DRAIN_ROUNDS):
            ready = poll.poll(0, _EPOLL_MAX_EVENTS)
            if not ready:
                break
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
            for peer, data in got:
                # _take_session_packet's common case, inline: a call per
                # packet cost a point of a core at 1,000 sessions @ 50 ms (A/B).
                session = peer.session
                if session.receive_repeat(data, floor):
                    peer.rx_accepted_read = ready_at
                    if session.get_timer() != peer.timer_at:
                        arm(peer)
                else:
                    self._take_full(peer, data, floor)

    def _read_session_packet(self, peer: Peer, floor: int) -> bool:
        """Read and process one packet from ``peer``'s own socket; False: none there.

        It arrived after ``floor``.  Its TTL was checked by the kernel
        (attach_min_ttl_filter).
        """
        sock = peer.rx_sock
        if sock is None:
            return False
        try:
            data = sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            self._count_receive_error(peer, exc)
            return False
        self._take_session_packet(peer, data, floor, self._clock())
        return True

    def _count_receive_error(self, peer: Peer, exc: OSError) -> None:
        self.receive_errors += 1
        log.debug("receive error from %s: %s", peer.spec.display_remote(), exc)

    def _take_session_packet(self, peer: Peer, data: bytes, floor: int, by: int) -> None:
        """Process ``data``, just read from ``peer``'s own socket: it arrived
        after ``floor`` and by ``by``."""
        session = peer.session
        if session.receive_repeat(data, floor):
            # The common case: the peer said exactly what it said last time;
            # only the Detection Time moved (mostly past the next transmission,
            # which keeps the peer's place in the schedule).
            peer.rx_accepted_read = by
            if session.get_timer() != peer.timer_at:
                self._arm(peer)
            return
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
        self.datagram_received(
            data, peer.rx_from, spec.local, None, at, via_session=True, multihop=spec.multihop
        )
        if session.counters.packets_in != accepted:
            peer.rx_accepted_read = read_at
        else:
            peer.rx_dropped_read = read_at

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

    def _restamp(self, peer: Peer) -> bool:
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

    def _rx_holdoff(self) -> int:
        """How long a session packet may wait unread: see RX_HOLDOFF_MAX_US."""
        if self.rx_holdoff_us is not None:
            return self.rx_holdoff_us
        holdoff = self._holdoff_us
        if holdoff is None:
            holdoff = RX_HOLDOFF_MAX_US
            for peer in self.peers.values():
                rx = peer.session.required_min_rx_us
                if 0 < rx < holdoff:
                    holdoff = rx
            self._holdoff_us = holdoff
        return holdoff

    def _set_session_watch(self, watch: bool) -> None:
        if watch == self._session_watch:
            return
        loop = self._loop
        poll = self._session_poll
        if loop is None or loop.is_closed() or poll is None or poll.closed:
            self._session_watch = False
            return
        if watch:
            loop.add_reader(poll.fileno(), self._on_sessions_readable)
        else:
            loop.remove_reader(poll.fileno())
        self._session_watch = watch

    def _dedicate_socket(self, peer: Peer, addr: Any, now: int) -> None:
        """Give an established peer a receive socket of its own (see open_session_socket)."""
        if peer.rx_from == addr or now - peer.rx_connected_at < RECONNECT_INTERVAL_US:
            return
        peer.rx_connected_at = now
        self._release_session_socket(peer)
        spec = peer.spec
        try:
            sock = open_session_socket(
                spec.family,
                spec.local,
                spec.scope,
                sockaddr(spec.family, spec.remote, addr[1], spec.scope),
                self.port_of(spec),
                peer.session.min_rx_ttl if self.ttl_check else None,
            )
        except OSError as exc:
            log.debug("no dedicated socket for %s: %s", spec.display_remote(), exc)
            return
        peer.rx_sock = sock
        peer.rx_from = addr
        peer.rx_accepted_read = peer.rx_dropped_read = 0
        assert self._session_poll is not None
        self._session_fds[sock.fileno()] = peer
        self._session_poll.register(sock.fileno(), select.EPOLLIN)
        if not self._in_wakeup:
            self._schedule_wakeup()  # decides whether the loop watches the set

    def _release_session_socket(self, peer: Peer) -> None:
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

    def datagram_received(
        self,
        data: bytes,
        addr: Any,
        local: str,
        ttl: int | None,
        now: int | None = None,
        *,
        via_session: bool = False,
        multihop: bool = False,
    ) -> None:
        """Process one datagram that arrived on ``local``:3784 from ``addr``."""
        if now is None:
            now = self._clock()
        remote = addr[0]
        scope = 0
        if len(addr) == 4 and addr[3]:
            # IPv6 link-local: the scope (interface index) is part of the peer.
            scope = addr[3]
            remote = remote.partition("%")[0]
        table = self.table
        try:
            pkt = decode(data)
        except PacketError as exc:
            table.count_drop(exc.reason)
            self._log_drop(exc, remote, now)
            return
        try:
            if (
                self.unsolicited is not None
                and not pkt.your_discr
                and PeerKey(remote, local, scope, multihop) not in self.peers
            ):
                created = self._create_unsolicited(addr, remote, local, scope, ttl, multihop, now)
                if created is None:
                    table.count_drop(DropReason.UNKNOWN_PEER)
                    return
            session = table.demultiplex(pkt, remote, local, scope, multihop)
            peer = self.peers[session.key]
            if self.ttl_check and ttl is not None and ttl < session.min_rx_ttl:
                session.reject(DropReason.TTL, f"TTL {ttl} from {remote}")
            session.receive(pkt, now, data)
        except PacketError as exc:
            if exc.reason is not DropReason.SESSION_ADMIN_DOWN:  # expected, not news
                self._log_drop(exc, remote, now)
            return
        if log.isEnabledFor(logging.DEBUG):
            log.debug("received from %s: %s", remote, pkt)
        if not via_session:
            self._dedicate_socket(peer, addr, now)
        # Most packets change nothing we must act on: no packet to send, no
        # event, the same deadline (the next transmission) as before.
        if session._outbox or session._events or session.get_timer() != peer.timer_at:
            self._flush(peer, now)

    def _log_drop(self, exc: PacketError, remote: str, now: int) -> None:
        """Count drops per source and reason; log a summary at most every 10 s."""
        if log.isEnabledFor(logging.DEBUG):
            log.debug("dropped a packet from %s: %s", remote, exc)
        pending = self._drop_pending
        key = (exc.reason.value, remote)
        if key in pending or len(pending) < 1000:
            pending[key] = pending.get(key, 0) + 1
        if now - self._drop_logged_at < DROP_LOG_INTERVAL_US:
            return
        self._drop_logged_at = now
        top = sorted(pending.items(), key=lambda kv: -kv[1])[:5]
        summary = ", ".join(f"{n} x {reason} from {src}" for (reason, src), n in top)
        more = len(pending) - len(top)
        log.warning("dropped packets: %s%s", summary, f" (+{more} more)" if more > 0 else "")
        pending.clear()

    # ------------------------------------------------------- send and timers

    def _flush(self, peer: Peer, now: int) -> None:
        """Send what the session queued, report its events, re-arm its timer."""
        session = peer.session
        deadline = session.get_timer()
        if deadline is not None and deadline <= now:
            session.handle_timer(now)
        datagrams = session.datagrams_to_send()
        if datagrams:
            self._send(peer, datagrams)
        event = session.next_event()
        while event is not None:
            self._report(peer, event)
            event = session.next_event()
        self._arm(peer)

    def _send_batch(self, outgoing: list[tuple[Peer, bytes]]) -> None:
        """Send periodic packets of many sessions, one after another."""
        for peer, data in outgoing:
            if peer.connected:
                try:
                    peer.sock.send(data)
                except OSError as exc:
                    self._send_failed(peer, data, exc)
            else:
                self._send_one(peer, data)

    def _send(self, peer: Peer, datagrams: list[bytes]) -> None:
        for data in datagrams:
            self._send_one(peer, data)

    def _send_one(self, peer: Peer, data: bytes) -> None:
        try:
            if peer.connected:
                peer.sock.send(data)
            else:
                peer.sock.sendto(data, peer.dest)
        except OSError as exc:
            self._send_failed(peer, data, exc)

    def _send_failed(self, peer: Peer, data: bytes, exc: OSError) -> None:
        """Count a failed send of ``data``.  An ICMP port unreachable that came
        back for an earlier packet (nothing listens on the peer's 3784) is
        reported by a connected socket on this send instead of sending: this
        packet then goes after all."""
        self._count_send_error(peer, exc)
        if isinstance(exc, ConnectionRefusedError) and peer.connected:
            try:
                peer.sock.send(data)
            except OSError as again:
                self._count_send_error(peer, again)

    def _count_send_error(self, peer: Peer, exc: OSError) -> None:
        name = errno.errorcode.get(exc.errno or 0, "EIO")
        peer.send_errors[name] = peer.send_errors.get(name, 0) + 1
        if peer.send_errors[name] in (1, 10, 100, 1000) or log.isEnabledFor(logging.DEBUG):
            log.warning(
                "cannot send to %s: %s (%d times)",
                peer.spec.display_remote(),
                exc.strerror,
                peer.send_errors[name],
            )

    def _arm(self, peer: Peer) -> None:
        session = peer.session
        deadline = session.get_timer()
        if deadline == peer.timer_at:
            return
        peer.timer_at = deadline
        if deadline is None:
            return
        if deadline == session.detect_deadline_us:
            self._detect_instants.add(deadline)
        if (
            self._schedule.add(deadline, peer)
            and not self._in_wakeup
            and (self._wakeup_at is None or deadline < self._wakeup_at)
        ):
            self._schedule_wakeup()

    def _schedule_wakeup(self) -> None:
        """Arm the loop's one timer at the earliest live deadline."""
        schedule = self._schedule
        at = schedule.earliest()
        while at is not None and not any(p.timer_at == at for p in schedule.items_at(at)):
            schedule.pop_earliest()  # stale: those peers' deadlines moved or they are gone
            self._detect_instants.discard(at)
            at = schedule.earliest()
        if len(schedule) > 2 * len(self.peers) + 1024:
            schedule.compact(lambda instant, peer: peer.timer_at == instant)
            self._detect_instants = {i for i in self._detect_instants if schedule.items_at(i)}
        if at != self._wakeup_at:
            self._wakeup_at = at
            precise = self._precise
            if precise is not None:
                try:
                    if at is not None:
                        precise.arm(at)
                    elif precise.armed_at is not None:
                        precise.disarm()
                except OSError as exc:
                    log.warning("timerfd failed (%s): waking by call_at from now on", exc)
                    precise.close()
                    self._precise = precise = None
            elif self._wakeup is not None:
                self._wakeup.cancel()
                self._wakeup = None
            if at is not None and precise is None:
                assert self._loop is not None
                fire = at
                if self._clock() - self._slept_at > DETECT_SLEEP_GAP_US and self._detection_at(at):
                    fire = at - DETECT_EARLY_US
                self._wakeup = self._loop.call_at(fire / US_PER_SECOND, self._on_wakeup)
        # Receive coalescing: packets on session sockets wait for the next
        # wake-up when it comes soon enough; otherwise the loop wakes us.
        if self._session_fds:
            self._set_session_watch(at is None or at - self._clock() > self._rx_holdoff())
        elif self._session_watch:
            self._set_session_watch(False)

    def _detection_at(self, instant: int) -> bool:
        """Whether a Detection Time expires at ``instant`` (not just a transmission)."""
        return instant in self._detect_instants and any(
            p.timer_at == instant and p.session.detect_deadline_us == instant
            for p in self._schedule.items_at(instant)
        )

    def _on_wakeup(self) -> None:
        """Serve every session whose deadline has come, read what came, re-arm once."""
        target = self._wakeup_at
        self._wakeup = None
        self._wakeup_at = None
        self.timing.timer_wakeups += 1
        now = self._clock()
        if (
            target is not None
            and self._precise is None
            and 0 < target - now <= DETECT_EARLY_US + EARLY_WAKEUP_US
            and now - self._slept_at > DETECT_SLEEP_GAP_US
        ):
            # Woken early for a Detection Time (see DETECT_EARLY_US): wait out
            # the rest; nothing else of ours is due before it.  Not again
            # within DETECT_SLEEP_GAP_US: when many sessions expire one after
            # another (a link down), the loop must not spend its time asleep.
            time.sleep((target - now) / US_PER_SECOND)
            now = self._slept_at = self._clock()
        self._in_wakeup = True
        try:
            self._serve_due(now)
            # Then what the established sessions' sockets hold (receive
            # coalescing: this wake-up was coming anyway).
            self._drain_sessions()
        finally:
            self._in_wakeup = False
        self._schedule_wakeup()

    def _serve_due(self, now: int) -> None:
        """Run the timers of every session due by ``now``.

        Expiring Detection Times go first.  A burst of transmissions takes a
        while, so every BURST_SLICE sessions (DUE_CHECK while a Detection Time
        is armed) the clock is read again and what came due meanwhile goes
        before the rest.
        """
        # A loop with coarse timers (uvloop: 1 ms) may wake us a little early:
        # within EARLY_WAKEUP_US that is on time; earlier, it is re-armed, so
        # no session is ever declared down before its time.
        limit = now + EARLY_WAKEUP_US
        tx_lateness = self.timing.tx_lateness
        detect_lateness = self.timing.detect_lateness
        schedule = self._schedule
        work: deque[tuple[int, Peer]] = deque()
        outgoing: list[tuple[Peer, bytes]] = []
        self._take_due(limit, work)
        # A Detection Time armed (most often none is): look at the clock more
        # often, so that it is not kept waiting behind a burst.
        detect_pending = bool(self._detect_instants)
        served = 0
        schedule_add = schedule.add
        while work:
            deadline, peer = work.popleft()
            if peer.timer_at != deadline:
                continue
            session = peer.session
            at = now if now > deadline else deadline
            # The steady state: the same packet again (None: not that case,
            # or a Detection Time has come), sent with the others of the
            # slice (below), back to back.
            data = session.periodic_packet(at)
            if data is not None:
                tx_lateness.record(at - deadline)
                outgoing.append((peer, data))
                tx = session.next_tx_us
                detect = session.detect_deadline_us
                if tx is not None and (detect is None or tx < detect):
                    # The next transmission comes first: list the peer there
                    # (we are in the wake-up; it re-arms the loop after).
                    peer.timer_at = tx
                    schedule_add(tx, peer)
                else:
                    if detect is not None:
                        # The peer fell silent: its Detection Time is next,
                        # from the exact arrival of its last packet (so that
                        # the wake-up for it, and its precise sleep, are not
                        # spent early).
                        self._restamp(peer)
                    peer.timer_at = None
                    self._arm(peer)
            else:
                detect = session.detect_deadline_us
                if detect is not None and detect <= at:
                    # A Detection Time must not expire while the packet that
                    # restarts it waits in the session's socket: read that
                    # first; and the last packet read may have come later than
                    # counted.
                    for _ in range(EXPIRY_READ_MAX):
                        if not self._read_session_packet(peer, self._drained_at):
                            break
                    if self._restamp(peer):
                        self._arm(peer)
                    if peer.timer_at != deadline:
                        continue  # it moved on: the peer is listed at its new deadline
                    detect = session.detect_deadline_us
                    if detect is not None and detect <= at:
                        detect_lateness.record(at - detect)
                elif deadline == session.next_tx_us:
                    tx_lateness.record(at - deadline)
                peer.timer_at = None
                self._flush(peer, at)  # runs the timer that is due, sends, re-arms
            served += 1
            if work and (served % BURST_SLICE == 0 or (detect_pending and served % DUE_CHECK == 0)):
                now = self._clock()
                earliest = schedule.earliest()
                if earliest is not None and earliest <= now + EARLY_WAKEUP_US:
                    # Out with what is ready, and what came due goes first.
                    if outgoing:
                        self._send_batch(outgoing)
                        outgoing = []
                    limit = now + EARLY_WAKEUP_US
                    due: deque[tuple[int, Peer]] = deque()
                    self._take_due(limit, due)
                    due.extend(work)
                    work = due
                    detect_pending = bool(self._detect_instants)
                elif len(outgoing) >= BURST_SLICE:
                    self._send_batch(outgoing)
                    outgoing = []
        if outgoing:
            self._send_batch(outgoing)

    def _take_due(self, limit: int, work: deque[tuple[int, Peer]]) -> None:
        """Move every (deadline, peer) due by ``limit`` from the schedule to
        ``work``: expiring Detection Times first, then the rest in time order."""
        schedule = self._schedule
        detect_instants = self._detect_instants
        later: list[tuple[int, Peer]] = []
        while (deadline := schedule.earliest()) is not None and deadline <= limit:
            _, peers = schedule.pop_earliest()
            if deadline in detect_instants:
                detect_instants.discard(deadline)
                for peer in peers:
                    if deadline == peer.session.detect_deadline_us:
                        work.append((deadline, peer))  # Detection Times first
                    else:
                        later.append((deadline, peer))
            else:
                later.extend([(deadline, peer) for peer in peers])
        work.extend(later)

    # --------------------------------------------------------------- events

    def _report(self, peer: Peer, event: Event) -> None:
        if isinstance(event, StateChanged):
            self._log_state_change(peer, event)
            if peer.dynamic:
                if event.new_state is State.UP:
                    if peer.expiry is not None:
                        peer.expiry.cancel()
                        peer.expiry = None
                elif event.old_state is State.UP:
                    self._expire_later(peer)
        elif isinstance(event, PollSequenceCompleted):
            log.debug(
                "session %s: poll sequence completed",
                peer.spec.display_remote(),
                extra=self._fields(peer),
            )
        for listener in tuple(self._listeners):
            try:
                listener(peer, event)
            except Exception:
                log.exception("event listener failed")

    def _log_state_change(self, peer: Peer, ev: StateChanged) -> None:
        fields = self._fields(peer)
        fields.update(
            old_state=ev.old_state.label,
            new_state=ev.new_state.label,
            diag=int(ev.diag),
            diag_name=ev.diag.label,
            # The Detection Time in force at the change: after an expiry the
            # session has already reset it to 0 with the remote's values.
            detect_time_ms=ev.detection_time_us / 1000,
        )
        if ev.diag == 1 and ev.last_rx_us is not None:
            fields["ms_since_last_packet"] = round((ev.at_us - ev.last_rx_us) / 1000, 3)
        level = (
            logging.INFO
            if ev.new_state is State.UP or ev.old_state is not State.UP
            else logging.WARNING
        )
        log.log(
            level,
            "session %s %s -> %s (diag %s)",
            peer.spec.display_remote(),
            ev.old_state.name,
            ev.new_state.name,
            ev.diag.label,
            extra=fields,
        )

    def _fields(self, peer: Peer) -> dict[str, Any]:
        s = peer.session
        return {
            "local": peer.spec.local,
            "remote": peer.spec.display_remote(),
            "local_discr": s.local_discr,
            "remote_discr": s.remote_discr,
            "state": s.state.label,
            "remote_diag": int(s.remote_diag),
            "tx_interval_ms": s.transmit_interval_us / 1000,
            "rx_interval_ms": max(s.required_min_rx_us, s.remote_desired_min_tx_us) / 1000,
            "detect_time_ms": s.detection_time_us / 1000,
        }

    # ----------------------------------------------------------------- intro

    def _close_peer(self, peer: Peer, *, keep_tx: bool = False) -> None:
        if peer.dynamic:
            peer.dynamic = False
            self.dynamic_sessions -= 1
        self._release_session_socket(peer)
        self._holdoff_us = None
        if peer.expiry is not None:
            peer.expiry.cancel()
            peer.expiry = None
        peer.timer_at = None  # its schedule entries are stale now
        if not keep_tx:
            peer.sock.close()
        self.table.remove(peer.spec.key)
        rkey = (peer.spec.local, peer.spec.scope, peer.spec.multihop)
        receiver = self._receivers.get(rkey)
        if receiver is not None:
            receiver.users -= 1
            if receiver.users <= 0 and not receiver.permanent:
                self._unwatch(receiver)
                del self._receivers[rkey]

    def _unwatch(self, receiver: _Receiver) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(receiver.sock.fileno())
        receiver.sock.close()
