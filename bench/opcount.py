"""Interpreter work a packet: bytecodes executed per packet sent and received.

CPU figures of the scale bench move by 10 % from run to run on a shared VM,
more than a change to the packet path's Python makes.  The number of
bytecodes the interpreter executes for each packet does not: this runs two
daemons in one event loop over loopback (one local address, N remotes on one
side; N local addresses on the other), waits until every session is Up and
quiet, then counts, with ``sys.settrace`` opcode events, every bytecode
executed during a window, and divides by the packets both daemons sent and
received in it.  C code (system calls, ``bisect``, the event loop's selector)
counts as the one bytecode that calls it: this measures the Python, which is
what stands between the daemon and its floor (docs/performance.md).

    .venv/bin/python bench/opcount.py -n 200 -i 1000 -d 3 [--top 25]

Tracing slows the interpreter some fifty times: the interval must leave room
for that (200 sessions @ 1 s do).  Loopback only, 127.0.0.0/8, ports 13784
and up; no root needed.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import socket
import sys
import time
from collections import Counter
from types import CodeType, FrameType
from typing import Any

from aiobfd.config import PeerSpec
from aiobfd.engine import Daemon
from aiobfd.protocol.packet import State
from aiobfd.protocol.session import SessionConfig

PORT = 13784
MULTIHOP_PORT = 14784


def specs(n: int, interval_ms: int) -> tuple[list[PeerSpec], list[PeerSpec]]:
    cfg = SessionConfig(
        desired_min_tx_us=interval_ms * 1000, required_min_rx_us=interval_ms * 1000, detect_mult=3
    )
    local = "127.0.0.1"
    base = int(ipaddress.IPv4Address("127.1.0.1"))
    remotes = [str(ipaddress.IPv4Address(base + i)) for i in range(n)]
    ours = [PeerSpec(r, local, socket.AF_INET, session=cfg) for r in remotes]
    theirs = [PeerSpec(local, r, socket.AF_INET, session=cfg) for r in remotes]
    return ours, theirs


class OpcodeCounter:
    """Counts bytecodes by code object while installed."""

    def __init__(self, lines_of: str | None = None) -> None:
        self.by_code: Counter[CodeType] = Counter()
        self.by_line: Counter[int] = Counter()
        """Bytecodes by line of the function named ``lines_of`` (its qualified name)."""
        self._lines_of = lines_of

    def _local(self, frame: FrameType, event: str, arg: Any) -> Any:
        if event == "opcode":
            code = frame.f_code
            self.by_code[code] += 1
            if code.co_qualname == self._lines_of:
                self.by_line[frame.f_lineno] += 1
        return self._local

    def _global(self, frame: FrameType, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        return self._local

    def __enter__(self) -> OpcodeCounter:
        sys.settrace(self._global)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.settrace(None)


def packets(daemon: Daemon) -> int:
    return sum(
        p.session.counters.packets_in + p.session.counters.packets_out
        for p in daemon.peers.values()
    )


def flaps(daemon: Daemon) -> int:
    return sum(p.session.counters.session_down for p in daemon.peers.values())


async def measure(
    n: int,
    interval_ms: int,
    duration: float,
    settle: float,
    lines_of: str | None = None,
    *,
    count: bool = True,
) -> dict[str, Any]:
    ours, theirs = specs(n, interval_ms)
    a = Daemon(ours, port=PORT, multihop_port=MULTIHOP_PORT)
    b = Daemon(theirs, port=PORT, multihop_port=MULTIHOP_PORT)
    await a.start()
    await b.start()
    try:
        deadline = time.monotonic() + 60
        while not all(p.session.state is State.UP for d in (a, b) for p in d.peers.values()):
            if time.monotonic() > deadline:
                raise SystemExit("not all sessions came Up within 60 s")
            await asyncio.sleep(0.2)
        await asyncio.sleep(settle)  # the Poll Sequences after Up, the cohorts form
        before = packets(a) + packets(b)
        ups = flaps(a) + flaps(b)
        counter = OpcodeCounter(lines_of)
        t0 = os.times()
        if count:
            with counter:
                await asyncio.sleep(duration)
        else:
            await asyncio.sleep(duration)
        t1 = os.times()
        moved = packets(a) + packets(b) - before
        return {
            "sessions": n,
            "interval_ms": interval_ms,
            "window_s": duration,
            "packets": moved,
            "flaps": flaps(a) + flaps(b) - ups,
            "bytecodes": sum(counter.by_code.values()),
            "by_code": counter.by_code,
            "by_line": counter.by_line,
            "user_s": t1.user - t0.user,
            "sys_s": t1.system - t0.system,
        }
    finally:
        a.close()
        b.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--sessions", type=int, default=200)
    ap.add_argument("-i", "--interval", type=int, default=1000, help="ms")
    ap.add_argument("-d", "--duration", type=float, default=3.0, help="seconds counted")
    ap.add_argument("--settle", type=float, default=3.0, help="seconds after all Up")
    ap.add_argument("--top", type=int, default=20, help="functions listed")
    ap.add_argument("--lines", metavar="QUALNAME", help="also by line of this function")
    ap.add_argument(
        "--cpu",
        action="store_true",
        help="no counting: the process's CPU time a packet instead (both daemons, with the kernel's share)",
    )
    ap.add_argument("--results", help="append the figures to this JSON lines file")
    args = ap.parse_args()
    r = asyncio.run(
        measure(
            args.sessions,
            args.interval,
            args.duration,
            args.settle,
            args.lines,
            count=not args.cpu,
        )
    )
    if args.cpu:
        packets_ = max(1, r["packets"])
        print(
            f"{r['sessions']} @ {r['interval_ms']} ms, {r['window_s']} s: {r['packets']} packets, "
            f"user {r['user_s'] / packets_ * 1e6:.2f} us, sys {r['sys_s'] / packets_ * 1e6:.2f} us "
            f"a packet, {r['flaps']} flaps"
        )
        if args.results:
            keep = ("sessions", "interval_ms", "window_s", "packets", "flaps", "user_s", "sys_s")
            with open(args.results, "a") as f:
                f.write(json.dumps({k: r[k] for k in keep}) + "\n")
        return
    per = r["bytecodes"] / max(1, r["packets"])
    print(
        f"{r['sessions']} @ {r['interval_ms']} ms, {r['window_s']} s: {r['packets']} packets "
        f"sent and received, {r['bytecodes']} bytecodes, {per:.1f} a packet, "
        f"{r['flaps']} flaps"
    )
    for code, count in r["by_code"].most_common(args.top):
        name = f"{code.co_qualname} ({code.co_filename.rsplit('/', 1)[-1]}:{code.co_firstlineno})"
        print(f"{count / max(1, r['packets']):8.1f}  {name}")
    if r["by_line"]:
        print(f"by line of {args.lines}:")
        for line, count in sorted(r["by_line"].items()):
            print(f"{count / max(1, r['packets']):8.1f}  {line}")


if __name__ == "__main__":
    main()
