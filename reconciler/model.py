"""Plain, frozen values passed between the stages of a reconcile.

Nothing here talks to the outside world: these are the nouns of the data flow
``desired -> snapshot -> diff -> plan -> hazards -> policy -> apply``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, NamedTuple


def display_ident(part: str) -> str:
    """``part`` as SQL writes it: bare when it is a plain lower-case identifier, else double-quoted."""
    plain = bool(part) and (part[0].isascii() and (part[0].islower() or part[0] == "_"))
    plain = plain and all(c.isascii() and (c.islower() or c.isdigit() or c in "_$") for c in part)
    return part if plain else '"' + part.replace('"', '""') + '"'


class QualifiedName(NamedTuple):
    """A catalog object's (schema, name): the key of every lookup of tables, types and functions.

    Never a dotted string: a desired-state author who creates a schema ``a.b`` or a table ``b.c`` would otherwise
    alias another object (``"a.b".c`` and ``a."b.c"`` both print as ``a.b.c``), and an empty table's figures could
    make a destructive statement on a big one look harmless. Its text (``str``) quotes what needs quoting, so the
    text is as unambiguous as the pair; it is what plans store and show.
    """

    schema: str
    name: str

    def __str__(self) -> str:
        return f"{display_ident(self.schema)}.{display_ident(self.name)}"


class HazardKind(StrEnum):
    """Families of hazards; values are identical in config, JSON and metric labels."""

    DESTRUCTIVE = "DESTRUCTIVE"
    LOCK = "LOCK"
    REWRITE = "REWRITE"
    DATA_DEPENDENT = "DATA_DEPENDENT"
    AUTHORIZATION = "AUTHORIZATION"
    RECREATE = "RECREATE"
    EXTENSION = "EXTENSION"
    RENAME = "RENAME"
    UNPARSEABLE = "UNPARSEABLE"
    CODE = "CODE"
    PROTECTION = "PROTECTION"
    UNCLASSIFIED = "UNCLASSIFIED"


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    DANGER = "danger"


class Decision(StrEnum):
    """What policy allows for a statement in one environment."""

    AUTO = "auto"
    NEEDS_APPROVAL = "needs_approval"
    DENIED = "denied"


class PlanStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    APPLIED = "applied"
    STALE = "stale"
    FAILED = "failed"
    SUPERSEDED = "superseded"


LIVE_PLAN_STATUSES = (PlanStatus.PENDING, PlanStatus.APPROVED)


@dataclass(frozen=True)
class SqlFile:
    """One file of the desired state: its path relative to the desired-state folder, and its text."""

    path: str
    text: str


@dataclass(frozen=True)
class DesiredState:
    """The desired schema: SQL files in lexical path order; ``revision`` hashes paths and contents."""

    root: str
    files: tuple[SqlFile, ...]
    revision: str

    @property
    def short_revision(self) -> str:
        return self.revision[:12]


@dataclass(frozen=True)
class Hazard:
    """Something a statement does that an operator should know before it runs."""

    code: str
    kind: HazardKind
    severity: Severity
    message: str

    def to_json(self) -> dict[str, str]:
        return {
            "code": self.code,
            "kind": self.kind.value,
            "severity": self.severity.value,
            "message": self.message,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Hazard:
        return cls(str(data["code"]), HazardKind(data["kind"]), Severity(data["severity"]), str(data["message"]))


@dataclass(frozen=True)
class TableStats:
    """Figures of one relation, read from the environment's catalog (``pg_class`` and size functions).

    ``rows`` is the planner's estimate (``reltuples``; None when the table was never analyzed), ``bytes`` the
    total size with indexes and TOAST, ``heap_bytes`` the size of the rows alone (0 means certainly empty).
    The other fields name what hazard checks look at: column types, indexes, views that depend on it.
    For a partitioned table the figures are sums over its partitions.
    """

    rows: int | None
    bytes: int
    heap_bytes: int = 0
    kind: str = "r"
    columns: Mapping[str, str] = field(default_factory=dict)
    indexes: tuple[str, ...] = ()
    invalid_indexes: tuple[str, ...] = ()
    dependants: tuple[str, ...] = ()
    has_grants: bool = False
    unique_index: bool | None = None  # for an index: whether it is unique (None: not read)

    @property
    def empty(self) -> bool:
        return self.heap_bytes == 0 and not self.rows

    def to_json(self) -> dict[str, int | None]:
        return {"rows": self.rows, "bytes": self.bytes}

    def to_record(self) -> dict[str, int | None]:
        """The stored form: the API's figures and the size of the rows alone (whether the table is empty)."""
        return {**self.to_json(), "heap_bytes": self.heap_bytes}

    @classmethod
    def from_record(cls, data: Mapping[str, Any]) -> TableStats:
        """Stored figures; records written before ``heap_bytes`` was stored count as holding rows unless their
        total size is 0."""
        size = int(data.get("bytes") or 0)
        heap = data.get("heap_bytes")
        return cls(rows=data.get("rows"), bytes=size, heap_bytes=size if heap is None else int(heap))


@dataclass(frozen=True)
class ExecStep:
    """One command that executes (part of) a statement, with the settings it runs under.

    ``transactional=False`` runs alone, committed. ``statement_timeout`` and ``lock_timeout`` are what the executor
    sets for this command (None: the environment's values). ``concurrent_index`` names the index (quoted, possibly
    schema-qualified) that this command builds concurrently: a failed attempt leaves it INVALID, and the executor
    drops it before the next attempt.
    """

    sql: str
    transactional: bool = True
    statement_timeout: timedelta | None = None
    lock_timeout: timedelta | None = None
    concurrent_index: str | None = None

    def to_json(self) -> dict[str, str | bool | float | None]:
        return {
            "sql": self.sql,
            "transactional": self.transactional,
            "statement_timeout_seconds": None
            if self.statement_timeout is None
            else self.statement_timeout.total_seconds(),
            "lock_timeout_seconds": None if self.lock_timeout is None else self.lock_timeout.total_seconds(),
            "concurrent_index": self.concurrent_index,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ExecStep:
        """The step that :meth:`to_json` wrote (records without timeouts or index read as None)."""
        timeouts = [data.get(k) for k in ("statement_timeout_seconds", "lock_timeout_seconds")]
        statement, lock = (None if t is None else timedelta(seconds=float(t)) for t in timeouts)
        index = data.get("concurrent_index")
        index = None if index is None else str(index)
        return cls(str(data["sql"]), bool(data.get("transactional", True)), statement, lock, index)


@dataclass(frozen=True)
class Statement:
    """One SQL statement of a plan with the hazards found on it and the policy decision for it.

    ``sql`` is migra's statement: the plan's identity (its hash, what approvals bind to, what a re-diff is
    compared with). ``steps``, when set, is what actually executes instead (an online-safe rewrite such as
    ``CREATE INDEX CONCURRENTLY``); ``tables`` holds the figures of the relations it touches.
    """

    sql: str
    hazards: tuple[Hazard, ...] = ()
    decision: Decision = Decision.AUTO
    transactional: bool = True
    steps: tuple[ExecStep, ...] = ()
    tables: Mapping[str, TableStats] = field(default_factory=dict)

    @property
    def rewritten(self) -> bool:
        """Whether what executes differs from the statement as written (an online-safe rewrite)."""
        return [(e.sql, e.transactional) for e in self.steps] not in ([], [(self.sql, self.transactional)])

    def execution(self) -> tuple[ExecStep, ...]:
        """The commands that carry out this statement, in order."""
        return self.steps or (ExecStep(self.sql, self.transactional),)

    @property
    def destructive(self) -> bool:
        return any(h.kind is HazardKind.DESTRUCTIVE for h in self.hazards)

    @property
    def hazard_codes(self) -> tuple[str, ...]:
        return tuple(h.code for h in self.hazards)

    def to_record(self) -> dict[str, Any]:
        """The stored form: everything :meth:`from_record` needs, and nothing derived."""
        return {
            "sql": self.sql,
            "hazards": [h.to_json() for h in self.hazards],
            "decision": self.decision.value,
            "transactional": self.transactional,
            "steps": [e.to_json() for e in self.steps],
            "tables": {name: st.to_record() for name, st in self.tables.items()},
        }

    def binding(self) -> list[Any]:
        """What an approval of this statement binds to besides its SQL: the commands that execute it, its hazards
        (code, kind, severity: not the messages, which quote figures) and the policy's decision."""
        return [
            self.sql,
            [e.to_json() for e in self.execution()],
            [[h.code, h.kind.value, h.severity.value] for h in self.hazards],
            self.decision.value,
        ]

    @classmethod
    def from_record(cls, data: Mapping[str, Any]) -> Statement:
        """A stored statement (also one stored by older versions, whose ``steps`` held the default step)."""
        steps = tuple(ExecStep.from_json(e) for e in data.get("steps") or ())
        transactional = bool(data.get("transactional", True))
        if steps == (ExecStep(str(data["sql"]), transactional),):
            steps = ()
        return cls(
            sql=str(data["sql"]),
            hazards=tuple(Hazard.from_json(h) for h in data.get("hazards") or ()),
            decision=Decision(data.get("decision", Decision.NEEDS_APPROVAL.value)),
            transactional=transactional,
            steps=steps,
            tables={name: TableStats.from_record(t) for name, t in (data.get("tables") or {}).items()},
        )

    def to_json(self) -> dict[str, Any]:
        """The API and CLI form (``hazard_codes`` and ``hazard_details`` are derived, for older clients)."""
        hazards_json = [h.to_json() for h in self.hazards]
        return {
            "sql": self.sql,
            "destructive": self.destructive,
            "hazards": hazards_json,
            "hazard_codes": list(self.hazard_codes),
            "hazard_details": hazards_json,  # deprecated alias of "hazards"
            "decision": self.decision.value,
            "tables": {name: st.to_json() for name, st in self.tables.items()},
            "steps": [e.to_json() for e in self.execution()],
        }


def transaction_units(statements: Sequence[Statement]) -> list[tuple[int, ...]]:
    """For each statement, the numbers (from 1) of the units its steps run in when the statements run in this
    order: consecutive transactional steps share one unit (one transaction), a step outside a transaction is a unit
    of its own. What the executor does (``reconciler.apply.units``), shown to approvers."""
    out: list[tuple[int, ...]] = []
    unit, open_tx = 0, False
    for stmt in statements:
        mine: list[int] = []
        for step in stmt.execution():
            if not (step.transactional and open_tx):
                unit += 1
            open_tx = step.transactional
            if unit not in mine:
                mine.append(unit)
        out.append(tuple(mine))
    return out


def statement_phases(statements: Sequence[Statement]) -> list[str]:
    """For each statement, its phase: ``transactional`` (runs in a transaction with its neighbours), ``after`` (runs
    outside a transaction once every transactional unit is done) or ``in place`` (outside a transaction, kept
    before a later statement that depends on it). Shown to approvers beside ``units``."""
    tx = [any(step.transactional for step in s.execution()) for s in statements]
    last_tx = max((i for i, t in enumerate(tx) if t), default=-1)
    return ["transactional" if t else "after" if i > last_tx else "in place" for i, t in enumerate(tx)]


def statements_hash(sqls: list[str] | tuple[str, ...]) -> str:
    """A stable hash of an ordered list of SQL statements (what an approval binds to)."""
    payload = json.dumps(list(sqls), ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def steps_digest(statements: tuple[Statement, ...] | list[Statement]) -> str:
    """A stable hash of what runs and why it may: each statement's steps, hazards and decision
    (:meth:`Statement.binding`). An approval binds to it besides the SQL."""
    payload = json.dumps([s.binding() for s in statements], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class DatabaseIdentity:
    """Which database a plan was computed on: ``host:port/dbname`` from the DSN, and from the server itself its
    cluster's ``system_identifier`` (``pg_control_system()``) and the database's oid. A DSN re-pointed to another
    database, a database dropped and recreated, or a cluster replaced behind the same address all change it.

    Stored as text: ``host:port/dbname`` or ``host:port/dbname (system SYSID, oid OID)``.
    """

    address: str
    system_identifier: str = ""
    oid: int | None = None

    def __str__(self) -> str:
        if not self.system_identifier:
            return self.address
        return f"{self.address} (system {self.system_identifier}, oid {self.oid})"

    @classmethod
    def parse(cls, text: str) -> DatabaseIdentity:
        address, sep, rest = text.partition(" (system ")
        if not sep or not rest.endswith(")"):
            return cls(text)
        system, _, oid = rest[:-1].partition(", oid ")
        return cls(address, system, int(oid) if oid.isdigit() else None)

    def changed(self, now: DatabaseIdentity) -> str | None:
        """Why ``now`` is not this database (None: it is). The server's identity is compared when both sides
        have one (plans stored before it was read have only the address)."""
        same = self.address == now.address
        if same and self.system_identifier and now.system_identifier:
            same = (self.system_identifier, self.oid) == (now.system_identifier, now.oid)
        if same:
            return None
        return f"the database changed: the plan was computed on {self}, the environment is now {now}"


@dataclass(frozen=True, order=True)
class UnmanagedDrift:
    """A difference between the environment's catalog and the desired build's that the plan does not resolve."""

    kind: str  # the catalog description's kind (comment, acl, options, domain ...): a metric label
    object: str
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "object": self.object, "detail": self.detail}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> UnmanagedDrift:
        return cls(str(doc["kind"]), str(doc["object"]), str(doc["detail"]))


@dataclass(frozen=True)
class Plan:
    """What it takes to make one environment match one desired revision."""

    environment: str
    desired_revision: str
    statements: tuple[Statement, ...]
    fingerprint: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)
    database: str = ""
    unmanaged_drift: tuple[UnmanagedDrift, ...] = ()

    @property
    def in_sync(self) -> bool:
        """Nothing to run and nothing the plan leaves different: the catalogs match after normalisation."""
        return not self.statements and not self.unmanaged_drift

    @property
    def sqls(self) -> tuple[str, ...]:
        return tuple(s.sql for s in self.statements)

    @property
    def hash(self) -> str:
        return statements_hash(self.sqls)

    @property
    def destructive(self) -> bool:
        return any(s.destructive for s in self.statements)

    @property
    def key(self) -> PlanKey:
        return PlanKey(self.desired_revision, self.hash, self.fingerprint, self.database, steps_digest(self.statements))

    def to_json(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "desired_revision": self.desired_revision,
            "in_sync": self.in_sync,
            "statements_hash": self.hash,
            "statements": [
                {**s.to_json(), "units": list(u), "phase": p}
                for s, u, p in zip(
                    self.statements,
                    transaction_units(self.statements),
                    statement_phases(self.statements),
                    strict=True,
                )
            ],
            "unmanaged_drift": [d.to_json() for d in self.unmanaged_drift],
        }


def revision_changed(then: str, now: str) -> str:
    return f"the desired state changed (plan was for revision {then[:12]}, now {now[:12]})"


def fingerprint_changed(then: str, now: str) -> str:
    return f"the environment's schema changed since the plan was computed (fingerprint {then[:12]}, now {now[:12]})"


@dataclass(frozen=True)
class PlanKey:
    """What a plan is bound to: the desired revision, its statements, the environment's schema fingerprint, the
    database it was computed on (:class:`DatabaseIdentity` as text) and the digest of its steps, hazards and
    decisions (:func:`steps_digest`). Two plans are the same plan exactly when their keys are equal."""

    revision: str
    statements_hash: str
    fingerprint: str
    database: str
    steps: str = ""

    def mismatch(self, fresh: PlanKey) -> str | None:
        """Why a plan bound to this key does not match a freshly computed one (None: it matches).

        An empty fingerprint, database or steps digest on either side is not compared.
        """
        if self.revision != fresh.revision:
            return revision_changed(self.revision, fresh.revision)
        if self.database and fresh.database:
            moved = DatabaseIdentity.parse(self.database).changed(DatabaseIdentity.parse(fresh.database))
            if moved is not None:
                return moved
        if self.statements_hash != fresh.statements_hash:
            return "a fresh diff no longer yields exactly the approved statements"
        if self.steps and fresh.steps and self.steps != fresh.steps:
            return "the statements' steps, hazards or policy decisions changed since the plan was computed"
        if self.fingerprint and fresh.fingerprint and self.fingerprint != fresh.fingerprint:
            return fingerprint_changed(self.fingerprint, fresh.fingerprint)
        return None

    def matches(self, fresh: PlanKey) -> bool:
        return self.mismatch(fresh) is None


def fields_json(record: Any) -> dict[str, Any]:
    """Every field of a dataclass instance by name, in declaration order; datetimes as ISO 8601 text."""
    out: dict[str, Any] = {}
    for f in fields(record):
        value = getattr(record, f.name)
        out[f.name] = value.isoformat() if isinstance(value, datetime) else value
    return out
