"""`ansflow run FILE --remote TARGET`: the whole pipeline as one Jenkins Pipeline job.

The plan becomes a Jenkinsfile (ansflow/export/jenkinsfile.py), kept as one Pipeline job whose
config.xml holds it inline; each build is followed through the Pipeline REST API
(`wfapi/describe`), and every stage's own status, start and duration become its step's state, so
what `ansflow show` says is what Jenkins did, stage by stage, not the build's overall result.

This is the feature the project was born from: its first version left steps `pending` whenever
Jenkins skipped, aborted or lost them. Two rules keep that from happening again:

* a stage that wfapi lists as SUCCESS may not have run at all: declarative Jenkins gives stages
  it skipped (after a failure, or for a false `when`) a node that only prints `Stage "x" skipped
  due to ...`. The console, and the stage node's own log, tell them apart;
* whatever happens (a failure, an abort, Jenkins gone for good, SIGINT twice, a bug here), every
  unit of the run is given an end state before the run is closed.

Console lines are attributed to stages by their `[Pipeline] { (name)` markers and the `[branch] `
prefix Jenkins puts on the lines of parallel branches; lines outside any step's stage go to the
step that printed last (they are still stored, so `ansflow logs RUN` shows the whole console).
"""

from __future__ import annotations

import re
import signal
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ansflow.errors import EXIT_BAD_INPUT, EXIT_CANCELLED, EXIT_FAILED, EXIT_OK, AnsflowError
from ansflow.events import (
    END_STATES,
    RunFinished,
    RunStarted,
    StepFinished,
    StepOutput,
    StepStarted,
)
from ansflow.executor import Outcome, Setup

if TYPE_CHECKING:
    from ansflow.export.jenkinsfile import Translation
    from ansflow.planner import StepNode
    from ansflow.remote.jenkins import JenkinsClient, Patience
    from ansflow.session import Prepared

#: How long a stopped build gets to end (and print its last lines) before ansflow gives up on it.
STOP_GRACE_S = 15.0
#: Granularity of waits, so a signal is acted on quickly.
TICK_S = 0.05
SKIP_LINE = re.compile(
    r'^Stage "(?P<name>.*)" skipped due to (?P<why>earlier failure\(s\)|when conditional)\s*$'
)
TIMEOUT_LINE = "Timeout has been exceeded"
RUNNING = frozenset({"IN_PROGRESS", "PAUSED_PENDING_INPUT", "QUEUED"})
BAD = frozenset({"failed", "timed_out"})


class RemoteRefused(AnsflowError):
    """The pipeline holds steps Jenkins cannot run; nothing was started on Jenkins."""

    exit_code = EXIT_BAD_INPUT


class RemoteNotStarted(AnsflowError):
    """Jenkins could not be asked to run the pipeline (unreachable, refused, job trouble)."""

    exit_code = EXIT_FAILED


def preflight(prepared: Prepared) -> None:
    """Refuse a pipeline Jenkins cannot run before the run is recorded (exit 2, nothing stored)."""
    from ansflow.export.jenkinsfile import translate

    plan = prepared.plan
    options = prepared.options
    selected = {n.id for n in plan.nodes}
    if options.only:
        selected = {i for name in options.only for i in plan.resolve(name)}
    elif options.from_step:
        ids = plan.resolve(options.from_step)
        first = min(plan.by_id[i].entry for i in ids)
        selected = {n.id for n in plan.nodes if n.entry > first or n.id in ids}
    translation = translate(plan, variables=prepared.variables, remote=True, include=selected)
    fatal = [p.text() for p in translation.fatal]
    hosted = sorted({u.step for u in prepared.units if u.host and u.step in selected})
    if hosted:
        fatal.append(f"steps on SSH hosts cannot run in Jenkins: {', '.join(hosted)}")
    if fatal:
        raise RemoteRefused(
            f"--remote {options.remote}: {plan.file} cannot run as one Jenkins Pipeline:\n  "
            + "\n  ".join(fatal)
        )


def run_remote(prepared: Prepared, setup: Setup) -> Outcome:
    """Run the pipeline as one Jenkins Pipeline build; every unit ends in an end state."""
    remote = RemoteRun(prepared, setup)
    try:
        return remote.run()
    finally:
        renderer = getattr(setup.sink, "renderer", None)
        if renderer is not None:
            renderer.close()
        prepared.places.close()


@dataclass
class _Unit:
    """A step instance as this run sees it (remote mode has no hosts, but the store may)."""

    step: str
    host: str
    status: str
    attempts: int
    node: StepNode | None


def _ts(millis: Any) -> datetime | None:
    """Jenkins' epoch milliseconds as a UTC time, exactly (no float rounding of the millis)."""
    if not isinstance(millis, int | float) or millis <= 0:
        return None
    whole = int(millis)
    return datetime.fromtimestamp(whole // 1000, UTC).replace(microsecond=(whole % 1000) * 1000)


class _Router:
    """Attributes console lines to step instances by stage markers and branch prefixes."""

    def __init__(self, stages: Mapping[str, str], default: str) -> None:
        self.stages = stages
        self.default = default
        self.blocks: list[str | None] = []
        self.branch_blocks: dict[str, list[str | None]] = {}
        self.branches: set[str] = set()
        self.last: str | None = None
        #: Stage name -> why Jenkins skipped it, as the console says.
        self.skips: dict[str, str] = {}
        #: Step instances whose stage printed Jenkins' timeout message.
        self.timed_out: set[str] = set()

    def _split(self, line: str) -> tuple[str | None, str]:
        """(branch, rest) when the line carries an open parallel branch's `[name] ` prefix."""
        if line.startswith("[") and self.branches:
            for name in sorted(self.branches, key=len, reverse=True):
                tag = f"[{name}] "
                if line.startswith(tag):
                    return name, line[len(tag) :]
        return None, line

    def _current(self, branch: str | None) -> str | None:
        """The innermost open stage that is a step (wrappers are not), in the branch if any."""
        if branch is not None:
            for name in reversed(self.branch_blocks.get(branch, [])):
                if name is not None and name in self.stages:
                    return self.stages[name]
            return self.stages.get(branch)
        for name in reversed(self.blocks):
            if name is None or name.startswith("Branch: "):
                continue
            return self.stages.get(name)
        return None

    def _marker(self, branch: str | None, body: str) -> None:
        """Track `{ (name)` / `{` / `}` blocks, as Jenkins nests them in the console."""
        stack = self.blocks if branch is None else self.branch_blocks.setdefault(branch, [])
        if body.startswith("{ (") and body.endswith(")"):
            name = body[3:-1]
            if branch is None and name.startswith("Branch: "):
                self.branches.add(name[len("Branch: ") :])
            stack.append(name)
        elif body == "{":
            stack.append(None)
        elif body == "}" and stack:
            popped = stack.pop()
            if branch is None and popped is not None and popped.startswith("Branch: "):
                self.branches.discard(popped[len("Branch: ") :])

    def route(self, line: str) -> tuple[str | None, str]:
        """(step instance or None when outside every step's stage, stream) for a console line."""
        branch, rest = self._split(line)
        stream = "stdout"
        node: str | None
        if rest.startswith("[Pipeline] "):
            stream = "jenkins"
            body = rest[len("[Pipeline] ") :]
            if branch is None:
                inner, text = self._split(body)
                if inner is not None:
                    branch, body = inner, text
            opening = body.startswith("{")
            node = None if opening else self._current(branch)
            self._marker(branch, body)
            if opening:
                node = self._current(branch)
        else:
            node = self._current(branch)
            skipped = SKIP_LINE.match(rest)
            if skipped:
                self.skips[skipped.group("name")] = skipped.group("why")
            if rest.strip() == TIMEOUT_LINE and node is not None:
                self.timed_out.add(node)
        if node is not None:
            self.last = node
        return node, stream


class RemoteRun:
    """One remote run: translate, keep the job, trigger, follow, and close every unit."""

    def __init__(self, prepared: Prepared, setup: Setup) -> None:
        self.prepared = prepared
        self.setup = setup
        self.plan = prepared.plan
        self.run_id = setup.run_id
        self.target = prepared.options.remote or ""
        self.started = time.monotonic()
        self.units: dict[tuple[str, str], _Unit] = {}
        for row in prepared.units:
            key = (row.step, row.host)
            kept = key in setup.kept
            self.units[key] = _Unit(
                row.step,
                row.host,
                "success" if kept else "pending",
                setup.previous_attempts.get(key, 0),
                self.plan.by_id.get(row.step),
            )
        self.client: JenkinsClient | None = None
        self.translation: Translation | None = None
        self.job = ""
        self.build_url = ""
        self.number: int | None = None
        self.result: str | None = None
        self.default_step = self.plan.nodes[0].id if self.plan.nodes else ""
        self.router: _Router | None = None
        self.skip_reasons: dict[str, str | None] = {}
        self.logs: list[StepOutput] = []
        self.held: list[str] = []
        # signals and stopping
        self.signals = 0
        self.signals_seen = 0
        self.cancelling = False
        self.forced = False
        self.stop_sent: float | None = None
        self.lost: str | None = None
        self._previous: dict[int, Any] = {}

    # --- events ---------------------------------------------------------------------------------

    def _flush(self) -> None:
        """Store and show buffered lines, always before a state change that follows them."""
        if self.logs:
            batch, self.logs = self.logs, []
            self.setup.sink.emit_logs(batch)

    def _note(self, text: str, step: str | None = None) -> None:
        """A line from ansflow itself, stored and shown with a step (the first one by default)."""
        target = step or self.default_step
        if not target:
            return
        self.logs.append(StepOutput(self.run_id, step=target, host="", stream="ansflow", text=text))
        self._flush()

    def _start(self, unit: _Unit, ts: datetime | None) -> None:
        """The step started when its stage did, by Jenkins' clock."""
        self._flush()
        unit.status = "running"
        unit.attempts += 1
        event = StepStarted(self.run_id, step=unit.step, host=unit.host, attempt=unit.attempts)
        self.setup.sink.emit(_at(event, ts))

    def _finish(
        self,
        unit: _Unit,
        status: str,
        error: str | None = None,
        ts: datetime | None = None,
        duration: float | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """An end state for a unit, stamped with Jenkins' end time when there is one."""
        self._flush()
        unit.status = status
        event = StepFinished(
            self.run_id,
            step=unit.step,
            host=unit.host,
            status=status,
            attempt=unit.attempts,
            error=error,
            duration=duration,
            details=details or ({"url": self.build_url} if self.build_url else {}),
        )
        self.setup.sink.emit(_at(event, ts))

    # --- the run --------------------------------------------------------------------------------

    def run(self) -> Outcome:
        """The whole run; whatever goes wrong, every unit gets an end state first."""
        self.setup.sink.emit(
            RunStarted(
                self.run_id,
                pipeline=self.plan.name,
                file=self.plan.file,
                steps=tuple(n.id for n in self.plan.nodes),
                resumed=self.setup.resumed,
                units=tuple((u.step, u.host, u.status) for u in self.units.values()),
            )
        )
        self._install_signals()
        try:
            self._run()
        except RemoteRefused as exc:
            self._close_all("skipped", f"not run: {exc}")
            self._finish_run(forced_code=EXIT_BAD_INPUT)
            raise
        except RemoteNotStarted as exc:
            self._close_all("skipped", f"not run: {exc}")
            self._finish_run(forced_code=EXIT_FAILED)
            raise
        except BaseException as exc:
            # NOTE: the invariant of SPEC section 3 holds even when this module has a bug.
            from ansflow.errors import StorageError

            if not isinstance(exc, StorageError):
                try:
                    self._close_all("failed", f"internal error in remote mode: {exc!r}")
                    self._finish_run()
                except Exception:
                    pass
            raise
        finally:
            self._restore_signals()
        return self._finish_run()

    def _run(self) -> None:
        """Translate, keep the job, trigger and follow; a Jenkins failure closes what is open."""
        from ansflow.remote.jenkins import JenkinsError

        include = self._deselect()
        if not include:
            return
        self.translation = self._translate(include)
        try:
            self.client = self.prepared.places.jenkins(self.target)
            number = self._trigger()
            if number is None:
                return
            self.number = number
            self._follow(number)
        except JenkinsError as exc:
            if self.number is None and not self.cancelling:
                raise RemoteNotStarted(str(exc)) from None
            self._lose(str(exc))

    def _deselect(self) -> set[str]:
        """Instances to send to Jenkins: not kept from an earlier attempt, and selected."""
        options = self.prepared.options
        chosen: set[str] | None = None
        reason = ""
        if options.only:
            chosen = set()
            for name in options.only:
                chosen.update(self.plan.resolve(name))
            reason = "not selected (--only " + ",".join(options.only) + ")"
        elif options.from_step:
            ids = self.plan.resolve(options.from_step)
            entry = min(self.plan.by_id[i].entry for i in ids)
            chosen = {n.id for n in self.plan.nodes if n.entry > entry or n.id in ids}
            reason = f"not selected (--from {options.from_step})"
        include: set[str] = set()
        for unit in self.units.values():
            if unit.status in END_STATES:
                continue
            if chosen is not None and unit.step not in chosen:
                self._finish(unit, "skipped", reason)
                continue
            include.add(unit.step)
        first = next((n.id for n in self.plan.nodes if n.id in include), None)
        if first is not None:
            self.default_step = first
        return include

    def _translate(self, include: set[str]) -> Translation:
        """The Jenkinsfile; steps Jenkins cannot run refuse the whole run before it starts."""
        from ansflow.export.jenkinsfile import translate

        translation = translate(
            self.plan,
            variables=self.setup.variables,
            remote=True,
            run_id=self.run_id,
            include=include,
            fail_fast=self.prepared.options.fail_fast,
        )
        hosted = sorted({u.step for u in self.units.values() if u.host and u.step in include})
        fatal = [p.text() for p in translation.fatal]
        if hosted:
            fatal.append(f"steps on SSH hosts cannot run in Jenkins: {', '.join(hosted)}")
        if fatal:
            raise RemoteRefused(
                f"--remote {self.target}: {self.plan.file} cannot run as one Jenkins Pipeline:\n  "
                + "\n  ".join(fatal)
            )
        for problem in translation.problems:
            step = problem.step if problem.step in include else None
            self._note(f"note: in Jenkins, {problem.text()}", step)
        self.router = _Router(translation.stages, self.default_step)
        return translation

    # --- Jenkins --------------------------------------------------------------------------------

    def _patience(self) -> Patience:
        """Retries while Jenkins is away; a second signal or the stop's grace ends them."""
        from ansflow.remote.jenkins import Patience

        assert self.client is not None
        return Patience(
            self.client.window,
            self._wait_retry,
            self._note,
            giving_up="gave up following the build (it may still run)",
        )

    def _trigger(self) -> int | None:
        """Create or update the Pipeline job, queue a build with the secrets as parameters."""
        from ansflow.remote.jenkins import ParameterSpec, managed_job_name, pipeline_config

        client, translation = self.client, self.translation
        assert client is not None and translation is not None
        self.job = managed_job_name(client.job_prefix, self.plan.name)
        config = pipeline_config(
            f"pipeline {self.plan.name} ({self.plan.file})",
            translation.text,
            [
                ParameterSpec(name, "password", description=f"ansflow secret {name}")
                for name in translation.secrets
            ],
        )
        change = client.ensure_job(self.job, config)
        self._note(f"{change} Pipeline job {self.job!r}: {client.job_url(self.job)}")
        parameters = (
            {name: self.setup.secrets.get(name, "") for name in translation.secrets}
            if translation.secrets
            else None
        )
        item = client.trigger(self.job, parameters)
        self._note(f"queued as item {item}: {client.url}queue/item/{item}/")
        return self._wait_in_queue(item)

    def _wait_in_queue(self, item: int) -> int | None:
        """The build number, or None when the item was cancelled (here or on Jenkins)."""
        from ansflow.remote.jenkins import JenkinsError, poll_delay, queue_reason

        client = self.client
        assert client is not None
        patience = self._patience()
        last_why: str | None = None
        idle = 0
        while True:
            self._check_signals()
            if self.cancelling:
                try:
                    client.cancel_queue(item, self.job)
                    data = client.queue_item(item, self.job)
                except JenkinsError as exc:
                    self._note(f"could not cancel queue item {item}: {exc}")
                    return None
                started = (data.get("executable") or {}).get("number")
                if started is None:
                    self._note(f"cancelled queue item {item}")
                    return None
                self._stop(int(started))
                return int(started)
            data = patience.call(lambda: client.queue_item(item, self.job))
            if data.get("cancelled"):
                message = (
                    f"Jenkins {client.url}: job {self.job!r}: queue item {item} was cancelled "
                    "on Jenkins before the build started"
                )
                self._note(message)
                self._close_all("cancelled", message)
                return None
            started = (data.get("executable") or {}).get("number")
            if started is not None:
                return int(started)
            why = data.get("why")
            if isinstance(why, str) and queue_reason(why) != last_why:
                self._note(f"waiting in the Jenkins queue: {why}")
                last_why, idle = queue_reason(why), 0
            self._sleep(poll_delay(idle))
            idle += 1

    def _stop(self, number: int) -> None:
        """Press the build's stop button once; following goes on until the build ends."""
        from ansflow.remote.jenkins import JenkinsError

        assert self.client is not None
        self.stop_sent = time.monotonic()
        try:
            self.client.stop(self.job, number)
            self._note(f"stopped build #{number} (the run was cancelled)")
        except JenkinsError as exc:
            self._note(f"could not stop build #{number}: {exc}")

    def _follow(self, number: int) -> None:
        """Stages and console until the build is no longer building."""
        from ansflow.remote.jenkins import ConsoleReader, poll_delay

        client = self.client
        assert client is not None
        self.build_url = client.build_url(self.job, number)
        self._note(f"build #{number} started: {self.build_url}")
        reader = ConsoleReader(client, self.job, number)
        patience = self._patience()
        idle = 0
        while True:
            self._check_signals()
            if self.forced:
                self._note("second interrupt: no longer waiting for the build")
                return
            if self.cancelling and self.stop_sent is None:
                self._stop(number)
            if self.stop_sent is not None and time.monotonic() - self.stop_sent > STOP_GRACE_S:
                self._note(f"build #{number} did not end within {STOP_GRACE_S:g} s of the stop")
                return
            describe = patience.call(lambda: client.describe(self.job, number))
            lines = patience.call(reader.read)
            self._stages(describe, finish=False)
            self._console(lines)
            self._stages(describe, finish=True)
            if not reader.more:
                info = patience.call(lambda: client.build(self.job, number))
                if not info.get("building"):
                    describe = patience.call(lambda: client.describe(self.job, number))
                    self._release_held()
                    self._stages(describe, finish=True)
                    self.result = info.get("result")
                    self._note(f"build #{number} ended: {self.result}")
                    return
            changed = bool(lines)
            idle = 0 if changed else idle + 1
            self._sleep(poll_delay(idle))

    def _console(self, lines: list[str]) -> None:
        """Store and show console lines, each with the step whose stage printed it."""
        router = self.router
        assert router is not None
        for line in lines:
            step, stream = router.route(line)
            if step is None and stream == "jenkins":
                # NOTE: `[Pipeline] stage` and friends between stages belong to the stage they
                # open, which the next lines tell; output lines are never held back.
                self.held.append(line)
                continue
            self._log_line(step or router.last or router.default, stream, line)
        self._flush()

    def _log_line(self, step: str, stream: str, line: str) -> None:
        """Buffer a line (and the marker lines held for it) for `step`."""
        unit = self.units.get((step, ""))
        attempt = max(1, unit.attempts) if unit is not None else 1
        held, self.held = self.held, []
        for text in [*held, line]:
            self.logs.append(
                StepOutput(
                    self.run_id,
                    step=step,
                    host="",
                    stream="jenkins" if text is not line else stream,
                    text=text,
                    attempt=attempt,
                )
            )

    def _release_held(self) -> None:
        """Lines after the last stage (`End of Pipeline`, `Finished: ...`) go to the last step."""
        if self.held and self.router is not None:
            last = self.held.pop()
            self._log_line(self.router.last or self.router.default, "jenkins", last)
            self._flush()

    def _stages(self, describe: Mapping[str, Any], finish: bool) -> None:
        """Apply wfapi's stages: starts (before this round's lines), ends (after them)."""
        translation = self.translation
        assert translation is not None
        for stage in describe.get("stages") or []:
            if not isinstance(stage, dict):
                continue
            step = translation.stages.get(str(stage.get("name")))
            unit = self.units.get((step, "")) if step is not None else None
            if unit is None or unit.status in END_STATES:
                continue
            status = str(stage.get("status") or "")
            start = _ts(stage.get("startTimeMillis"))
            if status in RUNNING:
                if unit.status == "pending":
                    self._start(unit, start)
                continue
            if self._skip_reason(stage) is not None:
                # NOTE: a stage Jenkins skipped never ran: no start, so no start time.
                if finish:
                    outcome, error = self._decide(stage, step or "")
                    self._finish(unit, outcome, error, ts=_end(stage))
                continue
            if unit.status == "pending":
                self._start(unit, start)
            if finish:
                # NOTE: decided after this round's console lines, which may say "timed out".
                outcome, error = self._decide(stage, step or "")
                millis = stage.get("durationMillis")
                duration = millis / 1000.0 if isinstance(millis, int | float) else None
                details = {"url": self.build_url, "stage": str(stage.get("id", ""))}
                self._finish(
                    unit, outcome, error, ts=_end(stage), duration=duration, details=details
                )

    def _skip_reason(self, stage: Mapping[str, Any]) -> str | None:
        """Why Jenkins skipped a finished stage, or None when it ran (cached per stage).

        NOTE: wfapi lists a declarative stage skipped after a failure as SUCCESS (and one skipped
        by `when` as SUCCESS or SKIPPED, by plugin version); only the console or the stage node's
        own log says so. The node is asked only when the console has not told us yet.
        """
        assert self.router is not None and self.client is not None
        stage_id = str(stage.get("id", ""))
        if stage_id in self.skip_reasons:
            return self.skip_reasons[stage_id]
        status = str(stage.get("status") or "")
        name = str(stage.get("name"))
        why = self.router.skips.get(name)
        if why is None and status == "SUCCESS":
            client, number = self.client, self.number or 0
            log = self._patience().call(lambda: client.node_log(self.job, number, stage_id))
            for line in log.splitlines():
                skipped = SKIP_LINE.match(line.strip())
                if skipped and skipped.group("name") == name:
                    why = skipped.group("why")
        if status in ("NOT_EXECUTED", "SKIPPED") and why is None:
            why = "when conditional" if status == "SKIPPED" else "not executed"
        self.skip_reasons[stage_id] = why
        return why

    def _decide(self, stage: Mapping[str, Any], step: str) -> tuple[str, str | None]:
        """A finished stage's status and error in ansflow's terms."""
        assert self.router is not None and self.translation is not None
        status = str(stage.get("status") or "")
        why = self._skip_reason(stage)
        if why is not None:
            if why.startswith("earlier") and self.cancelling:
                return "cancelled", "not run: the run was cancelled"
            text = {
                "when conditional": "skipped by Jenkins: its `when` condition is false",
                "earlier failure(s)": "skipped by Jenkins after an earlier failure or abort",
            }.get(why, f"Jenkins did not run this stage ({why})")
            return "skipped", text
        node = self.plan.by_id.get(step)
        error = stage.get("error") if isinstance(stage.get("error"), dict) else None
        message = str(error.get("message") or "") if error else ""
        if status == "SUCCESS":
            return "success", None
        if status == "UNSTABLE":
            if node is not None and node.step.continue_on_error:
                return "success", None
            return "failed", "Jenkins marked the stage UNSTABLE"
        if status == "FAILED":
            return "failed", "stage failed" + (f": {message}" if message else "")
        if status == "ABORTED":
            if step in self.router.timed_out and step in self.translation.timeouts:
                return "timed_out", "timed out (the stage's timeout in Jenkins)"
            if self.cancelling:
                return "cancelled", "cancelled while running"
            return "cancelled", "aborted on Jenkins" + (f": {message}" if message else "")
        return "failed", f"Jenkins reported the stage as {status or 'unknown'}"

    def _lose(self, message: str) -> None:
        """Jenkins failed us (unreachable, refused, gone for good): close what is open."""
        self.lost = message
        self._flush()
        for unit in self.units.values():
            if unit.status == "running":
                self._finish(unit, "failed", message)
        for unit in self.units.values():
            if unit.status not in END_STATES:
                self._finish(unit, "skipped", f"not run: {message}")

    # --- the end --------------------------------------------------------------------------------

    def _close_all(self, status: str, error: str) -> None:
        """Give every open unit the same end state (a refusal, a queue item cancelled)."""
        for unit in self.units.values():
            if unit.status not in END_STATES:
                self._finish(unit, status, error)

    def _finish_run(self, forced_code: int | None = None) -> Outcome:
        """Close what is still open (SPEC section 3), then the run, with its exit code."""
        self._release_held()
        self._flush()
        result = self.result
        for unit in self.units.values():
            if unit.status in END_STATES:
                continue
            if self.cancelling or self.forced:
                self._finish(unit, "cancelled", "not finished: the run was cancelled")
            elif unit.status == "running":
                end = {"ABORTED": "cancelled", "SUCCESS": "success"}.get(result or "", "failed")
                self._finish(
                    unit, end, f"Jenkins ended the build ({result}) without ending the stage"
                )
            elif result is not None:
                self._finish(unit, "skipped", "Jenkins never ran this stage")
            else:
                self._finish(unit, "skipped", "not run")
        counts: dict[str, int] = {}
        for unit in self.units.values():
            counts[unit.status] = counts.get(unit.status, 0) + 1
        bad = any(
            u.status in BAD and not (u.node is not None and u.node.step.continue_on_error)
            for u in self.units.values()
        )
        if self.cancelling or self.forced:
            status, code = "cancelled", EXIT_CANCELLED
        elif bad or self.lost is not None:
            status, code = "failed", EXIT_FAILED
        elif result == "ABORTED" or "cancelled" in counts:
            status, code = "cancelled", EXIT_CANCELLED
        elif result in ("FAILURE", "NOT_BUILT"):
            status, code = "failed", EXIT_FAILED
        else:
            status, code = "success", EXIT_OK
        if forced_code is not None:
            status, code = "failed", forced_code
        duration = time.monotonic() - self.started
        self.setup.sink.emit(
            RunFinished(
                self.run_id, status=status, duration=duration, counts=counts, exit_code=code
            )
        )
        return Outcome(self.run_id, status, code, duration, counts)

    # --- signals and waiting --------------------------------------------------------------------

    def _install_signals(self) -> None:
        """SIGINT and SIGTERM (`ansflow cancel`) stop the build instead of killing ansflow."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._on_signal)

    def _restore_signals(self) -> None:
        """Put back the handlers that were there before the run."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _on_signal(self, signum: int, _frame: Any) -> None:
        """Count the signal; the loop acts on it between requests."""
        # NOTE: only a counter: the loop acts on it, never the handler (it may interrupt a lock).
        self.signals += 1

    def _check_signals(self) -> None:
        """A first signal stops the build; a second stops waiting for it."""
        while self.signals_seen < self.signals:
            self.signals_seen += 1
            if self.cancelling:
                self.forced = True
            else:
                self.cancelling = True
                self._note("interrupted: stopping the Jenkins build")

    def _sleep(self, seconds: float) -> bool:
        """Sleep in ticks; True as soon as a signal arrives."""
        end = time.monotonic() + seconds
        seen = self.signals
        while time.monotonic() < end:
            if self.signals != seen:
                return True
            time.sleep(min(TICK_S, max(0.0, end - time.monotonic())))
        return self.signals != seen

    def _wait_retry(self, seconds: float) -> bool:
        """Between retries while Jenkins is away: give up on a second signal or after the grace."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self._check_signals()
            if self.forced:
                return True
            if self.stop_sent is not None and time.monotonic() - self.stop_sent > STOP_GRACE_S:
                return True
            time.sleep(TICK_S)
        return False


def _end(stage: Mapping[str, Any]) -> datetime | None:
    """When Jenkins says the stage ended: its start plus its duration."""
    start = stage.get("startTimeMillis")
    duration = stage.get("durationMillis")
    if not isinstance(start, int | float) or not isinstance(duration, int | float):
        return None
    return _ts(start + duration)


def _at(event: Any, ts: datetime | None) -> Any:
    """The event stamped with Jenkins' own time when Jenkins gave one."""
    if ts is None:
        return event
    from dataclasses import replace

    return replace(event, ts=ts)
