"""Timer arithmetic of RFC 5880 §6.8.2-§6.8.4 and §6.8.7, in integer microseconds."""

from __future__ import annotations

from typing import Protocol


class RandomSource(Protocol):
    """What the core needs from a random generator (``random.Random`` fits)."""

    def random(self) -> float: ...

    def getrandbits(self, k: int, /) -> int: ...


class SharedInstants(Protocol):
    """Instants other sessions already transmit at (``schedule.Schedule`` fits)."""

    def pick(self, earliest: int, latest: int, rng: RandomSource) -> int | None: ...

    def full(self, instant: int) -> bool: ...


def transmit_interval(desired_min_tx_us: int, remote_min_rx_us: int) -> int:
    """RFC 5880 §6.8.2/§6.8.7: never faster than the remote is willing to receive."""
    return max(desired_min_tx_us, remote_min_rx_us)


#: Finest transmit grid: below it aligning transmissions saves nothing.
TX_GRID_MIN_US = 256


def jitter_bounds(interval_us: int, detect_mult: int) -> tuple[int, int]:
    """RFC 5880 §6.8.7: the range a jittered interval must fall in, [low, high).

    75-100 % of the nominal interval; 75-90 % with a Detect Mult of 1.
    """
    low = interval_us * 3 // 4
    high = interval_us * 9 // 10 if detect_mult == 1 else interval_us
    return max(1, low), max(1, high)


def tx_grid(interval_us: int, detect_mult: int) -> int:
    """The step (µs) a session's periodic transmissions may be aligned to.

    A power of two no larger than a third of the jitter window, so that every
    window holds at least three grid points to choose from at random; 0 when
    the window is too narrow to be worth aligning.  Powers of two nest: the
    instants of a coarse grid are instants of every finer one, so sessions of
    different intervals still meet on common instants.
    """
    low, high = jitter_bounds(interval_us, detect_mult)
    step = (high - low) // 3
    if step < TX_GRID_MIN_US:
        return 0
    return 1 << (step.bit_length() - 1)


def jittered(interval_us: int, detect_mult: int, rng: RandomSource) -> int:
    """RFC 5880 §6.8.7: the interval reduced by a random 0-25 % (10-25 % with
    a Detect Mult of 1, which MUST keep it at most 90 % of the nominal one)."""
    low, high = jitter_bounds(interval_us, detect_mult)
    return next_transmission(0, low, high, rng)


def next_transmission(
    last_us: int, low_us: int, high_us: int, rng: RandomSource, grid_us: int = 0
) -> int:
    """When the periodic packet after one sent at ``last_us`` is due (§6.8.7).

    ``low_us``/``high_us`` are the :func:`jitter_bounds` of the interval: the
    packet is due a random time within them after ``last_us``.  With
    ``grid_us`` (:func:`tx_grid`) the instant is drawn at random among the
    multiples of ``grid_us`` inside that window instead, so that transmissions
    of many sessions fall on common instants and go out in one wake-up of the
    daemon; each interval is still within the window, and still random.
    """
    if grid_us:
        first = -(-(last_us + low_us) // grid_us)
        last = (last_us + high_us - 1) // grid_us
        if last >= first:
            return (first + int(rng.random() * (last - first + 1))) * grid_us
    return last_us + low_us + int((high_us - low_us) * rng.random())


def aligned_transmission(
    last_us: int,
    low_us: int,
    high_us: int,
    rng: RandomSource,
    grid_us: int,
    shared: SharedInstants | None,
) -> int:
    """:func:`next_transmission` for a session that shares instants with others.

    An instant others already transmit at, if the window holds one with room
    (``shared.pick``); else a point of the grid; else, when that point holds a
    full cohort already, a point of a grid twice as fine, and so on down to
    :data:`TX_GRID_MIN_US`, the first one not full (off every grid only when
    all of these are).  Without the last steps every session would end up on
    the grid's few points (a 65 ms grid at 1 s intervals: 15 instants a
    second), hundreds a point with thousands of sessions, and the last of
    them served tens of milliseconds late.  The finer grids keep the instants
    apart as they multiply: instants drawn anywhere fall close together by
    chance, and the cohorts of two or three of them, served back to back, made
    the last session of the cluster 5-8 ms late at 10,000 sessions @ 1 s
    (simulated: 1.2 % of transmissions; on the grids none, max 3.6 ms).
    """
    if shared is not None:
        at = shared.pick(last_us + low_us, last_us + high_us, rng)
        if at is not None:
            return at
    at = next_transmission(last_us, low_us, high_us, rng, grid_us)
    if shared is None:
        return at
    while grid_us and shared.full(at):
        grid_us >>= 1  # the grids nest: a coarser point is a point of the finer one
        if grid_us < TX_GRID_MIN_US:
            return next_transmission(last_us, low_us, high_us, rng)
        at = next_transmission(last_us, low_us, high_us, rng, grid_us)
    return at


def detection_time(
    remote_detect_mult: int, required_min_rx_us: int, remote_desired_tx_us: int
) -> int:
    """RFC 5880 §6.8.4, Asynchronous mode: the remote's multiplier times the
    larger of our Required Min RX and the remote's last Desired Min TX."""
    return remote_detect_mult * max(required_min_rx_us, remote_desired_tx_us)
