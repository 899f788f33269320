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
import functools
import gc
import json
import logging
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from adversarial_pair import (
    A,
    B,
    ClientError,
    Json,
    Pinger,
    Proc,
    downs,
    enter_namespace,
    request,
    sessions,
)
from adversarial_pair import pair as established

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


# ------------------------------------------------------------------ namespaces


def private_resolver(tmp: Path) -> socket.socket:
    """A resolv.conf naming a DNS server that never answers."""
    conf = tmp / "resolv.conf"
    conf.write_text("nameserver 127.0.0.1\noptions timeout:30 attempts:1\n")
    subprocess.run(["mount", "--bind", str(conf), "/etc/resolv.conf"], check=True)
    blackhole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blackhole.bind(("127.0.0.1", 53))  # queries queue here, unread
    return blackhole


# ------------------------------------------------------------------ files


def peer(remote: str, *settings: str) -> list[str]:
    """A ``[[peers]]`` table of A's file."""
    return ["[[peers]]", f'remote = "{remote}"', 'local = "127.0.0.1"', *settings, ""]


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
        *peer(B),
    ]
    slow = ("rx_interval_ms = 1000", "tx_interval_ms = 1000")
    for i in range(extra_peers):
        lines += peer(f"127.1.{i // 250}.{i % 250 + 1}", *slow)
    if error:
        lines += peer("127.2.0.1", "detect_mult = 0")
    return "\n".join(lines) + tail


# ------------------------------------------------------------------ cases


def reload_control(a: Proc, timeout: float) -> str:
    started = time.monotonic()
    try:
        request(a.sock, {"command": "reload"}, timeout)
        outcome, reason = "accepted", ""
    except ClientError as exc:  # refused, or no answer in time
        if time.monotonic() - started >= timeout:
            return f"no answer within {timeout:.0f} s"
        outcome, reason = "refused", str(exc)[:120]
    took = time.monotonic() - started
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
    before = sessions(a, b)
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
    after = sessions(a, b)
    flaps = [downs(after[i]) - downs(before[i]) for i in (0, 1)]
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
    (tmp / "a.toml").write_text(config_text(tmp / "a.sock", running))
    timers = ["-r", "50", "-t", "50", "-m", "3", "--metrics-port", "0", "-l", "INFO"]
    extra = ["--realtime-priority", str(realtime)] if realtime else []
    a_args = ["--config", str(tmp / "a.toml"), *extra, "-l", "INFO"]
    with established(
        functools.partial(Proc, tmp, "a", a_args, socket_arg=False),
        functools.partial(Proc, tmp, "b", [B, A, *timers]),
        b_first=True,
    ) as (a, b):
        yield a, b


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
    enter_namespace(mount=True)
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
