"""The README's two opening commands are the ones CI and a new user run, so they must stay true."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def opening_commands() -> list[str]:
    """The command lines of the README's first code block (it must be the file's first thing)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.match(r"```sh\n(.*?)\n```", text, re.DOTALL)
    assert match, "README.md must begin with a ```sh block holding the two commands"
    return [line for line in match.group(1).splitlines() if line.strip()]


def test_readme_begins_with_an_install_and_run_command_and_a_test_command() -> None:
    install_and_run, run_tests = opening_commands()
    assert "ansflow run examples/" in install_and_run
    example = install_and_run.rsplit(" ", 1)[-1]
    assert (ROOT / example).is_file(), f"the README runs {example}, which does not exist"
    assert "pytest" in run_tests


def test_ci_runs_exactly_the_readme_test_command() -> None:
    _, run_tests = opening_commands()
    ci_lines = (ROOT / ".ci/run").read_text(encoding="utf-8").splitlines()
    assert run_tests in ci_lines, f".ci/run does not run the README's test command: {run_tests}"


def test_ci_treats_no_tests_collected_as_success() -> None:
    script = (ROOT / ".ci/run").read_text(encoding="utf-8")
    assert re.search(r'"\$status" -eq 5', script), ".ci/run must handle pytest's exit 5"
