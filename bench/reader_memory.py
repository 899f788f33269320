"""What the reload reader forked at start costs in memory, beside the daemon.

Starts an :class:`~aiobfd.app.Application` in this process from a file of N
peers on loopback (nothing answers them), which forks its reader
(``aiobfd-reader``, see ``aiobfd.reload_reader``), and reads both processes'
``/proc/PID/smaps_rollup`` a few seconds later and again after one reload:
RSS, PSS (shared pages split between the two) and private pages, in MB.  The
reader's private pages are what it adds: the configuration it keeps and the
pages the daemon has written to since the fork (after which they are the
reader's alone).

    .venv/bin/python bench/reader_memory.py -n 9000

Loopback only (127.0.0.1 to 127.1.0.0/16); run it inside ``unshare -n`` (with
``lo`` up) to leave the host's port 3784 alone.  Needs an RLIMIT_NOFILE above N.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import tempfile
from pathlib import Path

from aiobfd.app import Application
from aiobfd.cli import from_file
from aiobfd.config import Overrides

FIELDS = ("Rss", "Pss", "Private_Clean", "Private_Dirty")


def rollup(pid: int) -> dict[str, float]:
    """Memory of ``pid`` in MB, from /proc/PID/smaps_rollup."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in FIELDS:
            out[name] = int(rest.split()[0]) / 1024
    return out


def show(what: str, pid: int) -> None:
    m = rollup(pid)
    private = m["Private_Clean"] + m["Private_Dirty"]
    print(f"{what:28} RSS {m['Rss']:6.1f}  PSS {m['Pss']:6.1f}  private {private:6.1f} MB")


async def measure(n: int, settle_s: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "aiobfd.toml"
        lines = ["[daemon]", 'control_socket = "none"', "metrics_port = 0"]
        for i in range(n):
            lines += ["[[peers]]", f'remote = "127.1.{i // 250}.{i % 250 + 1}"']
            lines += ['local = "127.0.0.1"']
        path.write_text("\n".join(lines) + "\n")
        reload_from = functools.partial(from_file, str(path), Overrides())
        app = Application(reload_from(), reload_from)
        await app.start()
        try:
            reader = app._reader
            if reader is None:
                raise SystemExit("no reader process was forked")
            await asyncio.sleep(settle_s)
            show(f"{n} peers, daemon", os.getpid())
            show(f"{n} peers, reader", reader.pid)
            await app.reload_async()
            await asyncio.sleep(1)
            show("after a reload, daemon", os.getpid())
            show("after a reload, reader", reader.pid)
        finally:
            app.stop()
            await asyncio.wait_for(app.daemon.serve_forever(), 10)
            await app.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--sessions", type=int, default=9000)
    ap.add_argument("--settle", type=float, default=3.0, help="seconds after the start")
    args = ap.parse_args()
    asyncio.run(measure(args.sessions, args.settle))


if __name__ == "__main__":
    main()
