"""Plain-text tables for `runs`, `show` and `stats` (aligned columns, no colour)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ansflow.durations import format_duration
from ansflow.events import parse_iso


def clock(text: str | None, with_date: bool = False) -> str:
    moment = parse_iso(text)
    if moment is None:
        return "-"
    local = moment.astimezone()
    return local.strftime("%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = [cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines) + "\n"


def runs_table(runs: Sequence[dict[str, Any]]) -> str:
    if not runs:
        return "no runs yet\n"
    return table(
        ["ID", "PIPELINE", "STATUS", "STARTED", "DURATION", "TRIGGER"],
        [
            (
                r["id"],
                r["pipeline"],
                r["status"],
                clock(r["started_at"], with_date=True),
                format_duration(r["duration"]) if r["duration"] is not None else "-",
                r["trigger"],
            )
            for r in runs
        ],
    )


def show_text(run: dict[str, Any], steps: Sequence[dict[str, Any]]) -> str:
    head = (
        f"run {run['id']} · {run['pipeline']} · {run['status']}"
        f" · started {clock(run['started_at'], True)}"
        + (f" · {format_duration(run['duration'])}" if run["duration"] is not None else "")
        + f" · {run['file']}\n"
    )
    if run.get("error"):
        head += f"error: {run['error']}\n"
    rows = []
    for s in steps:
        rows.append(
            (
                s["step"],
                s["host"] or "-",
                s["status"],
                s["attempts"],
                clock(s["started_at"]),
                clock(s["finished_at"]),
                format_duration(s["duration"]) if s["duration"] is not None else "-",
                "-" if s["exit_code"] is None else s["exit_code"],
                (s["error"] or "")[:100],
            )
        )
    return (
        head
        + "\n"
        + table(
            ["STEP", "HOST", "STATUS", "ATTEMPTS", "START", "END", "DURATION", "EXIT", "ERROR"],
            rows,
        )
    )
