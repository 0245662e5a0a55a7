"""Splitting SQL text into statements with their line numbers, using PostgreSQL's own parser (pglast)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from pglast import ast, parser


@dataclass(frozen=True)
class SourceStatement:
    """One statement cut out of a SQL text, with the 1-based line it starts on."""

    sql: str
    line: int
    offset: int
    node: ast.Node | None = field(default=None, compare=False, repr=False)
    """The statement as parsed (None when the parser gave no node, e.g. for an empty statement)."""


class SqlSyntaxError(ValueError):
    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


def line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, max(0, offset)) + 1


def split_statements(text: str) -> list[SourceStatement]:
    """Split ``text`` into statements; raise SqlSyntaxError with the line of a syntax error."""
    try:
        raw = parser.parse_sql(text)
    except parser.ParseError as exc:
        pos = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else 0
        raise SqlSyntaxError(str(exc.args[0]), line_of(text, pos)) from exc
    out: list[SourceStatement] = []
    for rs in raw:
        start = rs.stmt_location or 0
        end = start + rs.stmt_len if rs.stmt_len else len(text)
        chunk = text[start:end]
        # stmt_location may point at leading whitespace or comments; start the line count at the code.
        stripped = chunk.lstrip()
        start += len(chunk) - len(stripped)
        sql = stripped.rstrip().rstrip(";").rstrip()
        out.append(SourceStatement(sql=sql, line=line_of(text, start), offset=start, node=rs.stmt))
    return out


@functools.lru_cache(maxsize=256)
def parse_statements(text: str) -> tuple[SourceStatement, ...]:
    """:func:`split_statements` of ``text``, kept for the texts parsed last in this process: the desired state's
    files are parsed once for their syntax check, their allow-list check and their build."""
    return tuple(split_statements(text))
