"""`build`: run, then check that every artifact glob matched and fingerprint what it matched."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ansflow.model import BuildStep
from ansflow.steps.base import StepContext, StepError, StepResult, StepType, register


def fingerprint(ctx: StepContext, path: str) -> tuple[int, str]:
    """(size, sha256) of a file where the step ran, streamed so big files cost no memory."""
    if ctx.runner.host is None:
        digest = hashlib.sha256()
        size = 0
        with Path(path).open("rb") as handle:
            while chunk := handle.read(1024 * 1024):
                digest.update(chunk)
                size += len(chunk)
        return size, digest.hexdigest()
    code, lines = ctx.capture(["sha256sum", "--", path])
    if code != 0 or not lines:
        raise StepError(f"cannot checksum artifact {path} on {ctx.host}")
    digest_text = lines[0].split()[0]
    code, lines = ctx.capture(["stat", "-c", "%s", "--", path])
    if code != 0 or not lines:
        raise StepError(f"cannot stat artifact {path} on {ctx.host}")
    return int(lines[0].strip()), digest_text


def _files(ctx: StepContext, matches: list[str]) -> list[str]:
    """The files among `matches`, a matched folder standing for every file under it."""
    if ctx.runner.host is None:
        files: list[str] = []
        for match in matches:
            if not os.path.isdir(match):
                files.append(match)
                continue
            for root, dirs, names in os.walk(match):
                dirs.sort()
                files.extend(os.path.join(root, name) for name in sorted(names))
        return [f for f in files if os.path.isfile(f)]
    safe = [m if not m.startswith("-") else f"./{m}" for m in matches]
    code, lines = ctx.capture(["find", "-L", *safe, "-type", "f"], limit=100_000)
    if code != 0:
        raise StepError(f"cannot list artifacts {', '.join(matches)} on {ctx.host}")
    return sorted(line for line in lines if line)


def collect_artifacts(ctx: StepContext, patterns: list[str]) -> list[dict[str, object]]:
    artifacts: list[dict[str, object]] = []
    seen: set[str] = set()
    for pattern in patterns:
        matches = ctx.runner.glob(pattern, ctx.workdir)
        if not matches:
            raise StepError(f"artifact {pattern!r} matched no file")
        files = _files(ctx, matches)
        if not files:
            raise StepError(f"artifact {pattern!r} matched only empty folders")
        for path in files:
            if path in seen:
                continue  # NOTE: two globs matching one file record it once.
            seen.add(path)
            size, digest = fingerprint(ctx, path)
            artifacts.append({"path": path, "size": size, "sha256": digest})
            ctx.log(f"artifact {path} ({size} bytes, sha256 {digest[:12]}…)")
    return artifacts


@register
class Build(StepType):
    """Fails when the command fails or an artifact glob matches nothing."""

    name = "build"

    def execute(self, ctx: StepContext) -> StepResult:
        step = ctx.step
        assert isinstance(step, BuildStep)
        result = StepResult.from_exit(ctx.run_script(step.run, step.shell), "build")
        if result.status != "success" or ctx.scope.cancelled:
            return result
        result.details["artifacts"] = collect_artifacts(ctx, step.artifacts)
        return result
