"""The floor: what moving a BFD daemon's packets costs a bare Python loop (root only).

At a point of N sessions at an interval of I ms, each side of a BFD daemon pair
sends N * 1000 / I packets a second and receives as many.  This bench does only
that, with no protocol: two worker processes, one in each of the two network
namespaces that ``bench/scale.py`` makes for our daemon against our daemon
(``ScaleLab``: a veth pair, one address on the host side, one address per
session on the peer side, static neighbours, IPv6 above 250 sessions), pinned
to CPU 0 and CPU 1 at the daemons' niceness.  A fresh lab for each run, the same
kind as a daemon run's; never both at once.  The CPU of each worker is user and
system time from /proc/PID/stat over the window, as scale.py measures a daemon,
so a daemon's CPU at the same point can be given as a ratio to it.

Both workers do the same thing.  The N sessions are dealt into cohorts of at
most ``--cohort`` (default 64, the daemon's limit for one instant), and the
cohorts spread evenly over the interval: one wake-up (``time.sleep`` to an
absolute instant) per cohort, ceil(N / 64) * 1000 / I a second, about as many as
the daemon has at these points.  At each wake-up the worker sends its cohort's
packets (prebuilt 24-octet BFD Control packets, state Up), then reads what has
arrived.  Two variants:

* ``call``: one system call a packet, as the daemon does.  N transmit sockets,
  each bound to a source port of its own (49152 + session) and connected to the
  peer's address and port 3784, ``send`` one packet each; N receive sockets bound
  to 3784 (SO_REUSEADDR) and connected to the peer's address and source port,
  in an epoll set polled without waiting until it has nothing ready, one
  ``recv`` per ready socket (``--rx one``: a single socket on 3784 read with
  ``recv`` until empty instead).  Each packet read becomes a bytes object and
  nothing more is done with it.
* ``batch``: ``sendmmsg`` / ``recvmmsg`` through ctypes (Python has no binding).
  One transmit socket per side sends a cohort in one call, each message with its
  destination address and, on the peer side, its source address in an
  IPV6_PKTINFO / IP_PKTINFO control message (every packet leaves from the
  session's own address, as in the daemon pair), but all from one source port:
  RFC 5881 section 4 wants one per session, so a daemon could batch its sends
  only with a raw socket.  One receive socket per side on 3784 is read with
  ``recvmmsg`` of up to ``--batch`` (default 256) messages, addresses included,
  until a call returns fewer.  No Python work per packet at all: the floor of
  the kernel's share with the fewest system calls.

Exactly N * 1000 / I packets a second a side: no jitter (the daemon sends about
4 % more, its intervals being drawn at 75-100 % of I).  A late wake-up is caught
up, not skipped, and counted.

    python bench/floor.py -n 1000 -i 50 -d 30                  # both variants
    python bench/floor.py -n 5000 -i 300 -d 30 --variant batch --results /tmp/f.jsonl

Each run appends one JSON line (``"bench": "floor"``) to ``--results`` (default
bench/results/scale.jsonl, beside scale.py's runs, which its readers skip) and
prints one row.  ``bench/scale.py curve`` runs it beside the daemon at each point.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime as dt
import json
import math
import os
import select
import signal
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
DEFAULT_RESULTS = BENCH / "results" / "scale.jsonl"
HOST_CPU, PEER_CPU = 0, 1
BFD_PORT = 3784
FIRST_SOURCE_PORT = 49152
VARIANTS = ("call", "batch")

# <bits/socket.h>, <netinet/in.h> (Linux values; Python exports IPV6_PKTINFO, not IP_PKTINFO).
MSG_DONTWAIT = 0x40
IP_PKTINFO = 8
IPV6_PKTINFO = 50
SO_RCVBUFFORCE = 33  # <asm-generic/socket.h>: SO_RCVBUF above rmem_max (root)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------- ctypes


class Iovec(ctypes.Structure):
    _fields_ = (("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t))


class Msghdr(ctypes.Structure):
    _fields_ = (
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),  # socklen_t
        ("msg_iov", ctypes.POINTER(Iovec)),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    )


class Mmsghdr(ctypes.Structure):
    _fields_ = (("msg_hdr", Msghdr), ("msg_len", ctypes.c_uint))


class Libc:
    """libc's sendmmsg and recvmmsg (glibc >= 2.14)."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.sendmmsg = libc.sendmmsg
        self.sendmmsg.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int)
        self.sendmmsg.restype = ctypes.c_int
        self.recvmmsg = libc.recvmmsg
        self.recvmmsg.argtypes = (
            ctypes.c_int,
            ctypes.c_void_p,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_void_p,
        )
        self.recvmmsg.restype = ctypes.c_int


def raw_sockaddr(family: int, address: str, port: int) -> bytes:
    """struct sockaddr_in / sockaddr_in6 as the kernel reads it."""
    packed = socket.inet_pton(family, address)
    if family == socket.AF_INET6:
        return struct.pack("=H", family) + struct.pack("!HI", port, 0) + packed + bytes(4)
    return struct.pack("=H", family) + struct.pack("!H", port) + packed + bytes(8)


def pktinfo_cmsg(family: int, source: str) -> bytes:
    """One control message that sets a packet's source address (struct cmsghdr + data)."""
    packed = socket.inet_pton(family, source)
    if family == socket.AF_INET6:
        level, kind, data = socket.IPPROTO_IPV6, IPV6_PKTINFO, packed + struct.pack("=I", 0)
    else:  # struct in_pktinfo: ifindex, spec_dst (the source), addr
        level, kind, data = socket.IPPROTO_IP, IP_PKTINFO, struct.pack("=i", 0) + packed + bytes(4)
    header = struct.calcsize("@Nii")
    space = header + (len(data) + 7) // 8 * 8
    return (struct.pack("@Nii", header + len(data), level, kind) + data).ljust(space, b"\0")


# ------------------------------------------------------------------- worker


def bfd_packet(my_discr: int, your_discr: int, interval_ms: int) -> bytes:
    """A 24-octet BFD Control packet, version 1, state Up, Detect Mult 3."""
    us = interval_ms * 1000
    return struct.pack("!BBBBIIIII", 0x20, 0xC0, 3, 24, my_discr, your_discr, us, us, 0)


class Worker:
    """One side: sockets for N sessions, then the send-and-read loop."""

    def __init__(self, conf: dict[str, Any], side: str) -> None:
        self.conf = conf
        self.side = side
        self.family = socket.AF_INET6 if conf["family"] == 6 else socket.AF_INET
        self.n: int = conf["sessions"]
        self.interval_ms: int = conf["interval_ms"]
        self.variant: str = conf["variant"]
        self.rx: str = conf["rx"]
        self.batch: int = conf["batch"]
        self.cohorts = max(1, math.ceil(self.n / conf["cohort"]))
        # (local, remote) address of each session, from this side.
        host: str = conf["host"]
        peers: list[str] = conf["peers"]
        if side == "host":
            self.pairs = [(host, p) for p in peers]
        else:
            self.pairs = [(p, host) for p in peers]
        self.stats_path = Path(conf["stats"][side])
        self.counts = [0, 0, 0, 0, 0, 0]
        """sent, received, send errors, wake-ups, late wake-ups, the latest (us)."""
        self.want_stats = False
        self.keep: list[Any] = []
        """ctypes buffers the kernel is given pointers into."""

    def addr(self, address: str, port: int) -> tuple[Any, ...]:
        return (address, port, 0, 0) if self.family == socket.AF_INET6 else (address, port)

    def udp(self) -> socket.socket:
        sock = socket.socket(self.family, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        sock.setblocking(False)
        if self.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
        else:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 255)
        return sock

    def packets(self) -> list[bytes]:
        mine, theirs = (1, 100_001) if self.side == "host" else (100_001, 1)
        return [bfd_packet(mine + i, theirs + i, self.interval_ms) for i in range(self.n)]

    # -- one system call a packet

    def setup_call(self) -> tuple[list[list[Any]], Any]:
        packets = self.packets()
        slots: list[list[Any]] = [[] for _ in range(self.cohorts)]
        self.sockets: list[socket.socket] = []
        for i, (local, remote) in enumerate(self.pairs):
            tx = self.udp()
            tx.bind(self.addr(local, FIRST_SOURCE_PORT + i))
            tx.connect(self.addr(remote, BFD_PORT))
            self.sockets.append(tx)
            slots[i % self.cohorts].append((tx.send, packets[i]))
        if self.rx == "one":
            rx = self.udp()
            rx.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 4 << 20)
            any_addr = "::" if self.family == socket.AF_INET6 else "0.0.0.0"
            rx.bind(self.addr(any_addr if self.side == "peer" else self.pairs[0][0], BFD_PORT))
            self.sockets.append(rx)
            return slots, rx.recv
        epoll = select.epoll(self.n + 1)
        recvs: dict[int, Any] = {}
        for i, (local, remote) in enumerate(self.pairs):
            rx = self.udp()
            rx.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            rx.bind(self.addr(local, BFD_PORT))
            rx.connect(self.addr(remote, FIRST_SOURCE_PORT + i))
            self.sockets.append(rx)
            recvs[rx.fileno()] = rx.recv
            epoll.register(rx.fileno(), select.EPOLLIN)
        self.keep.append(epoll)
        return slots, (epoll.poll, recvs)

    def run_call(self, t0: float) -> None:
        slots, reader = self.setup_call()
        self.ready_and_wait()
        counts = self.counts
        period = self.interval_ms / 1000 / self.cohorts
        next_t = time.monotonic() + period
        k = 0
        one = self.rx == "one"
        while True:
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -0.0005:
                counts[4] += 1
                counts[5] = int(-delay * 1e6)
            counts[3] += 1
            sent = 0
            for send, packet in slots[k]:
                try:
                    send(packet)
                    sent += 1
                except OSError:
                    counts[2] += 1
            counts[0] += sent
            got = 0
            if one:
                recv = reader
                while True:
                    try:
                        recv(256)
                    except BlockingIOError:
                        break
                    except OSError:
                        counts[2] += 1
                        continue
                    got += 1
            else:
                poll, recvs = reader
                while ready := poll(0):
                    for fd, _ in ready:
                        try:
                            recvs[fd](256)
                        except OSError:
                            continue
                        got += 1
            counts[1] += got
            if self.want_stats:
                self.write_stats()
            k = (k + 1) % self.cohorts
            next_t += period

    # -- batched

    def setup_batch(self) -> tuple[list[tuple[Any, int]], socket.socket, socket.socket, Any]:
        packets = self.packets()
        fam = self.family
        tx = self.udp()
        any_addr = "::" if fam == socket.AF_INET6 else "0.0.0.0"
        if self.side == "host":
            tx.bind(self.addr(self.pairs[0][0], FIRST_SOURCE_PORT))
        else:  # the source address of each packet comes in its control message
            tx.bind(self.addr(any_addr, FIRST_SOURCE_PORT))
        # Messages in cohort order, so that a cohort is one slice of the array.
        order = sorted(range(self.n), key=lambda i: (i % self.cohorts, i))
        msgs = (Mmsghdr * self.n)()
        iovs = (Iovec * self.n)()
        data = ctypes.create_string_buffer(b"".join(packets[i] for i in order))
        names = ctypes.create_string_buffer(
            b"".join(raw_sockaddr(fam, self.pairs[i][1], BFD_PORT) for i in order)
        )
        name_len = len(raw_sockaddr(fam, self.pairs[0][1], BFD_PORT))
        cmsg_len = 0
        controls = None
        if self.side == "peer":
            blobs = [pktinfo_cmsg(fam, self.pairs[i][0]) for i in order]
            cmsg_len = len(blobs[0])
            controls = ctypes.create_string_buffer(b"".join(blobs))
        base, nbase = ctypes.addressof(data), ctypes.addressof(names)
        for j in range(self.n):
            iovs[j].iov_base = base + 24 * j
            iovs[j].iov_len = 24
            h = msgs[j].msg_hdr
            h.msg_name = nbase + name_len * j
            h.msg_namelen = name_len
            h.msg_iov = ctypes.pointer(iovs[j])
            h.msg_iovlen = 1
            if controls is not None:
                h.msg_control = ctypes.addressof(controls) + cmsg_len * j
                h.msg_controllen = cmsg_len
        self.keep += [msgs, iovs, data, names, controls]
        slots: list[tuple[Any, int]] = []
        start = 0
        size = ctypes.sizeof(Mmsghdr)
        for c in range(self.cohorts):
            count = sum(1 for i in range(self.n) if i % self.cohorts == c)
            slots.append((ctypes.addressof(msgs) + size * start, count))
            start += count
        # Receiving: one socket, up to `batch` messages a call, with their addresses.
        rx = self.udp()
        rx.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 4 << 20)
        rx.bind(self.addr(any_addr if self.side == "peer" else self.pairs[0][0], BFD_PORT))
        b = self.batch
        rmsgs = (Mmsghdr * b)()
        riovs = (Iovec * b)()
        rdata = ctypes.create_string_buffer(256 * b)
        rnames = ctypes.create_string_buffer(32 * b)
        for j in range(b):
            riovs[j].iov_base = ctypes.addressof(rdata) + 256 * j
            riovs[j].iov_len = 256
            h = rmsgs[j].msg_hdr
            h.msg_name = ctypes.addressof(rnames) + 32 * j
            h.msg_namelen = 28
            h.msg_iov = ctypes.pointer(riovs[j])
            h.msg_iovlen = 1
        self.keep += [rmsgs, riovs, rdata, rnames]
        return slots, tx, rx, ctypes.addressof(rmsgs)

    def run_batch(self, t0: float) -> None:
        libc = Libc()
        slots, tx, rx, rmsgs = self.setup_batch()
        self.sockets = [tx, rx]
        self.ready_and_wait()
        sendmmsg, recvmmsg = libc.sendmmsg, libc.recvmmsg
        txfd, rxfd, b = tx.fileno(), rx.fileno(), self.batch
        size = ctypes.sizeof(Mmsghdr)
        counts = self.counts
        period = self.interval_ms / 1000 / self.cohorts
        next_t = time.monotonic() + period
        k = 0
        while True:
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -0.0005:
                counts[4] += 1
                counts[5] = int(-delay * 1e6)
            counts[3] += 1
            at, left = slots[k]
            while left:
                done = sendmmsg(txfd, at, left, 0)
                if done <= 0:
                    counts[2] += left
                    break
                counts[0] += done
                left -= done
                at += done * size
            while True:
                got = recvmmsg(rxfd, rmsgs, b, MSG_DONTWAIT, None)
                if got <= 0:
                    break
                counts[1] += got
                if got < b:
                    break
            if self.want_stats:
                self.write_stats()
            k = (k + 1) % self.cohorts
            next_t += period

    # -- common

    def ready_and_wait(self) -> None:
        """Say the sockets are open, then wait for the go (both sides open: no ICMP errors)."""
        print("ready", flush=True)
        go = Path(self.conf["go"])
        while not go.exists():
            time.sleep(0.01)

    def write_stats(self) -> None:
        self.want_stats = False
        c = self.counts
        stats = {
            "t": time.monotonic(),
            "sent": c[0],
            "received": c[1],
            "errors": c[2],
            "wakeups": c[3],
            "late_wakeups": c[4],
            "last_late_us": c[5],
        }
        tmp = self.stats_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(stats))
        tmp.replace(self.stats_path)

    def main(self) -> None:
        def ask(signum: int, frame: Any) -> None:
            self.want_stats = True

        signal.signal(signal.SIGUSR1, ask)
        t0 = time.monotonic()
        if self.variant == "batch":
            self.run_batch(t0)
        else:
            self.run_call(t0)


# ------------------------------------------------------------------- parent


def ksoftirqd_pids() -> dict[int, int]:
    """{cpu: pid} of the kernel's softirq threads (packet work deferred out of a system call)."""
    out = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                comm = (proc / "comm").read_text().strip()
                if comm.startswith("ksoftirqd/"):
                    out[int(comm.partition("/")[2])] = int(proc.name)
    return out


def read_stats(path: Path, after: float, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            stats: dict[str, Any] = json.loads(path.read_text())
            if stats["t"] > after:
                return stats
        time.sleep(0.01)
    raise RuntimeError(f"no statistics from {path}")


def run_floor(
    sessions: int,
    interval_ms: int,
    variant: str,
    duration_s: float,
    *,
    rx: str = "peer",
    cohort: int = 64,
    batch: int = 256,
    family: str = "auto",
    settle_s: float = 3.0,
    nice: int = -10,
    suite: str = "floor",
    label: str = "",
) -> dict[str, Any]:
    """One floor run in a fresh lab; the result as a dict (one JSON line)."""
    from aiobfd.lab import LabError, wait_until
    from scale import machine  # a sibling module; imported here, scale imports this one
    from scalelab import ScaleLab, cpu_busy, cpu_stat, proc_rss_kb, proc_times

    fam = int(family) if family in ("4", "6") else (4 if sessions + 1 <= 252 else 6)
    name = f"floor/{variant}" + ("" if variant == "batch" or rx == "peer" else f"-rx-{rx}")
    log(f"{name}, {sessions} @ {interval_ms} ms, {duration_s:g} s: setting up (IPv{fam})")
    result: dict[str, Any] = {
        "ts": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "bench": "floor",
        "variant": variant,
        "rx": "one" if variant == "batch" else rx,
        "sessions": sessions,
        "interval_ms": interval_ms,
        "duration_s": duration_s,
        "cohort": cohort,
        "batch": batch if variant == "batch" else None,
        "family": fam,
        "nice": nice,
        "suite": suite,
        "label": label,
        "pps_target": round(sessions * 1000 / interval_ms, 1),
    }
    with ScaleLab(sessions, family=fam, many_locals=False, macvlans=False, nice=nice) as lab:
        conf: dict[str, Any] = {
            "family": fam,
            "sessions": sessions,
            "interval_ms": interval_ms,
            "variant": variant,
            "rx": rx,
            "cohort": cohort,
            "batch": batch,
            "host": lab.pairs[0].host,
            "peers": [p.peer for p in lab.pairs],
            "go": str(lab.rundir / "go"),
            "stats": {s: str(lab.rundir / f"{s}.stats") for s in ("host", "peer")},
        }
        conf_path = lab.rundir / "floor.json"
        conf_path.write_text(json.dumps(conf))
        procs = {}
        logs = {}
        for side, ns, cpu in (("host", lab.host_ns, HOST_CPU), ("peer", lab.peer_ns, PEER_CPU)):
            logs[side] = lab.rundir / f"floor-{side}.log"
            argv = [sys.executable, __file__, "worker", "--config", str(conf_path), "--side", side]
            procs[side] = lab.popen(ns, *argv, cpu=cpu, log=logs[side])

        def ready() -> bool:
            for side, proc in procs.items():
                if proc.poll() is not None:
                    tail = logs[side].read_text(errors="replace")[-2000:]
                    raise LabError(f"floor worker ({side}) exited with {proc.returncode}:\n{tail}")
            return all("ready" in logs[s].read_text(errors="replace") for s in procs)

        wait_until(ready, 60 + sessions / 100, "the floor's workers", 0.1)
        result["rss_kb_ready"] = {s: proc_rss_kb(p.pid) for s, p in procs.items()}
        Path(conf["go"]).touch()
        time.sleep(settle_s)

        def stats() -> dict[str, dict[str, Any]]:
            now = time.monotonic()
            for p in procs.values():
                p.send_signal(signal.SIGUSR1)
            return {s: read_stats(Path(conf["stats"][s]), now) for s in procs}

        stats_a = stats()
        softirqd = ksoftirqd_pids()
        t_a, stat_a = time.monotonic(), cpu_stat()
        cpu_a = {s: proc_times(p.pid) for s, p in procs.items()}
        kcpu_a = {c: proc_times(pid) for c, pid in softirqd.items()}
        time.sleep(duration_s)
        t_b, stat_b = time.monotonic(), cpu_stat()
        cpu_b = {s: proc_times(p.pid) for s, p in procs.items()}
        kcpu_b = {c: proc_times(pid) for c, pid in softirqd.items()}
        stats_b = stats()
        wall = t_b - t_a
        for side, proc in procs.items():
            if proc.poll() is not None:
                raise LabError(f"floor worker ({side}) died during the window")
            user = (cpu_b[side][0] - cpu_a[side][0]) / wall
            system = (cpu_b[side][1] - cpu_a[side][1]) / wall
            result[f"{side}_cpu_user"] = round(user, 4)
            result[f"{side}_cpu_sys"] = round(system, 4)
            result[f"{side}_cpu"] = round(user + system, 4)
            result[f"{side}_rss_kb"] = proc_rss_kb(proc.pid)
            a, b = stats_a[side], stats_b[side]
            span = b["t"] - a["t"]
            result[f"{side}_pps_tx"] = round((b["sent"] - a["sent"]) / span, 1)
            result[f"{side}_pps_rx"] = round((b["received"] - a["received"]) / span, 1)
            result[f"{side}_errors"] = b["errors"] - a["errors"]
            result[f"{side}_wakeups_per_s"] = round((b["wakeups"] - a["wakeups"]) / span, 1)
            result[f"{side}_late_wakeups"] = b["late_wakeups"] - a["late_wakeups"]
        for cpu in (HOST_CPU, PEER_CPU):
            # All of each core: softirq work done outside the workers (ksoftirqd) included.
            busy = cpu_busy(stat_a, stat_b, f"cpu{cpu}")
            result[f"core{cpu}_busy"] = round(busy["busy"] / wall, 4)
            result[f"core{cpu}_softirq"] = round(busy["softirq"] / wall, 4)
            if cpu in kcpu_a:
                spent = sum(kcpu_b[cpu]) - sum(kcpu_a[cpu])
                result[f"ksoftirqd{cpu}_cpu"] = round(spent / wall, 4)
        total = cpu_busy(stat_a, stat_b, "cpu")
        result["other_cpu"] = round(
            total["busy"] / wall - result["host_cpu"] - result["peer_cpu"], 4
        )
        result["measured_s"] = round(wall, 2)
    result["machine"] = machine()
    return result


def floor_row(r: dict[str, Any]) -> str:
    def pct(x: float) -> str:
        return f"{100 * x:.1f}"

    name = f"floor/{r['variant']}" + ("" if r["variant"] == "batch" else f" rx {r['rx']}")
    return (
        f"{name:<18} {r['sessions']}@{r['interval_ms']}  host {pct(r['host_cpu'])} % "
        f"({pct(r['host_cpu_user'])}/{pct(r['host_cpu_sys'])})  peer {pct(r['peer_cpu'])} % "
        f"({pct(r['peer_cpu_user'])}/{pct(r['peer_cpu_sys'])})  pps tx/rx "
        f"{r['host_pps_tx']:.0f}/{r['host_pps_rx']:.0f} (target {r['pps_target']:.0f})  "
        f"wake-ups/s {r['host_wakeups_per_s']:.0f}, late {r['host_late_wakeups']}  "
        f"RSS {r['host_rss_kb'] / 1024:.1f} MB  other {pct(r['other_cpu'])} %"
    )


def save(result: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(result) + "\n")


def main(argv: list[str] | None = None) -> int:
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(
        description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["worker"]:
        w = argparse.ArgumentParser(prog="floor.py worker")
        w.add_argument("worker")
        w.add_argument("--config", required=True)
        w.add_argument("--side", choices=["host", "peer"], required=True)
        wopts = w.parse_args(argv)
        Worker(json.loads(Path(wopts.config).read_text()), wopts.side).main()
        return 0
    parser.add_argument("-n", "--sessions", type=int, default=1000)
    parser.add_argument("-i", "--interval", type=int, default=50, help="ms")
    parser.add_argument("-d", "--duration", type=float, default=30.0, help="measured seconds")
    parser.add_argument("--variant", choices=[*VARIANTS, "both"], default="both")
    parser.add_argument(
        "--rx",
        choices=["peer", "one"],
        default="peer",
        help="call variant: receive on per-peer connected sockets through epoll (as the "
        "daemon), or on one socket",
    )
    parser.add_argument("--cohort", type=int, default=64, help="packets sent per wake-up, at most")
    parser.add_argument("--batch", type=int, default=256, help="recvmmsg: messages per call")
    parser.add_argument("--family", choices=["auto", "4", "6"], default="auto")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds before the window")
    parser.add_argument("--nice", type=int, default=-10, help="niceness of the workers")
    parser.add_argument("--results", default=str(DEFAULT_RESULTS), help="JSON lines (appended)")
    parser.add_argument("--suite", default="floor", help="suite name recorded with the result")
    opts = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("floor.py: needs root (network namespaces)", file=sys.stderr)
        return 2
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {PEER_CPU})  # as scale.py: off the host side's core
    sys.path.insert(0, str(BENCH))
    from aiobfd.lab import cleanup_stale
    from scalelab import NAMING

    cleanup_stale(NAMING)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    variants = list(VARIANTS) if opts.variant == "both" else [opts.variant]
    for variant in variants:
        result = run_floor(
            opts.sessions,
            opts.interval,
            variant,
            opts.duration,
            rx=opts.rx,
            cohort=opts.cohort,
            batch=opts.batch,
            family=opts.family,
            settle_s=opts.settle,
            nice=opts.nice,
            suite=opts.suite,
        )
        save(result, Path(opts.results))
        print(floor_row(result), flush=True)
    print(f"results appended to {opts.results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
