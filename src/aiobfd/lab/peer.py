"""What the real BFD peers of a lab share: start/stop bookkeeping and waits with logs.

For tests and example labs; needs root. A `Peer` runs its daemons inside one namespace
of a `NetnsLab`, in the foreground under `NetnsLab.popen` (so the lab kills them
whatever happens), with sockets, pid files and logs in a short directory under the
lab's rundir. `Peer.stop` copies configs and logs into the peer's `workdir`, where
they stay after the lab is gone. Every wait has a deadline; a timeout or an early
death raises `PeerError` whose message ends with the last state seen and log tails.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Self, TypeVar

from .netns import LabError, LabTimeout, NetnsLab, log_tail, run, wait_until

T = TypeVar("T")
Json = dict[str, Any]
Check = Callable[[Json], bool]
"""A condition on a session, as a peer reports it."""


class PeerError(LabError):
    """A peer failed to start, died, refused a command or missed a deadline."""


class Peer:
    """Start/stop bookkeeping, waits that watch for death, error messages with logs."""

    kind = "peer"
    logs: tuple[str, ...] = ()
    """Files in `rundir` whose tails go into error messages."""

    def __init__(self, lab: NetnsLab, ns: str, workdir: Path) -> None:
        self.lab = lab
        self.ns = lab.netns(ns)
        self.role = lab.role(ns)
        self.workdir = Path(workdir)
        self.rundir = lab.rundir / f"{self.kind}-{self.role}"
        """Set for real by `start()`: the first free `<kind>-<role>[n]` under lab.rundir."""
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._stopped = False

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self, timeout: float = 10.0) -> None:
        """Write the configuration, start the daemon(s), wait until they answer."""
        raise NotImplementedError

    def _make_rundir(self) -> Path:
        for n in range(100):
            self.rundir = self.lab.rundir / f"{self.kind}-{self.role}{n or ''}"
            try:
                self.rundir.mkdir()
            except FileExistsError:
                continue
            return self.rundir
        raise PeerError(f"no free directory for {self.kind} under {self.lab.rundir}")

    def _spawn(self, name: str, *cmd: str | Path) -> subprocess.Popen[bytes]:
        """Start one daemon in the foreground; its stdout and stderr go to NAME.out."""
        proc = self.lab.popen(self.ns, *cmd, log=self.rundir / f"{name}.out")
        self.procs[name] = proc
        return proc

    def _dead(self) -> str | None:
        """Which of our daemons exited, if any (those stopped by `kill()` are not tracked)."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                return f"{name} exited with {proc.returncode}"
        return None

    def error(self, message: str, state: Any = None) -> PeerError:
        """A PeerError with the last state seen and the log tails, for a useful CI log."""
        parts = [f"{self.kind} in {self.ns}: {message}"]
        if state is not None:
            text = state if isinstance(state, str) else json.dumps(state, indent=1)
            parts.append(f"--- last state seen\n{text}")
        parts += [log_tail(self.rundir / n) for n in self.logs if (self.rundir / n).exists()]
        parts.append(f"(configs and logs are copied to {self.workdir} on stop)")
        return PeerError("\n".join(parts))

    def wait(
        self, probe: Callable[[], T | None], timeout: float, what: str, last: Callable[[], Any]
    ) -> T:
        """Poll `probe` until it returns something truthy and return that.

        A `PeerError` from `probe` (the daemon not answering yet) counts as "not yet".
        Raises `PeerError`, with `last()` and the logs, at once if a daemon died, or
        at the deadline.
        """
        failure: list[str] = []

        def checked() -> T | None:
            try:
                result = probe()
            except PeerError as exc:
                failure[:] = [str(exc)]
                result = None
            if not result and (death := self._dead()):
                raise self.error(f"{death} while waiting for {what}", _safe(last))
            return result

        try:
            return wait_until(checked, timeout, what)
        except LabTimeout as exc:
            message = f"{exc}; last error: {failure[0]}" if failure else str(exc)
            raise self.error(message, _safe(last)) from None

    def _wait_session(
        self,
        find: Callable[[], Json | None],
        check: Check,
        timeout: float,
        what: str,
        last: Callable[[], Any],
    ) -> Json:
        """Wait until `find()` returns a session for which `check` holds; return it."""

        def probe() -> Json | None:
            session = find()
            return session if session is not None and check(session) else None

        return self.wait(probe, timeout, what, last)

    def _kill(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5)

    def stop(self) -> None:
        """Stop all daemons (SIGTERM, then SIGKILL) and keep configs and logs. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        for proc in reversed(list(self.procs.values())):
            self.lab.stop_process(proc)
        self.procs.clear()
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.rundir.is_dir():
            for path in self.rundir.iterdir():
                if path.is_file() and path.suffix in (".conf", ".log", ".out"):
                    shutil.copy(path, self.workdir / path.name)


def _safe(fn: Callable[[], Any]) -> Any:
    """`fn()`, or the error it raised as text: error paths must not raise anew."""
    try:
        return fn()
    except Exception as exc:
        return f"<unavailable: {exc}>"


def run_client(argv: Sequence[str], timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
    """Run a client (vtysh, birdc, bird -p) in the root namespace: Unix sockets suffice."""
    return run(*argv, check=False, timeout=timeout)
