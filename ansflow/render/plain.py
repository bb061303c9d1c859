"""Plain output: one line per event, `HH:MM:SS step[@host] | text`, no colour, no cursor moves.

Meant for CI logs and cron mail; with `quiet`, only failures and the final summary line.
"""

from __future__ import annotations

import re
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

#: Terminal escape sequences, in their 7-bit and 8-bit (C1) forms: CSI (colours, cursor moves),
#: the strings OSC (titles, links), DCS, SOS, PM and APC, and two-byte escapes such as `ESC 7`.
_ESCAPES = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f]).*?(?:\x07|\x1b\\|\x9c|$)"
    r"|\x1b[ -/]*[0-~]",
    re.DOTALL,
)
#: What is left of control characters after the sequences are gone; tab is kept.
_CONTROLS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """`text` without escape sequences and control characters (tabs are kept).

    A step's output reaches the reader's terminal or CI log through ansflow; its own colours,
    cursor moves and window titles must not (click's `strip_ansi`, which `ansflow logs` gets
    through `typer.echo`, removes only CSI sequences).
    """
    if text.isprintable():
        return text
    return _CONTROLS.sub("", _ESCAPES.sub("", text))


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
                printable(unit.label),
                unit.status,
                str(unit.attempt),
                format_duration(unit.duration) if unit.duration is not None else "-",
                printable(note)[:80],
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
        self.stream.write(f"{_clock(event)} {printable(who)} | {printable(text)}\n")
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
                    self.stream.write(f"    {printable(line)}\n")
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
                    label = printable(unit.label)
                    self.stream.write(f"\n--- last {len(unit.tail)} lines of {label} ---\n")
                    self.stream.write("\n".join(printable(line) for line in unit.tail) + "\n")
            self.stream.write("\n")
        self.stream.write(printable(summary_line(self.view)) + "\n")
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()
