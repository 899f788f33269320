"""A reload's reading, in a child process of its own.

Reading a configuration means files, name lookups, secrets and building
thousands of peers: seconds of Python for 10,000 peers.  In a thread of the
daemon's process that work shares the interpreter lock with the event loop,
and every system call of the loop (a send, one per packet) hands the lock to
it for up to the switch interval: a reload of a 9,700-peer file beside 9,700
sessions @ 300 ms took 3-18 s and flapped 44,912 times (bench/scale.py
--probes).  So :func:`read_in_child` forks, the child reads (SCHED_OTHER
whatever the daemon runs at: SCHED_RESET_ON_FORK; at a lower priority, see
:func:`_child_nice`) and writes the result to a pipe, pickled in chunks of :data:`CHUNK_PEERS` peers,
and exits; the loop reads the pipe as it becomes readable and unpickles one
chunk a turn.  The child holds no lock of the loop's and shares no
interpreter with it; a child that takes longer than the timeout is killed.

A reload mostly finds the peers it already runs.  The child has the running
peers too (a fork's copy), so a peer equal to one of them is written as that
peer's position, and the loop takes its own object back: of a 10,000-peer file
that changes one peer, one spec is pickled and unpickled instead of 10,000
(0.19 s of the loop's time here, and 0.12 s of the child's).

Forking the daemon stops its loop while the kernel copies the page tables of
its heap and its descriptor table: 4-13 ms with 9,000 sessions
(bench/reload_costs.py), and every page the loop writes to afterwards faults
once.  So the daemon forks a :class:`ReaderHost` at start, before it opens a
session, and asks it to read at each reload: a small process, forked while the
daemon was small, that keeps the configuration the daemon runs (the one it
started with, then each one the host read and the daemon applied) and writes
positions into it as the reader forked at reload time does.  The daemon says
with each request whether it applied the host's last reading; when what it
runs is not what the host knows (a reload read otherwise) or the host failed,
the host is given up and each reload forks its own reader, as before.  A
lookup the resolver never answered keeps its thread in the host, as one of
``aiobfdctl peer add`` does in the daemon; at
:data:`~aiobfd.config.addresses.MAX_STUCK_LOOKUPS` of them names are refused
at once until the resolver answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import copyreg
import ctypes
import dataclasses
import functools
import io
import logging
import os
import pickle
import signal
import socket
import struct
import sys
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from .config import ConfigError, PeerSpec, Settings
from .logs import write_logs_directly
from .protocol.auth import AuthConfig, AuthKey
from .protocol.echo import EchoConfig
from .protocol.session import SessionConfig

log = logging.getLogger("aiobfd")

#: Peers pickled together: one chunk is unpickled a loop turn (256 new
#: specs took about 5 ms, 64 a little over one; a running peer's position
#: costs far less, and :data:`CHUNK_ITEMS` of them go in one chunk).
CHUNK_PEERS = 64
#: Items (new specs and positions of running ones) in one chunk at most
#: (8,192 positions took the loop 2-3 ms, more right after a fork).
CHUNK_ITEMS = 1024
#: The child's niceness, added to the daemon's (unless the loop runs at
#: real-time priority: see :func:`_child_nice`).
CHILD_NICE = 10
#: The highest niceness (the lowest priority) Linux knows.
MAX_NICE = 19
#: The most read from the pipe in one callback of the loop.
READ_SIZE = 1 << 20
_LENGTH = struct.Struct("!Q")

_T = TypeVar("_T")


@dataclasses.dataclass(frozen=True, slots=True)
class Read(Generic[_T]):
    """What the child read, and what ``measure`` said of it there."""

    settings: Settings
    measured: _T


class ReadFailed(Exception):
    """The child failed otherwise than with a ConfigError (a bug): the reason, one line."""


def _rebuild(cls: type[_T], fields: dict[str, Any]) -> _T:
    return cls(**fields)


def _by_constructor(obj: Any) -> tuple[Any, ...]:
    """Pickle a frozen dataclass as its class and the arguments that build it."""
    fields = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.init}
    return _rebuild, (type(obj), fields)


#: The frozen dataclasses of the protocol core that a Settings holds.  With
#: the core compiled by mypyc (setup.py) pickle would restore them field by
#: field, which a frozen class refuses (FrozenInstanceError): they are
#: rebuilt through their constructor instead, compiled or not.
_DISPATCH: dict[type, Callable[[Any], Any]] = dict(copyreg.dispatch_table)
_DISPATCH.update({cls: _by_constructor for cls in (SessionConfig, AuthConfig, AuthKey, EchoConfig)})


def _dumps(obj: object) -> bytes:
    out = io.BytesIO()
    pickler = pickle.Pickler(out, pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = _DISPATCH
    pickler.dump(obj)
    return out.getvalue()


def _frames(buffer: bytes) -> list[bytes]:
    """Split the child's output into its length-prefixed messages."""
    out, at = [], 0
    while at + _LENGTH.size <= len(buffer):
        (size,) = _LENGTH.unpack_from(buffer, at)
        at += _LENGTH.size
        if at + size > len(buffer):
            break
        out.append(buffer[at : at + size])
        at += size
    return out


def _chunks(peers: tuple[PeerSpec, ...], running: tuple[PeerSpec, ...]) -> list[list[Any]]:
    """``peers`` in chunks: a peer equal to one of ``running`` as its position
    there (an int), any other as itself; at most :data:`CHUNK_PEERS` specs and
    :data:`CHUNK_ITEMS` items a chunk."""
    where = {spec.key: i for i, spec in enumerate(running)}
    chunks: list[list[Any]] = []
    chunk: list[Any] = []
    specs = 0
    for spec in peers:
        at = where.get(spec.key)
        if at is not None and running[at] == spec:
            chunk.append(at)
        else:
            chunk.append(spec)
            specs += 1
        if specs >= CHUNK_PEERS or len(chunk) >= CHUNK_ITEMS:
            chunks.append(chunk)
            chunk, specs = [], 0
    if chunk:
        chunks.append(chunk)
    return chunks


def _realtime() -> bool:
    """Whether the calling thread (the event loop's) runs at real-time priority."""
    try:
        policy = os.sched_getscheduler(0) & ~os.SCHED_RESET_ON_FORK
    except OSError:
        return False
    return policy in (os.SCHED_FIFO, os.SCHED_RR)


def _child_nice() -> int:
    """The niceness the reading child takes, from the calling thread's.

    :data:`CHILD_NICE` lower than the daemon, so that the child never takes a
    CPU the loop wants.  A loop at real-time priority needs no such margin
    (no SCHED_OTHER process delays it), and with SCHED_RESET_ON_FORK the child
    would start from 0 rather than the daemon's negative niceness: at 10,
    beside busy processes at -10, its 0.4 s of reading a 10,000-peer file
    stretched a reload past a second.  It keeps the daemon's niceness then.
    """
    nice = os.getpriority(os.PRIO_PROCESS, 0)
    return nice if _realtime() else min(nice + CHILD_NICE, MAX_NICE)


def _quiet(nice: int) -> None:
    """In a child of the daemon: the daemon's signals and wake-up are not its
    business; it runs at ``nice``."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_DFL)
    with contextlib.suppress(ValueError, OSError):
        signal.set_wakeup_fd(-1)  # the loop's: not this process's business
    with contextlib.suppress(OSError):  # lower than the daemon's needs no privilege
        os.setpriority(os.PRIO_PROCESS, 0, nice)


def _reading(
    read: Callable[[], Settings],
    measure: Callable[[Settings], Any],
    running: tuple[PeerSpec, ...],
) -> tuple[bytes, Settings | None]:
    """Read, measure and encode the result (framed messages); the settings read
    (None: an error, encoded as such)."""
    settings: Settings | None = None
    try:
        settings = read()
        measured = measure(settings)
        peers = settings.peers
        head = ("ok", dataclasses.replace(settings, peers=()), measured)
        messages = [_dumps(head)]
        messages += [_dumps(chunk) for chunk in _chunks(peers, running)]
    except ConfigError as exc:
        settings = None
        messages = [pickle.dumps(("config", str(exc)))]
    except Exception as exc:  # a bug: its traceback goes to the log from here
        settings = None
        log.exception("reading the configuration failed")
        messages = [pickle.dumps(("error", f"{type(exc).__name__}: {exc}"))]
    return b"".join(_LENGTH.pack(len(m)) + m for m in messages), settings


def _child(
    read: Callable[[], Settings],
    measure: Callable[[Settings], Any],
    running: tuple[PeerSpec, ...],
    nice: int,
    out: int,
) -> None:
    """The child's whole life: read, measure, write the result, nothing else."""
    _quiet(nice)
    data, _ = _reading(read, measure, running)
    view = memoryview(data)
    while view:
        view = view[os.write(out, view) :]


def _fork(life: Callable[[], None]) -> int:
    """Fork a child of the daemon that runs ``life`` and exits (it never
    returns there); its pid.  OSError when it cannot be forked."""
    for stream in (sys.stdout, sys.stderr):  # nothing buffered is written twice
        with contextlib.suppress(Exception):
            stream.flush()
    pid = os.fork()
    if pid == 0:
        try:
            write_logs_directly()  # the writer thread did not come along
            life()
        finally:
            os._exit(0)
    return pid


def _reap(pid: int, loop: asyncio.AbstractEventLoop, tries: int = 50) -> None:
    """Collect the child's exit status (it is exiting), trying again a little later."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return  # collected by someone else
    if done == 0 and tries > 0 and not loop.is_closed():
        loop.call_later(0.05, _reap, pid, loop, tries - 1)


async def read_in_child(
    read: Callable[[], Settings],
    measure: Callable[[Settings], _T],
    timeout_s: float,
    running: tuple[PeerSpec, ...] = (),
) -> Read[_T]:
    """``read()`` and ``measure()`` of its result in a forked child; the result,
    unpickled a chunk of peers per loop turn.  A peer equal to one of
    ``running`` (the peers in force, which the caller does not change
    meanwhile) comes back as that very object.

    ConfigError as ``read`` raised it; :class:`ReadFailed` for anything else
    the child met; TimeoutError after ``timeout_s`` (the child is killed).
    """
    loop = asyncio.get_running_loop()
    nice = _child_nice()
    inlet, outlet = os.pipe()

    def child() -> None:
        os.close(inlet)
        _child(read, measure, running, nice, outlet)

    try:
        pid = _fork(child)
    except OSError:
        os.close(inlet)
        os.close(outlet)
        raise
    os.close(outlet)
    os.set_blocking(inlet, False)
    received = bytearray()
    finished: asyncio.Future[None] = loop.create_future()

    def on_readable() -> None:
        for _ in range(16):
            try:
                data = os.read(inlet, READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            if not data:
                if not finished.done():
                    finished.set_result(None)
                loop.remove_reader(inlet)
                return
            received.extend(data)

    loop.add_reader(inlet, on_readable)
    try:
        await asyncio.wait_for(finished, timeout_s)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        raise
    finally:
        loop.remove_reader(inlet)
        os.close(inlet)
        _reap(pid, loop)
    return await _decode(_frames(bytes(received)), running)


async def _decode(frames: list[bytes], running: tuple[PeerSpec, ...]) -> Read[Any]:
    """The reader's messages as a :class:`Read`, a chunk of peers a loop turn
    (a position as the running peer there); ConfigError, ReadFailed."""
    if not frames:
        raise ReadFailed("the reading process ended without a result")
    kind, *rest = pickle.loads(frames[0])
    if kind == "config":
        raise ConfigError(rest[0])
    if kind != "ok":
        raise ReadFailed(str(rest[0]))
    head, measured = rest
    peers: list[PeerSpec] = []
    for frame in frames[1:]:
        await asyncio.sleep(0)  # one chunk a turn
        peers.extend(running[item] if type(item) is int else item for item in pickle.loads(frame))
    return Read(dataclasses.replace(head, peers=tuple(peers)), measured)


#: What the daemon asks of its reader host: read, the last reading applied
#: (or not: the host keeps what it had).
_READ_APPLIED = b"A"
_READ_NOT_APPLIED = b"N"
#: prctl(2): the host goes when the daemon goes, killed or not
#: (PR_SET_PDEATHSIG), and is named for what it does in ps and top (PR_SET_NAME).
_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15
HOST_NAME = b"aiobfd-reader"


def _as_host() -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        libc.prctl(_PR_SET_NAME, ctypes.c_char_p(HOST_NAME), 0, 0, 0)


def _measured(
    measure: Callable[[Settings, Settings], Any], running: Settings, new: Settings
) -> Any:
    return measure(new, running)


def _log_fds() -> set[int]:
    """The descriptors the log handlers write to."""
    fds: set[int] = set()
    for logger in (logging.getLogger(), log):
        for handler in logger.handlers:
            stream = getattr(handler, "stream", None)
            with contextlib.suppress(Exception):
                fds.add(stream.fileno())  # type: ignore[union-attr]
            sock = getattr(handler, "socket", None)  # syslog
            with contextlib.suppress(Exception):
                fds.add(sock.fileno())  # type: ignore[union-attr]
    return fds


def _close_inherited(keep: set[int]) -> None:
    """Close every descriptor above stderr but ``keep``: a long-lived child
    must not hold the daemon's (its loop's, its sockets') open."""
    low = 3
    for fd in sorted(fd for fd in keep if fd >= low):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, os.sysconf("SC_OPEN_MAX"))


def _host(
    read: Callable[[], Settings],
    measure: Callable[[Settings, Settings], Any],
    running: Settings,
    nice: int,
    sock: socket.socket,
) -> None:
    """The reader host's whole life: a reading for each request, until the
    daemon closes its end."""
    _quiet(nice)
    _as_host()
    _close_inherited({sock.fileno(), *_log_fds()})
    sock.setblocking(True)
    candidate: Settings | None = None
    while True:
        try:
            request = sock.recv(1)
        except InterruptedError:
            continue
        except OSError:
            return
        if not request:
            return  # the daemon is gone, or gave this host up
        if request == _READ_APPLIED and candidate is not None:
            running = candidate
        data, candidate = _reading(
            read, functools.partial(_measured, measure, running), running.peers
        )
        try:
            sock.sendall(data + _LENGTH.pack(0))  # an empty message: the end
        except OSError:
            return


class ReaderHost:
    """The daemon's reader for its reloads, forked at start (see the module
    docstring).  :meth:`read` as :func:`read_in_child` reads, while
    :meth:`serves` the configuration the daemon runs; given up (:attr:`alive`
    False) on a timeout or a failure of its own."""

    def __init__(self, pid: int, sock: socket.socket, running: Settings) -> None:
        self.pid = pid
        self._sock = sock
        self._running = running
        """What the host takes for the running configuration (the daemon's object)."""
        self._candidate: Settings | None = None
        """The host's last reading, as the daemon decoded it."""
        self.alive = True

    @classmethod
    def start(
        cls,
        read: Callable[[], Settings],
        measure: Callable[[Settings, Settings], Any],
        running: Settings,
    ) -> ReaderHost:
        """Fork the host; ``measure(new, running)`` runs there with each reading.
        OSError when it cannot be forked."""
        nice = _child_nice()
        ours, theirs = socket.socketpair()

        def host() -> None:
            ours.close()
            _host(read, measure, running, nice, theirs)

        try:
            pid = _fork(host)
        except OSError:
            ours.close()
            theirs.close()
            raise
        theirs.close()
        ours.setblocking(False)
        return cls(pid, ours, running)

    def serves(self, running: Settings) -> bool:
        """Whether the host knows ``running`` as the configuration in force."""
        return self.alive and (running is self._running or running is self._candidate)

    async def read(self, running: Settings, timeout_s: float) -> Read[Any]:
        """Ask the host for a reading of the file, ``running`` being in force
        (it :meth:`serves` it); as :func:`read_in_child`."""
        assert self.serves(running)
        applied = self._candidate is not None and running is self._candidate
        self._running, self._candidate = running, None
        loop = asyncio.get_running_loop()
        try:
            self._sock.send(_READ_APPLIED if applied else _READ_NOT_APPLIED)
        except OSError as exc:
            self.close()
            raise ReadFailed(f"the reader process is gone ({exc})") from None
        received = bytearray()
        finished: asyncio.Future[None] = loop.create_future()
        fd = self._sock.fileno()

        def on_readable() -> None:
            for _ in range(16):
                try:
                    data = self._sock.recv(READ_SIZE)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError as exc:
                    data = b""
                    log.debug("reader process: %s", exc)
                if not data:
                    if not finished.done():
                        finished.set_exception(ReadFailed("the reader process ended"))
                    loop.remove_reader(fd)
                    return
                received.extend(data)
                if _ends(received) and not finished.done():
                    finished.set_result(None)
                    loop.remove_reader(fd)
                    return

        loop.add_reader(fd, on_readable)
        try:
            await asyncio.wait_for(finished, timeout_s)
        except BaseException:
            self.close()  # a reading left half-way: the host is no use any more
            raise
        finally:
            if self.alive:
                loop.remove_reader(fd)
        frames = _frames(bytes(received))[:-1]
        result = await _decode(frames, running.peers)
        self._candidate = result.settings
        return result

    def close(self) -> None:
        """Give the host up: it is killed and collected."""
        if not self.alive:
            return
        self.alive = False
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
        self._sock.close()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)  # killed: at once
            return
        _reap(self.pid, loop)


def _ends(buffer: bytearray) -> bool:
    """Whether ``buffer`` holds whole messages, the last one empty (the end)."""
    at = 0
    while at + _LENGTH.size <= len(buffer):
        (size,) = _LENGTH.unpack_from(buffer, at)
        at += _LENGTH.size
        if size == 0:
            return at == len(buffer)
        at += size
    return False
