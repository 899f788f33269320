"""Timer arithmetic of RFC 5880 §6.8.2-§6.8.4 and §6.8.7, in integer microseconds."""

from __future__ import annotations

from typing import Protocol


class RandomSource(Protocol):
    """What the core needs from a random generator (``random.Random`` fits)."""

    def random(self) -> float: ...

    def getrandbits(self, k: int, /) -> int: ...


def transmit_interval(desired_min_tx_us: int, remote_min_rx_us: int) -> int:
    """RFC 5880 §6.8.2/§6.8.7: never faster than the remote is willing to receive."""
    return max(desired_min_tx_us, remote_min_rx_us)


def jittered(interval_us: int, detect_mult: int, rng: RandomSource) -> int:
    """RFC 5880 §6.8.7: reduce the interval by a random 0-25 %.

    With a Detect Mult of 1 the interval MUST be at most 90 % of the nominal
    one, so the reduction is then 10-25 %.
    """
    low = 0.75
    span = 0.15 if detect_mult == 1 else 0.25
    return max(1, int(interval_us * (low + span * rng.random())))


def detection_time(
    remote_detect_mult: int, required_min_rx_us: int, remote_desired_tx_us: int
) -> int:
    """RFC 5880 §6.8.4, Asynchronous mode: the remote's multiplier times the
    larger of our Required Min RX and the remote's last Desired Min TX."""
    return remote_detect_mult * max(required_min_rx_us, remote_desired_tx_us)
