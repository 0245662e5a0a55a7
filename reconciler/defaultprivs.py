"""Move one role's default privileges (``ALTER DEFAULT PRIVILEGES``) to another, in one database.

A copy of a vetting template holds the template build role's default privileges; the copy's own build role creates
the objects a replayed plan makes, and default privileges apply by creator, so the copy's role must hold them
instead (``REASSIGN OWNED`` does not move default privileges). Run by the copy's build role, which is a member of
the template's (so it may act for it): each of the old role's entries is set again for the new role, and the old
role's entry is taken back to the built-in default (a database-wide entry) or emptied (a schema's), which removes
it. Nothing here reads anything but the catalog of the database it runs in.
"""

from __future__ import annotations

from dataclasses import dataclass

from .db import Connection, quote_ident

_KINDS = {"r": "tables", "S": "sequences", "f": "functions", "T": "types", "n": "schemas"}
_ACLDEFAULT = {"r": "r", "S": "s", "f": "f", "T": "T", "n": "n"}  # acldefault's codes for the same kinds

# One ACL item as (grantee name, '' for PUBLIC; privilege; grantable).
_ITEMS = """array(select array[case when x.grantee = 0 then '' else pg_get_userbyid(x.grantee) end, x.privilege_type,
                             x.is_grantable::text]
               from aclexplode({acl}) x)"""

_ENTRIES_SQL = (
    "select d.defaclobjtype::text, n.nspname, "
    + _ITEMS.format(acl="d.defaclacl")
    + """
from pg_default_acl d left join pg_namespace n on n.oid = d.defaclnamespace
where d.defaclrole = %s::regrole
"""
)

_DEFAULT_SQL = "select " + _ITEMS.format(acl='acldefault(%s::"char", %s::regrole)')

Item = tuple[str, str, bool]  # grantee ('' for PUBLIC), privilege, grantable


@dataclass(frozen=True)
class _Entry:
    kind: str
    schema: str | None
    items: frozenset[Item]


def take_over(conn: Connection, old: str, new: str) -> None:
    """Give ``new`` every default privilege entry of ``old`` in the database of ``conn``, and clear ``old``'s."""
    entries = [
        _Entry(kind, schema, _items(items)) for kind, schema, items in conn.execute(_ENTRIES_SQL, (old,)).fetchall()
    ]
    for entry in entries:
        mine = frozenset((new if g == old else g, p, grantable) for g, p, grantable in entry.items)
        base_new = _default(conn, entry, new)
        for sql in _changes(new, entry, base_new, mine) + _changes(old, entry, entry.items, _default(conn, entry, old)):
            conn.execute(sql.encode())


def _default(conn: Connection, entry: _Entry, role: str) -> frozenset[Item]:
    """What ``role`` has for ``entry``'s kind with no entry: the built-in default database-wide, nothing in a schema."""
    if entry.schema is not None:
        return frozenset()
    row = conn.execute(_DEFAULT_SQL, (_ACLDEFAULT[entry.kind], role)).fetchone()
    return _items(row[0] if row else [])


def _items(rows: list[list[str]]) -> frozenset[Item]:
    return frozenset((grantee, privilege, grantable == "true") for grantee, privilege, grantable in rows)


def _changes(role: str, entry: _Entry, have: frozenset[Item], want: frozenset[Item]) -> list[str]:
    """The ALTER DEFAULT PRIVILEGES statements that take ``role``'s entry from ``have`` to ``want``."""
    head = f"alter default privileges for role {quote_ident(role)}"
    if entry.schema is not None:
        head += f" in schema {quote_ident(entry.schema)}"
    kind = _KINDS[entry.kind]
    out = [f"{head} revoke {p} on {kind} from {_grantee(g)}" for g, p, _ in sorted(have - want)]
    out += [
        f"{head} grant {p} on {kind} to {_grantee(g)}{' with grant option' if grantable else ''}"
        for g, p, grantable in sorted(want - have)
    ]
    return out


def _grantee(name: str) -> str:
    return "public" if not name else quote_ident(name)
