"""The only module that imports migra: turn two inspections into an ordered list of SQL statements.

What the classifier reads is what runs: each chunk migra emits is exactly one statement, never re-split (one
exception, checked by its parse tree: a trigger's creation followed by the setting of that same trigger's enabled
state, which migra writes as one chunk, is two statements). A chunk that parses as zero or several statements,
and a name or literal that schemainspect writes into SQL without escaping it (enum labels, collation locales,
extension versions), are refused before anything is classified. This stops a desired-state author (or the contents
of an environment) from turning one diffed object into two statements, e.g. an enum label
``z'); select public.fix(); --``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

from pglast import ast, parser
from pglast.enums import AlterTableType

from .corrections import partition_fixes, public_grantees, with_added_labels
from .errors import UnsafeSqlError
from .inspect import Inspection, import_schemainspect

# Characters that end or escape a string literal: schemainspect writes some values between quotes unescaped.
_LITERAL_BREAKERS = ("'", "\\")


def _printed_unescaped(inspection: Inspection) -> Iterator[tuple[str, str]]:
    """(what, value) for every value of ``inspection`` that schemainspect prints in quotes without escaping."""
    for name, enum in (getattr(inspection, "enums", None) or {}).items():
        for label in getattr(enum, "elements", None) or ():
            yield f"a label of enum {name}", str(label)
    for name, coll in (getattr(inspection, "collations", None) or {}).items():
        for attr in ("provider", "locale"):
            yield f"the {attr} of collation {name}", str(getattr(coll, attr, "") or "")
    for name, ext in (getattr(inspection, "extensions", None) or {}).items():
        yield f"the version of extension {name}", str(getattr(ext, "version", "") or "")


def refuse_unescaped(inspection: Inspection, side: str) -> None:
    """Raise UnsafeSqlError if ``inspection`` holds a value that migra would write into SQL unescaped."""
    for what, value in _printed_unescaped(inspection):
        if any(c in value for c in _LITERAL_BREAKERS):
            raise UnsafeSqlError(
                f"diffing: {what} in the {side} holds a quote or backslash ({value!r}); migra would write it into "
                "SQL unescaped, so it is refused"
            )


def one_statement(chunk: str) -> str:
    """The one statement of a migra chunk, without its trailing ``;``; UnsafeSqlError if it holds zero or several.

    A chunk that PostgreSQL's grammar (pglast) cannot parse at all is returned as it is: the hazard engine marks it
    unparseable (UP001) and it never runs unattended.
    """
    text = chunk.strip()
    try:
        raw = parser.parse_sql(text)
    except parser.ParseError:
        return text.rstrip(";").rstrip()
    if len(raw) != 1:
        if _trigger_then_its_state(raw):
            raise _TwoStatements([_text_of(text, r) for r in raw])
        raise UnsafeSqlError(
            f"diffing: migra emitted one change as {len(raw)} statements, which is refused (a name or value in the "
            f"schema probably breaks out of its quotes): {text[:200]!r}"
        )
    return text.rstrip().removesuffix(";").rstrip()


_ENABLE_TRIGGER = (
    AlterTableType.AT_EnableTrig,
    AlterTableType.AT_EnableAlwaysTrig,
    AlterTableType.AT_EnableReplicaTrig,
    AlterTableType.AT_DisableTrig,
)


class _TwoStatements(Exception):
    """A chunk that is a trigger's creation and then its enabled state: the two statements' texts."""

    def __init__(self, texts: list[str]) -> None:
        super().__init__("two statements")
        self.texts = texts


def _trigger_then_its_state(raw: tuple[ast.RawStmt, ...]) -> bool:
    """``CREATE TRIGGER t ON r ...; ALTER TABLE r ENABLE|DISABLE ... TRIGGER t`` (how migra creates a trigger whose
    enabled state is not the default), and nothing else."""
    if len(raw) != 2 or not isinstance(raw[0].stmt, ast.CreateTrigStmt):
        return False
    create, alter = raw[0].stmt, raw[1].stmt
    if not isinstance(alter, ast.AlterTableStmt) or not alter.cmds or len(alter.cmds) != 1:
        return False
    cmd, old, new = alter.cmds[0], create.relation, alter.relation
    if old is None or new is None or (old.schemaname, old.relname) != (new.schemaname, new.relname):
        return False
    return cmd.subtype in _ENABLE_TRIGGER and cmd.name == create.trigname


def _text_of(text: str, raw: ast.RawStmt) -> str:
    """The text of statement ``raw`` of ``text`` (pglast gives its location and length in characters)."""
    start = raw.stmt_location or 0
    end = start + raw.stmt_len if raw.stmt_len else len(text)
    return text[start:end]


def statements_of(chunk: str) -> list[str]:
    """The statements of a migra chunk: :func:`one_statement`, or the two of a trigger created with its state,
    each of which must again be exactly one statement of the kind the chunk's parse tree said."""
    try:
        return [one_statement(chunk)]
    except _TwoStatements as two:
        texts = [one_statement(t) for t in two.texts]
        try:
            kinds = [type(parser.parse_sql(t)[0].stmt) for t in texts]
        except parser.ParseError:
            kinds = []
        if kinds != [ast.CreateTrigStmt, ast.AlterTableStmt]:
            raise UnsafeSqlError(
                f"diffing: migra's trigger chunk did not split as it parsed: {chunk[:200]!r}"
            ) from None
        return texts


def diff(current: Inspection, desired: Inspection, *, privileges: bool = False) -> list[str]:
    """Statements that take ``current`` to ``desired``, one SQL statement per item, without trailing ``;``."""
    refuse_unescaped(current, "environment")
    refuse_unescaped(desired, "desired state")
    import_schemainspect()  # first: migra imports it, and is imported on first use
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        from migra import Migration

    # Labels only added to an enum: ALTER TYPE ... ADD VALUE first, instead of migra's swap of the whole type.
    relabelled, add_values = with_added_labels(current, desired)
    m = Migration(relabelled, desired)
    m.set_safety(False)
    m.add_all_changes(privileges=privileges)
    sqls = [sql for chunk in m.statements if chunk.strip() for sql in statements_of(chunk)]
    return add_values + public_grantees(partition_fixes(sqls, current, desired))
