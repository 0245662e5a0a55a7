"""The executor's pure parts (no database): units, the timeouts a step runs with, retry backoff; the config keys."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path

import pytest

from reconciler.apply import RetryPolicy, Timeouts, units
from reconciler.config import EnvironmentConfig, load_config
from reconciler.errors import ConfigError
from reconciler.model import ExecStep, Statement, transaction_units

CIC = 'create index concurrently "i" on "public"."t" using btree ("a")'


@pytest.mark.parametrize(
    ("steps", "skip", "expected"),
    [
        ([ExecStep("a"), ExecStep("b"), ExecStep("c")], (), [[0, 1, 2]]),
        ([ExecStep("a"), ExecStep(CIC, False), ExecStep("c")], (), [[0], [1], [2]]),
        (
            [ExecStep("a"), ExecStep("b"), ExecStep(CIC, False), ExecStep(CIC, False), ExecStep("e"), ExecStep("f")],
            (),
            [[0, 1], [2], [3], [4, 5]],
        ),
        ([ExecStep("a"), ExecStep("b"), ExecStep(CIC, False), ExecStep("d"), ExecStep("e")], (0, 1, 2), [[3, 4]]),
        ([ExecStep("a"), ExecStep("b")], (0, 1), []),
    ],
    ids=["one-transaction", "split-by-concurrent", "mixed", "resume-after-committed", "all-done"],
)
def test_units(steps: list[ExecStep], skip: tuple[int, ...], expected: list[list[int]]) -> None:
    assert [[i for i, _ in unit] for unit in units(steps, skip)] == expected


def test_a_step_runs_with_its_own_timeouts_else_the_environments() -> None:
    # The executor parses no SQL: which statement is a concurrent build is the hazard engine's call (its tests).
    env = EnvironmentConfig(dsn="x", statement_timeout="15m", concurrent_statement_timeout="3h", lock_timeout="2s")  # type: ignore[arg-type]
    own = ExecStep(CIC, False, statement_timeout=timedelta(hours=3), lock_timeout=timedelta(milliseconds=300))
    assert Timeouts.of(own, env) == Timeouts(statement=timedelta(hours=3), lock=timedelta(milliseconds=300))
    assert Timeouts.of(ExecStep(CIC, transactional=False), env) == Timeouts(timedelta(minutes=15), timedelta(seconds=2))
    zero = ExecStep("select 1", statement_timeout=timedelta(0), lock_timeout=timedelta(0))  # 0: no limit, as set
    assert Timeouts.of(zero, env) == Timeouts(timedelta(0), timedelta(0))


def test_backoff_is_bounded_jittered_and_grows() -> None:
    policy = RetryPolicy(5, timedelta(milliseconds=100), timedelta(seconds=1), random.Random(7))
    for attempt, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (9, 1.0)]:
        waits = [policy.backoff(attempt).total_seconds() for _ in range(200)]
        assert min(waits) >= ceiling / 2 - 1e-9
        assert max(waits) <= ceiling + 1e-9
        assert len(set(waits)) > 100  # jittered, not in lock step


def test_config_keys(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "environments:\n"
        "  prod:\n"
        "    dsn: postgresql://x/y\n"
        "    concurrent_statement_timeout: 4h\n"
        "    lock_retries: 3\n"
        "    lock_retry_backoff: 250ms\n"
        "    lock_retry_backoff_max: 10s\n"
        "    approvers: [alice, bob]\n"
        "    approvals_required: 2\n"
    )
    env = load_config(path).environments["prod"]
    assert env.concurrent_statement_timeout == timedelta(hours=4)
    assert (env.lock_retries, env.lock_retry_backoff, env.lock_retry_backoff_max) == (
        3,
        timedelta(milliseconds=250),
        timedelta(seconds=10),
    )
    assert env.approvers == ("alice", "bob") and env.approvals_required == 2
    defaults = EnvironmentConfig(dsn="x")
    assert defaults.lock_retries == 5 and defaults.approvals_required == 1 and defaults.approvers == ()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("approvers: [alice]\n    approvals_required: 2", "approvals_required is 2 but only 1 approver(s) are listed"),
        ("approvals_required: 0", "greater than or equal to 1"),
        ("lock_retries: -1", "greater than or equal to 0"),
        ("lock_retry_backoff: 5s\n    lock_retry_backoff_max: 1s", "lock_retry_backoff_max must not be smaller"),
    ],
)
def test_config_errors(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"environments:\n  prod:\n    dsn: postgresql://x/y\n    {body}\n")
    with pytest.raises(ConfigError, match=r"environments\.prod") as err:
        load_config(path)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("statements", "expected"),
    [
        ([Statement("a"), Statement("b")], [(1,), (1,)]),
        ([Statement("a"), Statement("i", steps=(ExecStep("ic", False),)), Statement("b")], [(1,), (2,), (3,)]),
        (
            [Statement("a", steps=(ExecStep("a1"), ExecStep("a2", False), ExecStep("a3"))), Statement("b")],
            [(1, 2, 3), (3,)],
        ),
    ],
)
def test_the_units_shown_to_approvers_are_the_executors(
    statements: list[Statement], expected: list[tuple[int, ...]]
) -> None:
    assert transaction_units(statements) == expected
    steps = [step for s in statements for step in s.execution()]
    owners = [i for i, s in enumerate(statements) for _ in s.execution()]
    executed: dict[int, set[int]] = {}
    for n, unit in enumerate(units(steps), 1):
        for j, _ in unit:
            executed.setdefault(owners[j], set()).add(n)
    assert [tuple(sorted(executed[i])) for i in range(len(statements))] == expected
