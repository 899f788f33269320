"""Timer arithmetic (RFC 5880 §6.8.2, §6.8.4, §6.8.7) with a rigged random source."""

from __future__ import annotations

import random

import pytest

from aiobfd.protocol.timers import (
    detection_time,
    jitter_bounds,
    jittered,
    next_transmission,
    transmit_interval,
    tx_grid,
)


class Fixed:
    """A RandomSource whose random() always answers ``value``."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value

    def getrandbits(self, k: int, /) -> int:
        return 1


LOWEST = 0.0
HIGHEST = 1.0 - 2**-53  # the largest value random.random() can return


@pytest.mark.parametrize("mult", [2, 3, 255])
def test_jitter_bounds(mult: int) -> None:
    assert jittered(1_000_000, mult, Fixed(LOWEST)) == 750_000
    # A reduction of 0 % is allowed ("by a random value of 0 to 25 %").
    assert 999_999 <= jittered(1_000_000, mult, Fixed(HIGHEST)) <= 1_000_000
    assert jittered(1_000_000, mult, Fixed(0.5)) == 875_000


def test_jitter_bounds_with_detect_mult_1() -> None:
    # §6.8.7: no more than 90 % of the interval when Detect Mult is 1.
    assert jittered(1_000_000, 1, Fixed(LOWEST)) == 750_000
    assert 899_999 <= jittered(1_000_000, 1, Fixed(HIGHEST)) <= 900_000
    assert jittered(1_000_000, 1, Fixed(0.5)) == 825_000


@pytest.mark.parametrize("interval", [1, 2, 3])
def test_jitter_never_zero(interval: int) -> None:
    assert jittered(interval, 3, Fixed(LOWEST)) >= 1
    assert jittered(interval, 1, Fixed(LOWEST)) >= 1


@pytest.mark.parametrize(("mult", "high"), [(1, 0.90), (3, 1.0)])
def test_jitter_distribution(mult: int, high: float) -> None:
    rng = random.Random(5)
    values = [jittered(100_000, mult, rng) for _ in range(5_000)]
    assert all(75_000 <= v <= 100_000 * high for v in values)
    # Spread over the whole range, not stuck at one end.
    assert min(values) < 76_000
    assert max(values) > 100_000 * high - 1_000
    mean = sum(values) / len(values)
    assert abs(mean - 100_000 * (0.75 + high) / 2) < 1_000


def test_transmit_interval() -> None:
    assert transmit_interval(300_000, 1) == 300_000
    assert transmit_interval(300_000, 1_000_000) == 1_000_000
    assert transmit_interval(300_000, 0) == 300_000


def test_detection_time() -> None:
    # Remote Detect Mult x max(our Required Min RX, remote Desired Min TX).
    assert detection_time(3, 300_000, 100_000) == 900_000
    assert detection_time(5, 200_000, 500_000) == 2_500_000
    assert detection_time(1, 50_000, 50_000) == 50_000
    assert detection_time(0, 300_000, 300_000) == 0  # remote not heard yet


# ------------------------------------------------------------ aligned transmission


@pytest.mark.parametrize(
    ("interval", "mult", "grid"),
    [
        (10_000, 3, 512),
        (50_000, 3, 4_096),
        (300_000, 3, 16_384),
        (1_000_000, 3, 65_536),
        (1_000_000, 1, 32_768),
        (2_000, 3, 0),  # a 500 us window: not worth aligning
    ],
)
def test_tx_grid(interval: int, mult: int, grid: int) -> None:
    assert tx_grid(interval, mult) == grid


@pytest.mark.parametrize("interval", [6_000, 10_000, 50_000, 300_000, 1_000_000, 2_500_000])
@pytest.mark.parametrize("mult", [1, 3])
def test_aligned_transmissions_stay_in_the_jitter_window(interval: int, mult: int) -> None:
    rng = random.Random(7)
    grid = tx_grid(interval, mult)
    assert grid
    low, high = jitter_bounds(interval, mult)
    seen = set()
    for _ in range(2_000):
        last = rng.randrange(10**9)
        at = next_transmission(last, low, high, rng, grid)
        assert at % grid == 0
        assert low <= at - last < high  # RFC 5880 §6.8.7
        seen.add((at - last) * 4 // (high - low + 1))
    # Still random: intervals from every quarter of the window.
    assert len(seen) >= 3


def test_aligned_transmissions_of_sessions_meet() -> None:
    # Two sessions of different intervals, started apart, transmit on common instants.
    rng = random.Random(3)
    a = {
        next_transmission(t, 37_500, 50_000, rng, tx_grid(50_000, 3)) for t in range(0, 10**6, 999)
    }
    b = {
        next_transmission(t, 75_000, 100_000, rng, tx_grid(100_000, 3))
        for t in range(0, 10**6, 1013)
    }
    assert len(a & b) > len(b) // 4


def test_unaligned_transmission_is_plain_jitter() -> None:
    low, high = jitter_bounds(1_000_000, 3)
    assert next_transmission(1_000, low, high, Fixed(0.5)) == 1_000 + 875_000
    # A window with no grid point in it falls back to plain jitter too.
    assert next_transmission(0, 750, 1_000, Fixed(LOWEST), grid_us=4_096) == 750
