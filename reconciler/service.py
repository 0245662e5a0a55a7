"""The reconciler's library surface: plan, apply, approve and reject, one environment at a time.

:class:`Reconciler` owns the outside world's resources (the state store, the embedded PostgreSQL if used, the
scratch server) and is where a request's environment name is resolved, once, into a
:class:`~reconciler.target.Target`. The work itself is done by :mod:`.planning`, :mod:`.approvals` and
:mod:`.applier`; the CLI and the daemon are thin layers over this class.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import structlog

from . import approvals, buildcache, planning, signing
from .applier import Applier, ApplyResult, record_apply
from .approvals import Approver
from .config import Config
from .db import Connection, database_errors
from .errors import ConfigError, PlanError, ReconcilerError
from .locks import environment_lock
from .model import DesiredState, Plan, PlanKey
from .pgembedded import EmbeddedPostgres, find_bin_dir
from .scratch import ScratchServer, shared_servers
from .sources import load_source
from .store import PlanRecord, Store, open_store
from .target import EMBEDDED_SCHEME, Target, resolve
from .warm import WarmSessions
from .windows import window_open

log = structlog.get_logger("reconciler.service")

__all__ = ["EMBEDDED_SCHEME", "ApplyResult", "Approver", "Reconciler", "plan_to_json"]


def plan_to_json(plan: Plan) -> dict[str, object]:
    return plan.to_json()


class Reconciler:
    """Plan and apply desired state to configured environments."""

    def __init__(self, config: Config, *, store: Store | None = None) -> None:
        self.config = config
        self._store = store
        self._embedded: EmbeddedPostgres | None = None
        self._scratch: ScratchServer | None = None
        self._secret: bytes | None = None
        self.warm = WarmSessions(config.daemon.keep_connections)
        self._stamped: dict[str, planning.StampedFingerprint] = {}  # by environment: the fast path's last read

    def forget_environment(self, name: str) -> None:
        """Drop what this process keeps of environment ``name`` (its last stamped fingerprint): it was removed from
        the configuration (a fleet's tenant gone) or its connection settings changed."""
        self._stamped.pop(name, None)

    # -- resources --------------------------------------------------------------------------------
    def __enter__(self) -> Reconciler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.warm.clear()
        if self._scratch is not None:
            self._scratch.close()
            self._scratch = None
        if self._embedded is not None:
            self._embedded.stop()
            self._embedded = None
        if self._store is not None:
            self._store.close()
            self._store = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = open_store(self.config.state, key=self.secret)
        return self._store

    @property
    def secret(self) -> bytes:
        """The installation's secret (``security.signing_key_file``, created on first use)."""
        if self._secret is None:
            self._secret = signing.load_key(self.config.security.signing_key_file)
        return self._secret

    def lock_key(self, target: Target) -> int:
        """The advisory lock key of the target's apply lock (derived from the installation's secret)."""
        return signing.lock_key(self.secret, target.name, target.database)

    @property
    def embedded(self) -> EmbeddedPostgres:
        if self._embedded is None:
            self._embedded = EmbeddedPostgres(self.config.embedded.data_dir, self.config.embedded.bin_dir).start()
        return self._embedded

    @property
    def cache_dir(self) -> Path:
        """The reconciler's own state folder for cached builds and verdicts (:mod:`.buildcache`)."""
        return Path(self.config.embedded.data_dir).parent / "cache"

    @property
    def scratch(self) -> ScratchServer:
        if self._scratch is None:
            admin = self.config.scratch or self.embedded.dsn("postgres")
            _check_scratch_apart(self.config, admin)
            self._scratch = ScratchServer(admin, sandbox=self.config.sandbox, cache_dir=self.cache_dir)
        return self._scratch

    def target(self, name: str) -> Target:
        """Resolve environment ``name`` (ConfigError if there is none)."""
        return resolve(self.config, name, lambda dbname: self.embedded.dsn(dbname))

    def pg_dump(self) -> Path:
        """pg_dump for vetting clones: of ``embedded.bin_dir`` if set, else of the scratch server's major version
        (``/usr/lib/postgresql/MAJOR/bin``, where Debian's client packages and the container image put it), else the
        embedded server's."""
        if not self.config.embedded.bin_dir:
            same_major = Path(f"/usr/lib/postgresql/{self.scratch.major_version}/bin/pg_dump")
            if same_major.exists():
                return same_major
        return find_bin_dir(self.config.embedded.bin_dir) / "pg_dump"

    def load_desired(self) -> DesiredState:
        return load_source(self.config.desired_state, self._known_allowed)

    def _known_allowed(self, revision: str) -> bool:
        """Whether ``revision`` passed the syntax and allow-list checks under these sandbox settings before."""
        key = buildcache.verdict_key(revision, self.config.sandbox)
        return buildcache.known_allowed(self.cache_dir, key)

    # -- the work ---------------------------------------------------------------------------------
    def plan(self, name: str | Target, desired: DesiredState | None = None) -> Plan:
        """What it takes to make the environment match the desired state, with hazards and decisions."""
        target = name if isinstance(name, Target) else self.target(name)
        return planning.plan(self.scratch, target, desired or self.load_desired())

    def env_fingerprint(self, name: str) -> str:
        return planning.read_fingerprint(self.target(name))

    def warm_fingerprint(self, target: Target) -> str:
        """The target's fingerprint, read on a warm session of it when one is idle (kept for the next pass), by
        the catalog stamp first: the full read only when the stamp moved since this process last read it."""
        what = target.doing("reading the schema fingerprint of")

        def read(conn: Connection) -> str:
            found = planning.read_fingerprint_stamped(target, conn, self._stamped.get(target.name))
            self._stamped[target.name] = found
            return found.fingerprint

        with database_errors(what):
            return self.warm.run(target.dsn, read, what=what, connect_timeout=target.env.connect_timeout)

    def authenticate(self, plan_id: int, by: str | None, token: str | None, what: str) -> Approver:
        """The approver of a CLI decision on plan ``plan_id`` (see :func:`.approvals.authenticate`)."""
        record = self.store.get_plan(plan_id)
        return approvals.authenticate(self.config, self.target(record.environment), by, token, what)

    def approve(self, plan_id: int, by: str | Approver) -> PlanRecord:
        """Record ``by``'s approval of a pending plan (see :func:`.approvals.approve`); a plain name is an
        unauthenticated approver, refused where approvers authenticate."""
        record = self.store.get_plan(plan_id)
        target = self.target(record.environment)
        who = by if isinstance(by, Approver) else Approver(by)
        if not who.authenticated and approvals.needs_token(self.config, target.env):
            approvals.authenticate(self.config, target, who.identity, None, "approve")  # raises: a token is needed

        def fresh() -> PlanKey:
            revision = self.load_desired().revision
            if revision != record.desired_revision:
                return PlanKey(revision, record.statements_hash, record.fingerprint, record.database)
            identity = str(planning.read_database_identity(target))
            fingerprint = planning.read_fingerprint(target) if record.fingerprint else ""
            return PlanKey(revision, record.statements_hash, fingerprint, identity)

        return approvals.approve(self.store, target, record, who, fresh)

    def reject(self, plan_id: int, by: str | Approver, reason: str) -> PlanRecord:
        record = self.store.get_plan(plan_id)
        target = self.target(record.environment)
        who = by if isinstance(by, Approver) else Approver(by)
        if not who.authenticated and approvals.needs_token(self.config, target.env):
            approvals.authenticate(self.config, target, who.identity, None, "reject")  # raises: a token is needed
        return approvals.reject(self.store, target, record, who, reason, lock_key=self.lock_key(target))

    def apply(self, name: str | Target, *, force: bool = False, record_status: bool = True) -> ApplyResult:
        """Apply what may run unattended, run an approved plan that still matches, queue the rest.

        Refused (PlanError, nothing done) while the environment is suspended or outside its maintenance windows,
        unless ``force``. Holds the environment's apply lock throughout (a second applier gets BusyError and
        changes nothing); afterwards audits the outcome and, with ``record_status``, records the environment's status
        (the daemon's pass records a status of its own).
        """
        target = name if isinstance(name, Target) else self.target(name)
        if not force:
            _refuse_blocked(target)
        desired = self.load_desired()
        env = target.env
        with environment_lock(
            target.dsn,
            environment=target.name,
            key=self.lock_key(target),
            connect_timeout=env.connect_timeout,
            alert_after=env.lock_held_alert_after,
        ) as conn:
            applier = Applier(
                self.store,
                self.scratch,
                self.pg_dump(),
                target,
                desired,
                conn,
                lambda: self.plan(target, desired),
                needs_auth=approvals.needs_token(self.config, env),
            )
            try:
                result = applier.run()
            except ReconcilerError as exc:
                record_apply(self.store, target, None, exc, status=record_status)
                raise
            record_apply(self.store, target, result, None, conn, status=record_status)
        return result


def _check_scratch_apart(config: Config, admin_dsn: str) -> None:
    """Refuse (ConfigError) a scratch server that hosts an environment, unless the configuration accepts it.

    Desired-state builds run untrusted SQL on the scratch server; the cluster that hosts an environment is the
    wrong place for that. The demo (``scratch`` unset, ``embedded:`` environments) is the exception, and says so.
    """
    plain = {n: e.dsn for n, e in config.environments.items() if not e.dsn.startswith(EMBEDDED_SCHEME)}
    demo = sorted(n for n, e in config.environments.items() if e.dsn.startswith(EMBEDDED_SCHEME))
    if demo and config.scratch is None:
        log.info(
            "scratch_shares_embedded_server",
            environments=demo,
            message="desired-state builds run on the embedded PostgreSQL that also holds these embedded: "
            "environments (the demo); build roles reach only their own database there. Set `scratch` to a "
            "server of its own for anything but the demo",
        )
    shared = shared_servers(admin_dsn, plain)
    if not shared:
        return
    if config.sandbox.share_cluster_with_environments:
        log.info("scratch_shares_cluster", environments=shared)  # accepted in the configuration
        return
    raise ConfigError(
        f"environment(s) {', '.join(shared)} are on the scratch server (same host and port): desired-state builds "
        "would run untrusted SQL on the cluster that hosts them. Point `scratch` at a server of its own, or set "
        "sandbox.share_cluster_with_environments: true to accept it",
        path=config.source,
        key="scratch",
    )


def _refuse_blocked(target: Target) -> None:
    if target.env.suspend:
        raise PlanError(
            f"applying to environment {target.name!r}: refused, the environment is suspended (suspend: true); "
            "nothing was applied (--force applies anyway)"
        )
    if not window_open(target.env.maintenance_windows, datetime.now(UTC)):
        raise PlanError(
            f"applying to environment {target.name!r}: refused, outside its maintenance windows; nothing was "
            "applied (--force applies anyway)"
        )
