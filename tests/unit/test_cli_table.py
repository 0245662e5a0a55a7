"""The command line's table: every subcommand the parser knows has exactly one command function, and back."""

from __future__ import annotations

import argparse
import inspect

from reconciler import cli


def _subcommands(parser: argparse.ArgumentParser) -> list[str]:
    # argparse offers no public way to list subcommands; its subparsers action holds them in ``choices``.
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(actions) == 1
    return list(actions[0].choices)


def test_every_subcommand_has_exactly_one_command_function() -> None:
    names = _subcommands(cli.build_parser())
    assert len(names) == len(set(names))
    assert sorted(names) == sorted(cli.COMMANDS)


def test_every_command_function_serves_exactly_one_subcommand() -> None:
    functions = list(cli.COMMANDS.values())
    assert len(functions) == len(set(functions))
    defined = {f for name, f in inspect.getmembers(cli, inspect.isfunction) if name.endswith("_command")}
    assert defined == set(functions)
    # A hyphenated subcommand (test-policies) is served by the function with underscores (test_policies_command).
    assert all(f.__name__ == f"{name.replace('-', '_')}_command" for name, f in cli.COMMANDS.items())
