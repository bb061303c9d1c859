"""The live terminal view (rich): a row per step instance and host, then a summary.

This is the only module that imports rich. It also asks approval questions at the terminal, pausing
the live view while it waits for an answer.
"""

from __future__ import annotations

import select
import sys
import threading
import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from ansflow.cancel import CancelScope
from ansflow.durations import format_duration
from ansflow.events import Event, RunFinished, StepFinished
from ansflow.render.base import RunView, UnitView, detail_text, summary_line
from ansflow.render.plain import printable

STYLES = {
    "pending": "dim",
    "running": "cyan",
    "retrying": "yellow",
    "waiting": "magenta",
    "success": "green",
    "failed": "bold red",
    "timed_out": "bold red",
    "skipped": "dim",
    "cancelled": "yellow",
    "interrupted": "yellow",
}
MARKS = {
    "success": "✓",
    "failed": "✗",
    "timed_out": "⏱",
    "skipped": "-",
    "cancelled": "⊘",
    "interrupted": "!",
    "waiting": "?",
    "retrying": "↻",
    "pending": "·",
}


def _text(value: str, style: str = "") -> Text:
    """User text (labels, output, errors) as a rich Text: shown as is, never read as markup."""
    return Text(printable(value), style=style)


class TtyRenderer:
    """rich Live display; `quiet` shows only failures and the summary line."""

    def __init__(self, quiet: bool = False, force_terminal: bool | None = None) -> None:
        self.console = Console(force_terminal=force_terminal, highlight=False, soft_wrap=False)
        self.quiet = quiet
        self.view = RunView()
        self.lock = threading.RLock()
        self.live: Live | None = None
        self.spinners: dict[tuple[str, str], Spinner] = {}
        if not quiet:
            self.live = Live(
                self._render(),
                console=self.console,
                refresh_per_second=10,
                transient=True,
                get_renderable=self._render,
            )
            self.live.start()

    def _elapsed(self, unit: UnitView) -> str:
        if unit.duration is not None:
            return format_duration(unit.duration)
        if unit.started is not None and unit.status in ("running", "retrying", "waiting"):
            return format_duration(time.time() - unit.started)
        return ""

    def _status_cell(self, unit: UnitView) -> Any:
        style = STYLES.get(unit.status, "")
        if unit.status == "running":
            key = (unit.step, unit.host)
            spinner = self.spinners.get(key)
            if spinner is None:
                spinner = Spinner("dots", text=Text(unit.status, style=style), style=style)
                self.spinners[key] = spinner
            return spinner
        label = f"{MARKS.get(unit.status, ' ')} {unit.status}"
        if unit.status == "retrying" or (unit.attempt > 1 and unit.status == "running"):
            label += f" #{unit.attempt}"
        return Text(label, style=style)

    def _render(self) -> Any:
        with self.lock:
            table = Table(
                box=None, expand=False, show_header=True, header_style="bold", pad_edge=False
            )
            table.add_column("step", no_wrap=True)
            table.add_column("state", no_wrap=True, min_width=12)
            table.add_column("time", justify="right", no_wrap=True)
            table.add_column("output", no_wrap=True, overflow="ellipsis", max_width=80)
            for unit in self.view.rows():
                line = (
                    unit.error
                    if unit.status in ("waiting", "retrying") and unit.error
                    else unit.last_line
                )
                table.add_row(
                    _text(unit.label),
                    self._status_cell(unit),
                    self._elapsed(unit),
                    _text(line or "", style="dim"),
                )
            title = _text(f"ansflow run {self.view.run_id} · {self.view.pipeline}", style="bold")
            return Group(title, table)

    def handle(self, event: Event) -> None:
        with self.lock:
            unit = self.view.apply(event)
        failed = isinstance(event, StepFinished) and event.status in ("failed", "timed_out")
        if self.quiet and failed and unit is not None:
            self._print_failure(unit)
        if isinstance(event, RunFinished):
            self._finish()

    def _print_failure(self, unit: UnitView) -> None:
        self.console.print(
            _text(f"✗ {unit.label} {unit.status}: {unit.error or ''}", style="bold red")
        )
        for line in unit.tail:
            self.console.print(_text("    " + line))

    def _finish(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
        if not self.quiet:
            table = Table(
                title=_text(f"run {self.view.run_id} · {self.view.pipeline}"), show_lines=False
            )
            for column in ("step", "state", "attempts", "duration", "note"):
                table.add_column(column, no_wrap=column != "note")
            for unit in self.view.rows():
                style = STYLES.get(unit.status, "")
                table.add_row(
                    _text(unit.label),
                    Text(f"{MARKS.get(unit.status, ' ')} {unit.status}", style=style),
                    Text(str(unit.attempt)),
                    Text(format_duration(unit.duration) if unit.duration is not None else "-"),
                    _text(unit.error or detail_text(unit.details)),
                )
            self.console.print(table)
            for unit in self.view.rows():
                if unit.status in ("failed", "timed_out") and unit.tail:
                    self.console.print(
                        _text(f"last {len(unit.tail)} lines of {unit.label}:", style="bold red")
                    )
                    for line in unit.tail:
                        self.console.print(_text("  " + line))
        finished = self.view.finished
        style = "green" if finished is not None and finished.status == "success" else "bold red"
        if finished is not None and finished.status == "waiting":
            style = "magenta"
        self.console.print(_text(summary_line(self.view), style=style))

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

    # --- approvals at the terminal ---------------------------------------------------------------

    def ask(self, step: str, message: str, timeout: float | None, scope: CancelScope) -> str:
        """Pause the live view and ask; `approved`, `rejected` or `timeout`."""
        with self.lock:
            if self.live is not None:
                self.live.stop()
            limit = f" (within {format_duration(timeout)})" if timeout else ""
            self.console.print(
                _text(f"? {step}: {message} [y/N]{limit} ", style="bold magenta"), end=""
            )
        try:
            answer = _read_line(timeout, scope)
        finally:
            with self.lock:
                if self.live is not None or not self.quiet:
                    self.live = Live(
                        self._render(),
                        console=self.console,
                        refresh_per_second=10,
                        transient=True,
                        get_renderable=self._render,
                    )
                    self.live.start()
        if answer is None:
            self.console.print(Text("no answer", style="yellow"))
            return "timeout"
        return "approved" if answer.strip().lower() in ("y", "yes") else "rejected"


def _read_line(timeout: float | None, scope: CancelScope) -> str | None:
    """A line from stdin, or None when `timeout` passes or the run is cancelled."""
    deadline = None if timeout is None else time.monotonic() + timeout
    buffer = ""
    while True:
        if scope.cancelled:
            return None
        wait = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
        if wait <= 0:
            return None
        ready, _, _ = select.select([sys.stdin], [], [], wait)
        if ready:
            chunk = sys.stdin.readline()
            if chunk == "":
                return None
            buffer += chunk
            if buffer.endswith("\n"):
                return buffer
