"""`security_scan`: run a scanner, read its report (SARIF, bandit, semgrep or trivy JSON), count
findings by severity, and fail when one is at or above `fail_on`.

Scanners usually exit non-zero when they find something, so the report, not the exit status,
decides; a missing or unreadable report is a failure.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

from ansflow.model import SecurityScanStep
from ansflow.steps.base import StepContext, StepError, StepResult, StepType, register

SEVERITIES = ("info", "low", "medium", "high", "critical")
_WORDS = {
    "critical": "critical",
    "high": "high",
    "error": "high",
    "medium": "medium",
    "moderate": "medium",
    "warning": "medium",
    "low": "low",
    "note": "low",
    "info": "info",
    "informational": "info",
    "none": "info",
    "unknown": "info",
    "undefined": "info",
}


def _word(value: object) -> str:
    return _WORDS.get(str(value).strip().lower(), "info")


def _cvss(score: object) -> str | None:
    try:
        number = float(str(score))
    except ValueError:
        return None
    if number >= 9.0:
        return "critical"
    if number >= 7.0:
        return "high"
    if number >= 4.0:
        return "medium"
    if number > 0:
        return "low"
    return "info"


def _sarif(report: dict[str, Any]) -> Iterator[str]:
    for run in report.get("runs") or []:
        rules: dict[str, dict[str, Any]] = {}
        driver = (run.get("tool") or {}).get("driver") or {}
        for rule in driver.get("rules") or []:
            if isinstance(rule, dict) and "id" in rule:
                rules[str(rule["id"])] = rule
        for result in run.get("results") or []:
            if not isinstance(result, dict):
                continue
            kind = result.get("kind", "fail")
            if kind in ("pass", "notApplicable") or _suppressed(result):
                continue
            rule = rules.get(str(result.get("ruleId")), {})
            score = (result.get("properties") or {}).get("security-severity") or (
                rule.get("properties") or {}
            ).get("security-severity")
            level = result.get("level") or (rule.get("defaultConfiguration") or {}).get("level")
            # NOTE: SARIF's default level is "warning" for a failure and "none" for other kinds.
            default = "warning" if kind == "fail" else "none"
            yield (_cvss(score) if score is not None else None) or _word(level or default)


def _suppressed(result: dict[str, Any]) -> bool:
    """A result suppressed in the source or a baseline (status absent means accepted)."""
    for suppression in result.get("suppressions") or []:
        if isinstance(suppression, dict) and suppression.get("status", "accepted") == "accepted":
            return True
    return False


def _bandit(report: dict[str, Any]) -> Iterator[str]:
    for result in report.get("results") or []:
        yield _word(result.get("issue_severity", "undefined"))


def _semgrep(report: dict[str, Any]) -> Iterator[str]:
    for result in report.get("results") or []:
        extra = result.get("extra") or {}
        yield _word(extra.get("severity", "info"))


def _trivy(report: dict[str, Any]) -> Iterator[str]:
    for target in report.get("Results") or []:
        for key in ("Vulnerabilities", "Misconfigurations", "Secrets"):
            for finding in target.get(key) or []:
                yield _word(finding.get("Severity", "unknown"))


def count_findings(data: bytes, name: str) -> tuple[str, Counter[str]]:
    """(format, counts by severity) of a scanner report."""
    try:
        report = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise StepError(f"security report {name} is not JSON: {exc}") from None
    if not isinstance(report, dict):
        raise StepError(f"security report {name}: expected a JSON object")
    if "runs" in report and ("version" in report or "$schema" in report):
        kind, found = "sarif", _sarif(report)
    elif "Results" in report or "ArtifactName" in report:
        kind, found = "trivy", _trivy(report)
    elif isinstance(report.get("results"), list) and (
        "generated_at" in report
        or "metrics" in report
        or any(isinstance(r, dict) and "issue_severity" in r for r in report["results"])
    ):
        kind, found = "bandit", _bandit(report)
    elif isinstance(report.get("results"), list) and (
        "errors" in report or "paths" in report or "version" in report
    ):
        kind, found = "semgrep", _semgrep(report)
    elif isinstance(report.get("results"), list) and not report["results"]:
        kind, found = "bandit", iter(())
    else:
        raise StepError(f"security report {name}: not SARIF, bandit, semgrep or trivy JSON")
    return kind, Counter(found)


@register
class SecurityScan(StepType):
    """The report decides: findings at or above `fail_on` fail the step."""

    name = "security_scan"

    def execute(self, ctx: StepContext) -> StepResult:
        step = ctx.step
        assert isinstance(step, SecurityScanStep)
        code = 0
        if step.run:
            code = ctx.run_script(step.run, step.shell)
            if ctx.scope.cancelled:
                return StepResult.from_exit(code, "scanner")
        matches = ctx.runner.glob(step.report, ctx.workdir)
        if not matches:
            raise StepError(f"security report {step.report!r} not found (scanner exit {code})")
        counts: Counter[str] = Counter()
        kinds: list[str] = []
        for path in matches:
            data = ctx.runner.read_file(ctx.resolve(path))
            if data is None:
                raise StepError(f"security report {path} vanished before it could be read")
            kind, found = count_findings(data, path)
            counts.update(found)
            if kind not in kinds:
                kinds.append(kind)
        kind = ", ".join(kinds)
        findings = {severity: counts.get(severity, 0) for severity in SEVERITIES}
        total = sum(findings.values())
        details: dict[str, Any] = {
            "findings": findings,
            "total": total,
            "format": kind,
            "report": matches[0],
        }
        if len(matches) > 1:
            details["reports"] = matches
        ctx.log(
            f"{total} findings ({kind}): "
            + ", ".join(f"{findings[s]} {s}" for s in reversed(SEVERITIES))
        )
        if step.fail_on is not None:
            threshold = SEVERITIES.index(step.fail_on)
            over = sum(findings[s] for s in SEVERITIES[threshold:])
            if over:
                return StepResult(
                    "failed",
                    code,
                    f"{over} findings at or above {step.fail_on}",
                    {"scan": details},
                )
        return StepResult("success", code, details={"scan": details})
