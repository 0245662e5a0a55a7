"""The controller: APScheduler drives the reconciles, one job per environment, bounded concurrency, requeue by
result.

* Each environment has an interval job (its ``interval``, with ``daemon.jitter`` as a fraction of it) on a
  thread pool of ``daemon.concurrency`` workers, so a hung or unreachable database occupies one worker, never
  the others. A job never overlaps itself (``max_instances=1``).
* After every run the job's next time comes from the :class:`~reconciler.reconcile.result.Result`: the
  interval (or earlier, when a maintenance window opens), the backoff after an error, or never (paused) while
  the environment's status says Stalled, until :meth:`Controller.trigger` is called with ``unstall=True``.
* Stalled is read from the status (the one owner, persisted), never kept here. At start a Stalled environment
  stays paused, and one in backoff is first run when its persisted backoff ends (``retry_at``).
* :meth:`Controller.trigger` runs an environment now (an approval, a new desired revision, a changed config);
  when it is running already, it runs again as soon as it finishes.
* A watch job (its own single worker) calls back every ``daemon.watch_interval``.
* :meth:`Controller.stop` stops scheduling and waits up to a grace period for running reconciles.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from ..config import DaemonConfig, EnvironmentConfig
from ..status import EnvironmentStatus
from .backoff import jittered
from .result import Outcome, Result

log = structlog.get_logger("reconciler.controller")

RunFn = Callable[[str], Result]
StatusFn = Callable[[str], EnvironmentStatus | None]
WATCH_JOB = "watch"


def _job_id(environment: str) -> str:
    return f"env:{environment}"


@dataclass
class _EnvState:
    config: EnvironmentConfig
    running: bool = False
    again: bool = False  # triggered while running: run again right after
    unstall: bool = False  # the next run goes ahead although the status says Stalled


class Controller:
    """Schedules reconciles of every environment; thread-safe."""

    def __init__(
        self,
        daemon: DaemonConfig,
        environments: dict[str, EnvironmentConfig],
        run: RunFn,
        status: StatusFn,
        *,
        watch: Callable[[], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._daemon = daemon
        self._run = run
        self._status = status
        self._watch = watch
        self._rng = rng or random.Random()
        self._lock = threading.Condition()
        self._envs = {name: _EnvState(cfg) for name, cfg in environments.items()}
        self._stopping = False
        self._started = False
        self._scheduler = BackgroundScheduler(
            executors={
                "default": ThreadPoolExecutor(max_workers=daemon.concurrency),
                "watch": ThreadPoolExecutor(max_workers=1),
            },
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
        )
        # "skipped: maximum number of running instances reached" is expected (a trigger while queued).
        logging.getLogger("apscheduler").setLevel(logging.ERROR)

    # -- lifecycle ------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._started and not self._stopping and bool(self._scheduler.running)

    def start(self) -> None:
        now = datetime.now(UTC)
        with self._lock:
            for name, state in self._envs.items():
                self._add_job(name, state.config, now)
            if self._watch is not None:
                self._scheduler.add_job(
                    self._run_watch,
                    IntervalTrigger(seconds=self._daemon.watch_interval.total_seconds(), timezone=UTC),
                    id=WATCH_JOB,
                    name="watch desired state and configuration",
                    executor="watch",
                )
            self._scheduler.start()
            self._started = True
        log.info("scheduler_started", environments=len(self._envs), concurrency=self._daemon.concurrency)

    def stop(self, grace: timedelta, *, abort: threading.Event | None = None) -> bool:
        """Stop scheduling; wait up to ``grace`` (or until ``abort`` is set) for running reconciles.

        True when none is left running.
        """
        with self._lock:
            if self._stopping:
                return not self._busy()
            self._stopping = True
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        deadline = datetime.now(UTC) + grace
        with self._lock:
            while self._busy():
                left = (deadline - datetime.now(UTC)).total_seconds()
                if left <= 0 or (abort is not None and abort.is_set()):
                    break
                self._lock.wait(min(left, 0.2))
            still = sorted(n for n, s in self._envs.items() if s.running)
        if still:
            log.warning("shutdown_grace_expired", running=still, grace_seconds=grace.total_seconds())
        return not still

    def _busy(self) -> bool:
        return any(s.running for s in self._envs.values())

    # -- environments ---------------------------------------------------------------------------------
    def _add_job(self, name: str, cfg: EnvironmentConfig, now: datetime) -> None:
        interval = cfg.interval.total_seconds()
        self._scheduler.add_job(
            self._run_env,
            IntervalTrigger(seconds=interval, jitter=interval * self._daemon.jitter, timezone=UTC),
            args=[name],
            id=_job_id(name),
            name=f"reconcile {name}",
            replace_existing=True,
            next_run_time=self._first_run(name, interval, now),
        )

    def _first_run(self, name: str, interval: float, now: datetime) -> datetime | None:
        """When a new job first runs: never (paused) while Stalled, when a persisted backoff ends, or soon."""
        state = self._envs[name]
        status = self._status(name)
        if not state.unstall and status is not None:
            if status.stalled:
                log.info("environment_stays_stalled", environment=name)
                return None
            if status.retry_at is not None and status.retry_at > now:
                log.info("backoff_resumed", environment=name, retry_at=status.retry_at.isoformat())
                return status.retry_at
        # Spread the first runs over a fraction of the interval rather than all at once.
        return now + timedelta(seconds=interval * self._daemon.jitter * self._rng.random())

    def _stalled(self, name: str, state: _EnvState) -> bool:
        """Stalled as the status says, unless a trigger asked to run it anyway (caller holds the lock)."""
        status = self._status(name)
        return not state.unstall and status is not None and status.stalled

    def set_environment(self, name: str, cfg: EnvironmentConfig) -> None:
        """Add an environment or change its configuration; either way it is reconciled now (and un-stalled)."""
        with self._lock:
            state = self._envs.get(name)
            if state is None:
                self._envs[name] = _EnvState(cfg, unstall=True)
                if self._started:
                    self._add_job(name, cfg, datetime.now(UTC))
                return
            changed_interval = state.config.interval != cfg.interval
            state.config = cfg
            if changed_interval and self._started:
                interval = cfg.interval.total_seconds()
                self._scheduler.reschedule_job(
                    _job_id(name),
                    trigger=IntervalTrigger(seconds=interval, jitter=interval * self._daemon.jitter, timezone=UTC),
                )
        self.trigger(name, "config_changed", unstall=True)

    def remove_environment(self, name: str) -> None:
        with self._lock:
            self._envs.pop(name, None)
            with contextlib.suppress(JobLookupError):
                self._scheduler.remove_job(_job_id(name))

    def environments(self) -> list[str]:
        with self._lock:
            return sorted(self._envs)

    def is_stalled(self, name: str) -> bool:
        with self._lock:
            state = self._envs.get(name)
            return state is not None and self._stalled(name, state)

    def is_running(self, name: str) -> bool:
        """Whether a pass of ``name`` runs now."""
        with self._lock:
            state = self._envs.get(name)
            return state is not None and state.running

    def next_run(self, name: str) -> datetime | None:
        job = self._scheduler.get_job(_job_id(name))
        return job.next_run_time if job is not None else None

    def trigger(self, name: str, why: str, *, unstall: bool = False) -> bool:
        """Reconcile ``name`` now (or right after its current run). A stalled environment only with ``unstall``."""
        with self._lock:
            state = self._envs.get(name)
            if state is None or self._stopping:
                return False
            if not unstall and self._stalled(name, state):
                log.info("trigger_ignored_stalled", environment=name, why=why)
                return False
            state.unstall = state.unstall or unstall
            if state.running:
                state.again = True
            elif self._started:
                self._schedule_now(name)
        log.info("reconcile_triggered", environment=name, why=why)
        return True

    def trigger_all(self, why: str, *, unstall: bool = False) -> None:
        for name in self.environments():
            self.trigger(name, why, unstall=unstall)

    # -- runs -----------------------------------------------------------------------------------------
    def _schedule_now(self, name: str) -> None:
        self._schedule(name, datetime.now(UTC))

    def _schedule(self, name: str, at: datetime) -> None:
        try:
            job = self._scheduler.get_job(_job_id(name))
            if job is None:
                return
            if job.next_run_time is None:
                self._scheduler.resume_job(_job_id(name))
            self._scheduler.modify_job(_job_id(name), next_run_time=at)
        except JobLookupError:
            pass

    def _run_env(self, name: str) -> None:
        with self._lock:
            state = self._envs.get(name)
            if state is None or self._stopping or self._stalled(name, state):
                return
            state.running = True
            state.again = False
            state.unstall = False
        result: Result | None = None
        try:
            result = self._run(name)
        except BaseException:  # the loop turns errors into results; this is the last guard of a worker
            log.exception("reconcile_worker_crashed", environment=name)
            raise
        finally:
            with self._lock:
                state.running = False
                self._after_run(name, state, result)
                self._lock.notify_all()

    def _after_run(self, name: str, state: _EnvState, result: Result | None) -> None:
        if self._stopping or self._envs.get(name) is not state:
            return
        now = datetime.now(UTC)
        if state.again:
            self._schedule(name, now)
            return
        if self._stalled(name, state):
            with contextlib.suppress(JobLookupError):
                self._scheduler.pause_job(_job_id(name))
            return
        delay = result.requeue_after if result is not None and result.requeue_after is not None else None
        if delay is None:
            delay = self._daemon.backoff_base
        if result is not None and result.outcome is not Outcome.ERROR:
            delay = jittered(delay, self._daemon.jitter, self._rng.random)
        self._schedule(name, now + delay)

    def _run_watch(self) -> None:
        if self._watch is None or self._stopping:
            return
        try:
            self._watch()
        except Exception:
            log.exception("watch_failed")
