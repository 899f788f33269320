"""The harness the adversarial benches share: an established pair of our daemons.

Each ``bench/adversarial_*.py`` attacks one side of two ``aiobfd`` processes
that talk over loopback (A on 127.0.0.1, B on 127.0.0.2), in a private network
namespace, and reports what the attack cost the pair.  What they all need lives
here, written once:

* the namespace: :func:`enter_namespace` re-runs the bench under ``unshare -n``
  (``-m`` too on request) with loopback up; :func:`raise_nofile` lifts the soft
  RLIMIT_NOFILE (the daemons and attackers inherit it);
* a daemon process, :class:`Proc`: started with its control socket and log in a
  temporary directory, asked over the control socket through the project's own
  client (:func:`request`, ``aiobfd.client``), its CPU time, CPU wait, file
  descriptors and RSS from /proc, and how long SIGTERM takes to end it;
* the pair, :func:`pair`: both started, the session Up on both sides and the
  initial Polls over, both stopped at the end; :func:`sessions`, :func:`flaps`
  and :func:`rx_gaps` for the figures every bench reports (Down events, the
  largest receive gap each session counted while Up);
* waiting and watching: :func:`wait_for`, :class:`Every` (a probe in a thread),
  :class:`Pinger` (the control socket's answer times, its event loop);
* the wire: :class:`SendGaps`, the largest gap between each daemon's packets as
  they left, captured on lo (whatever either daemon believes);
* memory: :func:`status_kb`, :func:`reset_peak` (VmHWM), :func:`alive`;
* the report: :func:`run_and_print`.

The benches run as ``python bench/NAME.py``, which puts this directory on the
import path.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiobfd
from aiobfd.client import ClientError
from aiobfd.client import request as _client_request

AIOBFD = [sys.executable, "-m", "aiobfd"]
A, B = "127.0.0.1", "127.0.0.2"
Json = dict[str, Any]
VERSION: Json = {"command": "version"}
# Linux's values, which Python's socket module does not name.
SO_ATTACH_FILTER = 26
SO_TIMESTAMPNS = 35
PACKET_OUTGOING = 4


# ------------------------------------------------------------ the namespace


def enter_namespace(mount: bool = False) -> None:
    """Re-run this script in a private network namespace (and mount one), loopback up."""
    if os.environ.get("AIOBFD_BENCH_NS") == "1":
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        return
    if os.geteuid() != 0:
        what = "a network and a mount namespace" if mount else "a network namespace"
        raise SystemExit(f"run as root: the bench makes {what}")
    os.environ["AIOBFD_BENCH_NS"] = "1"
    unshare = shutil.which("unshare") or "unshare"
    flags = ["-n", "-m"] if mount else ["-n"]
    os.execvp(unshare, [unshare, *flags, "--", sys.executable, *sys.argv])


def raise_nofile() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard one (children inherit it)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def run_and_print(
    run: Callable[[argparse.Namespace, Path], Json], args: argparse.Namespace, prefix: str
) -> int:
    """Say which aiobfd runs, ``run`` the bench in a temporary directory, print its figures."""
    print(f"aiobfd from {Path(aiobfd.__file__).parent}", flush=True)
    with tempfile.TemporaryDirectory(prefix=prefix) as name:
        result = run(args, Path(name))
    print(json.dumps(result, indent=1))
    return 0


# ------------------------------------------------------------ waiting


def request(path: Path | str, payload: Json, timeout: float = 60.0) -> Json:
    """One control request, the daemon's answer: ``aiobfd.client.request``.

    Raises ClientError when there is no answer within ``timeout`` or the
    daemon refuses (its error is the message).
    """
    return _client_request(str(path), payload, timeout)


def wait_for(probe: Callable[[], Any], what: str, timeout: float) -> Any:
    """What ``probe`` returns once it is true, tried every 20 ms; SystemExit after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.02)


class Every:
    """Runs ``probe`` every ``period`` seconds in a thread until stopped."""

    def __init__(self, period: float, probe: Callable[[], None]) -> None:
        self.period = period
        self.probe = probe
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.probe()
            self._stop.wait(max(0.0, self.period - (time.monotonic() - started)))

    def stop(self, wait: float = 0.5) -> None:
        """Stop; a probe still running after ``wait`` seconds is left to end alone."""
        self._stop.set()
        self._thread.join(wait)


class Pinger:
    """Asks a control socket for its version every ``period`` seconds: its event loop."""

    def __init__(self, sock: Path | str, period: float = 0.05, timeout: float = 60.0) -> None:
        self.sock = sock
        self.timeout = timeout
        self.answers: list[tuple[float, bool]] = []
        """Each request's time, and whether it was answered."""
        self._every = Every(period, self._ping)

    def _ping(self) -> None:
        started = time.monotonic()
        try:
            request(self.sock, VERSION, self.timeout)
            answered = True
        except ClientError:
            answered = False
        self.answers.append((time.monotonic() - started, answered))

    @property
    def worst(self) -> float:
        """The longest a request took, answered or not (seconds)."""
        return max((took for took, _ in self.answers), default=0.0)

    def stop(self, wait: float | None = None) -> float:
        """Stop, once the request under way has ended (or after ``wait`` seconds,
        leaving it to end alone); the worst time."""
        self._every.stop(self.timeout + 5 if wait is None else wait)
        return self.worst


# ------------------------------------------------------------ memory


def status_kb(field: str, pid: int | str = "self") -> int:
    """A ``VmXXX`` line of /proc/PID/status, in kB (0 when it has none)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def reset_peak(pid: int | str = "self") -> str:
    """Reset the peak RSS through clear_refs; the field that now reads the peak.

    ``VmHWM`` once reset, ``VmRSS`` (a reading, not a peak) when it cannot be.
    """
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return "VmRSS"
    return "VmHWM"


def alive(pid: int) -> bool:
    """Running: a zombie waiting for its reaper is not."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


# ------------------------------------------------------------ a daemon


class Proc:
    """One ``aiobfd`` process, its control socket ``TMP/NAME.sock`` and log ``TMP/NAME.log``.

    ``args`` follow ``python -m aiobfd``; ``--control-socket`` is added unless
    ``socket_arg`` is false (a configuration file names the socket).  Its
    stdout goes to the log too unless ``stdout`` (a descriptor) says otherwise.  The
    constructor returns once the daemon answers (SystemExit if it exits).
    """

    def __init__(
        self,
        tmp: Path,
        name: str,
        args: list[str],
        *,
        socket_arg: bool = True,
        env: dict[str, str] | None = None,
        cpus: set[int] | None = None,
        stdout: int | None = None,
    ) -> None:
        self.name = name
        self.sock = tmp / f"{name}.sock"
        self.log = tmp / f"{name}.log"
        extra = ["--control-socket", str(self.sock)] if socket_arg else []
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [*AIOBFD, *args, *extra],
                stdout=out if stdout is None else stdout,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=None if cpus is None else lambda: os.sched_setaffinity(0, cpus),
            )
        try:
            wait_for(self.answers, f"{name} to answer", 20)
        except BaseException:
            self.proc.kill()
            self.proc.wait()
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def answers(self) -> bool:
        if self.proc.poll() is not None:
            raise SystemExit(f"{self.name} exited:\n{self.text()}")
        try:
            request(self.sock, VERSION, 1)
        except ClientError:
            return False
        return True

    def text(self) -> str:
        """Its log so far."""
        return self.log.read_text(errors="replace")

    def session(self, remote: str, timeout: float = 60.0) -> Json:
        """``show session`` of its session to ``remote`` (ClientError without an answer)."""
        answer = request(self.sock, {"command": "show session", "peer": remote}, timeout)
        info: Json = answer["session"]
        return info

    def session_or_empty(self, remote: str, timeout: float) -> Json:
        """The same, {} when there is no answer within ``timeout``."""
        try:
            return self.session(remote, timeout)
        except ClientError:
            return {}

    def cpu_s(self) -> float:
        """User and system CPU time so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def run_delay_s(self) -> float:
        """Time its threads waited for a CPU (schedstat), in seconds."""
        total = 0
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            with contextlib.suppress(OSError):
                total += int((task / "schedstat").read_text().split()[1])
        return total / 1e9

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def rss_kb(self) -> int:
        return status_kb("VmRSS", self.pid)

    def terminate(self, timeout: float) -> float | None:
        """SIGTERM; seconds until it exited, None when it still runs after ``timeout``."""
        if self.proc.poll() is not None:
            return 0.0
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        return time.monotonic() - started

    def stop(self, timeout: float = 20.0) -> float:
        """SIGTERM, SIGKILL after ``timeout``; seconds until it was gone."""
        started = time.monotonic()
        if self.terminate(timeout) is None:
            self.proc.kill()
            self.proc.wait()
        return time.monotonic() - started


# ------------------------------------------------------------ the pair


def sessions(a: Proc, b: Proc, timeout: float = 60.0) -> tuple[Json, Json]:
    """The pair's session as A sees it, and as B does."""
    return a.session(B, timeout), b.session(A, timeout)


def downs(info: Json) -> int:
    """Down events a session counted."""
    return int(info["counters"]["session_down"])


def flaps(a_info: Json, b_info: Json, before: tuple[int, int] = (0, 0)) -> Json:
    """Down events of either side since ``before`` (their counts then), and the states now."""
    return {
        "a_session_down": downs(a_info) - before[0],
        "b_session_down": downs(b_info) - before[1],
        "a_state": a_info["state"],
        "b_state": b_info["state"],
    }


def rx_gaps(a_info: Json, b_info: Json) -> Json:
    """The largest gap between received packets each side counted while Up (ms)."""
    return {"a_from_b": a_info["max_rx_gap_ms"], "b_from_a": b_info["max_rx_gap_ms"]}


@contextlib.contextmanager
def pair(
    start_a: Callable[[], Proc], start_b: Callable[[], Proc], b_first: bool = False
) -> Iterator[tuple[Proc, Proc]]:
    """A and B started (B first on request), the session Up on both sides and
    the Polls over; both stopped at the end, the last started first."""
    started: list[Proc] = []
    try:
        for start in (start_b, start_a) if b_first else (start_a, start_b):
            started.append(start())
        a, b = reversed(started) if b_first else started
        wait_for(lambda: a.session(B)["state"] == "up", "Up", 20)
        wait_for(lambda: b.session(A)["state"] == "up", "Up", 20)
        wait_for(lambda: not a.session(B)["poll_active"], "polls to end", 20)
        yield a, b
    finally:
        for proc in reversed(started):
            proc.stop()


# ------------------------------------------------------------ the wire


def pair_capture() -> socket.socket:
    """A non-blocking packet socket on lo that sees only the pair's packets
    (A <-> B), stamped by the kernel as they are sent."""
    ip_a, ip_b = (int.from_bytes(socket.inet_aton(x), "big") for x in (A, B))
    code = [  # classic BPF over the (all-zero) Ethernet header of lo
        (0x28, 0, 0, 12),  # ldh [12]: EtherType
        (0x15, 0, 10, 0x0800),  # IPv4, else drop
        (0x30, 0, 0, 23),  # ldb [23]: protocol
        (0x15, 0, 8, 17),  # UDP, else drop
        (0x20, 0, 0, 26),  # ld [26]: source
        (0x15, 1, 0, ip_a),  # A: check the destination is B
        (0x15, 2, 5, ip_b),  # B: check the destination is A; else drop
        (0x20, 0, 0, 30),  # ld [30]: destination
        (0x15, 2, 3, ip_b),
        (0x20, 0, 0, 30),
        (0x15, 0, 1, ip_a),
        (0x06, 0, 0, 0xFFFF),  # accept
        (0x06, 0, 0, 0),  # drop
    ]
    prog = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *i) for i in code))
    # (SO_ATTACH_FILTER copies the program: the buffer need not outlive the call.)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    sock.setsockopt(
        socket.SOL_SOCKET, SO_ATTACH_FILTER, struct.pack("HL", len(code), ctypes.addressof(prog))
    )
    sock.bind(("lo", 0))
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.setblocking(False)
    return sock


class SendGaps:
    """The largest gap between each daemon's packets of the pair as they left.

    Whatever either daemon believes, this is when its packets went: call
    :meth:`read` whenever :attr:`sock` is readable.
    """

    def __init__(self) -> None:
        self.sock = pair_capture()
        self._last: dict[bytes, float] = {}
        self._gaps: dict[bytes, float] = {}

    def read(self, most: int = 256) -> None:
        """Take up to ``most`` packets waiting (lo shows each twice: the outgoing one counts)."""
        for _ in range(most):
            try:
                frame, anc, _flags, addr = self.sock.recvmsg(64, 64)
            except BlockingIOError:
                return
            if addr[2] != PACKET_OUTGOING:
                continue
            stamp = time.time()
            for level, kind, value in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = struct.unpack("qq", value[:16])
                    stamp = sec + nsec / 1e9
            src = frame[26:30]
            if src in self._last:
                self._gaps[src] = max(self._gaps.get(src, 0.0), stamp - self._last[src])
            self._last[src] = stamp

    def ms(self, sender: str) -> float:
        """The largest gap between the packets ``sender`` (A or B) sent, in ms."""
        return round(self._gaps.get(socket.inet_aton(sender), 0.0) * 1000, 1)
