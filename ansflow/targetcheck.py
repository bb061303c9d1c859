"""`ansflow targets check`: reach every target the pipeline names, as a run would.

SSH hosts are checked in parallel (reachable, host key, login, round trip); Jenkins servers report
their version, the token's user, and whether each job the pipeline names exists.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ansflow import templates
from ansflow.loader import load_file
from ansflow.model import JenkinsStep, JenkinsTarget, SSHTarget
from ansflow.secrets import Masker, read_secrets

if TYPE_CHECKING:
    from ansflow.planner import StepNode


@dataclass(frozen=True)
class TargetCheck:
    """One line of the report: a host of an SSH target, or a Jenkins server or job."""

    target: str
    kind: str
    what: str
    ok: bool
    detail: str
    error: str | None = None
    round_trip_ms: float | None = None
    #: Not checked: what to check is known only while the pipeline runs (`detail` says why).
    skipped: bool = False
    #: What an SSH host row reports field by field (None for Jenkins rows).
    ssh: SSHHostFields | None = None

    def as_json(self) -> dict[str, Any]:
        """The row for `--json`: SSH host rows also carry their fields at the top level, so
        scripts read `reachable` or `host_key` instead of parsing `detail`."""
        row = asdict(self)
        del row["ssh"]
        if self.ssh is not None:
            row.update(asdict(self.ssh))
        return row


@dataclass(frozen=True)
class SSHHostFields:
    """One SSH host as `targets check --json` reports it."""

    host: str
    address: str | None
    port: int | None
    user: str | None
    reachable: bool
    #: "known", "unknown" or "changed" against known_hosts; None when no key was seen.
    host_key: str | None
    #: The key the host presented: type and SHA256 fingerprint.
    host_key_fingerprint: str | None
    login: bool
    rtt_ms: float | None


def check_targets(file: Path, secrets_file: Path | None = None) -> list[TargetCheck]:
    from ansflow.targets import Places, ssh_settings

    loaded = load_file(file)
    pipeline = loaded.pipeline
    secrets = read_secrets(pipeline.secrets, secrets_file)
    masker = Masker(secrets.values())
    context: dict[str, Any] = {
        "vars": dict(pipeline.vars),
        "secrets": secrets,
        "env": dict(os.environ),
        "pipeline": {"name": loaded.name, "file": str(loaded.path)},
        "run": {"id": 0, "status": "running"},
    }
    # NOTE: as `run` does: the pipeline's env is rendered once, then seen by every template.
    context["env"] = {**os.environ, **_pipeline_env(pipeline.env, context)}
    places = Places(pipeline, loaded.path.parent.resolve(), secrets, context)
    results: list[TargetCheck] = []
    for name, spec in pipeline.targets.items():
        if isinstance(spec, SSHTarget):
            results.extend(
                _check_ssh(
                    name,
                    places.hosts_of(name),
                    ssh_settings(spec, secrets, context, loaded.path.parent),
                )
            )
        elif isinstance(spec, JenkinsTarget):
            from ansflow.remote.jenkins import check_jenkins

            jobs, unchecked = _jenkins_jobs(loaded.plan().nodes, name, context)
            for item in check_jenkins(name, spec, secrets, context, sorted(jobs)):
                results.append(
                    TargetCheck(
                        target=item.target,
                        kind="jenkins",
                        what=item.what,
                        ok=item.ok,
                        detail=masker(item.detail),
                        error=masker(item.error) if item.error else None,
                    )
                )
            results.extend(
                replace(r, detail=masker(r.detail), error=masker(r.error) if r.error else None)
                for r in unchecked
            )
    return results


def _pipeline_env(env: dict[str, str], context: dict[str, Any]) -> dict[str, str]:
    """The pipeline's env rendered; a value that cannot be rendered is kept as written."""
    rendered: dict[str, str] = {}
    for key, value in env.items():
        try:
            rendered[key] = templates.render_text(value, context)
        except templates.TemplateError:
            rendered[key] = value
    return rendered


def _jenkins_jobs(
    nodes: Sequence[StepNode], target: str, context: dict[str, Any]
) -> tuple[set[str], list[TargetCheck]]:
    """The job names steps on `target` trigger, rendered as `run` renders them.

    A name that reads `steps.*` is known only while the pipeline runs: it is listed, not checked.
    A name that cannot be rendered at all fails the check, as it would fail the run.
    """
    jobs: set[str] = set()
    unchecked: list[TargetCheck] = []
    seen: set[str] = set()

    def note(raw: str, ok: bool, detail: str = "", error: str | None = None) -> None:
        """One row per written name, however many steps (or matrix instances) use it."""
        if raw not in seen:
            seen.add(raw)
            unchecked.append(
                TargetCheck(
                    target=target,
                    kind="jenkins",
                    what=f"job {raw}",
                    ok=ok,
                    detail=detail,
                    error=error,
                    skipped=ok,
                )
            )

    for node in nodes:
        step = node.step
        if not isinstance(step, JenkinsStep) or node.target != target or step.job is None:
            continue
        raw = step.job
        if not templates.has_template(raw):
            jobs.add(raw)
            continue
        runtime = sorted(
            {
                ".".join(ref.chain[:2])
                for span in templates.spans(raw)
                for ref in templates.references(span.source)
                if ref.chain and ref.chain[0] == "steps"
            }
        )
        if runtime:
            note(
                raw,
                True,
                f"not checked: the name reads {', '.join(runtime)}, known only while the "
                f"pipeline runs (step {node.base_id!r})",
            )
            continue
        try:
            name = templates.render_text(raw, {**context, "matrix": dict(node.matrix)})
            problem = JenkinsTarget.job_name_problem(name)
        except templates.TemplateError as exc:
            problem = exc.message
        else:
            if problem is None:
                jobs.add(name)
                continue
            problem = f"renders to {name!r}: {problem}"
        note(raw, False, error=f"step {node.base_id!r}, `job`: {problem}")
    return jobs, unchecked


def _check_ssh(name: str, hosts: list[Any], settings: Any) -> list[TargetCheck]:
    from ansflow.remote.ssh import check_host

    def one(host: Any) -> TargetCheck:
        check = check_host(host, settings)
        parts = [
            f"{check.user}@{check.address}" if check.user else check.address,
            "reachable" if check.reachable else "unreachable",
            {"known": "host key known", "changed": "HOST KEY CHANGED"}.get(
                check.host_key_status or "", "host key not known"
            ),
            "login ok" if check.login else "login failed",
        ]
        if check.host_key:
            parts.append(check.host_key)
        return TargetCheck(
            target=name,
            kind="ssh",
            what=f"host {check.host}",
            ok=check.ok,
            detail=", ".join(parts),
            error=check.error,
            round_trip_ms=check.round_trip_ms,
            ssh=SSHHostFields(
                host=check.host,
                address=check.hostname,
                port=check.port,
                user=check.user,
                reachable=check.reachable,
                host_key=check.host_key_status,
                host_key_fingerprint=check.host_key,
                login=check.login,
                rtt_ms=check.round_trip_ms,
            ),
        )

    if not hosts:
        return []
    with ThreadPoolExecutor(min(16, len(hosts))) as pool:
        return list(pool.map(one, hosts))


def checks_text(results: list[TargetCheck]) -> str:
    from ansflow.render.tables import table

    if not results:
        return "no ssh or jenkins targets to check\n"
    rows = [
        (
            r.target,
            r.what,
            "skipped" if r.skipped else "ok" if r.ok else "FAILED",
            "-" if r.round_trip_ms is None else f"{r.round_trip_ms:.1f}ms",
            r.error or r.detail,
        )
        for r in results
    ]
    failed = sum(1 for r in results if not r.ok)
    skipped = sum(1 for r in results if r.skipped)
    summary = f"{len(results) - failed - skipped} ok, {failed} failed"
    summary += f", {skipped} skipped\n" if skipped else "\n"
    return table(["TARGET", "WHAT", "STATUS", "RTT", "DETAIL"], rows) + summary


def checks_json(results: list[TargetCheck]) -> str:
    return json.dumps([r.as_json() for r in results], indent=2) + "\n"
