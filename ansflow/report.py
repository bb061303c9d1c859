"""`--junit FILE`: a JUnit XML report with one testcase per step instance and host (junitparser)."""

from __future__ import annotations

from pathlib import Path

from ansflow.errors import UsageError
from ansflow.state import StateStore


def write_junit(path: Path, store: StateStore, run_id: int, pipeline: str) -> None:
    """Failed and timed-out steps are failures; skipped and cancelled ones are skipped."""
    from junitparser import Failure, JUnitXml, Skipped, TestCase, TestSuite

    suite = TestSuite(pipeline)
    for row in store.steps(run_id):
        name = f"{row['step']}@{row['host']}" if row["host"] else row["step"]
        case = TestCase(name, classname=pipeline, time=float(row["duration"] or 0.0))
        status = row["status"]
        message = row["error"] or status
        if status in ("failed", "timed_out", "interrupted"):
            case.result = [Failure(message, status)]
        elif status in ("skipped", "cancelled", "pending", "waiting"):
            case.result = [Skipped(message)]
        suite.add_testcase(case)
    suite.update_statistics()
    xml = JUnitXml()
    xml.add_testsuite(suite)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        xml.write(str(path), pretty=True)
    except OSError as exc:
        raise UsageError(f"--junit {path}: cannot write it ({exc.strerror or exc})") from None
