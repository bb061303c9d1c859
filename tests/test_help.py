"""Every command and subcommand has help text, found by walking the typer app (so new ones too)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from ansflow.cli import app
from tests.helpers_files import run_cli


def walk(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """The command and every subcommand below it (typer's click is vendored: duck typing)."""
    yield path, command
    for name, sub in sorted((getattr(command, "commands", None) or {}).items()):
        yield from walk(sub, (*path, name))


ROOT_COMMAND = typer.main.get_command(app)
COMMANDS = list(walk(ROOT_COMMAND))
IDS = [" ".join(path) or "ansflow" for path, _ in COMMANDS]


def first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0].strip() if (text or "").strip() else ""


def test_the_expected_commands_are_registered() -> None:
    names = {path for path, _ in COMMANDS}
    for expected in ("validate", "plan", "schema", "init"):
        assert (expected,) in names
    registered = {c.name or c.callback.__name__ for c in app.registered_commands if c.callback}
    assert {"validate", "plan", "schema", "init"} <= registered
    assert len(COMMANDS) >= 1 + len(app.registered_commands)


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=IDS)
def test_command_has_help(path: tuple[str, ...], command: Any) -> None:
    description = first_line(command.help) or first_line(command.short_help)
    assert description, f"`ansflow {' '.join(path)}` has no help text"
    result = CliRunner().invoke(app, [*path, "--help"], prog_name="ansflow")
    assert result.exit_code == 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert f"Usage: ansflow {' '.join(path)}".rstrip() in " ".join(result.output.split())
    # NOTE: help is wrapped to the terminal width; compare without line breaks.
    assert " ".join(description.split()[:4]) in " ".join(result.output.split())


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=IDS)
def test_every_option_and_argument_is_described(path: tuple[str, ...], command: Any) -> None:
    missing = [
        param.name
        for param in command.params
        if param.name not in ("help",) and not (getattr(param, "help", None) or "").strip()
    ]
    assert not missing, f"`ansflow {' '.join(path)}`: no help for {missing}"


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_as_a_real_process(flag: str) -> None:
    result = run_cli(flag)
    assert result.returncode == 0
    assert result.stdout.startswith("Usage: ansflow")
    for path, _ in COMMANDS:
        if len(path) == 1:
            assert f"  {path[0]} " in result.stdout or f"  {path[0]}\n" in result.stdout
    assert result.stderr == ""
