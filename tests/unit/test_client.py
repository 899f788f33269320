"""The control-socket client without a socket: its imports and the watch stream's lines.

Against a socket: tests/daemon/test_client.py (blocking) and
tests/daemon/test_exabgp.py (asyncio).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from aiobfd.client import ClientError, Garbled, watch_record


def test_aiobfdctl_loads_neither_the_server_the_engine_nor_asyncio() -> None:
    code = (
        "import sys, aiobfd.ctl; aiobfd.ctl.build_parser();"
        "print(sorted({'aiobfd.control', 'aiobfd.engine', 'asyncio'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_record_is_its_json_object() -> None:
    line = b'{"event": "state", "remote": "192.0.2.1", "state": "up"}\n'
    assert watch_record(line) == {"event": "state", "remote": "192.0.2.1", "state": "up"}


@pytest.mark.parametrize("line", [b"", b"\n", b"   \r\n"])
def test_blank_lines_are_no_record(line: bytes) -> None:
    assert watch_record(line) is None


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (b"not json\n", "not JSON"),
        (b"\xff\xfe\x00 binary\n", "not JSON"),
        (b"[1, 2, 3]\n", "not a JSON object"),
        (b'"a string"\n', "not a JSON object"),
        (b"null\n", "not a JSON object"),
    ],
)
def test_a_line_that_is_no_json_object_is_garbled(line: bytes, why: str) -> None:
    with pytest.raises(Garbled) as garbled:
        watch_record(line)
    assert garbled.value.why == why
    assert isinstance(garbled.value, ClientError)  # aiobfdctl shows it as one line


def test_the_daemon_ending_the_stream_is_an_error() -> None:
    with pytest.raises(ClientError, match="aiobfd ended the watch: watcher too slow"):
        watch_record(b'{"ok": false, "error": "watcher too slow, disconnected"}\n')
