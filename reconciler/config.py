"""Configuration: YAML in, frozen validated models out.

* ``${VAR}`` in any string is replaced by the process environment's value; ``${VAR:-default}`` gives a
  default. A missing variable is an error naming the file and the key path.
* Unknown keys are rejected; every error names the file and the key path (``environments.dev.dsn``).
* Relative paths are resolved against the folder that holds the config file.
* Durations are written ``500ms``, ``5s``, ``15m``, ``1h`` or as a number of seconds.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import ConfigError

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


class EnvironmentConfig(_Model):
    """One database whose schema the reconciler keeps in line with the desired state."""

    dsn: str
    schemas: tuple[str, ...] = ()
    exclude_schemas: tuple[str, ...] = ()
    privileges: bool = False
    lock_timeout: Duration = timedelta(seconds=5)
    statement_timeout: Duration = timedelta(minutes=15)
    connect_timeout: Duration = timedelta(seconds=10)

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


class Config(_Model):
    """The whole configuration file."""

    desired_state: str = "desired-state"
    scratch: str | None = None
    state: str = "sqlite:///.reconciler/state.db"
    embedded: EmbeddedConfig = Field(default_factory=EmbeddedConfig)
    environments: dict[str, EnvironmentConfig] = Field(default_factory=dict)

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
    base = p.resolve().parent
    embedded = cfg.embedded.model_copy(
        update={
            "data_dir": _resolve(base, cfg.embedded.data_dir),
            "bin_dir": _resolve(base, cfg.embedded.bin_dir) if cfg.embedded.bin_dir else None,
        }
    )
    return cfg.model_copy(
        update={
            "desired_state": _resolve(base, cfg.desired_state),
            "state": _resolve_sqlite(base, cfg.state),
            "embedded": embedded,
            "source": shown,
        }
    )
