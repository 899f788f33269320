"""The receive hold-off follows sessions that come and go, in O(1) each."""

from __future__ import annotations

import asyncio
import random
import socket

from aiobfd.config import PeerSpec
from aiobfd.engine import Daemon
from aiobfd.engine.receive import RX_HOLDOFF_AUTO_US
from aiobfd.protocol.packet import State
from aiobfd.protocol.session import SessionConfig

MS = 1000


def brute_force(d: Daemon) -> int:
    rxs = [p.session.required_min_rx_us for p in d.peers.values()]
    return min([RX_HOLDOFF_AUTO_US, *(rx for rx in rxs if rx > 0)])


async def test_holdoff_is_the_shortest_receive_interval_through_adds_and_removals() -> None:
    d = Daemon([])
    await d.start()
    rng = random.Random(9468)
    try:
        assert d.receive.holdoff_in_force_us == RX_HOLDOFF_AUTO_US
        n = 0
        for _ in range(300):
            if d.peers and rng.random() < 0.45:
                d.remove_peer(rng.choice(list(d.peers)))
            else:
                n += 1
                rx = rng.choice([30, 50, 50, 300, 1000, 2000]) * MS
                cfg = SessionConfig(desired_min_tx_us=50 * MS, required_min_rx_us=rx)
                d.add_peer(PeerSpec(f"127.0.15.{n}", "127.0.15.250", socket.AF_INET, session=cfg))
            if rng.random() < 0.5:  # read it now and then, as wake-ups do
                assert d.receive.holdoff_in_force_us == brute_force(d)
        assert d.receive.holdoff_in_force_us == brute_force(d)
    finally:
        d.close()


async def test_a_lone_packet_costs_no_follow_up_wake_up() -> None:
    """One session at 100 ms: each packet of the peer comes alone, out of step
    with our transmissions.  It wakes the loop (the sockets are watched), and
    no follow-up read one hold-off later is armed for packets that are not
    coming: about one timer wake-up a transmission, not two.  (A packet that
    comes within two hold-offs of a drain is taken as a stream and followed
    up: a hold-off of 1 ms makes that rare, whatever the machine's load.)"""
    cfg = SessionConfig(desired_min_tx_us=100 * MS, required_min_rx_us=100 * MS, detect_mult=3)
    a = Daemon(
        [PeerSpec("127.0.0.2", "127.0.0.1", socket.AF_INET, session=cfg)], rx_holdoff_us=1 * MS
    )
    b = Daemon([PeerSpec("127.0.0.1", "127.0.0.2", socket.AF_INET, session=cfg)])
    await a.start()
    await b.start()
    try:
        for _ in range(100):
            if all(p.session.state is State.UP for d in (a, b) for p in d.peers.values()):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # the Poll Sequence after Up
        (peer,) = a.peers.values()
        timing, counters = a.wakeup.timing, peer.session.counters
        before = (timing.timer_wakeups, counters.packets_out, counters.packets_in)
        await asyncio.sleep(2)
        timers = timing.timer_wakeups - before[0]
        sent = counters.packets_out - before[1]
        assert counters.packets_in - before[2] >= 15  # the peer's packets kept coming
        assert sent >= 15 and timers <= sent + sent // 4 + 3, (timers, sent)
        assert peer.session.state is State.UP
    finally:
        a.close()
        b.close()
