"""Policy per environment, table-driven, no database: defaults, production, allow/require/deny lists."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.config import EnvironmentConfig, PolicyConfig, load_config, parse_size
from reconciler.errors import ConfigError
from reconciler.hazards import known_codes
from reconciler.model import Decision, Hazard, HazardKind, Severity, Statement
from reconciler.policy import decide, denial_reason, denied_in_record


def hz(code: str) -> Hazard:
    chk = known_codes()[code]
    return Hazard(code, chk.kind, chk.severity, chk.summary)


@dataclass(frozen=True)
class Case:
    name: str
    codes: tuple[str, ...]
    expected: Decision
    env: dict[str, Any] = field(default_factory=dict)


CASES = [
    Case("no hazards", (), Decision.AUTO),
    Case("destructive needs approval", ("DS103",), Decision.NEEDS_APPROVAL),
    Case("data-dependent needs approval", ("MF102",), Decision.NEEDS_APPROVAL),
    Case("unparseable needs approval", ("UP001",), Decision.NEEDS_APPROVAL),
    Case("lock on a large table runs outside production", ("LK101",), Decision.AUTO),
    Case(
        "lock on a large table needs approval in production", ("LK101",), Decision.NEEDS_APPROVAL, {"production": True}
    ),
    Case("rewrite needs approval in production", ("LK102",), Decision.NEEDS_APPROVAL, {"production": True}),
    Case("recreate runs in production", ("RC101",), Decision.AUTO, {"production": True}),
    Case("authorization needs approval by default", ("AZ101",), Decision.NEEDS_APPROVAL),
    Case("an authorization upgrade relaxed by code", ("AZ101",), Decision.AUTO, {"policy": {"auto_apply": ["AZ101"]}}),
    Case(
        "the kind relaxes only the upgrades",
        ("AZ101", "AZ105"),
        Decision.NEEDS_APPROVAL,
        {"policy": {"auto_apply": ["AUTHORIZATION"]}},
    ),
    Case("an upgrade relaxed by kind", ("AZ103",), Decision.AUTO, {"policy": {"auto_apply": ["AUTHORIZATION"]}}),
    Case("code execution needs approval by default", ("CX101",), Decision.NEEDS_APPROVAL),
    Case("code execution relaxed by code", ("CX102",), Decision.AUTO, {"policy": {"auto_apply": ["CX102"]}}),
    Case("protection removed needs approval by default", ("PR101",), Decision.NEEDS_APPROVAL),
    Case("unclassified needs approval", ("UC101",), Decision.NEEDS_APPROVAL),
    Case("unclassified can be denied", ("UC101",), Decision.DENIED, {"policy": {"deny": ["UNCLASSIFIED"]}}),
    Case("RLS disabled needs approval by default", ("AZ102",), Decision.NEEDS_APPROVAL),
    Case("RLS unforced needs approval by default", ("AZ104",), Decision.NEEDS_APPROVAL),
    Case("policy dropped needs approval by default", ("AZ107",), Decision.NEEDS_APPROVAL),
    Case(
        "authorization by kind",
        ("AZ101",),
        Decision.NEEDS_APPROVAL,
        {"policy": {"require_approval": ["AUTHORIZATION"]}},
    ),
    Case("allow one code of a kind", ("MF102",), Decision.AUTO, {"policy": {"auto_apply": ["MF102"]}}),
    Case("allow a kind", ("MF102", "MF104"), Decision.AUTO, {"policy": {"auto_apply": ["DATA_DEPENDENT"]}}),
    Case(
        "code beats kind", ("MF102",), Decision.AUTO, {"policy": {"deny": ["DATA_DEPENDENT"], "auto_apply": ["MF102"]}}
    ),
    Case("deny a code", ("DS101",), Decision.DENIED, {"policy": {"deny": ["DS101"]}}),
    Case("deny a kind", ("DS102",), Decision.DENIED, {"policy": {"deny": ["DESTRUCTIVE"]}}),
    Case("strictest hazard wins", ("RC101", "DS103"), Decision.NEEDS_APPROVAL),
    Case("denied beats needs approval", ("DS103", "AZ102"), Decision.DENIED, {"policy": {"deny": ["AZ102"]}}),
    Case(
        "production lock allowed by code",
        ("LK107",),
        Decision.AUTO,
        {"production": True, "policy": {"auto_apply": ["LK107"]}},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_decide(case: Case) -> None:
    env = EnvironmentConfig(dsn="postgresql://x/y", **case.env)
    assert decide([hz(c) for c in case.codes], env) is case.expected


def test_denial_reason_names_statement_and_code() -> None:
    env = EnvironmentConfig(dsn="x", policy={"deny": ["DS101"]})
    stmts = [
        Statement('drop schema "old"', (hz("DS101"),), Decision.DENIED),
        Statement("create table t (id int)"),
    ]
    assert (
        denial_reason(stmts, env) == 'the environment\'s policy denies, even with approval: drop schema "old" (DS101)'
    )
    assert denial_reason(stmts[1:], env) is None
    assert denied_in_record([{"sql": "a", "decision": "denied"}, {"sql": "b", "decision": "auto"}]) == ["a"]


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("100MB", 100 * 1024**2),
        ("1 GB", 1024**3),
        ("512kB", 512 * 1024),
        ("2MiB", 2 * 1024**2),
        (4096, 4096),
        ("10", 10),
    ],
)
def test_sizes(text: Any, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("env", "key", "message"),
    [
        ({"policy": {"deny": ["DS999"]}}, "environments.prod.policy.deny[0]", "unknown hazard kind or code 'DS999'"),
        ({"policy": {"auto_apply": ["LOCK", "destructive"]}}, "environments.prod.policy.auto_apply[1]", "unknown"),
        (
            {"policy": {"deny": ["AZ101"], "auto_apply": ["AZ101"]}},
            "environments.prod.policy",
            "AZ101 is listed in both",
        ),
        (
            {"policy": {"auto_apply": ["RECREATE", "DESTRUCTIVE"]}},
            "environments.prod.policy.auto_apply",
            "DESTRUCTIVE cannot run unattended",
        ),
        ({"policy": {"auto_apply": ["DS103"]}}, "environments.prod.policy.auto_apply", "DS103 cannot run unattended"),
        ({"policy": {"auto_apply": ["UP001"]}}, "environments.prod.policy.auto_apply", "UP001 cannot run unattended"),
        ({"policy": {"auto_apply": ["UC101"]}}, "environments.prod.policy.auto_apply", "UC101 cannot run unattended"),
        (
            {"policy": {"auto_apply": ["UNCLASSIFIED"]}},
            "environments.prod.policy.auto_apply",
            "UNCLASSIFIED cannot run unattended",
        ),
        ({"policy": {"auto_apply": ["AZ102"]}}, "environments.prod.policy.auto_apply", "AZ102 cannot run unattended"),
        ({"policy": {"auto_apply": ["AZ113"]}}, "environments.prod.policy.auto_apply", "AZ113 cannot run unattended"),
        ({"policy": {"allow": []}}, "environments.prod.policy.allow", "unknown key"),
        ({"large_table": {"bytes": "lots"}}, "environments.prod.large_table.bytes", "expected a size"),
        ({"large_table": {"rows": -1}}, "environments.prod.large_table.rows", "greater than or equal to 0"),
        ({"production": "maybe"}, "environments.prod.production", "bool"),
    ],
    ids=[
        "unknown code",
        "kind is case-sensitive",
        "listed twice",
        "destructive kind never unattended",
        "destructive code never unattended",
        "unparseable never unattended",
        "unclassified code never unattended",
        "unclassified kind never unattended",
        "authorization downgrade never unattended",
        "changed guarding function never unattended",
        "unknown policy key",
        "bad size",
        "negative rows",
        "production",
    ],
)
def test_policy_config_errors_name_file_and_key(tmp_path: Path, env: dict[str, Any], key: str, message: str) -> None:
    path = tmp_path / "reconciler.yaml"
    path.write_text(yaml.safe_dump({"environments": {"prod": {"dsn": "postgresql://db/app", **env}}}))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert f"{path}: {key}: " in str(err.value) and message in str(err.value)


def test_policy_config_loads(tmp_path: Path) -> None:
    path = tmp_path / "reconciler.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "environments": {
                    "prod": {
                        "dsn": "postgresql://db/app",
                        "production": True,
                        "large_table": {"bytes": "1GB", "rows": 5000},
                        "policy": {"auto_apply": ["RECREATE"], "require_approval": ["AZ101"], "deny": ["DS101"]},
                        "online_rewrites": False,
                    }
                }
            }
        )
    )
    env = load_config(path).environment("prod")
    assert env.production and not env.online_rewrites
    assert (env.large_table.bytes, env.large_table.rows) == (1024**3, 5000)
    assert env.policy.deny == ("DS101",) and env.policy.auto_apply == ("RECREATE",)


@pytest.mark.parametrize(
    ("selector", "code", "kind"),
    [
        ("DESTRUCTIVE", "DS103", HazardKind.DESTRUCTIVE),
        ("DS103", "DS103", HazardKind.DESTRUCTIVE),
        ("UNPARSEABLE", "UP001", HazardKind.UNPARSEABLE),
        ("UP001", "UP001", HazardKind.UNPARSEABLE),
    ],
)
def test_never_unattended_even_if_a_policy_slipped_past_validation(selector: str, code: str, kind: HazardKind) -> None:
    """The guard in policy itself: no configuration makes data loss or an unparsed statement run unattended."""
    env = EnvironmentConfig(dsn="x").model_copy(
        update={"policy": PolicyConfig.model_construct(auto_apply=(selector,), require_approval=(), deny=())}
    )
    assert decide([Hazard(code, kind, Severity.DANGER, "m")], env) is Decision.NEEDS_APPROVAL
