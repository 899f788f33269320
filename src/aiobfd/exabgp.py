"""``aiobfd-exabgp``: announce or withdraw routes through ExaBGP as BFD sessions change.

ExaBGP runs this as one of its ``process`` entries (``encoder text``)::

    process aiobfd {
        run /usr/local/bin/aiobfd-exabgp -s /run/aiobfd/aiobfd.sock --route 192.0.2.53/32;
        encoder text;
    }

It follows aiobfd's control socket with the ``watch`` stream (a snapshot of every
session, then each state change) and writes ExaBGP API commands to stdout, one
line each, flushed::

    announce route 192.0.2.53/32 next-hop self
    withdraw route 192.0.2.53/32 next-hop self

The routes are announced while the chosen sessions (``--peer``, repeatable;
default all sessions of the daemon) are Up: all of them (``--require all``, the
default) or at least one (``--require any``).  With no chosen session known,
nothing is announced.  ``--announce-delay SECONDS`` holds an announce back until
the sessions have stayed Up that long (a flapping link then does not make the
route flap with it); a withdraw is never delayed.  A session being drained
(``aiobfdctl drain``, SIGUSR1) counts as not Up from the moment the drain
starts: the routes are withdrawn while BFD is still Up, before the daemon takes
the session AdminDown.

* When aiobfd cannot be reached (not started, restarting, dead) the routes are
  withdrawn at once, and the helper reconnects with exponential backoff (0.1 s
  doubling to ``--max-backoff``): a host whose BFD daemon died must not keep
  attracting traffic.
* The first decision after start is always written, announce or withdraw, so a
  helper respawned by ExaBGP never leaves a stale announcement behind.
* Malformed lines from the socket are logged to stderr and skipped; nothing read
  from stdin is interpreted (ExaBGP's ``done`` acknowledgements and messages are
  discarded), so ``exabgp.api.ack`` may be on or off.
* The helper exits with status 0 when stdin closes, ExaBGP's way of telling its
  child processes to go, when stdout is closed, or on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from . import client
from .argparsing import OneLineParser
from .paths import default_socket_path

log = logging.getLogger("aiobfd.exabgp")

#: First reconnection delay, seconds; it doubles up to ``--max-backoff``.
MIN_BACKOFF_S = 0.1
#: Seconds to connect and to get the daemon's answer to ``watch``.
HANDSHAKE_TIMEOUT_S = 5.0
#: Quiet time that ends the snapshot when the chosen peers are not named.
SNAPSHOT_SETTLE_S = 0.1
STATES = ("admin_down", "down", "init", "up")

Key = tuple[str, str, str]
"""A session: (remote, local, interface)."""


class OutputClosed(Exception):
    """stdout is gone (ExaBGP exited): nothing left to do."""


# -- what to announce ------------------------------------------------------------------


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class PeerPattern:
    """A ``--peer`` argument: an address, optionally with ``%interface``."""

    text: str
    address: str
    zone: str = ""

    @classmethod
    def parse(cls, text: str) -> PeerPattern:
        address, _, zone = text.partition("%")
        if _address(address) is None:
            raise ValueError(f"{text!r} is not an IP address (fe80::1%eth0 for link-local)")
        return cls(text, address, zone)

    def matches(self, key: Key, name: str) -> bool:
        remote, _, interface = key
        if name == self.text:
            return True
        if _address(remote) != _address(self.address):
            return False
        return not self.zone or self.zone == interface


@dataclass
class Selection:
    """Which sessions count, and whether all or any of them must be Up."""

    peers: tuple[PeerPattern, ...] = ()
    require: str = "all"
    sessions: dict[Key, str] = field(default_factory=dict)
    """Every session the daemon reported, with its local state."""
    names: dict[Key, str] = field(default_factory=dict)
    draining: set[Key] = field(default_factory=set)
    """Sessions being drained (``aiobfdctl drain``): they count as not Up, so
    the routes are withdrawn before the daemon takes them AdminDown."""

    def update(self, record: dict[str, Any]) -> bool:
        """Take a snapshot or state record; False (and no change) if it is malformed."""
        remote, state = record.get("remote"), record.get("state")
        local = record.get("local") or ""
        interface = record.get("interface") or ""
        if not isinstance(remote, str) or not remote or state not in STATES:
            return False
        if not isinstance(local, str) or not isinstance(interface, str):
            return False
        key = (remote, local, interface)
        name = record.get("peer")
        self.sessions[key] = str(state)
        self.names[key] = name if isinstance(name, str) else remote
        if record.get("draining") is True:
            self.draining.add(key)
        else:
            self.draining.discard(key)
        return True

    def remove(self, record: dict[str, Any]) -> None:
        """A session the daemon removed no longer counts."""
        key = (str(record.get("remote")), record.get("local") or "", record.get("interface") or "")
        self.sessions.pop(key, None)
        self.names.pop(key, None)
        self.draining.discard(key)

    def clear(self) -> None:
        self.sessions.clear()
        self.names.clear()
        self.draining.clear()

    def chosen(self) -> dict[Key, str]:
        if not self.peers:
            return dict(self.sessions)
        return {
            key: state
            for key, state in self.sessions.items()
            if any(p.matches(key, self.names[key]) for p in self.peers)
        }

    def all_named_seen(self) -> bool:
        """Every ``--peer`` matches a known session (False without ``--peer``)."""
        return bool(self.peers) and all(
            any(p.matches(key, self.names[key]) for key in self.sessions) for p in self.peers
        )

    def wanted(self) -> bool:
        """Whether the routes should be announced now."""
        if self.peers:
            up = [
                any(
                    self._up(key, state) and p.matches(key, self.names[key])
                    for key, state in self.sessions.items()
                )
                for p in self.peers
            ]
        else:
            up = [self._up(key, state) for key, state in self.sessions.items()]
        if not up:
            return False
        return all(up) if self.require == "all" else any(up)

    def _up(self, key: Key, state: str) -> bool:
        return state == "up" and key not in self.draining

    def describe(self) -> str:
        chosen = self.chosen()
        if not chosen:
            return "no chosen session known"
        return ", ".join(
            f"{self.names[k]} {s}{' (draining)' if k in self.draining else ''}"
            for k, s in sorted(chosen.items())
        )


class Announcer:
    """Writes ``announce``/``withdraw`` lines when the wanted state changes.

    With `delay_s`, an announce waits until the routes have been wanted for that
    long without interruption; a withdraw is never delayed.
    """

    def __init__(
        self,
        routes: Sequence[str],
        next_hop: str,
        write: Callable[[str], None],
        delay_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.routes = list(routes)
        self.next_hop = next_hop
        self.write = write
        self.delay_s = delay_s
        self.clock = clock
        self.announced: bool | None = None
        """None until the first decision, which is always written."""
        self.wanted_since: float | None = None
        """When an announce held back by `delay_s` became wanted."""

    def set(self, announce: bool, reason: str) -> None:
        if not announce:
            if self.wanted_since is not None:
                log.info("not announcing after all: %s", reason)
            self.wanted_since = None
            self._apply(False, reason)
            return
        if self.announced:
            return
        if self.delay_s > 0:
            now = self.clock()
            if self.wanted_since is None:
                self.wanted_since = now
                log.info("%s; announcing in %g s if it lasts", reason, self.delay_s)
            if now - self.wanted_since < self.delay_s:
                return
            self.wanted_since = None
        self._apply(True, reason)

    def due_in(self) -> float | None:
        """Seconds until a held-back announce is due; None when none is pending."""
        if self.wanted_since is None:
            return None
        return max(0.0, self.wanted_since + self.delay_s - self.clock())

    def _apply(self, announce: bool, reason: str) -> None:
        if announce == self.announced:
            return
        self.announced = announce
        verb = "announce" if announce else "withdraw"
        log.info("%s %s: %s", verb, " ".join(self.routes), reason)
        for route in self.routes:
            self.write(f"{verb} route {route} next-hop {self.next_hop}")


# -- the watch stream --------------------------------------------------------------------

#: Malformed lines logged per connection; the rest are counted, not logged.
BAD_LINES_LOGGED = 5


async def follow(
    stream: client.AsyncWatch,
    selection: Selection,
    announcer: Announcer,
    on_watching: Callable[[], None] = lambda: None,
) -> NoReturn:
    """Act on an open watch stream until it breaks (raises client.ClientError)."""
    on_watching()
    selection.clear()
    settled = False
    # Newer daemons say how many snapshot lines follow; older ones do not.
    expected = stream.answer.get("sessions")
    snapshots = 0
    pending = stream.early
    bad = 0

    def skip(why: str, raw: bytes) -> None:
        nonlocal bad
        bad += 1
        if bad <= BAD_LINES_LOGGED:
            log.warning("ignoring a line from aiobfd (%s): %.200r", why, raw)
        if bad == BAD_LINES_LOGGED:
            log.warning("further malformed lines on this connection are not logged")

    while True:
        for raw in pending:
            try:
                record = client.watch_record(raw)
            except client.Garbled as exc:
                skip(exc.why, raw)
                continue
            if record is None:
                continue
            event = record.get("event")
            if event == "removed":
                selection.remove(record)
                continue
            if event not in ("snapshot", "state", "drain"):
                continue  # something newer than this helper: not ours to judge
            if not selection.update(record):
                skip(f"malformed {event} record", raw)
                continue
            if event != "snapshot":
                settled = True  # the snapshot is over
            else:
                snapshots += 1
        if not settled and isinstance(expected, int) and snapshots >= expected:
            settled = True
        if not settled and selection.all_named_seen():
            settled = True
        if settled:
            announcer.set(selection.wanted(), selection.describe())
        pending = await stream.batch(SNAPSHOT_SETTLE_S if not settled else announcer.due_in())
        if not pending:
            # Quiet after the snapshot (every session has been listed), or a held-back
            # announce is due: judge again.
            settled = True


@dataclass(frozen=True)
class Options:
    socket: str
    routes: tuple[str, ...]
    peers: tuple[PeerPattern, ...] = ()
    require: str = "all"
    next_hop: str = "self"
    max_backoff_s: float = 5.0
    announce_delay_s: float = 0.0


async def run(options: Options, write: Callable[[str], None]) -> NoReturn:
    """Follow aiobfd forever: reconnect with backoff, withdraw while it is unreachable.

    Only OutputClosed (from `write`) or cancellation ends it.
    """
    selection = Selection(options.peers, options.require)
    announcer = Announcer(options.routes, options.next_hop, write, options.announce_delay_s)
    backoff = MIN_BACKOFF_S
    last_error = ""

    def watching() -> None:
        nonlocal backoff, last_error
        backoff = MIN_BACKOFF_S
        if last_error:
            log.info("connected to aiobfd on %s", options.socket)
        last_error = ""

    while True:
        try:
            stream = await client.AsyncWatch.open(options.socket, HANDSHAKE_TIMEOUT_S)
            try:
                await follow(stream, selection, announcer, watching)
            finally:
                stream.close()
        except client.ClientError as exc:
            error = str(exc)
            if isinstance(exc, client.AccessDenied):
                error += " (mode 0600: run ExaBGP as the user aiobfd runs as)"
            if error != last_error:
                log.warning("%s; retrying", error)
                last_error = error
            selection.clear()
            announcer.set(False, error)
        await asyncio.sleep(backoff * random.uniform(0.8, 1.0))
        backoff = min(backoff * 2, options.max_backoff_s)


# -- the process -------------------------------------------------------------------------


def _stdout_write(line: str) -> None:
    try:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except (BrokenPipeError, ValueError, OSError) as exc:
        raise OutputClosed(str(exc)) from None


def _silence_stdout() -> None:
    """stdout is a closed pipe: point it at /dev/null so the final flush stays quiet."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _watch_stdin(loop: asyncio.AbstractEventLoop, closed: asyncio.Event) -> None:
    """Read and discard stdin (ExaBGP's acks and messages) until EOF, then set `closed`."""
    try:
        fd = sys.stdin.fileno()
        while os.read(fd, 65536):
            pass
    except (OSError, ValueError, AttributeError):
        pass
    with contextlib.suppress(RuntimeError):  # the loop is gone: we are exiting anyway
        loop.call_soon_threadsafe(closed.set)


async def _main(options: Options, watch_stdin: bool = True) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    if watch_stdin:
        threading.Thread(target=_watch_stdin, args=(loop, stop), name="stdin", daemon=True).start()
    follower = asyncio.ensure_future(run(options, _stdout_write))
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait({follower, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if follower.done():
        exc = follower.exception()
        if not isinstance(exc, OutputClosed):
            raise exc or RuntimeError("follower ended")
        log.info("stdout closed; exiting")
        _silence_stdout()
        return 0
    follower.cancel()
    with contextlib.suppress(asyncio.CancelledError, OutputClosed):
        await follower
    log.info("stdin closed or signalled; exiting")
    return 0


def _route(text: str) -> str:
    try:
        return str(ipaddress.ip_network(text, strict=True))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad route {text!r}: {exc}") from None


def _peer(text: str) -> PeerPattern:
    try:
        return PeerPattern.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _next_hop(text: str) -> str:
    if text != "self" and _address(text) is None:
        raise argparse.ArgumentTypeError(f"next hop {text!r} is neither 'self' nor an address")
    return text


def _seconds(low: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
        if not low <= value <= 3600:
            raise argparse.ArgumentTypeError(f"{value:g} is out of range: {low:g} to 3600")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="aiobfd-exabgp",
        description="ExaBGP process: announce routes while aiobfd's BFD sessions are Up, "
        "withdraw them when the sessions go Down or aiobfd cannot be reached.",
    )
    parser.add_argument(
        "-s", "--socket", default=default_socket_path(), metavar="PATH",
        help="aiobfd's control socket (default %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--route", "-r", dest="routes", action="append", type=_route, required=True,
        metavar="PREFIX", help="a prefix to announce, such as 192.0.2.53/32 (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--peer", "-p", dest="peers", action="append", type=_peer, default=[], metavar="ADDR",
        help="a BFD peer whose session counts (repeatable; default every session)",
    )  # fmt: skip
    parser.add_argument(
        "--require", choices=("all", "any"), default="all",
        help="announce when all (default) or any of the chosen sessions are Up",
    )  # fmt: skip
    parser.add_argument(
        "--next-hop", type=_next_hop, default="self", metavar="ADDR",
        help="next hop of the routes (default 'self')",
    )  # fmt: skip
    parser.add_argument(
        "--announce-delay", type=_seconds(0), default=0.0, metavar="SECONDS",
        help="announce only once the chosen sessions have stayed Up this long"
        " (withdrawals are never delayed; default %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--max-backoff", type=_seconds(MIN_BACKOFF_S), default=5.0, metavar="SECONDS",
        help="longest pause between reconnection attempts (default %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "-l", "--log-level", default="INFO",
        choices=("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"),
        help="logging on stderr (default %(default)s)",
    )  # fmt: skip
    from . import __version__

    parser.add_argument("--version", action="version", version=f"aiobfd-exabgp {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, stream=sys.stderr, format="aiobfd-exabgp: %(levelname)s %(message)s"
    )
    options = Options(
        socket=args.socket,
        routes=tuple(dict.fromkeys(args.routes)),
        peers=tuple(args.peers),
        require=args.require,
        next_hop=args.next_hop,
        max_backoff_s=args.max_backoff,
        announce_delay_s=args.announce_delay,
    )
    try:
        return asyncio.run(_main(options))
    except KeyboardInterrupt:
        return 0
    except OutputClosed:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
