"""The interface every place that runs commands implements (local machine, one SSH host).

Steps talk only to a `Runner`, so a step type such as `build` or `test` works the same locally and
on SSH hosts; the executor picks the runner from the step's target.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ansflow.cancel import CancelScope

#: Called once per output line, with the stream name ("stdout" or "stderr") and the line without
#: its newline. Called from reader threads; must be thread-safe and quick.
LineSink = Callable[[str, str], None]


@dataclass(frozen=True)
class Command:
    """A program to run: an argument list, never a shell string built from values."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    workdir: str | None = None
    stdin: bytes | None = None


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
