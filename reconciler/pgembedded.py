"""An embedded PostgreSQL server that the reconciler starts itself.

It runs the PostgreSQL binaries found on this machine (``bin_dir``, ``$RECONCILER_PG_BIN``, ``pg_ctl`` on
PATH, or the newest ``/usr/lib/postgresql/*/bin``), listens on 127.0.0.1 only (no unix socket), and keeps its
data in ``data_dir`` so that an ``embedded:NAME`` environment survives between commands.

Local users and desired-state authors are not trusted with it:

* every connection authenticates with scram-sha-256. The superuser's password is generated at ``initdb`` and kept
  in a libpq password file readable by the reconciler's user only (``.<data_dir name>.pgpass`` beside the data
  folder, 0600); :meth:`EmbeddedPostgres.dsn` names that file (``passfile``), never the password;
* ``pg_hba.conf`` lets members of the scratch build group (:data:`BUILD_GROUP`) into the database of their own
  name only, so a desired-state build cannot reach an ``embedded:`` environment's database;
* PostgreSQL refuses to run as root: when run as root the server runs as the dedicated system user
  ``reconciler-pg`` (``$RECONCILER_PG_USER`` to choose another), created with ``useradd`` if missing. The
  folders above the data folder are never changed: if that user cannot reach it, starting fails and says which
  folder lacks which permission.

Several processes may share one data folder: each holds a shared lock while it uses the server and the
last one to leave stops it.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import ipaddress
import os
import pwd
import secrets
import shutil
import socket
import stat
import subprocess
import tempfile
import time
import urllib.parse
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import IO

from .db import connect, database_errors, quote_ident
from .errors import ConfigError, UnreachableError

SUPERUSER = "postgres"
SERVER_USER = "reconciler-pg"
"""The system user the server runs as when the reconciler runs as root."""
BUILD_GROUP = "reconciler_scratch_builders"
"""Members of this role (scratch build roles) may connect only to the database named like themselves."""

HBA = f"""# Written by the reconciler. scram-sha-256 everywhere; scratch build roles reach only their own database.
host  samerole  +{BUILD_GROUP}  127.0.0.1/32  scram-sha-256
host  all       +{BUILD_GROUP}  127.0.0.1/32  reject
host  all       all             127.0.0.1/32  scram-sha-256
"""


def find_bin_dir(bin_dir: str | None = None) -> Path:
    """Locate a folder holding initdb, pg_ctl and postgres."""
    candidates: list[str] = []
    if bin_dir:
        candidates.append(bin_dir)
    if env := os.environ.get("RECONCILER_PG_BIN"):
        candidates.append(env)
    if on_path := shutil.which("pg_ctl"):
        candidates.append(str(Path(on_path).resolve().parent))
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    for c in candidates:
        p = Path(c)
        if all((p / exe).exists() for exe in ("initdb", "pg_ctl", "postgres")):
            return p
    raise UnreachableError(
        "starting the embedded PostgreSQL: no initdb/pg_ctl/postgres found "
        "(set embedded.bin_dir or RECONCILER_PG_BIN, or install PostgreSQL server binaries)"
    )


def _version_key(path: str) -> int:
    try:
        return int(Path(path).parent.name)
    except ValueError:
        return 0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedPostgres:
    """A PostgreSQL server in ``data_dir``, started on demand and stopped by its last user."""

    def __init__(self, data_dir: str | os.PathLike[str], bin_dir: str | None = None) -> None:
        self.data_dir = Path(data_dir)
        self._bin_dir_hint = bin_dir
        self.port: int | None = None
        self._user_lock: IO[str] | None = None
        self._run_as: tuple[int, int] | None = None

    # -- public -----------------------------------------------------------------------------------
    def start(self) -> EmbeddedPostgres:
        """Initialise the data folder if needed and start the server, or join a running one."""
        if self._user_lock is not None:
            return self
        bin_dir = find_bin_dir(self._bin_dir_hint)
        self._run_as = self._unprivileged_user()
        if not self.data_dir.parent.exists():
            # A folder made here is private; as root the server's own user needs to pass through it (x, not r).
            self.data_dir.parent.mkdir(parents=True, exist_ok=True)
            self.data_dir.parent.chmod(0o700 if self._run_as is None else 0o711)
        if self._run_as is not None:
            _check_reachable(self.data_dir.parent, *self._run_as)
        # Announce ourselves as a user first, so that a leaving process never stops the server under us.
        self._user_lock = open(self._lock_path("users"), "a+")  # noqa: SIM115 - held for the server's use
        fcntl.flock(self._user_lock, fcntl.LOCK_SH)
        with self._exclusive("start"):
            if not (self.data_dir / "PG_VERSION").exists():
                self._initdb(bin_dir)
            elif not self.passfile.exists():
                raise UnreachableError(
                    f"starting the embedded PostgreSQL: {self.data_dir} was initialised without a password (an older "
                    f"version of the reconciler used trust authentication); remove {self.data_dir} to re-create it "
                    "(it holds the scratch databases and the demo's embedded: environments)"
                )
            else:
                _refuse_trust(self.data_dir)
            port = self._running_port()
            if port is None:
                port = _free_port()
                self._pg_ctl(
                    bin_dir,
                    "start",
                    "-w",
                    "-t",
                    "120",
                    "-l",
                    str(self.data_dir / "server.log"),
                    "-o",
                    f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
                    "-c fsync=off -c full_page_writes=off -c max_connections=200",
                )
            self.port = port
        return self

    def stop(self) -> None:
        """Leave the server; stop it if no other process uses it."""
        if self._user_lock is None:
            return
        lock, self._user_lock = self._user_lock, None
        fcntl.flock(lock, fcntl.LOCK_UN)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()  # somebody else still uses the server
            return
        try:
            if self._running_port() is not None:
                self._pg_ctl(find_bin_dir(self._bin_dir_hint), "stop", "-m", "fast", "-w", "-t", "60")
        finally:
            lock.close()

    @property
    def passfile(self) -> Path:
        """The libpq password file holding the superuser's password (0600, the reconciler's user only)."""
        return self.data_dir.parent / f".{self.data_dir.name}.pgpass"

    def dsn(self, dbname: str = "postgres") -> str:
        if self.port is None:
            raise UnreachableError("the embedded PostgreSQL is not started")
        return self._dsn_at(self.port, dbname)

    def _dsn_at(self, port: int, dbname: str) -> str:
        passfile = urllib.parse.quote(str(self.passfile), safe="/")
        return f"postgresql://{SUPERUSER}@127.0.0.1:{port}/{urllib.parse.quote(dbname, safe='')}?passfile={passfile}"

    def create_database(self, name: str, *, exist_ok: bool = False) -> str:
        what = f"creating database {name!r} on the embedded PostgreSQL"
        with database_errors(what), connect(self.dsn(), what=what, autocommit=True) as conn:
            exists = conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone()
            if exists and not exist_ok:
                raise ValueError(f"database {name!r} exists")
            if not exists:
                conn.execute(f"create database {quote_ident(name)}".encode())
        return self.dsn(name)

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # -- internals --------------------------------------------------------------------------------
    def _lock_path(self, what: str) -> Path:
        return self.data_dir.parent / f".{self.data_dir.name}.{what}.lock"

    @contextlib.contextmanager
    def _exclusive(self, what: str):  # type: ignore[no-untyped-def]
        with open(self._lock_path(what), "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _unprivileged_user(self) -> tuple[int, int] | None:
        if os.geteuid() != 0:
            return None
        name = os.environ.get("RECONCILER_PG_USER", SERVER_USER)
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            if name != SERVER_USER:
                raise UnreachableError(
                    f"starting the embedded PostgreSQL: system user {name!r} ($RECONCILER_PG_USER) does not exist"
                ) from None
            _create_system_user(name)
            entry = pwd.getpwnam(name)
        return entry.pw_uid, entry.pw_gid

    def _run(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, object] = {}
        if self._run_as is not None:
            kwargs.update(user=self._run_as[0], group=self._run_as[1], extra_groups=[])
        env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "PGTZ": "UTC"}
        return subprocess.run(  # type: ignore[call-overload,no-any-return]
            args, capture_output=True, text=True, env=env, cwd="/", **kwargs
        )

    def _initdb(self, bin_dir: Path) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._run_as is not None:
            os.chown(self.data_dir, *self._run_as)
        os.chmod(self.data_dir, 0o700)
        password = secrets.token_urlsafe(32)
        # initdb reads the password from a file: one only the server's user can read, removed at once.
        folder = tempfile.mkdtemp(prefix="reconciler-initdb-")  # 0700
        pwfile = os.path.join(folder, "pwfile")
        try:
            _write_private(Path(pwfile), password + "\n")
            if self._run_as is not None:
                os.chown(folder, *self._run_as)
                os.chown(pwfile, *self._run_as)
            res = self._run(
                [
                    str(bin_dir / "initdb"),
                    *("-D", str(self.data_dir), "-U", SUPERUSER, "--auth=scram-sha-256", f"--pwfile={pwfile}"),
                    *("-E", "UTF8", "--locale=C.UTF-8", "--no-sync"),
                ]
            )
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        if res.returncode != 0:
            raise UnreachableError(f"initialising the embedded PostgreSQL in {self.data_dir}: {res.stderr.strip()}")
        hba = self.data_dir / "pg_hba.conf"
        hba.write_text(HBA)
        if self._run_as is not None:
            os.chown(hba, *self._run_as)
        _write_private(self.passfile, f"127.0.0.1:*:*:{SUPERUSER}:{password}\n")

    def _pg_ctl(self, bin_dir: Path, *args: str) -> None:
        res = self._run([str(bin_dir / "pg_ctl"), "-D", str(self.data_dir), *args])
        if res.returncode != 0:
            log = self.data_dir / "server.log"
            tail = ""
            with contextlib.suppress(OSError):
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-5:])
            raise UnreachableError(
                f"running pg_ctl {args[0]} on the embedded PostgreSQL: {res.stderr.strip() or res.stdout.strip()}"
                + (f"\n{tail}" if tail else "")
            )

    def _running_port(self) -> int | None:
        """The port of a live server on this data folder, or None."""
        pidfile = self.data_dir / "postmaster.pid"
        try:
            lines = pidfile.read_text().splitlines()
            pid, port = int(lines[0]), int(lines[3])
        except (OSError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        dsn = self._dsn_at(port, "postgres")
        for _ in range(50):
            try:
                with connect(dsn, what="joining the embedded PostgreSQL", connect_timeout=timedelta(seconds=2)):
                    return port
            except UnreachableError:
                time.sleep(0.1)
        return None


def trust_lines(hba: str) -> list[int]:
    """The lines of the ``pg_hba.conf`` text ``hba`` whose authentication method is ``trust`` (1-based)."""
    found: list[int] = []
    for number, line in enumerate(hba.splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if len(fields) < 4 or fields[0] not in ("local", "host", "hostssl", "hostnossl", "hostgssenc", "hostnogssenc"):
            continue
        at = 3  # local: type, database, user, method
        if fields[0] != "local":
            at = 5 if _bare_address(fields[3]) else 4  # an address with a separate netmask takes one more field
        if len(fields) > at and fields[at] == "trust":
            found.append(number)
    return found


def _bare_address(field: str) -> bool:
    try:
        ipaddress.ip_address(field)
    except ValueError:
        return False
    return True


def _refuse_trust(data_dir: Path) -> None:
    """Refuse a data folder whose ``pg_hba.conf`` lets anyone in without a password (older versions of the
    reconciler wrote ``trust``): other local users of the machine could then connect as the superuser."""
    hba = data_dir / "pg_hba.conf"
    lines = trust_lines(hba.read_text()) if hba.exists() else []
    if lines:
        raise ConfigError(
            f"starting the embedded PostgreSQL: {hba} lets connections in without a password (trust authentication "
            f"on line {', '.join(map(str, lines))}), so any local user could connect as its superuser; replace "
            f"trust by scram-sha-256 on those lines, or remove {data_dir} to re-create it (it holds the scratch "
            "databases and the demo's embedded: environments)"
        )


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable and writable by this user only (0600 from the start)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _create_system_user(name: str) -> None:
    """Create the system user the server runs as (no home, no login shell)."""
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    res = subprocess.run(
        [
            useradd,
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            name,
        ],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0 and res.returncode != 9:  # 9: it exists (another process created it just now)
        raise UnreachableError(
            f"starting the embedded PostgreSQL: cannot create system user {name!r} to run it as: "
            f"{res.stderr.strip() or res.returncode} (create it, or set RECONCILER_PG_USER to an existing user)"
        )


def _check_reachable(folder: Path, uid: int, gid: int) -> None:
    """Fail, saying which folder lacks which permission, unless user ``uid`` can reach ``folder``.

    The server's user needs search (x) permission on every folder above its data folder. These folders are not
    the reconciler's to change: it never chmods them.
    """
    for f in (folder, *folder.parents):
        st = f.stat()
        bit, who = (
            (stat.S_IXUSR, "its owner")
            if st.st_uid == uid
            else (stat.S_IXGRP, "its group")
            if st.st_gid == gid
            else (stat.S_IXOTH, "others")
        )
        if not st.st_mode & bit:
            user = pwd.getpwuid(uid).pw_name
            raise UnreachableError(
                f"starting the embedded PostgreSQL: it runs as user {user!r}, which cannot reach {folder}: {f} "
                f"lacks search (x) permission for {who} (mode {stat.filemode(st.st_mode)}); grant it (e.g. chmod "
                f"o+x {f}) or set embedded.data_dir to a folder that user can reach"
            )
