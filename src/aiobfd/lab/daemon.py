"""Our daemon as a process inside a lab namespace, observed through its control socket.

For tests and example labs; needs root and iproute2. The daemon is the aiobfd this
module was imported from (`PYTHONPATH` points at it), run by this interpreter. Its
control socket is a filesystem Unix socket, so this process talks to it directly,
without entering the namespace.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..client import ClientError, request
from .netns import LabError, NetnsLab, log_tail

Json = dict[str, Any]


class DaemonError(LabError):
    """Our daemon exited, or did not reach a state in time; the message ends with its log."""


def pythonpath() -> str:
    """The directory the running aiobfd package was imported from (``src`` in a checkout)."""
    return str(Path(__file__).resolve().parents[2])


def daemon_env() -> dict[str, str]:
    """Environment additions that make ``python -m aiobfd`` run this very aiobfd."""
    return {"PYTHONPATH": pythonpath()}


def aiobfd_command(*args: str) -> list[str]:
    """``python -m aiobfd ARGS...`` with this interpreter; run it with `daemon_env()`."""
    return [sys.executable, "-m", "aiobfd", *args]


class OurDaemon:
    """``python -m aiobfd LOCAL REMOTE... ARGS`` in namespace ``ns``.

    With an empty ``local`` and no remotes, ARGS alone say what to run; use
    :meth:`from_config` for ``--config FILE``. Its control socket and log are
    ``<name>.sock`` and ``aiobfd-<name>.log`` in the lab's rundir.
    """

    config: Path | None = None
    """The configuration file, when started with :meth:`from_config`."""

    def __init__(
        self,
        lab: NetnsLab,
        ns: str,
        local: str,
        remotes: Sequence[str],
        *args: str,
        name: str = "a",
        log_level: str = "DEBUG",
    ) -> None:
        self.lab = lab
        self.ns = ns
        self.socket = lab.rundir / f"{name}.sock"
        self.log = lab.rundir / f"aiobfd-{name}.log"
        self.argv = aiobfd_command(
            *([local] if local else []),
            *remotes,
            *args,
            "--control-socket",
            str(self.socket),
            "-l",
            log_level,
            "--metrics-port",
            "0",
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def from_config(
        cls, lab: NetnsLab, ns: str, config: str | os.PathLike[str], *args: str, name: str = "a"
    ) -> OurDaemon:
        """``python -m aiobfd --config FILE ARGS``; the control socket and metrics
        options on the command line win over the file's [daemon] table."""
        daemon = cls(lab, ns, "", (), "--config", os.fspath(config), *args, name=name)
        daemon.config = Path(config)
        return daemon

    def start(self, timeout: float = 10.0) -> OurDaemon:
        """Start it and wait until its control socket answers."""
        self.proc = self.lab.popen(self.ns, *self.argv, log=self.log, extra_env=daemon_env())
        self.wait(lambda: self._try_sessions() is not None, timeout, "control socket")
        return self

    def _try_sessions(self) -> list[Json] | None:
        try:
            return self.sessions()
        except ClientError:
            return None

    def request(self, command: str, **fields: Any) -> Json:
        """One control request; raises ClientError with the daemon's reason."""
        return dict(request(str(self.socket), {"command": command, **fields}))

    def sessions(self) -> list[Json]:
        return list(self.request("show sessions")["sessions"])

    def session(self, remote: str) -> Json:
        return dict(self.request("show session", peer=remote)["session"])

    def reload(self) -> Json:
        """``aiobfdctl reload``: the summary of what changed."""
        return dict(self.request("reload")["reload"])

    def wait(self, probe: Callable[[], Any], timeout: float, what: str) -> Any:
        """Poll `probe` until it returns something truthy (a ClientError counts as "not
        yet"); raise `DaemonError` with the log's tail if the daemon exits or time runs out."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise DaemonError(
                    f"aiobfd exited with {self.proc.returncode} while waiting for {what}\n"
                    + log_tail(self.log)
                )
            try:
                last = probe()
            except ClientError as exc:
                last = exc
            if last and not isinstance(last, ClientError):
                return last
            if time.monotonic() > deadline:
                raise DaemonError(
                    f"timed out after {timeout} s waiting for {what}; last: {last}\n"
                    + log_tail(self.log)
                )
            time.sleep(0.05)

    def wait_state(self, remote: str, state: str, timeout: float = 10.0) -> Json:
        def probe() -> Json | None:
            info = self.session(remote)
            return info if info["state"] == state else None

        return dict(self.wait(probe, timeout, f"{remote} {state}"))

    def ctl(self, *args: str, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
        """Run ``aiobfdctl -s SOCKET ARGS...`` as a process (the control socket is a
        file, so it runs in the root namespace)."""
        return subprocess.run(
            [sys.executable, "-m", "aiobfd.ctl", "-s", str(self.socket), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **daemon_env()},
        )

    def hup(self) -> None:
        """SIGHUP: reload the configuration file, as ``systemctl reload`` does."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    def stop(self, timeout: float = 3.0) -> int:
        """SIGTERM, as an operator or systemd would; the exit status."""
        assert self.proc is not None
        return self.lab.stop_process(self.proc, timeout)

    def kill(self) -> None:
        """SIGKILL: it dies without a word (no AdminDown)."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(5)
