"""A flood of random and spoofed BFD traffic, for hostile-input tests.

Run inside a lab namespace: ``python3 flood.py TARGET SECONDS [SEED]``.  It sends,
as fast as one core can, through a raw socket (so sources and TTLs are forged):

* random bytes of random length,
* well-formed Control packets with random discriminators (unknown sessions),
* Down packets with Your Discriminator 0 from spoofed addresses of the lab's
  subnet (unknown peers),

to TARGET port 3784, then prints the number of packets sent.  Only addresses of
198.51.100.0/24 are used, inside namespaces the test made.  Bounded in time.
"""

from __future__ import annotations

import random
import socket
import struct
import sys
import time


def checksum_free_udp(src: bytes, dst: bytes, sport: int, payload: bytes, ttl: int) -> bytes:
    """IPv4 + UDP headers (UDP checksum 0: allowed over IPv4) + payload."""
    udp = struct.pack("!HHHH", sport, 3784, 8 + len(payload), 0) + payload
    total = 20 + len(udp)
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0xC0, total, 0, 0, ttl, 17, 0, src, dst)
    return header + udp


def build(target: str, rng: random.Random, count: int) -> list[tuple[bytes, str]]:
    dst = socket.inet_aton(target)
    out = []
    for i in range(count):
        src_ip = f"198.51.100.{rng.randint(100, 254)}"
        kind = i % 3
        if kind == 0:
            payload = rng.randbytes(rng.randint(0, 80))
        elif kind == 1:
            payload = struct.pack(
                "!BBBBIIIII",
                0x20,
                0xC0,
                3,
                24,
                rng.getrandbits(32) | 1,
                rng.getrandbits(32) | 1,
                100_000,
                100_000,
                0,
            )
        else:
            payload = struct.pack(
                "!BBBBIIIII", 0x20, 0x40, 3, 24, rng.getrandbits(32) | 1, 0, 100_000, 100_000, 0
            )
        ttl = 255 if rng.random() < 0.7 else rng.randint(1, 254)
        packet = checksum_free_udp(
            socket.inet_aton(src_ip), dst, rng.randint(49152, 65535), payload, ttl
        )
        out.append((packet, target))
    return out


def main() -> int:
    target, seconds = sys.argv[1], float(sys.argv[2])
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    rng = random.Random(seed)
    packets = build(target, rng, 4096)
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    sendto = sock.sendto
    sent = errors = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for packet, dest in packets[:512]:
            try:
                sendto(packet, (dest, 0))
                sent += 1
            except OSError:
                errors += 1
        packets = packets[512:] + packets[:512]
    print(sent, errors, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
