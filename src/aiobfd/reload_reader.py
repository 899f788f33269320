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
"""

from __future__ import annotations

import asyncio
import contextlib
import copyreg
import dataclasses
import io
import logging
import os
import pickle
import signal
import struct
import sys
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from .config import ConfigError, PeerSpec, Settings
from .protocol.auth import AuthConfig, AuthKey
from .protocol.echo import EchoConfig
from .protocol.session import SessionConfig

log = logging.getLogger("aiobfd")

#: Peers pickled together: one chunk is unpickled a loop turn (256 new
#: specs in about 5 ms; a running peer's position costs next to nothing, and
#: :data:`CHUNK_ITEMS` of them go in one chunk).
CHUNK_PEERS = 256
#: Items (new specs and positions of running ones) in one chunk at most.
CHUNK_ITEMS = 8192
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


def _child(
    read: Callable[[], Settings],
    measure: Callable[[Settings], Any],
    running: tuple[PeerSpec, ...],
    nice: int,
    out: int,
) -> None:
    """The child's whole life: read, measure, write the result, nothing else."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_DFL)
    with contextlib.suppress(ValueError, OSError):
        signal.set_wakeup_fd(-1)  # the loop's: not this process's business
    with contextlib.suppress(OSError):  # lower than the daemon's needs no privilege
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    try:
        settings = read()
        measured = measure(settings)
        peers = settings.peers
        head = ("ok", dataclasses.replace(settings, peers=()), measured)
        messages = [_dumps(head)]
        messages += [_dumps(chunk) for chunk in _chunks(peers, running)]
    except ConfigError as exc:
        messages = [pickle.dumps(("config", str(exc)))]
    except Exception as exc:  # a bug: its traceback goes to the log from here
        log.exception("reading the configuration failed")
        messages = [pickle.dumps(("error", f"{type(exc).__name__}: {exc}"))]
    data = b"".join(_LENGTH.pack(len(m)) + m for m in messages)
    view = memoryview(data)
    while view:
        view = view[os.write(out, view) :]


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
    for stream in (sys.stdout, sys.stderr):  # nothing buffered is written twice
        with contextlib.suppress(Exception):
            stream.flush()
    nice = _child_nice()
    inlet, outlet = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(inlet)
        os.close(outlet)
        raise
    if pid == 0:  # the child
        try:
            os.close(inlet)
            _child(read, measure, running, nice, outlet)
        finally:
            os._exit(0)
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
    frames = _frames(bytes(received))
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
