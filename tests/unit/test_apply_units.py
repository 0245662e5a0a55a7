"""The executor's pure parts (no database): units, timeouts per statement, retry backoff; the new config keys."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path

import pytest

from reconciler.apply import RetryPolicy, Step, is_concurrent, statement_timeout_for, units
from reconciler.config import EnvironmentConfig, load_config
from reconciler.errors import ConfigError

CIC = 'create index concurrently "i" on "public"."t" using btree ("a")'


@pytest.mark.parametrize(
    ("steps", "skip", "expected"),
    [
        ([Step("a"), Step("b"), Step("c")], (), [[0, 1, 2]]),
        ([Step("a"), Step(CIC, False), Step("c")], (), [[0], [1], [2]]),
        (
            [Step("a"), Step("b"), Step(CIC, False), Step(CIC, False), Step("e"), Step("f")],
            (),
            [[0, 1], [2], [3], [4, 5]],
        ),
        ([Step("a"), Step("b"), Step(CIC, False), Step("d"), Step("e")], (0, 1, 2), [[3, 4]]),
        ([Step("a"), Step("b")], (0, 1), []),
    ],
    ids=["one-transaction", "split-by-concurrent", "mixed", "resume-after-committed", "all-done"],
)
def test_units(steps: list[Step], skip: tuple[int, ...], expected: list[list[int]]) -> None:
    assert [[i for i, _ in unit] for unit in units(steps, skip)] == expected


@pytest.mark.parametrize(
    ("sql", "concurrent"),
    [
        (CIC, True),
        ('create index "i" on "public"."t" using btree ("a")', False),
        ('drop index concurrently if exists "public"."i"', True),
        ('reindex (concurrently) index "public"."i"', True),
        ('alter table "public"."t" add column "c" int', False),
        ("create index concurrently broken syntax here (", True),
    ],
)
def test_is_concurrent(sql: str, concurrent: bool) -> None:
    assert is_concurrent(sql) is concurrent


def test_concurrent_builds_get_their_own_statement_timeout() -> None:
    env = EnvironmentConfig(dsn="x", statement_timeout="15m", concurrent_statement_timeout="3h", lock_timeout="2s")  # type: ignore[arg-type]
    assert statement_timeout_for(Step(CIC, transactional=False), env) == timedelta(hours=3)
    assert statement_timeout_for(Step('alter table "t" add column "c" int'), env) == timedelta(minutes=15)


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
