"""aiobfd-exabgp against a fake control socket: what it tells ExaBGP, and when.

The decisions themselves, without a socket, are in tests/unit/test_exabgp.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from aiobfd import client, exabgp
from aiobfd.exabgp import Options, PeerPattern
from tests.unit.test_exabgp import ANNOUNCE, ROUTE, WITHDRAW, record

SRC = str(Path(__file__).resolve().parents[2] / "src")


class FakeAiobfd:
    """A control socket that answers `watch` with a snapshot, then sends what a test says."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.snapshot: list[dict[str, Any]] = []
        self.handshake: Any = {"ok": True, "watching": True}
        self.clients: list[asyncio.StreamWriter] = []
        self.requests: list[bytes] = []
        self.connections = 0
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._client, path=str(self.path))

    async def stop(self) -> None:
        """Close the listener and every client, as a dying daemon does."""
        if self._server is not None:
            self._server.close()
            self._server = None
        self.drop()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def drop(self) -> None:
        for writer in self.clients:
            writer.close()
        self.clients.clear()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.requests.append(await reader.readline())
        self._write(writer, self.handshake)
        for rec in self.snapshot:
            self._write(writer, {**rec, "event": "snapshot"})
        self.clients.append(writer)

    @staticmethod
    def _write(writer: asyncio.StreamWriter, obj: Any) -> None:
        writer.write(obj if isinstance(obj, bytes) else json.dumps(obj).encode() + b"\n")

    async def send(self, *objs: Any) -> None:
        """Send records (dicts) or raw bytes to every watcher."""
        for writer in list(self.clients):
            for obj in objs:
                self._write(writer, obj)
            with contextlib.suppress(ConnectionError):
                await writer.drain()

    async def wait_clients(self, n: int = 1, timeout: float = 5.0) -> None:
        await until(lambda: len(self.clients) >= n, timeout, f"{n} watcher(s)")


async def until(probe: Callable[[], object], timeout: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or probe}")
        await asyncio.sleep(0.01)


@pytest.fixture
def sock(tmp_path: Path) -> Path:
    return tmp_path / "c.sock"


@pytest.fixture
async def server(sock: Path) -> AsyncIterator[FakeAiobfd]:
    fake = FakeAiobfd(sock)
    await fake.start()
    yield fake
    await fake.stop()


class Helper:
    """`exabgp.run` as a task, collecting what it would print."""

    def __init__(self, options: Options) -> None:
        self.out: list[str] = []
        self.task = asyncio.ensure_future(exabgp.run(options, self.out.append))

    async def expect(self, *lines: str, timeout: float = 5.0) -> None:
        """Wait until the output is exactly `lines` (so far)."""
        await until(lambda: self.out == list(lines) or self.task.done(), timeout, repr(lines))
        if self.task.done():
            self.task.result()  # raise what killed it
        assert self.out == list(lines)

    async def stays(self, *lines: str, for_s: float = 0.3) -> None:
        await asyncio.sleep(for_s)
        assert not self.task.done()
        assert self.out == list(lines)

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


@pytest.fixture
async def helper_factory(sock: Path) -> AsyncIterator[Callable[..., Helper]]:
    helpers: list[Helper] = []

    def make(
        peers: Iterable[str] = (),
        require: str = "all",
        routes: Iterable[str] = (ROUTE,),
        announce_delay_s: float = 0.0,
    ) -> Helper:
        options = Options(
            socket=str(sock),
            routes=tuple(routes),
            peers=tuple(PeerPattern.parse(p) for p in peers),
            require=require,
            max_backoff_s=0.2,
            announce_delay_s=announce_delay_s,
        )
        helper = Helper(options)
        helpers.append(helper)
        return helper

    yield make
    for helper in helpers:
        await helper.close()


# -- against a fake daemon ---------------------------------------------------------------


async def test_announce_on_up_withdraw_on_down(
    server: FakeAiobfd, helper_factory: Callable[..., Helper]
) -> None:
    server.snapshot = [record("198.51.100.1", "down")]
    helper = helper_factory()
    await helper.expect(WITHDRAW)  # the first decision is always written
    assert json.loads(server.requests[0]) == {"command": "watch"}
    await server.send(record("198.51.100.1", "init"))
    await helper.stays(WITHDRAW, for_s=0.1)
    await server.send(record("198.51.100.1", "up"))
    await helper.expect(WITHDRAW, ANNOUNCE)
    await server.send(record("198.51.100.1", "down", diag=1))
    await helper.expect(WITHDRAW, ANNOUNCE, WITHDRAW)


async def test_snapshot_up_announces_once(
    server: FakeAiobfd, helper_factory: Callable[..., Helper]
) -> None:
    server.snapshot = [record("198.51.100.1", "up")]
    helper = helper_factory(routes=(ROUTE, "2001:db8:53::/48"))
    await helper.expect(ANNOUNCE, "announce route 2001:db8:53::/48 next-hop self")
    await helper.stays(ANNOUNCE, "announce route 2001:db8:53::/48 next-hop self")


async def test_snapshot_is_judged_whole(
    server: FakeAiobfd, helper_factory: Callable[..., Helper]
) -> None:
    """With require all, an Up session listed before a Down one must not flash an announce."""
    server.snapshot = [record("198.51.100.1", "up")]
    helper = helper_factory()
    await server.wait_clients()
    # The rest of the snapshot arrives a little later, within the settle time: a
    # pause that is the scenario, not a wait for something to happen.
    await asyncio.sleep(0.02)
    await server.send({**record("198.51.100.2", "down"), "event": "snapshot"})
    await helper.expect(WITHDRAW)
    await helper.stays(WITHDRAW)


async def test_named_peers_end_the_snapshot_at_once(
    server: FakeAiobfd, helper_factory: Callable[..., Helper]
) -> None:
    server.snapshot = [record("198.51.100.1", "up"), record("198.51.100.2", "down")]
    helper = helper_factory(peers=["198.51.100.1"])
    await helper.expect(ANNOUNCE, timeout=exabgp.SNAPSHOT_SETTLE_S * 0.9)
    await server.send(record("198.51.100.2", "up"), record("198.51.100.2", "down"))
    await helper.stays(ANNOUNCE, for_s=0.1)
    await server.send(record("198.51.100.1", "down"))
    await helper.expect(ANNOUNCE, WITHDRAW)


@pytest.mark.parametrize(
    ("require", "expected"),
    [("all", [WITHDRAW, ANNOUNCE, WITHDRAW]), ("any", [WITHDRAW, ANNOUNCE])],
)
async def test_require_all_or_any(
    server: FakeAiobfd,
    helper_factory: Callable[..., Helper],
    require: str,
    expected: list[str],
) -> None:
    server.snapshot = [record("198.51.100.1", "down"), record("198.51.100.2", "down")]
    helper = helper_factory(require=require)
    await helper.expect(WITHDRAW)
    await server.send(record("198.51.100.1", "up"))
    if require == "all":
        await helper.stays(WITHDRAW, for_s=0.1)
    await server.send(record("198.51.100.2", "up"))
    await helper.expect(WITHDRAW, ANNOUNCE)
    await server.send(record("198.51.100.1", "down"))
    await helper.expect(*expected)
    await helper.stays(*expected, for_s=0.1)


async def test_changes_in_one_batch_are_judged_together(
    server: FakeAiobfd, helper_factory: Callable[..., Helper]
) -> None:
    server.snapshot = [record("198.51.100.1", "up"), record("198.51.100.2", "up")]
    helper = helper_factory()
    await helper.expect(ANNOUNCE)
    # One session bounces within one write: the net state is unchanged.
    await server.send(
        b"".join(
            json.dumps(r).encode() + b"\n"
            for r in (record("198.51.100.1", "down"), record("198.51.100.1", "up"))
        )
    )
    await helper.stays(ANNOUNCE, for_s=0.1)


async def test_announce_delay_holds_announces_back_never_withdrawals(
    server: FakeAiobfd, helper_factory: Callable[..., Helper]
) -> None:
    server.snapshot = [record("198.51.100.1", "down")]
    helper = helper_factory(announce_delay_s=0.3)
    await helper.expect(WITHDRAW)
    # Up for less than the delay: nothing is announced.
    await server.send(record("198.51.100.1", "up"))
    await helper.stays(WITHDRAW, for_s=0.15)
    await server.send(record("198.51.100.1", "down"))
    await helper.stays(WITHDRAW, for_s=0.3)
    # Up for good: announced once the delay has passed, with no further event.
    start = time.monotonic()
    await server.send(record("198.51.100.1", "up"))
    await helper.expect(WITHDRAW, ANNOUNCE, timeout=2)
    assert 0.25 <= time.monotonic() - start < 1.0
    # A withdrawal is immediate.
    start = time.monotonic()
    await server.send(record("198.51.100.1", "down"))
    await helper.expect(WITHDRAW, ANNOUNCE, WITHDRAW)
    assert time.monotonic() - start < 0.1


async def test_announce_delay_restarts_after_a_reconnect(
    server: FakeAiobfd, helper_factory: Callable[..., Helper]
) -> None:
    server.snapshot = [record("198.51.100.1", "up")]
    helper = helper_factory(announce_delay_s=0.3)
    await server.wait_clients()
    await asyncio.sleep(0.15)
    server.drop()  # aiobfd restarts before the delay is over: withdrawn, and it starts anew
    await helper.expect(WITHDRAW)
    await helper.expect(WITHDRAW, ANNOUNCE, timeout=2)
    assert server.connections == 2


async def test_permission_denied_is_explained_and_retried(
    helper_factory: Callable[..., Helper],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    attempts = 0

    async def denied(*args: Any, **kwargs: Any) -> Any:
        nonlocal attempts
        attempts += 1
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(asyncio, "open_unix_connection", denied)
    helper = helper_factory()
    await helper.expect(WITHDRAW)
    await until(lambda: attempts >= 3, 3, "retries")
    assert helper.out == [WITHDRAW]
    assert "permission denied on" in caplog.text and "mode 0600" in caplog.text
    assert caplog.text.count("permission denied") == 1  # said once, not per attempt


async def test_a_cancellation_is_never_lost(sock: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cancelled at any step of a failing connect, the helper stops.  (Python
    3.11's wait_for returned the finished connect's result instead of the
    cancellation when both came at once: the helper then retried forever.)"""

    async def denied(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(asyncio, "open_unix_connection", denied)
    options = Options(socket=str(sock), routes=(ROUTE,), max_backoff_s=0.2)
    for steps in range(8):
        task = asyncio.ensure_future(exabgp.run(options, lambda line: None))
        for _ in range(steps):
            await asyncio.sleep(0)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=2)
        assert done, f"cancelled {steps} loop steps in, it kept running"
        assert task.cancelled()


async def test_unreachable_daemon_means_withdrawn_then_reconnects(
    sock: Path, helper_factory: Callable[..., Helper]
) -> None:
    helper = helper_factory()
    await helper.expect(WITHDRAW)  # nobody listens: withdrawn from the start
    fake = FakeAiobfd(sock)
    fake.snapshot = [record("198.51.100.1", "up")]
    await fake.start()
    try:
        await helper.expect(WITHDRAW, ANNOUNCE, timeout=2)  # max backoff 0.2 s here
        # The daemon dies: withdrawn at once, not after a backoff.
        start = time.monotonic()
        await fake.stop()
        await helper.expect(WITHDRAW, ANNOUNCE, WITHDRAW)
        assert time.monotonic() - start < 0.1
        await helper.stays(WITHDRAW, ANNOUNCE, WITHDRAW)
        # It comes back, sessions still down at first, then up.
        fake.snapshot = [record("198.51.100.1", "down")]
        await fake.start()
        await fake.wait_clients()
        await helper.stays(WITHDRAW, ANNOUNCE, WITHDRAW, for_s=0.2)
        await fake.send(record("198.51.100.1", "up"))
        await helper.expect(WITHDRAW, ANNOUNCE, WITHDRAW, ANNOUNCE)
    finally:
        await fake.stop()


async def test_backoff_grows_to_the_maximum(
    sock: Path, helper_factory: Callable[..., Helper], monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[float] = []
    real = asyncio.open_unix_connection

    async def counting(*args: Any, **kwargs: Any) -> Any:
        attempts.append(time.monotonic())
        return await real(*args, **kwargs)

    monkeypatch.setattr(asyncio, "open_unix_connection", counting)
    helper = helper_factory()
    await helper.expect(WITHDRAW)
    await until(lambda: len(attempts) >= 7, 3, "seven attempts")
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert gaps[0] < 0.15  # 0.1 s, jittered down to 0.08
    assert min(gaps[1:]) >= 0.15  # then doubled: 0.2 s, jittered down to 0.16
    assert max(gaps) < 0.3  # never above --max-backoff (0.2 s here)
    assert helper.out == [WITHDRAW]  # withdrawn once, not once per attempt


@pytest.mark.parametrize(
    "garbage",
    [
        b"not json\n",
        b"\xff\xfe\x00 binary\n",
        b"[1, 2, 3]\n",
        b'"a string"\n',
        b"null\n",
        b"{}\n",
        b'{"event": "state"}\n',
        b'{"event": "state", "remote": "198.51.100.1", "state": "sideways"}\n',
        b'{"event": "state", "remote": null, "state": "down"}\n',
        b'{"event": "future-thing", "remote": "198.51.100.1", "state": "down"}\n',
        b'{"event": "state", "remote": "198.51.100.1", "state": "down"',  # no newline yet
        b"\n\n   \n",
    ],
)
async def test_bad_input_is_skipped(
    server: FakeAiobfd, helper_factory: Callable[..., Helper], garbage: bytes
) -> None:
    server.snapshot = [record("198.51.100.1", "up")]
    helper = helper_factory()
    await helper.expect(ANNOUNCE)
    await server.send(garbage)
    await helper.stays(ANNOUNCE, for_s=0.15)
    assert server.connections == 1
    if not garbage.endswith(b"\n"):
        return  # the partial line ends with the next one: nothing more to check
    await server.send(record("198.51.100.1", "down"))
    await helper.expect(ANNOUNCE, WITHDRAW)


async def test_a_flood_of_bad_lines_is_logged_a_few_times_only(
    server: FakeAiobfd, helper_factory: Callable[..., Helper], caplog: pytest.LogCaptureFixture
) -> None:
    server.snapshot = [record("198.51.100.1", "up")]
    helper = helper_factory()
    await helper.expect(ANNOUNCE)
    await server.send(b"garbage\n" * 1000)
    await server.send(record("198.51.100.1", "down"))
    await helper.expect(ANNOUNCE, WITHDRAW)
    assert caplog.text.count("ignoring a line") == exabgp.BAD_LINES_LOGGED
    assert "not logged" in caplog.text


async def test_an_overlong_line_means_reconnect(
    server: FakeAiobfd, helper_factory: Callable[..., Helper]
) -> None:
    server.snapshot = [record("198.51.100.1", "up")]
    helper = helper_factory()
    await helper.expect(ANNOUNCE)
    await server.send(b"x" * (client.MAX_LINE + 70000))
    await helper.expect(ANNOUNCE, WITHDRAW, ANNOUNCE)
    assert server.connections == 2


@pytest.mark.parametrize(
    "handshake",
    [
        {"ok": False, "error": "unknown command 'watch'"},
        [1],
        b"garbage\n",
    ],
)
async def test_a_refused_watch_is_retried(
    server: FakeAiobfd, helper_factory: Callable[..., Helper], handshake: Any
) -> None:
    server.handshake = handshake
    server.snapshot = [record("198.51.100.1", "up")]
    helper = helper_factory()
    await helper.expect(WITHDRAW)
    await until(lambda: server.connections >= 2, 2, "a second attempt")
    server.handshake = {"ok": True, "watching": True}
    await helper.expect(WITHDRAW, ANNOUNCE)


async def test_too_slow_watcher_resynchronises(
    server: FakeAiobfd, helper_factory: Callable[..., Helper]
) -> None:
    server.snapshot = [record("198.51.100.1", "up")]
    helper = helper_factory()
    await helper.expect(ANNOUNCE)
    await server.send({"ok": False, "error": "watcher too slow, disconnected"})
    server.drop()
    await helper.expect(ANNOUNCE, WITHDRAW, ANNOUNCE)
    assert server.connections == 2


async def test_a_silent_daemon_does_not_hang_the_handshake(
    sock: Path, helper_factory: Callable[..., Helper], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exabgp, "HANDSHAKE_TIMEOUT_S", 0.2)
    connections: list[asyncio.StreamWriter] = []

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)

    server = await asyncio.start_unix_server(mute, path=str(sock))
    try:
        helper = helper_factory()
        await helper.expect(WITHDRAW)
        await until(lambda: len(connections) >= 2, 2, "a second attempt")
    finally:
        server.close()
        for writer in connections:
            writer.close()


# -- the real control socket ---------------------------------------------------------------


async def test_against_the_real_control_socket(
    sock: Path, helper_factory: Callable[..., Helper]
) -> None:
    """The watch records aiobfd really sends drive the helper (the format is the contract)."""
    from aiobfd.config import PeerSpec
    from aiobfd.control import ControlServer
    from aiobfd.engine import Daemon
    from aiobfd.protocol.session import SessionConfig

    fast = SessionConfig(desired_min_tx_us=30_000, required_min_rx_us=30_000, detect_mult=3)
    # Loopback addresses of this test's own, clear of other daemons on 127.0.0.1.
    one, two = "127.53.0.1", "127.53.0.2"
    a = Daemon([PeerSpec(two, one, socket.AF_INET, session=fast)])
    b = Daemon([PeerSpec(one, two, socket.AF_INET, session=fast)])
    await a.start()
    control = ControlServer(a, str(sock))
    await control.start()
    try:
        helper = helper_factory(peers=[two])
        await helper.expect(WITHDRAW)
        await b.start()
        await helper.expect(WITHDRAW, ANNOUNCE, timeout=10)
        b.close()
        await helper.expect(WITHDRAW, ANNOUNCE, WITHDRAW, timeout=5)
    finally:
        await control.close()
        a.close()
        b.close()


# -- the process --------------------------------------------------------------------------


async def _spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aiobfd.exabgp", *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": SRC},
    )  # fmt: skip


async def _line(proc: asyncio.subprocess.Process, timeout: float = 10.0) -> str:
    assert proc.stdout is not None
    return (await asyncio.wait_for(proc.stdout.readline(), timeout)).decode().rstrip("\n")


async def test_process_prints_flushed_lines_and_exits_when_stdin_closes(
    server: FakeAiobfd, sock: Path
) -> None:
    server.snapshot = [record("198.51.100.1", "up")]
    proc = await _spawn("-s", str(sock), "--route", ROUTE, "--peer", "198.51.100.1")
    try:
        assert await _line(proc) == ANNOUNCE  # flushed: a pipe, not a terminal
        assert proc.stdin is not None
        proc.stdin.write(b"done\n{not even json\n\xff\n")  # ExaBGP's acks: ignored
        await proc.stdin.drain()
        await server.send(record("198.51.100.1", "down"))
        assert await _line(proc) == WITHDRAW
        proc.stdin.close()
        assert await asyncio.wait_for(proc.wait(), 5) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.stderr is not None
    errors = (await proc.stderr.read()).decode()
    assert "Traceback" not in errors


async def test_process_exits_when_stdin_closes_while_daemon_is_away(sock: Path) -> None:
    proc = await _spawn("-s", str(sock), "--route", ROUTE)
    try:
        assert await _line(proc) == WITHDRAW
        assert proc.stdin is not None
        proc.stdin.close()
        assert await asyncio.wait_for(proc.wait(), 5) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_process_exits_quietly_when_stdout_closes(server: FakeAiobfd, sock: Path) -> None:
    server.snapshot = [record("198.51.100.1", "up")]
    proc = await _spawn("-s", str(sock), "--route", ROUTE)
    try:
        assert await _line(proc) == ANNOUNCE
        assert proc.stdout is not None
        proc.stdout.feed_eof()
        transport = proc._transport  # type: ignore[attr-defined]
        stdout = transport.get_pipe_transport(1)
        pipe = stdout.get_extra_info("pipe")
        stdout.close()  # the reader side of its stdout goes away
        await until(lambda: pipe.closed, 2, "the pipe closed")
        await server.send(record("198.51.100.1", "down"))  # writing now fails: EPIPE
        assert await asyncio.wait_for(proc.wait(), 5) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.stderr is not None
    assert "Traceback" not in (await proc.stderr.read()).decode()
