"""The receive hold-off follows sessions that come and go, in O(1) each."""

from __future__ import annotations

import random
import socket

from aiobfd.config import PeerSpec
from aiobfd.engine import Daemon
from aiobfd.engine.receive import RX_HOLDOFF_AUTO_US
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
