"""`deploy`: upload `files` (SFTP on SSH hosts, a copy locally), then run `run`.

Sources are on the machine running ansflow, relative to the pipeline file's folder; a `dest`
ending in `/` is a folder (created when missing) that receives each file under its own name.
"""

from __future__ import annotations

import glob
import posixpath
from pathlib import Path

from ansflow.model import DeployStep
from ansflow.remote.local import absolute_pattern
from ansflow.steps.base import StepContext, StepError, StepResult, StepType, register


def _sources(ctx: StepContext, pattern: str) -> list[Path]:
    base = ctx.pipeline_dir if ctx.runner.host is not None or not ctx.workdir else Path(ctx.workdir)
    full = absolute_pattern(pattern, str(base))
    matches = sorted(Path(p) for p in glob.glob(full, recursive=True) if Path(p).is_file())
    if not matches:
        raise StepError(f"deploy source {pattern!r} matched no file (looked in {base})")
    return matches


def _remote_path(ctx: StepContext, dest: str) -> str:
    if ctx.runner.host is None:
        path = Path(dest).expanduser()
        if not path.is_absolute() and ctx.workdir:
            path = Path(ctx.workdir) / path
        return str(path) + ("/" if dest.endswith("/") else "")
    if not posixpath.isabs(dest) and ctx.workdir:
        return posixpath.join(ctx.workdir, dest)
    return dest


@register
class Deploy(StepType):
    """Uploads every file, then runs the install command."""

    name = "deploy"

    def execute(self, ctx: StepContext) -> StepResult:
        step = ctx.step
        assert isinstance(step, DeployStep)
        uploaded: list[dict[str, object]] = []
        for spec in step.files:
            sources = _sources(ctx, spec.src)
            dest = _remote_path(ctx, spec.dest)
            # NOTE: as with cp and Ansible's copy, an existing folder receives the files too.
            is_folder = spec.dest.endswith("/") or bool(
                ctx.runner.glob(glob.escape(dest.rstrip("/")) + "/", ctx.workdir)
            )
            if len(sources) > 1 and not is_folder:
                raise StepError(
                    f"{spec.src!r} matched {len(sources)} files; end `dest` with / to upload them "
                    "into a folder"
                )
            mode = int(spec.mode, 8) if spec.mode else None
            for source in sources:
                if ctx.scope.cancelled:
                    return StepResult("failed", None, "cancelled during upload")
                target = posixpath.join(dest, source.name) if is_folder else dest
                ctx.runner.put(source, target, mode)
                size = source.stat().st_size
                where = f" on {ctx.host}" if ctx.host else ""
                ctx.log(f"uploaded {source} -> {target}{where} ({size} bytes)")
                uploaded.append({"src": str(source), "dest": target, "size": size})
        details = {"files": uploaded}
        if step.run is None:
            return StepResult("success", None, details=details)
        result = StepResult.from_exit(ctx.run_script(step.run, step.shell), "deploy command")
        result.details.update(details)
        return result
