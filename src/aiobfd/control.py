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
import time
from collections.abc import Callable
from typing import Any

from . import __version__
from .config import ConfigError, resolve_peer
from .engine import Daemon, Peer
from .paths import default_socket_path as default_socket_path  # cli.py finds it here
from .protocol.events import Event, SessionRemoved, StateChanged
from .protocol.session import SessionConfig
from .status import session_info

log = logging.getLogger("aiobfd.control")

#: A request line larger than this is refused (bounded memory per client).
MAX_REQUEST = 64 * 1024
#: Sessions encoded between two turns of the event loop in ``show sessions``.
SHOW_SLICE = 50
#: Events a watcher may fall behind before it is disconnected.
WATCH_QUEUE = 1024


class ControlError(Exception):
    """The request cannot be served; the message goes back to the client."""


class ControlServer:
    """Serves the control protocol for one daemon."""

    def __init__(
        self,
        daemon: Daemon,
        path: str,
        reload: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.daemon = daemon
        self.path = path
        self._reload = reload
        """Re-reads the configuration and applies it; raises ControlError."""
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
                    if request.get("command") == "watch":
                        await self._watch(reader, writer)
                        return
                    if request.get("command") == "show sessions":
                        await self._show_sessions(writer)
                        continue
                    response = {"ok": True, **self.handle(request)}
                except (ControlError, json.JSONDecodeError, UnicodeDecodeError) as exc:
                    response = {"ok": False, "error": str(exc)}
                await _reply(writer, response)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _watch(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Stream session events until the client goes away.

        First one ``{"event": "snapshot", ...}`` line per session with its
        current state, then one ``{"event": "state", ...}`` line per change.  A
        client that falls more than WATCH_QUEUE events behind is disconnected
        (with a last ``{"ok": false}`` line) rather than let memory grow.
        """
        # Room for every session to change twice (all coming Up at once).
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(
            max(WATCH_QUEUE, 4 * len(self.daemon.peers))
        )

        def listener(peer: Peer, event: Event) -> None:
            if isinstance(event, StateChanged):
                record = event_record(peer, event)
            elif isinstance(event, SessionRemoved):
                record = {"event": "removed", **_peer_fields(peer), "time": time.time()}
            else:
                return
            try:
                queue.put_nowait(record)
            except asyncio.QueueFull:
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
                queue.put_nowait(None)  # the marker for "too slow"

        self.daemon.add_listener(listener)
        closed = asyncio.ensure_future(reader.read())  # EOF when the client leaves
        try:
            await _reply(writer, {"ok": True, "watching": True, "sessions": len(self.daemon.peers)})
            now = self.daemon.now()
            for n, peer in enumerate(list(self.daemon.peers.values()), 1):
                info = session_info(peer, now)
                await _reply(writer, {"event": "snapshot", **_brief(info)})
                if n % SHOW_SLICE == 0:
                    # drain() does not yield while the buffer has room: without
                    # this, 1,000 sessions held every session's timers for
                    # 100 ms and more (peers declared us down).
                    await asyncio.sleep(0)
            while True:
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({getter, closed}, return_when=asyncio.FIRST_COMPLETED)
                if closed in done:
                    getter.cancel()
                    return
                record = getter.result()
                if record is None:
                    await _reply(writer, {"ok": False, "error": "watcher too slow, disconnected"})
                    return
                await _reply(writer, record)
        finally:
            closed.cancel()
            self.daemon.remove_listener(listener)

    async def _show_sessions(self, writer: asyncio.StreamWriter) -> None:
        """``show sessions`` as :meth:`handle` answers it, written in slices.

        With thousands of sessions, building and encoding the whole reply at
        once would hold the event loop longer than a fast session's Detection
        Time; between slices the loop serves timers and packets.
        """
        peers = list(self.daemon.peers.values())
        writer.write(b'{"ok": true, "sessions": [')
        for start in range(0, len(peers), SHOW_SLICE):
            now = self.daemon.now()
            chunk = ", ".join(
                json.dumps(session_info(p, now)) for p in peers[start : start + SHOW_SLICE]
            )
            writer.write((", " if start else "").encode() + chunk.encode())
            await writer.drain()
            await asyncio.sleep(0)
        writer.write(b"]}\n")
        await writer.drain()

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """Answer one request (also usable without a socket, in tests)."""
        command = request.get("command")
        daemon = self.daemon
        now = daemon.now()
        if command == "show sessions":
            return {"sessions": [session_info(p, now) for p in daemon.peers.values()]}
        if command == "show session":
            return {"session": session_info(self.find(request.get("peer")), now)}
        if command == "version":
            return {"version": __version__}
        if command == "reload":
            if self._reload is None:
                raise ControlError("no configuration file to reload (started without --config)")
            return {"reload": self._reload()}
        if command == "peer add":
            return {"session": session_info(self._peer_add(request), now)}
        if command in ("peer del", "peer shutdown", "peer enable"):
            peer = self.find(request.get("peer"))
            key = peer.spec.key
            if command == "peer del":
                daemon.remove_peer(key)
                return {"removed": peer.spec.display_remote()}
            peer.runtime = True
            if command == "peer shutdown":
                daemon.disable(key)
            else:
                daemon.enable(key)
            return {"session": session_info(peer, daemon.now())}
        raise ControlError(f"unknown command {command!r}")

    def _peer_add(self, request: dict[str, Any]) -> Peer:
        remote, local = request.get("remote"), request.get("local")
        if not isinstance(remote, str) or not remote:
            raise ControlError("peer add needs a remote address")
        if local is None:
            local = self._default_local(remote)
        if not isinstance(local, str):
            raise ControlError("local must be an address")
        defaults = SessionConfig()
        detect_mult = request.get("detect_mult", defaults.detect_mult)
        if not isinstance(detect_mult, int) or isinstance(detect_mult, bool):
            raise ControlError("detect_mult must be a whole number")
        passive = request.get("passive", False)
        if not isinstance(passive, bool):  # bool("false") would be True
            raise ControlError("passive must be true or false")
        interface = request.get("interface")
        if interface is not None and not isinstance(interface, str):
            raise ControlError("interface must be an interface name")
        try:
            session = SessionConfig(
                desired_min_tx_us=_ms(request, "tx_interval_ms", defaults.desired_min_tx_us),
                required_min_rx_us=_ms(request, "rx_interval_ms", defaults.required_min_rx_us),
                detect_mult=detect_mult,
                passive=passive,
            )
            if interface and "%" not in remote:
                remote = f"{remote}%{interface}"
            spec = resolve_peer(local, remote, session)
        except (ConfigError, ValueError, TypeError) as exc:
            raise ControlError(str(exc)) from None
        if spec.key in self.daemon.peers:
            raise ControlError(f"a session with {spec.display_remote()} exists already")
        try:
            peer = self.daemon.add_peer(spec)
        except OSError as exc:
            raise ControlError(f"cannot open sockets: {exc}") from None
        peer.runtime = True
        return peer

    def _default_local(self, remote: str) -> str:
        """The local address of the existing sessions, when they agree on one."""
        locals_ = {p.spec.local for p in self.daemon.peers.values()}
        if len(locals_) != 1:
            raise ControlError("give the local address (--local)")
        return locals_.pop()

    def find(self, name: object) -> Peer:
        """The peer a user named by remote address (``fe80::1%eth0`` too)."""
        if not isinstance(name, str) or not name:
            raise ControlError("no peer given")
        address, _, zone = name.partition("%")
        peers = [
            p
            for p in self.daemon.peers.values()
            if not zone or zone in (p.spec.interface, str(p.spec.scope))
        ]
        # Plain string compares first (sessions hold canonical addresses): with
        # thousands of sessions, parsing every one would hold the event loop.
        canonical = _canonical(address)
        matches = [p for p in peers if p.spec.remote == canonical] or [
            p for p in peers if _same_address(p.spec.remote, address)
        ]
        if not matches:
            raise ControlError(f"no session with peer {name}")
        if len(matches) > 1:
            raise ControlError(f"{name} names several sessions; add %interface")
        return matches[0]


def _peer_fields(peer: Peer) -> dict[str, Any]:
    spec = peer.spec
    return {
        "peer": spec.display_remote(),
        "remote": spec.remote,
        "local": spec.local,
        "interface": spec.interface or None,
        "multihop": spec.multihop,
    }


def event_record(peer: Peer, ev: StateChanged) -> dict[str, Any]:
    """One state change as the watch stream carries it."""
    return {
        "event": "state",
        **_peer_fields(peer),
        "old_state": ev.old_state.label,
        "state": ev.new_state.label,
        "diag": int(ev.diag),
        "diag_name": ev.diag.label,
        "remote_diag": int(ev.remote_diag),
        "time": time.time(),
    }


def _brief(info: dict[str, Any]) -> dict[str, Any]:
    keys = ("peer", "remote", "local", "interface", "state", "local_diag", "remote_diag")
    return {k: info[k] for k in keys}


def _ms(request: dict[str, Any], key: str, default_us: int) -> int:
    value = request.get(key)
    if value is None:
        return default_us
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{key} must be a whole number of milliseconds")
    return value * 1000


def _canonical(address: str) -> str:
    import ipaddress

    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return address


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
