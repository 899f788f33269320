"""State-change hooks: run operator commands when sessions go Up or Down.

A :class:`HookRunner` listens to a daemon's events and runs shell commands
(``on_up``, ``on_down``, ``on_change``) in child processes, never blocking the
event loop: detection and transmission go on while a hook runs, whatever the
hook does.

* Environment: a hook gets only ``BFD_LOCAL``, ``BFD_REMOTE``,
  ``BFD_INTERFACE``, ``BFD_STATE``, ``BFD_OLD_STATE``, ``BFD_DIAG``,
  ``BFD_DIAG_NAME``, ``BFD_REMOTE_DIAG``; ``PATH`` set to :data:`HOOK_PATH`
  (``/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin``); ``LANG``,
  ``LC_ALL`` and ``TZ`` when the daemon has them; and the variables the
  operator names in ``pass_env`` (``--hook-pass-env``), with the daemon's
  values as the runner is made (a name the daemon lacks is left out; a passed
  ``PATH`` replaces the default; the ``BFD_*`` values win over passed ones).
  Nothing else of the daemon's environment reaches a hook: not a key named by
  ``--auth-key-env``, not systemd's ``NOTIFY_SOCKET`` or credentials, not
  ``HOME``.
* At most one hook runs per peer, in the order of the changes.  A change that
  happens meanwhile waits; if several do, only the latest is delivered, so the
  last hook a peer runs always reports its current state.  At most
  ``max_running`` hooks (default :data:`MAX_RUNNING`) run at once over all
  peers; the others wait their turn, at most one waiting per peer (a hook's
  timeout counts from its start, not from its wait).
* A hook runs until it has exited and closed its output, at most its
  timeout.  Each hook leads a session and process group of its own; at the
  timeout the group gets SIGTERM and, once the hook has exited and closed its
  output or after ``kill_grace_s`` (default :data:`KILL_GRACE_S`), SIGKILL, so
  the children and grandchildren it left in the group end with it.  The run is
  then over, at most :data:`REAP_WAIT_S` later: the hook's pipes are closed,
  whoever still holds them.  Limit: a process that leaves the group on purpose
  (``setsid``, ``setpgid``, a shell's ``set -m``: daemons do) is not killed,
  only no longer read.  Only a cgroup contains those, and a cgroup per hook
  needs a delegated cgroup tree the daemon does not have (systemd's
  ``Delegate=``); run as a systemd service, the daemon's own cgroup ends them
  when the service stops (``KillMode=control-group``).
* Output: the first :data:`OUTPUT_LIMIT` bytes of stdout and of stderr are kept
  for the log line with the exit status; the rest is dropped as the event
  loop's pipe reads bring it (a pipe's buffer, 64 KiB by default, a read),
  counted, and the log line says how much.  Memory stays bounded whatever a
  hook writes, and so does the work of a loop turn.
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from .config import Hooks
from .engine import Daemon, Peer
from .protocol.events import Event, SessionRemoved, StateChanged
from .protocol.packet import State

log = logging.getLogger("aiobfd.hooks")

#: Output kept from a hook for the log, per stream; the rest is dropped.
OUTPUT_LIMIT = 4096
#: Hooks running at once over all peers (``HookRunner(max_running=...)``).
MAX_RUNNING = 8
#: From SIGTERM to SIGKILL of a timed-out hook's group (``kill_grace_s``).
KILL_GRACE_S = 0.5
#: After SIGKILL, the longest wait for the hook's exit before its pipes are
#: closed anyway (a process in uninterruptible sleep).
REAP_WAIT_S = 0.5
#: A hook's PATH (systemd's default) unless PATH is passed (``pass_env``).
HOOK_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Passed on to hooks when the daemon has them: harmless, and they shape output.
INHERITED = ("LANG", "LC_ALL", "TZ")


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
    removed: bool = False
    """The session is gone: forget this once its hooks have run."""


HookLookup = Callable[[Peer], Hooks]


class HookRunner:
    """Runs hooks for a daemon's session events; see the module docstring.

    ``pass_env`` names the variables of the daemon's environment hooks get
    besides their own (ValueError for a name no variable can have);
    ``max_running`` caps the hooks running at once over all peers;
    ``kill_grace_s`` is the time between SIGTERM and SIGKILL of a timed-out
    hook's process group (0: SIGKILL at once).
    """

    def __init__(
        self,
        daemon: Daemon,
        hooks_for: HookLookup,
        *,
        dampening: Dampening | None = None,
        clock: Callable[[], float] = time.monotonic,
        pass_env: Sequence[str] = (),
        max_running: int = MAX_RUNNING,
        kill_grace_s: float = KILL_GRACE_S,
    ) -> None:
        if max_running < 1:
            raise ValueError("max_running must be at least 1")
        self._hooks_for = hooks_for
        self._dampening = dampening
        self._clock = clock
        self._peers: dict[object, _PeerHooks] = {}
        self._env = base_environment(pass_env)
        self._slots = asyncio.Semaphore(max_running)
        self._kill_grace_s = kill_grace_s
        self.runs = 0
        self.timeouts = 0
        self.failures = 0
        self.running = 0
        """Hook processes running now (at most ``max_running``)."""
        self.output_dropped = 0
        """Bytes of hook output read and dropped (beyond :data:`OUTPUT_LIMIT`)."""
        daemon.add_listener(self._on_event)

    def _state(self, peer: Peer) -> _PeerHooks:
        st = self._peers.get(peer.spec.key)
        if st is None:
            st = self._peers[peer.spec.key] = _PeerHooks()
        st.removed = False
        return st

    def _on_event(self, peer: Peer, event: Event) -> None:
        if isinstance(event, SessionRemoved):
            self._forget(peer.spec.key)
            return
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
        if st.removed and self._peers.get(peer.spec.key) is st:
            del self._peers[peer.spec.key]

    def _forget(self, key: object) -> None:
        """A session was removed: drop its state (after its running hooks),
        so that sessions coming and going leave nothing behind."""
        st = self._peers.get(key)
        if st is None:
            return
        if st.held_up is not None:
            st.held_up.cancel()
            st.held_up = None
        if st.running is None or st.running.done():
            del self._peers[key]
        else:
            st.removed = True

    async def _run(self, peer: Peer, ev: StateChanged, command: str, timeout_s: float) -> None:
        async with self._slots:
            self.running += 1
            try:
                await self._run_one(peer, ev, command, timeout_s)
            finally:
                self.running -= 1

    async def _run_one(self, peer: Peer, ev: StateChanged, command: str, timeout_s: float) -> None:
        env = {**self._env, **hook_environment(peer, ev)}
        remote = peer.spec.display_remote()
        self.runs += 1
        loop = asyncio.get_running_loop()
        try:
            transport, out = await loop.subprocess_shell(
                _Output,
                command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                start_new_session=True,  # its own group: see _end
            )
        except OSError as exc:
            self.failures += 1
            log.error("hook for %s could not start: %s", remote, exc)
            return
        pgid = transport.get_pid()
        try:
            # asyncio.wait, not wait_for: it neither cancels the futures nor,
            # on Python 3.11, drops a cancellation that comes as the hook ends.
            _, pending = await asyncio.wait((out.exited, out.closed), timeout=timeout_s)
            if pending:
                await self._end(pgid, out)
        except asyncio.CancelledError:
            # The daemon is stopping and cannot wait any longer: no orphans.
            _signal_group(pgid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                await asyncio.wait((out.exited,), timeout=REAP_WAIT_S)
            raise
        finally:
            transport.close()  # the pipes, even if a process outside the group holds them
            self.output_dropped += out.dropped
        status = transport.get_returncode()
        fields = {
            "remote": remote,
            "local": peer.spec.local,
            "hook": command,
            "exit_status": status,
            "new_state": ev.new_state.label,
            "output_dropped_bytes": out.dropped,
        }
        if pending:
            self.timeouts += 1
            log.error(
                "hook for %s killed after %.1f s: %s%s",
                remote,
                timeout_s,
                command,
                out.summary(),
                extra=fields,
            )
            return
        if status != 0:
            self.failures += 1
        log.log(
            logging.INFO if status == 0 else logging.WARNING,
            "hook for %s (%s) exited with status %s%s",
            remote,
            ev.new_state.label,
            status,
            out.summary(),
            extra=fields,
        )

    async def _end(self, pgid: int, out: _Output) -> None:
        """End a timed-out hook: SIGTERM to its group, SIGKILL after the grace.

        The grace ends early once the hook has exited and its output is
        closed.  SIGKILL goes to the group whatever happened: a child that
        ignored SIGTERM, or outlived the hook, is in it.  (The group's number
        cannot be reused while a member lives; once none does, SIGKILL finds
        no one unless the number was taken again within these milliseconds.)
        At most ``kill_grace_s`` + :data:`REAP_WAIT_S`.
        """
        if self._kill_grace_s > 0:
            _signal_group(pgid, signal.SIGTERM)
            await asyncio.wait((out.exited, out.closed), timeout=self._kill_grace_s)
        _signal_group(pgid, signal.SIGKILL)
        await asyncio.wait((out.exited,), timeout=REAP_WAIT_S)

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


def base_environment(
    pass_env: Sequence[str] = (), environ: Mapping[str, str] = os.environ
) -> dict[str, str]:
    """What every hook's environment starts from (see the module docstring):
    PATH, the :data:`INHERITED` variables and those named in ``pass_env``,
    from ``environ`` where it has them (ValueError for a name that cannot be
    a variable's)."""
    env = {"PATH": HOOK_PATH}
    for name in pass_env:
        if not name or "=" in name or "\0" in name:
            raise ValueError(f"not an environment variable name: {name!r}")
    for name in (*INHERITED, *pass_env):
        value = environ.get(name)
        if value is not None:
            env[name] = value
    return env


class _Output(asyncio.SubprocessProtocol):
    """A hook's side of its pipes: keeps the first :data:`OUTPUT_LIMIT` bytes
    of stdout and stderr, drops (and counts) the rest as each read brings it."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.heads = {1: bytearray(), 2: bytearray()}
        self.dropped = 0
        self.exited: asyncio.Future[None] = loop.create_future()
        """Done when the hook (the shell) has exited."""
        self.closed: asyncio.Future[None] = loop.create_future()
        """Done when stdout and stderr are both closed (at the hook's end, or ours)."""
        self._open = {1, 2}

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        head = self.heads.get(fd)
        if head is None:
            return
        room = OUTPUT_LIMIT - len(head)
        if room > 0:
            head += data[:room] if isinstance(data, bytes) else data[:room].encode()
        self.dropped += max(0, len(data) - max(room, 0))

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self._open.discard(fd)
        if not self._open and not self.closed.done():
            self.closed.set_result(None)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def summary(self) -> str:
        """The log line's tail: both excerpts, and what was dropped."""
        text = _excerpt(" stdout: ", self.heads[1]) + _excerpt(" stderr: ", self.heads[2])
        if self.dropped:
            text += f" ({self.dropped} more bytes of output dropped)"
        return text


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _excerpt(label: str, data: bytes | bytearray) -> str:
    text = bytes(data).decode(errors="replace").strip()
    return f"{label}{text!r}" if text else ""
