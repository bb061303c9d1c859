"""Plain output: one line per event, `HH:MM:SS step[@host] | text`, no colour, no cursor moves.

Meant for CI logs and cron mail; with `quiet`, only failures and the final summary line.
"""

from __future__ import annotations

import sys
from typing import TextIO

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
from ansflow.render.base import RunView, UnitView, detail_text, summary_line

BAD = ("failed", "timed_out")


def _clock(event: Event) -> str:
    return event.ts.astimezone().strftime("%H:%M:%S")


def finished_text(event: StepFinished, view: UnitView) -> str:
    text = event.status
    if (event.status not in ("skipped", "cancelled") or view.duration) and (
        view.duration is not None
    ):
        text += f" in {format_duration(view.duration)}"
    extra = detail_text(event.details)
    if extra:
        text += f" ({extra})"
    if event.error:
        text += f": {event.error}"
    return text


def summary_table(view: RunView) -> list[str]:
    rows = [("STEP", "STATUS", "ATTEMPTS", "DURATION", "NOTE")]
    for unit in view.rows():
        note = unit.error or detail_text(unit.details)
        rows.append(
            (
                unit.label,
                unit.status,
                str(unit.attempt),
                format_duration(unit.duration) if unit.duration is not None else "-",
                note[:80],
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4]
        for row in rows
    ]


class PlainRenderer:
    """Writes lines as events arrive; flushes each so CI shows them at once."""

    def __init__(self, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.stream = stream or sys.stdout
        self.quiet = quiet
        self.view = RunView()

    def _line(self, event: Event, who: str, text: str) -> None:
        self.stream.write(f"{_clock(event)} {who} | {text}\n")
        self.stream.flush()

    def handle(self, event: Event) -> None:
        unit = self.view.apply(event)
        label = unit.label if unit is not None else f"run {event.run_id}"
        if isinstance(event, RunFinished):
            self._finish()
            return
        if self.quiet:
            if isinstance(event, StepFinished) and event.status in BAD and unit is not None:
                self._line(event, label, finished_text(event, unit))
                for line in unit.tail:
                    self.stream.write(f"    {line}\n")
            return
        if isinstance(event, RunStarted):
            what = "resumed" if event.resumed else "started"
            self._line(
                event, label, f"{what} {event.pipeline} ({event.file}), {len(event.steps)} steps"
            )
        elif isinstance(event, StepStarted):
            attempt = f" (attempt {event.attempt})" if event.attempt > 1 else ""
            self._line(event, label, f"started{attempt}")
        elif isinstance(event, StepOutput):
            prefix = "ansflow: " if event.stream == "ansflow" else ""
            self._line(event, label, prefix + event.text)
        elif isinstance(event, StepState):
            text = event.status + (f": {event.error}" if event.error else "")
            self._line(event, label, text)
        elif isinstance(event, StepFinished) and unit is not None:
            self._line(event, label, finished_text(event, unit))

    def _finish(self) -> None:
        if not self.quiet:
            self.stream.write("\n" + "\n".join(summary_table(self.view)) + "\n")
            for unit in self.view.rows():
                if unit.status in BAD and unit.tail:
                    self.stream.write(f"\n--- last {len(unit.tail)} lines of {unit.label} ---\n")
                    self.stream.write("\n".join(unit.tail) + "\n")
            self.stream.write("\n")
        self.stream.write(summary_line(self.view) + "\n")
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()
