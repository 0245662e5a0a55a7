"""Fleets: environments generated from a list of names, a DSN template, shared settings and per-name overrides."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from reconciler.config import FleetDiscovery, load_config, with_fleets
from reconciler.errors import ConfigError


def write(tmp_path: Path, doc: dict[str, object]) -> Path:
    path = tmp_path / "reconciler.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


FLEET = {
    "names": ["acme", "globex"],
    "dsn": "postgresql://app@tenants-db/tenant_{name}",
    "template": {"interval": "5m", "policy": {"deny": ["DS102"]}},
    "overrides": {"acme": {"production": True, "interval": "1m"}},
}


def test_a_fleet_becomes_one_environment_per_name(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, {"environments": {"ops": {"dsn": "postgresql://x/ops"}}, "fleets": {"t": FLEET}}))
    assert sorted(cfg.environments) == ["acme", "globex", "ops"]
    acme, globex = cfg.environment("acme"), cfg.environment("globex")
    assert acme.dsn == "postgresql://app@tenants-db/tenant_acme" and acme.production
    assert acme.interval == timedelta(minutes=1) and acme.policy.deny == ("DS102",)
    assert globex.dsn.endswith("/tenant_globex") and not globex.production and globex.interval == timedelta(minutes=5)


def test_tokens_may_name_fleet_environments(tmp_path: Path) -> None:
    tokens = [{"identity": "ops", "token_env": "T", "environments": ["acme"]}]
    cfg = load_config(write(tmp_path, {"fleets": {"t": FLEET}, "server": {"tokens": tokens}}))
    assert cfg.server.tokens[0].environments == ("acme",)


@pytest.mark.parametrize(
    ("fleet", "key", "message"),
    [
        ({**FLEET, "dsn": "postgresql://x/db"}, "fleets.t", "must contain {name}"),
        ({**FLEET, "template": {"dsn": "x"}}, "fleets.t", "not from template"),
        ({**FLEET, "overrides": {"initech": {}}}, "fleets.t", "initech"),
        ({**FLEET, "template": {"colour": 1}}, "fleets.t.template.colour", "unknown key"),
        ({**FLEET, "overrides": {"acme": {"interval": "1ms"}}}, "fleets.t.overrides.acme.interval", "100ms"),
        ({**FLEET, "names": ["Acme Corp"], "overrides": {}}, "fleets.t", "not an environment name"),
        ({k: v for k, v in FLEET.items() if k != "names"}, "fleets.t", "exactly one of names or discover"),
    ],
)
def test_fleet_errors_name_the_key(tmp_path: Path, fleet: dict[str, object], key: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, {"fleets": {"t": fleet}}))
    assert f": {key}" in str(err.value) and message in str(err.value)


def test_a_fleet_name_may_not_shadow_an_environment(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="defined twice"):
        load_config(write(tmp_path, {"environments": {"acme": {"dsn": "x"}}, "fleets": {"t": FLEET}}))


def test_discovered_names_that_would_break_out_of_the_dsn_are_refused(tmp_path: Path) -> None:
    """A discovered name is what a database server says: one that is not an environment name is refused."""
    cfg = load_config(write(tmp_path, {}))
    fleet = {"discover": {"dsn": "postgresql://x/postgres", "query": "select 1"}, "dsn": "postgresql://h/{name}"}
    with_fleet = cfg.model_validate({"fleets": {"t": fleet}})

    def evil(_d: FleetDiscovery, _key: str) -> list[str]:
        return ["ok", "x?host=evil"]

    with pytest.raises(ConfigError, match="not an environment name"):
        with_fleets(with_fleet, "f.yaml", evil)
    assert sorted(with_fleets(with_fleet, "f.yaml", lambda _d, _k: ["b", "a"]).environments) == ["a", "b"]
