"""`ansflow targets check`: reach every target the pipeline names, as a run would.

SSH hosts are checked in parallel (reachable, host key, login, round trip); Jenkins servers report
their version, the token's user, and whether each job the pipeline names exists.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ansflow.loader import load_file
from ansflow.model import JenkinsStep, JenkinsTarget, SSHTarget
from ansflow.secrets import Masker, read_secrets


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


def check_targets(file: Path, secrets_file: Path | None = None) -> list[TargetCheck]:
    from ansflow.targets import Places, ssh_settings

    loaded = load_file(file)
    pipeline = loaded.pipeline
    secrets = read_secrets(pipeline.secrets, secrets_file)
    masker = Masker(secrets.values())
    context: dict[str, Any] = {
        "vars": dict(pipeline.vars),
        "secrets": secrets,
        "env": {**os.environ, **pipeline.env},
        "pipeline": {"name": loaded.name, "file": str(loaded.path)},
        "run": {"id": 0, "status": "running"},
    }
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
            jobs = sorted(
                {
                    step.job
                    for _, step in pipeline.iter_steps()
                    if isinstance(step, JenkinsStep) and step.on == name and step.job
                }
            )
            from ansflow.remote.jenkins import check_jenkins

            for item in check_jenkins(name, spec, secrets, context, jobs):
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
    return results


def _check_ssh(name: str, hosts: list[Any], settings: Any) -> list[TargetCheck]:
    from ansflow.remote.ssh import check_host

    def one(host: Any) -> TargetCheck:
        check = check_host(host, settings)
        parts = [
            f"{check.user}@{check.address}" if check.user else check.address,
            "reachable" if check.reachable else "unreachable",
            "host key known" if check.host_key_known else "host key not known",
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
            "ok" if r.ok else "FAILED",
            "-" if r.round_trip_ms is None else f"{r.round_trip_ms:.1f}ms",
            r.error or r.detail,
        )
        for r in results
    ]
    failed = sum(1 for r in results if not r.ok)
    summary = f"{len(results) - failed} ok, {failed} failed\n"
    return table(["TARGET", "WHAT", "STATUS", "RTT", "DETAIL"], rows) + summary


def checks_json(results: list[TargetCheck]) -> str:
    return json.dumps([asdict(r) for r in results], indent=2) + "\n"
