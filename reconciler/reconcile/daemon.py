"""``reconciler run``: the reconcile loop, the scheduler, metrics and the HTTP API wired together.

Start-up creates the shared parts (state store, scratch server, embedded PostgreSQL) before any worker runs,
so workers share one :class:`~reconciler.service.Reconciler` safely. A watch job notices a new desired revision
(every environment is reconciled at once, stalled ones too) and a changed configuration file (changed
environments are reconciled at once; top-level changes need a restart and are logged as such).

SIGTERM or SIGINT: the API stops, scheduling stops, running reconciles get ``daemon.grace_period`` to finish;
after that the process leaves anyway and PostgreSQL rolls back the transaction in flight. The exit code is 0.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import structlog

from ..config import Config, load_config
from ..errors import ConfigError, DesiredStateError, PlanError, ReconcilerError
from ..model import PlanStatus
from ..obs.metrics import Metrics
from ..server.app import create_app
from ..server.auth import TokenAuth
from ..server.http import HttpServer
from ..service import EMBEDDED_SCHEME, Approver, Reconciler
from ..stats import row_counts
from ..status import EnvironmentStatus
from ..store import AuditRecord, PlanRecord
from ..store.store import AuditVerification
from ..windows import window_open
from .board import StatusBoard
from .controller import Controller
from .loop import ReconcileContext, reconcile
from .result import Outcome, Request, Result
from .sharding import Sharder, libpq_url

log = structlog.get_logger("reconciler.daemon")

# Top-level keys that a running daemon cannot take over from a changed file.
_RESTART_KEYS = ("desired_state", "scratch", "state", "embedded", "daemon", "server")
_INVALID = "invalid:"  # prefix of the desired-state marker when the desired state cannot be read


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _desired_changed(status: EnvironmentStatus, marker: str | None) -> bool:
    """Whether a readable desired state differs from the revision the status was last attempted at."""
    return marker is not None and not marker.startswith(_INVALID) and marker != status.last_attempted_revision


class Daemon:
    """One reconciler process: reconciles every environment on a schedule and serves metrics and the API."""

    def __init__(
        self,
        config: Config,
        *,
        listen: str | None = None,
        port: int | None = None,
        environ: dict[str, str] | None = None,
        watch_config: bool = True,
    ) -> None:
        self.config = config
        self._config_path = Path(config.source) if (watch_config and config.source) else None
        self._listen = listen if listen is not None else config.server.listen
        self.auth = TokenAuth.from_config(config, environ, listen=self._listen)
        self.metrics = Metrics()
        self.reconciler = Reconciler(config)
        self.status = StatusBoard(save=self._persist_status)
        self.context = ReconcileContext(self.reconciler, self.metrics, self.status)
        self.controller = Controller(
            config.daemon, dict(config.environments), self._reconcile, self.status.get, watch=self._watch
        )
        self.app = create_app(
            self,
            self.auth,
            listen=self._listen,
            allowed_hosts=config.server.allowed_hosts,
            tls=config.server.tls_cert is not None,
        )
        self._port = port if port is not None else config.server.port
        self.http: HttpServer | None = None
        self._desired_marker: str | None = None
        self._config_digest: str | None = None
        self._discovered_at = time.monotonic()  # fleets are discovered when the configuration is loaded
        self._approved_seen: set[int] = set()  # approved plans already seen (a first pass runs every environment)
        self._stop_requested = threading.Event()
        self._abort = threading.Event()
        self._closed = False
        self.sharder = self._make_sharder()
        self._statuses_fresh = False  # the board holds what the store has: a first share need not read it again

    # -- lifecycle ----------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        if self.http is None:
            raise RuntimeError("the daemon is not started")
        return self.http.url

    def start(self) -> None:
        """Create the shared resources, start the HTTP server and the scheduler. Raises ReconcilerError."""
        try:
            self._warm_up()
            try:
                server = self.config.server
                self.http = HttpServer(
                    self.app, self._listen, self._port, tls_cert=server.tls_cert, tls_key=server.tls_key
                )
            except OSError as exc:
                raise ConfigError(
                    f"cannot listen on {self._listen}:{self._port}: {exc.strerror or exc}",
                    path=self.config.source,
                    key="server.port",
                ) from exc
            self._desired_marker = self._read_desired_marker()
            self._config_digest = self._read_config_digest()
            self._load_statuses()
            self._first_share()
            # The first rendering of every series, made before the passes start: the first scrape (which a large
            # fleet's first passes would slow down) then finds one ready (see Metrics.render_for_scrape).
            self.metrics.render_for_scrape()
            self.http.start()
            self.controller.start()
        except BaseException:
            self.close()
            raise
        log.info(
            "daemon_started",
            url=self.http.url,
            environments=sorted(self.config.environments),
            concurrency=self.config.daemon.concurrency,
        )

    def _warm_up(self) -> None:
        reconciler = self.reconciler
        reconciler.store.ping()
        reconciler.scratch  # noqa: B018 - creates the scratch server (and the embedded server when it hosts scratch)
        if any(e.dsn.startswith(EMBEDDED_SCHEME) for e in self.config.environments.values()):
            reconciler.embedded  # noqa: B018 - started here, before workers share it

    def _persist_status(self, status: EnvironmentStatus) -> None:
        self.reconciler.store.save_status(status)

    def _load_statuses(self) -> None:
        """Fill the status board from the store; a Stalled environment whose desired revision changed while the
        daemon was stopped is un-stalled (one that is Stalled still stays paused)."""
        stored = self.reconciler.store.load_statuses()
        self.status.load({n: s for n, s in stored.items() if n in self.config.environments})
        now = _utcnow()
        for name, env in self.config.environments.items():
            self.metrics.add_environment(name, suspended=env.suspend)
            status = self.status.ensure(name, now)
            self.metrics.set_stalled(name, status.stalled)
            if status.stalled and _desired_changed(status, self._desired_marker):
                self.controller.trigger(name, "desired_state_changed_while_stopped", unstall=True)

    def request_stop(self) -> None:
        """Ask :meth:`serve` to stop (from a signal handler or another thread); a second call hurries it."""
        if self._stop_requested.is_set():
            self._abort.set()
        self._stop_requested.set()

    def stop(self) -> bool:
        """Stop serving and scheduling; wait up to the grace period. True when no reconcile is left running."""
        if self.http is not None:
            self.http.stop()
        finished = self.controller.stop(self.config.daemon.grace_period, abort=self._abort)
        self.close()
        log.info("daemon_stopped", clean=finished)
        return finished

    def close(self) -> None:
        """Release the HTTP server, the store, scratch databases and the embedded server (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self.http is not None:
            self.http.stop()
        if self.sharder is not None:
            self.sharder.close()  # the other replicas take this one's environments over at once
        try:
            # Stopping the embedded server (fast mode) also ends what is still running on it, rolling it back.
            self.reconciler.close()
        except Exception:
            log.exception("close_failed")

    def serve(self, on_started: Callable[[Daemon], None] | None = None) -> int:
        """Run until SIGTERM or SIGINT (main thread only); exit code 0 after a clean or a timed-out stop."""

        def handle(signum: int, frame: FrameType | None) -> None:
            log.info("signal_received", signal=signal.Signals(signum).name)
            self.request_stop()

        previous = {s: signal.signal(s, handle) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            if on_started is not None:
                on_started(self)
            while not self._stop_requested.wait(0.5):
                pass
            finished = self.stop()
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
        if not finished:
            # A reconcile is still running past the grace period: leave now. PostgreSQL rolls back the open
            # transaction when the connection drops; nothing is left half-applied inside it.
            log.warning("daemon_exit_abandoning_reconciles")
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        return 0

    def wait_stopped(self, timeout: float | None = None) -> bool:
        return self._stop_requested.wait(timeout)

    # -- reconciling --------------------------------------------------------------------------------
    def _reconcile(self, name: str) -> Result:
        if self.sharder is not None and not self.sharder.owns(name):
            # Another replica owns it; this job only keeps its place in the schedule.
            return Result(Outcome.SUCCESS, self.config.environment(name).interval)
        return reconcile(Request(name), self.context)

    def reconcile_now(self, name: str) -> bool:
        """Reconcile ``name`` as soon as a worker is free (also when stalled)."""
        return self.controller.trigger(name, "requested", unstall=True)

    def _read_desired_marker(self) -> str:
        try:
            return self.reconciler.load_desired().revision
        except DesiredStateError as exc:
            return _INVALID + hashlib.sha256(str(exc).encode()).hexdigest()

    def _read_config_digest(self) -> str | None:
        if self._config_path is None:
            return None
        try:
            return hashlib.sha256(self._config_path.read_bytes()).hexdigest()
        except OSError:
            return None

    def _watch(self) -> None:
        self._rebalance()
        marker = self._read_desired_marker()
        if marker != self._desired_marker:
            self._desired_marker = marker
            valid = not marker.startswith(_INVALID)
            if valid:
                self.metrics.set_desired_revision(marker)
            log.info("desired_state_changed", revision=marker[:12] if valid else None, valid=valid)
            self.controller.trigger_all("desired_state_changed", unstall=True)
        digest = self._read_config_digest()
        if digest is not None and digest != self._config_digest:
            self._config_digest = digest
            self._reload_config()
        elif self._rediscovery_due():
            self._reload_config()
        self._run_approvals_made_elsewhere()

    def _run_approvals_made_elsewhere(self) -> None:
        """A plan approved since the last look (by the CLI, or through another replica's API) is run now by the
        replica that owns its environment, not at that environment's next interval."""
        try:
            approved = self.reconciler.store.approved_plans()
        except Exception as exc:  # the store unreachable: the next watch interval tries again
            log.warning("approved_plans_unreadable", error=str(exc))
            return
        for plan_id in sorted(approved.keys() - self._approved_seen):
            name = approved[plan_id]
            if name in self.config.environments and (self.sharder is None or self.sharder.owns(name)):
                self.controller.trigger(name, "plan_approved", unstall=True)
        self._approved_seen = set(approved)

    def _rediscovery_due(self) -> bool:
        """A fleet's discovery query is due again (``fleets.NAME.discover.every``): the configuration is reloaded,
        which runs every discovery query (a failing one keeps the environments as they are, and is logged)."""
        intervals = [f.discover.every for f in self.config.fleets.values() if f.discover and f.discover.every]
        due = bool(intervals) and time.monotonic() - self._discovered_at >= min(intervals).total_seconds()
        return due and self._config_path is not None

    def _reload_config(self) -> None:
        assert self._config_path is not None
        self._discovered_at = time.monotonic()
        try:
            new = load_config(self._config_path)
        except ConfigError as exc:
            log.error("config_reload_failed", error=str(exc))
            return
        changed_top = [k for k in _RESTART_KEYS if getattr(new, k) != getattr(self.config, k)]
        if changed_top:
            log.warning("config_change_needs_restart", keys=changed_top)
        old_envs, new_envs = self.config.environments, new.environments
        self.config = self.config.model_copy(update={"environments": dict(new_envs), "fleets": new.fleets})
        self.reconciler.config = self.config
        if old_envs != new_envs:  # a changed DSN, credentials or TLS setting takes effect at the next pass
            self.reconciler.warm.clear()
        for name in sorted(set(old_envs) - set(new_envs)):
            self.reconciler.forget_environment(name)
            self.controller.remove_environment(name)
            self.metrics.remove_environment(name)
            self.status.remove(name)
            log.info("environment_removed", environment=name)
        now = _utcnow()
        for name, env in sorted(new_envs.items()):
            if old_envs.get(name) == env:
                continue
            if name not in old_envs:
                self.metrics.add_environment(name, suspended=env.suspend)
                self.status.ensure(name, now)
                log.info("environment_added", environment=name)
            else:
                self.reconciler.forget_environment(name)
                log.info("environment_config_changed", environment=name)
            self.controller.set_environment(name, env)

    # -- the API's backend --------------------------------------------------------------------------
    def environment_names(self) -> list[str]:
        return sorted(self.config.environments)

    def environment_json(self, name: str) -> dict[str, Any]:
        env = self.config.environment(name)
        status = self.status.ensure(name, _utcnow())
        nxt = self.controller.next_run(name)
        return {
            "name": name,
            "suspend": env.suspend,
            "interval_seconds": env.interval.total_seconds(),
            "maintenance_windows": [
                {"cron": w.cron, "duration_seconds": w.duration.total_seconds(), "timezone": w.timezone}
                for w in env.maintenance_windows
            ],
            "maintenance_window_open": window_open(env.maintenance_windows, _utcnow()),
            "stalled": self.controller.is_stalled(name),
            "next_reconcile_at": nxt.isoformat() if nxt is not None else None,
            "status": status.to_json(),
        }

    def list_plans(self, environment: str | None, status: PlanStatus | None) -> list[PlanRecord]:
        return self.reconciler.store.list_plans(environment, status)

    def get_plan(self, plan_id: int) -> PlanRecord | None:
        try:
            return self.reconciler.store.get_plan(plan_id)
        except PlanError:
            return None

    def is_approver(self, environment: str, identity: str) -> bool:
        approvers = self.config.environment(environment).approvers
        return not approvers or identity in approvers

    def approve(self, plan_id: int, by: str) -> PlanRecord:
        """``by`` is the identity of a bearer token the API checked: an authenticated approver."""
        record = self.reconciler.approve(plan_id, Approver(by, authenticated=True))
        self._approved_seen.add(record.id)  # run here and now: the watch need not trigger it again
        self.controller.trigger(record.environment, "plan_approved", unstall=True)
        return record

    def reject(self, plan_id: int, by: str, reason: str) -> PlanRecord:
        record = self.reconciler.reject(plan_id, Approver(by, authenticated=True), reason)
        self.controller.trigger(record.environment, "plan_rejected")
        return record

    def metrics_text(self) -> bytes:
        return self.metrics.render_for_scrape()

    def readiness(self) -> dict[str, bool]:
        try:
            self.reconciler.store.ping()
            store_ok = True
        except Exception:
            store_ok = False
        checks = {"config_loaded": True, "store_reachable": store_ok, "scheduler_running": self.controller.running}
        if self.sharder is not None:
            checks["holds_share"] = self.sharder.holds_share()
        return checks

    # -- the page's backend -------------------------------------------------------------------------
    def approvals_required(self, environment: str) -> int:
        return self.config.environment(environment).approvals_required

    def audit_records(self, environment: str | None, event: str | None, limit: int | None) -> list[AuditRecord]:
        return self.reconciler.store.audit_records(environment, event=event, limit=limit)

    def verify_audit(self) -> AuditVerification:
        return self.reconciler.store.verify_audit()

    def row_counts(self, record: PlanRecord) -> dict[str, tuple[int | None, bool]]:
        """Rows of the tables the plan's destructive statements touch: exact when cheap to count, else the
        estimate. An environment that cannot be reached now keeps the plan's estimates."""
        figures = {n: t for s in record.statements if s.destructive for n, t in s.tables.items()}
        try:
            target = self.reconciler.target(record.environment)
            return row_counts(
                target.dsn, figures, what=target.doing("counting rows in"), connect_timeout=target.env.connect_timeout
            )
        except ReconcilerError as exc:
            log.warning("row_count_failed", environment=record.environment, error=str(exc))
            return {n: (t.rows, False) for n, t in figures.items()}

    # -- several replicas ---------------------------------------------------------------------------
    def _make_sharder(self) -> Sharder | None:
        if not self.config.daemon.sharding:
            return None
        url = libpq_url(self.config.state)
        if url is None:
            raise ConfigError(
                "sharding needs a PostgreSQL state store (state: postgresql://...)",
                path=self.config.source,
                key="daemon.sharding",
            )
        return Sharder(
            url, running=self.controller.is_running, on_gained=self._environment_gained, on_lost=self._environment_lost
        )

    def _first_share(self) -> None:
        """Take this replica's share before scheduling; drop the series of environments it does not own."""
        if self.sharder is None:
            return
        self._statuses_fresh = True  # _load_statuses has just read every status, in one query
        try:
            self._rebalance()
        finally:
            self._statuses_fresh = False
        for name in self.config.environments:
            if not self.sharder.owns(name):
                self.metrics.remove_environment(name)

    def _rebalance(self) -> None:
        if self.sharder is None:
            return
        share = self.sharder.tick(self.config.environments)
        self.metrics.set_replicas(len(share.replicas), self.sharder.holds_share())

    def _environment_gained(self, name: str) -> None:
        """Taken over: its status as the previous owner left it, its series, and a pass now."""
        env = self.config.environments.get(name)
        if env is None:
            return
        stored = None if self._statuses_fresh else self.reconciler.store.load_status(name)
        if stored is not None:
            self.status.put(stored)
        self.metrics.add_environment(name, suspended=env.suspend)
        self.metrics.set_stalled(name, self.status.ensure(name, _utcnow()).stalled)
        self.metrics.set_owned(name, True)
        self.controller.trigger(name, "environment_taken")

    def _environment_lost(self, name: str) -> None:
        self.metrics.remove_environment(name)
