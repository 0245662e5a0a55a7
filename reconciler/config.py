"""Configuration: YAML in, frozen validated models out.

* ``${VAR}`` in any string is replaced by the process environment's value; ``${VAR:-default}`` gives a
  default. A missing variable is an error naming the file and the key path.
* Unknown keys are rejected; every error names the file and the key path (``environments.dev.dsn``).
* Relative paths are resolved against the folder that holds the config file.
* Durations are written ``500ms``, ``5s``, ``15m``, ``1h`` or as a number of seconds.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .cron import CronError, parse_cron
from .db import SECRET_KEYS, dsn_problem, parse_dsn
from .errors import ConfigError, ReconcilerError

log = structlog.get_logger("reconciler.config")

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_ENV_NAME = re.compile(r"^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$")


def parse_duration(value: Any) -> timedelta:
    """Parse ``5s``, ``15m``, ``250ms``, ``1h`` or a bare number of seconds into a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 5s or 15m, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise ValueError(f"expected a duration such as 5s or 15m, got {value!r}")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return timedelta(seconds=seconds)


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MaintenanceWindow(_Model):
    """A recurring span of time in which the daemon may apply changes: starts matching ``cron``, lasts ``duration``."""

    cron: str
    duration: Duration
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, v: str) -> str:
        try:
            parse_cron(v)
        except CronError as exc:
            raise ValueError(f"invalid cron expression {v!r}: {exc}") from None
        return v

    @field_validator("duration")
    @classmethod
    def _valid_duration(cls, v: timedelta) -> timedelta:
        if not timedelta(minutes=1) <= v <= timedelta(days=31):
            raise ValueError("must be between 1m and 31d")
        return v

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (an IANA name such as UTC or Europe/Berlin)") from None
        return v


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b|b|bytes)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "bytes": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3, "tb": 1024**4}


def parse_size(value: Any) -> int:
    """Parse ``100MB``, ``1GB``, ``512kB`` (powers of 1024, as PostgreSQL counts) or a number of bytes."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size such as 100MB or 1GB, got {value!r}")
    if isinstance(value, int):
        n = value
    elif isinstance(value, float):
        n = int(value)
    elif isinstance(value, str) and (m := _SIZE.match(value)):
        unit = (m.group(2) or "b").lower().replace("ib", "b")
        n = int(float(m.group(1)) * _SIZE_UNITS[unit])
    else:
        raise ValueError(f"expected a size such as 100MB or 1GB, got {value!r}")
    if n < 0:
        raise ValueError("a size cannot be negative")
    return n


ByteSize = Annotated[int, BeforeValidator(parse_size)]


def _hazard_selector(value: str) -> str:
    """A hazard kind (``DESTRUCTIVE``) or a registered hazard code (``DS103``)."""
    from .hazards import known_codes
    from .model import HazardKind

    if value in HazardKind.__members__.values() or value in known_codes():
        return value
    kinds = ", ".join(k.value for k in HazardKind)
    raise ValueError(f"unknown hazard kind or code {value!r} (kinds: {kinds}; codes: see the README)")


HazardSelector = Annotated[str, AfterValidator(_hazard_selector)]


class PolicyConfig(_Model):
    """What may run unattended in one environment, by hazard kind or code.

    Per hazard, a code listed anywhere wins over its kind; within the same level ``deny`` wins over
    ``require_approval`` over ``auto_apply``. A statement's decision is the strictest of its hazards' decisions.
    """

    auto_apply: tuple[HazardSelector, ...] = ()
    require_approval: tuple[HazardSelector, ...] = ()
    deny: tuple[HazardSelector, ...] = ()

    @field_validator("auto_apply")
    @classmethod
    def _never_unattended(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        # Data loss, statements nobody could parse or classify, and security downgrades always wait for an
        # approval bound to the plan.
        from .hazards.registry import never_unattended_selector

        for item in v:
            if item in ("DESTRUCTIVE", "UNPARSEABLE") or item.startswith(("DS", "UP")):
                raise ValueError(
                    f"{item} cannot run unattended: destructive and unparseable statements always need an approval"
                )
            if never_unattended_selector(item):
                raise ValueError(
                    f"{item} cannot run unattended: unclassified statements and security downgrades always need "
                    "an approval"
                )
        return v

    @model_validator(mode="after")
    def _disjoint(self) -> PolicyConfig:
        lists = {"auto_apply": self.auto_apply, "require_approval": self.require_approval, "deny": self.deny}
        seen: dict[str, str] = {}
        for name, items in lists.items():
            for item in items:
                if item in seen and seen[item] != name:
                    raise ValueError(f"{item} is listed in both {seen[item]} and {name}")
                seen[item] = name
        return self


class LargeTableConfig(_Model):
    """A table is large (lock hazards apply, index builds run CONCURRENTLY) above either figure."""

    bytes: ByteSize = 100 * 1024**2
    rows: int = Field(default=1_000_000, ge=0)


class EnvironmentConfig(_Model):
    """One database whose schema the reconciler keeps in line with the desired state."""

    dsn: str
    schemas: tuple[str, ...] = ()
    exclude_schemas: tuple[str, ...] = ()
    privileges: bool = False
    lock_timeout: Duration = timedelta(seconds=5)
    statement_timeout: Duration = timedelta(minutes=15)
    connect_timeout: Duration = timedelta(seconds=10)
    # Hazards and policy: what runs unattended, when a table counts as large, online-safe rewrites.
    production: bool = False
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    large_table: LargeTableConfig = Field(default_factory=LargeTableConfig)
    online_rewrites: bool = True
    # The daemon (`reconciler run`): how often, whether it may apply, and when.
    interval: Duration = timedelta(seconds=60)
    suspend: bool = False
    maintenance_windows: tuple[MaintenanceWindow, ...] = ()
    # Applying: a concurrent index build gets its own, longer statement timeout (same lock timeout);
    # a statement that times out waiting for a lock is retried with bounded, jittered exponential backoff.
    concurrent_statement_timeout: Duration = timedelta(hours=2)
    lock_retries: int = Field(default=5, ge=0, le=100)
    lock_retry_backoff: Duration = timedelta(seconds=1)
    lock_retry_backoff_max: Duration = timedelta(seconds=30)
    # Approvals: who may approve or reject plans of this environment (empty: anyone), and how many different
    # people must approve before a plan runs.
    approvers: tuple[str, ...] = ()
    approvals_required: int = Field(default=1, ge=1, le=10)
    # Someone else holding the environment's apply lock for longer than this is a condition and a metric.
    lock_held_alert_after: Duration = timedelta(minutes=10)
    # Unmanaged drift (the catalog comparison beside migra's diff): compare owners; ignore column order.
    compare_owners: bool = False
    ignore_column_order: bool = False

    @model_validator(mode="after")
    def _apply_settings(self) -> EnvironmentConfig:
        if self.lock_retry_backoff_max < self.lock_retry_backoff:
            raise ValueError("lock_retry_backoff_max must not be smaller than lock_retry_backoff")
        if self.approvers and self.approvals_required > len(set(self.approvers)):
            raise ValueError(
                f"approvals_required is {self.approvals_required} but only {len(set(self.approvers))} approver(s) "
                "are listed"
            )
        return self

    @field_validator("interval")
    @classmethod
    def _interval_positive(cls, v: timedelta) -> timedelta:
        if v < timedelta(milliseconds=100):
            raise ValueError("must be at least 100ms")
        return v

    @field_validator("dsn")
    @classmethod
    def _dsn_not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v

    @model_validator(mode="after")
    def _one_schema_filter(self) -> EnvironmentConfig:
        if self.schemas and self.exclude_schemas:
            raise ValueError("give either schemas or exclude_schemas, not both")
        return self


class EmbeddedConfig(_Model):
    """The PostgreSQL server the reconciler starts itself (scratch databases and ``embedded:`` DSNs)."""

    data_dir: str = ".reconciler/postgres"
    bin_dir: str | None = None


class DaemonConfig(_Model):
    """How ``reconciler run`` schedules reconciles across environments."""

    concurrency: int = Field(default=4, ge=1, le=64)
    backoff_base: Duration = timedelta(seconds=5)
    backoff_max: Duration = timedelta(minutes=5)
    grace_period: Duration = timedelta(seconds=30)
    jitter: float = Field(default=0.1, ge=0.0, le=1.0)
    watch_interval: Duration = timedelta(seconds=5)
    # Several replicas on one PostgreSQL store split the environments (advisory locks, rendezvous hashing).
    sharding: bool = False
    # Idle environment connections kept between passes, so a fast-path pass runs on a warm session (0: none).
    keep_connections: int = Field(default=64, ge=0, le=100_000)

    @model_validator(mode="after")
    def _backoff_order(self) -> DaemonConfig:
        if self.backoff_base <= timedelta(0):
            raise ValueError("backoff_base must be positive")
        if self.backoff_max < self.backoff_base:
            raise ValueError("backoff_max must not be smaller than backoff_base")
        if self.watch_interval < timedelta(milliseconds=100):
            raise ValueError("watch_interval must be at least 100ms")
        return self


class ApiToken(_Model):
    """A bearer token of the HTTP API: read from an environment variable or a file, never from this file."""

    identity: str = Field(min_length=1, max_length=128)
    token_env: str | None = None
    token_file: str | None = None
    environments: tuple[str, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_source(self) -> ApiToken:
        if (self.token_env is None) == (self.token_file is None):
            raise ValueError("give exactly one of token_env or token_file")
        return self


class ServerConfig(_Model):
    """The daemon's HTTP server: metrics, health checks and the JSON API."""

    listen: str = "127.0.0.1"
    port: int = Field(default=9630, ge=0, le=65535)
    tokens: tuple[ApiToken, ...] = ()
    read_requires_token: bool | None = None  # None: true when the server listens beyond loopback
    allowed_hosts: tuple[str, ...] = ()  # Host header names accepted besides the listen address and loopback
    tls_cert: str | None = None
    tls_key: str | None = None

    @model_validator(mode="after")
    def _tls_pair(self) -> ServerConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("give both tls_cert and tls_key, or neither")
        return self

    def reads_need_token(self, listen: str | None = None) -> bool:
        """Whether reads need a token: as configured, else whenever ``listen`` (default: ``listen``) is not
        loopback, so HTTP clients of other machines never read plans anonymously."""
        if self.read_requires_token is not None:
            return self.read_requires_token
        return not is_loopback(self.listen if listen is None else listen)


def is_loopback(address: str) -> bool:
    """Whether a listen address is reachable from this machine only."""
    host = address.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SecurityConfig(_Model):
    """The installation's secret: it signs approvals, keys the audit chain and derives the apply lock's key.

    Kept in a file (created 0600 on first use), never in the state store, so that whoever can write the store
    cannot forge an approval or recompute the audit chain. Replicas sharing a store must share this file.
    """

    signing_key_file: str = ".reconciler/signing-key"


class CommandSource(_Model):
    """A desired state produced by a command: its standard output is the SQL (e.g. ``prisma migrate diff``).

    ``command`` is an argument list run without a shell, in ``cwd`` (default: the config file's folder).
    """

    command: tuple[str, ...] = Field(min_length=1)
    cwd: str | None = None
    timeout: Duration = timedelta(minutes=5)


class SqlAlchemySource(_Model):
    """A desired state given as an SQLAlchemy ``MetaData``: ``module:attribute``, importable from ``path``."""

    sqlalchemy: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
    path: str | None = None


DesiredSource = str | CommandSource | SqlAlchemySource


class SandboxConfig(_Model):
    """How desired-state builds and vetting clones are confined on the scratch server (desired files are untrusted)."""

    # Extensions a desired file may create (CREATE EXTENSION of any other is refused before the build runs).
    extensions_allowed: tuple[str, ...] = ("pgcrypto", "citext", "uuid-ossp", "pg_trgm", "btree_gist")
    # Every scratch connection (build, inspection, vetting clone) runs with these.
    statement_timeout: Duration = timedelta(minutes=2)
    lock_timeout: Duration = timedelta(seconds=10)
    idle_in_transaction_timeout: Duration = timedelta(minutes=1)
    # true: environments may live on the same server as `scratch` (outside the demo). Desired builds then run on the
    # cluster that hosts them, confined only by the build role; say so here rather than by accident.
    share_cluster_with_environments: bool = False

    @field_validator("statement_timeout", "lock_timeout", "idle_in_transaction_timeout")
    @classmethod
    def _positive(cls, v: timedelta) -> timedelta:
        if v < timedelta(milliseconds=100):
            raise ValueError("must be at least 100ms")
        return v


class FleetDiscovery(_Model):
    """A query whose first column lists a fleet's names, run on ``dsn`` when the configuration is loaded, and by
    the daemon again every ``every`` (none: only on load) so tenants added or removed since are picked up."""

    dsn: str
    query: str = Field(min_length=1)
    connect_timeout: Duration = timedelta(seconds=10)
    every: Duration | None = None


class FleetConfig(_Model):
    """Environments generated from a template: one per name, for teams with a database per tenant.

    The names come from ``names`` or from ``discover``; each name's DSN is ``dsn`` with ``{name}`` replaced by the
    name; its settings are ``template`` (any environment key but ``dsn``) with ``overrides[name]`` on top. Each
    generated environment is named after its tenant: that name is its ``environment`` label in metrics.
    """

    names: tuple[str, ...] = ()
    discover: FleetDiscovery | None = None
    dsn: str
    template: dict[str, Any] = Field(default_factory=dict)
    overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_source(self) -> FleetConfig:
        if bool(self.names) == (self.discover is not None):
            raise ValueError("give exactly one of names or discover")
        if "{name}" not in self.dsn:
            raise ValueError("dsn must contain {name}, replaced by each tenant's name")
        if "dsn" in self.template or any("dsn" in o for o in self.overrides.values()):
            raise ValueError("the DSN comes from the fleet's dsn template, not from template or overrides")
        if self.names and (unknown := sorted(set(self.overrides) - set(self.names))):
            raise ValueError(f"overrides for names not in the fleet: {', '.join(unknown)}")
        return self


class Config(_Model):
    """The whole configuration file."""

    desired_state: DesiredSource = "desired-state"
    scratch: str | None = None
    state: str = "sqlite:///.reconciler/state.db"
    embedded: EmbeddedConfig = Field(default_factory=EmbeddedConfig)
    environments: dict[str, EnvironmentConfig] = Field(default_factory=dict)
    daemon: DaemonConfig = Field(default_factory=DaemonConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    # The order in which a desired revision reaches environments: each only after every earlier one converged on it.
    promotion: tuple[str, ...] = ()
    # The schema workflow: RLS policy test files (a folder or one file) and the generated schema documentation.
    policy_tests: str = "policy-tests"
    docs: str = "docs/DATABASE.md"
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    fleets: dict[str, FleetConfig] = Field(default_factory=dict)

    # Set by the loader, not by the file.
    source: str = Field(default="", exclude=True)

    @field_validator("environments")
    @classmethod
    def _env_names(cls, v: dict[str, EnvironmentConfig]) -> dict[str, EnvironmentConfig]:
        for name in v:
            if not _ENV_NAME.match(name):
                raise ValueError(
                    f"environment name {name!r} must be lower-case letters, digits, '-' or '_' (at most 63)"
                )
        return v

    @model_validator(mode="after")
    def _promotion_order(self) -> Config:
        for name in self.promotion:
            if name not in self.environments:
                raise ValueError(f"promotion names {name!r}, which is not a configured environment")
        if len(set(self.promotion)) != len(self.promotion):
            raise ValueError("promotion names an environment twice")
        return self

    def environment(self, name: str) -> EnvironmentConfig:
        try:
            return self.environments[name]
        except KeyError:
            known = ", ".join(sorted(self.environments)) or "none"
            raise ConfigError(f"unknown environment {name!r} (configured: {known})", path=self.source) from None


def _interpolate(node: Any, path: str, keypath: str) -> Any:
    if isinstance(node, dict):
        out: dict[Any, Any] = {}
        for k, v in node.items():
            if not isinstance(k, str):
                raise ConfigError(f"keys must be strings, got {k!r}", path=path, key=keypath or "(top level)")
            out[k] = _interpolate(v, path, f"{keypath}.{k}" if keypath else k)
        return out
    if isinstance(node, list):
        return [_interpolate(v, path, f"{keypath}[{i}]") for i, v in enumerate(node)]
    if isinstance(node, str):

        def repl(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            value = os.environ.get(name)
            if value is None:
                if default is not None:
                    return default
                raise ConfigError(f"environment variable ${{{name}}} is not set", path=path, key=keypath)
            return value

        return _VAR.sub(repl, node)
    return node


def _keypath(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _resolve(base: Path, value: str) -> str:
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def _resolve_sqlite(base: Path, url: str) -> str:
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != "sqlite:///:memory:":
        return prefix + _resolve(base, url[len(prefix) :])
    return url


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read, interpolate and validate a configuration file. Raises ConfigError naming file and key."""
    p = Path(path)
    shown = str(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("configuration file not found", path=shown) from None
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file: {exc.strerror}", path=shown) from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"invalid YAML{where}: {problem}", path=shown) from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"expected a mapping at the top level, got {type(raw).__name__}", path=shown)
    if "source" in raw:  # set by this loader (the file's path), not a key of the file
        raise ConfigError("unknown key", path=shown, key="source")
    data = _interpolate(raw, shown, "")
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        msg = first["msg"]
        if first["type"] == "extra_forbidden":
            msg = "unknown key"
        more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
        raise ConfigError(f"{msg}{more}", path=shown, key=_keypath(tuple(first["loc"]))) from exc
    cfg = with_fleets(cfg, shown)
    _check_token_environments(cfg, shown)
    _check_dsns(cfg, shown)
    resolved = _with_paths_resolved(cfg, p.resolve().parent, shown)
    holds_secrets = [p] if _holds_password(cfg) else []
    _warn_if_readable_by_others(*holds_secrets, *(t.token_file for t in resolved.server.tokens if t.token_file))
    return resolved


def _holds_password(cfg: Config) -> bool:
    dsns = [e.dsn for e in cfg.environments.values() if not e.dsn.startswith("embedded:")]
    dsns += [d for d in (cfg.scratch, cfg.state) if d]
    return any(k in parse_dsn(d) for d in dsns if not dsn_problem(d) for k in SECRET_KEYS) or any(
        "://" in d and "@" in d.split("://", 1)[1] and ":" in d.split("://", 1)[1].split("@", 1)[0] for d in dsns
    )


def _check_dsns(cfg: Config, shown: str) -> None:
    """Every DSN must be one libpq reads; the error never quotes the DSN (a fragment of it may be a password)."""
    dsns = {f"environments.{n}.dsn": e.dsn for n, e in cfg.environments.items() if not e.dsn.startswith("embedded:")}
    if cfg.scratch is not None:
        dsns["scratch"] = cfg.scratch
    for key, dsn in dsns.items():
        if problem := dsn_problem(dsn):
            raise ConfigError(problem, path=shown, key=key)


def _warn_if_readable_by_others(*paths: str | os.PathLike[str]) -> None:
    """Log a warning for each file (the config, token files) that users other than its owner may read."""
    for path in paths:
        try:
            mode = Path(path).stat().st_mode
        except OSError:
            continue  # a missing token file is reported where it is read
        if mode & (stat.S_IRGRP | stat.S_IROTH):
            log.warning(
                "file_readable_by_others",
                path=str(path),
                mode=stat.filemode(mode),
                hint="it may hold or lead to secrets: chmod go-rwx it",
            )


def _check_token_environments(cfg: Config, shown: str) -> None:
    for i, tok in enumerate(cfg.server.tokens):
        for name in tok.environments:
            if name != "*" and name not in cfg.environments:
                raise ConfigError(
                    f"unknown environment {name!r} (give configured environments, or '*' for all)",
                    path=shown,
                    key=f"server.tokens[{i}].environments",
                )


def _with_paths_resolved(cfg: Config, base: Path, shown: str) -> Config:
    """``cfg`` with its relative paths taken relative to the config file's folder ``base``."""
    embedded = cfg.embedded.model_copy(
        update={
            "data_dir": _resolve(base, cfg.embedded.data_dir),
            "bin_dir": _resolve(base, cfg.embedded.bin_dir) if cfg.embedded.bin_dir else None,
        }
    )
    tokens = tuple(
        t.model_copy(update={"token_file": _resolve(base, t.token_file)}) if t.token_file else t
        for t in cfg.server.tokens
    )
    tls = {k: _resolve(base, v) for k in ("tls_cert", "tls_key") if (v := getattr(cfg.server, k))}
    return cfg.model_copy(
        update={
            "server": cfg.server.model_copy(update={"tokens": tokens, **tls}),
            "desired_state": _source_resolved(base, cfg.desired_state),
            "policy_tests": _resolve(base, cfg.policy_tests),
            "docs": _resolve(base, cfg.docs),
            "state": _resolve_sqlite(base, cfg.state),
            "embedded": embedded,
            "security": cfg.security.model_copy(
                update={"signing_key_file": _resolve(base, cfg.security.signing_key_file)}
            ),
            "source": shown,
        }
    )


def _source_resolved(base: Path, source: DesiredSource) -> DesiredSource:
    """``source`` with its folder, working directory or import path taken relative to ``base``."""
    if isinstance(source, str):
        return _resolve(base, source)
    if isinstance(source, CommandSource):
        return source.model_copy(update={"cwd": _resolve(base, source.cwd or ".")})
    return source.model_copy(update={"path": _resolve(base, source.path or ".")})


# -- fleets -------------------------------------------------------------------------------------------------
def with_fleets(cfg: Config, shown: str, discover: Callable[[FleetDiscovery, str], list[str]] | None = None) -> Config:
    """``cfg`` with every fleet's environments added to ``environments``. A name must be a valid environment name
    that no other environment or fleet has: a discovered name is what a database server says, so a name that is
    not one (or a DSN template it would break out of) is an error naming the fleet, never a stray DSN."""
    if not cfg.fleets:
        return cfg
    envs = dict(cfg.environments)
    for fleet_name, fleet in cfg.fleets.items():
        key = f"fleets.{fleet_name}"
        names = list(fleet.names)
        if fleet.discover is not None:
            try:
                names = (discover or _discover)(fleet.discover, key)
            except ReconcilerError as exc:
                raise ConfigError(str(exc), path=shown, key=key + ".discover") from exc
        for name in names:
            if not isinstance(name, str) or not _ENV_NAME.match(name):
                raise ConfigError(
                    f"{name!r} is not an environment name (lower-case letters, digits, '-' or '_')", path=shown, key=key
                )
            if name in envs:
                raise ConfigError(f"environment {name!r} is defined twice", path=shown, key=key)
            envs[name] = _fleet_environment(fleet, name, shown, key)
    return cfg.model_copy(update={"environments": envs})


def _fleet_environment(fleet: FleetConfig, name: str, shown: str, key: str) -> EnvironmentConfig:
    data = {**fleet.template, **fleet.overrides.get(name, {}), "dsn": fleet.dsn.replace("{name}", name)}
    try:
        return EnvironmentConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        where = f"overrides.{name}" if first["loc"] and first["loc"][0] in fleet.overrides.get(name, {}) else "template"
        raise ConfigError(msg, path=shown, key=f"{key}.{where}.{_keypath(tuple(first['loc']))}") from exc


def _discover(discovery: FleetDiscovery, key: str) -> list[str]:
    """The names a fleet's discovery query lists (first column, in the order returned)."""
    from .db import connect, database_errors

    what = f"discovering the names of {key}"
    with (
        database_errors(what),
        connect(discovery.dsn, what=what, connect_timeout=discovery.connect_timeout, autocommit=True) as conn,
    ):
        rows = conn.execute(discovery.query.encode()).fetchall()
    return [row[0] for row in rows]
