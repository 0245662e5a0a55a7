"""Every failure of a command is one line on stderr with the documented exit code, never a traceback."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler import cli
from reconciler.cli_render import Outcome
from reconciler.errors import BusyError, PlanError, UnreachableError


@pytest.fixture()
def config(tmp_path: Path) -> str:
    p = tmp_path / "reconciler.yaml"
    p.write_text("environments:\n  dev: {dsn: 'postgresql://db/app'}\n")
    return str(p)


def _failing(exc: BaseException) -> Callable[[cli.Session, argparse.Namespace], Outcome[None]]:
    def command(session: cli.Session, args: argparse.Namespace) -> Outcome[None]:
        raise exc

    return command


@pytest.mark.parametrize(
    ("exc", "code", "line"),
    [
        (BusyError("applying to environment 'dev': busy: held by pid 42"), 3, "busy: held by pid 42"),
        (PlanError("plan 9 is rejected"), 1, "plan 9 is rejected"),
        (
            UnreachableError("cannot connect to postgresql://app:s3cret@db/app\nsecond line"),
            1,
            r"cannot connect to postgresql://app:***@db/app\x0asecond line",
        ),
        (RuntimeError("boom \x1b[2K"), 1, r"unexpected RuntimeError: boom \x1b[2K (run with --log-level debug"),
        (KeyError("k"), 1, "unexpected KeyError: 'k'"),
    ],
    ids=["busy", "terminal", "redacted-one-line", "unexpected", "unexpected-keyerror"],
)
def test_failure_is_one_line_with_its_exit_code(
    exc: Exception,
    code: int,
    line: str,
    config: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(cli.COMMANDS, "plans", _failing(exc))
    assert cli.main(["-c", config, "plans"]) == code
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and line in err
    assert "Traceback" not in err and "\x1b" not in err and "s3cret" not in err


def test_unexpected_error_details_go_to_the_debug_log(
    config: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(cli.COMMANDS, "plans", _failing(ZeroDivisionError("division by zero")))
    assert cli.main(["-c", config, "--log-level", "debug", "plans"]) == 1
    err = capsys.readouterr().err
    assert "cli_unexpected_error" in err and "Traceback" in err and "ZeroDivisionError" in err
    assert err.splitlines()[-1] == (
        "error: unexpected ZeroDivisionError: division by zero (run with --log-level debug for details)"
    )


def test_interrupt_exits_130(config: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(cli.COMMANDS, "plans", _failing(KeyboardInterrupt()))
    assert cli.main(["-c", config, "plans"]) == 130
