"""Pydantic models of the ``/api/v1`` JSON: the OpenAPI document is generated from them.

They describe the JSON that the store's and the status's ``to_json`` already write (the contract in the README);
responses are those documents as they are, so a field added there appears in responses before it is described
here. Every model allows fields it does not name: the contract may grow, never shrink.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..model import Decision, HazardKind, PlanStatus, Severity


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ErrorDetail(_Open):
    status: int = Field(description="the HTTP status, repeated")
    code: str = Field(description="snake_case: bad_request, unauthorized, forbidden, not_found, conflict, busy ...")
    message: str


class ErrorBody(_Open):
    error: ErrorDetail


class Health(_Open):
    status: Literal["ok"]


class Readiness(_Open):
    status: Literal["ok", "unavailable"]
    checks: dict[str, bool]


class Condition(_Open):
    type: Literal["Ready", "Drifted", "AwaitingApproval", "Reconciling", "Stalled"]
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(description="CamelCase reason, e.g. InSync, AwaitingApproval")
    message: str
    last_transition_time: str = Field(json_schema_extra={"format": "date-time"})


class EnvironmentStatusModel(_Open):
    conditions: list[Condition] = []
    last_attempted_revision: str | None = None
    last_applied_revision: str | None = None
    last_error: str | None = None
    observed_at: str | None = None
    last_outcome: Literal["success", "requeue", "error", "terminal"] | None = None
    consecutive_failures: int = 0
    pending_plan_id: int | None = None


class MaintenanceWindow(_Open):
    cron: str
    duration_seconds: float
    timezone: str


class Environment(_Open):
    name: str
    status: EnvironmentStatusModel
    suspend: bool = False
    interval_seconds: float = 0
    maintenance_windows: list[MaintenanceWindow] = []
    maintenance_window_open: bool = True
    stalled: bool = False
    next_reconcile_at: str | None = None


class EnvironmentList(_Open):
    environments: list[Environment]


class HazardModel(_Open):
    code: str = Field(description="stable code, e.g. DS103")
    kind: HazardKind
    severity: Severity
    message: str


class TableFigures(_Open):
    rows: int | None = Field(description="the planner's estimate (reltuples); null when never analyzed")
    bytes: int


class Step(_Open):
    sql: str
    transactional: bool
    statement_timeout_seconds: float | None
    lock_timeout_seconds: float | None
    concurrent_index: str | None = None


class StatementModel(_Open):
    sql: str
    destructive: bool
    hazards: list[HazardModel]
    hazard_codes: list[str]
    hazard_details: list[HazardModel] = Field(description="deprecated alias of hazards")
    decision: Decision
    tables: dict[str, TableFigures] = {}
    steps: list[Step] = []


class Approval(_Open):
    by: str
    decision: str
    at: str | None
    reason: str | None = None


class Plan(_Open):
    id: int
    environment: str
    status: PlanStatus
    desired_revision: str
    statements_hash: str
    fingerprint: str
    database: str = Field(description="host:port/dbname (empty for plans stored before store version 3)")
    statements: list[StatementModel]
    created_at: str | None
    updated_at: str | None
    decided_by: str | None
    decided_at: str | None
    reason: str | None
    applied_at: str | None
    error: str | None
    resumable: bool
    approvals: list[Approval]
    completed_steps: list[int]


class PlanList(_Open):
    plans: list[Plan]


class Links(_Open):
    name: str
    links: dict[str, str]


class ApproveBody(BaseModel):
    """An approval carries nothing: the token names who approves."""

    model_config = ConfigDict(extra="forbid")


# A reason holds a character that is not whitespace in Python's sense (``str.isspace``), written out, so the
# document's pattern (ECMA regular expressions, whose ``\s`` lacks U+0085 and U+001C..U+001F) and the server agree.
NOT_BLANK = "[^\t\n\x0b\x0c\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"


class RejectBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=4000, pattern=NOT_BLANK, description="why; at most 4000 characters")
