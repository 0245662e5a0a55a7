"""Read the desired state: ``*.sql`` files under a folder, in lexical order of their relative paths."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from .errors import DesiredStateError
from .model import DesiredState, SqlFile
from .sqltext import SqlSyntaxError, parse_statements


def _hidden(rel: Path) -> bool:
    """A path below a folder or file whose name starts with a dot: skipped. A Kubernetes ConfigMap volume keeps
    each file a second and third time under ``..data/`` and a timestamped ``..2024_...`` folder."""
    return any(part.startswith(".") for part in rel.parts)


def check_syntax(text: str, file: str, where: str) -> None:
    """Stop desired-state SQL that does not parse (from its authors), naming ``file`` and the line: the error says
    ``syntax error {where}{line}``."""
    try:
        parse_statements(text)
    except SqlSyntaxError as exc:
        raise DesiredStateError(
            f"reading desired state: syntax error {where}{exc.line}: {exc.message}", file=file, line=exc.line
        ) from exc


def load_desired(root: str | Path, known_good: Callable[[str], bool] | None = None) -> DesiredState:
    """Read every ``*.sql`` file below ``root`` (subfolders included, hidden ones not) and check its syntax.

    The revision is a sha256 over each file's relative path and content, so renaming a file or changing a
    byte gives a new revision. A syntax error names the file and the line. The syntax is not checked again for a
    revision that ``known_good`` says was checked (and allowed) before.
    """
    base = Path(root)
    if not base.is_dir():
        what = "is not a folder" if base.exists() else "does not exist"
        raise DesiredStateError(f"reading desired state: {base} {what}")
    paths = sorted(
        (p for p in base.rglob("*.sql") if p.is_file() and not _hidden(p.relative_to(base))),
        key=lambda p: p.relative_to(base).as_posix(),
    )
    if not paths:
        raise DesiredStateError(f"reading desired state: no *.sql files in {base}")
    digest = hashlib.sha256()
    files: list[SqlFile] = []
    for p in paths:
        rel = p.relative_to(base).as_posix()
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DesiredStateError(f"reading desired state: {rel}: {exc}", file=rel) from exc
        digest.update(rel.encode() + b"\0" + text.encode() + b"\0")
        files.append(SqlFile(path=rel, text=text))
    revision = digest.hexdigest()
    if known_good is None or not known_good(revision):
        for f in files:
            check_syntax(f.text, f.path, f"at {f.path}:")
    return DesiredState(root=str(base), files=tuple(files), revision=revision)


def desired_signature(root: str | Path) -> tuple[tuple[str, int, int, int], ...]:
    """What :func:`load_desired` would read, by file: relative path, inode, size and modification time (no file is
    read). Equal signatures mean the same files, unchanged, so a caller may keep the revision it loaded."""
    base = Path(root)
    out: list[tuple[str, int, int, int]] = []
    for p in base.rglob("*.sql"):
        rel = p.relative_to(base)
        if _hidden(rel):
            continue
        try:
            st = p.stat()
        except OSError:
            continue
        out.append((rel.as_posix(), st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(sorted(out))
