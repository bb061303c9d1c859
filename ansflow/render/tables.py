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
    text = (
        head
        + "\n"
        + table(
            ["STEP", "HOST", "STATUS", "ATTEMPTS", "START", "END", "DURATION", "EXIT", "ERROR"],
            rows,
        )
    )
    notes = [line for s in steps for line in _detail_lines(s)]
    return text + ("\n" + "\n".join(notes) + "\n" if notes else "")


def _detail_lines(step: dict[str, Any]) -> list[str]:
    """What a step recorded besides its state: artifacts, tests, findings, uploads, build URL."""
    details = step.get("details") or {}
    outputs = step.get("outputs") or {}
    if not details and not outputs:
        return []
    label = f"{step['step']}@{step['host']}" if step["host"] else step["step"]
    lines = [f"{label}:"]
    for artifact in details.get("artifacts") or []:
        lines.append(
            f"  artifact {artifact['path']}  {artifact['size']} bytes  sha256 {artifact['sha256']}"
        )
    tests = details.get("tests")
    if isinstance(tests, dict):
        lines.append(
            f"  tests: {tests.get('tests', 0)} run, {tests.get('failures', 0)} failed, "
            f"{tests.get('errors', 0)} errors, {tests.get('skipped', 0)} skipped"
        )
        lines.extend(f"    failed: {name}" for name in tests.get("failed_tests") or [])
    scan = details.get("scan")
    if isinstance(scan, dict):
        findings = scan.get("findings") or {}
        counts = ", ".join(f"{n} {sev}" for sev, n in findings.items() if n) or "none"
        lines.append(f"  findings ({scan.get('format', '?')}): {counts}")
    for upload in details.get("files") or []:
        lines.append(f"  uploaded {upload['src']} -> {upload['dest']} ({upload['size']} bytes)")
    if details.get("url"):
        lines.append(f"  build {details['url']}")
    if details.get("commit"):
        lines.append(f"  commit {details['commit']}")
    for key, value in outputs.items():
        shown = value if len(value) <= 80 else value[:77] + "..."
        lines.append(f"  output {key}={shown}")
    return lines if len(lines) > 1 else []
