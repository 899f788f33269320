"""Hostile configuration input, against an established pair of daemon processes.

Two ``aiobfd`` processes over loopback: A runs from a configuration file
(127.0.0.1), B from the command line (127.0.0.2), one session at 50 ms x 3.
Once it is Up, A is given bad input and we report what that cost the session:

* ``big-sighup`` / ``big-control``: a file of ``--peers`` peers (the pair, then
  127.1.x.y) whose last peer has an error, reloaded ``--reloads`` times by
  SIGHUP / by the control socket's ``reload``: every reload must be refused;
* ``resolver-sighup`` / ``resolver-control``: the file names a peer by a host
  name and the resolver never answers (a DNS server on 127.0.0.1 that reads
  nothing: the bench runs in a private network and mount namespace with its
  own ``/etc/resolv.conf``, ``options timeout:30 attempts:1``);
* ``add-remove``: a valid file of ``--peers`` peers, reloaded by SIGHUP (the
  sessions are added), then the first file again (they are removed);
* ``fifo``: a key file that is a FIFO, on a second peer, reloaded by SIGHUP.
  If A hangs in ``open()``, the bench opens the FIFO for writing after
  ``--fifo-wait`` seconds to set it free;
* ``idle``: nothing for ``--idle`` seconds: what the pair (and ``--running``)
  shows without any bad input, to compare with;
* ``apply``: in this process, the time ``Daemon.apply_config`` holds the event
  loop for ``--peers`` running sessions when the new file changes one peer's
  timers, then every peer's (a reload applies its result on the loop).

``--realtime N`` starts A with ``--realtime-priority N``.  ``--running N``
starts A with N more sessions (127.1.x.y at 1 s, nothing
answers them: A sends N packets a second), so that the reloads meet a busy
event loop, as on a host that runs thousands of sessions.

Figures per case: Down events of the pair on either side (flaps), the largest
gap between received packets on either side while Up (a stalled A shows on
B), the worst answer time of A's control socket to ``version`` asked every
50 ms meanwhile (a frozen event loop does not answer), and how the reload
ended.  Run it as root (it makes its own namespaces); to compare with an
older tree::

    git worktree add /tmp/inputs-before HEAD
    PYTHONPATH=/tmp/inputs-before/src python bench/adversarial_inputs.py
    python bench/adversarial_inputs.py --case big-sighup --reloads 20
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

AIOBFD = [sys.executable, "-m", "aiobfd"]
CASES = (
    "big-sighup",
    "big-control",
    "resolver-sighup",
    "resolver-control",
    "fifo",
    "add-remove",
    "idle",
    "apply",
)
HOST_NAME = "bfd-peer.example.net"
"""A name in no /etc/hosts: asked of the DNS server that never answers."""

Json = dict[str, Any]


# ------------------------------------------------------------------ namespaces


def enter_namespaces() -> None:
    """Re-run this script in private network and mount namespaces (as root)."""
    if os.environ.get("AIOBFD_BENCH_NS") == "1":
        return
    if os.geteuid() != 0:
        raise SystemExit("run as root: the bench makes a network and a mount namespace")
    os.environ["AIOBFD_BENCH_NS"] = "1"
    unshare = shutil.which("unshare") or "unshare"
    os.execvp(unshare, [unshare, "-n", "-m", "--", sys.executable, *sys.argv])


def private_resolver(tmp: Path) -> socket.socket:
    """Loopback up, and a resolv.conf naming a DNS server that never answers."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    conf = tmp / "resolv.conf"
    conf.write_text("nameserver 127.0.0.1\noptions timeout:30 attempts:1\n")
    subprocess.run(["mount", "--bind", str(conf), "/etc/resolv.conf"], check=True)
    blackhole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blackhole.bind(("127.0.0.1", 53))  # queries queue here, unread
    return blackhole


# ------------------------------------------------------------------ files


def config_text(control: Path, extra_peers: int = 0, error: bool = False, tail: str = "") -> str:
    lines = [
        "[daemon]",
        "metrics_port = 0",
        f'control_socket = "{control}"',
        "",
        "[defaults]",
        "rx_interval_ms = 50",
        "tx_interval_ms = 50",
        "detect_mult = 3",
        "",
        "[[peers]]",
        'remote = "127.0.0.2"',
        'local = "127.0.0.1"',
        "",
    ]
    for i in range(extra_peers):
        lines += [
            "[[peers]]",
            f'remote = "127.1.{i // 250}.{i % 250 + 1}"',
            'local = "127.0.0.1"',
            "rx_interval_ms = 1000",
            "tx_interval_ms = 1000",
            "",
        ]
    if error:
        lines += ["[[peers]]", 'remote = "127.2.0.1"', 'local = "127.0.0.1"', "detect_mult = 0", ""]
    return "\n".join(lines) + tail


# ------------------------------------------------------------------ daemons


def request(path: Path, payload: Json, timeout: float) -> Json:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(json.dumps(payload).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            buf += chunk
    answer: Json = json.loads(buf)
    return answer


class Proc:
    def __init__(self, tmp: Path, name: str, args: list[str], sock: Path) -> None:
        self.name = name
        self.sock = sock
        self.log = tmp / f"{name}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [*AIOBFD, *args, "-l", "INFO"], stdout=out, stderr=subprocess.STDOUT
            )
        wait_for(self.answers, f"{name} to answer", 20)

    def answers(self) -> bool:
        if self.proc.poll() is not None:
            raise SystemExit(f"{self.name} exited:\n{self.text()}")
        try:
            request(self.sock, {"command": "version"}, 1)
        except OSError:
            return False
        return True

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def session(self, remote: str) -> Json:
        info: Json = request(self.sock, {"command": "show session", "peer": remote}, 60)["session"]
        return info

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait_for(probe: Callable[[], Any], what: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.02)


class Pinger:
    """Asks A's control socket for its version every 50 ms; the worst answer time."""

    def __init__(self, sock: Path) -> None:
        self.sock = sock
        self.worst = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            with contextlib.suppress(OSError, ValueError):
                request(self.sock, {"command": "version"}, 60)
            self.worst = max(self.worst, time.monotonic() - started)
            self._stop.wait(0.05)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join(65)
        return self.worst


# ------------------------------------------------------------------ cases


def snapshot(a: Proc, b: Proc) -> tuple[Json, Json]:
    return a.session("127.0.0.2"), b.session("127.0.0.1")


def reload_control(a: Proc, timeout: float) -> str:
    started = time.monotonic()
    try:
        answer = request(a.sock, {"command": "reload"}, timeout)
    except TimeoutError:
        return f"no answer within {timeout:.0f} s"
    took = time.monotonic() - started
    outcome = "refused" if not answer.get("ok") else "accepted"
    reason = str(answer.get("error", ""))[:120]
    return f"{outcome} after {took:.2f} s {reason}".rstrip()


def reload_signal(a: Proc, timeout: float) -> str:
    """SIGHUP, then wait for the log to say how it ended."""
    before = count_outcomes(a.text())
    started = time.monotonic()
    a.proc.send_signal(signal.SIGHUP)
    while time.monotonic() - started < timeout:
        now = count_outcomes(a.text())
        if now != before:
            took = time.monotonic() - started
            kind = "refused" if now[0] > before[0] else "accepted"
            return f"{kind} after {took:.2f} s (log)"
        time.sleep(0.01)
    return f"no outcome in the log within {timeout:.0f} s"


def count_outcomes(text: str) -> tuple[int, int]:
    return text.count("reload refused"), text.count("configuration reloaded")


def run_case(case: str, args: argparse.Namespace, tmp: Path, a: Proc, b: Proc) -> Json:
    path = tmp / "a.toml"
    good = path.read_text()
    outcomes: list[str] = []
    fifo: Path | None = None
    before = snapshot(a, b)
    pinger = Pinger(a.sock)
    started = time.monotonic()
    try:
        if case.startswith("big"):
            path.write_text(config_text(a.sock, args.peers - 1, error=True))
            for _ in range(args.reloads):
                if case == "big-sighup":
                    outcomes.append(reload_signal(a, 60))
                else:
                    outcomes.append(reload_control(a, 60))
                time.sleep(0.3)
        elif case == "idle":
            time.sleep(args.idle)
        elif case == "add-remove":
            path.write_text(config_text(a.sock, args.peers - 1))
            outcomes.append(reload_signal(a, 120))
            time.sleep(1.0)
            path.write_text(good)
            outcomes.append(reload_signal(a, 120))
        elif case.startswith("resolver"):
            tail = f'[[peers]]\nremote = "{HOST_NAME}"\nlocal = "127.0.0.1"\n'
            path.write_text(config_text(a.sock, args.running, tail=tail))
            if case == "resolver-sighup":
                outcomes.append(reload_signal(a, args.resolver_wait))
            else:
                outcomes.append(reload_control(a, args.resolver_wait))
        else:
            fifo = tmp / "fifo.key"
            with contextlib.suppress(FileNotFoundError):
                fifo.unlink()
            os.mkfifo(fifo)
            tail = (
                '[[peers]]\nremote = "127.0.0.3"\nlocal = "127.0.0.1"\n'
                f"auth = {{type = 'simple', keys = [{{id = 1, file = '{fifo}'}}]}}\n"
            )
            path.write_text(config_text(a.sock, args.running, tail=tail))
            outcomes.append(reload_signal(a, args.fifo_wait))
            if outcomes[-1].startswith("no outcome"):
                release(fifo)
                outcomes.append("set free: " + reload_signal_wait(a, 30))
    finally:
        path.write_text(good)
    took = time.monotonic() - started
    time.sleep(1.0)  # the pings, and a flap's Down, come through
    worst = pinger.stop()
    after = snapshot(a, b)
    flaps = [
        after[i]["counters"]["session_down"] - before[i]["counters"]["session_down"] for i in (0, 1)
    ]
    return {
        "case": case,
        "flaps_a_b": flaps,
        "max_rx_gap_ms_a_b": [after[0]["max_rx_gap_ms"], after[1]["max_rx_gap_ms"]],
        "state_a_b": [after[0]["state"], after[1]["state"]],
        "worst_control_answer_ms": round(worst * 1000, 1),
        "took_s": round(took, 2),
        "outcomes": summary(outcomes) if case.startswith("big") else outcomes,
        "slowest_outcome": max(outcomes, key=seconds_of) if outcomes else "",
    }


def summary(outcomes: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for outcome in outcomes:
        word = outcome.split(" ", 1)[0]
        counts[word] = counts.get(word, 0) + 1
    return counts


def seconds_of(outcome: str) -> float:
    with contextlib.suppress(ValueError, IndexError):
        return float(outcome.split(" after ")[1].split(" s")[0])
    return float("inf")


def release(fifo: Path) -> None:
    """Open the FIFO for writing and close it: a reader stuck in open() goes on (EOF)."""
    with contextlib.suppress(OSError):
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)


def reload_signal_wait(a: Proc, timeout: float) -> str:
    """The outcome of a reload already under way."""
    before = count_outcomes(a.text())
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if count_outcomes(a.text()) != before:
            return f"ended after {time.monotonic() - started:.2f} s more"
        time.sleep(0.01)
    return "still no outcome"


def apply_case(n: int) -> Json:
    """The loop time of Daemon.apply_config over n running sessions: one, all, none changed."""
    import asyncio
    from dataclasses import replace

    from aiobfd.config import PeerSpec
    from aiobfd.engine import Daemon
    from aiobfd.protocol.session import SessionConfig

    def specs(tx_ms: int, first_tx_ms: int | None = None) -> list[PeerSpec]:
        out = []
        for i in range(n):
            tx = first_tx_ms if i == 0 and first_tx_ms is not None else tx_ms
            cfg = SessionConfig(desired_min_tx_us=tx * 1000, required_min_rx_us=1_000_000)
            out.append(
                PeerSpec(
                    f"127.1.{i // 250}.{i % 250 + 1}", "127.0.0.1", socket.AF_INET, session=cfg
                )
            )
        return out

    async def measure() -> Json:
        logging.getLogger("aiobfd").setLevel(logging.CRITICAL)  # 5,000 refused sends
        daemon = Daemon(specs(1000))
        await daemon.start()
        gc.freeze()  # as the application does once started
        took: dict[str, list[float]] = {}
        try:
            for _ in range(3):
                for name, new in (
                    ("one_changed", specs(1000, first_tx_ms=900)),
                    ("none_changed", specs(1000, first_tx_ms=900)),
                    ("all_changed", specs(900)),
                    ("back", specs(1000)),
                ):
                    await asyncio.sleep(0.3)
                    started = time.perf_counter()
                    daemon.apply_config([replace(spec) for spec in new])
                    took.setdefault(name, []).append(time.perf_counter() - started)
            await asyncio.sleep(0.3)
            started = time.perf_counter()
            daemon.apply_config([])
            took["all_removed"] = [time.perf_counter() - started]
            await asyncio.sleep(0.3)
            started = time.perf_counter()
            daemon.apply_config(specs(1000))
            took["all_added"] = [time.perf_counter() - started]
        finally:
            daemon.close()
        figures = {f"{k}_ms": [round(v * 1000, 1) for v in vs] for k, vs in took.items()}
        return {"case": "apply", "sessions": n, **figures}

    return asyncio.run(measure())


@contextlib.contextmanager
def pair(tmp: Path, running: int = 0, realtime: int = 0) -> Iterator[tuple[Proc, Proc]]:
    sock_a, sock_b = tmp / "a.sock", tmp / "b.sock"
    (tmp / "a.toml").write_text(config_text(sock_a, running))
    b = Proc(
        tmp,
        "b",
        ["127.0.0.2", "127.0.0.1", "-r", "50", "-t", "50", "-m", "3", "--metrics-port", "0",
         "--control-socket", str(sock_b)],
        sock_b,
    )  # fmt: skip
    a: Proc | None = None
    try:
        extra = ["--realtime-priority", str(realtime)] if realtime else []
        a = Proc(tmp, "a", ["--config", str(tmp / "a.toml"), *extra], sock_a)
        wait_for(lambda: a is not None and a.session("127.0.0.2")["state"] == "up", "Up", 20)
        wait_for(lambda: not a.session("127.0.0.2")["poll_active"], "polls to end", 20)
        yield a, b
    finally:
        if a is not None:
            a.stop()
        b.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=[*CASES, "all"], default="all")
    parser.add_argument("--peers", type=int, default=5000)
    parser.add_argument("--reloads", type=int, default=10)
    parser.add_argument("--running", type=int, default=0, metavar="N")
    parser.add_argument("--idle", type=float, default=10.0, metavar="S")
    parser.add_argument("--realtime", type=int, default=0, metavar="N")
    parser.add_argument("--resolver-wait", type=float, default=40.0)
    parser.add_argument("--fifo-wait", type=float, default=5.0)
    args = parser.parse_args()
    enter_namespaces()
    import aiobfd

    cases = [c for c in CASES if c != "idle"] if args.case == "all" else [args.case]
    print(
        f"aiobfd from {Path(aiobfd.__file__).parent}; {args.peers} peers, "
        f"{args.reloads} reloads, {args.running} more sessions running"
    )
    with tempfile.TemporaryDirectory(prefix="aiobfd-inputs-") as name:
        tmp = Path(name)
        blackhole = private_resolver(tmp)
        try:
            for case in cases:
                if case == "apply":
                    result = apply_case(args.peers)
                else:
                    # A fresh pair each case: a hung daemon must not spoil the next one.
                    with pair(tmp, args.running, args.realtime) as (a, b):
                        result = run_case(case, args, tmp, a, b)
                print(json.dumps(result), flush=True)
        finally:
            blackhole.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
