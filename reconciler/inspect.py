"""The only module that imports schemainspect: inspect a database's schema once, filter it per environment."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

with warnings.catch_warnings():
    # schemainspect imports pkg_resources, which warns on import with setuptools 80 and 81.
    warnings.simplefilter("ignore", UserWarning)
    from schemainspect import get_inspector
    from schemainspect.pg.obj import PROPS

from .db import engine_for

Inspection = Any  # schemainspect.pg.obj.PostgreSQL; untyped upstream

# Schemas that are never part of a managed schema.
ALWAYS_EXCLUDED = ("pg_catalog", "information_schema", "pg_toast")


def inspect_database(dsn: str, *, what: str, connect_timeout: timedelta = timedelta(seconds=10)) -> Inspection:
    """Read the whole schema of the database at ``dsn`` with schemainspect."""
    engine = engine_for(dsn, what=what, connect_timeout=connect_timeout)
    try:
        with engine.connect() as conn:
            return get_inspector(conn)
    finally:
        engine.dispose()


def filtered(inspection: Inspection, schemas: Iterable[str] = (), exclude_schemas: Iterable[str] = ()) -> Inspection:
    """A shallow copy of ``inspection`` keeping only objects in ``schemas`` (all if empty), minus excluded ones.

    The original is left untouched, so one inspection of the desired state serves every environment.
    """
    keep = set(schemas)
    drop = set(exclude_schemas)
    if not keep and not drop:
        return inspection
    out = copy.copy(inspection)
    for prop in PROPS.split():
        items = getattr(inspection, prop)
        setattr(
            out,
            prop,
            type(items)((k, v) for k, v in items.items() if (not keep or v.schema in keep) and v.schema not in drop),
        )
    return out
