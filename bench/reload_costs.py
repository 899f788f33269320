"""What a reload costs the event loop in one go, with N sessions running.

One daemon in this process holds N sessions on loopback (nothing answers
them: only their transmit sockets and the listener are open).  Measured, each
``--rounds`` times:

* the final pass of a reload: over every session (``Daemon.apply_config``,
  before session 12) and over the journal of what changed meanwhile
  (``Daemon.apply_config_to`` with nothing changed);
* ``os.fork()`` of this process, which the reload's reader does (the loop
  stands still meanwhile);
* building a ``{key: spec}`` of the N specs (one of the reload's passes):
  before a fork, while the child lives, and after a child came and went (the
  copy-on-write faults of the pages the pass writes to).

    .venv/bin/python bench/reload_costs.py -n 9000

Loopback only (127.0.0.1 to 127.1.0.0/16), ports 13784/14784; run it inside
``unshare -n`` (with ``lo`` up) to leave the host's ports alone.  Needs an
RLIMIT_NOFILE above N.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import gc
import ipaddress
import os
import socket
import statistics
import time
from collections.abc import Callable

from aiobfd.config import PeerSpec
from aiobfd.engine import Daemon, reconcile
from aiobfd.protocol.session import SessionConfig


def ms(seconds: list[float]) -> str:
    return f"median {1000 * statistics.median(seconds):.3f} ms, max {1000 * max(seconds):.3f} ms"


def timed(work: Callable[[], object]) -> float:
    t = time.perf_counter()
    work()
    return time.perf_counter() - t


def fork_child(live_s: float) -> tuple[int, float]:
    """Fork a child that lives ``live_s``; its pid and the parent's seconds in fork()."""
    t = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        time.sleep(live_s)
        os._exit(0)
    return pid, time.perf_counter() - t


async def measure(n: int, rounds: int, settle_s: float) -> None:
    cfg = SessionConfig(desired_min_tx_us=1_000_000, required_min_rx_us=1_000_000, detect_mult=3)
    base = int(ipaddress.IPv4Address("127.1.0.1"))
    specs = [
        PeerSpec(str(ipaddress.IPv4Address(base + i)), "127.0.0.1", socket.AF_INET, session=cfg)
        for i in range(n)
    ]
    daemon = Daemon(specs, port=13784, multihop_port=14784)
    await daemon.start()
    gc.freeze()  # as the daemon does after its start
    try:
        full, journal = [], []
        for _ in range(rounds):
            # A reload of an unchanged file: equal specs, new objects, compared
            # a slice at a time first (the unchanged peers take them).
            new = [dataclasses.replace(spec) for spec in specs]
            reconcile.compare(daemon.peers, new)
            full.append(timed(functools.partial(daemon.apply_config, new)))
            new = [dataclasses.replace(spec) for spec in specs]
            wanted = {spec.key: spec for spec in new}
            reconcile.compare(daemon.peers, new)
            journal.append(timed(functools.partial(daemon.apply_config_to, wanted, set())))
        print(f"{n} sessions, final pass over every session: {ms(full)}")
        print(f"{n} sessions, final pass over the journal:   {ms(journal)}")

        def by_key() -> object:
            return {spec.key: spec for spec in specs}

        forks, before, alive, after = [], [], [], []
        for _ in range(rounds):
            # The sessions run a while (as between two reloads): their pages
            # are written again.
            await asyncio.sleep(settle_s)
            before.append(timed(by_key))
            pid, took = fork_child(2.0)
            forks.append(took)
            alive.append(timed(by_key))
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pid, took = fork_child(0.0)
            os.waitpid(pid, 0)
            after.append(timed(by_key))
        print(f"{n} sessions, os.fork(): {ms(forks)}, the first {1000 * forks[0]:.3f} ms")
        print(f"{n} specs by key, before a fork:       {ms(before)}")
        print(f"{n} specs by key, the child alive:     {ms(alive)}")
        print(f"{n} specs by key, after a child ended: {ms(after)}")
    finally:
        daemon.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--sessions", type=int, default=9000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--settle", type=float, default=1.0, help="seconds between two forks")
    args = ap.parse_args()
    asyncio.run(measure(args.sessions, args.rounds, args.settle))


if __name__ == "__main__":
    main()
