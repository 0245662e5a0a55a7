"""Command line: parse arguments, call the library, render text or JSON. Exit 0 ok, 1 error, 2 drift."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from . import __version__
from .cli_render import render_apply, render_audit, render_plan, render_plans
from .config import Config, load_config
from .db import redact
from .errors import BusyError, ReconcilerError
from .model import PlanStatus
from .obs.logging import configure_logging
from .service import Reconciler, plan_to_json
from .store import PlanRecord

DEFAULT_CONFIG = "config/reconciler.yaml"
EXIT_OK, EXIT_ERROR, EXIT_DRIFT = 0, 1, 2
EXIT_BUSY = 3  # apply: another applier holds the environment's apply lock; nothing was changed


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=False, default=str))


def plan_record_json(p: PlanRecord) -> dict[str, Any]:
    return p.to_json()


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="reconciler",
        description="Keep PostgreSQL schemas in line with the SQL in desired-state/: plan, apply what is safe, "
        "queue what destroys data until an operator approves it.",
        epilog="Exit codes: 0 done (for apply, and plan without --detailed-exitcode, drift may remain: see in_sync), "
        "1 error (audit verify: chain broken), 2 drift (plan --detailed-exitcode), 3 busy (apply, reject: an "
        "apply holds the environment's lock; nothing was changed).",
    )
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
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def fmt(p: argparse.ArgumentParser) -> None:
        p.add_argument("--format", choices=["text", "json"], default="text", help="output format")

    p = sub.add_parser("plan", help="show the statements that would make ENV match the desired state")
    p.add_argument("environment", metavar="ENV")
    p.add_argument("--detailed-exitcode", action="store_true", help="exit 0 when in sync, 2 on drift, 1 on error")
    fmt(p)

    p = sub.add_parser("apply", help="apply unattended statements to ENV, run an approved plan, queue the rest")
    p.add_argument("environment", metavar="ENV")
    p.add_argument(
        "--force",
        action="store_true",
        help="apply even though ENV is suspended or outside its maintenance windows",
    )
    fmt(p)

    p = sub.add_parser("plans", help="list queued and decided plans")
    p.add_argument("--env", dest="environment", help="only this environment")
    p.add_argument("--status", choices=[s.value for s in PlanStatus], help="only plans with this status")
    fmt(p)

    p = sub.add_parser("approve", help="approve a pending plan; the next apply runs it if it still matches")
    p.add_argument("plan_id", metavar="PLAN_ID", type=int)
    p.add_argument("--by", required=True, help="who approves")
    fmt(p)

    p = sub.add_parser("reject", help="reject a pending, approved or resumable failed plan")
    p.add_argument("plan_id", metavar="PLAN_ID", type=int)
    p.add_argument("--by", required=True, help="who rejects")
    p.add_argument("--reason", required=True, help="why")
    fmt(p)

    p = sub.add_parser("audit", help="list the audit trail, or verify its hash chain (audit verify)")
    p.add_argument(
        "action", nargs="?", choices=["list", "verify"], default="list", help="list (default) or verify the chain"
    )
    p.add_argument("--env", dest="environment", help="only records of this environment (list)")
    p.add_argument("--event", help="only records of this event, e.g. statement_applied (list)")
    p.add_argument("--limit", type=int, help="only the newest N records (list)")
    fmt(p)

    p = sub.add_parser("demo", help="walk through plan and apply on a demo environment in the embedded PostgreSQL")
    p.add_argument("environment", metavar="ENV", nargs="?", default="demo")

    p = sub.add_parser(
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
    return ap


def _run(args: argparse.Namespace, cfg: Config) -> int:
    if args.command == "run":
        from .reconcile.run import run

        return run(cfg, demo=args.demo, listen=args.listen, port=args.port)
    with Reconciler(cfg) as rec:
        if args.command == "plan":
            plan = rec.plan(args.environment)
            if args.format == "json":
                _print_json(plan_to_json(plan))
            else:
                print(render_plan(plan))
            return EXIT_DRIFT if (args.detailed_exitcode and not plan.in_sync) else EXIT_OK
        if args.command == "apply":
            result = rec.apply(args.environment, force=args.force)
            if args.format == "json":
                _print_json(result.to_json())
            else:
                print(render_apply(result))
            return EXIT_OK
        if args.command == "plans":
            status = PlanStatus(args.status) if args.status else None
            records = rec.store.list_plans(args.environment, status)
            if args.format == "json":
                _print_json([plan_record_json(p) for p in records])
            else:
                print(render_plans(records))
            return EXIT_OK
        if args.command == "approve":
            p = rec.approve(args.plan_id, args.by)
            if args.format == "json":
                _print_json(plan_record_json(p))
            elif p.status is PlanStatus.PENDING:
                required = rec.config.environment(p.environment).approvals_required
                print(
                    f"approval of plan {p.id} by {args.by} recorded ({len(p.approvers)} of {required}); "
                    "it needs another approval from someone else"
                )
            else:
                print(
                    f"plan {p.id} approved by {p.decided_by}; the next `reconciler apply {p.environment}` runs it "
                    "if a fresh diff still yields exactly these statements"
                )
            return EXIT_OK
        if args.command == "reject":
            p = rec.reject(args.plan_id, args.by, args.reason)
            if args.format == "json":
                _print_json(plan_record_json(p))
            else:
                print(f"plan {p.id} rejected by {p.decided_by}: {p.reason}")
            return EXIT_OK
        if args.command == "audit":
            if args.action == "verify":
                check = rec.store.verify_audit()
                if args.format == "json":
                    _print_json(check.to_json())
                else:
                    print(f"audit trail {'intact' if check.ok else 'BROKEN'}: {check.message}")
                return EXIT_OK if check.ok else EXIT_ERROR
            trail = rec.store.audit_records(args.environment, event=args.event, limit=args.limit)
            if args.format == "json":
                _print_json([r.to_json() for r in trail])
            else:
                print(render_audit(trail))
            return EXIT_OK
        if args.command == "demo":
            from .demo import run_demo

            return run_demo(rec, args.environment)
    raise AssertionError(args.command)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level or ("info" if args.command == "run" else "warning"))
    try:
        cfg = load_config(args.config)
        return _run(args, cfg)
    except BusyError as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return EXIT_BUSY
    except ReconcilerError as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
