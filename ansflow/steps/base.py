"""The Step interface and the registry of step types.

A step type is one class registered by name. It gets a StepContext (the rendered step, a Runner for
the place it runs, its environment, a cancel scope) and returns a StepResult. The executor handles
everything around it: `when`, retries, timeouts, outputs, states and events.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ansflow.cancel import CancelScope
from ansflow.model import StepBase
from ansflow.remote.base import OUTPUT_ENV, Command, Runner, Script


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
    pipeline_dir: Path
    emit: Callable[[str, str], None]
    #: Extra services the executor offers (jenkins client, ssh settings); keyed by name.
    services: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    _folder: str | None = field(default=None, init=False, repr=False)
    _script_outputs: list[bytes] = field(default_factory=list, init=False, repr=False)

    @property
    def temp_dir(self) -> str:
        """The attempt's private folder, with the `$ANSFLOW_OUTPUT` file every later command gets.

        Made on first use and removed by `release`: a step that only runs its script (see
        `run_script`) needs none, which spares an SSH host the file transfers.
        """
        return self._workspace()

    def _workspace(self) -> str:
        if self._folder is None:
            self._folder = self.runner.make_temp_dir()
            output = f"{self._folder}/output"
            self.runner.write_file(output, b"", 0o600)
            self.env[OUTPUT_ENV] = output
        return self._folder

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
        self._workspace()  # for the $ANSFLOW_OUTPUT file its environment names
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

        self._workspace()  # for the $ANSFLOW_OUTPUT file its environment names
        command = Command(argv=argv, env=self.env, workdir=self.workdir)
        return self.runner.run(command, keep, self.scope), lines

    def run_script(self, script: str, shell: str | None = None) -> int:
        """Run `script` with bash (or `shell`), as SPEC's shell step says.

        The runner writes it to a file in a folder of its own and reads `$ANSFLOW_OUTPUT` back
        (on SSH in the step's one exec; locally a one-command script may skip the shell), unless
        the attempt's folder exists already: then the script goes there.
        """
        job = Script(text=script, shell=shell, env=self.env, workdir=self.workdir)
        if self._folder is not None:
            path = f"{self._folder}/script"
            return self.runner.run_script_file(path, job, self.env, self.emit, self.scope)
        result = self.runner.run_script(job, self.emit, self.scope)
        if result.outputs:
            self._script_outputs.append(result.outputs)
        return result.status

    def written_outputs(self) -> list[bytes]:
        """What the attempt's commands wrote to their `$ANSFLOW_OUTPUT` files, in order."""
        data = list(self._script_outputs)
        if self._folder is not None:
            content = self.runner.read_file(f"{self._folder}/output")
            if content:
                data.append(content)
        return data

    def release(self) -> None:
        """Remove the attempt's folder, if it was made; what is already gone is fine."""
        folder, self._folder = self._folder, None
        if folder is not None:
            with suppress(Exception):
                self.runner.remove_tree(folder)


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
