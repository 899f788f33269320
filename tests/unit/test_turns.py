"""Turns of background work (aiobfd.engine.turns), on a fake clock."""

from __future__ import annotations

import asyncio

from aiobfd.engine.turns import TURN_BUDGET_US, Turn


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000

    def __call__(self) -> int:
        return self.now


def steps_in_a_turn(turn: Turn, clock: Clock, step_us: int, limit: int = 1000) -> int:
    """Steps of ``step_us`` each until the turn says it is over."""
    turn.begin()
    for n in range(1, limit + 1):
        clock.now += step_us
        if turn.over():
            return n
    return limit


def test_a_turn_ends_before_its_budget_would_be_passed() -> None:
    clock = Clock()
    turn = Turn(clock, lambda: None)
    # 100 us steps: the tenth ends the turn at the budget, not one step past it.
    assert steps_in_a_turn(turn, clock, 100) == TURN_BUDGET_US // 100
    # One step is always taken, however long.
    assert steps_in_a_turn(turn, clock, 5 * TURN_BUDGET_US) == 1


def test_a_turn_ends_before_the_next_wakeup() -> None:
    clock = Clock()
    wakeup: list[int | None] = [None]
    turn = Turn(clock, lambda: wakeup[0])
    due = wakeup[0] = clock.now + 350
    # 100 us steps: after the third (at 300 us), a fourth would reach 400 > 350.
    assert steps_in_a_turn(turn, clock, 100) == 3
    assert clock.now <= due
    # A wake-up later than the budget changes nothing.
    wakeup[0] = clock.now + 10 * TURN_BUDGET_US
    assert steps_in_a_turn(turn, clock, 100) == TURN_BUDGET_US // 100


def test_a_wakeup_already_due_still_lets_one_step_run() -> None:
    clock = Clock()
    turn = Turn(clock, lambda: clock.now - 10)
    assert steps_in_a_turn(turn, clock, 1) == 1


def test_the_budget_is_the_callers() -> None:
    clock = Clock()
    turn = Turn(clock, lambda: None, budget_us=10_000)
    assert steps_in_a_turn(turn, clock, 1_000) == 10


def test_a_turn_is_begun_when_made() -> None:
    clock = Clock()
    turn = Turn(clock, lambda: None)
    clock.now += TURN_BUDGET_US // 2
    assert not turn.over()
    clock.now += TURN_BUDGET_US // 2 + 1
    assert turn.over()


async def test_pause_yields_only_when_the_turn_is_over_and_begins_the_next() -> None:
    clock = Clock()
    turn = Turn(clock, lambda: None)
    ran: list[str] = []
    loop = asyncio.get_running_loop()
    loop.call_soon(ran.append, "other")
    clock.now += 100
    assert not await turn.pause() and ran == []  # room left: no yield
    clock.now += TURN_BUDGET_US
    assert await turn.pause() and ran == ["other"]  # over: the loop ran the rest
    clock.now += 100
    assert not turn.over()  # the next turn began at the yield
