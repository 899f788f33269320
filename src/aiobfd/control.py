"""The control socket: a Unix stream socket speaking JSON lines.

Protocol (documented in docs/control.md): the client sends one JSON object per
line, ``{"command": "show sessions"}`` or ``{"command": "show session",
"peer": "192.0.2.1"}``; the daemon answers one JSON object per line,
``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``.  The socket is
created with mode 0600 (owner only), in a directory only its user or root
may write in (:func:`aiobfd.paths.check_socket_directory`).

Nothing a client does may delay the sessions, so every client is bounded
(the defaults are the constants below; docs/control.md lists them):

* at most ``max_clients`` connections are served at once.  At the cap the
  server stops accepting (it no longer reads its listening socket): further
  connections wait in the socket's backlog, and are accepted as connections
  end.  A waiting connection may take the place of one that has made no
  progress for ``EVICT_AFTER_S``: first one that does not read its answers,
  else one that sends nothing (watchers are never idle);
* a connection that sends no complete request for ``idle_timeout_s`` is
  closed (``clients_idle_closed``); a watcher sends nothing and is exempt;
* answers wait in the transport's buffer up to ``output_limit`` bytes; past
  it the connection reads no more requests until the client has read its
  answers, and is disconnected if it has not within ``slow_timeout_s``
  (``clients_dropped_slow``);
* one request per connection per turn of the event loop, so a client
  pipelining a thousand requests shares the loop with the sessions and the
  other clients; ``show sessions`` and a watch snapshot also yield once
  they have spent a millisecond of a turn, or before the sessions' next
  wake-up, whichever comes first (looking at the clock every ``SHOW_BATCH``
  sessions; see aiobfd.engine.turns);
* host names (``peer add``) are resolved in a thread of their own, at most
  ``MAX_LOOKUPS`` at once, within ``resolve_timeout_s``;
* :meth:`ControlServer.close` aborts every connection at once, whatever is
  left unsent.

The counters are public attributes of :class:`ControlServer`, for metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import inspect
import ipaddress
import json
import logging
import os
import socket
import stat
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from . import __version__
from .config import ConfigError, PeerSpec, literal, resolve_peer
from .engine import Daemon, Peer
from .paths import check_socket_directory
from .protocol.events import DrainChanged, Event, SessionRemoved, StateChanged
from .protocol.session import SessionConfig
from .status import session_info

log = logging.getLogger("aiobfd.control")

#: A request line larger than this is refused (bounded memory per client).
MAX_REQUEST = 64 * 1024
#: Sessions ``show sessions`` and a watch snapshot encode between two looks
#: at the clock.  A turn of the loop ends after a millisecond, or before the
#: sessions' next wake-up (``Daemon.turn``).  A count of sessions was no
#: bound: 50 took 1.5-4.7 ms with 10,000 sessions (their objects out of the
#: caches), and a transmission due meanwhile waited that long.
SHOW_BATCH = 8
#: Events a watcher may fall behind before it is disconnected.
WATCH_QUEUE = 1024
#: Connections served at once; more wait in the listening socket's backlog.
MAX_CLIENTS = 64
#: Connections the kernel holds for us while we are at the cap.
BACKLOG = 128
#: Seconds a connection may take to send a complete request.
IDLE_TIMEOUT_S = 10.0
#: Bytes of answers waiting for a client to read before it reads no more requests.
OUTPUT_LIMIT = 64 * 1024
#: The kernel's send buffer of a connection (it doubles it): what an unread client
#: holds beyond OUTPUT_LIMIT, and so how much work one costs before it stalls.
SEND_BUFFER = 32 * 1024
#: Seconds a client may leave its answers unread (past OUTPUT_LIMIT) before it is dropped.
SLOW_TIMEOUT_S = 5.0
#: At the cap, a connection that made no progress this long makes room for a waiting one.
EVICT_AFTER_S = 0.1
#: Seconds a host name of ``peer add`` may take to resolve.
RESOLVE_TIMEOUT_S = 2.0
#: Name lookups at once (a thread each; one the resolver never answers holds its place).
MAX_LOOKUPS = 4
#: Connections accepted per turn of the event loop.
ACCEPT_BATCH = 16
#: Characters of an error message (they may quote what the client sent).
MAX_ERROR = 1000

_REQUEST = "request"
"""A connection waiting for its client's next request."""
_OUTPUT = "output"
"""A connection waiting for its client to read its answers."""


class ControlError(Exception):
    """The request cannot be served; the message goes back to the client."""


class _Slow(Exception):
    """The client left its answers unread for too long."""


class _Idle(Exception):
    """The client sent no complete request for too long."""


class _Client:
    """One connection: its task, its stream once set up, and what it waits for."""

    __slots__ = ("conn", "since", "started", "task", "waiting", "writer")

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.task: asyncio.Task[None] | None = None
        self.started = False
        """The task has run: it owns the socket from then on."""
        self.writer: asyncio.StreamWriter | None = None
        self.waiting: str | None = None
        """_REQUEST or _OUTPUT while the connection waits for its client, else None."""
        self.since = 0.0
        """Loop time the wait began."""


class ControlServer:
    """Serves the control protocol for one daemon.

    The limits default to the module's constants; tests pass smaller ones.
    """

    def __init__(
        self,
        daemon: Daemon,
        path: str,
        reload: Callable[[], dict[str, Any] | Awaitable[dict[str, Any]]] | None = None,
        *,
        max_clients: int = MAX_CLIENTS,
        backlog: int = BACKLOG,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        output_limit: int = OUTPUT_LIMIT,
        slow_timeout_s: float = SLOW_TIMEOUT_S,
        resolve_timeout_s: float = RESOLVE_TIMEOUT_S,
    ) -> None:
        self.daemon = daemon
        self.path = path
        self._reload = reload
        """Re-reads the configuration and applies it (or a coroutine that does,
        awaited: the file read off the loop); raises ControlError."""
        self.max_clients = max_clients
        self.backlog = backlog
        self.idle_timeout_s = idle_timeout_s
        self.output_limit = output_limit
        self.slow_timeout_s = slow_timeout_s
        self.resolve_timeout_s = resolve_timeout_s

        self.clients_accepted = 0
        """Connections accepted."""
        self.accept_paused = 0
        """Times the server stopped accepting at the cap (max_clients)."""
        self.clients_dropped_slow = 0
        """Connections closed because their client did not read its answers
        (slow_timeout_s, or at the cap to make room)."""
        self.clients_idle_closed = 0
        """Connections closed because their client sent nothing
        (idle_timeout_s, or at the cap to make room)."""
        self.bad_requests = 0
        """Requests refused as malformed: not JSON, too long, too deep, not an object."""
        self.lookups_timed_out = 0
        """``peer add`` name lookups given up after resolve_timeout_s."""
        self.accept_errors = 0
        """Accepts the kernel refused (descriptor limit): accepting pauses a second."""

        self._loop: asyncio.AbstractEventLoop | None = None
        self._sock: socket.socket | None = None
        self._accepting = False
        self._recheck: asyncio.TimerHandle | None = None
        self._clients: set[_Client] = set()
        self._lookups = 0
        self._closing = False

    @property
    def clients(self) -> int:
        """Connections served now (at most max_clients)."""
        return len(self._clients)

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        _claim_path(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            old = os.umask(0o077)
            try:
                sock.bind(self.path)
            finally:
                os.umask(old)
            os.chmod(self.path, stat.S_IRUSR | stat.S_IWUSR)
            sock.listen(self.backlog)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._loop = asyncio.get_running_loop()
        self._sock = sock
        self._closing = False
        self._update_accepting()

    async def close(self) -> None:
        """Stop accepting and abort every connection at once; remove the socket file."""
        self._closing = True
        if self._recheck is not None:
            self._recheck.cancel()
            self._recheck = None
        if self._sock is not None:
            if self._accepting and self._loop is not None:
                self._loop.remove_reader(self._sock.fileno())
            self._accepting = False
            self._sock.close()
            self._sock = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        clients = list(self._clients)
        for client in clients:
            self._drop(client)
        tasks = [c.task for c in clients if c.task is not None]
        if tasks:  # cancelled and aborted: each ends at its next step
            await asyncio.wait(tasks, timeout=1)

    # ------------------------------------------------------------ accepting

    def _set_accepting(self, on: bool) -> None:
        if on == self._accepting or self._sock is None or self._loop is None:
            return
        self._accepting = on
        if on:
            self._loop.add_reader(self._sock.fileno(), self._on_acceptable)
        else:
            self._loop.remove_reader(self._sock.fileno())

    def _update_accepting(self) -> None:
        """Accept below the cap, or at it while a connection could make room."""
        if self._closing or self._loop is None:
            return
        if self._recheck is not None:
            self._recheck.cancel()
            self._recheck = None
        if len(self._clients) < self.max_clients:
            self._set_accepting(True)
            return
        oldest = min((c.since for c in self._clients if c.waiting is not None), default=None)
        if oldest is not None and self._loop.time() - oldest >= EVICT_AFTER_S:
            self._set_accepting(True)  # the next connection takes its place
            return
        if self._accepting:
            self.accept_paused += 1
            self._set_accepting(False)
        if oldest is not None:
            self._recheck = self._loop.call_at(oldest + EVICT_AFTER_S, self._update_accepting)

    def _on_acceptable(self) -> None:
        """The listening socket has connections waiting: accept a few."""
        assert self._sock is not None
        evicted = False
        for _ in range(ACCEPT_BATCH):
            if len(self._clients) >= self.max_clients:
                # One eviction per call: the socket being readable says one
                # connection waits, not how many (it is read again next turn).
                if evicted or not self._evict():
                    self._update_accepting()
                    return
                evicted = True
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self.accept_errors += 1
                    log.warning("control socket: cannot accept (%s); pausing 1 s", exc.strerror)
                    self._set_accepting(False)
                    assert self._loop is not None
                    self._recheck = self._loop.call_later(1.0, self._update_accepting)
                    return
                continue  # the connection went away before we took it
            self._serve(conn)

    def _evict(self) -> bool:
        """Close the connection that made no progress longest, if long enough.

        One that does not read its answers goes before one that sends nothing.
        """
        assert self._loop is not None
        limit = self._loop.time() - EVICT_AFTER_S
        victim: _Client | None = None
        for c in self._clients:
            if c.waiting is None or c.since > limit:
                continue
            if victim is None or (c.waiting != _OUTPUT, c.since) < (
                victim.waiting != _OUTPUT,
                victim.since,
            ):
                victim = c
        if victim is None:
            return False
        if victim.waiting == _OUTPUT:
            self.clients_dropped_slow += 1
        else:
            self.clients_idle_closed += 1
        self._drop(victim)
        return True

    def _serve(self, conn: socket.socket) -> None:
        assert self._loop is not None
        with contextlib.suppress(OSError):
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        client = _Client(conn)
        self._clients.add(client)
        self.clients_accepted += 1
        client.task = self._loop.create_task(self._run(client))

    def _drop(self, client: _Client) -> None:
        """End a connection now: no more output, nothing more read."""
        self._clients.discard(client)
        if client.writer is not None:
            client.writer.transport.abort()
        elif not client.started:  # its task never ran: the socket is still ours
            client.conn.close()
        if client.task is not None:
            client.task.cancel()

    def _waits(self, client: _Client, what: str) -> None:
        assert self._loop is not None
        client.waiting = what
        client.since = self._loop.time()
        if not self._accepting and self._recheck is None:
            self._update_accepting()

    # ------------------------------------------------------------ one connection

    async def _run(self, client: _Client) -> None:
        client.started = True
        writer: asyncio.StreamWriter | None = None
        try:
            try:
                reader, writer = await asyncio.open_unix_connection(
                    sock=client.conn, limit=MAX_REQUEST
                )
            except BaseException:
                client.conn.close()
                raise
            client.writer = writer
            writer.transport.set_write_buffer_limits(high=self.output_limit)
            await self._converse(client, reader, writer)
        except _Slow:
            self.clients_dropped_slow += 1
        except _Idle:
            self.clients_idle_closed += 1
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # Dropped (at the cap, or close()): the connection task ends here.
            # Re-raised, the exception would stay on the task with a traceback
            # through this frame back to the task: a cycle that keeps the
            # stream's buffers until the collector's next full pass (at a
            # thousand drops a second, tens of MB).
            pass
        except Exception:
            log.exception("control connection failed")
        finally:
            if writer is not None:
                transport = writer.transport
                if transport.get_write_buffer_size():
                    transport.abort()  # it does not read: nothing to wait for
                else:
                    transport.close()
            if client in self._clients:
                self._clients.discard(client)
                self._update_accepting()

    async def _converse(
        self, client: _Client, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Requests and answers until the client leaves or breaks a limit."""
        while True:
            self._waits(client, _REQUEST)
            try:
                async with asyncio.timeout(self.idle_timeout_s):
                    line = await reader.readline()
            except TimeoutError:
                raise _Idle from None
            except (ValueError, asyncio.LimitOverrunError):
                self.bad_requests += 1
                await self._reply(
                    client, writer, _error(f"request too long (at most {MAX_REQUEST} bytes)")
                )
                return
            finally:
                client.waiting = None
            if not line:
                return
            try:
                request = _parse(line)
            except ControlError as exc:
                self.bad_requests += 1
                await self._reply(client, writer, _error(str(exc)))
                continue
            command = request["command"]
            if command == "watch":
                await self._watch(client, reader, writer)
                return
            if command == "show sessions":
                await self._show_sessions(client, writer)
            else:
                try:
                    response = {"ok": True, **(await self.handle(request))}
                except ControlError as exc:
                    response = _error(str(exc))
                except Exception as exc:  # a bug of ours: an answer all the same
                    log.exception("control request %.100r failed", command)
                    response = _error(f"internal error: {exc!r}")
                await self._reply(client, writer, response)
            await asyncio.sleep(0)  # one request per connection per turn

    async def _send(self, client: _Client, writer: asyncio.StreamWriter, data: bytes) -> None:
        """Write `data`; past output_limit, wait (at most slow_timeout_s) for the client to read."""
        if writer.transport.is_closing():  # it went away: answer no more of its requests
            raise ConnectionResetError("control client gone")
        writer.write(data)
        if writer.transport.get_write_buffer_size() <= self.output_limit:
            return
        self._waits(client, _OUTPUT)
        try:
            async with asyncio.timeout(self.slow_timeout_s):
                await writer.drain()
        except TimeoutError:
            raise _Slow from None
        finally:
            client.waiting = None

    async def _reply(
        self, client: _Client, writer: asyncio.StreamWriter, response: dict[str, Any]
    ) -> None:
        await self._send(client, writer, json.dumps(response).encode() + b"\n")

    async def _watch(
        self, client: _Client, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
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
                record["draining"] = self.daemon.drain.is_draining(peer.spec.key)
            elif isinstance(event, DrainChanged):
                record = {
                    "event": "drain",
                    **_peer_fields(peer),
                    "state": peer.session.state.label,
                    "draining": event.draining,
                    "time": time.time(),
                }
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
        closed = asyncio.ensure_future(_until_eof(reader))  # the client leaves
        try:
            await self._reply(
                client, writer, {"ok": True, "watching": True, "sessions": len(self.daemon.peers)}
            )
            now = self.daemon.now()
            turn = self.daemon.turn()
            for n, peer in enumerate(list(self.daemon.peers.values()), 1):
                info = self._info(peer, now)
                await self._reply(
                    client,
                    writer,
                    {"event": "snapshot", **_brief(info), "draining": info["draining"]},
                )
                # drain() does not yield while the buffer has room: without
                # this, 1,000 sessions held every session's timers for 100 ms
                # and more (peers declared us down).
                if n % SHOW_BATCH == 0 and await turn.pause():
                    now = self.daemon.now()
            while True:
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({getter, closed}, return_when=asyncio.FIRST_COMPLETED)
                if closed in done:
                    getter.cancel()
                    return
                record = getter.result()
                if record is None:
                    await self._reply(
                        client, writer, {"ok": False, "error": "watcher too slow, disconnected"}
                    )
                    return
                await self._reply(client, writer, record)
        finally:
            closed.cancel()
            self.daemon.remove_listener(listener)

    async def _show_sessions(self, client: _Client, writer: asyncio.StreamWriter) -> None:
        """``show sessions`` as :meth:`handle` answers it, written in slices.

        With thousands of sessions, building and encoding the whole reply at
        once would hold the event loop longer than a fast session's Detection
        Time; between slices the loop serves timers and packets.
        """
        peers = list(self.daemon.peers.values())
        writer.write(b'{"ok": true, "sessions": [')
        at = sent = 0
        turn = self.daemon.turn()
        while at < len(peers):
            now = self.daemon.now()
            parts: list[str] = []
            while at < len(peers):
                parts += [json.dumps(self._info(p, now)) for p in peers[at : at + SHOW_BATCH]]
                at += SHOW_BATCH
                if turn.over():
                    break
            head = ", " if sent else ""
            sent += len(parts)
            await self._send(client, writer, (head + ", ".join(parts)).encode())
            await asyncio.sleep(0)
            turn.begin()
        waiting = [_waiting_info(spec) for spec in self.daemon.waiting.values()]
        if waiting:
            chunk = ", ".join(json.dumps(w) for w in waiting)
            await self._send(client, writer, (", " if peers else "").encode() + chunk.encode())
        await self._send(client, writer, b"]}\n")

    # ------------------------------------------------------------ requests

    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """Answer one request (also usable without a socket, in tests); ControlError."""
        command = request.get("command")
        daemon = self.daemon
        now = daemon.now()
        if command == "show sessions":
            return {
                "sessions": [self._info(p, now) for p in daemon.peers.values()]
                + [_waiting_info(spec) for spec in daemon.waiting.values()]
            }
        if command == "show session":
            return {"session": self._info(self.find(request.get("peer")), now)}
        if command in ("drain", "undrain"):
            return self._drain(command, request)
        if command == "version":
            return {"version": __version__}
        if command == "reload":
            if self._reload is None:
                raise ControlError("no configuration file to reload (started without --config)")
            summary = self._reload()
            if inspect.isawaitable(summary):
                summary = await summary
            return {"reload": summary}
        if command == "peer add":
            peer = await self._peer_add(request)
            return {"session": self._info(peer, daemon.now())}
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
            return {"session": self._info(peer, daemon.now())}
        raise ControlError(f"unknown command {command!r}")

    def _info(self, peer: Peer, now: int) -> dict[str, Any]:
        """:func:`session_info`, with what the engine knows beside the core:
        ``draining`` (aiobfdctl drain) and ``path_down`` (why the interface or
        the local address is missing, None while the path is up)."""
        info = session_info(peer, now)
        key = peer.spec.key
        info["draining"] = self.daemon.drain.is_draining(key)
        info["path_down"] = self.daemon.links.reasons.get(key)
        return info

    def _drain(self, command: str, request: dict[str, Any]) -> dict[str, Any]:
        """``drain``/``undrain`` of one peer (``peer``) or all (``all``: true);
        ``drain`` takes ``wait_ms`` (default: the daemon's ``drain_wait_ms``)."""
        daemon = self.daemon
        if request.get("all") is True:
            keys = list(daemon.peers)
        else:
            keys = [self.find(request.get("peer")).spec.key]
        if command == "undrain":
            ended = daemon.drain.undrain(keys, daemon.now())
            return {"undrained": [p.spec.display_remote() for p in ended]}
        wait = request.get("wait_ms")
        if wait is not None and (
            not isinstance(wait, int) or isinstance(wait, bool) or not 0 <= wait <= 3_600_000
        ):
            raise ControlError("wait_ms must be a whole number of milliseconds, 0-3600000")
        started = daemon.drain.drain(keys, daemon.now(), wait)
        return {
            "draining": [p.spec.display_remote() for p in started],
            "wait_ms": daemon.drain.wait_ms if wait is None else wait,
        }

    async def _peer_add(self, request: dict[str, Any]) -> Peer:
        remote, local = request.get("remote"), request.get("local")
        if not isinstance(remote, str) or not remote:
            raise ControlError("peer add needs a remote address")
        if local is None:
            local = self._default_local(remote)
        if not isinstance(local, str) or not local:
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
            if _literal(local) and _literal(remote):
                spec = resolve_peer(local, remote, session)  # no lookup: cheap
            else:
                spec = await self._resolve(local, remote, session)
        except (ConfigError, ValueError, TypeError, OSError) as exc:
            raise ControlError(str(exc)) from None
        if spec.key in self.daemon.peers:
            raise ControlError(f"a session with {spec.display_remote()} exists already")
        try:
            peer = self.daemon.add_peer(spec)
        except OSError as exc:
            raise ControlError(f"cannot open sockets: {exc}") from None
        peer.runtime = True
        return peer

    async def _resolve(self, local: str, remote: str, session: SessionConfig) -> PeerSpec:
        """:func:`resolve_peer` in a thread of its own, within resolve_timeout_s.

        A daemon thread, not the loop's executor: a lookup the resolver never
        answers must hold neither the loop nor the process's exit.
        """
        names = " and ".join(repr(n) for n in (local, remote) if not _literal(n))
        if self._lookups >= MAX_LOOKUPS:
            raise ControlError(
                f"cannot resolve {names}: {self._lookups} name lookups are under way; try later"
            )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[PeerSpec] = loop.create_future()
        self._lookups += 1

        def settle(result: PeerSpec | None, error: BaseException | None) -> None:
            self._lookups -= 1
            if future.done():  # given up on (timeout, or the client left)
                return
            if error is not None:
                future.set_exception(error)
            else:
                assert result is not None
                future.set_result(result)

        def lookup() -> None:
            result: PeerSpec | None = None
            error: BaseException | None = None
            try:
                result = resolve_peer(local, remote, session)
            except Exception as exc:
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                loop.call_soon_threadsafe(settle, result, error)

        threading.Thread(target=lookup, name="aiobfd-resolve", daemon=True).start()
        try:
            async with asyncio.timeout(self.resolve_timeout_s):
                return await future
        except TimeoutError:
            self.lookups_timed_out += 1
            raise ControlError(
                f"cannot resolve {names}: no answer within {self.resolve_timeout_s:g} s"
            ) from None

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


def _parse(line: bytes) -> dict[str, Any]:
    """A request line as its object; ControlError saying what is wrong with it."""
    try:
        request = json.loads(line)
    except RecursionError:
        raise ControlError("malformed request: nested too deeply") from None
    except UnicodeDecodeError:
        raise ControlError("malformed request: not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise ControlError(
            f"malformed request: not JSON ({exc.msg} at column {exc.colno})"
        ) from None
    except ValueError as exc:
        if "integer string conversion" in str(exc):  # int('1' * 5000)
            digits = sys.get_int_max_str_digits()
            raise ControlError(
                f"malformed request: a number of more than {digits} digits"
            ) from None
        raise ControlError(f"malformed request: {exc}") from None
    if not isinstance(request, dict):
        raise ControlError("a request is a JSON object")
    if not isinstance(request.get("command"), str):
        raise ControlError('a request needs "command", a string')
    return request


def _error(message: str) -> dict[str, Any]:
    if len(message) > MAX_ERROR:
        message = message[: MAX_ERROR - 3] + "..."
    return {"ok": False, "error": message}


async def _until_eof(reader: asyncio.StreamReader) -> None:
    """Read and drop what the client sends until it closes (bounded memory)."""
    while await reader.read(4096):
        pass


def _literal(host: str) -> bool:
    """`host` needs no lookup: an address literal (``fe80::1%eth0`` too), or
    what :func:`aiobfd.config.literal` refuses at once (``010.0.0.1``)."""
    try:
        return literal(host.partition("%")[0]) is not None
    except ConfigError:
        return True


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


def _waiting_info(spec: PeerSpec) -> dict[str, Any]:
    """A session waiting for its local address, as ``show sessions`` lists it."""
    return {
        "remote": spec.remote,
        "local": spec.local,
        "interface": spec.interface or None,
        "peer": spec.display_remote(),
        "multihop": spec.multihop,
        "state": "down",
        "waiting": f"local address {spec.local} is not on this host",
        "path_down": f"local address {spec.local} is not on this host",
        "draining": False,
        "uptime_s": None,
        "local_diag": 0,
        "remote_diag": 0,
        "tx_interval_ms": 0,
        "rx_interval_ms": 0,
        "detect_time_ms": 0,
        "counters": {"packets_in": 0, "packets_out": 0},
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
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return address


def _same_address(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return a == b


def _claim_path(path: str) -> None:
    """Check the socket's directory, remove a stale socket, refuse one a live daemon answers on."""
    check_socket_directory(os.path.dirname(path))
    if not os.path.lexists(path):
        return
    if not stat.S_ISSOCK(os.lstat(path).st_mode):
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
