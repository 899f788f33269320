"""Turns of background work (aiobfd.engine.turns), on a fake clock."""

from __future__ import annotations

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
