"""JSON output: newline-delimited events (schema in docs/events.md), flushed one by one."""

from __future__ import annotations

import json
import sys
from typing import TextIO

from ansflow.events import Event


class JsonRenderer:
    """One JSON object per line on stdout; nothing else is written there."""

    def __init__(self, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.stream = stream or sys.stdout
        self.quiet = quiet

    def handle(self, event: Event) -> None:
        self.stream.write(json.dumps(event.to_json(), ensure_ascii=False) + "\n")
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()
