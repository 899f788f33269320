"""Timers: one wake-up of the event loop for every session's deadline.

Session deadlines live in one :class:`~aiobfd.protocol.schedule.Schedule`
(transmissions share instants, see ``Session.tx_instants``); the loop holds a
single wake-up at the earliest (after aioquic's ``transmit()`` / re-arm
pattern), and each wake-up first reads what waits on the established
sessions' sockets (a Final, a new interval, a Poll must take effect before
the next transmission), then serves every session due by then; a wake-up in
which a Detection Time expires serves first and reads after (that session's
own socket is read before it is judged).  The wake-up is a timerfd
(:mod:`aiobfd.io.timerfd`), precise to the microsecond where ``call_at``
comes up to a millisecond late; ``call_at`` where there is none.

Nothing here polls.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

from ..io.clock import monotonic_us
from ..io.timerfd import PreciseTimer, open_precise_timer
from ..protocol.constants import US_PER_SECOND
from ..protocol.schedule import Schedule
from ..protocol.stats import TimingStats
from .peer import Peer
from .receive import Receive
from .transmit import send_batch

log = logging.getLogger("aiobfd")

#: A timer that fires at most this early is taken as on time.
EARLY_WAKEUP_US = 50
#: Without a timerfd the event loop sleeps in whole milliseconds (epoll_wait),
#: rounded up: for an expiring Detection Time it is woken this much early and
#: the rest is slept precisely, so that Down is declared at the deadline, not
#: up to 1 ms after.
DETECT_EARLY_US = 1000
#: At most one such sleep in this long (bounds the loop's time asleep to 10 %).
DETECT_SLEEP_GAP_US = 10_000
#: Periodic packets sent back to back in a burst, after their bookkeeping;
#: and sessions served between two looks at the clock for deadlines that
#: came due meanwhile.
BURST_SLICE = 16
#: The same while a Detection Time is armed: a session costs tens of
#: microseconds when its objects are cold (16 took a millisecond at 300 ms
#: intervals), and an expiring Detection Time must not wait that long.
DUE_CHECK = 4


class Wakeup:
    """The schedule of every session's deadline and the loop's one wake-up."""

    def __init__(
        self,
        clock: Callable[[], int],
        flush: Callable[[Peer, int], None],
        receive: Receive,
        live_peers: Callable[[], int],
    ) -> None:
        self._clock = clock
        self._flush = flush
        """Runs a session's due timer, sends, reports and re-arms it."""
        self._receive = receive
        self._live_peers = live_peers
        self.timing = TimingStats()
        self._loop: asyncio.AbstractEventLoop | None = None
        # Deadlines by instant.  A peer listed at an instant that is no longer
        # its timer_at is stale and skipped.
        self._schedule: Schedule[Peer] = Schedule()
        self._detect_instants: set[int] = set()
        """Instants of the schedule at which a Detection Time was armed (some
        may be stale); most instants are transmissions only."""
        self._call_at: asyncio.TimerHandle | None = None
        self._precise: PreciseTimer | None = None
        """The loop's one wake-up as a timerfd (None: ``call_at``, see io/timerfd.py)."""
        self._wakeup_at: int | None = None
        self._in_wakeup = False
        self._slept_at = -DETECT_SLEEP_GAP_US

    @property
    def tx_instants(self) -> Schedule[Peer]:
        """The instants sessions draw their transmissions from (RFC 5880 §6.8.7)."""
        return self._schedule

    @property
    def armed_at(self) -> int | None:
        """The instant the loop wakes us next for the sessions (None: nothing armed)."""
        return self._wakeup_at

    @property
    def precise(self) -> bool:
        """Whether the wake-up is a timerfd (else ``call_at``)."""
        return self._precise is not None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        if self._clock is monotonic_us:  # the kernel's clock is the protocol clock
            self._precise = open_precise_timer(loop, self._on_wakeup)

    def close(self) -> None:
        if self._call_at is not None:
            self._call_at.cancel()
            self._call_at = None
        if self._precise is not None:
            self._precise.close()
            self._precise = None
        self._wakeup_at = None
        self._schedule.clear()
        self._detect_instants.clear()

    # ------------------------------------------------------------- arming

    def arm(self, peer: Peer) -> None:
        """List ``peer`` at its session's next deadline; wake the loop earlier if needed."""
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
            self.reschedule()

    def reschedule(self) -> None:
        """Arm the loop's one timer at the earliest live deadline (or earlier,
        to read the session sockets while packets are coming: see
        :meth:`Receive.follow_up_at`)."""
        schedule = self._schedule
        at = schedule.earliest()
        while at is not None and not any(p.timer_at == at for p in schedule.items_at(at)):
            schedule.pop_earliest()  # stale: those peers' deadlines moved or they are gone
            self._detect_instants.discard(at)
            at = schedule.earliest()
        if len(schedule) > 2 * self._live_peers() + 1024:
            schedule.compact(lambda instant, peer: peer.timer_at == instant)
            self._detect_instants = {i for i in self._detect_instants if schedule.items_at(i)}
        follow_up = self._receive.follow_up_at(at)
        if follow_up is not None:
            at = follow_up
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
            elif self._call_at is not None:
                self._call_at.cancel()
                self._call_at = None
            if at is not None and precise is None:
                assert self._loop is not None
                fire = at
                if self._clock() - self._slept_at > DETECT_SLEEP_GAP_US and self._detection_at(at):
                    fire = at - DETECT_EARLY_US
                self._call_at = self._loop.call_at(fire / US_PER_SECOND, self._on_wakeup)
        # Receive coalescing: packets on session sockets wait for the next
        # wake-up when it comes soon enough; otherwise the loop wakes us.
        self._receive.wakeup_armed(at)

    def _detection_at(self, instant: int) -> bool:
        """Whether a Detection Time expires at ``instant`` (not just a transmission)."""
        return instant in self._detect_instants and any(
            p.timer_at == instant and p.session.detect_deadline_us == instant
            for p in self._schedule.items_at(instant)
        )

    # ------------------------------------------------------------ waking

    def _on_wakeup(self) -> None:
        """Serve every session whose deadline has come, read what came, re-arm once."""
        target = self._wakeup_at
        self._call_at = None
        self._wakeup_at = None
        self.timing.timer_wakeups += 1
        now = self._clock()
        if (
            target is not None
            and self._precise is None
            and 0 < target - now <= DETECT_EARLY_US + EARLY_WAKEUP_US
            and now - self._slept_at > DETECT_SLEEP_GAP_US
            and self._detection_at(target)
        ):
            # Woken early for a Detection Time (see DETECT_EARLY_US): wait out
            # the rest; nothing else of ours is due before it.  Not again
            # within DETECT_SLEEP_GAP_US: when many sessions expire one after
            # another (a link down), the loop must not spend its time asleep.
            time.sleep((target - now) / US_PER_SECOND)
            now = self._slept_at = self._clock()
        self._in_wakeup = True
        try:
            if self._expiring(now + EARLY_WAKEUP_US):
                # A Detection Time expires now: it goes first, then the
                # drain.  The drain reads every established session's socket
                # (hundreds of packets with 10,000 sessions: 5-10 ms) and
                # would make the Down that late; the expiring session's own
                # socket is read before its Detection Time is judged.
                self._serve_due(self._clock())
                self._receive.drain()
            else:
                # First what the established sessions' sockets hold (receive
                # coalescing: this wake-up was coming anyway): what they say
                # (a Final, a slower interval) changes what is sent now.
                self._receive.drain()
                self._serve_due(self._clock())
        finally:
            self._in_wakeup = False
        self.reschedule()

    def _expiring(self, limit: int) -> bool:
        """Whether an armed Detection Time is due by ``limit`` (most often none
        is armed: an empty set)."""
        return bool(self._detect_instants) and any(
            instant <= limit and self._detection_at(instant) for instant in self._detect_instants
        )

    def receive_ready(self) -> None:
        """The loop woke us for a packet on an established session's socket."""
        self.timing.receive_wakeups += 1
        self._in_wakeup = True
        try:
            self._receive.drain()
        finally:
            self._in_wakeup = False
        self.reschedule()

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
        receive = self._receive
        work: deque[tuple[int, Peer]] = deque()
        outgoing: list[tuple[Peer, bytes]] = []
        self._take_due(limit, work)
        # A Detection Time armed (most often none is): look at the clock more
        # often, so that it is not kept waiting behind a burst.
        detect_pending = bool(self._detect_instants)
        until_check = DUE_CHECK if detect_pending else BURST_SLICE
        # The periodic packets' lateness, recorded once for a run of equal
        # values: the sessions of a cohort, served between two looks at the
        # clock, are all as late as one another.
        late_run = late_count = 0
        schedule_add = schedule.add
        pop = work.popleft
        while work:
            deadline, peer = pop()
            if peer.timer_at != deadline:
                continue
            session = peer.session
            if now > deadline:
                at = now
                late = now - deadline
            else:
                at = deadline
                late = 0
            # The steady state: the same packet again (None: not that case,
            # or a Detection Time has come), sent with the others of the
            # slice (below), back to back.
            data = session.periodic_packet(at)
            if data is not None:
                if late == late_run:
                    late_count += 1
                else:
                    if late_count:
                        tx_lateness.record_many(late_run, late_count)
                    late_run = late
                    late_count = 1
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
                        receive.restamp(peer)
                    peer.timer_at = None
                    self.arm(peer)
            else:
                detect = session.detect_deadline_us
                if detect is not None and detect <= at:
                    # A Detection Time must not expire while the packet that
                    # restarts it waits in the session's socket: read that
                    # first; and the last packet read may have come later than
                    # counted.
                    receive.read_pending(peer)
                    if receive.restamp(peer):
                        self.arm(peer)
                    if peer.timer_at != deadline:
                        continue  # it moved on: the peer is listed at its new deadline
                    detect = session.detect_deadline_us
                    if detect is not None and detect <= at:
                        detect_lateness.record(at - detect)
                elif deadline == session.next_tx_us:
                    tx_lateness.record(late)
                peer.timer_at = None
                self._flush(peer, at)  # runs the timer that is due, sends, re-arms
            until_check -= 1
            if not until_check and work:
                now = self._clock()
                earliest = schedule.earliest()
                if earliest is not None and earliest <= now + EARLY_WAKEUP_US:
                    # Out with what is ready, and what came due goes first.
                    if outgoing:
                        send_batch(outgoing)
                        outgoing = []
                    limit = now + EARLY_WAKEUP_US
                    due: deque[tuple[int, Peer]] = deque()
                    self._take_due(limit, due)
                    due.extend(work)
                    work = due
                    pop = work.popleft
                    detect_pending = bool(self._detect_instants)
                elif len(outgoing) >= BURST_SLICE:
                    send_batch(outgoing)
                    outgoing = []
                until_check = DUE_CHECK if detect_pending else BURST_SLICE
        if outgoing:
            send_batch(outgoing)
        if late_count:
            tx_lateness.record_many(late_run, late_count)

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
