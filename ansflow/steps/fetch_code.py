"""`fetch_code`: git clone (or fetch into an existing clone), then check out `ref`.

Git runs where the step runs (locally or on the SSH host) with an argument list; prompts are
disabled so a private repository without credentials fails instead of hanging.
"""

from __future__ import annotations

import glob
import posixpath
import re

from ansflow.model import FetchCodeStep
from ansflow.remote.base import Command
from ansflow.steps.base import StepContext, StepError, StepResult, StepType, register

#: An abbreviated commit id: git cannot fetch one by name, so all branches and tags are fetched.
_SHORT_SHA = re.compile(r"^[0-9a-fA-F]{4,39}$")


def default_dest(repo: str) -> str:
    """`https://x/shop.git` -> `shop`, as `git clone` names the folder."""
    tail = re.split(r"[/:]", repo.rstrip("/"))[-1]
    return tail.removesuffix(".git") or "repo"


def is_local_path(repo: str) -> bool:
    """True for `../shop` or `/srv/shop.git`; False for URLs and scp-like `host:path`."""
    if "://" in repo:
        return False
    colon = repo.find(":")
    slash = repo.find("/")
    return colon == -1 or (slash != -1 and slash < colon)


def _git(ctx: StepContext, args: list[str]) -> tuple[int, str]:
    """Run git where the step runs, streaming its output; (exit status, git's last complaint)."""
    complaints: list[str] = []

    def sink(stream: str, text: str) -> None:
        if stream == "stderr" and text.startswith(("fatal:", "error:")):
            complaints.append(text)
        ctx.emit(stream, text)

    command = Command(argv=["git", *args], env=ctx.env, workdir=ctx.workdir)
    code = ctx.runner.run(command, sink, ctx.scope)
    return code, complaints[-1] if complaints else f"exit {code}"


@register
class FetchCode(StepType):
    """Clones or updates `dest`, checks out `ref`, and records the commit as output `commit`."""

    name = "fetch_code"

    def _absolute_repo(self, ctx: StepContext, repo: str) -> str:
        """A relative local path made absolute, so `git -C dest fetch` finds the same repository.

        `git clone ../shop` stores an absolute origin, but `git remote set-url origin ../shop`
        would store the relative text, which git then resolves from inside `dest`.
        """
        if not is_local_path(repo) or repo.startswith(("/", "~")):
            return repo
        base = ctx.workdir
        if base is None:
            code, lines = ctx.capture(["pwd"])
            if code != 0 or not lines:
                return repo
            base = lines[0].strip()
        return posixpath.normpath(posixpath.join(base, repo))

    def execute(self, ctx: StepContext) -> StepResult:
        step = ctx.step
        assert isinstance(step, FetchCodeStep)
        ctx.env.setdefault("GIT_TERMINAL_PROMPT", "0")
        repo = self._absolute_repo(ctx, step.repo)
        dest = step.dest or default_dest(step.repo)
        depth = ["--depth", str(step.depth)] if step.depth else []
        git_dir = posixpath.join(glob.escape(dest), ".git")
        existing = bool(ctx.runner.glob(git_dir, ctx.workdir))
        if not existing:
            ctx.log(f"cloning {step.repo} into {dest}")
            code, why = _git(ctx, ["clone", "--no-checkout", *depth, "--", repo, dest])
            if code != 0:
                raise StepError(f"git clone of {step.repo} failed: {why}")
        else:
            ctx.log(f"updating the clone in {dest}")
            code, why = _git(ctx, ["-C", dest, "remote", "set-url", "origin", repo])
            if code != 0:
                raise StepError(f"{dest} is not a usable git clone: {why}")
        ref = step.ref or "HEAD"
        target = "FETCH_HEAD"
        code, why = _git(ctx, ["-C", dest, "fetch", *depth, "--tags", "--force", "origin", ref])
        if code != 0 and _SHORT_SHA.match(ref):
            # NOTE: servers only hand out named refs or full ids; an abbreviated id is looked up
            # among everything the branches and tags reach.
            ctx.log(f"{ref} is no branch or tag; fetching all branches to look for that commit")
            code, why = _git(
                ctx,
                [
                    "-C",
                    dest,
                    "fetch",
                    "--tags",
                    "--force",
                    "origin",
                    "+refs/heads/*:refs/remotes/origin/*",
                ],
            )
            if code == 0:
                found, lines = ctx.capture(
                    ["git", "-C", dest, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"]
                )
                if found == 0 and lines:
                    target = lines[0].strip()
                else:
                    code, why = 1, f"no commit {ref} in any branch or tag"
        if code != 0:
            raise StepError(f"git fetch of {ref!r} from {step.repo} failed: {why}")
        code, why = _git(ctx, ["-C", dest, "checkout", "--force", "--detach", target])
        if code != 0:
            raise StepError(f"git checkout of {ref!r} failed: {why}")
        if step.submodules:
            code, why = _git(
                ctx, ["-C", dest, "submodule", "update", "--init", "--recursive", "--force", *depth]
            )
            if code != 0:
                raise StepError(f"git submodule update in {dest} failed: {why}")
        code, lines = ctx.capture(["git", "-C", dest, "rev-parse", "HEAD"])
        commit = lines[0].strip() if code == 0 and lines else ""
        if not commit:
            raise StepError(f"cannot read the checked-out commit in {dest}")
        ctx.log(f"checked out {ref} at {commit}")
        return StepResult(
            "success",
            0,
            details={"repo": step.repo, "ref": ref, "dest": dest, "commit": commit},
            outputs={"commit": commit, "dest": dest},
        )
