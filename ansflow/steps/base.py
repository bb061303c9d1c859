"""The Step interface and the registry of step types.

A step type is one class registered by name. It gets a StepContext (the rendered step, a Runner for
the place it runs, its environment, a cancel scope) and returns a StepResult. The executor handles
everything around it: `when`, retries, timeouts, outputs, states and events.
"""

from __future__ import annotations

import shlex
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ansflow.cancel import CancelScope
from ansflow.model import StepBase
from ansflow.remote.base import Command, Runner, RunnerError
from ansflow.steps.direct import direct_argv


class StepError(Exception):
    """The step failed for a reason worth one line (missing artifact, bad report, HTTP 500)."""


@dataclass
class StepContext:
    """What a step type may use while it runs one attempt on one host."""

    run_id: int
    pipeline: str
    step: StepBase
    step_id: str
    host: str
    attempt: int
    runner: Runner
    workdir: str | None
    env: dict[str, str]
    scope: CancelScope
    temp_dir: str
    output_path: str
    pipeline_dir: Path
    emit: Callable[[str, str], None]
    #: Extra services the executor offers (jenkins client, ssh settings); keyed by name.
    services: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def resolve(self, path: str) -> str:
        """A path as the step's commands see it: relative ones are under the working folder.

        Globs on SSH hosts answer relative to `workdir`, but SFTP reads relative to the login
        folder, so paths are made absolute before files are read back.
        """
        import posixpath

        if self.workdir and not posixpath.isabs(path):
            return posixpath.join(self.workdir, path)
        return path

    def log(self, text: str) -> None:
        """A line from ansflow itself about this step (shown and stored like output)."""
        self.emit("ansflow", text)

    def run_command(self, argv: list[str], stdin: bytes | None = None) -> int:
        """Run a program where the step runs, streaming its output."""
        command = Command(argv=argv, env=self.env, workdir=self.workdir, stdin=stdin)
        return self.runner.run(command, self.emit, self.scope)

    def capture(self, argv: list[str], limit: int = 1000) -> tuple[int, list[str]]:
        """Run a helper program and keep (at most `limit` lines of) its stdout; stderr is shown."""
        lines: list[str] = []

        def keep(stream: str, text: str) -> None:
            if stream == "stdout":
                if len(lines) < limit:
                    lines.append(text)
            else:
                self.emit(stream, text)

        command = Command(argv=argv, env=self.env, workdir=self.workdir)
        return self.runner.run(command, keep, self.scope), lines

    def run_script(self, script: str, shell: str | None = None) -> int:
        """Write `script` to a file and run it with bash (or `shell`), as SPEC's shell step says.

        On the local machine a script that is one plain command runs without the shell around it
        (see `direct`); its status is the one bash would give, 128 + N for a signal.
        """
        if self.runner.host is None:
            argv = direct_argv(script, shell, self.env, self.workdir)
            if argv is not None:
                try:
                    code = self.run_command(argv)
                except RunnerError:
                    pass  # it could not be started after all: the shell says why
                else:
                    return 128 - code if code < 0 else code
        path = f"{self.temp_dir}/script"
        self.runner.write_file(path, script.encode("utf-8"), 0o700)
        return self.run_command(shell_argv(shell, path))


def shell_argv(shell: str | None, path: str) -> list[str]:
    """bash -e -o pipefail by default; `sh` is `sh -e`; anything else gets the path appended."""
    if shell in (None, "", "bash"):
        return ["bash", "--noprofile", "--norc", "-e", "-o", "pipefail", path]
    if shell == "sh":
        return ["sh", "-e", path]
    return [*shlex.split(shell), path]


@dataclass
class StepResult:
    """How an attempt ended: `status` is success or failed (timeouts and cancels: the executor)."""

    status: str
    exit_code: int | None = None
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    #: Outputs the step type sets itself (fetch_code's `commit`), merged with $ANSFLOW_OUTPUT.
    outputs: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_exit(cls, code: int, what: str = "command") -> StepResult:
        if code == 0:
            return cls("success", 0)
        if code < 0:
            return cls("failed", code, f"{what} killed by signal {-code}")
        return cls("failed", code, f"{what} exited with status {code}")


class StepType(ABC):
    """One kind of step. Subclasses set `name` and implement `execute`."""

    name: ClassVar[str]
    #: Where it may run: "local", "ssh", "jenkins".
    targets: ClassVar[frozenset[str]] = frozenset({"local", "ssh"})
    #: Gates are decided by the executor (approval), never executed by a worker.
    is_gate: ClassVar[bool] = False

    @abstractmethod
    def execute(self, ctx: StepContext) -> StepResult:
        """Do the step's work once; raise StepError for a one-line failure."""


_REGISTRY: dict[str, type[StepType]] = {}


def register(cls: type[StepType]) -> type[StepType]:
    """Class decorator: make a step type available under its `name`."""
    _REGISTRY[cls.name] = cls
    return cls


def get_step_type(name: str) -> StepType:
    """The step type registered under `name` (`custom` is `shell`); unknown names list the known."""
    import ansflow.steps  # noqa: F401 - registers the built-in types

    key = "shell" if name == "custom" else name
    cls = _REGISTRY.get(key)
    if cls is None:
        known = ", ".join(sorted(_REGISTRY))
        raise KeyError(f"unknown step type {name!r}; registered types: {known}")
    return cls()


def registered() -> list[str]:
    import ansflow.steps  # noqa: F401

    return sorted(_REGISTRY)
