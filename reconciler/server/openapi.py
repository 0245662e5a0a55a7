"""The OpenAPI 3.1 document of the daemon's HTTP API (served at ``/api/v1/openapi.json``)."""

from __future__ import annotations

from typing import Any

from .. import __version__
from ..model import PlanStatus


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERRORS = {
    "400": {"$ref": "#/components/responses/BadRequest"},
    "401": {"$ref": "#/components/responses/Unauthorized"},
    "404": {"$ref": "#/components/responses/NotFound"},
}
_PLAN_ID = {"name": "plan_id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}


def openapi_document() -> dict[str, Any]:
    error = {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["status", "code", "message"],
                "properties": {
                    "status": {"type": "integer"},
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                },
            }
        },
    }
    condition = {
        "type": "object",
        "required": ["type", "status", "reason", "message", "last_transition_time"],
        "properties": {
            "type": {"enum": ["Ready", "Drifted", "AwaitingApproval", "Reconciling", "Stalled"]},
            "status": {"enum": ["True", "False", "Unknown"]},
            "reason": {"type": "string", "description": "CamelCase reason, e.g. InSync, AwaitingApproval"},
            "message": {"type": "string"},
            "last_transition_time": {"type": "string", "format": "date-time"},
        },
    }
    status = {
        "type": "object",
        "properties": {
            "conditions": {"type": "array", "items": _ref("Condition")},
            "last_attempted_revision": {"type": ["string", "null"]},
            "last_applied_revision": {"type": ["string", "null"]},
            "last_error": {"type": ["string", "null"]},
            "observed_at": {"type": ["string", "null"], "format": "date-time"},
            "last_outcome": {"enum": ["success", "requeue", "error", "terminal", None]},
            "consecutive_failures": {"type": "integer"},
            "pending_plan_id": {"type": ["integer", "null"]},
        },
    }
    environment = {
        "type": "object",
        "required": ["name", "status"],
        "properties": {
            "name": {"type": "string"},
            "suspend": {"type": "boolean"},
            "interval_seconds": {"type": "number"},
            "maintenance_windows": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "cron": {"type": "string"},
                        "duration_seconds": {"type": "number"},
                        "timezone": {"type": "string"},
                    },
                },
            },
            "maintenance_window_open": {"type": "boolean"},
            "stalled": {"type": "boolean"},
            "next_reconcile_at": {"type": ["string", "null"], "format": "date-time"},
            "status": _ref("EnvironmentStatus"),
        },
    }
    statement = {
        "type": "object",
        "properties": {
            "sql": {"type": "string"},
            "destructive": {"type": "boolean"},
            "hazards": {"type": "array", "items": {"type": "object"}},
            "hazard_codes": {"type": "array", "items": {"type": "string"}},
            "hazard_details": {"type": "array", "items": {"type": "object"}},
            "decision": {"enum": ["auto", "needs_approval", "denied"]},
        },
    }
    plan = {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "environment": {"type": "string"},
            "status": {"enum": [s.value for s in PlanStatus]},
            "desired_revision": {"type": "string"},
            "statements_hash": {"type": "string"},
            "fingerprint": {"type": "string"},
            "statements": {"type": "array", "items": _ref("Statement")},
            "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
            "decided_by": {"type": ["string", "null"]},
            "decided_at": {"type": ["string", "null"], "format": "date-time"},
            "reason": {"type": ["string", "null"]},
            "applied_at": {"type": ["string", "null"], "format": "date-time"},
            "error": {"type": ["string", "null"]},
        },
    }
    write: dict[str, Any] = {"security": [{"bearer": []}]}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Schema Reconciler API",
            "version": __version__,
            "description": "Environments with their status, plans with statements and hazards, and approvals. "
            "Writes need a bearer token that may decide the plan's environment; reads need one only when "
            "server.read_requires_token is set.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": error,
                "Condition": condition,
                "EnvironmentStatus": status,
                "Environment": environment,
                "Statement": statement,
                "Plan": plan,
            },
            "responses": {
                "BadRequest": _json(_ref("Error"), "the request is malformed"),
                "Unauthorized": _json(_ref("Error"), "a valid bearer token is required"),
                "Forbidden": _json(_ref("Error"), "the token may not decide plans of this environment"),
                "NotFound": _json(_ref("Error"), "no such environment or plan"),
                "Conflict": _json(_ref("Error"), "the plan is not in a state that allows this"),
            },
        },
        "paths": {
            "/healthz": {"get": {"summary": "the process is alive", "responses": {"200": {"description": "alive"}}}},
            "/readyz": {
                "get": {
                    "summary": "configuration loaded, store reachable, scheduler running",
                    "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics (text exposition format)",
                    "responses": {"200": {"description": "metrics", "content": {"text/plain": {}}}},
                }
            },
            "/api/v1/environments": {
                "get": {
                    "summary": "every environment with its status",
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {"environments": {"type": "array", "items": _ref("Environment")}},
                            },
                            "environments",
                        ),
                        **_ERRORS,
                    },
                }
            },
            "/api/v1/environments/{name}": {
                "get": {
                    "summary": "one environment with its status",
                    "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
                    "responses": {"200": _json(_ref("Environment"), "the environment"), **_ERRORS},
                }
            },
            "/api/v1/plans": {
                "get": {
                    "summary": "plans, optionally filtered by environment and status",
                    "parameters": [
                        {"name": "environment", "in": "query", "schema": {"type": "string"}},
                        {"name": "status", "in": "query", "schema": {"enum": [s.value for s in PlanStatus]}},
                    ],
                    "responses": {
                        "200": _json(
                            {"type": "object", "properties": {"plans": {"type": "array", "items": _ref("Plan")}}},
                            "plans",
                        ),
                        **_ERRORS,
                    },
                }
            },
            "/api/v1/plans/{plan_id}": {
                "get": {
                    "summary": "one plan",
                    "parameters": [_PLAN_ID],
                    "responses": {"200": _json(_ref("Plan"), "the plan"), **_ERRORS},
                }
            },
            "/api/v1/plans/{plan_id}/approve": {
                "post": {
                    "summary": "approve a pending plan; its environment is reconciled at once",
                    "parameters": [_PLAN_ID],
                    **write,
                    "requestBody": {
                        "required": False,
                        "content": {"application/json": {"schema": {"type": "object", "additionalProperties": False}}},
                    },
                    "responses": {
                        "200": _json(_ref("Plan"), "the approved plan"),
                        **_ERRORS,
                        "403": {"$ref": "#/components/responses/Forbidden"},
                        "409": {"$ref": "#/components/responses/Conflict"},
                    },
                }
            },
            "/api/v1/plans/{plan_id}/reject": {
                "post": {
                    "summary": "reject a pending or approved plan",
                    "parameters": [_PLAN_ID],
                    **write,
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["reason"],
                                    "properties": {"reason": {"type": "string", "minLength": 1}},
                                    "additionalProperties": False,
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": _json(_ref("Plan"), "the rejected plan"),
                        **_ERRORS,
                        "403": {"$ref": "#/components/responses/Forbidden"},
                        "409": {"$ref": "#/components/responses/Conflict"},
                    },
                }
            },
        },
    }
