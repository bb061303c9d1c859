"""The interface every place that runs commands implements (local machine, one SSH host).

Steps talk only to a `Runner`, so a step type such as `build` or `test` works the same locally and
on SSH hosts; the executor picks the runner from the step's target.
"""

from __future__ import annotations

import shlex
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

from ansflow.cancel import CancelScope

#: Called once per output line, with the stream name ("stdout" or "stderr") and the line without
#: its newline. Called from reader threads; must be thread-safe and quick.
LineSink = Callable[[str, str], None]

#: The variable naming the file a step writes its outputs to (SPEC section 1).
OUTPUT_ENV = "ANSFLOW_OUTPUT"


@dataclass(frozen=True)
class Command:
    """A program to run: an argument list, never a shell string built from values."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    workdir: str | None = None
    stdin: bytes | None = None


@dataclass(frozen=True)
class Script:
    """A step's script for one attempt, run by `shell` (SPEC's shell step).

    The runner writes the script and an empty `$ANSFLOW_OUTPUT` file into a private folder, adds
    `ANSFLOW_OUTPUT` to `env`, runs it and hands the file's content back. Doing all of it in the
    runner lets an SSH host do it in the step's own exec, with no file transfers in between.
    """

    text: str
    shell: str | None
    env: dict[str, str]
    workdir: str | None


@dataclass(frozen=True)
class ScriptResult:
    """How a script ended, and what it wrote to `$ANSFLOW_OUTPUT` (None: nothing, or unknown)."""

    status: int
    outputs: bytes | None


def shell_prefix(shell: str | None) -> list[str]:
    """What runs a script file, whose path comes last: bash -e -o pipefail by default, `sh` is
    `sh -e`, anything else is a command line of its own (`python3 -u`)."""
    if shell in (None, "", "bash"):
        return ["bash", "--noprofile", "--norc", "-e", "-o", "pipefail"]
    if shell == "sh":
        return ["sh", "-e"]
    return shlex.split(shell)


def shell_argv(shell: str | None, path: str) -> list[str]:
    """The command that runs the script file at `path` with `shell` (see `shell_prefix`)."""
    return [*shell_prefix(shell), path]


class RunnerError(Exception):
    """The place itself failed (connection lost, host unreachable), not the command."""


class Runner(ABC):
    """Runs commands and moves files on one machine."""

    #: The host's name as shown to users (None for the local machine).
    host: str | None = None

    @abstractmethod
    def run(self, command: Command, on_line: LineSink, scope: CancelScope) -> int:
        """Run to completion and return the exit status.

        Output is passed to `on_line` line by line as it is produced. When `scope` is cancelled the
        command's whole process group is killed and `run` returns promptly (the return value is then
        meaningless; callers look at `scope.reason`). Raises RunnerError when the place fails.
        """

    def run_script(self, script: Script, on_line: LineSink, scope: CancelScope) -> ScriptResult:
        """Run a step's script (see `Script`) in a new temporary folder, removed afterwards.

        This one is made of the file operations below; a runner that can do better overrides it.
        """
        folder = self.make_temp_dir()
        try:
            output = f"{folder}/output"
            self.write_file(output, b"", 0o600)
            env = {**script.env, OUTPUT_ENV: output}
            status = self.run_script_file(f"{folder}/script", script, env, on_line, scope)
            return ScriptResult(status, None if scope.cancelled else self.read_file(output))
        finally:
            with suppress(Exception):
                self.remove_tree(folder)

    def run_script_file(
        self, path: str, script: Script, env: dict[str, str], on_line: LineSink, scope: CancelScope
    ) -> int:
        """Write the script to `path` (in a private folder) and run it with its shell and `env`."""
        self.write_file(path, script.text.encode("utf-8"), 0o700)
        command = Command(argv=shell_argv(script.shell, path), env=env, workdir=script.workdir)
        return self.run(command, on_line, scope)

    @abstractmethod
    def make_temp_dir(self) -> str:
        """A fresh private folder for this step's scripts and files, removed by `remove_tree`."""

    @abstractmethod
    def remove_tree(self, path: str) -> None:
        """Delete a folder made by `make_temp_dir`, ignoring what is already gone."""

    @abstractmethod
    def write_file(self, path: str, data: bytes, mode: int = 0o600) -> None:
        """Create or replace a file with these bytes."""

    @abstractmethod
    def read_file(self, path: str) -> bytes | None:
        """A file's bytes, or None when it does not exist."""

    @abstractmethod
    def put(self, local: Path, remote: str, mode: int | None = None) -> None:
        """Copy a local file to `remote` (a file path; its folder is created when missing)."""

    @abstractmethod
    def get(self, remote: str, local: Path) -> None:
        """Copy `remote` to the local path."""

    @abstractmethod
    def glob(self, pattern: str, workdir: str | None) -> list[str]:
        """Paths matching a glob (relative patterns against `workdir`), sorted."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the runner holds (connections); called once at the end of a run."""
