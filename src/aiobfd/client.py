"""The client side of the control socket, shared by ``aiobfdctl`` and ``aiobfd-exabgp``.

The daemon speaks JSON lines on a Unix stream socket (docs/control.md; the
server is :mod:`aiobfd.control`).  What both clients need is written once here:
framing the lines, checking the daemon's answers, and saying in one line why
aiobfd cannot be reached (naming the socket).  Two thin entries do the I/O on
top of that:

* blocking, for ``aiobfdctl``: :func:`request` (one request, one answer) and
  :func:`watch` (the watch stream as an iterator);
* asyncio, for ``aiobfd-exabgp``: :class:`AsyncWatch` (the watch stream in
  batches, with timeouts).

Before a request is written, the daemon is checked: the process listening on
the socket (``SO_PEERCRED`` of the connected socket) must run as root or as
this user - or, for root, as the user who owns the socket's directory when
nobody else may write in it (``/run/aiobfd`` of the systemd unit, owned by
``User=aiobfd``) - or the client refuses in one line (:class:`NotOurDaemon`):
another user could have put a socket where the client looks.

``aiobfdctl`` has to start fast: this module imports neither the server, the
engine nor asyncio (the asyncio entry imports it when it runs; a test checks).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .paths import private_to

if TYPE_CHECKING:
    import asyncio

#: Seconds to connect, and for a request to be answered.
TIMEOUT_S = 5.0
#: Seconds between two tries to connect while the daemon's backlog is full.
CONNECT_RETRY_S = 0.01
#: A line of the watch stream longer than this ends the stream (bounded memory).
MAX_LINE = 1 << 20
READ_SIZE = 65536
WATCH_REQUEST = b'{"command": "watch"}\n'


class ClientError(Exception):
    """aiobfd cannot be reached, or it refused: one line for the user."""


class AccessDenied(ClientError):
    """The socket's mode (0600) keeps this user out."""


class NotOurDaemon(ClientError):
    """The socket is served by a process of another user: not talked to."""


class Garbled(ClientError):
    """A line from the daemon that is not a JSON object."""

    def __init__(self, why: str) -> None:
        super().__init__(f"garbled line from aiobfd ({why})")
        self.why = why


def _failure(path: str, exc: OSError | ValueError) -> ClientError:
    """What a failed connect, send or receive on `path` means to the user."""
    if isinstance(exc, FileNotFoundError | ConnectionRefusedError):
        return ClientError(f"aiobfd is not running (no daemon on {path})")
    if isinstance(exc, PermissionError):
        return AccessDenied(f"permission denied on {path}")
    if isinstance(exc, TimeoutError):
        return ClientError(f"no answer from aiobfd on {path}")
    if isinstance(exc, BlockingIOError):  # connect: the daemon's backlog is full
        return ClientError(f"aiobfd on {path} is busy (too many clients); try again")
    return ClientError(f"cannot talk to aiobfd on {path}: {exc}")


@contextlib.contextmanager
def _talking(path: str) -> Iterator[None]:
    """Socket errors inside become ClientError."""
    try:
        yield
    except (OSError, ValueError) as exc:
        raise _failure(path, exc) from None


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a connected Unix socket (Linux)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def check_daemon(path: str, sock: socket.socket) -> None:
    """NotOurDaemon unless the process serving `sock` may be trusted (module docstring)."""
    with _talking(path):
        uid = peer_uid(sock)
    me = os.geteuid()
    if uid in (0, me):
        return
    if me == 0 and private_to(os.path.dirname(os.path.abspath(path)), uid):
        return
    raise NotOurDaemon(
        f"refusing to talk to {path}: it is served by uid {uid}, not by root or this user ({me})"
    )


# -- framing and answers (no I/O) ------------------------------------------------------


class _LineBuffer:
    """Splits a byte stream into lines, a chunk at a time, with an optional bound."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self.partial = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        """The lines `chunk` completes; ClientError when a line outgrows the limit."""
        *lines, self.partial = (self.partial + chunk).split(b"\n")
        if self.limit is not None and len(self.partial) > self.limit:
            raise ClientError("line from aiobfd too long")
        return lines


def _encode(payload: dict[str, Any]) -> bytes:
    """A request as its line."""
    return json.dumps(payload).encode() + b"\n"


def _decode(line: bytes) -> dict[str, Any]:
    """The JSON object on a line; Garbled when it is none."""
    try:
        record = json.loads(line)
    except ValueError:  # UnicodeDecodeError is one
        raise Garbled("not JSON") from None
    if not isinstance(record, dict):
        raise Garbled("not a JSON object")
    return record


def watch_record(line: bytes) -> dict[str, Any] | None:
    """A line of the watch stream as its record, None when blank.

    Garbled when it is not a JSON object; ClientError when the daemon ends the
    stream (``{"ok": false, "error": ...}``, a watcher that fell behind).
    """
    if not line.strip():
        return None
    record = _decode(line)
    if record.get("ok") is False:
        raise ClientError(f"aiobfd ended the watch: {record.get('error')}")
    return record


def _watch_started(line: bytes) -> dict[str, Any]:
    """The daemon's yes to ``watch`` (``{"ok": true, ...}``); ClientError otherwise."""
    try:
        answer = _decode(line)
    except Garbled:
        answer = {}
    if answer.get("ok") is not True:
        raise ClientError(f"watch refused: {answer.get('error') or line[:200]!r}")
    return answer


# -- blocking, for aiobfdctl -----------------------------------------------------------


def _connect(path: str, timeout: float | None) -> socket.socket:
    """A connected control socket of our daemon; ClientError when none is there to answer."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        with _talking(path):
            while True:
                try:
                    sock.connect(path)
                    break
                except BlockingIOError:
                    # The daemon serves as many clients as it will and its
                    # backlog is full (docs/control.md): wait for room.
                    if deadline is not None and time.monotonic() >= deadline:
                        raise  # "aiobfd on PATH is busy"
                    time.sleep(CONNECT_RETRY_S)
        check_daemon(path, sock)
    except BaseException:
        sock.close()
        raise
    return sock


def _lines(sock: socket.socket, limit: int | None) -> Iterator[bytes]:
    """Complete lines from `sock` until the daemon closes it."""
    buffer = _LineBuffer(limit)
    while chunk := sock.recv(READ_SIZE):
        yield from buffer.feed(chunk)


def request(path: str, payload: dict[str, Any], timeout: float = TIMEOUT_S) -> dict[str, Any]:
    """Send one request and return the daemon's answer (raises ClientError)."""
    with _connect(path, timeout) as sock, _talking(path):
        sock.sendall(_encode(payload))
        line = next(_lines(sock, None), b"")  # no bound: show sessions is one long line
    try:
        answer = _decode(line)
    except Garbled:
        raise ClientError(f"garbled answer from aiobfd on {path}") from None
    if not answer.get("ok"):
        raise ClientError(str(answer.get("error", "request failed")))
    return answer


def watch(path: str) -> Iterator[dict[str, Any]]:
    """Session events from the daemon: a snapshot per session, then each change.

    Ends when the daemon closes the stream (it stopped); raises ClientError when
    it cannot be reached, refuses, or sends what is not a record.
    """
    with _connect(path, None) as sock:
        with _talking(path):
            sock.sendall(WATCH_REQUEST)
            lines = _lines(sock, MAX_LINE)
            first = next(lines, None)
        if first is None:
            raise ClientError(f"no answer to watch from aiobfd on {path}")
        _watch_started(first)
        while True:
            with _talking(path):
                line = next(lines, None)
            if line is None:
                return
            record = watch_record(line)
            if record is not None:
                yield record


# -- asyncio, for aiobfd-exabgp --------------------------------------------------------


class AsyncWatch:
    """The watch stream on asyncio: the daemon's answer, then lines in batches.

    Open it with :meth:`open`; close it with :meth:`close`.
    """

    def __init__(
        self, path: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._path = path
        self._reader = reader
        self._writer = writer
        self._buffer = _LineBuffer(MAX_LINE)
        self.answer: dict[str, Any] = {}
        """The daemon's yes: ``{"ok": true, "watching": true, "sessions": N}``."""
        self.early: list[bytes] = []
        """Lines read together with the answer (the start of the snapshot)."""

    @classmethod
    async def open(cls, path: str, timeout: float) -> AsyncWatch:
        """Connect, ask for the stream and wait for the daemon's yes, each within `timeout`.

        Raises ClientError (AccessDenied for the socket's mode, NotOurDaemon
        when another user's process serves it).
        """
        import asyncio  # here, not at the top: aiobfdctl never loads asyncio

        # asyncio.timeout, not wait_for: on Python 3.11 wait_for drops a
        # cancellation that comes as the connect finishes (it returns the
        # connect's result), and a caller's retry loop would then never end.
        with _talking(path):  # TimeoutError too: "no answer from aiobfd on PATH"
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_unix_connection(path, limit=MAX_LINE)
        stream = cls(path, reader, writer)
        try:
            sock = writer.get_extra_info("socket")  # asyncio's and uvloop's both give it
            if sock is None:
                raise NotOurDaemon(f"refusing to talk to {path}: cannot tell who serves it")
            check_daemon(path, sock)
            with _talking(path):
                writer.write(WATCH_REQUEST)
                await writer.drain()
            lines = await stream.batch(timeout)
            if not lines:
                raise ClientError(f"no answer to watch from aiobfd on {path}")
            stream.answer = _watch_started(lines[0])
            stream.early = lines[1:]
        except BaseException:
            stream.close()
            raise
        return stream

    async def batch(self, timeout: float | None) -> list[bytes]:
        """The complete lines of the next chunk; [] on timeout.

        Raises ClientError when the stream breaks (the daemon closed it, a line
        is too long).
        """
        import asyncio

        while True:
            try:
                async with asyncio.timeout(timeout):  # not wait_for: see open()
                    with _talking(self._path):
                        chunk = await self._reader.read(READ_SIZE)
            except TimeoutError:
                return []
            if not chunk:
                raise ClientError("aiobfd closed the watch stream")
            lines = self._buffer.feed(chunk)
            if lines:
                return lines

    def close(self) -> None:
        self._writer.close()
