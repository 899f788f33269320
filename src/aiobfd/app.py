"""The application: aiobfd as a running process, composed from one :class:`Settings`.

:class:`Application` builds the engine (:class:`aiobfd.engine.Daemon`) and what
serves beside it - the state-change hooks, the control socket, the Prometheus
endpoint, systemd's notifications - and owns start, reload and stop.
:func:`run` is the process around it: the descriptor limit, logging and the
event loop.  Where the settings come from (command line, file) is
:mod:`aiobfd.cli`'s and :mod:`aiobfd.config`'s business.

Start-up order, and why:

1. signal handlers, before anything slow: a SIGTERM or SIGHUP while thousands
   of sessions open is handled (once the engine runs), not fatal;
2. the engine's sockets and sessions, then the hooks;
3. ``gc.freeze()``: start-up objects live as long as the process, so the
   collector's pauses on the packet path stay short;
4. the control socket, then the metrics endpoint;
5. ``READY=1`` for systemd, once every socket is open.

A socket that cannot be opened ends the start with :class:`StartError` (one
line; :meth:`Application.run` prints it and returns exit status 2).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from . import __version__, core_build
from .config import ConfigError, Hooks, Settings
from .control import ControlError, ControlServer, default_socket_path
from .engine import Daemon, Peer
from .hooks import Dampening, HookRunner
from .logs import setup_logging
from .metrics import (
    DEFAULT_METRICS_ADDRESS,
    DEFAULT_METRICS_PORT,
    MetricsServer,
    start_metrics_server,
)
from .protocol.constants import US_PER_MS
from .systemd import Notifier

log = logging.getLogger("aiobfd")

_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


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
        holdoff_ms = daemon.receive_holdoff_ms
        self.daemon = Daemon(
            list(settings.peers),
            ttl_check=daemon.ttl_check,
            unsolicited=settings.unsolicited,
            rx_holdoff_us=None if holdoff_ms is None else holdoff_ms * US_PER_MS,
        )
        self.notifier = Notifier.from_environment()
        self.hooks: HookRunner | None = None
        self.control: ControlServer | None = None
        self.metrics: MetricsServer | None = None
        self._running = False
        """The engine has started: stop and reload act on it."""
        self._ready = False
        """READY=1 was sent: STOPPING=1 follows on the way out."""
        self._stop_requested = False
        self._reload_requested = False

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

        try:
            await self.daemon.start()
        except OSError as exc:
            raise StartError(f"cannot open sockets: {exc}") from None
        self._running = True
        self.hooks = HookRunner(self.daemon, _hooks_of, dampening=self._dampening())
        if self._stop_requested:
            self.daemon.request_stop()
        elif self._reload_requested:
            self._on_sighup()
        gc.freeze()

        daemon = self.settings.daemon
        path = daemon.control_socket or default_socket_path()
        if path != "none":
            control = ControlServer(
                self.daemon, path, self.reload if self._reload_from is not None else None
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
        if self._running:
            self.daemon.request_stop()

    async def close(self) -> None:
        """Release everything: after serving, or what a failed start had opened."""
        if self._ready:
            self.notifier.stopping()
        if self.hooks is not None:
            await self.hooks.close()
        if self.metrics is not None:
            await self.metrics.close()
        if self.control is not None:
            await self.control.close()
        if self._running:  # a failed Daemon.start() has closed what it opened
            self.daemon.close()
        self.notifier.close()
        loop = asyncio.get_running_loop()
        for sig in _SIGNALS:
            loop.remove_signal_handler(sig)

    # --------------------------------------------------------------- reload

    def reload(self) -> dict[str, list[str]]:
        """Re-read the configuration and make the sessions match it, all or nothing.

        Returns what changed (added, removed, changed, unchanged).  Raises
        :class:`ControlError` when the new configuration is refused; the
        running one is kept.  ``[daemon]`` and ``[dampening]`` take effect
        at the next restart (a warning says so).
        """
        if self._reload_from is None:
            raise ControlError("no configuration file to reload (started without --config)")
        try:
            new = self._reload_from()
        except ConfigError as exc:
            log.error("reload refused, running configuration kept: %s", exc)
            raise ControlError(f"reload refused, running configuration kept: {exc}") from None
        try:
            summary = self.daemon.apply_config(list(new.peers))
        except OSError as exc:
            log.error("reload incomplete: %s", exc)
            raise ControlError(f"reload incomplete: {exc}") from None
        old, self.settings = self.settings, new
        log.info(
            "configuration reloaded: %s",
            ", ".join(f"{len(v)} {k}" for k, v in summary.items()),
        )
        for table, changed in (
            ("daemon", new.daemon != old.daemon),
            ("dampening", new.dampening != old.dampening),
        ):
            if changed:
                log.warning("reload: changes in [%s] take effect at the next restart", table)
        return summary

    def _on_sighup(self) -> None:
        if self._reload_from is None:
            log.warning("SIGHUP ignored: no configuration file (started without --config)")
            return
        if not self._running:
            self._reload_requested = True  # once the engine has started
            return
        with contextlib.suppress(ControlError):
            self.reload()

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


# ------------------------------------------------------------------ the process


def run(settings: Settings, reload_from: Callable[[], Settings] | None = None) -> int:
    """Run the daemon as this process until SIGINT or SIGTERM; the exit status."""
    raise_file_limit()
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

    async def main() -> int:
        # Built on the running loop, as everything of the engine.
        return await Application(settings, reload_from).run()

    try:
        return run_loop(daemon.event_loop, main())
    except KeyboardInterrupt:
        return 0


def raise_file_limit() -> None:
    """Three sockets a session: lift the soft descriptor limit to the hard one."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


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
