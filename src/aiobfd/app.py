"""The application: aiobfd as a running process, composed from one :class:`Settings`.

:class:`Application` builds the engine (:class:`aiobfd.engine.Daemon`) and what
serves beside it - the state-change hooks, the control socket, the Prometheus
endpoint, systemd's notifications - and owns start, reload and stop.
:func:`run` is the process around it: logging and the event loop.  Where the
settings come from (command line, file) is :mod:`aiobfd.cli`'s and
:mod:`aiobfd.config`'s business.

Start-up order, and why:

1. signal handlers, before anything slow: a SIGTERM or SIGHUP while thousands
   of sessions open is handled (once the engine runs), not fatal;
2. RLIMIT_NOFILE raised to what the sessions need (:func:`fit_file_limit`;
   refused with one line naming the limit, the need and ``LimitNOFILE=``
   when it cannot be), then the engine's sockets and sessions, then the hooks;
3. ``gc.freeze()``: start-up objects live as long as the process, so the
   collector's pauses on the packet path stay short;
4. the control socket, then the metrics endpoint;
5. ``READY=1`` for systemd, once every socket is open.

A socket that cannot be opened ends the start with :class:`StartError` (one
line; :meth:`Application.run` prints it and returns exit status 2).

Before the event loop starts, :func:`run` locks the process's memory
(``lock_memory``) and puts the main thread, which becomes the event loop's,
under SCHED_FIFO (``realtime_priority``) with SCHED_RESET_ON_FORK: threads
and hooks started later run SCHED_OTHER.  Refused, either ends the start
with one line and status 2.

A reload (:meth:`Application.reload_async`, for SIGHUP) reads the file in a
child process (:mod:`aiobfd.reload_reader`), so that nothing it does - files,
name lookups, secrets, parsing thousands of peers - holds the event loop or
shares its interpreter lock; the result comes back a chunk of peers a loop
turn and is applied on the loop, all or nothing.  A read that takes longer
than :data:`RELOAD_READ_TIMEOUT_S` is given up (the child is killed) and the
reload refused; so is one whose sessions would not fit in RLIMIT_NOFILE
(counted in the child, raised on the loop as far as it goes).  Sorting the
peers against the running ones goes a slice a turn too.  Applying it,
sessions are removed, added and changed in place a slice at a time
(:data:`APPLY_TURN_US` of a loop turn at most, and never past the sessions'
next wake-up: opening a session's sockets
takes about 0.3 ms, and 5,000 at once held the loop 1.5 s; changing 3,000
sessions' timers in one go held it 69 ms, a slice at a time 32 ms at most).
What else changes sessions between the slices (``aiobfdctl peer ...``, a
local address that comes, an unsolicited session) is noted by the engine, and
the final pass, in one go, looks at those sessions only: a pass over every
session took 7-11 ms of the loop at 10,000.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import gc
import logging
import os
import resource
import signal
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from . import __version__, core_build, reload_reader
from .config import ConfigError, DaemonSettings, Hooks, PeerSpec, Settings
from .control import ControlError, ControlServer
from .engine import Daemon, Peer, reconcile
from .hooks import MAX_RUNNING, Dampening, HookRunner
from .io import fdlimit
from .logs import setup_logging
from .metrics import (
    DEFAULT_METRICS_ADDRESS,
    DEFAULT_METRICS_PORT,
    MetricsServer,
    start_metrics_server,
)
from .paths import default_socket_path
from .protocol.constants import US_PER_MS
from .protocol.registry import PeerKey
from .routes import KernelRoutes
from .systemd import Notifier

log = logging.getLogger("aiobfd")

_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1)

#: Seconds a reload may take to read and check the file before it is refused.
#: Each host name has :data:`aiobfd.config.RESOLVE_TIMEOUT_S` of it at most.
RELOAD_READ_TIMEOUT_S = 30.0
#: The longest a reload adds or removes sessions before it lets the loop
#: turn (µs); a turn also ends before the sessions' next wake-up
#: (``Daemon.turn``).
APPLY_TURN_US = 10_000
#: Peers a reload sorts against the running ones between two looks at the
#: clock (500 took about 2 ms); a turn ends after a millisecond, or before
#: the sessions' next wake-up.
COMPARE_SLICE = 100
#: Peers a reload indexes by key, or running sessions it looks over for the
#: ones the file no longer has, between two looks at the clock (10,000 in
#: one go took 2-4 ms, more right after a fork).
KEY_SLICE = 1000

_NO_FILE = "no configuration file to reload (started without --config)"


class StartError(Exception):
    """A socket the daemon needs cannot be opened; the message says which, in one line."""


class Application:
    """The daemon built from ``settings``; ``reload_from`` re-reads them (None: no file).

    ``await run()`` starts, serves until :meth:`stop`, and closes.  SIGINT and
    SIGTERM call :meth:`stop`; SIGHUP and the control socket's ``reload``
    call :meth:`reload`.
    """

    def __init__(
        self, settings: Settings, reload_from: Callable[[], Settings] | None = None
    ) -> None:
        self.settings = settings
        """The configuration running now (replaced by each accepted reload)."""
        self._reload_from = reload_from
        daemon = settings.daemon
        self.daemon = Daemon(
            list(settings.peers),
            ttl_check=daemon.ttl_check,
            unsolicited=settings.unsolicited,
            rx_holdoff_us=_holdoff_us(daemon.receive_holdoff_ms, settings),
        )
        self.daemon.drain.wait_ms = daemon.drain_wait_ms
        self.notifier = Notifier.from_environment()
        self.hooks: HookRunner | None = None
        self.routes: KernelRoutes | None = None
        """The kernel routes of ``[[routes]]`` (aiobfd.routes)."""
        self.control: ControlServer | None = None
        self.metrics: MetricsServer | None = None
        self._running = False
        """The engine has started: stop and reload act on it."""
        self._ready = False
        """READY=1 was sent: STOPPING=1 follows on the way out."""
        self._stop_requested = False
        self._reload_requested = False
        self._reload_lock = asyncio.Lock()
        """One reload at a time (SIGHUP and the control socket)."""
        self._reader: reload_reader.ReaderHost | None = None
        """The reloads' reader, forked at start (see aiobfd.reload_reader)."""
        self._sighup_task: asyncio.Task[None] | None = None
        self._sighup_again = False
        """A SIGHUP came while a reload was under way: read the file once more."""
        self._warned: set[str] = set()
        """Warnings about the configuration already logged (once each)."""

    def _on_sigusr1(self) -> None:
        """SIGUSR1: drain every session (as ``aiobfdctl drain --all``)."""
        if self._running:
            daemon = self.daemon
            daemon.drain.drain(list(daemon.peers), daemon.now())

    # ------------------------------------------------------------ lifecycle

    async def run(self) -> int:
        """Start, serve until stopped, close; the exit status (2: a socket failed)."""
        try:
            await self.start()
        except StartError as exc:
            await self.close()
            print(f"aiobfd: error: {exc}", file=sys.stderr)
            return 2
        try:
            await self.daemon.serve_forever()
        finally:
            await self.close()
        log.info("aiobfd stopped")
        return 0

    async def start(self) -> None:
        """Open everything in the order of the module docstring (StartError on failure)."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, self.stop)
        loop.add_signal_handler(signal.SIGTERM, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        loop.add_signal_handler(signal.SIGUSR1, self._on_sigusr1)

        try:
            fit = fit_file_limit(self.settings)
        except fdlimit.FileLimitError as exc:
            raise StartError(str(exc)) from None
        self.daemon.receive.limit_sockets(fit.receive_sockets)
        if self._reload_from is not None:
            # Before the sessions exist: forking the daemon later stops its
            # loop for milliseconds (see aiobfd.reload_reader).
            try:
                self._reader = reload_reader.ReaderHost.start(
                    self._reload_from, descriptor_need, self.settings
                )
            except OSError as exc:
                log.warning("no reader process (%s): each reload forks one", exc)
        try:
            await self.daemon.start()
        except OSError as exc:
            raise StartError(f"cannot open sockets: {exc}") from None
        self._running = True
        self._log_warnings(self.settings)
        daemon = self.settings.daemon
        self.hooks = HookRunner(
            self.daemon,
            _hooks_of,
            dampening=self._dampening(),
            pass_env=daemon.hook_pass_env,
            max_running=daemon.hook_max_running or MAX_RUNNING,
        )
        self.routes = KernelRoutes(self.daemon, dampening=self._dampening())
        self.routes.configure(self.settings.routes)
        if self._stop_requested:
            self.daemon.request_stop()
        elif self._reload_requested:
            self._on_sighup()
        gc.freeze()

        path = daemon.control_socket or default_socket_path()
        if path != "none":
            control = ControlServer(
                self.daemon, path, self.reload_async if self._reload_from is not None else None
            )
            try:
                await control.start()
            except OSError as exc:
                raise StartError(f"control socket: {exc}") from None
            self.control = control

        port = DEFAULT_METRICS_PORT if daemon.metrics_port is None else daemon.metrics_port
        if port:
            address = daemon.metrics_address
            address = DEFAULT_METRICS_ADDRESS if address is None else address
            try:
                self.metrics = await start_metrics_server(self.daemon, address, port)
            except OSError as exc:
                raise StartError(f"metrics endpoint {address}:{port}: {exc}") from None

        sessions = len(self.settings.peers)
        if not self._stop_requested:
            self.notifier.ready(f"{sessions} session(s)")
            self._ready = True
        log.info(
            "aiobfd %s (core: %s) running %d session(s)%s%s",
            __version__,
            core_build(),
            sessions,
            f", control socket {path}" if self.control else "",
            f", metrics on {self.metrics.url}" if self.metrics else "",
        )

    def stop(self) -> None:
        """Stop gracefully: STOPPING=1, then every session says AdminDown."""
        # systemd: STOPPING=1 as the stop begins, before the AdminDown burst.
        self.notifier.stopping()
        self._stop_requested = True
        if self.routes is not None:
            self.routes.freeze()  # the AdminDown that follows leaves the routes as they are
        if self._running:
            self.daemon.request_stop()

    async def close(self) -> None:
        """Release everything: after serving, or what a failed start had opened."""
        if self._ready:
            self.notifier.stopping()
        if self._sighup_task is not None and not self._sighup_task.done():
            self._sighup_task.cancel()  # the reading thread finishes alone, unheard
            with contextlib.suppress(asyncio.CancelledError):
                await self._sighup_task
        if self.hooks is not None:
            await self.hooks.close()
        if self.routes is not None:
            self.routes.close()  # deletes its routes, except those with persist
        if self.metrics is not None:
            await self.metrics.close()
        if self.control is not None:
            await self.control.close()
        if self._running:  # a failed Daemon.start() has closed what it opened
            self.daemon.close()
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self.notifier.close()
        loop = asyncio.get_running_loop()
        for sig in _SIGNALS:
            loop.remove_signal_handler(sig)

    # --------------------------------------------------------------- reload

    async def reload_async(self) -> dict[str, list[str]]:
        """Re-read the configuration off the loop, then make the sessions match it.

        All or nothing, as :meth:`reload`, but the file is read and checked
        in a child process (see the module docstring): the event loop serves
        the sessions meanwhile.  Reloads run one at a time.
        """
        reload_from = self._reload_from
        if reload_from is None:
            raise ControlError(_NO_FILE)
        async with self._reload_lock:
            # Thousands of new specs would set off the collector's full passes
            # (tens of ms over every session's objects): none until the reload
            # is done, then everything alive is frozen out of its reach, as at
            # start (the specs hold no reference cycle).
            collecting = gc.isenabled()
            gc.disable()
            try:
                return await self._reload_locked(reload_from)
            finally:
                gc.freeze()
                if collecting:
                    gc.enable()

    async def _reload_locked(self, reload_from: Callable[[], Settings]) -> dict[str, list[str]]:
        """:meth:`reload_async` under its lock: read, check, fit and apply."""
        running = self.settings
        try:
            read = await self._read(reload_from, running)
            new = read.settings
            fit = _fitted(read.measured)
        except ConfigError as exc:
            raise self._refused(str(exc)) from None
        except TimeoutError:
            raise self._refused(
                f"reading the configuration took longer than {RELOAD_READ_TIMEOUT_S:g} s "
                "(a file system or resolver that does not answer?)"
            ) from None
        except reload_reader.ReadFailed as exc:  # a bug, logged by the child
            raise self._refused(f"internal error: {exc}") from None
        except OSError as exc:  # no fork (out of processes, memory)
            raise self._refused(f"cannot read it: {exc}") from None
        if self._stop_requested:
            raise ControlError("reload abandoned: the daemon is stopping")
        # Receive sockets beyond what the new file leaves close first: the
        # sessions it adds need their descriptors for transmit sockets.
        self.daemon.receive.limit_sockets(fit.receive_sockets)
        return await self._apply_in_slices(new)

    async def _read(
        self, reload_from: Callable[[], Settings], running: Settings
    ) -> reload_reader.Read[DescriptorNeed]:
        """A reading of the file in another process: the reader host's while it
        knows ``running``, else a child forked for it."""
        reader = self._reader
        if reader is not None and not reader.serves(running):
            # A configuration the host did not read is in force (reload()):
            # its positions would not be ours.
            log.info(
                "the reader process does not know the running configuration: each reload forks one"
            )
            reader.close()
        if reader is not None and reader.alive:
            try:
                return await reader.read(running, RELOAD_READ_TIMEOUT_S)
            except reload_reader.ReadFailed:
                if reader.alive:
                    raise  # a bug in the reading, which the host logged
                # The host itself failed: a child of its own, this once too.
            finally:
                if not reader.alive:
                    log.warning("the reader process was given up: each reload forks one")
        self._reader = None
        return await reload_reader.read_in_child(
            reload_from,
            lambda new: descriptor_need(new, running),
            RELOAD_READ_TIMEOUT_S,
            running.peers,
        )

    def reload(self) -> dict[str, list[str]]:
        """Re-read the configuration and make the sessions match it, all or nothing.

        Returns what changed (added, removed, changed, unchanged).  Raises
        :class:`ControlError` when the new configuration is refused; the
        running one is kept.  ``[daemon]``, ``[dampening]`` and
        ``[unsolicited]`` take effect at the next restart (a warning says so).

        This reads the file in the caller's thread: on the event loop it holds
        every session while it reads (a large file, a slow resolver: up to
        :data:`aiobfd.config.RESOLVE_TIMEOUT_S` a name).  A caller on the loop
        should await :meth:`reload_async` instead.
        """
        if self._reload_from is None:
            raise ControlError(_NO_FILE)
        if self._reload_lock.locked():
            raise ControlError("a reload is under way already (SIGHUP); try again")
        try:
            new, fit = _read_fitted(self._reload_from, self.settings)
        except ConfigError as exc:
            raise self._refused(str(exc)) from None
        self.daemon.receive.limit_sockets(fit.receive_sockets)
        return self._apply(new)

    def _refused(self, reason: str) -> ControlError:
        log.error("reload refused, running configuration kept: %s", reason)
        return ControlError(f"reload refused, running configuration kept: {reason}")

    async def _apply_in_slices(self, new: Settings) -> dict[str, list[str]]:
        """:meth:`_apply`, the sessions to remove and to add first, a slice per loop turn."""
        daemon = self.daemon
        # Sorting 10,000 peers against the running ones compares 10,000 specs:
        # a slice a turn too, as is indexing them.
        wanted: dict[PeerKey, PeerSpec] = {}
        turn = daemon.turn()
        for start in range(0, len(new.peers), KEY_SLICE):
            wanted.update((spec.key, spec) for spec in new.peers[start : start + KEY_SLICE])
            await turn.pause()
        specs = list(wanted.values())
        # What else changes sessions between the slices is noted, and the
        # final pass looks at that only (not at 10,000 sessions in one go).
        daemon.begin_journal()
        try:
            done, unchanged = await self._apply_slices(wanted, specs)
        finally:
            touched = daemon.end_journal()
        return self._apply(new, done, _FinalPass(wanted, touched, unchanged))

    async def _apply_slices(
        self, wanted: dict[PeerKey, PeerSpec], specs: list[PeerSpec]
    ) -> tuple[dict[str, list[str]], list[str]]:
        """The slices of :meth:`_apply_in_slices`: what they did, and the
        names of the sessions they found unchanged."""
        daemon = self.daemon
        plan = reconcile.Changes()
        turn = daemon.turn()
        in_force = list(daemon.peers.items())
        for start in range(0, len(in_force), KEY_SLICE):
            # (A session that goes or comes meanwhile is in the journal.)
            plan.removed += reconcile.removed(in_force[start : start + KEY_SLICE], wanted)
            await turn.pause()
        unchanged: list[str] = []
        for start in range(0, len(specs), COMPARE_SLICE):
            compared = reconcile.compare(daemon.peers, specs[start : start + COMPARE_SLICE])
            plan.wanted += compared
            unchanged += [
                spec.display_remote()
                for spec, running, changed in compared
                if running is not None and not changed
            ]
            await turn.pause()
        done: dict[str, list[str]] = {"removed": [], "added": [], "changed": []}
        # Removing, adding and changing sessions take a larger budget a turn
        # (opening a session's sockets costs about 0.3 ms), still ending
        # before the sessions' next wake-up.
        await asyncio.sleep(0)
        turn = daemon.turn(APPLY_TURN_US)
        try:
            steps: list[tuple[PeerSpec, str]] = [(peer.spec, "removed") for peer in plan.removed]
            steps += [(spec, "added") for spec, running, _ in plan.wanted if running is None]
            # Changes in place too (a Poll Sequence each: 3,000 took the loop
            # 70 ms in one go).
            steps += [(spec, "changed") for spec, running, changed in plan.wanted if changed]
            for n, (spec, what) in enumerate(steps):
                if n and await turn.pause() and self._stop_requested:
                    raise ControlError("reload abandoned: the daemon is stopping")
                if what == "removed":
                    daemon.remove_peer(spec.key)
                elif what == "added" and spec.key not in daemon.peers:
                    # As at start: a local address not on the host (yet) is
                    # a session that waits for it, not a failed reload.
                    daemon.add_or_wait(spec)
                elif what == "changed" and (running := daemon.peers.get(spec.key)) is not None:
                    daemon.change_peer(running, spec)
                else:
                    # `peer add` or `peer del` came first: the final pass sees to it.
                    daemon.look_again(spec.key)
                    continue
                daemon.applied(spec.key)
                done[what].append(spec.display_remote())
        except OSError as exc:
            log.error("reload incomplete: %s", exc)
            raise ControlError(f"reload incomplete: {exc}") from None
        return done, unchanged

    def _apply(
        self,
        new: Settings,
        done: dict[str, list[str]] | None = None,
        final: _FinalPass | None = None,
    ) -> dict[str, list[str]]:
        """Make the sessions match ``new``; ``done``: the sessions already
        added, removed and changed; ``final``: only what changed meanwhile is
        left to look at (else every session is)."""
        try:
            if final is None:
                summary = self.daemon.apply_config(list(new.peers))
            else:
                summary = self.daemon.apply_config_to(final.wanted, final.touched)
            self.daemon.receive.rx_holdoff_us = _holdoff_us(
                self.settings.daemon.receive_holdoff_ms, new
            )
        except OSError as exc:
            log.error("reload incomplete: %s", exc)
            raise ControlError(f"reload incomplete: {exc}") from None
        if done is not None:
            added = set(done["added"])
            changed_here = set(done["changed"])
            unchanged = [
                name
                for name in summary["unchanged"]
                if name not in added and name not in changed_here
            ]
            if final is not None:
                # The slices' unchanged sessions, but those the final pass
                # added, removed or changed; and those it found unchanged
                # that the slices had not.
                after = {*summary["added"], *summary["removed"], *summary["changed"]}
                before = final.unchanged
                if after:
                    before = [name for name in before if name not in after]
                if unchanged:
                    known = set(before)
                    unchanged = [name for name in unchanged if name not in known]
                unchanged = before + unchanged
            summary = {
                # A session still waiting for its address is tried again by
                # the final pass, and counted there too.
                "added": done["added"] + [n for n in summary["added"] if n not in added],
                "removed": done["removed"] + summary["removed"],
                "changed": done["changed"] + summary["changed"],
                "unchanged": unchanged,
            }
        old, self.settings = self.settings, new
        if self.routes is not None:
            self.routes.configure(new.routes)
        log.info(
            "configuration reloaded: %s",
            ", ".join(f"{len(v)} {k}" for k, v in summary.items()),
        )
        for table, changed in (
            ("daemon", new.daemon != old.daemon),
            ("dampening", new.dampening != old.dampening),
            ("unsolicited", new.unsolicited != old.unsolicited),
        ):
            if changed:
                log.warning("reload: changes in [%s] take effect at the next restart", table)
        self._log_warnings(new)
        return summary

    def _log_warnings(self, settings: Settings) -> None:
        """The settings' warnings, each once in the life of the process."""
        for warning in settings.warnings:
            if warning not in self._warned:
                self._warned.add(warning)
                log.warning("%s", warning)

    def _on_sighup(self) -> None:
        if self._reload_from is None:
            log.warning("SIGHUP ignored: no configuration file (started without --config)")
            return
        if not self._running:
            self._reload_requested = True  # once the engine has started
            return
        if self._sighup_task is not None and not self._sighup_task.done():
            self._sighup_again = True  # the file may have changed after it was read
            return
        self._sighup_task = asyncio.get_running_loop().create_task(self._sighup_reloads())

    async def _sighup_reloads(self) -> None:
        """Reload until no SIGHUP came meanwhile; the outcome goes to the log."""
        while True:
            self._sighup_again = False
            with contextlib.suppress(ControlError):
                await self.reload_async()
            if not self._sighup_again or self._stop_requested:
                return

    def _dampening(self) -> Dampening | None:
        d = self.settings.dampening
        if d is None:
            return None
        return Dampening(
            penalty=d.penalty,
            suppress=d.suppress,
            reuse=d.reuse,
            half_life_s=d.half_life_s,
            max_hold_s=d.max_hold_s,
        )


def _hooks_of(peer: Peer) -> Hooks:
    return peer.spec.hooks


def _holdoff_us(configured_ms: int | None, settings: Settings) -> int | None:
    """The receive hold-off (see aiobfd.engine.receive): as configured; else
    automatic, or 0 when ``[[routes]]`` follow the sessions, so that a route
    follows a Down the peer signals within a couple of milliseconds rather
    than the hold-off (a host with routes has a few sessions: reading each
    packet at once costs it nothing)."""
    if configured_ms is not None:
        return configured_ms * US_PER_MS
    return 0 if settings.routes else None


@dataclass(frozen=True, slots=True)
class _FinalPass:
    """What a reload's final pass needs after its slices."""

    wanted: dict[PeerKey, PeerSpec]
    """The file's peers by key."""
    touched: set[PeerKey]
    """Sessions that something else added, removed or changed meanwhile."""
    unchanged: list[str]
    """The names of the sessions the slices found unchanged."""


@dataclass(frozen=True, slots=True)
class DescriptorNeed:
    """What a configuration's sessions need of RLIMIT_NOFILE (see :func:`descriptor_need`)."""

    need: int
    """With a receive socket for every session."""
    minimum: int
    """With a transmit socket for every session and no receive socket."""
    sessions: int
    """Sessions counted, unsolicited ones at their most."""
    what: str
    """What needs them, for messages."""


def descriptor_need(settings: Settings, running: Settings | None = None) -> DescriptorNeed:
    """The descriptors ``settings``' sessions need (see :mod:`aiobfd.io.fdlimit`); pure.

    On a reload ``running`` is the configuration running now: its ``[daemon]``
    and ``[unsolicited]`` tables stay until the next restart, and its sessions
    that ``settings`` no longer has hold their transmit sockets while they say
    AdminDown.
    """
    base = running or settings
    peers = settings.peers
    listeners = len({(p.local, p.scope, p.multihop) for p in peers})
    unsolicited = base.unsolicited
    dynamic = 0
    if unsolicited is not None:
        dynamic = unsolicited.max_sessions
        listeners += len(unsolicited.listen) * (2 if unsolicited.multihop else 1)
    farewells = 0
    if running is not None:
        keys = {p.key for p in peers}
        farewells = sum(1 for p in running.peers if p.key not in keys)
    need, minimum = (
        fdlimit.needed(
            len(peers),
            listeners,
            unsolicited=dynamic,
            hooks=base.daemon.hook_max_running or MAX_RUNNING,
            farewells=farewells,
            receive_sockets=receive_sockets,
        )
        for receive_sockets in (True, False)
    )
    what = f"{len(peers)} session(s)"
    if dynamic:
        what += f" and up to {dynamic} unsolicited"
    return DescriptorNeed(need, minimum, len(peers) + dynamic, what)


def fit_need(need: DescriptorNeed) -> fdlimit.Fit:
    """Raise RLIMIT_NOFILE to ``need``.  When the limit cannot be raised that
    far but leaves a transmit socket for every session, the result says how
    many receive sockets fit (one line in the log says so, and the knob);
    :class:`~aiobfd.io.fdlimit.FileLimitError` (one line) when it is lower."""
    fit = fdlimit.fit(need.need, need.what, minimum=need.minimum)
    if fit.receive_sockets is not None:
        log.warning("%s", fdlimit.shortfall(fit, need.sessions, need.what))
    if fit.raised:
        log.info(
            "RLIMIT_NOFILE raised from %s to %s (%s need %d descriptors)",
            *(fdlimit.describe(limits) for limits in (fit.before, fit.after)),
            need.what,
            need.need,
        )
    return fit


def fit_file_limit(settings: Settings, running: Settings | None = None) -> fdlimit.Fit:
    """Raise RLIMIT_NOFILE to what ``settings``' sessions need: :func:`fit_need`
    of :func:`descriptor_need`."""
    return fit_need(descriptor_need(settings, running))


def _read_fitted(read: Callable[[], Settings], running: Settings) -> tuple[Settings, fdlimit.Fit]:
    """``read()`` the new configuration and raise RLIMIT_NOFILE for it;
    ConfigError when it cannot be raised far enough."""
    new = read()
    return new, _fitted(descriptor_need(new, running))


def _fitted(need: DescriptorNeed) -> fdlimit.Fit:
    """:func:`fit_need`, its refusal a ConfigError (a reload's)."""
    try:
        return fit_need(need)
    except fdlimit.FileLimitError as exc:
        raise ConfigError(str(exc)) from None


# ------------------------------------------------------------------ the process


def run(settings: Settings, reload_from: Callable[[], Settings] | None = None) -> int:
    """Run the daemon as this process until SIGINT or SIGTERM; the exit status."""
    daemon = settings.daemon
    try:
        setup_logging(
            level=daemon.log_level,
            to_stdout=daemon.log_to_stdout,
            log_file=daemon.log_file,
            syslog_socket=daemon.syslog_socket,
            log_format=daemon.log_format,
        )
    except OSError as exc:
        print(f"aiobfd: error: cannot set up logging: {exc}", file=sys.stderr)
        return 2
    try:
        configure_process(daemon)
    except StartError as exc:
        print(f"aiobfd: error: {exc}", file=sys.stderr)
        return 2

    async def main() -> int:
        # Built on the running loop, as everything of the engine.
        return await Application(settings, reload_from).run()

    try:
        return run_loop(daemon.event_loop, main())
    except KeyboardInterrupt:
        return 0


def configure_process(daemon: DaemonSettings) -> None:
    """``lock_memory``, then ``realtime_priority``; StartError (one line) when refused.

    Called in the main thread before the event loop starts: the scheduling
    policy is the calling thread's, and the loop runs in this one.
    """
    if daemon.lock_memory:
        lock_memory()
        log.info("memory locked (mlockall): %s", _status_field("VmLck"))
    if daemon.realtime_priority is not None:
        set_realtime_priority(daemon.realtime_priority)
        log.info("event loop thread at SCHED_FIFO priority %d", daemon.realtime_priority)


def set_realtime_priority(priority: int) -> None:
    """SCHED_FIFO at ``priority`` for the calling thread, with SCHED_RESET_ON_FORK.

    With the flag, what this thread creates later - the reload's and the
    name lookups' threads, the hooks' processes - starts as SCHED_OTHER: only
    the event loop runs at real-time priority, and a hook cannot keep a CPU
    from everything else.  Needs CAP_SYS_NICE or an RLIMIT_RTPRIO of at least
    ``priority`` (systemd: ``LimitRTPRIO=``), and no ``RestrictRealtime=yes``.
    """
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(priority))
    except OSError as exc:
        soft, _ = resource.getrlimit(resource.RLIMIT_RTPRIO)
        raise StartError(
            f"realtime_priority {priority}: SCHED_FIFO refused ({exc.strerror or exc}); "
            f"it needs RLIMIT_RTPRIO >= {priority} (now {_limit(soft)}; systemd: "
            f"LimitRTPRIO={priority}) and no RestrictRealtime=yes, or CAP_SYS_NICE"
        ) from None


#: mlockall(2) flags (<sys/mman.h>).
MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT = 1, 2, 4
_CAP_IPC_LOCK = 14


def lock_memory() -> None:
    """Lock every page of the process now and later (mlockall), so none is paged out.

    Later mappings are locked as they are touched (MCL_ONFAULT where the
    kernel has it): a new thread's 8 MiB stack is not made resident whole.
    Without CAP_IPC_LOCK, RLIMIT_MEMLOCK must be unlimited (systemd:
    ``LimitMEMLOCK=infinity``): with MCL_FUTURE, any allocation beyond a
    finite limit would fail later, at some random place.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if soft != resource.RLIM_INFINITY and not _has_capability(_CAP_IPC_LOCK):
        if hard == resource.RLIM_INFINITY:
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_MEMLOCK, (hard, hard))
                soft = hard
        if soft != resource.RLIM_INFINITY:
            raise StartError(
                f"lock_memory: RLIMIT_MEMLOCK is {_limit(soft, ' bytes')}, and every later allocation "
                "would fail beyond it; it must be unlimited (systemd: LimitMEMLOCK=infinity; "
                "shell: ulimit -l unlimited) or the daemon needs CAP_IPC_LOCK"
            )
    try:
        _mlockall(MCL_CURRENT)  # what is mapped now: resident and locked
        try:
            _mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # EINVAL: a kernel before 4.4, no MCL_ONFAULT
                raise
            _mlockall(MCL_CURRENT | MCL_FUTURE)
    except OSError as exc:
        soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        raise StartError(
            f"lock_memory: mlockall refused ({exc.strerror or exc}); RLIMIT_MEMLOCK is "
            f"{_limit(soft, ' bytes')} (systemd: LimitMEMLOCK=infinity)"
        ) from None


def _mlockall(flags: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mlockall(ctypes.c_int(flags)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _has_capability(bit: int) -> bool:
    """Whether the process has capability ``bit`` in its effective set."""
    value = _status_field("CapEff")
    try:
        return bool(int(value, 16) >> bit & 1)
    except ValueError:
        return False


def _status_field(name: str) -> str:
    """A field of /proc/self/status ("" when there is none)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key == name:
                    return value.strip()
    except OSError:
        pass
    return ""


def _limit(value: int, unit: str = "") -> str:
    """A resource limit for a message."""
    return "unlimited" if value == resource.RLIM_INFINITY else f"{value}{unit}"


def run_loop(choice: str, main_coro: Coroutine[Any, Any, int]) -> int:
    """Run ``main_coro`` on the chosen event loop (uvloop when asked or available)."""
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                main_coro.close()
                print(
                    "aiobfd: error: --event-loop uvloop: uvloop is not installed "
                    "(pip install 'aiobfd[uvloop]')",
                    file=sys.stderr,
                )
                return 2
        else:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                return int(runner.run(main_coro))
    return int(asyncio.run(main_coro))
