"""Hooks that misbehave, against an established pair over loopback.

Two daemons in this process (127.0.0.1 <-> 127.0.0.2) at 50 ms x 3; once the
session is Up, 127.0.0.1 runs one hostile ``on_change`` hook per state change
and we report what it cost the daemon:

The hook is ``on_up``: it runs once, as the session comes Up, which must then
stay Up.

* ``output``: the hook writes ``--bytes`` to stdout (``head -c N /dev/zero``);
* ``endless``: the hook writes to stdout until its timeout kills it;
* ``group``: the hook starts ``sleep 30 &`` and sleeps past its timeout;
* ``setsid``: the same, but the background child escapes with ``setsid``
  (still holding the hook's stdout and stderr);
* ``env``: the hook prints whether a variable of the daemon's environment
  (standing for ``--auth-key-env``'s secret) reached it.

Figures: the peak RSS growth of the process (VmHWM after resetting it through
/proc/self/clear_refs), the longest event-loop stall seen by a 5 ms ticker, the
Down events of either side (flaps), and how long the hook run took.

    python bench/adversarial_hooks.py output --bytes 800000000
    python bench/adversarial_hooks.py group --timeout 1
    python bench/adversarial_hooks.py setsid --timeout 1 --loop uvloop
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

from adversarial_pair import alive, reset_peak, status_kb
from aiobfd.config import PeerSpec
from aiobfd.engine import Daemon, Peer
from aiobfd.hooks import HookRunner, Hooks
from aiobfd.protocol.events import Event, StateChanged
from aiobfd.protocol.packet import State
from aiobfd.protocol.session import SessionConfig

SECRET = "AIOBFD_BENCH_SECRET"


def command(args: argparse.Namespace, tmp: Path) -> str:
    if args.case == "output":
        return f"head -c {args.bytes} /dev/zero; echo done >&2"
    if args.case == "endless":
        return "cat /dev/zero"
    if args.case == "group":
        return f"sleep 30 & echo $! > {tmp}/child; sleep 30"
    if args.case == "setsid":
        return f"setsid sleep 30 & echo $! > {tmp}/child; sleep 30"
    return f'echo "secret=${{{SECRET}:-absent}}" > {tmp}/env'


async def run(args: argparse.Namespace) -> None:
    os.environ[SECRET] = "hunter2"
    tmp = Path(tempfile.mkdtemp(prefix="aiobfd-hooks-"))
    ms = 1000
    cfg = SessionConfig(
        desired_min_tx_us=args.interval * ms, required_min_rx_us=args.interval * ms, detect_mult=3
    )
    a = Daemon([PeerSpec("127.0.0.2", "127.0.0.1", socket.AF_INET, session=cfg)])
    b = Daemon([PeerSpec("127.0.0.1", "127.0.0.2", socket.AF_INET, session=cfg)])
    downs: list[str] = []

    def on_event(peer: Peer, ev: Event) -> None:
        if isinstance(ev, StateChanged) and ev.old_state is State.UP:
            downs.append(f"{peer.spec.local}: {ev.diag.label}")

    a.add_listener(on_event)
    b.add_listener(on_event)
    loop = asyncio.get_running_loop()
    stall = 0.0

    async def ticker() -> None:
        nonlocal stall
        while True:
            t = loop.time()
            await asyncio.sleep(0.005)
            stall = max(stall, loop.time() - t - 0.005)

    # The hook runs once, on Up; the session must then stay Up.
    hooks = Hooks(on_up=command(args, tmp), timeout_s=args.timeout)
    runner = HookRunner(a, lambda peer: hooks)
    tick = loop.create_task(ticker())
    base_rss = status_kb("VmRSS")
    peak_field = reset_peak()
    await a.start()
    await b.start()
    session = next(iter(a.peers.values())).session
    while session.state is not State.UP:
        await asyncio.sleep(0.005)
    started = time.monotonic()
    cpu = time.process_time()

    def busy() -> bool:
        return any(
            st.running is not None and not st.running.done() for st in runner._peers.values()
        )

    while busy():
        await asyncio.sleep(0.005)
    took = time.monotonic() - started
    cpu = time.process_time() - cpu
    peak_rss = status_kb(peak_field)
    await asyncio.sleep(1.0)
    tick.cancel()
    print(f"case {args.case} loop {type(loop).__module__}")
    print(f"hook run took {took:.2f} s (timeout {args.timeout} s)")
    print(f"CPU time of this process during the run {cpu:.2f} s")
    print(f"output dropped {runner.output_dropped} bytes")
    print(f"RSS growth {(peak_rss - base_rss) / 1024:.1f} MB ({peak_field})")
    print(f"longest loop stall {stall * 1000:.1f} ms")
    print(f"Down events (flaps): {len(downs)} {downs}")
    print(f"runs {runner.runs} timeouts {runner.timeouts} failures {runner.failures}")
    if args.case in ("group", "setsid"):
        child = int((tmp / "child").read_text())
        print(f"background child {child} alive after the run: {alive(child)}")
        if alive(child):
            os.kill(child, 9)
    if args.case == "env":
        print((tmp / "env").read_text().strip())
    await runner.close()
    a.close()
    b.close()
    await asyncio.sleep(0.1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("case", choices=["output", "endless", "group", "setsid", "env"])
    p.add_argument("--bytes", type=int, default=800_000_000)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--interval", type=int, default=50, help="ms")
    p.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    p.add_argument("--log", action="store_true", help="show the daemon's INFO log lines")
    args = p.parse_args()
    if args.log:
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message).300s")
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(run(args))
    else:
        asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
