"""Command line: parse arguments, call the library, render text or JSON. Exit 0 ok, 1 error, 2 drift, 3 busy.

Each subcommand is one small function in :data:`COMMANDS`: it calls the library and returns an
:class:`~reconciler.cli_render.Outcome` (the answer, its JSON and text renderings, the exit code);
:func:`~reconciler.cli_render.render` is the one place that turns it into output. Errors become one line on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from . import __version__
from .check import CheckReport, run_check
from .cli_render import (
    Outcome,
    one_line,
    render,
    render_apply,
    render_approval,
    render_audit,
    render_check,
    render_check_markdown,
    render_docs,
    render_migration,
    render_plan,
    render_plans,
    render_policy_report,
    render_rejection,
    render_verification,
)
from .config import Config, load_config
from .db import redact
from .docs import DocsOutcome, generate_docs, write_docs
from .errors import BusyError, PlanError, ReconcilerError
from .migration import MigrationFile, source_statements, write_migration
from .model import Plan, PlanStatus
from .obs.logging import configure_logging
from .policytests import PolicyReport, run_policy_tests
from .promotion import promote

# Every name the command line takes from the service layer, in this one place.
from .service import ApplyResult, Reconciler, plan_to_json
from .store import PlanRecord

log = structlog.get_logger("reconciler.cli")

DEFAULT_CONFIG = "config/reconciler.yaml"
EXIT_OK, EXIT_ERROR, EXIT_DRIFT = 0, 1, 2
EXIT_BUSY = 3  # apply, reject: an apply holds the environment's apply lock; nothing was changed
EXIT_INTERRUPTED = 130


# -- the parser -------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="reconciler",
        description="Keep PostgreSQL schemas in line with the SQL in desired-state/: plan, apply what is safe, "
        "queue what destroys data until an operator approves it.",
        epilog="Exit codes: 0 done (for apply, and plan without --detailed-exitcode, drift may remain: see in_sync), "
        "1 error (audit verify: chain broken), 2 drift (plan --detailed-exitcode), 3 busy (apply, reject: an "
        "apply holds the environment's lock; nothing was changed).",
    )
    _add_global_options(ap)
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_plan, _add_apply, _add_plans, _add_approve, _add_reject, _add_audit, _add_demo, _add_run):
        add(sub.add_parser)
    for add_workflow in WORKFLOW_PARSERS:
        add_workflow(sub.add_parser)
    return ap


def _add_global_options(ap: argparse.ArgumentParser) -> None:
    ap.add_argument(
        "--config",
        "-c",
        default=os.environ.get("RECONCILER_CONFIG", DEFAULT_CONFIG),
        help=f"configuration file (default: $RECONCILER_CONFIG or {DEFAULT_CONFIG})",
    )
    ap.add_argument(
        "--log-level",
        default=os.environ.get("RECONCILER_LOG_LEVEL"),
        choices=["debug", "info", "warning", "error"],
        help="log level (logs go to stderr; default: $RECONCILER_LOG_LEVEL, else info for run, warning otherwise)",
    )
    ap.add_argument("--version", action="version", version=f"%(prog)s {__version__}")


AddParser = Callable[..., argparse.ArgumentParser]  # the subparsers action's add_parser


def _add_format(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=["text", "json"], default="text", help="output format")


def _add_plan(add_parser: AddParser) -> None:
    p = add_parser("plan", help="show the statements that would make ENV match the desired state")
    p.add_argument("environment", metavar="ENV")
    p.add_argument("--detailed-exitcode", action="store_true", help="exit 0 when in sync, 2 on drift, 1 on error")
    _add_format(p)


def _add_apply(add_parser: AddParser) -> None:
    p = add_parser("apply", help="apply unattended statements to ENV, run an approved plan, queue the rest")
    p.add_argument("environment", metavar="ENV")
    p.add_argument(
        "--force",
        action="store_true",
        help="apply even though ENV is suspended or outside its maintenance windows",
    )
    _add_format(p)


def _add_plans(add_parser: AddParser) -> None:
    p = add_parser("plans", help="list queued and decided plans")
    p.add_argument("--env", dest="environment", help="only this environment")
    p.add_argument("--status", choices=[s.value for s in PlanStatus], help="only plans with this status")
    _add_format(p)


def _add_approver(p: argparse.ArgumentParser, who: str) -> None:
    p.add_argument(
        "--token-file",
        metavar="PATH",
        help="file holding your token of server.tokens (default: $RECONCILER_TOKEN): the approver is its identity. "
        "Needed where the environment lists approvers or needs several approvals, or server.tokens is configured",
    )
    p.add_argument("--by", help=f"who {who}: without a token, the name recorded; with one, must be its identity")


def _add_approve(add_parser: AddParser) -> None:
    p = add_parser("approve", help="approve a pending plan; the next apply runs it if it still matches")
    p.add_argument("plan_id", metavar="PLAN_ID", type=int)
    _add_approver(p, "approves")
    _add_format(p)


def _add_reject(add_parser: AddParser) -> None:
    p = add_parser("reject", help="reject a pending, approved or resumable failed plan")
    p.add_argument("plan_id", metavar="PLAN_ID", type=int)
    _add_approver(p, "rejects")
    p.add_argument("--reason", required=True, help="why")
    _add_format(p)


def _add_audit(add_parser: AddParser) -> None:
    p = add_parser("audit", help="list the audit trail, or verify its hash chain (audit verify)")
    p.add_argument(
        "action", nargs="?", choices=["list", "verify"], default="list", help="list (default) or verify the chain"
    )
    p.add_argument("--env", dest="environment", help="only records of this environment (list)")
    p.add_argument("--event", help="only records of this event, e.g. statement_applied (list)")
    p.add_argument("--limit", type=int, help="only the newest N records (list)")
    p.add_argument(
        "--expect-head",
        metavar="HASH",
        help="a head hash exported earlier (log audit_chain_verified, metric schema_reconciler_audit_chain_head): "
        "the chain must still hold it, else it was rewritten or truncated (verify)",
    )
    _add_format(p)


def _add_demo(add_parser: AddParser) -> None:
    p = add_parser("demo", help="walk through plan and apply on a demo environment in the embedded PostgreSQL")
    p.add_argument("environment", metavar="ENV", nargs="?", default="demo")


def _add_run(add_parser: AddParser) -> None:
    p = add_parser(
        "run", help="the daemon: reconcile every environment on a schedule, serve metrics and the approval API"
    )
    p.add_argument(
        "--demo",
        metavar="ENV",
        nargs="?",
        const="demo",
        help="first recreate the demo environment (default: demo) at an older revision of the example schema",
    )
    p.add_argument("--listen", help="address to serve HTTP on (default: server.listen)")
    p.add_argument("--port", type=int, help="port to serve HTTP on, 0 for any free one (default: server.port)")


# -- the schema workflow: parsers ------------------------------------------------------------------------------
def _add_test_policies(add_parser: AddParser) -> None:
    p = add_parser("test-policies", help="run the RLS policy tests against the desired state built in scratch")
    p.add_argument("path", metavar="PATH", nargs="?", help="a test file or folder (default: policy_tests)")
    _add_format(p)


def _add_docs(add_parser: AddParser) -> None:
    p = add_parser("docs", help="write Markdown documentation of the desired schema (tables, RLS, ER diagram)")
    p.add_argument("-o", "--output", metavar="FILE", help="the file to write (default: docs)")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 when the file is out of date")
    _add_format(p)


def _add_migration(add_parser: AddParser) -> None:
    p = add_parser("migration", help="write a timestamped SQL migration file from a source to the desired state")
    p.add_argument("name", metavar="NAME", help="what the migration does, e.g. add_user_bio")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--from", dest="from_env", metavar="ENV", help="from this environment's schema")
    source.add_argument("--from-dir", metavar="DIR", help="from a folder of versioned migrations, replayed in scratch")
    p.add_argument(
        "-o", "--output", metavar="DIR", default="migrations", help="folder to write to (default: migrations)"
    )
    _add_format(p)


def _add_check(add_parser: AddParser) -> None:
    p = add_parser("check", help="CI: the desired state builds, hazards pass policy, policy tests pass, docs current")
    p.add_argument(
        "--env",
        dest="environments",
        action="append",
        default=[],
        metavar="ENV",
        help="lint the plan against this environment (repeatable; default: an empty database)",
    )
    p.add_argument("--base", metavar="SOURCE", help="desired-state folder of the base revision, for query plans")
    p.add_argument("--cost-factor", type=float, default=2.0, help="a query plan cost growth beyond this fails")
    p.add_argument("--format", choices=["text", "markdown", "json"], default="text", help="output format")


def _add_promote(add_parser: AddParser) -> None:
    p = add_parser("promote", help="apply REVISION to ENV once every earlier environment of `promotion` converged")
    p.add_argument("revision", metavar="REVISION", help="the desired revision (at least its first 7 characters)")
    p.add_argument("--to", required=True, metavar="ENV", help="the environment to apply it to")
    _add_format(p)


WORKFLOW_PARSERS: list[Callable[[AddParser], None]] = [
    _add_test_policies,
    _add_docs,
    _add_migration,
    _add_check,
    _add_promote,
]


# -- the commands -----------------------------------------------------------------------------------------------
class Session:
    """What a command works with: the configuration and, opened on first use, the library's Reconciler."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._reconciler: Reconciler | None = None

    @property
    def reconciler(self) -> Reconciler:
        if self._reconciler is None:
            self._reconciler = Reconciler(self.config)
        return self._reconciler

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._reconciler is not None:
            self._reconciler.close()
            self._reconciler = None


class _HasJson(Protocol):
    def to_json(self) -> dict[str, Any]: ...


def _json_of(value: _HasJson) -> dict[str, Any]:
    return value.to_json()


def _each_json(items: Iterable[_HasJson]) -> list[dict[str, Any]]:
    return [item.to_json() for item in items]


def plan_command(session: Session, args: argparse.Namespace) -> Outcome[Plan]:
    plan = session.reconciler.plan(args.environment)
    drift = args.detailed_exitcode and not plan.in_sync
    return Outcome(plan, plan_to_json, render_plan, EXIT_DRIFT if drift else EXIT_OK)


def apply_command(session: Session, args: argparse.Namespace) -> Outcome[ApplyResult]:
    result = session.reconciler.apply(args.environment, force=args.force)
    return Outcome(result, _json_of, render_apply)


def plans_command(session: Session, args: argparse.Namespace) -> Outcome[list[PlanRecord]]:
    status = PlanStatus(args.status) if args.status else None
    records = session.reconciler.store.list_plans(args.environment, status)
    return Outcome(records, _each_json, render_plans)


def _token(args: argparse.Namespace) -> str | None:
    """The approver's token: from ``--token-file`` (never echoed), else ``$RECONCILER_TOKEN``."""
    if args.token_file:
        try:
            with open(args.token_file, encoding="utf-8") as f:
                return f.read().strip()
        except OSError as exc:
            raise PlanError(f"cannot read the token file {args.token_file}: {exc.strerror}") from exc
    return os.environ.get("RECONCILER_TOKEN") or None


def approve_command(session: Session, args: argparse.Namespace) -> Outcome[PlanRecord]:
    reconciler = session.reconciler
    who = reconciler.authenticate(args.plan_id, args.by, _token(args), "approve")
    record = reconciler.approve(args.plan_id, who)

    def text(p: PlanRecord) -> str:
        return render_approval(p, who.identity, session.config.environment(p.environment).approvals_required)

    return Outcome(record, _json_of, text)


def reject_command(session: Session, args: argparse.Namespace) -> Outcome[PlanRecord]:
    reconciler = session.reconciler
    who = reconciler.authenticate(args.plan_id, args.by, _token(args), "reject")
    record = reconciler.reject(args.plan_id, who, args.reason)
    return Outcome(record, _json_of, render_rejection)


def audit_command(session: Session, args: argparse.Namespace) -> Outcome[Any]:
    store = session.reconciler.store
    if args.action == "verify":
        check = store.verify_audit(expect_head=args.expect_head)
        return Outcome(check, _json_of, render_verification, EXIT_OK if check.ok else EXIT_ERROR)
    trail = store.audit_records(args.environment, event=args.event, limit=args.limit)
    return Outcome(trail, _each_json, render_audit)


def demo_command(session: Session, args: argparse.Namespace) -> Outcome[None]:
    from .demo import run_demo  # prints its own walk-through

    return Outcome(None, code=run_demo(session.reconciler, args.environment))


def run_command(session: Session, args: argparse.Namespace) -> Outcome[None]:
    from .reconcile.run import run  # the daemon and its HTTP stack load only when asked for

    return Outcome(None, code=run(session.config, demo=args.demo, listen=args.listen, port=args.port))


def test_policies_command(session: Session, args: argparse.Namespace) -> Outcome[PolicyReport]:
    reconciler = session.reconciler
    report = run_policy_tests(reconciler.scratch, reconciler.load_desired(), args.path or session.config.policy_tests)
    return Outcome(report, _json_of, render_policy_report, EXIT_OK if report.ok else EXIT_ERROR)


def docs_command(session: Session, args: argparse.Namespace) -> Outcome[DocsOutcome]:
    reconciler = session.reconciler
    text = generate_docs(reconciler.scratch, reconciler.load_desired())
    done = write_docs(args.output or session.config.docs, text, check=args.check)
    return Outcome(done, _json_of, render_docs, EXIT_OK if done.current else EXIT_ERROR)


def migration_command(session: Session, args: argparse.Namespace) -> Outcome[MigrationFile]:
    reconciler = session.reconciler
    target = reconciler.target(args.from_env) if args.from_env else None
    desired = reconciler.load_desired()
    source, statements = source_statements(reconciler.scratch, desired, target=target, from_dir=args.from_dir)
    written = write_migration(args.name, args.output, source, desired, statements, datetime.now(UTC))
    return Outcome(written, _json_of, render_migration)


def check_command(session: Session, args: argparse.Namespace) -> Outcome[CheckReport]:
    report = run_check(session.reconciler, args.environments, base=args.base, cost_factor=args.cost_factor)
    text = render_check_markdown if args.format == "markdown" else render_check
    return Outcome(report, _json_of, text, EXIT_OK if report.ok else EXIT_ERROR)


def promote_command(session: Session, args: argparse.Namespace) -> Outcome[ApplyResult]:
    return Outcome(promote(session.reconciler, args.revision, args.to), _json_of, render_apply)


Command = Callable[[Session, argparse.Namespace], Outcome[Any]]

COMMANDS: dict[str, Command] = {
    "plan": plan_command,
    "apply": apply_command,
    "plans": plans_command,
    "approve": approve_command,
    "reject": reject_command,
    "audit": audit_command,
    "demo": demo_command,
    "run": run_command,
    "test-policies": test_policies_command,
    "docs": docs_command,
    "migration": migration_command,
    "check": check_command,
    "promote": promote_command,
}


# -- running one ------------------------------------------------------------------------------------------------
def _execute(args: argparse.Namespace) -> int:
    with Session(load_config(args.config)) as session:
        outcome = COMMANDS[args.command](session, args)
        output = render(outcome, getattr(args, "format", "text"))
        if output is not None:
            print(output)
        return outcome.code


def _fail(message: str, code: int) -> int:
    print(f"error: {one_line(redact(message))}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level or ("info" if args.command == "run" else "warning"))
    try:
        return _execute(args)
    except BusyError as exc:
        return _fail(str(exc), EXIT_BUSY)
    except ReconcilerError as exc:
        return _fail(str(exc), EXIT_ERROR)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:
        log.debug("cli_unexpected_error", command=args.command, exc_info=True)
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return _fail(f"unexpected {detail} (run with --log-level debug for details)", EXIT_ERROR)


if __name__ == "__main__":
    sys.exit(main())
