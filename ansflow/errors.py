"""Error families and their exit codes (SPEC section 2), mapped once here and used by the CLI."""

from __future__ import annotations

from dataclasses import dataclass

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_CANCELLED = 3
EXIT_WAITING = 4
EXIT_LOCKED = 5


class AnsflowError(Exception):
    """Anything ansflow reports to the user as a message, never as a traceback."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(AnsflowError):
    """Bad command-line input: unknown step in --only, malformed --var, unknown run."""

    exit_code = EXIT_BAD_INPUT


class StorageError(AnsflowError):
    """The state database cannot be used (folder in its place, no permission, corrupt)."""

    exit_code = EXIT_BAD_INPUT


class LockedError(AnsflowError):
    """Another run of the same pipeline holds its lock."""

    exit_code = EXIT_LOCKED


@dataclass(frozen=True)
class Diagnostic:
    """One problem in a pipeline file, located as precisely as we can."""

    file: str
    line: int | None
    col: int | None
    message: str
    snippet: str | None = None

    def format(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.col is not None:
                where += f":{self.col}"
        text = f"{where}: {self.message}"
        if self.snippet is not None:
            caret = ""
            if self.col is not None and self.col >= 1:
                # NOTE: tabs are kept so the caret lines up under the same characters in a terminal.
                lead = "".join(c if c == "\t" else " " for c in self.snippet[: self.col - 1])
                caret = "\n    " + lead + "^"
            text += "\n    " + self.snippet + caret
        return text


class LoadError(AnsflowError):
    """A pipeline file that cannot be used; carries every problem found, each located."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = diagnostics
        super().__init__("\n".join(d.format() for d in diagnostics))
