"""Hostile input: a flood of random and spoofed packets while real sessions run."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from aiobfd.client import ClientError, request
from aiobfd.lab import Lab

from .conftest import ThreePeers

FLOOD = Path(__file__).with_name("flood.py")
SECONDS = 10


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_flood_does_not_flap_sessions_or_grow_memory(lab: Lab, three_frr_peers: ThreePeers) -> None:
    ours, frr, ours_ip, remotes, _ = three_frr_peers
    time.sleep(1.0)
    assert ours.proc is not None
    rss_before = rss_kib(ours.proc.pid)

    flood = lab.popen(
        "peer", sys.executable, str(FLOOD), ours_ip, str(SECONDS), stdout=subprocess.PIPE
    )
    answered = 0
    slowest = 0.0
    end = time.monotonic() + SECONDS
    while time.monotonic() < end:
        started = time.monotonic()
        try:
            sessions = request(str(ours.socket), {"command": "show sessions"})["sessions"]
        except ClientError as exc:
            raise AssertionError(f"aiobfdctl got no answer during the flood: {exc}") from None
        slowest = max(slowest, time.monotonic() - started)
        assert len(sessions) == 3
        answered += 1
        time.sleep(0.25)
    out, _ = flood.communicate(timeout=SECONDS + 10)
    sent = int(out.split()[0])
    time.sleep(0.5)

    info = ours.sessions()
    rss_after = rss_kib(ours.proc.pid)
    print(
        f"flood: {sent} packets in {SECONDS} s ({sent / SECONDS:.0f}/s); control answered "
        f"{answered} times, slowest {slowest * 1000:.0f} ms; RSS {rss_before} -> {rss_after} KiB"
    )
    assert sent > 10_000
    assert all(s["state"] == "up" for s in info)
    assert all(s["counters"]["session_down"] == 0 for s in info), info
    counters = {c["local"]: c for c in frr.counters()}
    assert all(counters[r]["session-down"] == 0 for r in remotes), counters
    assert rss_after - rss_before < 5 * 1024
