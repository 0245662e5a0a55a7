"""Statements to steps and back: progress is counted in plan statements, whatever runs for them."""

from __future__ import annotations

from datetime import timedelta

from reconciler.apply import AppliedStatement
from reconciler.model import ExecStep, Statement
from reconciler.steps import StepMap

PLAN = [
    Statement("a"),
    Statement("b", steps=(ExecStep("b1"), ExecStep("b2", transactional=False), ExecStep("b3"))),
    Statement("c", transactional=False),
]


def done(j: int, sql: str, seconds: float = 1.0) -> AppliedStatement:
    return AppliedStatement(sql, timedelta(seconds=seconds), j)


def test_expand() -> None:
    m = StepMap.build(PLAN)
    assert m.steps == [ExecStep("a"), ExecStep("b1"), ExecStep("b2", False), ExecStep("b3"), ExecStep("c", False)]
    assert m.owners == [0, 1, 1, 1, 2]
    assert m.skip({0, 1}) == {0, 1, 2, 3}


def test_a_statement_counts_when_its_last_step_committed() -> None:
    m = StepMap.build(PLAN)
    # Units as execute_steps commits them: (a, b1), (b2), (b3), (c).
    assert m.finished([done(0, "a"), done(1, "b1")]) == [AppliedStatement("a", timedelta(seconds=1), 0)]
    assert m.finished([done(2, "b2")]) == []
    assert m.finished([done(3, "b3")]) == [AppliedStatement("b", timedelta(seconds=3), 1)]
    assert m.finished([done(4, "c", 2)]) == [AppliedStatement("c", timedelta(seconds=2), 2)]


def test_plain_steps_and_strings_map_one_to_one() -> None:
    m = StepMap.build([ExecStep("x", False), "y"])
    assert m.steps == [ExecStep("x", False), ExecStep("y")] and m.owners == [0, 1]


def test_steps_keep_their_timeouts() -> None:
    # What the engine decided for each step reaches the executor unchanged.
    timed = ExecStep("b1", False, timedelta(hours=2), timedelta(seconds=5), '"public"."i"')
    m = StepMap.build([Statement("b", steps=(timed,)), timed])
    assert m.steps == [timed, timed] and m.owners == [0, 1]
