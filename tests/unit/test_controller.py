"""The controller reads Stalled and the backoff from the status: at start and after every run. No database."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from reconciler import status as st
from reconciler.config import Config
from reconciler.reconcile.controller import Controller
from reconciler.reconcile.result import Result
from reconciler.status import Observation, Outcome, Reason

REV = "a" * 64


class Env:
    """Statuses as the loop leaves them, and a run function that finishes them like the loop does."""

    def __init__(self, outcome: Outcome = Outcome.SUCCESS) -> None:
        self.statuses: dict[str, st.EnvironmentStatus] = {}
        self.outcome = outcome
        self.runs: list[str] = []
        self.ran = threading.Event()

    def run(self, name: str) -> Result:
        now = datetime.now(UTC)
        prev = self.statuses.get(name) or st.initial_status(name, now)
        obs = Observation(self.outcome, now, REV, drifted=False, error_reason=Reason.APPLY_FAILED, error="boom")
        self.statuses[name] = st.finish(prev, obs)
        self.runs.append(name)
        self.ran.set()
        return Result(self.outcome, None if self.outcome is Outcome.TERMINAL else timedelta(seconds=60))


@pytest.fixture()
def config() -> Config:
    return Config.model_validate(
        {"environments": {"dev": {"dsn": "x", "interval": "60s"}}, "daemon": {"jitter": 0, "backoff_base": "1s"}}
    )


@pytest.fixture()
def controllers() -> Iterator[list[Controller]]:
    made: list[Controller] = []
    yield made
    for c in made:
        c.stop(timedelta(seconds=5))


def start(config: Config, env: Env, made: list[Controller]) -> Controller:
    c = Controller(config.daemon, dict(config.environments), env.run, env.statuses.get)
    made.append(c)
    c.start()
    return c


def stalled_status(at: datetime) -> st.EnvironmentStatus:
    obs = Observation(Outcome.TERMINAL, at, REV, error="apply failed", error_reason=Reason.APPLY_FAILED)
    return st.finish(st.initial_status("dev", at), obs)


def test_a_stalled_environment_stays_paused_until_unstalled(config: Config, controllers: list[Controller]) -> None:
    env = Env()
    env.statuses["dev"] = stalled_status(datetime.now(UTC))
    c = start(config, env, controllers)
    assert c.next_run("dev") is None and c.is_stalled("dev")
    assert not c.trigger("dev", "approval of another plan")
    assert not env.ran.wait(0.5) and env.runs == []
    assert c.trigger("dev", "desired_state_changed", unstall=True)
    assert not c.is_stalled("dev")
    assert env.ran.wait(5) and env.runs == ["dev"]
    assert not env.statuses["dev"].stalled


def test_a_terminal_run_pauses_by_the_status(config: Config, controllers: list[Controller]) -> None:
    env = Env(Outcome.TERMINAL)
    c = start(config, env, controllers)
    assert env.ran.wait(5)
    deadline = datetime.now(UTC) + timedelta(seconds=5)
    while c.next_run("dev") is not None and datetime.now(UTC) < deadline:
        threading.Event().wait(0.05)
    assert c.next_run("dev") is None and c.is_stalled("dev") and env.statuses["dev"].stalled


def test_an_environment_in_backoff_first_runs_when_the_backoff_ends(
    config: Config, controllers: list[Controller]
) -> None:
    env = Env()
    now = datetime.now(UTC)
    retry_at = now + timedelta(minutes=3)
    env.statuses["dev"] = replace(st.initial_status("dev", now), consecutive_failures=4, retry_at=retry_at)
    c = start(config, env, controllers)
    assert c.next_run("dev") == retry_at
    assert not c.is_stalled("dev")


def test_a_backoff_that_ended_while_stopped_runs_at_once(config: Config, controllers: list[Controller]) -> None:
    env = Env()
    past = datetime.now(UTC) - timedelta(minutes=3)
    env.statuses["dev"] = replace(st.initial_status("dev", past), consecutive_failures=4, retry_at=past)
    start(config, env, controllers)
    assert env.ran.wait(5) and env.runs == ["dev"]
