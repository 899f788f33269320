"""The engine's facade: sessions from peer specs, driven by asyncio.

This is where the sans-IO core meets the event loop.  :class:`Daemon` owns
the sessions (:class:`~.peer.Peer` by key, the core's
:class:`~aiobfd.protocol.registry.SessionTable`) and their lifecycle: start,
add, change, remove, shut down.  The rest is done by one room each:

* :mod:`.receive` - listeners and established peers' sockets; the one entry
  of a packet into the core;
* :mod:`.wakeup` - every session's deadline in one schedule and the loop's
  single wake-up (a timerfd), serving the sessions due;
* :mod:`.transmit` - sending, and counting what the kernel refuses;
* :mod:`.admission` - unsolicited sessions (RFC 9468);
* :mod:`.echo` - echo: unaffiliated echo sessions (RFC 9747), and the RFC
  5880 Echo function of Control sessions (ours on a peer of its own, and
  looping the BFD peer's echo packets back): packet sockets, the next hop's
  address, what comes back;
* :mod:`.reporting` - session events to the log and to listeners;
* :mod:`.reconcile` - a reload, session by session, without flaps;
* :mod:`.turns` - turns of background work (a query, a scrape, a reload)
  that end before the sessions' next wake-up.

After any input (a packet, a timer, a command) :meth:`Daemon.flush` drains
the session's outputs: it sends the packets, reports the events and re-arms
the session's deadline.  Nothing here polls.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import random
from collections.abc import Callable
from dataclasses import replace

from ..config import PeerSpec, UnsolicitedConfig, check_local_address, resolve
from ..io.clock import monotonic_us
from ..io.netns import ifindex_of
from ..io.ports import SourcePorts
from ..io.sockets import close_transmit_socket, open_transmit_socket, sockaddr
from ..protocol.constants import MULTIHOP_PORT, SINGLE_HOP_PORT
from ..protocol.echo import EchoFailed
from ..protocol.events import Event, SessionRemoved, StateChanged
from ..protocol.registry import PeerKey, SessionTable
from ..protocol.session import EchoRescheduled, Session
from ..protocol.stats import TimingStats
from . import reconcile
from .admission import Admission
from .drain import Drain
from .echo import Echo
from .links import Links
from .peer import EventListener, Peer
from .receive import Receive
from .reporting import Reporter, fields
from .transmit import send
from .turns import TURN_BUDGET_US, Turn
from .wakeup import Wakeup

log = logging.getLogger("aiobfd")

#: AdminDown burst on shutdown and removal: packets per session and the gap between them.
SHUTDOWN_REPEATS = 3
SHUTDOWN_GAP_S = 0.05
#: Sessions made at run time are frozen out of the garbage collector's reach
#: this long after the first of a burst (see Daemon._freeze_soon).
FREEZE_DELAY_S = 1.0

__all__ = ["Daemon", "EventListener", "Peer", "monotonic_us"]


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
        follow_links: bool = True,
    ) -> None:
        self._initial = list(peers or [])
        self.follow_links = follow_links
        """Follow link and address events (see aiobfd.engine.links)."""
        self._rng = rng or random.SystemRandom()
        self._clock = clock
        self.align_tx = align_tx
        """Periodic transmissions on shared instants (see aiobfd.engine.wakeup)."""
        self.unsolicited = unsolicited
        # Discriminators and source ports from the OS's generator; per-packet
        # jitter from a fast one seeded by it (one getrandom() a packet showed up
        # in profiles).
        jitter_rng = rng or random.Random(random.SystemRandom().getrandbits(64))
        self.table = SessionTable(self._rng, jitter_rng)
        self.ports = SourcePorts(self._rng)
        """Source ports held by the sessions: unique among them (RFC 5881 §4)."""
        self.peers: dict[PeerKey, Peer] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = asyncio.Event()
        self._freeze_handle: asyncio.TimerHandle | None = None
        self._stopping = False
        self._farewells: dict[PeerKey, tuple[asyncio.TimerHandle, Peer]] = {}
        """Removed sessions still repeating their AdminDown, by peer key."""
        self.started_at_us = 0
        self.reporter = Reporter()
        self.admission = Admission(unsolicited, ttl_check=ttl_check)
        self.receive = Receive(
            self.peers,
            self.table,
            self.admission,
            self.reporter,
            clock,
            self.flush,
            (port, multihop_port),
            ttl_check=ttl_check,
            rx_holdoff_us=rx_holdoff_us,
        )
        self.wakeup = Wakeup(clock, self.flush, self.receive, self.peers.__len__)
        self.echo = Echo(
            self.table,
            self.reporter,
            clock,
            self.flush,
            self._rng,
            jitter_rng,
            ttl_check=ttl_check,
        )
        self._arm = self.wakeup.arm
        self.waiting: dict[PeerKey, PeerSpec] = {}
        """Configured sessions whose local address is not on this host yet."""
        self._journal: set[PeerKey] | None = None
        """While a reload runs in slices: the keys of sessions added, removed
        or changed meanwhile by anything else (see :meth:`begin_journal`)."""
        self.links = Links(self.peers, self.waiting, self._path_changed, self._retry_waiting)
        """Link and address events: a session's path down or up (see aiobfd.engine.links)."""
        self.drain = Drain(self.peers, self._report, self.disable, self.enable)
        """Planned withdrawals: drain, wait, AdminDown (see aiobfd.engine.drain)."""

    # ------------------------------------------------------------- views

    def now(self) -> int:
        """The protocol clock, in integer microseconds (monotonic)."""
        return self._clock()

    def turn(self, budget_us: int = TURN_BUDGET_US) -> Turn:
        """A clock for background work (a query, a scrape, a reload) that
        yields before the sessions' next wake-up (see aiobfd.engine.turns)."""
        wakeup = self.wakeup
        return Turn(self._clock, lambda: wakeup.armed_at, budget_us)

    @property
    def ttl_check(self) -> bool:
        """RFC 5881 §5 / RFC 5883 §5: drop packets below the session's minimum TTL."""
        return self.receive.ttl_check

    @property
    def rx_holdoff_us(self) -> int | None:
        """Receive coalescing (see aiobfd.engine.receive; None: automatic, 0: off)."""
        return self.receive.rx_holdoff_us

    @property
    def timing(self) -> TimingStats:
        return self.wakeup.timing

    @property
    def receive_errors(self) -> int:
        return self.receive.receive_errors

    @property
    def session_sockets(self) -> int:
        """Established sessions read from a socket of their own (see Receive.limit_sockets)."""
        return self.receive.session_sockets

    @property
    def unsolicited_refused(self) -> dict[str, int]:
        """Unsolicited sessions not created, by reason (prefix, limit, rate, ...)."""
        return self.admission.refused

    @property
    def dynamic_sessions(self) -> int:
        """Sessions created by unsolicited packets that exist now."""
        return self.admission.sessions

    def port_of(self, spec: PeerSpec) -> int:
        """RFC 5881 §4 / RFC 5883 §5: the destination port of a session."""
        return self.receive.port_of(spec)

    def add_listener(self, listener: EventListener) -> None:
        """Call ``listener(peer, event)`` for every session event."""
        self.reporter.add_listener(listener)

    def remove_listener(self, listener: EventListener) -> None:
        self.reporter.remove_listener(listener)

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Bind sockets and start every configured session."""
        self._loop = loop = asyncio.get_running_loop()
        self.started_at_us = now = self._clock()
        self.receive.start(loop, now, self._arm, self.wakeup.receive_ready)
        self.echo.start(loop)
        self.wakeup.start(loop)
        self.admission.start(loop, now, self._add_dynamic, self._expire)
        try:
            if self.follow_links:
                self.links.start(loop)
            for spec in self._initial:
                self.add_or_wait(spec)
            if self.unsolicited is not None:
                for address in self.unsolicited.listen:
                    self._listen_unsolicited(address)
        except BaseException:
            self.close()
            raise

    def _listen_unsolicited(self, text: str) -> None:
        addr = resolve(text)[0]
        check_local_address(addr)
        modes = (False, True) if self.unsolicited and self.unsolicited.multihop else (False,)
        for multihop in modes:
            self.receive.listen(addr.family, addr.address, addr.scope, multihop).permanent = True

    def close(self) -> None:
        """Release every socket and timer at once (no goodbye packets)."""
        if self._freeze_handle is not None:
            self._freeze_handle.cancel()
            self._freeze_handle = None
        for peer in list(self.peers.values()):
            if peer.spec.echo is not None:
                self.echo.remove(peer)
            else:
                self._close_peer(peer)
        self.peers.clear()
        self.links.close()
        self.drain.close()
        self.wakeup.close()
        self.receive.close()
        self.admission.close()
        self.echo.close()

    async def shutdown(self) -> None:
        """RFC 5880 §6.8.16: tell every remote we are going AdminDown, then close.

        Each session sends AdminDown with diag 7 at once and twice more, 50 ms
        apart, so one lost packet does not turn our goodbye into a timeout.
        """
        now = self._clock()
        for peer in self.peers.values():
            peer.session.disable(now)
            self.flush(peer, now)
        for _ in range(SHUTDOWN_REPEATS - 1):
            await asyncio.sleep(SHUTDOWN_GAP_S)
            now = self._clock()
            for peer in self.peers.values():
                peer.session.transmit_now(now)
                self.flush(peer, now)
        self.close()
        self._stopped.set()

    def request_stop(self) -> None:
        """Ask :meth:`serve_forever` to shut down gracefully."""
        if self._loop is not None and not self._stopping:
            self._stopping = True
            self._loop.create_task(self.shutdown())

    async def serve_forever(self) -> None:
        await self._stopped.wait()

    # -------------------------------------------------------------- peers

    def add_peer(self, spec: PeerSpec, *, dynamic: bool = False) -> Peer:
        """Create and start a session for ``spec`` (OSError if sockets fail)."""
        assert self._loop is not None, "start() first"
        key = spec.key
        if key in self.peers:
            raise ValueError(f"a session for {spec.display_remote()} exists already")
        # A session to the same peer that is saying goodbye says no more: its
        # AdminDown would take the remote's new session down again.
        self._end_farewell(key)
        if spec.echo is not None:
            return self._add_echo(spec)
        receive = self.receive
        listener = receive.listener_for(spec)
        try:
            sock = open_transmit_socket(
                spec.family,
                spec.local,
                spec.scope,
                self.ports,
                netns=spec.netns,
                device=spec.device,
            )
        except OSError:
            receive.release_listener(spec, used=False)
            raise
        try:
            # The interface's index in the session's own namespace.
            ifindex = spec.scope or (ifindex_of(sock, spec.interface) if spec.interface else 0)
        except OSError:
            close_transmit_socket(sock, self.ports)
            receive.release_listener(spec, used=False)
            raise
        now = self._clock()
        session = self.table.add(key, spec.session, now)
        session.align_tx = self.align_tx
        if self.align_tx:
            session.tx_instants = self.wakeup.tx_instants
        if spec.shutdown:
            session.disable(now)
        peer = Peer(
            spec, session, sock, sockaddr(spec.family, spec.remote, self.port_of(spec), spec.scope)
        )
        peer.ifindex = ifindex
        try:
            # Connected, the kernel keeps the route and each send skips the
            # address; without a route yet, sendto() reports what is wrong.
            sock.connect(peer.dest)
            peer.connected = True
        except OSError as exc:
            log.debug("transmit socket for %s not connected: %s", spec.display_remote(), exc)
        if not dynamic:
            try:
                self._start_echo(peer, now)
            except OSError:
                close_transmit_socket(sock, self.ports)
                self.table.remove(key)
                receive.release_listener(spec, used=False)
                raise
        if dynamic:
            self.admission.adopt(peer)
        listener.users += 1
        self.peers[key] = peer
        self._touched(key)
        receive.session_added(peer)
        # A dynamic session's creation is logged by admission, within its budget.
        log.log(
            logging.DEBUG if dynamic else logging.INFO,
            "session %s created: local discriminator %d, source port %d",
            spec.display_remote(),
            session.local_discr,
            peer.source_port,
            extra=fields(peer),
        )
        self.flush(peer, now)
        self.links.evaluate(peer)
        return peer

    def add_or_wait(self, spec: PeerSpec) -> Peer | None:
        """:meth:`add_peer`, or, when the local address is not on this host
        (yet), a waiting session opened when it appears (see engine.links)."""
        try:
            return self.add_peer(spec)
        except OSError as exc:
            if exc.errno != errno.EADDRNOTAVAIL or spec.echo is not None:
                raise
        if spec.key not in self.waiting:
            log.warning(
                "session %s waits for its local address %s (not on this host yet)",
                spec.display_remote(),
                spec.local,
            )
        self.waiting[spec.key] = spec
        self._touched(spec.key)
        return None

    def _retry_waiting(self, key: PeerKey) -> None:
        """The local address of a waiting session appeared: open it."""
        spec = self.waiting.pop(key, None)
        if spec is None or key in self.peers:
            return
        self._touched(key)
        try:
            self.add_peer(spec)
        except OSError as exc:
            self.waiting[key] = spec
            if exc.errno != errno.EADDRNOTAVAIL:
                log.error("session %s cannot start: %s", spec.display_remote(), exc)

    def _path_changed(self, peer: Peer, up: bool) -> None:
        """Links saw ``peer``'s path go (Down at once, diag 5) or come back."""
        session = peer.session
        assert isinstance(session, Session)
        now = self._clock()
        if up:
            session.path_up(now)
        else:
            session.path_down(now)
        self.flush(peer, now)

    def _start_echo(self, peer: Peer, now: int) -> None:
        """RFC 5880 §6.4 for a Control session: loop the remote's echo packets
        back (a nonzero Required Min Echo RX advertised), and our own Echo
        function (an echo interval configured).  OSError, EchoCapabilityError
        without CAP_NET_RAW; nothing is left behind then."""
        config = peer.spec.session
        if config.required_min_echo_rx_us and not self.echo.reflecting(peer):
            self.echo.reflect_for(peer)
        if config.echo_tx_us and self.echo.echo_peer_of(peer) is None:
            try:
                carrier = self.echo.attach(
                    peer,
                    now,
                    align_tx=self.align_tx,
                    tx_instants=self.wakeup.tx_instants if self.align_tx else None,
                )
            except OSError:
                self.echo.unreflect(peer)
                raise
            self._arm(carrier)

    def _stop_echo(self, peer: Peer) -> None:
        """No echo for ``peer`` any more (removed, or a reload turned it off)."""
        self.echo.detach(peer)
        self.echo.unreflect(peer)

    def _change_echo(self, peer: Peer, now: int) -> None:
        """A reload changed the echo settings of a Control session."""
        session = peer.session
        assert isinstance(session, Session)
        config = peer.spec.session
        session.set_echo_rx(config.required_min_echo_rx_us, now)
        if not config.required_min_echo_rx_us:
            self.echo.unreflect(peer)
        carrier = self.echo.echo_peer_of(peer)
        if carrier is not None and not config.echo_tx_us:
            self.echo.detach(peer)
        elif carrier is not None:
            echo = session.echo
            assert echo is not None
            echo.set_config(replace(echo.config, interval_us=config.echo_tx_us), now)
            self._arm(carrier)
        self._start_echo(peer, now)

    def _add_echo(self, spec: PeerSpec) -> Peer:
        """An RFC 9747 unaffiliated echo session (see aiobfd.engine.echo)."""
        now = self._clock()
        peer = self.echo.add(
            spec,
            now,
            align_tx=self.align_tx,
            tx_instants=self.wakeup.tx_instants if self.align_tx else None,
        )
        self.peers[spec.key] = peer
        self._touched(spec.key)
        log.info(
            "session %s created: unaffiliated echo, local discriminator %d",
            spec.display_remote(),
            peer.session.local_discr,
            extra=fields(peer),
        )
        self.flush(peer, now)
        return peer

    def _add_dynamic(self, spec: PeerSpec) -> Peer:
        peer = self.add_peer(spec, dynamic=True)
        self._freeze_soon()
        return peer

    def _freeze_soon(self) -> None:
        """Sessions were made at run time: in a moment, move every object
        alive then out of the garbage collector's reach (``gc.freeze``).

        A session lives for seconds at least and is freed by reference
        counting when it goes (it holds no reference cycle); left to the
        collector, thousands of them made its full passes long: 40-52 ms
        each under a flood of unsolicited sessions
        (bench/adversarial_unsolicited.py), a third of a 150 ms Detection
        Time.  Once a second at most."""
        if self._freeze_handle is not None or self._loop is None:
            return
        self._freeze_handle = self._loop.call_later(FREEZE_DELAY_S, self._freeze)

    def _freeze(self) -> None:
        self._freeze_handle = None
        gc.freeze()

    def remove_peer(self, key: PeerKey) -> None:
        """Forget a session, telling the remote AdminDown (RFC 5880 §6.8.16).

        The AdminDown goes out at once and twice more 50 ms apart, as on
        shutdown, so one lost packet does not turn the goodbye into a timeout.
        """
        self._touched(key)
        self.waiting.pop(key, None)
        self.links.reasons.pop(key, None)
        self.drain.forget(key)
        peer = self.peers.pop(key, None)
        if peer is None:
            return
        now = self._clock()
        if peer.spec.echo is not None:
            # Nobody to say goodbye to: the gateway runs no BFD.
            peer.session.disable(now)
            self.flush(peer, now)
            self.echo.remove(peer)
            self._report(peer, SessionRemoved(now))
            return
        peer.session.disable(now)
        self.flush(peer, now)
        self._close_peer(peer, keep_tx=True)
        self._report(peer, SessionRemoved(now))
        if self._loop is None or self._loop.is_closed():
            close_transmit_socket(peer.sock, self.ports)
            return
        self._farewells[key] = (
            self._loop.call_later(SHUTDOWN_GAP_S, self._farewell, peer, SHUTDOWN_REPEATS - 1),
            peer,
        )

    def _farewell(self, peer: Peer, remaining: int) -> None:
        peer.session.transmit_now(self._clock())
        datagrams = peer.session.datagrams_to_send()
        if datagrams:
            send(peer, datagrams)
        key = peer.spec.key
        if remaining > 1 and self._loop is not None and not self._loop.is_closed():
            self._farewells[key] = (
                self._loop.call_later(SHUTDOWN_GAP_S, self._farewell, peer, remaining - 1),
                peer,
            )
        else:
            self._farewells.pop(key, None)
            close_transmit_socket(peer.sock, self.ports)

    def _end_farewell(self, key: PeerKey) -> None:
        """Stop the AdminDown repeats of a removed session to ``key``, if any."""
        pending = self._farewells.pop(key, None)
        if pending is not None:
            handle, peer = pending
            handle.cancel()
            close_transmit_socket(peer.sock, self.ports)

    def _expire(self, peer: Peer) -> None:
        """Remove a dynamic session that stayed down (no AdminDown: it is down)."""
        key = peer.spec.key
        if self.peers.get(key) is not peer:
            return
        del self.peers[key]
        self._touched(key)
        self._close_peer(peer)
        self._report(peer, SessionRemoved(self._clock()))

    def _close_peer(self, peer: Peer, *, keep_tx: bool = False) -> None:
        self._stop_echo(peer)
        self.admission.forget(peer)
        self.receive.release(peer)
        self.receive.session_removed(peer)
        peer.timer_at = None  # its schedule entries are stale now
        if not keep_tx:
            close_transmit_socket(peer.sock, self.ports)
        self.table.remove(peer.spec.key)
        self.receive.release_listener(peer.spec)

    # ------------------------------------------------------- administration

    def disable(self, key: PeerKey) -> None:
        peer = self.peers[key]
        self._touched(key)
        now = self._clock()
        peer.session.disable(now)
        self.flush(peer, now)

    def enable(self, key: PeerKey) -> None:
        peer = self.peers[key]
        self._touched(key)
        now = self._clock()
        peer.session.enable(now)
        self.flush(peer, now)

    def set_timers(self, key: PeerKey, **timers: int | None) -> None:
        peer = self.peers[key]
        self._touched(key)
        now = self._clock()
        peer.session.set_timers(now, **timers)
        self.receive.holdoff_changed()
        self.flush(peer, now)

    # ---------------------------------------------------------------- reload

    def begin_journal(self) -> None:
        """A reload begins that applies its file a slice per loop turn: from
        now on, note every session added, removed or changed otherwise
        (``aiobfdctl peer ...``, a local address that came, an unsolicited
        session), so that its final pass (:meth:`apply_config_to`) looks at
        those again, not at every session."""
        self._journal = set()

    def end_journal(self) -> set[PeerKey]:
        """Stop noting (see :meth:`begin_journal`); the keys noted."""
        keys, self._journal = self._journal or set(), None
        return keys

    def applied(self, key: PeerKey) -> None:
        """The reload itself just made ``key``'s session what its file says:
        nothing to look at again for it, unless something changes it later."""
        if self._journal is not None:
            self._journal.discard(key)

    def look_again(self, key: PeerKey) -> None:
        """The reload's final pass must look at ``key``'s session again."""
        self._touched(key)

    def _touched(self, key: PeerKey) -> None:
        if self._journal is not None:
            self._journal.add(key)

    def apply_config_to(
        self, wanted: dict[PeerKey, PeerSpec], keys: set[PeerKey]
    ) -> dict[str, list[str]]:
        """:meth:`apply_config` for the sessions of ``keys`` only (``wanted``:
        the whole file's peers by key): a reload's final pass after its slices,
        for what changed meanwhile (:meth:`end_journal`).  Waiting sessions the
        file no longer has are dropped too."""
        for key in [k for k in self.waiting if k not in wanted]:
            del self.waiting[key]
        running = self.peers
        summary: dict[str, list[str]] = {"added": [], "removed": [], "changed": [], "unchanged": []}
        for key in keys:
            peer = running.get(key)
            spec = wanted.get(key)
            if spec is None:
                if peer is not None and not peer.dynamic:
                    summary["removed"].append(peer.spec.display_remote())
                    self.remove_peer(key)
                continue
            if peer is None:
                self.add_or_wait(spec)
                summary["added"].append(spec.display_remote())
                continue
            ((_, _, changed),) = reconcile.compare(running, [spec])
            if changed:
                self.change_peer(peer, spec)
                summary["changed"].append(spec.display_remote())
            else:
                summary["unchanged"].append(spec.display_remote())
        return summary

    def apply_config(self, specs: list[PeerSpec]) -> dict[str, list[str]]:
        """Make the running sessions match ``specs`` (a reload), without flaps.

        Removed peers say AdminDown and go; new ones start; changed timers
        reach the remote through a Poll Sequence (RFC 5880 §6.8.3); passive,
        authentication and administrative state are changed in place.  A peer
        whose spec did not change is not touched at all.  Run-time changes
        (``aiobfdctl peer ...``) are replaced by what the file says.
        """
        wanted_keys = {spec.key for spec in specs}
        for key in [k for k in self.waiting if k not in wanted_keys]:
            del self.waiting[key]
        plan = reconcile.changes(self.peers, specs)
        summary: dict[str, list[str]] = {"added": [], "removed": [], "changed": [], "unchanged": []}
        for peer in plan.removed:
            summary["removed"].append(peer.spec.display_remote())
            self.remove_peer(peer.spec.key)
        for spec, running, changed in plan.wanted:
            if running is None:
                self.add_or_wait(spec)
                summary["added"].append(spec.display_remote())
            elif not changed:
                summary["unchanged"].append(spec.display_remote())
            else:
                self.change_peer(running, spec)
                summary["changed"].append(spec.display_remote())
        return summary

    def change_peer(self, peer: Peer, spec: PeerSpec) -> None:
        """Change a running session to ``spec`` in place (a reload's change),
        or replace it when its sockets must change."""
        self._touched(spec.key)
        if (peer.spec.echo is None) != (spec.echo is None) or peer.spec.device != spec.device:
            # A Control session becomes an echo session or the reverse, or its
            # sockets must be bound to another device: a new one.
            self.remove_peer(peer.spec.key)
            self.add_peer(spec)
            return
        now = self._clock()
        if spec.echo is not None:
            self.echo.change(peer, spec, now)
            self.flush(peer, now)
            return
        self.admission.forget(peer)  # the file now configures what a remote had started
        old = peer.spec.session
        reconcile.apply_spec(peer, spec, now)
        new = spec.session
        if (old.required_min_echo_rx_us, old.echo_tx_us) != (
            new.required_min_echo_rx_us,
            new.echo_tx_us,
        ):
            self._change_echo(peer, now)
        self.receive.holdoff_changed()
        self.receive.refilter(peer)
        self.flush(peer, now)

    # ------------------------------------------------------------- outputs

    def flush(self, peer: Peer, now: int) -> None:
        """Send what the session queued, report its events, re-arm its timer."""
        session = peer.session
        deadline = session.get_timer()
        if deadline is not None and deadline <= now:
            session.handle_timer(now)
        datagrams = session.datagrams_to_send()
        if datagrams:
            send(peer, datagrams)
        event = session.next_event()
        while event is not None:
            self._report(peer, event)
            event = session.next_event()
        self._arm(peer)

    def _report(self, peer: Peer, event: Event) -> None:
        if isinstance(event, EchoRescheduled | EchoFailed):
            self._echo_event(peer, event)  # the engine's own business
            return
        if peer.dynamic and isinstance(event, StateChanged):
            self.admission.state_changed(peer, event)
        self.reporter.report(peer, event)

    def _echo_event(self, peer: Peer, event: Event) -> None:
        if isinstance(event, EchoRescheduled):
            # The Control session's Echo function moved its deadlines.
            carrier = self.echo.echo_peer_of(peer)
            if carrier is not None:
                self._arm(carrier)
        else:
            # Our echo packets stopped coming back: the Control session went
            # Down (diag 2); its Down goes out and is reported now.
            owner = self.peers.get(peer.spec.key)
            if owner is not None and owner is not peer:
                self.flush(owner, self._clock())
