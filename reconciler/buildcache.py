"""The desired build's inspection and catalog description, kept across processes in the reconciler's own folder.

A ``plan`` process would otherwise build the desired state statement by statement and inspect it every time. The
facts are stored as a pickle under a key that changes with anything that could change them: the desired revision
(the sha256 of its SQL), the scratch server's major version, the description's options and the sandbox settings, the versions of
schemainspect and of this package, and the source of the modules that read them.

Unpickling runs code named in the file, so a file is read only from a folder and a file that this process's user
owns and nobody else may write (``0700`` folder, ``0600`` files, no symlinks); anything else is ignored and
logged. The folder is the reconciler's own state folder (beside the embedded server's data folder), which
neither desired-state authors nor environments can write: stops them from planting a pickle.

The same folder keeps environments' inspections (``environment-*.pickle``, :func:`.planning.plan`), keyed by the
environment's schema fingerprint read just before (with its name, database and options): a later plan of an
unchanged environment does not inspect it again. The fingerprint vouches for the schema as it does for an approval.

Beside the facts, the same folder keeps the allow-list verdicts: a revision whose every statement parsed and
passed the sandbox allow-list (:mod:`.sandbox`) under given sandbox settings is not parsed again by a later
process (:func:`verdict_key`, :func:`known_allowed`, :func:`remember_allowed`). Only "allowed" is kept, under the
same ownership rules, so a planted or foreign-owned verdict file is ignored like a planted pickle: it stops
desired-state authors and other local users from skipping the allow-list.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import stat
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import structlog

from . import __version__, catalog, desired, inspect, sandbox, sqltext

log = structlog.get_logger("reconciler.buildcache")

KEEP = 8
"""Cached builds kept in the folder (the most recently written); older ones are removed."""


def cache_key(revision: str, major: int, options: object) -> str:
    """The key of one desired build's facts (see the module's docstring for what goes into it)."""
    sources = b"".join(Path(m.__file__ or "").read_bytes() for m in (catalog, inspect))
    parts = (revision, major, repr(options), metadata.version("schemainspect"), __version__, sources)
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def _private(st: os.stat_result) -> bool:
    return st.st_uid == os.getuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def load(folder: Path, key: str, kind: str = "desired") -> Any | None:
    """What :func:`save` stored under ``key`` in ``folder``, or None (missing, unreadable or not private)."""
    path = folder / f"{kind}-{key}.pickle"
    try:
        if not _private(folder.stat()):
            log.warning(
                "build_cache_ignored", folder=str(folder), reason="not owned by this user or writable by others"
            )
            return None
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not _private(os.fstat(f.fileno())):
            log.warning("build_cache_ignored", file=str(path), reason="not owned by this user or writable by others")
            return None
        inspect.import_schemainspect()  # the pickle names its classes: import it the fast way first
        try:
            return pickle.load(f)
        except Exception as exc:  # a truncated or outdated file is a miss, not an error
            log.warning("build_cache_unreadable", file=str(path), error=str(exc))
            return None


def save(folder: Path, key: str, value: Any, kind: str = "desired") -> None:
    """Store ``value`` under ``key`` (atomically, ``0600``); keep the :data:`KEEP` newest. Failing is logged only."""
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not _private(folder.stat()):
            return
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{kind}-", suffix=".tmp")  # mkstemp: 0600
        with os.fdopen(fd, "wb") as f:
            pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, folder / f"{kind}-{key}.pickle")
        kept = sorted(folder.glob(f"{kind}-*.pickle"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in kept[KEEP:]:
            with contextlib.suppress(OSError):
                old.unlink()
    except (OSError, pickle.PicklingError, TypeError, AttributeError) as exc:
        log.warning("build_cache_not_saved", folder=str(folder), error=str(exc))


def verdict_key(revision: str, settings: object) -> str:
    """The key of one allow-list verdict: the desired revision, the sandbox settings, the versions of pglast and of
    this package, and the source of the modules that parse and judge."""
    sources = b"".join(Path(m.__file__ or "").read_bytes() for m in (sandbox, sqltext, desired))
    parts = (revision, repr(settings), metadata.version("pglast"), __version__, sources)
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def known_allowed(folder: Path, key: str) -> bool:
    """Whether a private verdict file in ``folder`` says the revision of ``key`` passed the allow-list."""
    return load(folder, key, kind="allowed") == key


def remember_allowed(folder: Path, key: str) -> None:
    """Keep that the revision of ``key`` passed the allow-list (the file holds the key itself)."""
    save(folder, key, key, kind="allowed")
