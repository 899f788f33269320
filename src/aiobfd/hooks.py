"""State-change hooks: run operator commands when sessions go Up or Down.

A :class:`HookRunner` listens to a daemon's events and runs shell commands
(``on_up``, ``on_down``, ``on_change``) in child processes, never blocking the
event loop: detection and transmission go on while a hook runs.

* Environment: ``BFD_LOCAL``, ``BFD_REMOTE``, ``BFD_INTERFACE``, ``BFD_STATE``,
  ``BFD_OLD_STATE``, ``BFD_DIAG``, ``BFD_DIAG_NAME``, ``BFD_REMOTE_DIAG``.
* At most one hook runs per peer.  A change that happens meanwhile waits; if
  several do, only the latest is delivered, so the last hook a peer runs always
  reports its current state.
* A hook that outlives its timeout is killed (its whole process group).
* Exit status and (bounded) output are logged.
* Optional dampening, in the manner of BGP route-flap dampening (RFC 2439): each
  Up -> Down costs a penalty that halves every ``half_life``; while the penalty
  is above ``suppress``, an Up is reported to hooks only once the session has
  stayed Up until the penalty decays to ``reuse``.  The session itself follows
  the RFC untouched; only what hooks are told is delayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from .config import Hooks
from .engine import Daemon, Peer
from .protocol.events import Event, StateChanged
from .protocol.packet import State

log = logging.getLogger("aiobfd.hooks")

#: Output kept from a hook for the log, per stream.
OUTPUT_LIMIT = 4096


def commands_for(hooks: Hooks, ev: StateChanged) -> list[str]:
    """``on_up`` when entering Up, ``on_down`` when leaving it, ``on_change`` always."""
    out = []
    if hooks.on_up and ev.new_state is State.UP:
        out.append(hooks.on_up)
    if hooks.on_down and ev.old_state is State.UP:
        out.append(hooks.on_down)
    if hooks.on_change:
        out.append(hooks.on_change)
    return out


@dataclass(frozen=True, slots=True)
class Dampening:
    """Flap dampening parameters (BGP's defaults scaled to BFD)."""

    penalty: float = 1000.0
    """Added on every Up -> Down."""
    suppress: float = 2000.0
    """Above this, an Up is held down."""
    reuse: float = 750.0
    """An Up is reported once the penalty has decayed to this."""
    half_life_s: float = 15.0
    max_hold_s: float = 120.0
    """Never hold an Up back for longer than this."""

    def decayed(self, value: float, elapsed_s: float) -> float:
        return float(value * 0.5 ** (elapsed_s / self.half_life_s))

    def hold_time(self, value: float) -> float:
        """Seconds until ``value`` decays to ``reuse`` (0 when not suppressed)."""
        if value <= self.suppress:
            return 0.0
        return min(self.max_hold_s, self.half_life_s * math.log2(value / self.reuse))


@dataclass(slots=True)
class _PeerHooks:
    running: asyncio.Task[None] | None = None
    pending: StateChanged | None = None
    penalty: float = 0.0
    penalty_at: float = 0.0
    held_up: asyncio.TimerHandle | None = None
    reported_state: State | None = None


HookLookup = Callable[[Peer], Hooks]


class HookRunner:
    """Runs hooks for a daemon's session events; see the module docstring."""

    def __init__(
        self,
        daemon: Daemon,
        hooks_for: HookLookup,
        *,
        dampening: Dampening | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._hooks_for = hooks_for
        self._dampening = dampening
        self._clock = clock
        self._peers: dict[object, _PeerHooks] = {}
        self.runs = 0
        self.timeouts = 0
        self.failures = 0
        daemon.add_listener(self._on_event)

    def _state(self, peer: Peer) -> _PeerHooks:
        st = self._peers.get(peer.spec.key)
        if st is None:
            st = self._peers[peer.spec.key] = _PeerHooks()
        return st

    def _on_event(self, peer: Peer, event: Event) -> None:
        if not isinstance(event, StateChanged):
            return
        hooks = self._hooks_for(peer)
        if not hooks:
            return
        st = self._state(peer)
        if self._dampening is not None and self._dampen(peer, st, event):
            return
        self._deliver(peer, st, event)

    def _dampen(self, peer: Peer, st: _PeerHooks, ev: StateChanged) -> bool:
        """True when this event is held back (a suppressed Up)."""
        damp = self._dampening
        assert damp is not None
        now = self._clock()
        st.penalty = damp.decayed(st.penalty, now - st.penalty_at)
        st.penalty_at = now
        if ev.old_state is State.UP:
            st.penalty += damp.penalty
            if st.held_up is not None:
                # The Up we were holding back is over before hooks heard of
                # it: they still believe the session is down, so stay quiet.
                st.held_up.cancel()
                st.held_up = None
                return st.reported_state is not State.UP
            return False
        if ev.new_state is State.UP:
            hold = damp.hold_time(st.penalty)
            if hold > 0:
                log.info(
                    "session %s flapping (penalty %.0f): Up reported to hooks after %.1f s",
                    peer.spec.display_remote(),
                    st.penalty,
                    hold,
                )
                loop = asyncio.get_running_loop()
                st.held_up = loop.call_later(hold, self._release, peer, st, ev)
                return True
        return False

    def _release(self, peer: Peer, st: _PeerHooks, ev: StateChanged) -> None:
        st.held_up = None
        if peer.session.state is State.UP:
            self._deliver(peer, st, ev)

    def _deliver(self, peer: Peer, st: _PeerHooks, ev: StateChanged) -> None:
        st.reported_state = ev.new_state
        if st.running is not None and not st.running.done():
            st.pending = ev  # only the latest waiting change is kept
            return
        st.running = asyncio.get_running_loop().create_task(self._run_chain(peer, st, ev))

    async def _run_chain(self, peer: Peer, st: _PeerHooks, ev: StateChanged) -> None:
        next_ev: StateChanged | None = ev
        while next_ev is not None:
            hooks = self._hooks_for(peer)
            for command in commands_for(hooks, next_ev):
                await self._run(peer, next_ev, command, hooks.timeout_s)
            next_ev, st.pending = st.pending, None

    async def _run(self, peer: Peer, ev: StateChanged, command: str, timeout_s: float) -> None:
        env = dict(os.environ)
        env.update(hook_environment(peer, ev))
        remote = peer.spec.display_remote()
        self.runs += 1
        try:
            proc = await asyncio.create_subprocess_shell(
                command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            self.failures += 1
            log.error("hook for %s could not start: %s", remote, exc)
            return
        try:
            # asyncio.timeout, not wait_for, which on Python 3.11 may drop a
            # cancellation that comes as the hook ends.
            async with asyncio.timeout(timeout_s):
                out, err = await proc.communicate()
        except TimeoutError:
            self.timeouts += 1
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), 5)
            log.error("hook for %s killed after %.1f s: %s", remote, timeout_s, command)
            return
        except asyncio.CancelledError:
            # The daemon is stopping and cannot wait any longer: no orphans.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), 1)
            raise
        status = proc.returncode
        if status != 0:
            self.failures += 1
        level = logging.INFO if status == 0 else logging.WARNING
        log.log(
            level,
            "hook for %s (%s) exited with status %s%s%s",
            remote,
            ev.new_state.label,
            status,
            _excerpt(" stdout: ", out),
            _excerpt(" stderr: ", err),
            extra={
                "remote": remote,
                "local": peer.spec.local,
                "hook": command,
                "exit_status": status,
                "new_state": ev.new_state.label,
            },
        )

    async def close(self, timeout_s: float = 2.0) -> None:
        """Wait briefly for running hooks (e.g. the Down hooks of a shutdown),
        then kill what is still running."""
        tasks = [st.running for st in self._peers.values() if st.running and not st.running.done()]
        for st in self._peers.values():
            if st.held_up is not None:
                st.held_up.cancel()
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=timeout_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)


def hook_environment(peer: Peer, ev: StateChanged) -> dict[str, str]:
    """The variables a hook receives."""
    return {
        "BFD_LOCAL": peer.spec.local,
        "BFD_REMOTE": peer.spec.remote,
        "BFD_INTERFACE": peer.spec.interface,
        "BFD_STATE": ev.new_state.label,
        "BFD_OLD_STATE": ev.old_state.label,
        "BFD_DIAG": str(int(ev.diag)),
        "BFD_DIAG_NAME": ev.diag.label,
        "BFD_REMOTE_DIAG": str(int(ev.remote_diag)),
    }


def _excerpt(label: str, data: bytes | None) -> str:
    if not data:
        return ""
    text = data[:OUTPUT_LIMIT].decode(errors="replace").strip()
    return f"{label}{text!r}" if text else ""
