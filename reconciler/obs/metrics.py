"""Every Prometheus metric of the reconciler, in one registry per daemon.

Names start with ``schema_reconciler_``; counters end in ``_total`` and durations in ``_seconds``. Labels are
low-cardinality only: ``environment`` (a configured name), ``outcome``, ``phase``, ``hazard`` and ``kind`` (hazard
kinds, ``NONE`` for a statement without hazards). Never a DSN, SQL text or plan id.

A dedicated :class:`prometheus_client.CollectorRegistry` per :class:`Metrics` lets several daemons (tests) run
in one process. Counters and histograms carry no ``_created`` series (a fifth of the text of a large fleet, and
nothing reads it).

Rendering is linear in the series (about 120 per environment); :meth:`Metrics.render_for_scrape` keeps a scrape of
a large fleet from waiting for a whole rendering.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..model import HazardKind

disable_created_metrics()  # type: ignore[no-untyped-call]

PREFIX = "schema_reconciler_"
SLOW_RENDER = 0.5  # seconds: from a rendering this slow on, a scrape gets the previous one (see render_for_scrape)
LARGE_FLEET = 200  # environments: from this many on, too (a rendering's time under load is not known in advance)
NO_HAZARD = "NONE"
HAZARD_LABELS = (*(k.value for k in HazardKind), NO_HAZARD)
OUTCOMES = ("success", "requeue", "error", "terminal")
PHASES = ("inspect", "diff", "classify", "vet", "apply")
# From 5 ms (a diff of a small schema) to 15 min (statement_timeout's default).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)


class _OldestPendingAge(Collector):
    """``schema_reconciler_oldest_pending_plan_age_seconds``: computed at scrape time from creation times."""

    def __init__(self) -> None:
        self._created: dict[str, datetime | None] = {}
        self._lock = threading.Lock()

    def set(self, environment: str, created_at: datetime | None) -> None:
        with self._lock:
            self._created[environment] = created_at

    def remove(self, environment: str) -> None:
        with self._lock:
            self._created.pop(environment, None)

    def collect(self) -> Iterator[Metric]:
        g = GaugeMetricFamily(
            f"{PREFIX}oldest_pending_plan_age_seconds",
            "Age of the oldest plan awaiting approval per environment (0 when none waits)",
            labels=["environment"],
        )
        now = time.time()
        with self._lock:
            items = sorted(self._created.items())
        for env, created in items:
            g.add_metric([env], max(0.0, now - created.timestamp()) if created is not None else 0.0)
        yield g


class _Renderings:
    """The last rendering, and at most one rendering running in the background; thread-safe."""

    def __init__(self, render: Callable[[], bytes], slow: float, large: Callable[[], bool] = lambda: False) -> None:
        self._render = render
        self._slow = slow
        self._large = large
        self._lock = threading.Lock()
        self._last: bytes | None = None
        self._took = 0.0
        self._refreshing = False

    def get(self) -> bytes:
        with self._lock:
            last = self._last if self._took > self._slow or self._large() else None
            if last is not None and not self._refreshing:
                self._refreshing = True
                threading.Thread(target=self._refresh, name="metrics-render", daemon=True).start()
        return last if last is not None else self._refresh()

    def _refresh(self) -> bytes:
        t0 = time.monotonic()
        try:
            body = self._render()
        except BaseException:
            with self._lock:
                self._refreshing = False
            raise
        with self._lock:
            self._last, self._took, self._refreshing = body, time.monotonic() - t0, False
        return body


def _gauge(registry: CollectorRegistry, name: str, documentation: str, labels: Iterable[str] = ()) -> Gauge:
    """A gauge named with the daemon's prefix, with one value per combination of ``labels``."""
    return Gauge(f"{PREFIX}{name}", documentation, list(labels), registry=registry)


def _env_gauge(registry: CollectorRegistry, name: str, documentation: str) -> Gauge:
    """A gauge of one value per environment."""
    return _gauge(registry, name, documentation, ["environment"])


def _counter(registry: CollectorRegistry, name: str, documentation: str, labels: Iterable[str]) -> Counter:
    return Counter(f"{PREFIX}{name}", documentation, list(labels), registry=registry)


def _duration(registry: CollectorRegistry, name: str, documentation: str, labels: Iterable[str]) -> Histogram:
    """A histogram of wall times in seconds, in the daemon's duration buckets."""
    return Histogram(f"{PREFIX}{name}", documentation, list(labels), buckets=DURATION_BUCKETS, registry=registry)


def _info(registry: CollectorRegistry, name: str, documentation: str) -> Info:
    return Info(f"{PREFIX}{name}", documentation, registry=registry)


class Metrics:
    """The daemon's metric objects. Methods take plain values; callers never touch label plumbing."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._environments: set[str] = set()
        self._scrapes = _Renderings(self.render, SLOW_RENDER, lambda: len(self._environments) >= LARGE_FLEET)
        r = self.registry
        self.drift = _env_gauge(
            r,
            "drift",
            "1 when the environment's schema differs from the desired state at its last measurement, else 0",
        )
        self.pending_statements = _gauge(
            r,
            "pending_statements",
            "Statements of the current drift not yet applied, by the kind of their most severe hazard",
            ["environment", "hazard"],
        )
        self._add_unmanaged_drift(r)
        self.plans_awaiting_approval = _env_gauge(
            r,
            "plans_awaiting_approval",
            "Plans of the environment that wait for an operator's approval",
        )
        self._oldest_pending = _OldestPendingAge()
        r.register(self._oldest_pending)
        self._add_pass_metrics(r)
        self.reachable = _env_gauge(
            r,
            "environment_reachable",
            "1 when the last reconcile could connect to the environment, else 0",
        )
        self.last_success = _env_gauge(
            r,
            "last_success_timestamp_seconds",
            "Unix time of the last reconcile that ended without an error",
        )
        self.stalled = _env_gauge(
            r,
            "environment_stalled",
            "1 when a terminal error stopped reconciling until the configuration or desired state changes",
        )
        self.suspended = _env_gauge(
            r,
            "environment_suspended",
            "1 when the environment is configured with suspend: true (measured, never applied)",
        )
        self.window_open = _env_gauge(
            r,
            "maintenance_window_open",
            "1 when the environment may be changed now (inside a maintenance window, or none configured)",
        )
        self.promotion_waiting = _env_gauge(
            r,
            "promotion_waiting",
            "1 while the desired revision waits for an earlier environment of the promotion order to converge on it",
        )
        self._add_scale_metrics(r)
        self.desired_revision = _info(
            r, "desired_revision", "The desired-state revision (sha256 of the files) the daemon reconciles towards"
        )
        self._add_security_metrics(r)

    def _add_security_metrics(self, r: CollectorRegistry) -> None:
        """The apply lock held by someone else, and the audit chain's head (a decrease or a changed past head
        shows a rewritten or truncated chain)."""
        self.apply_lock_blocked = _env_gauge(
            r,
            "apply_lock_blocked_seconds",
            "How long the environment's apply lock has been found held by another session (0: not blocked)",
        )
        self.audit_chain_records = _gauge(r, "audit_chain_records", "Records in the store's keyed audit chain")
        self.audit_chain_head = _info(r, "audit_chain_head", "The id and keyed hash of the audit chain's last record")

    # -- lifecycle of an environment's series -------------------------------------------------------

    def _add_pass_metrics(self, r: CollectorRegistry) -> None:
        """What each reconcile pass counts and times."""
        self.reconciles = _counter(
            r,
            "reconciles",
            "Reconciles by environment and outcome (success: in sync; requeue: drift remains; error: retried with "
            "backoff; terminal: stalled)",
            ["environment", "outcome"],
        )
        self.reconcile_duration = _duration(
            r,
            "reconcile_duration_seconds",
            "Wall time of one whole reconcile",
            ["environment"],
        )
        self.phase_duration = _duration(
            r,
            "reconcile_phase_duration_seconds",
            "Wall time of the phases of a reconcile: inspect, diff, classify, vet, apply",
            ["environment", "phase"],
        )
        self.statements_applied = _counter(
            r,
            "statements_applied",
            "Statements applied to the environment, by the kind of their most severe hazard",
            ["environment", "kind"],
        )

    def _add_scale_metrics(self, r: CollectorRegistry) -> None:
        """The fast path, and which replica owns which environment when several share the store."""
        self.fast_path = _counter(
            r,
            "fast_path_passes",
            "Passes that found the schema fingerprint unchanged since the environment was last in sync at this "
            "desired revision, and skipped inspection and diff",
            ["environment"],
        )
        self.owned = _env_gauge(
            r,
            "environment_owned",
            "1 for each environment this replica owns (holds its advisory lock on the store); absent otherwise",
        )
        self.replicas_live = _gauge(r, "replicas_live", "Replicas registered on the shared store, this one included")
        self.share_held = _gauge(
            r,
            "replica_share_held",
            "1 when this replica holds every environment that rendezvous hashing gives it, else 0",
        )

    def count_fast_path(self, environment: str) -> None:
        self.fast_path.labels(environment).inc()

    def set_owned(self, environment: str, owned: bool) -> None:
        if owned:
            self.owned.labels(environment).set(1)
        else:
            _remove(self.owned, environment)

    def set_replicas(self, live: int, share_held: bool) -> None:
        self.replicas_live.set(live)
        self.share_held.set(1 if share_held else 0)

    def add_environment(self, environment: str, *, suspended: bool) -> None:
        """Create every series of ``environment`` so that rates and absences are well defined from the start."""
        self._environments.add(environment)
        for outcome in OUTCOMES:
            self.reconciles.labels(environment, outcome)
        for kind in HAZARD_LABELS:
            self.statements_applied.labels(environment, kind)
        self.plans_awaiting_approval.labels(environment).set(0)
        self._oldest_pending.set(environment, None)
        self.stalled.labels(environment).set(0)
        self.suspended.labels(environment).set(1 if suspended else 0)
        self.apply_lock_blocked.labels(environment).set(0)
        self.promotion_waiting.labels(environment).set(0)

    def remove_environment(self, environment: str) -> None:
        self._environments.discard(environment)
        for outcome in OUTCOMES:
            _remove(self.reconciles, environment, outcome)
        for kind in HAZARD_LABELS:
            _remove(self.statements_applied, environment, kind)
            _remove(self.pending_statements, environment, kind)
        for phase in PHASES:
            _remove(self.phase_duration, environment, phase)
        for g in (
            self.drift,
            self.plans_awaiting_approval,
            self.reachable,
            self.last_success,
            self.stalled,
            self.suspended,
            self.window_open,
            self.promotion_waiting,
            self.reconcile_duration,
            self.apply_lock_blocked,
        ):
            _remove(g, environment)
        self._oldest_pending.remove(environment)
        _remove(self.fast_path, environment)
        _remove(self.owned, environment)
        with self._drift_kinds_lock:
            for kind in self._drift_kinds.pop(environment, set()):
                _remove(self.unmanaged_drift, environment, kind)

    # -- observations -------------------------------------------------------------------------------
    def observe_phase(self, environment: str, phase: str, seconds: float) -> None:
        self.phase_duration.labels(environment, phase).observe(seconds)

    def observe_reconcile(self, environment: str, outcome: str, seconds: float) -> None:
        self.reconciles.labels(environment, outcome).inc()
        self.reconcile_duration.labels(environment).observe(seconds)

    def set_drift(self, environment: str, drifted: bool, pending_by_kind: Mapping[str, int]) -> None:
        self.drift.labels(environment).set(1 if drifted else 0)
        for kind in HAZARD_LABELS:
            self.pending_statements.labels(environment, kind).set(pending_by_kind.get(kind, 0))

    def _add_unmanaged_drift(self, r: CollectorRegistry) -> None:
        self.unmanaged_drift = _gauge(
            r,
            "unmanaged_drift",
            "Differences between the environment's catalog and the desired build's that the plan does not resolve, "
            "by object kind (comment, acl, options, ...)",
            ["environment", "kind"],
        )
        self._drift_kinds: dict[str, set[str]] = {}
        self._drift_kinds_lock = threading.Lock()

    def set_unmanaged_drift(self, environment: str, by_kind: Mapping[str, int]) -> None:
        """``schema_reconciler_unmanaged_drift{environment, kind}``: kinds seen before and now gone are set to 0."""
        with self._drift_kinds_lock:
            kinds = self._drift_kinds.setdefault(environment, set())
            kinds.update(by_kind)
            for kind in kinds:
                self.unmanaged_drift.labels(environment, kind).set(by_kind.get(kind, 0))

    def set_awaiting(self, environment: str, count: int, oldest_created_at: datetime | None) -> None:
        self.plans_awaiting_approval.labels(environment).set(count)
        self._oldest_pending.set(environment, oldest_created_at)

    def count_applied(self, environment: str, kinds: Iterable[str]) -> None:
        for kind in kinds:
            self.statements_applied.labels(environment, kind).inc()

    def set_reachable(self, environment: str, reachable: bool) -> None:
        self.reachable.labels(environment).set(1 if reachable else 0)

    def set_success(self, environment: str, at: float) -> None:
        self.last_success.labels(environment).set(at)

    def set_stalled(self, environment: str, stalled: bool) -> None:
        self.stalled.labels(environment).set(1 if stalled else 0)

    def set_suspended(self, environment: str, suspended: bool) -> None:
        self.suspended.labels(environment).set(1 if suspended else 0)

    def set_window_open(self, environment: str, open_: bool) -> None:
        self.window_open.labels(environment).set(1 if open_ else 0)

    def set_lock_blocked(self, environment: str, seconds: float) -> None:
        self.apply_lock_blocked.labels(environment).set(seconds)

    def set_audit_head(self, records: int, head_id: int | None, head: str | None) -> None:
        self.audit_chain_records.set(records)
        self.audit_chain_head.info({"head_id": str(head_id or ""), "head": head or ""})

    def set_promotion_waiting(self, environment: str, waiting: bool) -> None:
        self.promotion_waiting.labels(environment).set(1 if waiting else 0)

    def set_desired_revision(self, revision: str) -> None:
        self.desired_revision.info({"revision": revision})

    def applied_total(self, environment: str) -> float:
        """Statements applied to ``environment`` since the daemon started (all kinds)."""
        return sum(
            self.registry.get_sample_value(f"{PREFIX}statements_applied_total", {"environment": environment, "kind": k})
            or 0.0
            for k in HAZARD_LABELS
        )

    def render(self) -> bytes:
        """The text exposition format of every metric in this registry."""
        return generate_latest(self.registry)

    def render_for_scrape(self) -> bytes:
        """What ``/metrics`` answers: a fresh rendering while rendering is quick. Once one took longer than
        :data:`SLOW_RENDER`, or from :data:`LARGE_FLEET` environments on, a scrape gets the last rendering at once
        and starts a fresh one in the background for the next scrape: the figures are one scrape old, and a scrape
        never waits for a whole rendering (nor runs into the scraper's timeout)."""
        return self._scrapes.get()


def _remove(metric: Gauge | Counter | Histogram, *labels: str) -> None:
    with contextlib.suppress(KeyError):
        metric.remove(*labels)
