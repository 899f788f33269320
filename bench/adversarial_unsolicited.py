"""Unsolicited sessions (RFC 9468) under a flood of spoofed sources (issue 18).

Two ``aiobfd`` processes over loopback, in a private network namespace: A
(127.0.0.1) and B (127.0.0.2), one session at 50 ms x 3; B also accepts
unsolicited sessions from 127.0.0.0/8 at raised limits (``--unsolicited-rate
100000 --unsolicited-max 5000``).  Once the pair is Up, an attacker process
sends Down packets (TTL 255, Your Discriminator 0, asking for 10 s x 255 so
that no Detection Time ends a session early) from ``--sources`` spoofed
addresses from 127.64.0.1 on, through a raw socket:

* ``flood``: each source once every ``--period`` seconds for ``--flood``
  seconds (as a real peer in slow start would), then nothing for ``--tail``;
* ``oneshot``: each source once, at ``--rate`` a second, then nothing for
  ``--tail``: what one spoofed packet buys.

An observer process holds UDP port 3784 on every other loopback address, so
it receives whatever B sends toward the spoofed sources (no ICMP errors come
back to B) and counts it: packets, and sessions (distinct destination and
source port: each session has a transmit socket of its own, and answers its
first packet at once).

Figures: Down events of the pair on either side (flaps), the largest gap
between the pair's packets as each daemon sent them (captured on lo: B's
column is B's event loop), the largest gap between received packets as
each session counted it while Up, the worst answer time of
B's control socket asked every 50 ms (its event loop), B's CPU time, the
sessions created, the packets sent toward spoofed sources (while the
attack runs, after it stops, and per spoofed packet), and B's refusals by
reason (its /metrics).  Run it as root; to compare with an older tree::

    git worktree add /tmp/uns-before HEAD
    PYTHONPATH=/tmp/uns-before/src python bench/adversarial_unsolicited.py
    python bench/adversarial_unsolicited.py
    python bench/adversarial_unsolicited.py --mode oneshot --sources 5000
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import multiprocessing
import os
import select
import socket
import struct
import time
import urllib.request
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path

from adversarial_pair import (
    A,
    B,
    Json,
    Pinger,
    Proc,
    SendGaps,
    enter_namespace,
    flaps,
    run_and_print,
    rx_gaps,
)
from adversarial_pair import pair as established

FIRST_SOURCE = "127.64.0.1"
METRICS_PORT = 13784
# Linux's values, which Python's socket module does not name.
SO_RCVBUFFORCE = 33
IP_PKTINFO = 8


# ------------------------------------------------------------ the daemons


def refusals() -> dict[str, float]:
    """B's aiobfd_unsolicited_refused_total by reason (empty if /metrics does not answer)."""
    out: dict[str, float] = {}
    try:
        url = f"http://{B}:{METRICS_PORT}/metrics"
        with urllib.request.urlopen(url, timeout=10) as answer:
            text = answer.read().decode()
    except OSError:
        return out
    for line in text.splitlines():
        if line.startswith("aiobfd_unsolicited_refused_total{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            out[reason] = float(line.rsplit(" ", 1)[1])
    return out


@contextlib.contextmanager
def pair(tmp: Path, args: argparse.Namespace) -> Iterator[tuple[Proc, Proc]]:
    timers = ["-r", "50", "-t", "50", "-m", "3", "--event-loop", args.loop, "-l", "INFO"]
    unsolicited = [
        "--unsolicited", "127.0.0.0/8",
        "--unsolicited-rate", str(args.unsolicited_rate),
        "--unsolicited-max", str(args.unsolicited_max),
        "--metrics-address", B, "--metrics-port", str(METRICS_PORT),
    ]  # fmt: skip
    with established(
        functools.partial(Proc, tmp, "a", [A, B, *timers, "--metrics-port", "0"]),
        # B alone on a CPU (A, the attacker, the observer and the bench on the
        # others, set in main): B's figures are then its own, not the scheduler's.
        functools.partial(
            Proc, tmp, "b", [B, A, *timers, *unsolicited], cpus={args.pin_cpu} if args.pin else None
        ),
        b_first=True,
    ) as (a, b):
        yield a, b


# ------------------------------------------------------- attacker, observer


def spoofed(source: int, sport: int) -> bytes:
    """An IPv4 + UDP datagram to B:3784 from ``source``: a Down packet asking 10 s x 255."""
    bfd = struct.pack("!BBBBIIIII", 0x20, 0x40, 255, 24, source, 0, 10_000_000, 1_000_000, 0)
    udp = struct.pack("!HHHH", sport, 3784, 8 + len(bfd), 0)  # no checksum (IPv4)
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45, 0xC0, 20 + len(udp) + len(bfd), 0, 0, 255, socket.IPPROTO_UDP, 0,
        source.to_bytes(4, "big"), socket.inet_aton(B),
    )  # fmt: skip
    return ip + udp + bfd


def attack(mode: str, sources: int, period: float, rate: float, duration: float, done: Connection) -> None:  # fmt: skip
    """Send the spoofed packets, paced in 5 ms slots; report how many went."""
    base = int.from_bytes(socket.inet_aton(FIRST_SOURCE), "big")
    packets = [spoofed(base + i, 49152 + i % 16384) for i in range(sources)]
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
    per_s = rate if mode == "oneshot" else sources / period
    total = sources if mode == "oneshot" else int(per_s * duration)
    start = time.monotonic()
    sent = i = 0
    while sent < total:
        due = min(total, int((time.monotonic() - start) * per_s) + 1)
        while sent < due:
            try:
                raw.sendto(packets[i], (B, 0))
            except OSError:
                time.sleep(0.001)
                continue
            sent += 1
            i = (i + 1) % sources
        time.sleep(0.005)
    done.send((sent, start, time.monotonic()))


def observe(stop_at: float, ready: Connection, done: Connection) -> None:
    """Receive what B sends toward the spoofed sources (every loopback address
    but A and B): per second, sessions (destination, source port), destinations;
    and the largest gap on the wire between the pair's packets, each way."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # A and B have it too
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 1 << 25)
    sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    sock.bind(("0.0.0.0", 3784))
    sock.setblocking(False)
    wire = SendGaps()
    ready.send(True)
    per_second: dict[int, int] = {}
    sessions: set[tuple[bytes, int]] = set()
    per_dest: dict[bytes, int] = {}
    poll = select.epoll()
    poll.register(sock.fileno(), select.EPOLLIN)
    poll.register(wire.sock.fileno(), select.EPOLLIN)
    while time.monotonic() < stop_at:
        poll.poll(0.2)
        wire.read()
        for _ in range(4096):
            try:
                _data, anc, _flags, addr = sock.recvmsg(64, 64)
            except BlockingIOError:
                break
            now = time.monotonic()
            dst = b""
            for level, kind, value in anc:
                if level == socket.IPPROTO_IP and kind == IP_PKTINFO:
                    dst = value[8:12]  # struct in_pktinfo: ifindex, spec_dst, addr
            per_second[int(now)] = per_second.get(int(now), 0) + 1
            sessions.add((dst, addr[1]))
            per_dest[dst] = per_dest.get(dst, 0) + 1
    wire_gaps = {"a_to_b": wire.ms(A), "b_to_a": wire.ms(B)}
    done.send(
        (per_second, len(sessions), len(per_dest), max(per_dest.values(), default=0), wire_gaps)
    )


# ------------------------------------------------------------------ the run


def run(args: argparse.Namespace, tmp: Path) -> Json:
    ctx = multiprocessing.get_context("fork")
    with pair(tmp, args) as (a, b):
        settle = 0.5
        time.sleep(settle)
        gap0 = (a.session(B)["max_rx_gap_ms"], b.session(A)["max_rx_gap_ms"])
        attack_s = args.sources / args.rate if args.mode == "oneshot" else args.flood
        stop_at = time.monotonic() + attack_s + args.tail + 2
        obs_ready, obs_ready_in = ctx.Pipe(duplex=False)
        obs_done, obs_done_in = ctx.Pipe(duplex=False)
        observer = ctx.Process(target=observe, args=(stop_at, obs_ready_in, obs_done_in))
        observer.start()
        obs_ready_in.close()
        obs_done_in.close()
        obs_ready.recv()  # EOFError if it failed
        att_done, att_done_in = ctx.Pipe(duplex=False)
        attacker = ctx.Process(
            target=attack,
            args=(args.mode, args.sources, args.period, args.rate, args.flood, att_done_in),
        )
        pinger = Pinger(b.sock)
        cpu0 = b.cpu_s()
        attacker.start()
        att_done_in.close()
        sent, started, stopped = att_done.recv()
        attacker.join()
        cpu_attack = b.cpu_s() - cpu0
        time.sleep(max(0.0, stopped + args.tail - time.monotonic()))
        cpu_total = b.cpu_s() - cpu0
        worst_answer = pinger.stop()
        per_second, sessions, destinations, most, wire_gaps = obs_done.recv()
        observer.join()
        a_info, b_info = a.session(B), b.session(A)
        refused = refusals()
    reflected = sum(per_second.values())
    during = sum(n for s, n in per_second.items() if s < int(stopped) + 1)
    after = reflected - during
    last = sum(n for s, n in per_second.items() if s >= int(stopped + args.tail) - 2)
    return {
        "mode": args.mode,
        "b_pinned_to_cpu": args.pin_cpu if args.pin else None,
        "sources": args.sources,
        "spoofed_packets_sent": sent,
        "attack_s": round(stopped - started, 1),
        "flaps": flaps(a_info, b_info),
        "largest_gap_on_the_wire_ms": wire_gaps,
        "largest_rx_gap_ms": {**rx_gaps(a_info, b_info), "before_attack": gap0},
        "b_control_worst_answer_ms": round(worst_answer * 1000, 1),
        "b_cpu_s": {"attack": round(cpu_attack, 2), "attack_and_tail": round(cpu_total, 2)},
        "sessions_created": sessions,
        "spoofed_sources_answered": destinations,
        "packets_to_spoofed_sources": {
            "during_attack": during,
            "after_attack_stopped": after,
            "in_last_2_s": last,
            "per_spoofed_packet": round(reflected / max(sent, 1), 2),
            "most_to_one_source": most,
        },
        "b_refused": refused,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=["flood", "oneshot"], default="flood")
    p.add_argument("--sources", type=int, default=10_000)
    p.add_argument(
        "--period", type=float, default=1.0, help="flood: seconds between a source's packets"
    )
    p.add_argument("--rate", type=float, default=5000.0, help="oneshot: spoofed packets a second")
    p.add_argument("--flood", type=float, default=15.0, help="flood: seconds")
    p.add_argument("--tail", type=float, default=8.0, help="seconds watched after the attack")
    p.add_argument("--unsolicited-rate", type=int, default=100_000)
    p.add_argument("--unsolicited-max", type=int, default=5000)
    p.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto")
    p.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="do not give B a CPU of its own (by default, with 2 CPUs or more)",
    )
    args = p.parse_args()
    enter_namespace()
    cpus = os.sched_getaffinity(0)
    args.pin_cpu = max(cpus)
    args.pin = args.pin and len(cpus) >= 2
    if args.pin:
        os.sched_setaffinity(0, cpus - {args.pin_cpu})
    return run_and_print(run, args, "aiobfd-unsolicited-")


if __name__ == "__main__":
    raise SystemExit(main())
