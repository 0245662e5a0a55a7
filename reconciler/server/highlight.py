"""SQL highlighting for the page, from PostgreSQL's own scanner (pglast): keywords, identifiers, literals,
comments. The output is escaped HTML; a statement the scanner rejects is shown escaped and plain."""

from __future__ import annotations

from markupsafe import Markup, escape
from pglast.parser import ParseError, scan

_LITERALS = {"SCONST", "ICONST", "FCONST", "BCONST", "XCONST", "USCONST"}
_COMMENTS = {"SQL_COMMENT", "C_COMMENT"}


def _css_class(name: str, kind: str) -> str | None:
    if kind != "NO_KEYWORD":
        return "kw"
    if name in _LITERALS:
        return "lit"
    if name in _COMMENTS:
        return "com"
    if name in {"IDENT", "UIDENT"}:
        return "id"
    return None


def highlight_sql(sql: str) -> Markup:
    """``sql`` as HTML with ``<span class="kw|lit|com|id">`` around its tokens."""
    try:
        tokens = scan(sql)
    except ParseError:
        return escape(sql)
    out: list[str] = []
    pos = 0
    for tok in tokens:
        start, end = tok.start, tok.end + 1  # the scanner's end is inclusive
        if start < pos or end > len(sql):
            continue
        out.append(str(escape(sql[pos:start])))
        text = escape(sql[start:end])
        css = _css_class(tok.name, tok.kind)
        out.append(f'<span class="{css}">{text}</span>' if css else str(text))
        pos = end
    out.append(str(escape(sql[pos:])))
    return Markup("".join(out))
