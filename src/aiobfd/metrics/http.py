"""The daemon's ``/metrics`` endpoint: HTTP/1.1 served by its own event loop.

:class:`MetricsServer` answers ``GET /metrics`` with the exposition of
:class:`~.collector.BfdCollector`, rendered (and gzipped when asked) a slice at
a time between the loop's other work, followed by ``prometheus_client``'s
process, platform and GC metrics and the endpoint's own counters.

Why not ``prometheus_client``'s HTTP server: it scrapes in a thread.  In
CPython a thread that computes for tens of milliseconds makes the event loop's
thread wait up to the GIL switch interval (5 ms) after every system call (each
``sendto``, ``recvmsg`` and ``epoll_wait``); with 1,000 sessions and one scrape
a second, transmit timers ran up to 250 ms late (``--threaded`` in
``bench/metrics_scrape.py``).  Here a scrape yields to the loop between slices
instead, and no data is shared between threads.

Anyone who can reach the port can connect, so every client is bounded
(:class:`HttpLimits`; issue 18: 15,000 half-open connections held 14,600 file
descriptors and flapped a 50 ms session):

* **Connections**: at most ``max_connections`` at once (64; Prometheus needs
  one or two).  At the cap, a waiting connection displaces the oldest one still
  sending its request head (*evicted*), if that one has had 10 ms and
  evictions are within their rate (``evictions_per_s``, 1,000 a second after a
  burst of 4,096); otherwise accepting pauses: the listening socket leaves the
  loop, and the kernel's backlog holds the rest, in order, until a slot is free
  or an eviction allowed.  Pausing alone would leave a scrape behind thousands
  of idle connections that each hold a slot for the whole head deadline
  (minutes).  Evicting without a limit feeds a client that opens a new
  connection for each one closed (``bench/adversarial_metrics.py``, 15,000 of
  them, on a 2-CPU machine): at 5,000 evictions a second the kernel's and the
  daemon's work for it left gaps of up to 145 ms between the packets of a
  pair at 50 ms (Detection Time 150 ms); at 1,000, up to 90 ms, and scrapes
  waited seconds instead.  A head is read as the connection is accepted and
  once more before an eviction, so a real client's head, sent with the packet
  that completes the connection, is not lost unread.
* **Request head**: it must end within ``head_timeout_s`` (5 s) of the accept,
  however slowly it trickles in, and fit in ``max_head_bytes`` (16 KiB; 431
  otherwise).
* **Response**: a client must take its response within ``write_timeout_s``
  (10 s, Prometheus' own scrape timeout) of the first byte, or it is dropped.
* **Kept connections**: an HTTP/1.1 client that was answered a scrape keeps
  its connection for its next request (as Prometheus does, scrape after scrape)
  for ``keepalive_timeout_s``; such a connection has shown it speaks HTTP and
  is never evicted for a newcomer, so a scraper that got in once is not queued
  again behind a flood of half-open connections.  At most ``max_kept`` are
  kept (the oldest idle one is closed for a newer one); each must send its next
  head within the keep-alive time.
* **Work per turn**: at most :data:`ACCEPT_BATCH` accepts, one ``recv`` per
  readable connection; rendering and sending a scrape yield after a
  millisecond, or before the sessions' next wake-up (:data:`SEND_CHUNK` bytes
  sent between two looks at the clock); at most ``max_concurrent_scrapes``
  scrapes rendered at once.
* **Close**: :meth:`MetricsServer.close` resets every connection at once
  (``SO_LINGER`` 0) and cancels what is being answered.

The endpoint accepts from its own listening sockets (``loop.add_reader``,
removed to pause) and reads and writes plain non-blocking sockets:
``asyncio.Server`` has no public way to pause accepting, and an idle
connection here costs a socket, a small buffer and one timer, no task and no
transport.  Drops are counted (:class:`MetricsServer`'s public attributes,
exported as ``aiobfd_http_*``) and logged at most once a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..engine import Daemon
from .collector import BfdCollector
from .process import ProcessCollector

log = logging.getLogger("aiobfd.metrics")

#: Default TCP port of the metrics endpoint: "1" + 3784, the BFD control port.
#: Outside 9100-9999 (Prometheus' exporter range, fully allocated since 2023),
#: away from the 10000+ block newer exporters take, and below the Linux
#: ephemeral range (32768-60999) and BFD's source ports (49152-65535).
DEFAULT_METRICS_PORT = 13784
#: Loopback by default: the endpoint has no authentication and names every peer.
DEFAULT_METRICS_ADDRESS = "127.0.0.1"

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def process_registry() -> CollectorRegistry:
    """The standard process, platform and GC metrics of ``prometheus_client``
    (the process ones from :mod:`.process`: no listing of the descriptors)."""
    from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR

    registry = CollectorRegistry(auto_describe=False)
    for collector in (ProcessCollector(), PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    return registry


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """Bounds on the endpoint's clients; the defaults leave Prometheus room to spare."""

    max_connections: int = 64
    """Connections open at once.  At the cap a waiting connection displaces the
    oldest one still sending its request head; when none is, accepting pauses."""
    head_timeout_s: float = 5.0
    """From the accept to the end of the request head."""
    max_head_bytes: int = 16384
    """Request line and headers, with their line ends."""
    max_headers: int = 64
    """Header lines in a request head."""
    write_timeout_s: float = 10.0
    """From the first byte of a response to the last one taken by the kernel."""
    max_concurrent_scrapes: int = 2
    """Scrapes rendered at the same time; more wait their turn."""
    evictions_per_s: float = 1000.0
    """Evictions a second at the cap, sustained: each lets one waiting connection
    in, and costs the kernel and the daemon work if its client opens another
    (see the module's docstring)."""
    evictions_burst: int = 4096
    """Evictions before ``evictions_per_s`` applies: a backlog full of idle
    connections goes at once."""
    backlog: int = 4096
    """The listening sockets' backlog (the kernel caps it at ``net.core.somaxconn``):
    the connections the kernel holds while accepting pauses, in their order."""
    keepalive_timeout_s: float = 150.0
    """How long an answered HTTP/1.1 connection is kept for its next request
    (longer than Prometheus' default scrape interval of a minute)."""
    max_kept: int = 8
    """Answered connections kept open for a next request, never evicted."""


#: Connections accepted from one listening socket in one turn of the loop.
ACCEPT_BATCH = 16
#: A connection is evicted only once it has had this long to send its head
#: (a real client sends it with the packet that completes the connection): at
#: most ``max_connections`` evictions in this time (6,400 a second at 64).
MIN_EVICT_AGE_S = 0.010
#: Bytes handed to one socket between two looks at the clock: the endpoint
#: yields to the loop after a millisecond, or before the sessions' next
#: wake-up (``Daemon.turn``).  256 KB took up to 3.6 ms with 10,000 sessions.
SEND_CHUNK = 64 * 1024
#: Bytes beyond a request head read and dropped before closing (see _serve).
DISCARD_MAX = 64 * 1024
#: At most one warning about dropped clients in this many seconds.
WARN_EVERY_S = 60.0
#: What asyncio's own server waits after running out of descriptors.
ACCEPT_RETRY_S = 1.0
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: SO_LINGER on, 0 s: close() sends a reset and frees the socket at once.
_RESET = struct.pack("ii", 1, 0)


class _Client:
    """One accepted connection: its socket, the head read so far, its deadline."""

    __slots__ = (
        "accepted_at",
        "closed",
        "fd",
        "head",
        "kept",
        "sock",
        "task",
        "timer",
        "watched",
        "writing",
    )

    def __init__(self, sock: socket.socket, accepted_at: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.accepted_at = accepted_at
        self.head = bytearray()
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None
        self.watched = False
        self.writing = False
        self.closed = False
        self.kept = False
        """Answered once, kept for its next request (never evicted)."""


class _SlowClient(Exception):
    """The client did not take its response within the write deadline."""


#: Method, target, HTTP version and headers (names lowercased).
Request = tuple[str, str, str, dict[str, str]]


class MetricsServer:
    """``/metrics`` over HTTP/1.1, served by the daemon's event loop.

    The counters are public and only grow; they are exported as the
    ``aiobfd_http_*`` families (see :class:`EndpointCollector`).
    """

    def __init__(self, daemon: Daemon, limits: HttpLimits | None = None) -> None:
        self.collector = BfdCollector(daemon)
        self.limits = limits = limits or HttpLimits()
        self.process = process_registry()
        self.process.register(EndpointCollector(self))
        self._busy = asyncio.Semaphore(limits.max_concurrent_scrapes)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listeners: list[socket.socket] = []
        self._accepting = False
        self._closed = False
        self._wake: asyncio.TimerHandle | None = None  # a paused accept resumes
        self._backoff_until = 0.0  # out of descriptors: no accept before then
        self._tokens = float(limits.evictions_burst)  # evictions allowed now
        self._tokens_at = 0.0
        # Every client, those still sending their first head (evictable), and
        # those kept after an answer for their next request: oldest first.
        self._clients: dict[_Client, None] = {}
        self._reading: dict[_Client, None] = {}
        self._kept: dict[_Client, None] = {}
        self._warned_at: float | None = None
        self.address = ""
        self.port = 0
        #: Connections accepted.
        self.connections_accepted = 0
        #: The most connections open at once.
        self.peak_connections = 0
        #: Connections closed at the cap to make room for a newer one: the
        #: oldest still sending its request head.
        self.connections_evicted = 0
        #: Connections closed because their request head did not end in time.
        self.head_timeouts = 0
        #: Request heads over the size or header limit, answered 431.
        self.heads_too_large = 0
        #: Requests that were not HTTP/1.x, answered 400.
        self.bad_requests = 0
        #: Connections dropped because the client did not take its response in time.
        self.slow_clients = 0
        #: Times accepting paused at the cap: no connection could be evicted
        #: (each was being answered, or had had less than MIN_EVICT_AGE_S, or
        #: evictions were at their rate).
        self.accept_pauses = 0
        #: accept() failures (out of descriptors, connection aborted, ...).
        self.accept_errors = 0
        #: Requests answered on a connection kept from an earlier one.
        self.requests_on_kept = 0
        #: Kept connections closed: idle past the keep-alive time, or the
        #: oldest idle one when another was to be kept.
        self.kept_closed = 0

    @property
    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}/metrics"

    @property
    def connections(self) -> int:
        """Connections open now (at most ``limits.max_connections``)."""
        return len(self._clients)

    @property
    def kept_connections(self) -> int:
        """Connections kept after an answer for a next request (at most ``limits.max_kept``)."""
        return len(self._kept)

    @property
    def accepting(self) -> bool:
        """False while accepting pauses, and once closed."""
        return self._accepting

    # ------------------------------------------------------- start and close

    async def start(self, address: str, port: int) -> None:
        """Listen on every address ``address`` resolves to (as ``asyncio.start_server``).

        Raises OSError if the address cannot be resolved or bound.
        """
        loop = self._loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(
            address or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        try:
            for family, kind, proto, _, sockaddr in dict.fromkeys(infos):
                sock = socket.socket(family, kind, proto)
                self._listeners.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                try:
                    sock.bind(sockaddr)
                except OSError as exc:
                    raise OSError(
                        exc.errno,
                        f"error while attempting to bind on address {sockaddr!r}: "
                        f"{(exc.strerror or str(exc)).lower()}",
                    ) from None
                sock.listen(self.limits.backlog)
                sock.setblocking(False)
        except BaseException:
            for sock in self._listeners:
                sock.close()
            self._listeners.clear()
            raise
        sockname = self._listeners[0].getsockname()
        self.address, self.port = sockname[0], int(sockname[1])
        self._resume()

    async def close(self) -> None:
        """Stop listening and reset every connection at once, answered or not."""
        if self._closed:
            return
        self._closed = True
        self._pause()
        for sock in self._listeners:
            sock.close()
        self._listeners.clear()
        tasks = [c.task for c in self._clients if c.task is not None]
        for client in list(self._clients):
            self._drop(client, reset=True)
        if tasks:  # cancelled: each ends at its next await
            await asyncio.wait(tasks, timeout=0.5)

    # -------------------------------------------------------------- accepting

    def _resume(self) -> None:
        """Accept again (a slot is free, or the oldest head may now be evicted)."""
        loop = self._loop
        if self._accepting or self._closed or loop is None or loop.time() < self._backoff_until:
            return
        if self._wake is not None:
            self._wake.cancel()
            self._wake = None
        for sock in self._listeners:
            loop.add_reader(sock.fileno(), self._on_acceptable, sock)
        self._accepting = True

    def _pause(self, until: float | None = None) -> None:
        """Stop accepting: the kernel's backlog holds new connections until a
        slot is free (_drop resumes), or until ``until``."""
        loop = self._loop
        if self._accepting and loop is not None:
            for sock in self._listeners:
                loop.remove_reader(sock.fileno())
        self._accepting = False
        if self._wake is not None:
            self._wake.cancel()
            self._wake = None
        if until is not None and loop is not None and not self._closed:
            self._wake = loop.call_at(until, self._on_wake)

    def _on_wake(self) -> None:
        self._wake = None
        self._backoff_until = 0.0  # (call_at may run a little early)
        self._resume()

    def _on_acceptable(self, listener: socket.socket) -> None:
        loop = self._loop
        assert loop is not None
        cap = self.limits.max_connections
        now = loop.time()
        for _ in range(ACCEPT_BATCH):
            victim = None
            if len(self._clients) >= cap:
                if not self._reading:  # every connection is being answered
                    self.accept_pauses += 1
                    self._pause()
                    self._warn()
                    return
                victim = next(iter(self._reading))
                if now - victim.accepted_at < MIN_EVICT_AGE_S:
                    # Let a real client's head arrive.  (Not until the oldest
                    # is old enough: the others a little younger would each
                    # need a pause of their own.)
                    self.accept_pauses += 1
                    self._pause(now + MIN_EVICT_AGE_S)
                    return
                if self._evictions_allowed(now) < 1:
                    self.accept_pauses += 1
                    self._pause(now + ACCEPT_BATCH / self.limits.evictions_per_s)
                    return
                self._on_readable(victim)  # its head may be there, unread yet
                if victim.closed or victim not in self._reading:
                    continue  # gone, or being answered now
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.accept_errors += 1
                if exc.errno in _OUT_OF_RESOURCES:
                    log.warning("metrics endpoint: accept: %s; pausing for a second", exc)
                    self._backoff_until = now + ACCEPT_RETRY_S
                    self._pause(self._backoff_until)
                return
            if victim is not None:
                self._tokens -= 1
                self.connections_evicted += 1
                self._drop(victim, reset=True)
                self._warn()
            self._admit(sock, now)

    def _evictions_allowed(self, now: float) -> float:
        """The token bucket of evictions: ``evictions_per_s``, ``evictions_burst`` at most."""
        limits = self.limits
        self._tokens = min(
            float(limits.evictions_burst),
            self._tokens + (now - self._tokens_at) * limits.evictions_per_s,
        )
        self._tokens_at = now
        return self._tokens

    def _admit(self, sock: socket.socket, now: float) -> None:
        loop = self._loop
        assert loop is not None
        sock.setblocking(False)
        client = _Client(sock, now)
        self._clients[client] = None
        self._reading[client] = None
        self.connections_accepted += 1
        self.peak_connections = max(self.peak_connections, len(self._clients))
        self._on_readable(client)  # a real client's head is usually there already
        if client in self._reading:
            client.timer = loop.call_at(
                now + self.limits.head_timeout_s, self._on_head_timeout, client
            )
            loop.add_reader(client.fd, self._on_readable, client)
            client.watched = True

    def _drop(self, client: _Client, *, reset: bool = False) -> None:
        """Close a connection (with a reset: at once, nothing more to send) and,
        if accepting paused, accept again."""
        if client.closed:
            return
        client.closed = True
        del self._clients[client]
        self._reading.pop(client, None)
        self._kept.pop(client, None)
        if client.timer is not None:
            client.timer.cancel()
        loop = self._loop
        assert loop is not None
        if client.watched:
            loop.remove_reader(client.fd)
        if client.writing:
            loop.remove_writer(client.fd)
        if reset:
            with contextlib.suppress(OSError):
                client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
        client.sock.close()
        task = client.task
        if task is not None and not task.done() and task is not asyncio.current_task(loop):
            task.cancel()
        if not self._accepting:
            self._resume()

    def _warn(self) -> None:
        """At most once a minute, say that clients are being dropped."""
        now = self._loop.time() if self._loop is not None else 0.0
        if self._warned_at is not None and now - self._warned_at < WARN_EVERY_S:
            return
        self._warned_at = now
        log.warning(
            "metrics endpoint: %d connections evicted at its cap of %d, %d head timeouts, "
            "%d slow clients so far (a client holding connections open?)",
            self.connections_evicted,
            self.limits.max_connections,
            self.head_timeouts,
            self.slow_clients,
        )

    # ---------------------------------------------------------- request head

    def _on_head_timeout(self, client: _Client) -> None:
        if client.kept:
            self.kept_closed += 1  # idle past the keep-alive time
        else:
            self.head_timeouts += 1
        self._drop(client, reset=True)

    def _on_readable(self, client: _Client) -> None:
        limit = self.limits.max_head_bytes
        head = client.head
        try:
            data = client.sock.recv(limit + 1 - len(head))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(client, reset=True)
            return
        if not data:  # gone before its request ended
            self._drop(client)
            return
        start = max(0, len(head) - 3)
        head += data
        self._advance(client, start)

    def _advance(self, client: _Client, start: int = 0) -> None:
        """Answer the head read so far if it is complete (or too long)."""
        limit = self.limits.max_head_bytes
        head = client.head
        end = _head_end(head, start)
        if end < 0 and len(head) <= limit:
            return
        # The head is complete, or too long: stop reading, and answer.
        loop = self._loop
        assert loop is not None
        if client.watched:
            loop.remove_reader(client.fd)
            client.watched = False
        self._reading.pop(client, None)
        if client.timer is not None:
            client.timer.cancel()
            client.timer = None
        request: Request | int
        if 0 <= end <= limit:
            request = _parse(bytes(head[:end]), self.limits.max_headers)
            if request == 431:
                self.heads_too_large += 1
            elif request == 400:
                self.bad_requests += 1
            client.head = head[end:]  # a next request may follow (kept connections)
        else:
            self.heads_too_large += 1
            request = 431
            client.head = bytearray()
        if client.kept:
            self.requests_on_kept += 1
        client.task = loop.create_task(self._serve(client, request))

    # -------------------------------------------------------------- response

    async def _serve(self, client: _Client, request: Request | int) -> None:
        reset = True
        keep = _keeps_alive(request) and self.limits.max_kept > 0
        kept = False
        try:
            data, keep = await self._answer(request, keep=keep)
            await self._send(client, data)
            if keep and not self._closed:
                client.task = None
                kept = True
                self._keep(client)  # (its next request may have a task already)
                return
            reset = False
            # What the client sent beyond its head, unread at close(), would make
            # the kernel reset the connection and the client lose its answer.
            _discard_input(client.sock)
        except _SlowClient:
            self.slow_clients += 1
            self._warn()
        except OSError:  # the client went away
            pass
        finally:
            if not kept:
                client.task = None
                self._drop(client, reset=reset)

    def _keep(self, client: _Client) -> None:
        """``client`` was answered and asked to keep its connection: wait for its
        next request (at most ``keepalive_timeout_s``), safe from eviction."""
        loop = self._loop
        assert loop is not None
        limits = self.limits
        if not client.kept:
            if len(self._kept) >= limits.max_kept:
                # Room for this one: the oldest kept connection that is idle goes.
                idle = next((c for c in self._kept if c.task is None), None)
                if idle is None:
                    client.kept = False
                    self._drop(client)
                    return
                self.kept_closed += 1
                self._drop(idle, reset=True)
            client.kept = True
        self._kept[client] = None
        client.timer = loop.call_at(
            loop.time() + limits.keepalive_timeout_s, self._on_head_timeout, client
        )
        loop.add_reader(client.fd, self._on_readable, client)
        client.watched = True
        self._advance(client)  # a request sent right behind the last one

    async def _answer(
        self, request: Request | int, *, keep: bool = False
    ) -> tuple[list[bytes], bool]:
        """The response, and whether the connection stays (only after a scrape
        answered: ``keep`` and a 200 for /metrics)."""
        if isinstance(request, int):
            body = b"request head too large\n" if request == 431 else b"bad request\n"
            return _response(request, body), False
        method, target, _version, headers = request
        if method not in ("GET", "HEAD"):
            return _response(405, b"only GET and HEAD\n", extra={"Allow": "GET, HEAD"}), False
        head = method == "HEAD"
        path = urlsplit(target).path
        if path == "/":
            page = b'<html><body><a href="/metrics">aiobfd metrics</a></body></html>\n'
            return _response(200, page, "text/html; charset=utf-8", head=head), False
        if path != "/metrics":
            return _response(404, b"not found: try /metrics\n"), False
        gzipped = "gzip" in headers.get("accept-encoding", "")
        try:
            data = await self.scrape(gzipped=gzipped)
        except Exception:
            log.exception("metrics scrape failed")
            return _response(500, b"scrape failed\n"), False
        extra = {"Content-Encoding": "gzip"} if gzipped else None
        return _response(200, data, CONTENT_TYPE, head=head, extra=extra, keep=keep), keep

    async def _send(self, client: _Client, pieces: list[bytes]) -> None:
        """Hand ``pieces`` to the kernel, :data:`SEND_CHUNK` bytes a turn at
        most, within the write deadline (or raise :class:`_SlowClient`).  The
        pieces are joined a chunk at a time: a whole exposition of 10,000
        sessions copied into one object held the loop about 9 ms."""
        loop = self._loop
        assert loop is not None
        deadline = loop.time() + self.limits.write_timeout_s
        turn = self.collector.daemon.turn()
        for n, chunk in enumerate(_chunked(pieces, SEND_CHUNK)):
            if n and await turn.pause() and loop.time() > deadline:
                raise _SlowClient
            view = memoryview(chunk)
            while view:
                try:
                    sent = client.sock.send(view)
                except (BlockingIOError, InterruptedError):
                    await self._writable(client, deadline)
                    continue
                view = view[sent:]

    async def _writable(self, client: _Client, deadline: float) -> None:
        loop = self._loop
        assert loop is not None
        ready = loop.create_future()
        loop.add_writer(client.fd, _settle, ready)
        client.writing = True
        try:
            async with asyncio.timeout_at(deadline):
                await ready
        except TimeoutError:
            raise _SlowClient from None
        finally:
            if not client.closed:  # else _drop removed the writer, and the fd may be reused
                loop.remove_writer(client.fd)
                client.writing = False

    async def scrape(self, *, gzipped: bool = False) -> list[bytes]:
        """The whole exposition, in pieces, rendered (and compressed) a slice at a
        time between the event loop's other work."""
        async with self._busy:
            # Level 1: fast, and still ~20 times smaller on this repetitive text.
            packer = zlib.compressobj(1, zlib.DEFLATED, 31) if gzipped else None
            parts: list[bytes] = []

            def emit(data: bytes) -> None:
                parts.append(packer.compress(data) if packer is not None else data)

            out: list[str] = []
            turn = self.collector.daemon.turn()
            for _ in self.collector.render_steps(out):
                emit("".join(out).encode())
                out.clear()
                await turn.pause()
            emit("".join(out).encode())
            emit(generate_latest(self.process))
            if packer is not None:
                parts.append(packer.flush())
            return parts


class EndpointCollector(Collector):
    """The endpoint's own counters (of a :class:`MetricsServer`), for ``prometheus_client``."""

    def __init__(self, server: MetricsServer) -> None:
        self.server = server

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        s = self.server
        yield GaugeMetricFamily(
            "aiobfd_http_connections",
            "Connections open to the metrics endpoint.",
            value=s.connections,
        )
        yield GaugeMetricFamily(
            "aiobfd_http_max_connections",
            "The metrics endpoint's cap on connections open at once.",
            value=s.limits.max_connections,
        )
        yield CounterMetricFamily(
            "aiobfd_http_connections_accepted_total",
            "Connections the metrics endpoint accepted.",
            value=s.connections_accepted,
        )
        dropped = CounterMetricFamily(
            "aiobfd_http_connections_dropped_total",
            "Connections the metrics endpoint closed without an answer, by reason: evicted "
            "(at the cap, the oldest still sending its request head), head_timeout (no "
            "complete request head in time), slow_client (did not take its response in time).",
            labels=["reason"],
        )
        dropped.add_metric(["evicted"], s.connections_evicted)
        dropped.add_metric(["head_timeout"], s.head_timeouts)
        dropped.add_metric(["slow_client"], s.slow_clients)
        yield dropped
        refused = CounterMetricFamily(
            "aiobfd_http_bad_requests_total",
            "Requests the metrics endpoint refused, by reason: malformed (400) or "
            "head_too_large (431).",
            labels=["reason"],
        )
        refused.add_metric(["malformed"], s.bad_requests)
        refused.add_metric(["head_too_large"], s.heads_too_large)
        yield refused
        yield GaugeMetricFamily(
            "aiobfd_http_kept_connections",
            "Connections kept open after an answer for the client's next request.",
            value=s.kept_connections,
        )
        yield CounterMetricFamily(
            "aiobfd_http_requests_on_kept_total",
            "Requests answered on a connection kept from an earlier one.",
            value=s.requests_on_kept,
        )
        yield CounterMetricFamily(
            "aiobfd_http_kept_closed_total",
            "Kept connections closed: idle past the keep-alive time, or the oldest idle "
            "one when another was to be kept.",
            value=s.kept_closed,
        )
        yield CounterMetricFamily(
            "aiobfd_http_accept_pauses_total",
            "Times the metrics endpoint stopped accepting at its cap of connections: each "
            "was being answered, or had had less than 10 ms to send its request head, or "
            "evictions were at their rate.",
            value=s.accept_pauses,
        )


def _discard_input(sock: socket.socket) -> None:
    """Read and drop what has arrived, up to :data:`DISCARD_MAX` bytes."""
    for _ in range(DISCARD_MAX // 16384):
        try:
            if not sock.recv(16384):
                return
        except OSError:  # nothing more now (BlockingIOError), or gone
            return


def _keeps_alive(request: Request | int) -> bool:
    """Whether the connection may stay open after the answer: a well-formed
    HTTP/1.1 request that did not ask to close (HTTP/1.0 closes)."""
    if isinstance(request, int):
        return False
    _method, _target, version, headers = request
    return version == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _head_end(head: bytearray, start: int) -> int:
    """The end of the request head (after its empty line), searched from
    ``start``; -1 while it has not come."""
    ends = [i for i in (head.find(b"\n\r\n", start), head.find(b"\n\n", start)) if i >= 0]
    if not ends:
        return -1
    i = min(ends)
    return i + (3 if head[i + 1] == 0x0D else 2)


def _parse(head: bytes, max_headers: int) -> Request | int:
    """The method, target, version and headers (names lowercased) of a request
    head, or the status to answer: 400 if it is not HTTP/1.x, 431 for too many
    headers."""
    lines = head.decode("latin-1").split("\n")
    parts = lines[0].split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return 400
    fields = [line.rstrip("\r") for line in lines[1:]]
    fields = [line for line in fields if line]
    if len(fields) > max_headers:
        return 431
    headers: dict[str, str] = {}
    for line in fields:
        name, sep, value = line.partition(":")
        if not sep:
            return 400
        headers[name.strip().lower()] = value.strip()
    return parts[0], parts[1], parts[2], headers


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
}


def _response(
    status: int,
    body: bytes | list[bytes],
    ctype: str = "text/plain; charset=utf-8",
    *,
    head: bool = False,
    extra: dict[str, str] | None = None,
    keep: bool = False,
) -> list[bytes]:
    """The response's pieces: its head, then the body's (none for HEAD)."""
    parts = [body] if isinstance(body, bytes) else body
    lines = [
        f"HTTP/1.1 {status} {_REASONS[status]}",
        f"Content-Type: {ctype}",
        f"Content-Length: {sum(map(len, parts))}",
        "Connection: keep-alive" if keep else "Connection: close",
        *(f"{k}: {v}" for k, v in (extra or {}).items()),
    ]
    start = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return [start] if head else [start, *parts]


def _chunked(pieces: list[bytes], size: int) -> Iterator[bytes | memoryview]:
    """``pieces`` regrouped into chunks of about ``size`` bytes: small ones
    joined, large ones cut (a view, no copy)."""
    batch: list[bytes] = []
    held = 0
    for piece in pieces:
        if len(piece) >= size:
            if batch:
                yield b"".join(batch)
                batch, held = [], 0
            view = memoryview(piece)
            for at in range(0, len(piece), size):
                yield view[at : at + size]
            continue
        batch.append(piece)
        held += len(piece)
        if held >= size:
            yield b"".join(batch)
            batch, held = [], 0
    if batch:
        yield b"".join(batch)


async def start_metrics_server(
    daemon: Daemon, address: str, port: int, limits: HttpLimits | None = None
) -> MetricsServer:
    """Serve ``/metrics`` for ``daemon`` on ``address``:``port`` (0: a free port).

    Raises OSError if the address cannot be resolved or bound.
    """
    server = MetricsServer(daemon, limits)
    await server.start(address, port)
    return server
