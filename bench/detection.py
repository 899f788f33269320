"""How late is a silent peer declared Down?  (issue: "no later than 2 ms after
the detection time has passed, however many sessions exist")

Runs N sessions over loopback: this process holds the daemon under test on
127.0.0.1, a child process holds N peers on 127.0.2.1... (one address each).
Once all are Up the child is killed with SIGKILL, so nothing says goodbye, and
for every session we compute

    lateness = (time of our Down event) - (last packet received) - (Detection Time)

from the daemon's own monotonic timestamps.  Prints the distribution.

    python bench/detection.py --sessions 100 --interval 50 --mult 3
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import statistics
import subprocess
import sys
import time

from aiobfd.config import PeerSpec
from aiobfd.engine import Daemon, Peer
from aiobfd.protocol.events import Event, StateChanged
from aiobfd.protocol.packet import State
from aiobfd.protocol.session import SessionConfig

HUB = "127.0.0.1"


def spoke_address(i: int) -> str:
    return f"127.0.{2 + i // 250}.{1 + i % 250}"


def config(interval_ms: int, mult: int) -> SessionConfig:
    us = interval_ms * 1000
    return SessionConfig(desired_min_tx_us=us, required_min_rx_us=us, detect_mult=mult)


async def run_spokes(n: int, interval_ms: int, mult: int) -> None:
    peers = [
        PeerSpec(HUB, spoke_address(i), socket.AF_INET, session=config(interval_ms, mult))
        for i in range(n)
    ]
    daemon = Daemon(peers)
    await daemon.start()
    print("ready", flush=True)
    await asyncio.Event().wait()


async def run_hub(args: argparse.Namespace) -> int:
    n = args.sessions
    peers = [
        PeerSpec(spoke_address(i), HUB, socket.AF_INET, session=config(args.interval, args.mult))
        for i in range(n)
    ]
    daemon = Daemon(peers)
    downs: list[StateChanged] = []
    up: set[str] = set()

    def listener(peer: Peer, event: Event) -> None:
        if isinstance(event, StateChanged):
            if event.new_state is State.UP:
                up.add(peer.spec.remote)
            elif event.old_state is State.UP:
                downs.append(event)

    daemon.add_listener(listener)
    await daemon.start()
    child = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--spokes",
            "--sessions",
            str(n),
            "--interval",
            str(args.interval),
            "--mult",
            str(args.mult),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while len(up) < n:
            if time.monotonic() > deadline:
                print(f"only {len(up)}/{n} sessions came up", file=sys.stderr)
                return 1
            await asyncio.sleep(0.1)
        await asyncio.sleep(args.settle)
        downs.clear()
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        deadline = time.monotonic() + 10
        while len(downs) < n and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        if child.poll() is None:
            child.kill()
        daemon.close()
    late = sorted(
        (e.at_us - e.last_rx_us - e.detection_time_us) / 1000
        for e in downs
        if e.last_rx_us is not None
    )
    if not late:
        print("no Down events seen", file=sys.stderr)
        return 1
    q = statistics.quantiles(late, n=100) if len(late) > 1 else [late[0]] * 99
    print(
        f"sessions={n} interval={args.interval}ms mult={args.mult} detect={args.interval * args.mult}ms "
        f"downs={len(late)}/{n}"
    )
    print(
        f"lateness after Detection Time (ms): min={late[0]:.3f} median={statistics.median(late):.3f} "
        f"p95={q[94]:.3f} p99={q[98]:.3f} max={late[-1]:.3f}"
    )
    return 0


def main() -> int:
    logging.basicConfig(level=logging.ERROR)  # state changes are counted, not printed
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--interval", type=int, default=50, help="ms")
    parser.add_argument("--mult", type=int, default=3)
    parser.add_argument("--settle", type=float, default=2.0, help="seconds Up before the kill")
    parser.add_argument("--spokes", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.spokes:
        asyncio.run(run_spokes(args.sessions, args.interval, args.mult))
        return 0
    return asyncio.run(run_hub(args))


if __name__ == "__main__":
    raise SystemExit(main())
