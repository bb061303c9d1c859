"""`approval`: a manual gate. The executor decides it (flag, prompt or `ansflow approve`)."""

from __future__ import annotations

from ansflow.steps.base import StepContext, StepResult, StepType, register


@register
class Approval(StepType):
    """Marker type: gates never reach a worker, so `execute` is not used."""

    name = "approval"
    targets = frozenset({"local"})
    is_gate = True

    def execute(self, ctx: StepContext) -> StepResult:
        raise NotImplementedError("approval gates are decided by the executor")
