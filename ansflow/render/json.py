"""JSON output: newline-delimited events (schema in docs/events.md), flushed one by one."""

from __future__ import annotations

import json
import sys
from collections import deque
from typing import TextIO

from ansflow.events import Event, RunFinished, StepFinished, StepOutput
from ansflow.render.base import FAILED_TAIL

BAD = ("failed", "timed_out")


class JsonRenderer:
    """One JSON object per line on stdout; nothing else is written there.

    With `quiet` (SPEC section 5: only failures and the final summary), only `step_finished`
    events of failed or timed-out steps are written, each after the last log lines of that step
    (as the plain output shows them), and then `run_finished`. Log lines are held back per step
    until it ends, at most FAILED_TAIL of them, so quiet output stays bounded in memory.
    """

    def __init__(self, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.stream = stream or sys.stdout
        self.quiet = quiet
        self.tails: dict[tuple[str, str], deque[StepOutput]] = {}

    def handle(self, event: Event) -> None:
        if not self.quiet:
            self._write(event)
        elif isinstance(event, StepOutput):
            key = (event.step, event.host)
            self.tails.setdefault(key, deque(maxlen=FAILED_TAIL)).append(event)
        elif isinstance(event, StepFinished):
            tail = self.tails.pop((event.step, event.host), ())
            if event.status in BAD:
                for line in tail:
                    self._write(line)
                self._write(event)
        elif isinstance(event, RunFinished):
            self._write(event)

    def _write(self, event: Event) -> None:
        self.stream.write(json.dumps(event.to_json(), ensure_ascii=False) + "\n")
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()
