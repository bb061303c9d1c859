"""Runs a parsed declarative pipeline the way Jenkins' declarative interpreter does.

The behaviour ansflow's Jenkins remote mode depends on is reproduced on purpose, quirks included:

* a failing stage fails the build, and every later stage still gets a stage node that only prints
  `Stage "x" skipped due to earlier failure(s)`; the Pipeline REST API lists those as SUCCESS,
  so only the console tells them apart;
* a stage whose `when` is false prints `Stage "x" skipped due to when conditional` and is listed
  too (as SUCCESS by default; newer pipeline-stage-view releases say SKIPPED, see
  `conditional_skip_status`);
* parallel branches run to the end when one fails (unless failFast), then the wrapper stage and
  the build fail;
* after an abort the running stage is ABORTED, later stages are skipped "due to earlier
  failure(s)" and `post` still runs, as Jenkins does;
* the build's `result` is set as soon as a stage fails, while `building` is still true.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from .builds import Build, FlowNode, Interrupted, now_ms, run_script, wait_interruptible, worse
from .jenkinsfile import (
    AllOf,
    AnyOf,
    BranchIs,
    CallValue,
    Compare,
    Condition,
    EnvEquals,
    JenkinsfileSyntaxError,
    ListValue,
    Literal,
    NameRef,
    Not,
    ParamDef,
    Pipeline,
    Post,
    Stage,
    Step,
    StrExpr,
    Value,
    parse_jenkinsfile,
)

ABORT_TYPE = Interrupted.java_type
_UNITS = {"MILLISECONDS": 0.001, "SECONDS": 1.0, "MINUTES": 60.0, "HOURS": 3600.0, "DAYS": 86400.0}
_KNOWN_STEPS = (
    "catchError",
    "dir",
    "echo",
    "error",
    "retry",
    "script",
    "sh",
    "sleep",
    "timeout",
    "unstable",
    "warnError",
    "withEnv",
)


class StepError(Exception):
    """A step failure with the Java exception type Jenkins would record for it."""

    def __init__(self, message: str, java_type: str = "hudson.AbortException") -> None:
        super().__init__(message)
        self.message = message
        self.java_type = java_type

    def console_line(self) -> str:
        if self.java_type == "hudson.AbortException":
            return f"ERROR: {self.message}\n"
        return f"{self.java_type}: {self.message}\n"


PipelineFailure = StepError | Interrupted


def _error_tuple(exc: PipelineFailure) -> tuple[str, str]:
    if isinstance(exc, Interrupted):
        return ("", ABORT_TYPE)
    return (exc.message, exc.java_type)


def _failure_result(exc: PipelineFailure) -> str:
    if isinstance(exc, Interrupted) and exc.cause != "failfast":
        return exc.result
    return "FAILURE"  # a failFast-aborted branch: the failure is the other branch's


@dataclass
class Deadline:
    """One `timeout` scope: it interrupts the steps running when it expires, once."""

    at: float
    fired_at: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def hits(self, step_started: float) -> bool:
        now = time.monotonic()
        with self.lock:
            if self.fired_at is None and now >= self.at:
                self.fired_at = now
            return self.fired_at is not None and step_started < self.fired_at


@dataclass(frozen=True)
class Ctx:
    """What a step sees: environment, params, where it runs and which stage it belongs to."""

    env: dict[str, str]
    params: dict[str, str | bool]
    cwd: str
    stage: FlowNode | None = None
    branch: str | None = None
    deadlines: tuple[Deadline, ...] = ()
    has_agent: bool = True

    @property
    def prefix(self) -> str:
        return f"[{self.branch}] " if self.branch else ""


class PipelineRunner:
    """Executes one Pipeline build in the calling thread and finishes it."""

    def __init__(
        self,
        build: Build,
        script: str,
        *,
        conditional_skip_status: str = "SUCCESS",
        previous_result: str | None = None,
        on_parameters: Callable[[tuple[ParamDef, ...]], None] | None = None,
    ) -> None:
        self.build = build
        self.script = script
        self.conditional_skip_status = conditional_skip_status
        self.previous_result = previous_result
        self.on_parameters = on_parameters
        self.first_error: PipelineFailure | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ console helpers
    def mark(self, text: str, ctx: Ctx | None = None) -> None:
        """A `[Pipeline] ...` line; inside a parallel branch old Jenkins tagged it too."""
        branch = f"[{ctx.branch}] " if ctx is not None and ctx.branch else ""
        self.build.log(f"[Pipeline] {branch}{text}\n")

    # ------------------------------------------------------------------ evaluation
    def lookup(self, path: tuple[str, ...], ctx: Ctx) -> str | bool | None:
        head, rest = path[0], path[1:]
        value: str | bool | None
        if head == "env" and rest:
            value, rest = ctx.env.get(rest[0]), rest[1:]
        elif head == "params" and rest:
            value, rest = ctx.params.get(rest[0]), rest[1:]
        elif head in ctx.env:
            value = ctx.env[head]
        elif head == "currentBuild" and rest == ("result",):
            return self.build.result
        else:
            raise StepError(
                f"No such property: {head} for class: groovy.lang.Binding",
                "groovy.lang.MissingPropertyException",
            )
        if rest:
            if value is None:
                raise StepError(
                    f"Cannot get property '{rest[0]}' on null object",
                    "java.lang.NullPointerException",
                )
            raise StepError(
                f"No such property: {rest[0]} for class: java.lang.String",
                "groovy.lang.MissingPropertyException",
            )
        return value

    def text(self, value: Value, ctx: Ctx) -> str:
        """Groovy's toString of a value, GStrings expanded."""
        if isinstance(value, StrExpr):
            out: list[str] = []
            for part in value.parts:
                if isinstance(part, Literal):
                    out.append(part.text)
                else:
                    out.append(_groovy_str(self.lookup(part.path, ctx)))
            return "".join(out)
        if isinstance(value, NameRef):
            return _groovy_str(self.lookup(value.path, ctx))
        if isinstance(value, CallValue | ListValue):
            raise StepError("emulator: a call or list is not a string here", "emulator.Error")
        return _groovy_str(value)

    def operand(self, value: Value, ctx: Ctx) -> str | bool | float | None:
        if isinstance(value, NameRef):
            return self.lookup(value.path, ctx)
        if isinstance(value, StrExpr):
            return self.text(value, ctx)
        if isinstance(value, bool | int | float) or value is None:
            return value
        raise StepError("emulator: unsupported operand", "emulator.Error")

    def condition(self, cond: Condition, ctx: Ctx) -> bool:
        if isinstance(cond, Compare):
            left = self.operand(cond.left, ctx)
            if cond.op is None:
                return _truthy(left)
            right = self.operand(cond.right, ctx)
            equal = _groovy_equal(left, right)
            return equal if cond.op == "==" else not equal
        if isinstance(cond, EnvEquals):
            return ctx.env.get(cond.name) == cond.value
        if isinstance(cond, BranchIs):
            # BRANCH_NAME exists only in multibranch projects; the emulator has none.
            return ctx.env.get("BRANCH_NAME") == cond.pattern
        if isinstance(cond, Not):
            return not self.condition(cond.inner, ctx)
        if isinstance(cond, AllOf):
            return all(self.condition(c, ctx) for c in cond.items)
        if isinstance(cond, AnyOf):
            return any(self.condition(c, ctx) for c in cond.items)
        raise AssertionError(cond)

    def with_environment(self, pairs: tuple[tuple[str, Value], ...], ctx: Ctx) -> Ctx:
        env = dict(ctx.env)
        for name, value in pairs:
            env[name] = self.text(value, replace(ctx, env=env))
        return replace(ctx, env=env)

    # ------------------------------------------------------------------ steps
    def steps(self, steps: tuple[Step, ...], ctx: Ctx) -> None:
        for step in steps:
            self.step(step, ctx)

    def _atom(self, name: str, ctx: Ctx, param_desc: str | None = None) -> FlowNode:
        parent = ctx.stage.id if ctx.stage is not None else None
        return self.build.new_node(name, "atom", parent, param_desc)

    def _deadline_fn(self, ctx: Ctx, started: float) -> Callable[[], bool] | None:
        if not ctx.deadlines:
            return None

        def hit() -> bool:
            for d in ctx.deadlines:
                if d.hits(started):
                    self.build.log("Cancelling nested steps due to timeout\n", prefix=ctx.prefix)
                    return True
            return False

        return hit

    def step(self, step: Step, ctx: Ctx) -> None:
        name = step.name
        handler = getattr(self, f"step_{name}", None)
        if name not in _KNOWN_STEPS or handler is None:
            raise StepError(
                f"No such DSL method '{name}' found among steps [{', '.join(_KNOWN_STEPS)}]",
                "java.lang.NoSuchMethodError",
            )
        if step.body is None and name in ("catchError", "dir", "retry", "script", "timeout"):
            raise StepError(f"{name} needs a body {{ ... }}", "java.lang.IllegalArgumentException")
        if step.body is None and name in ("warnError", "withEnv"):
            raise StepError(f"{name} needs a body {{ ... }}", "java.lang.IllegalArgumentException")
        handler(step, ctx)

    def step_sh(self, step: Step, ctx: Ctx) -> None:
        for unsupported in ("returnStdout", "returnStatus"):
            if step.args.has(unsupported):
                raise StepError(
                    f"emulator: sh({unsupported}:) is not implemented", "emulator.Error"
                )
        script = self.text(step.args.get("script", 0), ctx)
        label_v = step.args.get("label")
        label = self.text(label_v, ctx) if label_v is not None else None
        self.mark("sh", ctx)
        node = self._atom(label or "Shell Script", ctx, label or script)
        if not ctx.has_agent:
            err = StepError(
                "Required context class hudson.FilePath is missing\n"
                "Perhaps you forgot to surround the code with a step that provides this, "
                "such as: node",
                "org.jenkinsci.plugins.workflow.steps.MissingContextVariableException",
            )
            self.build.end_node(node, _error_tuple(err))
            raise err
        handle = self.build.begin_step()
        started = time.monotonic()
        error: PipelineFailure | None = None
        try:
            rc = run_script(
                self.build,
                handle,
                script,
                env=ctx.env,
                cwd=ctx.cwd,
                sink=lambda line: self.build.log(line, node, ctx.prefix),
                deadline=self._deadline_fn(ctx, started),
            )
            if rc != 0:
                error = StepError(f"script returned exit code {rc}")
        except Interrupted as exc:
            self.build.log("Sending interrupt signal to process\n", node, ctx.prefix)
            error = exc
        finally:
            self.build.end_step(handle)
        self.build.end_node(node, _error_tuple(error) if error else None)
        if error is not None:
            raise error

    def step_echo(self, step: Step, ctx: Ctx) -> None:
        message = self.text(step.args.get("message", 0), ctx)
        self.mark("echo", ctx)
        node = self._atom("Print Message", ctx, message)
        self.build.log(message + "\n", node, ctx.prefix)
        self.build.end_node(node)

    def step_error(self, step: Step, ctx: Ctx) -> None:
        message = self.text(step.args.get("message", 0), ctx)
        self.mark("error", ctx)
        node = self._atom("Error signal", ctx, message)
        err = StepError(message)
        self.build.end_node(node, _error_tuple(err))
        raise err

    def step_unstable(self, step: Step, ctx: Ctx) -> None:
        message = self.text(step.args.get("message", 0), ctx)
        self.mark("unstable", ctx)
        node = self._atom("Set stage result to unstable", ctx, message)
        self.build.log(f"WARNING: {message}\n", node, ctx.prefix)
        node.warning = "UNSTABLE"
        self._warn_stage(ctx, "UNSTABLE")
        self.build.set_result("UNSTABLE")
        self.build.end_node(node)

    def _warn_stage(self, ctx: Ctx, result: str) -> None:
        if ctx.stage is not None:
            with self.build.cond:
                ctx.stage.warning = worse(ctx.stage.warning, result)

    def step_sleep(self, step: Step, ctx: Ctx) -> None:
        amount = step.args.get("time", 0)
        unit_v = step.args.get("unit")
        unit = "SECONDS"
        if isinstance(unit_v, StrExpr):
            unit = unit_v.constant or "SECONDS"
        elif isinstance(unit_v, NameRef):
            unit = unit_v.path[-1]
        if not isinstance(amount, int | float) or isinstance(amount, bool):
            raise StepError("sleep needs a number", "java.lang.IllegalArgumentException")
        seconds = float(amount) * _UNITS.get(unit, 1.0)
        self.mark("sleep", ctx)
        node = self._atom("Sleep", ctx, str(amount))
        self.build.log(f"Sleeping for {_fmt_duration(seconds)}\n", node, ctx.prefix)
        handle = self.build.begin_step()
        error: PipelineFailure | None = None
        try:
            wait_interruptible(
                self.build, handle, seconds, self._deadline_fn(ctx, time.monotonic())
            )
        except Interrupted as exc:
            error = exc
        finally:
            self.build.end_step(handle)
        self.build.end_node(node, _error_tuple(error) if error else None)
        if error is not None:
            raise error

    def _block(self, name: str, ctx: Ctx, body: Callable[[], None], preamble: str = "") -> None:
        self.mark(name, ctx)
        if preamble:
            self.build.log(preamble, prefix=ctx.prefix)
        self.mark("{", ctx)
        try:
            body()
        finally:
            self.mark("}", ctx)
            self.mark(f"// {name}", ctx)

    def step_script(self, step: Step, ctx: Ctx) -> None:
        assert step.body is not None
        body = step.body
        self._block("script", ctx, lambda: self.steps(body, ctx))

    def step_dir(self, step: Step, ctx: Ctx) -> None:
        assert step.body is not None
        body = step.body
        path = self.text(step.args.get("path", 0), ctx)
        inner = replace(ctx, cwd=os.path.join(ctx.cwd, path))
        self.build.log(f"Running in {inner.cwd}\n", prefix=ctx.prefix)
        self._block("dir", ctx, lambda: self.steps(body, inner))

    def step_withEnv(self, step: Step, ctx: Ctx) -> None:
        assert step.body is not None
        body = step.body
        overrides = step.args.get("overrides", 0)
        env = dict(ctx.env)
        if not isinstance(overrides, ListValue):
            raise StepError("withEnv needs a list of 'NAME=value'", "java.lang.ClassCastException")
        for item in overrides.items:
            key, _, val = self.text(item, ctx).partition("=")
            env[key] = val
        self._block("withEnv", ctx, lambda: self.steps(body, replace(ctx, env=env)))

    def step_timeout(self, step: Step, ctx: Ctx) -> None:
        assert step.body is not None
        body = step.body
        amount = step.args.get("time", 0)
        unit_v = step.args.get("unit")
        unit = "MINUTES"
        if isinstance(unit_v, StrExpr):
            unit = unit_v.constant or unit
        elif isinstance(unit_v, NameRef):
            unit = unit_v.path[-1]
        if not isinstance(amount, int | float) or isinstance(amount, bool):
            raise StepError("timeout needs time:", "java.lang.IllegalArgumentException")
        self._timeout(float(amount) * _UNITS.get(unit, 60.0), ctx, lambda c: self.steps(body, c))

    def _timeout(self, seconds: float, ctx: Ctx, body: Callable[[Ctx], None]) -> None:
        deadline = Deadline(time.monotonic() + seconds)
        inner = replace(ctx, deadlines=(*ctx.deadlines, deadline))

        def run() -> None:
            self.build.log(
                f"Timeout set to expire in {_fmt_duration(seconds)}\n", prefix=ctx.prefix
            )
            try:
                body(inner)
            except Interrupted as exc:
                if exc.cause == "timeout" and deadline.fired_at is not None:
                    self.build.log("Timeout has been exceeded\n", prefix=ctx.prefix)
                raise

        self._block("timeout", ctx, run, f"Timeout set to expire in {_fmt_duration(seconds)}\n")

    def step_catchError(self, step: Step, ctx: Ctx) -> None:
        assert step.body is not None
        self._catch(
            step,
            ctx,
            build_result=self._result_arg(step, "buildResult", "FAILURE", ctx),
            stage_result=self._result_arg(step, "stageResult", "SUCCESS", ctx),
            name="catchError",
        )

    def step_warnError(self, step: Step, ctx: Ctx) -> None:
        self._catch(step, ctx, build_result="UNSTABLE", stage_result="UNSTABLE", name="warnError")

    def _result_arg(self, step: Step, name: str, default: str, ctx: Ctx) -> str:
        value = step.args.get(name)
        if value is None:
            return default
        text = self.text(value, ctx)
        if text not in ("SUCCESS", "UNSTABLE", "FAILURE", "NOT_BUILT", "ABORTED"):
            raise StepError(f"{name}: unknown result {text}", "java.lang.IllegalArgumentException")
        return text

    def _catch(
        self, step: Step, ctx: Ctx, *, build_result: str, stage_result: str, name: str
    ) -> None:
        assert step.body is not None
        body = step.body
        message_v = step.args.get("message", 0 if name == "warnError" else None)
        message = self.text(message_v, ctx) if message_v is not None else None
        catch_interruptions = step.args.get("catchInterruptions") is not False

        def run() -> None:
            try:
                self.steps(body, ctx)
            except StepError as exc:
                self._caught(exc, ctx, build_result, stage_result, message)
            except Interrupted as exc:
                if not catch_interruptions:
                    raise
                # An interruption keeps its own result (ABORTED) when it is caught.
                self._caught(exc, ctx, exc.result, exc.result, message)

        self._block(name, ctx, run)

    def _caught(
        self, exc: PipelineFailure, ctx: Ctx, build_result: str, stage_result: str, msg: str | None
    ) -> None:
        if msg:
            self.build.log(msg + "\n", prefix=ctx.prefix)
        if isinstance(exc, StepError):
            self.build.log(exc.console_line(), prefix=ctx.prefix)
        if build_result != "SUCCESS":
            self.build.set_result(build_result)
        if stage_result != "SUCCESS":
            self._warn_stage(ctx, stage_result)

    def step_retry(self, step: Step, ctx: Ctx) -> None:
        assert step.body is not None
        body = step.body
        count_v = step.args.get("count", 0)
        count = count_v if isinstance(count_v, int) and not isinstance(count_v, bool) else 1

        def run() -> None:
            for attempt in range(1, count + 1):
                try:
                    self.steps(body, ctx)
                    return
                except StepError as exc:
                    self.build.log(exc.console_line(), prefix=ctx.prefix)
                    if attempt == count:
                        raise
                    self.build.log("Retrying\n", prefix=ctx.prefix)

        self._block("retry", ctx, run)

    # ------------------------------------------------------------------ stages
    def stage(
        self, stage: Stage, ctx: Ctx, parent: FlowNode | None, skip_for_failure: bool
    ) -> PipelineFailure | None:
        """Run one declarative stage; return the failure that escaped it, if any."""
        try:
            name = self.text(stage.name, ctx)
        except StepError as exc:
            return exc
        self.mark("stage", ctx)
        self.mark(f"{{ ({name})", ctx)
        node = self.build.new_node(name, "stage", parent.id if parent else None)
        inner = replace(ctx, stage=node, env={**ctx.env, "STAGE_NAME": name})
        if stage.agent is not None:
            inner = replace(inner, has_agent=stage.agent != "none")
        error: PipelineFailure | None = None
        try:
            if skip_for_failure:
                self._skip(
                    node, inner, f'Stage "{name}" skipped due to earlier failure(s)', "failure"
                )
            else:
                error = self._run_stage_body(stage, inner, node, name)
        except (StepError, Interrupted) as exc:
            error = exc
        if error is not None:
            self.build.set_result(_failure_result(error))
        self.build.end_node(node, _error_tuple(error) if error else None)
        self.mark("}", ctx)
        self.mark("// stage", ctx)
        return error

    def _skip(self, node: FlowNode, ctx: Ctx, message: str, why: str) -> None:
        node.skipped = why
        self.build.log(message + "\n", node, ctx.prefix)

    def _run_stage_body(
        self, stage: Stage, ctx: Ctx, node: FlowNode, name: str
    ) -> PipelineFailure | None:
        error: PipelineFailure | None = None
        if stage.environment:
            ctx = self.with_environment(stage.environment, ctx)
        if stage.when is not None and not self.condition(stage.when, ctx):
            self._skip(node, ctx, f'Stage "{name}" skipped due to when conditional', "conditional")
            return None

        def body(c: Ctx) -> None:
            if stage.steps is not None:
                self.steps(stage.steps, c)
            elif stage.parallel is not None:
                self.parallel(stage, c, node)
            elif stage.stages is not None:
                self.sequential(stage.stages, c, node)

        try:
            if stage.environment:
                self._block("withEnv", ctx, lambda: self._maybe_timeout(stage, ctx, body))
            else:
                self._maybe_timeout(stage, ctx, body)
        except (StepError, Interrupted) as exc:
            error = exc
        if stage.post is not None:
            result = worse(self.build.result, _failure_result(error) if error else "SUCCESS")
            if node.warning:
                result = worse(result, node.warning)
            self.build.log("Post stage\n", prefix=ctx.prefix)
            post_error = self.post_blocks(stage.post, ctx, result)
            error = error or post_error
        return error

    def _maybe_timeout(self, stage: Stage, ctx: Ctx, body: Callable[[Ctx], None]) -> None:
        if stage.timeout_s is not None:
            self._timeout(stage.timeout_s, ctx, body)
        else:
            body(ctx)

    def parallel(self, stage: Stage, ctx: Ctx, wrapper: FlowNode) -> None:
        assert stage.parallel is not None
        branches = stage.parallel
        names = [self.text(b.name, ctx) for b in branches]
        self.mark("parallel", ctx)
        for n in names:
            self.mark(f"{{ (Branch: {n})", ctx)
        failures: list[tuple[str, PipelineFailure]] = []
        lock = threading.Lock()

        def run_branch(branch: Stage, branch_name: str) -> None:
            err = self.stage(branch, replace(ctx, branch=branch_name), wrapper, False)
            if err is not None:
                with lock:
                    failures.append((branch_name, err))
                    first = len(failures) == 1
                if first and stage.fail_fast:
                    self.build.interrupt("failfast", deliver_later=False)

        threads = [
            threading.Thread(target=run_branch, args=(b, n), name=f"branch-{n}", daemon=True)
            for b, n in zip(branches, names, strict=True)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for _ in names:
            self.mark("}", ctx)
        for branch_name, _err in failures:
            self.build.log(f"Failed in branch {branch_name}\n", prefix=ctx.prefix)
        self.mark("// parallel", ctx)
        if failures:
            raise failures[0][1]

    def sequential(self, stages: tuple[Stage, ...], ctx: Ctx, parent: FlowNode) -> None:
        first: PipelineFailure | None = None
        for sub in stages:
            err = self.stage(sub, ctx, parent, first is not None)
            first = first or err
        if first is not None:
            raise first

    def post_blocks(self, post: Post, ctx: Ctx, result: str) -> PipelineFailure | None:
        """Run the post conditions that apply to `result`; the first failure is returned."""
        prev = self.previous_result
        applies = {
            "always": True,
            "changed": prev is not None and prev != result,
            "fixed": result == "SUCCESS" and prev in ("FAILURE", "UNSTABLE"),
            "regression": prev == "SUCCESS" and result in ("FAILURE", "UNSTABLE", "ABORTED"),
            "aborted": result == "ABORTED",
            "failure": result == "FAILURE",
            "success": result == "SUCCESS",
            "unstable": result == "UNSTABLE",
            "unsuccessful": result != "SUCCESS",
            "notBuilt": result == "NOT_BUILT",
            "cleanup": True,
        }
        error: PipelineFailure | None = None
        for cond, steps in post.blocks:
            if not applies[cond]:
                continue
            try:
                self.steps(steps, ctx)
            except (StepError, Interrupted) as exc:
                if isinstance(exc, StepError):
                    self.build.log(f"Error when executing {cond} post condition:\n")
                    self.build.log(exc.console_line())
                self.build.set_result(_failure_result(exc))
                error = error or exc
        return error

    # ------------------------------------------------------------------ the whole run
    def run(self) -> None:
        b = self.build
        try:
            pipeline = parse_jenkinsfile(self.script)
        except JenkinsfileSyntaxError as exc:
            b.log(exc.console_text(self.script))
            b.finish("FAILURE")
            return
        if self.on_parameters is not None and pipeline.parameters:
            self.on_parameters(pipeline.parameters)
        params: dict[str, str | bool] = {p.name: p.default for p in pipeline.parameters}
        for kind, name, value in b.parameters:
            params[name] = value if kind != "boolean" else str(value).lower() == "true"
        ctx = Ctx(env=b.env(), params=params, cwd=b.workspace, has_agent=pipeline.agent != "none")
        trailer = ""
        try:
            self.mark("Start of Pipeline")
            if ctx.has_agent:
                self.mark("node")
                b.log(f"Running on Jenkins in {b.workspace}\n")
                self.mark("{")
            os.makedirs(b.workspace, exist_ok=True)
            try:
                if pipeline.environment:
                    ctx = self.with_environment(pipeline.environment, ctx)
                    self._block("withEnv", ctx, lambda: self._top(pipeline, ctx))
                else:
                    self._top(pipeline, ctx)
            except StepError as exc:
                self.first_error = self.first_error or exc
                b.set_result("FAILURE")
            if ctx.has_agent:
                self.mark("}")
                self.mark("// node")
            self.mark("End of Pipeline")
        finally:
            err = self.first_error
            if isinstance(err, StepError):
                trailer = err.console_line()
            elif isinstance(err, Interrupted) and err.cause == "timeout":
                trailer = "Timeout has been exceeded\n"
            b.finish("SUCCESS", trailer)

    def _top(self, pipeline: Pipeline, ctx: Ctx) -> None:
        def stages(c: Ctx) -> None:
            for st in pipeline.stages:
                err = self.stage(st, c, None, self.first_error is not None)
                if err is not None and self.first_error is None:
                    self.first_error = err
            if pipeline.post is not None:
                self._post_stage(pipeline.post, c)

        if pipeline.timeout_s is not None:
            try:
                self._timeout(pipeline.timeout_s, ctx, stages)
            except Interrupted as exc:
                self.first_error = self.first_error or exc
        else:
            stages(ctx)

    def _post_stage(self, post: Post, ctx: Ctx) -> None:
        result = self.build.result or "SUCCESS"
        self.mark("stage", ctx)
        self.mark("{ (Declarative: Post Actions)", ctx)
        node = self.build.new_node("Declarative: Post Actions", "stage", None)
        inner = replace(ctx, stage=node)
        error = self.post_blocks(post, inner, result)
        self.build.end_node(node, _error_tuple(error) if error else None)
        if error is not None and self.first_error is None:
            self.first_error = error
        self.mark("}", ctx)
        self.mark("// stage", ctx)


def stage_status(node: FlowNode, conditional_skip_status: str = "SUCCESS") -> str:
    """A node's status as the Pipeline REST API (StatusExt) reports it."""
    if node.end_ms is None:
        return "IN_PROGRESS"
    if node.skipped == "conditional":
        return conditional_skip_status
    if node.skipped:
        return "SUCCESS"
    if node.error is not None:
        return "ABORTED" if node.error[1] == ABORT_TYPE else "FAILED"
    if node.warning is not None:
        return {
            "SUCCESS": "SUCCESS",
            "UNSTABLE": "UNSTABLE",
            "FAILURE": "FAILED",
            "ABORTED": "ABORTED",
            "NOT_BUILT": "NOT_EXECUTED",
        }[node.warning]
    return "SUCCESS"


def node_duration_ms(node: FlowNode) -> int:
    end = node.end_ms if node.end_ms is not None else now_ms()
    return max(0, end - node.start_ms)


def _groovy_str(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _truthy(value: object) -> bool:
    """Groovy truth: null, false, 0 and '' are false."""
    return value not in (None, False, 0, "")


def _groovy_equal(a: object, b: object) -> bool:
    """Groovy's ==: no coercion between booleans, numbers and strings."""
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    return a == b


def _fmt_duration(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)} min"
    if seconds == int(seconds):
        return f"{int(seconds)} sec"
    return f"{seconds:g} sec"
