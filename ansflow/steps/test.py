"""`test`: run, then read JUnit XML reports (junitparser) and fail if any test failed."""

from __future__ import annotations

from typing import Any

from ansflow.model import TestStep
from ansflow.steps.base import StepContext, StepError, StepResult, StepType, register

MAX_LISTED_FAILURES = 50


def summarize_junit(data: bytes, name: str) -> dict[str, Any]:
    """Counts of one report: tests, failures, errors, skipped, and the failing test names."""
    from junitparser import Error, Failure, JUnitXml, Skipped, TestSuite

    try:
        xml = JUnitXml.fromstring(data.decode("utf-8", "replace"))
    except Exception as exc:
        raise StepError(f"JUnit report {name} is not valid XML: {exc}") from None
    suites = [xml] if isinstance(xml, TestSuite) else list(xml)
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    failed: list[str] = []
    for suite in suites:
        cases = list(suite) if isinstance(suite, TestSuite) else []
        for case in cases:
            counts["tests"] += 1
            kinds = {type(r) for r in case.result}
            label = f"{case.classname}.{case.name}" if case.classname else str(case.name)
            if any(issubclass(k, Failure) for k in kinds):
                counts["failures"] += 1
                failed.append(label)
            elif any(issubclass(k, Error) for k in kinds):
                counts["errors"] += 1
                failed.append(label)
            elif any(issubclass(k, Skipped) for k in kinds):
                counts["skipped"] += 1
    return {**counts, "failed_tests": failed}


@register
class Test(StepType):
    """Runs the tests; the reports decide, and a failing command without reports fails too."""

    name = "test"

    def execute(self, ctx: StepContext) -> StepResult:
        step = ctx.step
        assert isinstance(step, TestStep)
        result = StepResult.from_exit(ctx.run_script(step.run, step.shell), "tests")
        if ctx.scope.cancelled or not step.junit:
            return result
        totals: dict[str, Any] = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        failed: list[str] = []
        files: list[str] = []
        for pattern in step.junit:
            matches = ctx.runner.glob(pattern, ctx.workdir)
            if not matches:
                if result.status == "success":
                    raise StepError(f"JUnit report {pattern!r} matched no file")
                continue
            for path in matches:
                if path in files:
                    continue  # NOTE: two globs matching one report must not count it twice.
                data = ctx.runner.read_file(ctx.resolve(path))
                if data is None:
                    raise StepError(f"JUnit report {path} vanished before it could be read")
                summary = summarize_junit(data, path)
                failed.extend(summary.pop("failed_tests"))
                for key in totals:
                    totals[key] += summary[key]
                files.append(path)
        totals["files"] = files
        totals["failed_tests"] = failed[:MAX_LISTED_FAILURES]
        result.details["tests"] = totals
        ctx.log(
            f"{totals['tests']} tests: {totals['failures']} failed, {totals['errors']} errors, "
            f"{totals['skipped']} skipped"
        )
        bad = totals["failures"] + totals["errors"]
        if bad and result.status == "success":
            names = ", ".join(failed[:5]) + (" …" if len(failed) > 5 else "")
            return StepResult(
                "failed", result.exit_code, f"{bad} tests failed: {names}", result.details
            )
        return result
