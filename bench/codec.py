"""Cost of the Control packet codec and of Session.receive(), per packet.

Run as ``python bench/codec.py``.  Prints the best of several timeit repeats,
in microseconds per call; the target for encode + decode is under 3 us.
"""

from __future__ import annotations

import argparse
import random
import sys
import timeit
from collections.abc import Callable

from aiobfd.protocol.packet import (
    FLAG_AUTH,
    FLAG_FINAL,
    FLAG_POLL,
    AuthSection,
    AuthType,
    ControlPacket,
    Diag,
    State,
    decode,
    encode,
)
from aiobfd.protocol.session import Session, SessionConfig

TARGET_US = 3.0

PACKET = ControlPacket(
    State.UP, Diag.NO_DIAGNOSTIC, 0, 3, 0x1111_1111, 0x2222_2222, 300_000, 300_000
)
WITH_AUTH = PACKET._replace(
    flags=FLAG_AUTH,
    auth=AuthSection(AuthType.KEYED_SHA1, 1, b"\x00" + (7).to_bytes(4, "big") + bytes(20)),
)


def best_us(func: Callable[[], object], number: int, repeat: int) -> float:
    """Best time per call over ``repeat`` runs of ``number`` calls, in microseconds."""
    return min(timeit.repeat(func, number=number, repeat=repeat)) / number * 1e6


def up_session() -> tuple[Session, ControlPacket]:
    """A session that is Up with its initial Poll answered, and the packet it keeps getting."""
    s = Session(SessionConfig(300_000, 300_000, 3), 0x2222_2222, now=0, rng=random.Random(1))
    s.receive(PACKET._replace(state=State.DOWN, your_discr=0), 0)
    s.receive(PACKET._replace(state=State.INIT), 1)
    s.handle_timer(1)
    s.receive(PACKET._replace(flags=FLAG_FINAL), 2)
    s.datagrams_to_send()
    while s.next_event() is not None:
        pass
    assert s.state is State.UP and not s.poll_active
    return s, PACKET


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--number", type=int, default=50_000, help="calls per repeat")
    parser.add_argument("-r", "--repeat", type=int, default=5, help="repeats; the best counts")
    args = parser.parse_args(argv)
    n, r = args.number, args.repeat

    data = encode(PACKET)
    auth_data = encode(WITH_AUTH)
    assert decode(data) == PACKET and decode(auth_data) == WITH_AUTH

    session, incoming = up_session()
    clock = iter(range(10, 1 << 62, 10))  # a fake clock: 10 us between packets

    def receive() -> None:
        session.receive(incoming, next(clock))

    poll = PACKET._replace(flags=FLAG_POLL)
    poll_session, _ = up_session()
    poll_clock = iter(range(10, 1 << 62, 10))

    def receive_poll() -> None:
        poll_session.receive(poll, next(poll_clock))
        poll_session.datagrams_to_send()

    rows = [
        ("encode", best_us(lambda: encode(PACKET), n, r)),
        ("decode", best_us(lambda: decode(data), n, r)),
        ("encode+decode", best_us(lambda: decode(encode(PACKET)), n, r)),
        ("encode (SHA1 auth section)", best_us(lambda: encode(WITH_AUTH), n, r)),
        ("decode (SHA1 auth section)", best_us(lambda: decode(auth_data), n, r)),
        ("Session.receive (Up, periodic)", best_us(receive, n, r)),
        ("Session.receive (Poll -> Final)", best_us(receive_poll, n // 4, r)),
        (
            "decode + Session.receive",
            best_us(lambda: session.receive(decode(data), next(clock)), n, r),
        ),
    ]
    assert session.state is State.UP and poll_session.state is State.UP

    print(f"Python {sys.version.split()[0]}, best of {r} x {n} calls, microseconds per call")
    width = max(len(name) for name, _ in rows)
    for name, us in rows:
        print(f"  {name:<{width}}  {us:7.3f} us")
    codec = dict(rows)["encode+decode"]
    verdict = "OK" if codec < TARGET_US else "ABOVE TARGET"
    print(f"encode+decode {codec:.3f} us vs target {TARGET_US:.1f} us: {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
