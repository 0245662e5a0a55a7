"""Scratch databases: made with a recognisable name, and those of killed processes are swept."""

from __future__ import annotations

import os

import psycopg

from reconciler.pgembedded import EmbeddedPostgres
from reconciler.scratch import HOST_TAG, PREFIX, ScratchServer

DEAD_PID = 4194305  # above Linux's largest pid_max: never a live process


def _databases(pg: EmbeddedPostgres, prefix: str) -> set[str]:
    with psycopg.connect(pg.dsn()) as conn:
        rows = conn.execute("select datname from pg_database where starts_with(datname, %s)", (prefix,)).fetchall()
    return {r[0] for r in rows}


def test_leftovers_of_dead_processes_are_dropped(pg_server: EmbeddedPostgres) -> None:
    dead = f"{PREFIX}{HOST_TAG}_{DEAD_PID}_deadbeef"
    alive = f"{PREFIX}{HOST_TAG}_{os.getppid()}_cafef00d"  # the parent of this test process is alive
    other_host = f"{PREFIX}00000000_{DEAD_PID}_0badf00d"  # another host's: not ours to judge
    for name in (dead, alive, other_host):
        pg_server.create_database(name)
    try:
        scratch = ScratchServer(pg_server.dsn())
        name, _ = scratch.create_database()
        assert name.startswith(f"{PREFIX}{HOST_TAG}_{os.getpid()}_")
        left = _databases(pg_server, PREFIX)
        assert dead not in left
        assert {alive, other_host, name} <= left
        scratch.drop_database(name)
    finally:
        with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
            for n in (dead, alive, other_host):
                conn.execute(f'drop database if exists "{n}"'.encode())
