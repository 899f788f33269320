"""The control socket: a Unix stream socket speaking JSON lines.

Protocol (documented in docs/control.md): the client sends one JSON object per
line, ``{"command": "show sessions"}`` or ``{"command": "show session",
"peer": "192.0.2.1"}``; the daemon answers one JSON object per line,
``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``.  The socket is
created with mode 0600 (owner only).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
from typing import Any

from . import __version__
from .daemon import Daemon, Peer
from .status import session_info

log = logging.getLogger("aiobfd.control")

#: A request line larger than this is refused (bounded memory per client).
MAX_REQUEST = 64 * 1024


def default_socket_path() -> str:
    """``/run/aiobfd/aiobfd.sock`` as root, else under ``$XDG_RUNTIME_DIR``."""
    if os.geteuid() == 0:
        return "/run/aiobfd/aiobfd.sock"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "aiobfd.sock")
    return f"/tmp/aiobfd-{os.getuid()}.sock"


class ControlError(Exception):
    """The request cannot be served; the message goes back to the client."""


class ControlServer:
    """Serves the control protocol for one daemon."""

    def __init__(self, daemon: Daemon, path: str) -> None:
        self.daemon = daemon
        self.path = path
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        _claim_path(self.path)
        old = os.umask(0o077)
        try:
            self._server = await asyncio.start_unix_server(
                self._client, path=self.path, limit=MAX_REQUEST
            )
        finally:
            os.umask(old)
        os.chmod(self.path, stat.S_IRUSR | stat.S_IWUSR)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1)
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    await _reply(writer, {"ok": False, "error": "request too long"})
                    return
                if not line:
                    return
                try:
                    request = json.loads(line)
                    if not isinstance(request, dict):
                        raise ControlError("a request is a JSON object")
                    response = {"ok": True, **self.handle(request)}
                except (ControlError, json.JSONDecodeError, UnicodeDecodeError) as exc:
                    response = {"ok": False, "error": str(exc)}
                await _reply(writer, response)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """Answer one request (also usable without a socket, in tests)."""
        command = request.get("command")
        daemon = self.daemon
        now = daemon._clock()
        if command == "show sessions":
            return {"sessions": [session_info(p, now) for p in daemon.peers.values()]}
        if command == "show session":
            return {"session": session_info(self.find(request.get("peer")), now)}
        if command == "version":
            return {"version": __version__}
        raise ControlError(f"unknown command {command!r}")

    def find(self, name: object) -> Peer:
        """The peer a user named by remote address (``fe80::1%eth0`` too)."""
        if not isinstance(name, str) or not name:
            raise ControlError("no peer given")
        address, _, zone = name.partition("%")
        matches = [
            p
            for p in self.daemon.peers.values()
            if _same_address(p.spec.remote, address)
            and (not zone or zone in (p.spec.interface, str(p.spec.scope)))
        ]
        if not matches:
            raise ControlError(f"no session with peer {name}")
        if len(matches) > 1:
            raise ControlError(f"{name} names several sessions; add %interface")
        return matches[0]


def _same_address(a: str, b: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return a == b


async def _reply(writer: asyncio.StreamWriter, response: dict[str, Any]) -> None:
    writer.write(json.dumps(response).encode() + b"\n")
    await writer.drain()


def _claim_path(path: str) -> None:
    """Remove a stale socket file, refuse one a live daemon still answers on."""
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, mode=0o755, exist_ok=True)
    if not os.path.exists(path):
        return
    if not stat.S_ISSOCK(os.stat(path).st_mode):
        raise OSError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(0.5)
        probe.connect(path)
    except OSError:
        os.unlink(path)  # nobody listens: left over from a crash
        return
    finally:
        probe.close()
    raise OSError(f"control socket {path} is in use by another aiobfd")
