"""`ansflow stats`: per step, how often it runs, how often it succeeds, and how long it takes."""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

from ansflow.durations import format_duration

TREND_RUNS = 5
ENDED = ("success", "failed", "timed_out")


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def step_stats(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (pipeline, step): runs, success rate, median/p95 duration, recent trend.

    The trend compares the median of the last few runs with the median before them, so a step
    that got slower shows `+40%`.
    """
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row["status"] in ENDED:
            grouped[(row["pipeline"], row["base_id"] or row["step"])].append(row)
    result: list[dict[str, Any]] = []
    for (pipeline, step), items in sorted(grouped.items()):
        items.sort(key=lambda r: (r["run_id"], r["started_at"] or ""))
        runs = len({r["run_id"] for r in items})
        successes = sum(1 for r in items if r["status"] == "success")
        durations = [float(r["duration"]) for r in items if r["duration"] is not None]
        trend = None
        if len(durations) > TREND_RUNS:
            recent = statistics.median(durations[-TREND_RUNS:])
            before = statistics.median(durations[:-TREND_RUNS])
            if before > 0:
                trend = (recent - before) / before
        result.append(
            {
                "pipeline": pipeline,
                "step": step,
                "runs": runs,
                "executions": len(items),
                "success_rate": successes / len(items),
                "median": statistics.median(durations) if durations else None,
                "p95": _percentile(durations, 0.95) if durations else None,
                "trend": trend,
                "recent": [r["status"] for r in items[-10:]],
            }
        )
    return result


def stats_text(entries: list[dict[str, Any]]) -> str:
    from ansflow.render.tables import table

    if not entries:
        return "no finished steps yet\n"
    marks = {"success": "✓", "failed": "✗", "timed_out": "⏱"}
    return table(
        ["PIPELINE", "STEP", "RUNS", "SUCCESS", "MEDIAN", "P95", "TREND", "RECENT"],
        [
            (
                e["pipeline"],
                e["step"],
                e["runs"],
                f"{e['success_rate'] * 100:.0f}%",
                format_duration(e["median"]),
                format_duration(e["p95"]),
                "-" if e["trend"] is None else f"{e['trend'] * 100:+.0f}%",
                "".join(marks.get(s, "?") for s in e["recent"]),
            )
            for e in entries
        ],
    )
