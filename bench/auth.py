"""Per-packet cost of RFC 5880 §6.7 authentication, for each Auth Type.

    python bench/auth.py [--packets N] [--repeat R]

Prints, in microseconds per packet (best of R runs of N packets):

* ``encode``  - :meth:`Authenticator.encode`: the packet serialised and signed;
* ``verify``  - :meth:`Authenticator.verify` on an already decoded packet
  (sequence window and digest), which is what the session adds to a receive;
* ``plain``   - :func:`aiobfd.protocol.packet.encode` / ``decode`` without
  authentication, for scale.

Every verified packet is a fresh one from an in-order stream, so the
meticulous types pay their real path (no replay drops).
"""

from __future__ import annotations

import argparse
import random
import timeit

from aiobfd.protocol.auth import AuthConfig, Authenticator
from aiobfd.protocol.packet import AuthType, ControlPacket, Diag, State, decode, encode

TYPES = [
    AuthType.SIMPLE_PASSWORD,
    AuthType.KEYED_MD5,
    AuthType.METICULOUS_KEYED_MD5,
    AuthType.KEYED_SHA1,
    AuthType.METICULOUS_KEYED_SHA1,
]
PACKET = ControlPacket(State.UP, Diag.NO_DIAGNOSTIC, 0, 3, 0x1111, 0x2222, 50_000, 50_000)
DETECT_US = 150_000


def best_us(fn: object, packets: int, repeat: int) -> float:
    """Best of ``repeat`` runs of ``fn`` (which handles ``packets`` packets), per packet."""
    times = timeit.repeat(fn, number=1, repeat=repeat)  # type: ignore[arg-type]
    return min(times) / packets * 1e6


def bench_type(auth_type: AuthType, packets: int, repeat: int) -> tuple[float, float]:
    cfg = AuthConfig.single(auth_type, 1, b"bench-secret")
    sender = Authenticator(cfg, random.Random(1))
    pkt = PACKET

    def run_encode() -> None:
        enc = sender.encode
        for _ in range(packets):
            enc(pkt)

    # One in-order stream per run, prepared outside the timing.
    streams = []
    for _ in range(repeat):
        wires = [sender.encode(pkt) for _ in range(packets)]
        streams.append([(decode(w), w) for w in wires])
    runs = iter(streams)

    def run_verify() -> None:
        receiver = Authenticator(cfg, random.Random(2))
        verify = receiver.verify
        now = 0
        for p, w in next(runs):
            now += 1_000
            verify(p, w, now, DETECT_US)

    return best_us(run_encode, packets, repeat), best_us(run_verify, packets, repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    n, r = args.packets, args.repeat

    wire = encode(PACKET)

    def plain_encode() -> None:
        for _ in range(n):
            encode(PACKET)

    def plain_decode() -> None:
        for _ in range(n):
            decode(wire)

    print(f"{'type':<24}{'encode us':>11}{'verify us':>11}")
    print(f"{'(none: plain codec)':<24}{best_us(plain_encode, n, r):>11.2f}", end="")
    print(f"{best_us(plain_decode, n, r):>11.2f}  (decode)")
    for auth_type in TYPES:
        enc, ver = bench_type(auth_type, n, r)
        print(f"{auth_type.name.lower():<24}{enc:>11.2f}{ver:>11.2f}")


if __name__ == "__main__":
    main()
