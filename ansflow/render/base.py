"""What every live renderer shares: the Renderer interface and a view of the run built from events.

Renderers never read the database or the plan: events are all they get, so what they show is what
was stored.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from ansflow.durations import format_duration
from ansflow.events import (
    Event,
    RunFinished,
    RunStarted,
    StepFinished,
    StepOutput,
    StepStarted,
    StepState,
)

FAILED_TAIL = 20


class Renderer(Protocol):
    """Receives every event after it was committed; `close` ends the display."""

    def handle(self, event: Event) -> None: ...

    def close(self) -> None: ...


@dataclass
class UnitView:
    """One row: a step instance on one host."""

    step: str
    host: str
    status: str = "pending"
    attempt: int = 0
    started: float | None = None
    duration: float | None = None
    exit_code: int | None = None
    error: str | None = None
    last_line: str = ""
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=FAILED_TAIL))
    details: dict[str, object] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.step}@{self.host}" if self.host else self.step


class RunView:
    """The state of a run as told by events, in the order steps were announced."""

    def __init__(self) -> None:
        self.run_id = 0
        self.pipeline = ""
        self.units: dict[tuple[str, str], UnitView] = {}
        self.order: list[str] = []
        self.finished: RunFinished | None = None

    def unit(self, step: str, host: str) -> UnitView:
        key = (step, host)
        view = self.units.get(key)
        if view is None:
            view = UnitView(step, host)
            self.units[key] = view
        return view

    def apply(self, event: Event) -> UnitView | None:
        if isinstance(event, RunStarted):
            self.run_id = event.run_id
            self.pipeline = event.pipeline
            self.order = list(event.steps)
            for step, host, status in event.units:
                self.unit(step, host).status = status
            return None
        if isinstance(event, RunFinished):
            self.finished = event
            return None
        if isinstance(event, StepStarted):
            view = self.unit(event.step, event.host)
            view.status = "running"
            view.attempt = event.attempt
            view.started = event.ts.timestamp()
            return view
        if isinstance(event, StepState):
            view = self.unit(event.step, event.host)
            view.status = event.status
            view.error = event.error
            return view
        if isinstance(event, StepFinished):
            view = self.unit(event.step, event.host)
            view.status = event.status
            view.exit_code = event.exit_code
            view.error = event.error
            view.details = dict(event.details)
            if event.duration is not None:
                view.duration = event.duration
            elif view.started is not None and event.status != "skipped":
                view.duration = event.ts.timestamp() - view.started
            return view
        if isinstance(event, StepOutput):
            view = self.unit(event.step, event.host)
            view.last_line = event.text
            view.tail.append(event.text)
            return view
        return None

    def rows(self) -> list[UnitView]:
        position = {step: index for index, step in enumerate(self.order)}
        return sorted(
            self.units.values(), key=lambda v: (position.get(v.step, len(position)), v.host)
        )


def summary_line(view: RunView) -> str:
    """`run 12 failed in 3.2s: 5 success, 1 failed, 2 skipped`."""
    finished = view.finished
    if finished is None:
        return f"run {view.run_id} did not finish"
    parts = ", ".join(f"{count} {status}" for status, count in sorted(finished.counts.items()))
    hint = ""
    if finished.status == "waiting":
        run = view.run_id
        hint = f" (approve with `ansflow approve {run} STEP`, then `ansflow resume {run}`)"
    return (
        f"run {view.run_id} {finished.status} in {format_duration(finished.duration)}"
        f": {parts}{hint}"
    )


def detail_text(details: dict[str, object]) -> str:
    """A few words about what a step recorded: tests, findings, artifacts."""
    parts: list[str] = []
    tests = details.get("tests")
    if isinstance(tests, dict):
        parts.append(
            f"{tests.get('tests', 0)} tests, {tests.get('failures', 0)} failed, "
            f"{tests.get('errors', 0)} errors, {tests.get('skipped', 0)} skipped"
        )
    scan = details.get("scan")
    if isinstance(scan, dict):
        findings = scan.get("findings") or {}
        if isinstance(findings, dict):
            shown = ", ".join(f"{n} {s}" for s, n in findings.items() if n)
            parts.append(f"{scan.get('total', 0)} findings" + (f" ({shown})" if shown else ""))
    artifacts = details.get("artifacts")
    if isinstance(artifacts, list) and artifacts:
        parts.append(f"{len(artifacts)} artifacts")
    files = details.get("files")
    if isinstance(files, list) and files:
        parts.append(f"{len(files)} files uploaded")
    url = details.get("url")
    if isinstance(url, str):
        parts.append(url)
    return "; ".join(parts)
