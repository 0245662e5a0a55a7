"""Rendezvous hashing: balanced, deterministic, and only the environments of a replica that leaves move."""

from __future__ import annotations

from collections import Counter

from reconciler.reconcile.sharding import libpq_url, rendezvous_owner

ENVS = [f"tenant-{i}" for i in range(3000)]


def test_every_replica_gets_a_fair_share() -> None:
    owners = Counter(rendezvous_owner(e, ["r1", "r2", "r3"]) for e in ENVS)
    assert set(owners) == {"r1", "r2", "r3"}
    assert all(800 <= n <= 1200 for n in owners.values()), owners


def test_the_owner_does_not_depend_on_the_order_replicas_are_listed() -> None:
    assert all(rendezvous_owner(e, ["r1", "r2", "r3"]) == rendezvous_owner(e, ["r3", "r1", "r2"]) for e in ENVS)


def test_only_the_leavers_environments_move() -> None:
    before = {e: rendezvous_owner(e, ["r1", "r2", "r3"]) for e in ENVS}
    after = {e: rendezvous_owner(e, ["r1", "r3"]) for e in ENVS}
    moved = {e for e in ENVS if before[e] != after[e]}
    assert moved == {e for e in ENVS if before[e] == "r2"}
    back = {e: rendezvous_owner(e, ["r1", "r2", "r3"]) for e in ENVS}
    assert back == before  # a replica that comes back (same id) gets exactly its share back


def test_no_replica_no_owner_and_only_postgresql_stores_shard() -> None:
    assert rendezvous_owner("x", []) is None
    assert libpq_url("postgresql+psycopg://u@h/db") == "postgresql://u@h/db"
    assert libpq_url("postgres://u@h/db") == "postgresql://u@h/db"
    assert libpq_url("sqlite:///state.db") is None
