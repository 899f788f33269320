"""The /metrics endpoint's limits (issue 18): anyone who can connect must not hurt a session.

The first test runs an established pair at 50 ms x 3 in this event loop over
loopback (127.0.9.1 <-> 127.0.9.2), the first daemon serving /metrics, while
an attacker process holds thousands of connections to it that never finish
their request head (slowloris).  The others drive the endpoint alone, over
sessions without sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import sys
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from aiobfd.config import PeerSpec
from aiobfd.engine import Daemon, Peer
from aiobfd.engine.turns import Turn
from aiobfd.io.clock import monotonic_us
from aiobfd.metrics import HttpLimits, MetricsServer, start_metrics_server
from aiobfd.protocol.events import Event, StateChanged
from aiobfd.protocol.packet import State
from aiobfd.protocol.session import Session, SessionConfig
from aiobfd.protocol.stats import TimingStats

from .helpers import Changes, spec, wait_until

A, B = "127.0.9.1", "127.0.9.2"

#: Holds COUNT connections to 127.0.0.1:PORT: odd ones send an unfinished head,
#: even ones nothing; for CHURN seconds each closed one is opened again, then
#: they are only held.  Prints "ready" once all are opened; ends when its
#: stdin closes (or after a minute), printing how many it opened.
ATTACKER = r"""
import resource, select, socket, sys, time

port, count, churn_s = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
PARTIAL = b"GET /metrics HTTP/1.1\r\nHost: aiobfd\r\nX-Slow: "
GONE = select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP | select.EPOLLRDHUP
poll = select.epoll()
socks = {}
opened = 0

def open_one(n):
    global opened
    s = socket.socket()
    s.setblocking(False)
    s.connect_ex(("127.0.0.1", port))
    socks[s.fileno()] = (s, n)
    poll.register(s.fileno(), select.EPOLLOUT)
    opened += 1

for n in range(count):
    open_one(n)
poll.register(sys.stdin.fileno(), select.EPOLLIN)
print("ready", flush=True)
churn_until = time.monotonic() + churn_s
stop_at = time.monotonic() + 60
while time.monotonic() < stop_at:
    for fd, ev in poll.poll(0.1):
        if fd == sys.stdin.fileno():
            stop_at = 0
            break
        s, n = socks[fd]
        if ev & GONE:
            poll.unregister(fd)
            s.close()
            del socks[fd]
            if time.monotonic() < churn_until:
                open_one(n)
        elif ev & select.EPOLLOUT:  # connected
            if n % 2:
                try:
                    s.send(PARTIAL)
                except OSError:
                    pass
            poll.modify(fd, GONE)
print(opened, flush=True)
"""


class Attacker:
    """The attacker process (:data:`ATTACKER`)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, port: int, count: int, churn_s: float) -> Attacker:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            ATTACKER,
            str(port),
            str(count),
            str(churn_s),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        assert await asyncio.wait_for(proc.stdout.readline(), 20) == b"ready\n"
        return cls(proc)

    async def stop(self) -> int:
        """End it; the connections it opened."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), 10)
        finally:
            if self.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
            await self.proc.wait()
        return int(line or 0)


def get(url: str, timeout: float = 10) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return int(response.status), response.read()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class Peak:
    """The largest value of ``probe`` seen every 5 ms, in a task of the loop."""

    def __init__(self, probe: Callable[[], int]) -> None:
        self.probe = probe
        self.value = probe()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            self.value = max(self.value, self.probe())
            await asyncio.sleep(0.005)

    def stop(self) -> int:
        self._task.cancel()
        return self.value


async def test_slowloris_neither_flaps_the_pair_nor_stops_the_scrapes() -> None:
    head_timeout_s = 2.0  # 5 s by default: shorter, so the test sees some expire
    limits = HttpLimits(head_timeout_s=head_timeout_s)
    a = Daemon([spec(A, B)])
    b = Daemon([spec(B, A)])
    downs: list[str] = []

    def on_event(peer: Peer, event: Event) -> None:
        if isinstance(event, StateChanged) and event.old_state is State.UP:
            downs.append(f"{peer.spec.local}: {event}")

    changes = Changes(a)
    await a.start()
    server = await start_metrics_server(a, "127.0.0.1", 0, limits)
    attackers: list[Attacker] = []
    try:
        await b.start()
        await changes.wait_for(lambda e: e.new_state is State.UP)
        sa = next(iter(a.peers.values())).session
        sb = next(iter(b.peers.values())).session
        await wait_until(
            lambda: all(
                s.state is State.UP and s.detection_time_us == 150_000 and not s.poll_active
                for s in (sa, sb)
            ),
            what="the pair at 50 ms x 3",
        )
        a.add_listener(on_event)
        b.add_listener(on_event)
        fds = Peak(open_fds)
        fds_before = fds.value
        connections = Peak(lambda: server.connections)
        loop = asyncio.get_running_loop()

        # 3,000 connections held, half of them with an unfinished head.
        attackers.append(await Attacker.start(server.port, 3000, churn_s=0))
        scrapes = []
        for _ in range(3):
            await asyncio.sleep(0.3)
            started = loop.time()
            status, body = await asyncio.to_thread(get, server.url)
            scrapes.append(loop.time() - started)
            assert status == 200 and b"aiobfd_session_up{" in body
        assert max(scrapes) < 2.0, scrapes
        assert server.connections_evicted > 0

        # The connections left open reach their head deadline.
        await wait_until(lambda: server.head_timeouts > 0, timeout=head_timeout_s + 5)
        assert connections.stop() <= limits.max_connections
        assert server.peak_connections <= limits.max_connections
        # (and a few more: the attacker's pipes, the scrapes' own sockets)
        assert fds.stop() <= fds_before + limits.max_connections + 10
        assert downs == []
        assert sa.max_rx_gap_us < 100_000 and sb.max_rx_gap_us < 100_000, (
            sa.max_rx_gap_us,
            sb.max_rx_gap_us,
        )
        status, body = await asyncio.to_thread(get, server.url)
        got = {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in body.decode().splitlines()
            if line.startswith("aiobfd_http_")
        }
        assert 3000 <= got["aiobfd_http_connections_accepted_total"] <= server.connections_accepted
        assert got['aiobfd_http_connections_dropped_total{reason="evicted"}'] > 0
        assert got['aiobfd_http_connections_dropped_total{reason="head_timeout"}'] > 0

        # SIGTERM during an attack: close() resets every connection at once.
        attackers.append(await Attacker.start(server.port, 500, churn_s=0))
        await wait_until(lambda: server.connections == limits.max_connections)
        started = loop.time()
        await server.close()
        assert loop.time() - started < 1.0
        assert server.connections == 0 and not server.accepting
        assert downs == []
    finally:
        await server.close()
        for attacker in attackers:
            await attacker.stop()
        a.close()
        b.close()


# ------------------------------------------------------ the endpoint alone


class _FakeDaemon:
    """Sessions without sockets: what the collector reads, and nothing else."""

    def __init__(self, sessions: int) -> None:
        self.peers: dict[Any, Peer] = {}
        self.table = SimpleNamespace(drops={})
        self.receive_errors = self.session_sockets = 0
        self.unsolicited_refused: dict[str, int] = {}
        self.timing = TimingStats()
        for i in range(sessions):
            spec_ = PeerSpec(f"10.{i // 250}.{i % 250}.1", "10.255.0.1", socket.AF_INET)
            session = Session(SessionConfig(), i + 1, now=0, rng=random.Random(i), key=spec_.key)
            self.peers[spec_.key] = Peer(spec_, session, None, None)  # type: ignore[arg-type]

    def add_listener(self, listener: Any) -> None:
        pass

    def turn(self) -> Turn:
        return Turn(monotonic_us, lambda: None)


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Any]]:
    servers: list[MetricsServer] = []

    async def start(sessions: int = 2, **limits: Any) -> MetricsServer:
        fake = _FakeDaemon(sessions)
        server = await start_metrics_server(fake, "127.0.0.1", 0, HttpLimits(**limits))  # type: ignore[arg-type]
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


async def connect(server: MetricsServer, send: bytes = b"", rcvbuf: int = 0) -> socket.socket:
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", server.port))
    if send:
        await loop.sock_sendall(sock, send)
    return sock


#: Bytes read past a response on a kept connection (the next one's start), by socket.
_AHEAD: dict[socket.socket, bytes] = {}


async def answer(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Everything the server sends until it closes; b"RESET" if it resets."""
    loop = asyncio.get_running_loop()
    got = _AHEAD.pop(sock, b"")
    try:
        async with asyncio.timeout(timeout):
            while chunk := await loop.sock_recv(sock, 1 << 16):
                got += chunk
    except ConnectionResetError:
        return b"RESET"
    finally:
        sock.close()
    return got


#: A request whose client reads the answer until the server closes.
GET = b"GET /metrics HTTP/1.1\r\nHost: aiobfd\r\nConnection: close\r\n\r\n"
#: A request as Prometheus sends it: the connection stays for the next scrape.
GET_KEEP = b"GET /metrics HTTP/1.1\r\nHost: aiobfd\r\n\r\n"


async def response(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """One response on a kept connection (read to its Content-Length; what
    came after it is kept for the next read)."""
    loop = asyncio.get_running_loop()
    got = _AHEAD.pop(sock, b"")
    async with asyncio.timeout(timeout):
        while b"\r\n\r\n" not in got:
            got += await loop.sock_recv(sock, 1 << 16)
        head, _, body = got.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while len(body) < length:
            body += await loop.sock_recv(sock, 1 << 16)
    if len(body) > length:
        _AHEAD[sock] = body[length:]
    return head + b"\r\n\r\n" + body[:length]


async def test_head_limits(serve: Callable[..., Any]) -> None:
    server: MetricsServer = await serve(head_timeout_s=0.5)
    # A bare-LF head is a head.
    assert (await answer(await connect(server, b"GET /metrics HTTP/1.0\n\n"))).startswith(
        b"HTTP/1.1 200 OK\r\n"
    )
    # Too long, or too many headers: 431.
    endless = b"GET /metrics HTTP/1.1\r\nX-Long: " + b"a" * 20_000
    assert (await answer(await connect(server, endless))).startswith(b"HTTP/1.1 431 ")
    many = b"GET /metrics HTTP/1.1\r\n" + b"X: y\r\n" * 65 + b"\r\n"
    assert (await answer(await connect(server, many))).startswith(b"HTTP/1.1 431 ")
    assert server.heads_too_large == 2
    assert (await answer(await connect(server, b"\x16\x03\x01\r\n\r\n"))).startswith(
        b"HTTP/1.1 400 "
    )
    assert server.bad_requests == 1

    # A head that trickles in is cut at its deadline, counted from the accept.
    loop = asyncio.get_running_loop()
    sock = await connect(server, b"GET /metrics HTTP/1.1\r\n")
    started = loop.time()
    with pytest.raises((ConnectionResetError, BrokenPipeError)):
        for _ in range(30):
            await loop.sock_sendall(sock, b"X: y\r\n")
            await asyncio.sleep(0.05)
    sock.close()
    assert 0.4 < loop.time() - started < 1.0
    assert server.head_timeouts == 1 and server.connections == 0


async def test_at_the_cap_the_oldest_unfinished_head_goes_first(
    serve: Callable[..., Any],
) -> None:
    server: MetricsServer = await serve(max_connections=3)
    idle = [await connect(server), await connect(server, b"GET /metrics HTTP/1.1\r\n")]
    idle.append(await connect(server))
    await wait_until(lambda: server.connections == 3)
    got = await answer(await connect(server, GET))
    assert got.startswith(b"HTTP/1.1 200 OK\r\n") and b"aiobfd_session_up{" in got
    assert server.connections_evicted == 1
    assert await answer(idle[0]) == b"RESET"
    await wait_until(lambda: server.connections == 2)
    idle.append(await connect(server))
    await wait_until(lambda: server.connections == 3)
    got = await answer(await connect(server, GET))
    assert b'aiobfd_http_connections_dropped_total{reason="evicted"} 2.0' in got
    assert await answer(idle[1]) == b"RESET"  # the next oldest made room for that one
    for sock in idle[2:]:
        sock.close()


async def test_a_client_answered_once_keeps_its_connection_and_is_never_evicted(
    serve: Callable[..., Any],
) -> None:
    """HTTP/1.1 keep-alive, as Prometheus scrapes: the connection stays for the
    next request and is not evicted for the half-open connections that come
    after it, so a scraper is not queued again behind them."""
    server: MetricsServer = await serve(max_connections=4, max_kept=2)
    loop = asyncio.get_running_loop()
    scraper = await connect(server, GET_KEEP)
    first = await response(scraper)
    assert first.startswith(b"HTTP/1.1 200 OK\r\n") and b"Connection: keep-alive" in first
    assert server.kept_connections == 1
    # Half-open connections come and go at the cap, evicting one another.
    idle = [await connect(server, b"GET /metrics HTTP/1.1\r\n") for _ in range(8)]
    await wait_until(lambda: server.connections_evicted >= 4)
    await loop.sock_sendall(scraper, GET_KEEP)
    second = await response(scraper)
    assert second.startswith(b"HTTP/1.1 200 OK\r\n") and b"aiobfd_session_up{" in second
    assert server.requests_on_kept == 1
    # Two requests sent back to back are answered in turn.
    await loop.sock_sendall(scraper, GET_KEEP + GET)
    assert (await response(scraper)).startswith(b"HTTP/1.1 200 OK\r\n")
    last = await answer(scraper)
    assert last.startswith(b"HTTP/1.1 200 OK\r\n") and b"Connection: close" in last
    await wait_until(lambda: server.kept_connections == 0)
    for sock in idle:
        sock.close()


async def test_kept_connections_are_bounded_and_time_out(serve: Callable[..., Any]) -> None:
    """At most max_kept are kept (the oldest idle one goes for a newer one), and a
    kept connection that sends nothing goes after the keep-alive time; HTTP/1.0
    and errors close."""
    server: MetricsServer = await serve(max_kept=2, keepalive_timeout_s=0.5)
    kept = []
    for _ in range(3):
        sock = await connect(server, GET_KEEP)
        assert (await response(sock)).startswith(b"HTTP/1.1 200 OK\r\n")
        kept.append(sock)
    assert server.kept_connections == 2 and server.kept_closed == 1
    assert await answer(kept[0]) == b"RESET"  # the oldest went for the third
    old = await answer(await connect(server, b"GET /metrics HTTP/1.0\r\n\r\n"))
    assert b"Connection: close" in old
    bad = await answer(await connect(server, b"GET /nowhere HTTP/1.1\r\n\r\n"), timeout=2)
    assert bad.startswith(b"HTTP/1.1 404 ")
    await wait_until(lambda: server.kept_connections == 0, timeout=3)
    assert server.kept_closed == 3
    for sock in kept[1:]:
        sock.close()


async def test_clients_that_do_not_read_are_dropped_and_accepting_pauses(
    serve: Callable[..., Any],
) -> None:
    # About 2.2 kB of exposition a session: twice what the kernel may buffer
    # for a reader that does not read (9 MB with Linux's default 4 MB).
    wmem_max = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    sessions = max(4000, wmem_max // 1000)
    server: MetricsServer = await serve(sessions=sessions, max_connections=2, write_timeout_s=1.0)
    loop = asyncio.get_running_loop()
    slow = [await connect(server, GET, rcvbuf=4096) for _ in range(2)]
    await wait_until(lambda: server.connections == 2)
    # Both are being answered: a third waits in the kernel's backlog.
    started = loop.time()
    third = loop.create_task(asyncio.to_thread(get, server.url))
    await wait_until(lambda: server.accept_pauses > 0, timeout=5)
    assert server.connections == 2 and not server.accepting
    status, body = await third
    assert status == 200 and b"aiobfd_session_up{" in body
    assert server.slow_clients == 2
    assert 1.0 < loop.time() - started < 5.0
    for sock in slow:
        sock.close()
    assert server.connections == 0 and server.accepting

    # close() does not wait for a client stuck in its response.
    stuck = await connect(server, GET, rcvbuf=4096)
    await wait_until(lambda: server.connections == 1)
    await asyncio.sleep(0.3)  # rendering it, or writing it
    started = loop.time()
    await server.close()
    assert loop.time() - started < 1.0
    assert server.connections == 0 and server.slow_clients == 2
    stuck.close()


async def test_evictions_keep_to_their_rate(serve: Callable[..., Any]) -> None:
    """A client that opens a new connection for each one closed gets
    ``evictions_burst`` at once, then ``evictions_per_s``."""
    server: MetricsServer = await serve(max_connections=8, evictions_per_s=100, evictions_burst=20)
    attacker = await Attacker.start(server.port, 300, churn_s=10)
    try:
        await asyncio.sleep(1.0)
        first = server.connections_evicted
        await asyncio.sleep(1.0)
        second = server.connections_evicted - first
    finally:
        await attacker.stop()
    assert 20 <= first <= 20 + 100 * 1.2 + 16
    assert 50 <= second <= 100 * 1.2 + 16
    assert server.peak_connections == 8


def test_a_response_is_sent_in_chunks_never_joined_whole() -> None:
    """Small pieces are joined up to a chunk, large ones cut into views: the
    bytes come out whole and in order, no chunk is much over the size."""
    from aiobfd.metrics.http import _chunked

    rng = random.Random(7)
    pieces = [bytes([n % 251]) * rng.choice([0, 3, 700, 5_000, 70_000]) for n in range(200)]
    chunks = list(_chunked(pieces, 16_384))
    assert b"".join(bytes(c) for c in chunks) == b"".join(pieces)
    assert all(len(c) < 16_384 + 5_000 for c in chunks)
    assert any(isinstance(c, memoryview) for c in chunks)  # a large piece is cut, not copied
