"""Unsolicited sessions (RFC 9468): who may create one, how fast, for how long.

Off unless configured.  A packet with Your Discriminator 0 from an unknown
address creates a passive session only if it passes, in this order: the
multihop setting, the allowed prefixes, the TTL rule (single hop: 255), the
session limit, a token bucket (``rate_per_s``, ``burst``), the work allowed
in this turn of the event loop (``busy``) and last the interface check,
which asks the kernel for a route (``interface``, or ``pending`` while it has
not answered).  Each refusal is counted by reason; the remote's next packet
(it keeps sending, once a second while down) simply tries again.

Three bounds keep a flood of sources from hurting the sessions that run:

* **Work per loop turn.**  Creating a session opens sockets and logs (about
  0.3-0.6 ms on the loop).  Whatever the configured rate, at most
  :data:`CREATE_PER_TURN` creations are attempted in one turn of the loop, and
  none once those of the turn took :data:`CREATE_TIME_PER_TURN_US`: a burst
  holds the sessions' timers back by a few milliseconds at most, and the
  next turn serves them.  Removals are bounded the same way
  (:data:`REMOVE_PER_TURN`), and log lines (:data:`LOG_BURST` per
  :data:`LOG_INTERVAL_S`, the rest summarised).
* **No reflection.**  The source of an unsolicited packet may be spoofed, and
  the session it creates sends toward that source.  A blind spoofer cannot
  bring it Up (RFC 5880 §6.8.6: a packet with Your Discriminator 0 must say
  Down), so a dynamic session that has not come Up within
  :data:`NEVER_UP_TIMEOUT_S` is removed (``never_up``).  Until then it sends at
  most one packet a second (§6.8.3), jittered to no less than 0.75 s apart
  (§6.8.7), plus one at once in answer: **one spoofed packet buys at most
  1 + floor(4 / 0.75) = 6 packets toward its source**, then nothing, instead
  of one a second for ``down_timeout_s`` (60 s by default).  A real peer
  answers within a second or two; were its handshake slower, its next Down
  packet starts a new session.  A session that came Up once has shown that
  its peer receives what we send: it is removed after staying down for
  ``down_timeout_s``.
* **Nothing that can block.**  The interface check asks the kernel for the
  route (RTM_GETROUTE) on a non-blocking netlink socket: about 6 us, answered
  within the send (Linux 4.14 and later serve it without the RTNL lock);
  an answer that is not there at once is taken from the next query's reading
  (``pending`` until then).  It used to run ``ip route get`` as a
  synchronous subprocess: about 3 ms of the loop per new source.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import replace

from ..config import Hooks, PeerSpec, UnsolicitedConfig
from ..io.netlink import NetlinkError, Route, RouteNetlink, parse
from ..protocol.events import StateChanged
from ..protocol.packet import State
from ..protocol.session import SessionConfig, minimum_rx_ttl
from .peer import Peer
from .reporting import fields

log = logging.getLogger("aiobfd")

#: Unsolicited sessions whose creation is attempted in one turn of the event
#: loop, at most (the rest are refused as ``busy``; their remotes retry).
CREATE_PER_TURN = 16
#: ... and no more once the creations of this turn took this long: a burst
#: holds the other sessions' timers back by this, plus one creation and the
#: first packet of each session created (about 0.1 ms each), at most.
CREATE_TIME_PER_TURN_US = 2000
#: A dynamic session that has not come Up this long after its creation is
#: removed (a spoofed source cannot bring it Up): see the module's docstring.
NEVER_UP_TIMEOUT_S = 4.0
#: Dynamic sessions removed in one turn of the loop, at most (more wait for
#: the next turn).
REMOVE_PER_TURN = 32
#: Log lines about unsolicited sessions (accepted, removed, not created),
#: each kind: this many one by one per interval, the rest as one summary.
LOG_BURST = 10
LOG_INTERVAL_S = 10.0
#: Dynamic sessions run no hooks of their own (one frozen instance for all).
_NO_HOOKS = Hooks()
#: The kernel's route answers kept, by address, and for how long.
ROUTE_CACHE_MAX = 1024
ROUTE_CACHE_S = 5.0


class Admission:
    """Admits unsolicited sessions and removes those that do not stay."""

    def __init__(self, config: UnsolicitedConfig | None, *, ttl_check: bool) -> None:
        self.config = config
        self.ttl_check = ttl_check
        self.refused: dict[str, int] = {}
        """Unsolicited sessions not created, by reason (prefix, limit, rate, busy, ...)."""
        self.expired: dict[str, int] = {}
        """Dynamic sessions removed, by reason: ``never_up`` (not Up within
        NEVER_UP_TIMEOUT_S of their creation) or ``down`` (down for ``down_timeout_s``)."""
        self.created = 0
        """Sessions created by unsolicited packets, in all."""
        self.sessions = 0
        """Sessions created by unsolicited packets that exist now."""
        self.never_up_s = NEVER_UP_TIMEOUT_S
        """See NEVER_UP_TIMEOUT_S (never longer than ``down_timeout_s``)."""
        self._prefixes = PrefixSet(config.prefixes if config else ())
        # Shared by the sessions created (frozen): fewer objects for the
        # garbage collector to walk when thousands come and go.
        base = config.session if config else SessionConfig()
        self._configs = {m: replace(base, passive=True, multihop=m) for m in (False, True)}
        self._tokens = float(config.burst) if config else 0.0
        self._tokens_at = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._create: Callable[[PeerSpec], Peer] | None = None
        self._remove: Callable[[Peer], None] | None = None
        # This turn of the loop: creations attempted, seconds they took.
        self._turn_attempts = 0
        self._turn_spent_s = 0.0
        self._turn_handle: asyncio.Handle | None = None
        # Removal deadlines (loop time) of the dynamic sessions not Up, and
        # one queue per reason: each reason's delay is fixed, so each queue is
        # in deadline order.  One wake-up serves them all.
        self._deadline: dict[Peer, float] = {}
        self._queues: dict[str, deque[tuple[float, Peer]]] = {"never_up": deque(), "down": deque()}
        self._sweep_handle: asyncio.Handle | None = None
        self._sweep_at = 0.0
        self._routes: RouteLookup | None = None
        self._accepted_log = _LogBudget("unsolicited sessions accepted")
        self._removed_log = _LogBudget("unsolicited sessions removed")
        self._error_log = _LogBudget("unsolicited sessions not created (error)")

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
        ``remove`` takes away one that did not stay."""
        self._loop = loop
        self._tokens_at = now
        self._create = create
        self._remove = remove
        for budget in (self._accepted_log, self._removed_log, self._error_log):
            budget.loop = loop

    def close(self) -> None:
        """Cancel the timers and close the route lookup's socket."""
        for handle in (self._turn_handle, self._sweep_handle):
            if handle is not None:
                handle.cancel()
        self._turn_handle = self._sweep_handle = None
        for budget in (self._accepted_log, self._removed_log, self._error_log):
            budget.close()
        if self._routes is not None:
            self._routes.close()
            self._routes = None

    # ------------------------------------------------------------ admission

    def admit(
        self, remote: str, local: str, scope: int, ttl: int | None, multihop: bool, now: int
    ) -> Peer | None:
        """A session for an unknown peer in an allowed prefix, or None (counted)."""
        cfg = self.config
        assert cfg is not None and self._create is not None
        reason = ""
        if multihop and not cfg.multihop:
            reason = "multihop"
        elif not self._prefixes.allows(remote):
            reason = "prefix"
        elif self.ttl_check and ttl is not None and ttl < minimum_rx_ttl(self._configs[multihop]):
            reason = "ttl"  # RFC 5881 §5, RFC 5883 §5: before any state is made
        elif self.sessions >= cfg.max_sessions:
            reason = "limit"
        else:
            self._tokens = min(
                float(cfg.burst), self._tokens + (now - self._tokens_at) * cfg.rate_per_s / 1e6
            )
            self._tokens_at = now
            if self._tokens < 1:
                reason = "rate"
            elif (
                self._turn_attempts >= CREATE_PER_TURN
                or self._turn_spent_s * 1e6 >= CREATE_TIME_PER_TURN_US
            ):
                reason = "busy"  # no token taken: the next turn may
        if reason:
            self._refuse(reason)
            return None
        self._tokens -= 1
        started = time.perf_counter()
        try:
            return self._admit(remote, local, scope, multihop, cfg)
        finally:
            self._count_turn(time.perf_counter() - started)

    def _admit(
        self, remote: str, local: str, scope: int, multihop: bool, cfg: UnsolicitedConfig
    ) -> Peer | None:
        assert self._create is not None
        if cfg.interfaces and not multihop:
            reason = self._interface_check(remote, scope, cfg)
            if reason:
                self._refuse(reason)
                return None
        family = socket.AF_INET6 if ":" in remote else socket.AF_INET
        try:
            interface = socket.if_indextoname(scope) if scope else ""
            spec = PeerSpec(
                remote, local, family, scope, interface, self._configs[multihop], hooks=_NO_HOOKS
            )
            peer = self._create(spec)
        except (OSError, ValueError) as exc:
            self._refuse("error")
            if self._error_log.allow():
                log.warning("cannot create unsolicited session for %s: %s", remote, exc)
            return None
        self.created += 1
        if self._accepted_log.allow():
            log.info(
                "unsolicited session from %s accepted (RFC 9468): local discriminator %d, "
                "source port %d",
                spec.display_remote(),
                peer.session.local_discr,
                peer.source_port,
                extra=fields(peer),
            )
        self._expire_after(peer, min(self.never_up_s, cfg.down_timeout_s), "never_up")
        return peer

    def _count_turn(self, spent_s: float) -> None:
        """One more creation attempted in this turn of the loop, taking ``spent_s``."""
        self._turn_attempts += 1
        self._turn_spent_s += spent_s
        if self._turn_handle is None and self._loop is not None:
            # Runs at the next turn: what this one may still do is decided by then.
            self._turn_handle = self._loop.call_soon(self._next_turn)

    def _next_turn(self) -> None:
        self._turn_handle = None
        self._turn_attempts = 0
        self._turn_spent_s = 0.0

    def _refuse(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def _interface_check(self, remote: str, scope: int, cfg: UnsolicitedConfig) -> str:
        """Whether a single-hop peer is reached through one of the allowed
        interfaces: "" if so, else the reason to refuse it."""
        if scope:
            return "" if _index_name(scope) in cfg.interfaces else "interface"
        if self._routes is None:
            try:
                self._routes = RouteLookup()
            except OSError as exc:
                if self._error_log.allow():
                    log.warning("cannot ask the kernel for routes: %s", exc)
                return "interface"
        index = self._routes.interface_of(remote)
        if index is None:
            return "pending"
        return "" if index and _index_name(index) in cfg.interfaces else "interface"

    # ------------------------------------------------------------- lifetime

    def adopt(self, peer: Peer) -> None:
        """``peer`` was created by an unsolicited packet: count it."""
        peer.dynamic = True
        self.sessions += 1

    def forget(self, peer: Peer) -> None:
        """``peer`` goes, or the configuration now owns it: no longer dynamic."""
        if peer.dynamic:
            peer.dynamic = False
            self.sessions -= 1
        self._deadline.pop(peer, None)  # its queue entry is now stale

    def state_changed(self, peer: Peer, event: StateChanged) -> None:
        """A dynamic session that leaves Up is removed unless it comes back."""
        if event.new_state is State.UP:
            self._deadline.pop(peer, None)
        elif event.old_state is State.UP and self.config is not None:
            self._expire_after(peer, self.config.down_timeout_s, "down")

    def _expire_after(self, peer: Peer, delay_s: float, reason: str) -> None:
        loop = self._loop
        if loop is None:
            return
        at = loop.time() + delay_s
        self._deadline[peer] = at
        self._queues[reason].append((at, peer))
        self._arm_sweep(at)

    def _arm_sweep(self, at: float) -> None:
        handle = self._sweep_handle
        if handle is not None:
            if self._sweep_at <= at:
                return
            handle.cancel()
        assert self._loop is not None
        self._sweep_at = at
        self._sweep_handle = self._loop.call_at(at, self._sweep)

    def _sweep(self) -> None:
        """Remove the dynamic sessions whose time is up, REMOVE_PER_TURN at most."""
        self._sweep_handle = None
        loop = self._loop
        assert loop is not None and self._remove is not None
        now = loop.time()
        removals = REMOVE_PER_TURN
        looks = 8 * REMOVE_PER_TURN  # stale entries are cheap, not free
        for reason, queue in self._queues.items():
            while queue and queue[0][0] <= now and removals and looks:
                at, peer = queue.popleft()
                looks -= 1
                if self._deadline.get(peer) != at:
                    continue  # it came Up, went, or has a later deadline
                del self._deadline[peer]
                if not peer.dynamic or peer.session.state is State.UP:
                    continue
                removals -= 1
                self.expired[reason] = self.expired.get(reason, 0) + 1
                if self._removed_log.allow():
                    log.info(
                        "unsolicited session %s removed: %s",
                        peer.spec.display_remote(),
                        "never came up" if reason == "never_up" else "stayed down",
                    )
                self._remove(peer)
        heads = [queue[0][0] for queue in self._queues.values() if queue]
        if not heads:
            return
        if min(heads) <= now:
            # More are due: the next turn goes on.
            self._sweep_at = now
            self._sweep_handle = loop.call_soon(self._sweep)
        else:
            self._arm_sweep(min(heads))


class PrefixSet:
    """Prefixes as integers: whether an address (as the kernel writes it) is
    in one, in about a microsecond (``ipaddress`` objects take ten; this is
    asked of every packet from an unknown source)."""

    def __init__(self, prefixes: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> None:
        self._v4: list[tuple[int, int]] = []
        self._v6: list[tuple[int, int]] = []
        for net in prefixes:
            nets = self._v4 if net.version == 4 else self._v6
            nets.append((int(net.network_address), int(net.netmask)))

    def allows(self, address: str) -> bool:
        if ":" in address:
            family, nets = socket.AF_INET6, self._v6
        else:
            family, nets = socket.AF_INET, self._v4
        try:
            value = int.from_bytes(socket.inet_pton(family, address), "big")
        except OSError:
            return False
        return any(value & mask == net for net, mask in nets)


class _LogBudget:
    """Log lines of one kind: LOG_BURST per LOG_INTERVAL_S one by one, the
    rest counted and summarised in one line when the interval ends."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.loop: asyncio.AbstractEventLoop | None = None
        self._window_at = -LOG_INTERVAL_S
        self._logged = 0
        self._held = 0
        self._flush_handle: asyncio.TimerHandle | None = None

    def allow(self) -> bool:
        """Whether to log this one now (else it is counted)."""
        now = time.monotonic()
        if now - self._window_at >= LOG_INTERVAL_S:
            self._window_at = now
            self._logged = 0
        if self._logged < LOG_BURST:
            self._logged += 1
            return True
        self._held += 1
        if self._flush_handle is None and self.loop is not None:
            delay = self._window_at + LOG_INTERVAL_S - now
            self._flush_handle = self.loop.call_later(max(delay, 0.0), self._flush)
        return False

    def _flush(self) -> None:
        self._flush_handle = None
        if self._held:
            log.info("%d more %s in the last %.0f s", self._held, self.what, LOG_INTERVAL_S)
            self._held = 0

    def close(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._flush()


def _index_name(index: int) -> str:
    try:
        return socket.if_indextoname(index)
    except OSError:
        return ""  # gone


# ------------------------------------------------------------ route lookup
#: Replies read from the netlink socket per query, at most.
_READS_PER_QUERY = 16


class RouteLookup:
    """The interface through which the kernel routes to an address
    (``ip route get``'s ``dev``), asked by RTM_GETROUTE on a non-blocking
    netlink socket of the daemon's network namespace.

    The kernel answers within the send, so the answer is read at once; one
    that is not there yet is read with a later query and kept (by address,
    ROUTE_CACHE_MAX answers for ROUTE_CACHE_S), so the remote's next packet
    finds it.  Nothing here waits.
    """

    def __init__(self) -> None:
        self._nl = RouteNetlink()
        self._asked: dict[int, str] = {}
        """Queries not answered yet: sequence number -> address."""
        self._answers: dict[str, tuple[int, float]] = {}
        """Address -> (interface index, 0 if no route; when it was answered)."""
        self.queries = 0

    def close(self) -> None:
        self._nl.close()

    def interface_of(self, address: str) -> int | None:
        """The index of the interface the route to ``address`` goes through
        (0: no route), or None while the kernel has not answered."""
        self._read()
        index = self._cached(address)
        if index is None:
            self._ask(address)
            self._read()
            index = self._cached(address)
        return index

    def _cached(self, address: str) -> int | None:
        answer = self._answers.get(address)
        if answer is None:
            return None
        if time.monotonic() - answer[1] > ROUTE_CACHE_S:
            del self._answers[address]
            return None
        return answer[0]

    def _ask(self, address: str) -> None:
        try:
            seq = self._nl.ask_route(address)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ENOBUFS):
                log.debug("route query for %s failed: %s", address, exc)
            return
        self.queries += 1
        asked = self._asked
        asked[seq] = address
        while len(asked) > ROUTE_CACHE_MAX:
            del asked[next(iter(asked))]

    def _read(self) -> None:
        """Take the answers waiting on the socket (a few at most; an error
        answer, no route, is interface 0; lost answers are asked again)."""
        if not self._asked:
            return
        for answer in self._nl.read_parsed(parse, _READS_PER_QUERY):
            address = self._asked.pop(answer.seq, None)
            if address is None:
                continue
            if isinstance(answer, NetlinkError):
                log.debug("no route to %s: %s", address, answer.message)
            index = answer.ifindex if isinstance(answer, Route) else 0
            answers = self._answers
            answers.pop(address, None)
            answers[address] = (index, time.monotonic())
            while len(answers) > ROUTE_CACHE_MAX:
                del answers[next(iter(answers))]
