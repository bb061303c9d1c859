"""`shell` (alias `custom`): a script run by `bash -e -o pipefail`, `sh -e`, or any interpreter."""

from __future__ import annotations

from ansflow.model import ShellStep
from ansflow.steps.base import StepContext, StepResult, StepType, register


@register
class Shell(StepType):
    """Runs `run`; its exit status decides the step."""

    name = "shell"

    def execute(self, ctx: StepContext) -> StepResult:
        step = ctx.step
        assert isinstance(step, ShellStep)
        return StepResult.from_exit(ctx.run_script(step.run, step.shell), "script")
