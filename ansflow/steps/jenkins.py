"""`jenkins`: trigger a job and follow its build, or keep a managed freestyle job for `run`.

The build is followed the way Jenkins' own UI does it: the queue item until it becomes a build,
then the console through progressiveText (streamed into the step's output as it comes), then the
build's result, read only once `building` is false (a Pipeline's `result` is set earlier). A
cancel or timeout stops the build (or cancels the queue item) and waits a little for Jenkins to
say the build ended, so the console's last lines are kept.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ansflow.model import JenkinsStep, Scalar
from ansflow.steps.base import StepContext, StepError, StepResult, StepType, register

if TYPE_CHECKING:
    from ansflow.remote.jenkins import JenkinsClient

#: How long a stopped build gets to report that it ended before ansflow stops waiting for it.
STOP_GRACE_S = 10.0
#: The managed job's wrapper prints the step's outputs between these lines (then ansflow reads
#: them from the console, as it reads $ANSFLOW_OUTPUT locally).
OUTPUTS_BEGIN = "##ansflow-outputs-begin##"
OUTPUTS_END = "##ansflow-outputs-end##"
#: Never passed to a managed job: a local temp path, meaningless on Jenkins.
LOCAL_ONLY = frozenset({"ANSFLOW_OUTPUT"})


def parameter_text(value: Scalar) -> str:
    """A parameter as Jenkins receives it: text, booleans as YAML writes them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def managed_script(run: str) -> str:
    """The managed job's shell step: `run` under bash with pipefail, outputs echoed at exit."""
    return (
        "#!/bin/bash\n"
        "set -eo pipefail\n"
        'ANSFLOW_OUTPUT="$(mktemp)"; export ANSFLOW_OUTPUT\n'
        'trap \'__ansflow_rc=$?; set +x; if [ -s "$ANSFLOW_OUTPUT" ]; then '
        f'echo "{OUTPUTS_BEGIN}"; cat "$ANSFLOW_OUTPUT"; echo; echo "{OUTPUTS_END}"; fi; '
        'rm -f "$ANSFLOW_OUTPUT"; exit $__ansflow_rc\' EXIT\n'
        f"{run}\n"
    )


@dataclass
class _Follow:
    """What following one build learned: for the result and the step's details."""

    job: str
    details: dict[str, Any] = field(default_factory=dict)
    stop_sent: float | None = None
    outputs_text: list[str] = field(default_factory=list)
    in_outputs: bool = False
    aborted_by: str | None = None


@register
class JenkinsStepType(StepType):
    """On a jenkins target: a job with parameters, or a managed job whose build step is `run`."""

    name = "jenkins"
    targets = frozenset({"jenkins"})

    def execute(self, ctx: StepContext) -> StepResult:
        """Prepare the job, trigger it and follow the build; Jenkins errors become one line."""
        from ansflow.remote.jenkins import JenkinsError

        step = ctx.step
        assert isinstance(step, JenkinsStep)
        client: JenkinsClient = ctx.services["jenkins"]
        try:
            if step.job is not None:
                job, parameters = self._existing_job(ctx, client, step, step.job)
            else:
                job, parameters = self._managed_job(ctx, client, step)
            return _follow_build(ctx, client, job, parameters)
        except JenkinsError as exc:
            raise StepError(str(exc)) from None

    def _existing_job(
        self, ctx: StepContext, client: JenkinsClient, step: JenkinsStep, job: str
    ) -> tuple[str, dict[str, str] | None]:
        """Check the job exists and can take the step's parameters, before queueing anything."""
        from ansflow.remote.jenkins import job_parameters

        info = client.job(job)
        if info.get("buildable") is False:
            raise StepError(f"Jenkins {client.url}: job {job!r} is disabled")
        defined = job_parameters(info)
        given = {k: parameter_text(v) for k, v in step.parameters.items()}
        if given and not defined:
            raise StepError(
                f"Jenkins {client.url}: job {job!r} takes no parameters, but the step gives "
                + ", ".join(sorted(given))
            )
        for name in given:
            if name not in defined:
                ctx.log(
                    f"note: job {job!r} defines no parameter {name!r}; Jenkins ignores it "
                    f"(defined: {', '.join(defined)})"
                )
        return job, (given if defined else None)

    def _managed_job(
        self, ctx: StepContext, client: JenkinsClient, step: JenkinsStep
    ) -> tuple[str, dict[str, str]]:
        """Create or update `ansflow-<pipeline>-<step>`; its parameters carry the step's env."""
        from ansflow.remote.jenkins import ParameterSpec, freestyle_config, managed_job_name

        assert step.run is not None
        job = managed_job_name(client.job_prefix, ctx.pipeline, ctx.step_id)
        values: dict[str, str] = {}
        for key, value in ctx.env.items():
            # NOTE: locally ctx.env starts from os.environ; only what ansflow adds (pipeline and
            # step env, secrets, ANSFLOW_*) belongs on Jenkins, not this machine's PATH or HOME.
            if key in LOCAL_ONLY:
                continue
            if (
                key in step.env
                or key in client.secret_names
                or key.startswith("ANSFLOW")
                or os.environ.get(key) != value
            ):
                values[key] = value
        values.update({k: parameter_text(v) for k, v in step.parameters.items()})
        specs = [
            ParameterSpec(
                name,
                "password"
                if name in client.secret_names
                else ("text" if "\n" in values[name] else "string"),
                description="a secret of the pipeline" if name in client.secret_names else "",
            )
            for name in sorted(values)
        ]
        config = freestyle_config(
            f"pipeline {ctx.pipeline}, step {ctx.step_id}", managed_script(step.run), specs
        )
        change = client.ensure_job(job, config)
        if change != "unchanged":
            ctx.log(f"{change} managed job {job!r}: {client.job_url(job)}")
        return job, values


def _follow_build(
    ctx: StepContext, client: JenkinsClient, job: str, parameters: dict[str, str] | None
) -> StepResult:
    """Queue item, build, console until `building` is false, then the result's mapping."""
    from ansflow.remote.jenkins import ConsoleReader, JenkinsError, Patience, poll_delay

    state = _Follow(job)
    scope = ctx.scope

    def wait(seconds: float) -> bool:
        """Between polls; a cancel ends the wait at once, and retries after the stop's grace."""
        if state.stop_sent is None:
            return scope.wait(seconds)
        if time.monotonic() - state.stop_sent > STOP_GRACE_S:
            return True
        time.sleep(seconds)
        return False

    patience = Patience(
        client.window, wait, ctx.log, giving_up="gave up following the build (it may still run)"
    )
    if scope.cancelled:
        # NOTE: stopped while the job was being prepared: do not start a build just to stop it.
        return StepResult("cancelled", error="cancelled before the build was queued")
    item = client.trigger(job, parameters)
    state.details.update({"job": job, "queue_item": item})
    number = _wait_in_queue(ctx, client, state, patience, item)
    if number is None:
        return StepResult(
            "cancelled",
            error=state.details.pop("error", None)
            or "cancelled while waiting in the Jenkins queue",
            details=state.details,
        )
    url = client.build_url(job, number)
    state.details.update({"url": url, "build": number})
    ctx.log(f"build #{number} started: {url}")
    reader = ConsoleReader(client, job, number)
    idle = 0
    info: dict[str, Any] = {}
    try:
        while True:
            if scope.cancelled and state.stop_sent is None:
                _stop(ctx, client, state, number, reason=scope.reason or "cancel")
            lines = patience.call(reader.read)
            for line in lines:
                _console_line(ctx, state, line)
            if not reader.more:
                info = patience.call(lambda: client.build(job, number))
                if not info.get("building"):
                    break
            if state.stop_sent is not None and time.monotonic() - state.stop_sent > STOP_GRACE_S:
                ctx.log(f"build #{number} did not end within {STOP_GRACE_S:g} s of the stop")
                return StepResult("cancelled", error="stopped", details=state.details)
            idle = 0 if lines else idle + 1
            wait(poll_delay(idle))
    except JenkinsError as exc:
        if state.stop_sent is not None:
            return StepResult("cancelled", error=str(exc), details=state.details)
        raise StepError(str(exc)) from None
    return _result(ctx, client, state, number, info)


def _wait_in_queue(
    ctx: StepContext,
    client: JenkinsClient,
    state: _Follow,
    patience: Any,
    item: int,
) -> int | None:
    """The build number once the queue item has started; None when it was cancelled."""
    from ansflow.remote.jenkins import JenkinsError, poll_delay, queue_reason

    job = state.job
    ctx.log(f"queued job {job!r} as queue item {item}: {client.url}queue/item/{item}/")
    last_why: str | None = None
    idle = 0
    while True:
        if ctx.scope.cancelled:
            try:
                client.cancel_queue(item, job)
                data = client.queue_item(item, job)
            except JenkinsError as exc:
                ctx.log(f"could not cancel queue item {item}: {exc}")
                return None
            started = (data.get("executable") or {}).get("number")
            if started is None:
                ctx.log(f"cancelled queue item {item}")
                return None
            # NOTE: the item left the queue between our look and the cancel: stop its build.
            state.details.update({"url": client.build_url(job, started), "build": started})
            _stop(ctx, client, state, started, reason=ctx.scope.reason or "cancel")
            return int(started)
        data = patience.call(lambda: client.queue_item(item, job))
        if data.get("cancelled"):
            state.details["error"] = (
                f"Jenkins {client.url}: job {job!r}: queue item {item} was cancelled on "
                "Jenkins before the build started"
            )
            return None
        started = (data.get("executable") or {}).get("number")
        if started is not None:
            return int(started)
        why = data.get("why")
        if isinstance(why, str) and queue_reason(why) != last_why:
            ctx.log(f"waiting in the Jenkins queue: {why}")
            last_why = queue_reason(why)
            idle = 0
        ctx.scope.wait(poll_delay(idle))
        idle += 1


def _stop(
    ctx: StepContext, client: JenkinsClient, state: _Follow, number: int, reason: str
) -> None:
    """Press the build's stop button once; following goes on so its last lines are kept."""
    from ansflow.remote.jenkins import JenkinsError

    state.stop_sent = time.monotonic()
    why = "the step timed out" if reason == "timeout" else "the step was cancelled"
    try:
        client.stop(state.job, number)
        ctx.log(f"stopped build #{number} ({why})")
    except JenkinsError as exc:
        ctx.log(f"could not stop build #{number}: {exc}")


def _console_line(ctx: StepContext, state: _Follow, line: str) -> None:
    """Show a console line, keeping the managed job's outputs block out of the way."""
    if line == OUTPUTS_BEGIN:
        state.in_outputs = True
        return
    if state.in_outputs:
        if line == OUTPUTS_END:
            state.in_outputs = False
        else:
            state.outputs_text.append(line)
        return
    if line.startswith("Aborted by "):
        state.aborted_by = line[len("Aborted by ") :].strip()
    ctx.emit("stdout", line)


def _result(
    ctx: StepContext, client: JenkinsClient, state: _Follow, number: int, info: dict[str, Any]
) -> StepResult:
    """SPEC section 7's mapping of Jenkins results onto step states."""
    from ansflow.executor import parse_outputs

    result = info.get("result")
    state.details["result"] = result
    outputs = parse_outputs("\n".join(state.outputs_text).encode()) if state.outputs_text else {}
    step = ctx.step
    name = f"job {state.job!r} build #{number}"
    url = state.details.get("url", "")
    make: Callable[..., StepResult] = lambda status, error=None: StepResult(  # noqa: E731
        status, error=error, details=state.details, outputs=outputs
    )
    if result == "SUCCESS":
        return make("success")
    if result == "UNSTABLE":
        if step.continue_on_error:
            ctx.log(f"{name} is UNSTABLE; continue_on_error makes that a success")
            return make("success")
        return make("failed", f"Jenkins {name} is UNSTABLE: {url}")
    if result == "FAILURE":
        return make("failed", f"Jenkins {name} failed: {url}")
    if result == "ABORTED":
        if state.stop_sent is not None:
            return make("cancelled", f"Jenkins {name} was stopped: {url}")
        who = f" by {state.aborted_by}" if state.aborted_by else ""
        return make("cancelled", f"Jenkins {name} was aborted on Jenkins{who}: {url}")
    if result == "NOT_BUILT":
        return make("skipped", f"Jenkins did not build {name} (NOT_BUILT): {url}")
    return make("failed", f"Jenkins {name} ended with result {result!r}: {url}")
