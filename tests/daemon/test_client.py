"""The blocking control-socket client (aiobfdctl's) against a scripted socket.

Each test's fake daemon answers one connection with the bytes it is given; the
real server's side of the protocol is in test_watch.py and test_config_cli.py.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiobfd import client, ctl
from aiobfd.client import ClientError, Garbled, request, watch


class Scripted:
    """A Unix socket that reads one request line and answers it with fixed bytes."""

    def __init__(self, path: Path, answer: bytes, hold: bool = False) -> None:
        self.path = path
        self.answer = answer
        self.hold = hold
        """Keep the connection open after the answer (until the test ends)."""
        self.requests: list[bytes] = []
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(1)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):  # the client may give up first
            conn, _ = self.listener.accept()
            with conn:
                self.requests.append(conn.makefile("rb").readline())
                conn.sendall(self.answer)
                if self.hold:
                    self.done.wait(10)

    def close(self) -> None:
        self.done.set()
        self.listener.close()
        self.thread.join(5)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "c.sock"


@pytest.fixture
def scripted(path: Path) -> Iterator[list[Scripted]]:
    made: list[Scripted] = []
    yield made
    for fake in made:
        fake.close()


def serve(made: list[Scripted], path: Path, answer: bytes, hold: bool = False) -> Scripted:
    fake = Scripted(path, answer, hold)
    made.append(fake)
    return fake


def lines(*objs: object) -> bytes:
    return b"".join(json.dumps(o).encode() + b"\n" for o in objs)


# -- one request ---------------------------------------------------------------------------


def test_request_sends_a_line_and_returns_the_answer(path: Path, scripted: list[Scripted]) -> None:
    fake = serve(scripted, path, lines({"ok": True, "version": "1.0"}))
    assert request(str(path), {"command": "version"}) == {"ok": True, "version": "1.0"}
    assert json.loads(fake.requests[0]) == {"command": "version"}


def test_an_answer_in_pieces_and_long_is_read_whole(path: Path, scripted: list[Scripted]) -> None:
    # show sessions is one line, however many sessions: no bound on an answer.
    sessions = [{"peer": f"192.0.2.{n % 250}", "pad": "x" * 1000} for n in range(2000)]
    serve(scripted, path, lines({"ok": True, "sessions": sessions}))
    assert request(str(path), {"command": "show sessions"})["sessions"] == sessions


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (lines({"ok": False, "error": "no session with peer 192.0.2.9"}), "^no session with"),
        (lines({"ok": False}), "^request failed$"),
        (b"garbage\n", "^garbled answer from aiobfd on .*c.sock$"),
        (b"[1]\n", "^garbled answer"),
        (b"", "^garbled answer"),  # closed without a word
    ],
)
def test_a_refused_or_garbled_answer_is_one_line(
    path: Path, scripted: list[Scripted], answer: bytes, message: str
) -> None:
    serve(scripted, path, answer)
    with pytest.raises(ClientError, match=message):
        request(str(path), {"command": "show session", "peer": "192.0.2.9"})


def test_no_daemon_names_the_socket(path: Path) -> None:
    with pytest.raises(
        ClientError, match=rf"^aiobfd is not running \(no daemon on {re.escape(str(path))}\)$"
    ):
        request(str(path), {"command": "version"})
    # A socket file left behind, with nobody listening: the same.
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    with pytest.raises(ClientError, match=r"^aiobfd is not running"):
        request(str(path), {"command": "version"})


def test_a_silent_daemon_times_out(path: Path, scripted: list[Scripted]) -> None:
    serve(scripted, path, b"", hold=True)
    with pytest.raises(ClientError, match=rf"^no answer from aiobfd on {re.escape(str(path))}$"):
        request(str(path), {"command": "version"}, timeout=0.2)


# -- the watch stream ---------------------------------------------------------------------


SNAPSHOT = {"event": "snapshot", "remote": "192.0.2.1", "state": "down"}
STATE = {"event": "state", "remote": "192.0.2.1", "state": "up"}


def test_watch_yields_records_until_the_daemon_closes(path: Path, scripted: list[Scripted]) -> None:
    answer = lines({"ok": True, "watching": True, "sessions": 1}, SNAPSHOT) + b"\n" + lines(STATE)
    fake = serve(scripted, path, answer)
    assert list(watch(str(path))) == [SNAPSHOT, STATE]  # the blank line is no record
    assert fake.requests == [client.WATCH_REQUEST]


@pytest.mark.parametrize(
    ("answer", "error", "message"),
    [
        (lines({"ok": False, "error": "unknown command"}), ClientError, "^watch refused: "),
        (b"garbage\n", ClientError, "^watch refused: b'garbage'"),
        (b"", ClientError, "^no answer to watch from aiobfd on "),
        (
            lines({"ok": True}, {"ok": False, "error": "watcher too slow, disconnected"}),
            ClientError,
            "^aiobfd ended the watch: watcher too slow",
        ),
        (lines({"ok": True}) + b"not json\n", Garbled, r"^garbled line from aiobfd \(not JSON\)"),
        (lines({"ok": True}) + b"x" * (client.MAX_LINE + 1), ClientError, "too long"),
    ],
)
def test_watch_errors_are_one_line(
    path: Path,
    scripted: list[Scripted],
    answer: bytes,
    error: type[Exception],
    message: str,
) -> None:
    serve(scripted, path, answer)
    with pytest.raises(error, match=message):
        list(watch(str(path)))


def test_aiobfdctl_watch_prints_json_lines(
    path: Path, scripted: list[Scripted], capsys: pytest.CaptureFixture[str]
) -> None:
    serve(scripted, path, lines({"ok": True, "watching": True}, SNAPSHOT, STATE))
    assert ctl.main(["-s", str(path), "watch"]) == 0
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == [SNAPSHOT, STATE]


def test_aiobfdctl_says_why_in_one_line(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl.main(["-s", str(path), "watch"]) == 1
    assert capsys.readouterr().err == f"aiobfdctl: aiobfd is not running (no daemon on {path})\n"
