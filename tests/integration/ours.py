"""Our daemon as a process inside a lab namespace, observed through its control socket.

The control socket is a filesystem Unix socket, so the test process talks to it
directly, without entering the namespace.
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

from aiobfd.ctl import CtlError, request

from .netns import Lab, log_tail

Json = dict[str, Any]
SRC = str(Path(__file__).resolve().parents[2] / "src")


class OurDaemon:
    """``python -m aiobfd LOCAL REMOTE... ARGS`` in namespace ``ns``.

    With an empty ``local`` and no remotes, ARGS alone say what to run; use
    :meth:`from_config` for ``--config FILE``.
    """

    def __init__(
        self, lab: Lab, ns: str, local: str, remotes: Sequence[str], *args: str, name: str = "a"
    ) -> None:
        self.lab = lab
        self.ns = ns
        self.socket = lab.rundir / f"{name}.sock"
        self.log = lab.rundir / f"aiobfd-{name}.log"
        self.argv = [
            sys.executable,
            "-m",
            "aiobfd",
            *([local] if local else []),
            *remotes,
            *args,
            "--control-socket",
            str(self.socket),
            "-l",
            "DEBUG",
            "--metrics-port",
            "0",
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def from_config(
        cls, lab: Lab, ns: str, config: str | os.PathLike[str], *args: str, name: str = "a"
    ) -> OurDaemon:
        """``python -m aiobfd --config FILE ARGS``; the control socket and metrics
        options on the command line win over the file's [daemon] table."""
        daemon = cls(lab, ns, "", (), "--config", os.fspath(config), *args, name=name)
        daemon.config = Path(config)
        return daemon

    config: Path | None = None
    """The configuration file, when started with :meth:`from_config`."""

    def start(self, timeout: float = 10.0) -> OurDaemon:
        self.proc = self.lab.popen(self.ns, *self.argv, log=self.log, extra_env={"PYTHONPATH": SRC})
        self.wait(lambda: self._try_sessions() is not None, timeout, "control socket")
        return self

    def _try_sessions(self) -> list[Json] | None:
        try:
            return list(request(str(self.socket), {"command": "show sessions"})["sessions"])
        except CtlError:
            return None

    def sessions(self) -> list[Json]:
        return list(request(str(self.socket), {"command": "show sessions"})["sessions"])

    def session(self, remote: str) -> Json:
        return dict(
            request(str(self.socket), {"command": "show session", "peer": remote})["session"]
        )

    def wait(self, probe: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"aiobfd exited with {self.proc.returncode} while waiting for {what}\n"
                    + log_tail(self.log)
                )
            try:
                last = probe()
            except CtlError as exc:
                last = exc
            if last and not isinstance(last, CtlError):
                return last
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout} s waiting for {what}; last: {last}\n"
                    + log_tail(self.log)
                )
            time.sleep(0.05)

    def wait_state(self, remote: str, state: str, timeout: float = 10.0) -> Json:
        def probe() -> Json | None:
            info = self.session(remote)
            return info if info["state"] == state else None

        return dict(self.wait(probe, timeout, f"{remote} {state}"))

    def reload(self) -> Json:
        """``aiobfdctl reload``: the summary of what changed."""
        return dict(request(str(self.socket), {"command": "reload"})["reload"])

    def request(self, command: str, **fields: Any) -> Json:
        """One control request; raises CtlError with the daemon's reason."""
        return dict(request(str(self.socket), {"command": command, **fields}))

    def ctl(self, *args: str, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
        """Run ``aiobfdctl -s SOCKET ARGS...`` as a process (the control socket is a
        file, so it runs in the root namespace)."""
        return subprocess.run(
            [sys.executable, "-m", "aiobfd.ctl", "-s", str(self.socket), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "PYTHONPATH": SRC},
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
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(5)
