"""Events: the only link between the executor and what is stored and shown.

The executor emits them; the dispatcher masks secrets, commits them to the state store, and only
then hands them to a renderer. JSON output is these events, one per line (docs/events.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any


def now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC with milliseconds: sortable as text in SQLite, readable by people."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True)
class Event:
    """Common to every event: which run, and when."""

    run_id: int
    ts: datetime = field(default_factory=now, kw_only=True)

    name = "event"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"event": self.name, "run_id": self.run_id, "ts": iso(self.ts)}
        for item in fields(self):
            if item.name in ("run_id", "ts"):
                continue
            value = getattr(self, item.name)
            if isinstance(value, datetime):
                value = iso(value)
            elif isinstance(value, tuple):
                value = [list(v) if isinstance(v, tuple) else v for v in value]
            if item.name == "host" and value == "":
                value = None
            data[item.name] = value
        return data

    def masked(self, mask: Any) -> Event:
        """A copy with every string field passed through `mask` (secrets become ***)."""
        changes: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            new = _mask_value(value, mask)
            if new is not value:
                changes[item.name] = new
        return replace(self, **changes) if changes else self


def _mask_value(value: Any, mask: Any) -> Any:
    if isinstance(value, str):
        masked = mask(value)
        return masked if masked != value else value
    if isinstance(value, dict):
        # NOTE: keys too: a step's outputs are named by what it wrote, which can be a secret.
        return {_mask_value(k, mask): _mask_value(v, mask) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_mask_value(v, mask) for v in value)
    return value


@dataclass(frozen=True)
class RunStarted(Event):
    pipeline: str
    file: str
    steps: tuple[str, ...]
    resumed: bool = False
    #: Every step instance and host with its state as the run (re)starts: [step, host, status].
    units: tuple[tuple[str, str, str], ...] = ()

    name = "run_started"


@dataclass(frozen=True)
class StepStarted(Event):
    step: str
    host: str
    attempt: int

    name = "step_started"


@dataclass(frozen=True)
class StepOutput(Event):
    step: str
    host: str
    stream: str
    text: str
    attempt: int = 1

    name = "log"


@dataclass(frozen=True)
class StepState(Event):
    """A state that is neither a start nor an end: `retrying`, `waiting`, `running` (approved)."""

    step: str
    host: str
    status: str
    attempt: int = 0
    error: str | None = None
    #: With `retrying`: how the attempt that just ended went (`failed`, `timed_out`), and its
    #: command's exit status, so that the attempt is stored with its own outcome.
    attempt_status: str | None = None
    exit_code: int | None = None

    name = "step_state"


@dataclass(frozen=True)
class StepFinished(Event):
    step: str
    host: str
    status: str
    attempt: int = 0
    exit_code: int | None = None
    error: str | None = None
    duration: float | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    name = "step_finished"


@dataclass(frozen=True)
class RunFinished(Event):
    status: str
    duration: float
    counts: dict[str, int] = field(default_factory=dict)
    exit_code: int = 0

    name = "run_finished"


END_STATES = frozenset({"success", "failed", "timed_out", "skipped", "cancelled", "interrupted"})
RUN_END_STATES = frozenset({"success", "failed", "cancelled", "interrupted"})
