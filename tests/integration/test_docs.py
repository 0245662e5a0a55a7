"""`reconciler docs`: Markdown from the catalog of the desired build; `--check` fails when the file is stale."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_policy_tests import ROOT, write_config

from reconciler.cli import main
from reconciler.pgembedded import EmbeddedPostgres


def test_the_bundled_docs_are_current(tmp_path: Path, pg_server: EmbeddedPostgres) -> None:
    config = write_config(tmp_path, pg_server, ROOT / "desired-state")
    assert main(["-c", str(config), "docs", "--check"]) == 0


def test_docs_cover_the_catalog_and_check_detects_a_change(
    tmp_path: Path, pg_server: EmbeddedPostgres, capsys: pytest.CaptureFixture[str]
) -> None:
    desired = tmp_path / "desired"
    desired.mkdir()
    schema = (
        "create type mood as enum ('ok', 'meh');\n"
        "create table owners (id int primary key, name text not null default 'x|y');\n"
        "comment on column owners.name is 'shown\nin <b>docs</b>';\n"
        "create table pets (id int primary key, owner_id int references owners (id), m mood,\n"
        "  age int check (age >= 0));\n"
        "create index pets_owner_idx on pets (owner_id);\n"
        "alter table pets enable row level security;\n"
        "create policy pets_mine on pets for update to public using (owner_id = 1) with check (age < 30);\n"
        "create view old_pets as select id from pets where age > 10;\n"
        "create function pet_count() returns bigint language sql stable as $$ select count(*) from pets $$;\n"
    )
    (desired / "a.sql").write_text(schema)
    config = write_config(tmp_path, pg_server, desired)
    out = tmp_path / "docs" / "DATABASE.md"
    assert main(["-c", str(config), "docs", "-o", str(out)]) == 0
    text = out.read_text()
    for expected in (
        "| `name` | `text` | no | `'x\\|y'::text` | shown in &lt;b&gt;docs&lt;/b&gt; |",  # escaped cell
        "| foreign key | `pets_owner_id_fkey` | `FOREIGN KEY (owner_id) REFERENCES owners(id)` |",
        "| check | `pets_age_check` | `CHECK ((age >= 0))` |",
        "| `pets_owner_idx` | `CREATE INDEX pets_owner_idx ON public.pets USING btree (owner_id)` |",
        "**Row-level security**: enabled",
        "| `pets_mine` | UPDATE | permissive | public | `(owner_id = 1)` | `(age < 30)` |",
        "### `public.old_pets` (view)",
        "| `public.pet_count()` | `bigint` | sql | stable |  |",
        "| `public.mood` | ok, meh |  |",
        "erDiagram",
        'public_owners ||--o{ public_pets : "pets_owner_id_fkey"',
    ):
        assert expected in text
    assert main(["-c", str(config), "docs", "-o", str(out), "--check"]) == 0

    (desired / "a.sql").write_text(schema + "alter table pets add column name text;\n")
    capsys.readouterr()
    assert main(["-c", str(config), "docs", "-o", str(out), "--check"]) == 1
    assert "is out of date: run `reconciler docs`" in capsys.readouterr().out
    assert out.read_text() == text  # --check writes nothing
