"""What a batched send would save the daemon: one ``send`` a packet against
one ``sendmmsg`` a cohort (root only, loopback only).

RFC 5881 §4 wants every session's packets to leave from a source port of
its own, so the daemon has one connected UDP socket a session and one
``send`` a packet.  ``sendmmsg`` sends many messages through one socket: for
many source ports at once that socket must be a raw one, which writes the
IPv4 and UDP headers itself (``IPPROTO_RAW``: send-only, no copy of every
received packet).  This measures both ways of sending the same packets, in
one process, in a network namespace of its own (``unshare -n``: only its
loopback):

* ``send``: N UDP sockets, each bound to an address and source port of its
  own and connected to 127.0.0.1:3784, one ``send`` each, as the daemon;
* ``raw``: one ``IPPROTO_RAW`` socket, ``sendmmsg`` of a cohort of 64
  prebuilt frames (IPv4 header with TTL 255, UDP header, a 24-octet Control
  packet) through ctypes, the message headers joined from prebuilt bytes:
  about the least Python a batched send can cost.

A receiver on 3784 reads every packet after each cohort.  User and system
time of the send calls alone and of the reads alone, from getrusage around
each, in microseconds a packet; the variants alternate, ``--rounds`` times.

    unshare -n sh -c 'ip link set lo up; .venv/bin/python bench/batched_send.py -n 1000'
"""

from __future__ import annotations

import argparse
import ctypes
import resource
import socket
import struct
from collections.abc import Callable

from floor import Iovec, Libc, Mmsghdr, Msghdr, raw_sockaddr

COHORT = 64
PORT = 3784
FIRST_SOURCE_PORT = 49152
FRAME = 20 + 8 + 24  # IPv4 header, UDP header, Control packet


def _source(i: int) -> str:
    return f"127.1.{i // 250}.{i % 250 + 1}"


def _control_packet() -> bytes:
    """An Up Control packet, Detect Mult 3, 50 ms intervals."""
    return bytes((0x20, 0xC0, 3, 24)) + struct.pack("!IIIII", 1, 2, 50_000, 50_000, 0)


class Senders:
    """Both ways of sending one packet from each of N sessions."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.payload = _control_packet()
        self.rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 24)
        self.rx.bind(("127.0.0.1", PORT))
        self.rx.setblocking(False)
        self.udp = []
        for i in range(n):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((_source(i), FIRST_SOURCE_PORT + i))
            sock.connect(("127.0.0.1", PORT))
            self.udp.append(sock)
        self.raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self.sendmmsg = Libc().sendmmsg
        self._keep: list[object] = []  # the buffers the message headers point into
        self.headers: list[bytes] = []
        dest = socket.inet_aton("127.0.0.1")
        for i in range(n):
            ip = struct.pack(
                "!BBHHHBBH4s4s",
                0x45,  # version 4, 5 words
                0xC0,  # DSCP CS6, as the daemon's sockets
                0,  # total length: the kernel's
                0,  # id: the kernel's
                0x4000,  # don't fragment
                255,  # TTL (RFC 5881 §5)
                socket.IPPROTO_UDP,
                0,  # checksum: the kernel's
                socket.inet_aton(_source(i)),
                dest,
            )
            udp = struct.pack("!HHHH", FIRST_SOURCE_PORT + i, PORT, 8 + len(self.payload), 0)
            frame = ctypes.create_string_buffer(ip + udp + self.payload, FRAME)
            iov = Iovec(ctypes.addressof(frame), FRAME)
            address = raw_sockaddr(socket.AF_INET, "127.0.0.1", 0)
            name = ctypes.create_string_buffer(address, len(address))
            hdr = Msghdr(ctypes.addressof(name), len(address), ctypes.pointer(iov), 1, None, 0, 0)
            msg = Mmsghdr(hdr, 0)
            self._keep += [frame, iov, name]
            self.headers.append(bytes(msg))
        self.batch = (Mmsghdr * COHORT)()

    def send_cohort(self, start: int) -> None:
        payload = self.payload
        for sock in self.udp[start : start + COHORT]:
            sock.send(payload)

    def raw_cohort(self, start: int) -> None:
        headers = self.headers[start : start + COHORT]
        ctypes.memmove(self.batch, b"".join(headers), len(headers) * ctypes.sizeof(Mmsghdr))
        done = self.sendmmsg(self.raw.fileno(), self.batch, len(headers), 0)
        if done != len(headers):
            raise OSError(ctypes.get_errno(), f"sendmmsg sent {done} of {len(headers)}")

    def read_all(self) -> int:
        got = 0
        while True:
            try:
                self.rx.recv(256)
            except BlockingIOError:
                return got
            got += 1


def _measure(senders: Senders, cohort: Callable[[int], None], rounds: int) -> dict[str, float]:
    """Per packet: user and system time of the sends, then of the reads (us)."""
    usage = resource.getrusage
    send_u = send_s = read_u = read_s = 0.0
    packets = 0
    for _ in range(rounds):
        for start in range(0, senders.n, COHORT):
            a = usage(resource.RUSAGE_SELF)
            cohort(start)
            b = usage(resource.RUSAGE_SELF)
            packets += senders.read_all()
            c = usage(resource.RUSAGE_SELF)
            send_u += b.ru_utime - a.ru_utime
            send_s += b.ru_stime - a.ru_stime
            read_u += c.ru_utime - b.ru_utime
            read_s += c.ru_stime - b.ru_stime
    scale = 1e6 / max(packets, 1)
    return {
        "packets": packets,
        "send_user": send_u * scale,
        "send_sys": send_s * scale,
        "read_user": read_u * scale,
        "read_sys": read_s * scale,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--sessions", type=int, default=1000)
    ap.add_argument("--packets", type=int, default=100, help="packets a session a round")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of both variants")
    args = ap.parse_args()
    senders = Senders(args.sessions)
    variants = {"send": senders.send_cohort, "raw": senders.raw_cohort}
    for r in range(args.rounds):
        for name, cohort in variants.items():
            m = _measure(senders, cohort, args.packets)
            print(
                f"round {r + 1} {name:4}: {m['packets']:.0f} packets; sending user "
                f"{m['send_user']:.2f} sys {m['send_sys']:.2f} us a packet; reading user "
                f"{m['read_user']:.2f} sys {m['read_sys']:.2f}"
            )


if __name__ == "__main__":
    main()
