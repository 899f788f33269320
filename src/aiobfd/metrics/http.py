"""The daemon's ``/metrics`` endpoint: HTTP/1.1 served by its own event loop.

:class:`MetricsServer` answers ``GET /metrics`` with the exposition of
:class:`~.collector.BfdCollector`, rendered (and gzipped when asked) a slice at
a time between the loop's other work, followed by ``prometheus_client``'s
process, platform and GC metrics.

Why not ``prometheus_client``'s HTTP server: it scrapes in a thread.  In
CPython a thread that computes for tens of milliseconds makes the event loop's
thread wait up to the GIL switch interval (5 ms) after every system call (each
``sendto``, ``recvmsg`` and ``epoll_wait``); with 1,000 sessions and one scrape
a second, transmit timers ran up to 250 ms late (``--threaded`` in
``bench/metrics_scrape.py``).  Here a scrape yields to the loop between slices
instead, and no data is shared between threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, generate_latest

from ..engine import Daemon
from .collector import BfdCollector

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
    """The standard process, platform and GC metrics of ``prometheus_client``."""
    from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR

    registry = CollectorRegistry(auto_describe=False)
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    return registry


#: Bounds on what a client may send and how long it may take.
MAX_LINE = 8192
MAX_HEADERS = 64
REQUEST_TIMEOUT_S = 10.0
#: Scrapes rendered at the same time; more wait their turn.
MAX_CONCURRENT_SCRAPES = 2


class MetricsServer:
    """``/metrics`` over HTTP/1.1, served by the daemon's event loop."""

    def __init__(self, daemon: Daemon) -> None:
        self.collector = BfdCollector(daemon)
        self.process = process_registry()
        self._server: asyncio.AbstractServer | None = None
        self._busy = asyncio.Semaphore(MAX_CONCURRENT_SCRAPES)
        self.address = ""
        self.port = 0

    @property
    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}/metrics"

    async def start(self, address: str, port: int) -> None:
        self._server = await asyncio.start_server(
            self._client, host=address, port=port, limit=MAX_LINE
        )
        sockname = self._server.sockets[0].getsockname()
        self.address, self.port = sockname[0], int(sockname[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1)
            self._server = None

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
            for _ in self.collector.render_steps(out):
                emit("".join(out).encode())
                out.clear()
                await asyncio.sleep(0)
            emit("".join(out).encode())
            emit(generate_latest(self.process))
            if packer is not None:
                parts.append(packer.flush())
            return parts

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                request = await _read_request(reader)
                if request is None:
                    await _respond(writer, 400, b"bad request\n")
                    return
                method, target, headers = request
                if method not in ("GET", "HEAD"):
                    await _respond(
                        writer, 405, b"only GET and HEAD\n", extra={"Allow": "GET, HEAD"}
                    )
                    return
                path = urlsplit(target).path
                if path == "/":
                    page = b'<html><body><a href="/metrics">aiobfd metrics</a></body></html>\n'
                    await _respond(
                        writer, 200, page, "text/html; charset=utf-8", head=method == "HEAD"
                    )
                    return
                if path != "/metrics":
                    await _respond(writer, 404, b"not found: try /metrics\n")
                    return
                gzipped = "gzip" in headers.get("accept-encoding", "")
                try:
                    data = await self.scrape(gzipped=gzipped)
                except Exception:
                    log.exception("metrics scrape failed")
                    await _respond(writer, 500, b"scrape failed\n")
                    return
                await _respond(
                    writer,
                    200,
                    data,
                    CONTENT_TYPE,
                    head=method == "HEAD",
                    extra={"Content-Encoding": "gzip"} if gzipped else None,
                )
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def _read_request(
    reader: asyncio.StreamReader,
) -> tuple[str, str, dict[str, str]] | None:
    try:
        line = await reader.readline()
        parts = line.decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return None
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADERS + 1):
            raw = await reader.readline()
            if raw in (b"\r\n", b"\n", b""):
                return parts[0], parts[1], headers
            name, sep, value = raw.decode("latin-1").partition(":")
            if not sep:
                return None
            headers[name.strip().lower()] = value.strip()
    except (ValueError, asyncio.LimitOverrunError):
        return None
    return None  # too many headers


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
}


async def _respond(
    writer: asyncio.StreamWriter,
    status: int,
    body: bytes | list[bytes],
    ctype: str = "text/plain; charset=utf-8",
    *,
    head: bool = False,
    extra: dict[str, str] | None = None,
) -> None:
    parts = [body] if isinstance(body, bytes) else body
    lines = [
        f"HTTP/1.1 {status} {_REASONS[status]}",
        f"Content-Type: {ctype}",
        f"Content-Length: {sum(map(len, parts))}",
        "Connection: close",
        *(f"{k}: {v}" for k, v in (extra or {}).items()),
    ]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    if not head:
        writer.writelines(parts)
    await writer.drain()


async def start_metrics_server(daemon: Daemon, address: str, port: int) -> MetricsServer:
    """Serve ``/metrics`` for ``daemon`` on ``address``:``port`` (0: a free port).

    Raises OSError if the address cannot be resolved or bound.
    """
    server = MetricsServer(daemon)
    await server.start(address, port)
    return server
