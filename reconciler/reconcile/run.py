"""``reconciler run [--demo [ENV]]``: start the daemon, print where it serves, run until SIGTERM or Ctrl-C.

With ``--demo``, the demo environment is first recreated at an older revision of the example schema (see
:mod:`reconciler.demo`), token files named in ``server.tokens`` that do not exist yet are created with a random
token (mode 0600), and the outcome of the first reconcile is printed with the command that approves the plan
it queued.
"""

from __future__ import annotations

import os
import secrets
import shlex
import time
from pathlib import Path

from ..config import Config
from ..demo import reset_demo_database
from ..status import ConditionType
from .daemon import Daemon

FIRST_RECONCILE_WAIT = 180.0


def ensure_token_files(config: Config) -> list[Path]:
    """Create each missing ``token_file`` with a random token readable by its owner only; return them."""
    made: list[Path] = []
    for t in config.server.tokens:
        if t.token_file is None:
            continue
        path = Path(t.token_file)
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
        made.append(path)
    return made


def _print_urls(daemon: Daemon) -> None:
    url = daemon.url
    print("schema reconciler is running; Ctrl-C (or SIGTERM) stops it", flush=True)
    print(f"  page:         {url}/")
    print(f"  metrics:      {url}/metrics")
    print(f"  environments: {url}/api/v1/environments")
    print(f"  plans:        {url}/api/v1/plans?status=pending")
    print(f"  openapi:      {url}/api/v1/openapi.json", flush=True)


def _approve_hint(daemon: Daemon, environment: str) -> str | None:
    """A curl command approving plan ID with a token file that may decide ``environment``, if there is one."""
    cwd = Path.cwd()
    for t in daemon.config.server.tokens:
        if t.token_file and ("*" in t.environments or environment in t.environments):
            path = Path(t.token_file)
            shown = shlex.quote(str(path.relative_to(cwd) if path.is_relative_to(cwd) else path))
            return f'curl -X POST -H "Authorization: Bearer $(cat {shown})" {daemon.url}/api/v1/plans/ID/approve'
    return None


def _report_first_reconcile(daemon: Daemon, environment: str) -> None:
    deadline = time.monotonic() + FIRST_RECONCILE_WAIT
    print(f"\nwaiting for the first reconcile of {environment!r} ...", flush=True)
    while time.monotonic() < deadline and not daemon.wait_stopped(0.25):
        status = daemon.status.get(environment)
        if status is None or status.observed_at is None:
            continue
        ready = status.condition(ConditionType.READY)
        applied = daemon.metrics.applied_total(environment)
        print(f"  applied {applied:.0f} statement(s) that need no approval")
        print(f"  Ready={ready.status.value} reason={ready.reason.value}: {ready.message}")
        if status.pending_plan_id is not None:
            pid = status.pending_plan_id
            print(f"  plan {pid} holds the destructive remainder; the data it would drop is still there")
            print(f"  look at it:  curl {daemon.url}/api/v1/plans/{pid}")
            hint = _approve_hint(daemon, environment)
            if hint:
                print(f"  approve it:  {hint.replace('/ID/', f'/{pid}/')}")
            print("  then watch schema_reconciler_drift go to 0 on the metrics page", flush=True)
        return


def run(config: Config, *, demo: str | None = None, listen: str | None = None, port: int | None = None) -> int:
    """The ``run`` command; returns the exit code (0 after SIGTERM or Ctrl-C)."""
    if demo is not None:
        config.environment(demo)
        ensure_token_files(config)
    daemon = Daemon(config, listen=listen, port=port)
    if demo is not None:
        try:
            print(f"recreating demo environment {demo!r} at an older revision of the example schema", flush=True)
            reset_demo_database(daemon.reconciler, demo)
        except BaseException:
            daemon.close()
            raise

    def started(d: Daemon) -> None:
        _print_urls(d)
        if demo is not None:
            _report_first_reconcile(d, demo)

    return daemon.serve(started)
