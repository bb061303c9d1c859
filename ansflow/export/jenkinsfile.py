"""A declarative Jenkinsfile from a plan: `ansflow export --format jenkinsfile`, and the script of
the Pipeline job that `ansflow run --remote` keeps.

Layout (SPEC section 7): one stage per step instance, named by its id; steps that may run at the
same time are branches of a wrapper stage under `parallel` (a `parallel:` block, a matrix, or
steps whose `needs` put them side by side). Jenkins runs stages in order, so the plan is cut into
waves: a step goes in the wave after the last of its needs. That keeps every dependency and all
of the parallelism a declarative pipeline can hold (Jenkins cannot start a stage when *some* of a
parallel's branches are done).

Templates: values known before running (`vars`, `matrix`, `pipeline`) are written in. Values
only known on the agent become shell (`${NAME}`) or Groovy (`${env.NAME}`) references: `env.*`,
`secrets.*` (declared as password parameters, never written into the file), `steps.X.outputs.K`
(read from files the steps write under $WORKSPACE/.ansflow/outputs) and `run.status`. Anything
else is a Problem: listed as a comment at the top, and, when it would make a run wrong rather
than approximate, refused by remote mode (`fatal`).

Generated strings are single- or triple-single-quoted Groovy with `\\` and `'` escaped, so no `$`
in a script is ever read by Groovy; double quotes are used only where a Groovy reference is meant.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

from ansflow import templates
from ansflow.model import (
    AnsibleStep,
    ApprovalStep,
    BuildStep,
    DeployStep,
    FetchCodeStep,
    JenkinsStep,
    NotifyStep,
    SecurityScanStep,
    ShellStep,
    SSHTarget,
    StepBase,
    TestStep,
)
from ansflow.planner import Plan, StepNode

if TYPE_CHECKING:
    from ansflow.loader import LoadedPipeline

STATIC_ROOTS = frozenset({"vars", "matrix", "pipeline"})
#: The `when` condition of a stage that must not run.
NEVER = "expression { return false }"
OUTPUTS_DIR = "$WORKSPACE/.ansflow/outputs"
IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
INDENT = "  "


@dataclass(frozen=True)
class Problem:
    """Something Jenkins cannot express; `fatal` when remote mode must not run it at all."""

    step: str | None
    message: str
    fatal: bool = False

    def text(self) -> str:
        """One line for a `//` comment or an error message: `step: message`."""
        return " ".join(f"{self.step or 'pipeline'}: {self.message}".split())


@dataclass(frozen=True)
class Translation:
    """A Jenkinsfile and what remote mode needs to map its stages back onto the plan."""

    text: str
    #: Leaf stage name -> step instance id (wrapper stages are absent: they are not steps).
    stages: Mapping[str, str]
    #: Step instances whose stage has its own timeout (an ABORTED stage then means timed_out).
    timeouts: frozenset[str]
    #: Secrets the pipeline declares: password parameters of the job, values given per build.
    secrets: tuple[str, ...]
    problems: tuple[Problem, ...]

    @property
    def fatal(self) -> list[Problem]:
        """The problems that would make a remote run wrong, not just approximate."""
        return [p for p in self.problems if p.fatal]


@dataclass(frozen=True)
class Dynamic:
    """A value known only on the Jenkins agent: how a shell script and a Groovy string read it."""

    shell: str
    groovy: str | None


Piece = str | Dynamic


def render(loaded: LoadedPipeline) -> str:
    """`ansflow export --format jenkinsfile`."""
    plan = loaded.plan()
    return translate(plan, variables=dict(loaded.pipeline.vars)).text


def translate(
    plan: Plan,
    *,
    variables: Mapping[str, Any],
    remote: bool = False,
    run_id: int | None = None,
    include: set[str] | None = None,
    fail_fast: bool = False,
) -> Translation:
    """The Jenkinsfile for `plan` (only the instances in `include`, when given)."""
    return _Writer(plan, variables, remote, run_id, include, fail_fast).write()


# --- Groovy and shell quoting ----------------------------------------------------------------


def groovy_single(text: str) -> str:
    """A single-quoted Groovy string: nothing is interpolated."""
    escaped = (
        text.replace("\\", "\\\\")
        .replace("'", "\\'")
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )
    return f"'{escaped}'"


def groovy_script(text: str) -> str:
    """A triple-single-quoted Groovy string; `'''\\` so the text starts on the next line."""
    escaped = text.replace("\\", "\\\\").replace("'", "\\'")
    return f"'''\\\n{escaped}'''"


def groovy_double(pieces: Sequence[Piece]) -> str | None:
    """A double-quoted (interpolating) Groovy string, or None when a piece has no Groovy form."""
    out: list[str] = []
    for piece in pieces:
        if isinstance(piece, Dynamic):
            if piece.groovy is None:
                return None
            out.append(piece.groovy)
        else:
            out.append(
                piece.replace("\\", "\\\\")
                .replace('"', '\\"')
                .replace("$", "\\$")
                .replace("\n", "\\n")
                .replace("\r", "\\r")
                .replace("\t", "\\t")
            )
    return '"' + "".join(out) + '"'


def shell_text(pieces: Sequence[Piece]) -> str:
    """Pieces inside a script, as ansflow renders templates: the text where the template was."""
    return "".join(p.shell if isinstance(p, Dynamic) else p for p in pieces)


def shell_word(pieces: Sequence[Piece]) -> str:
    """One shell word: single-quoted when static, double-quoted around agent-side references."""
    if not any(isinstance(p, Dynamic) for p in pieces):
        return shlex.quote("".join(p for p in pieces if isinstance(p, str)))
    out: list[str] = []
    for piece in pieces:
        if isinstance(piece, Dynamic):
            out.append(piece.shell)
        else:
            out.append(re.sub(r'(["\\$`])', r"\\\1", piece))
    return '"' + "".join(out) + '"'


def output_file(node_id: str) -> str:
    """Where step instance `node_id` writes its outputs on the agent."""
    return f'"{OUTPUTS_DIR}/{re.sub(r"[^A-Za-z0-9_.=,-]+", "_", node_id)}"'


# --- the writer ------------------------------------------------------------------------------


@dataclass
class _Stage:
    """What one step instance needs in its stage."""

    node: StepNode
    when: str | None = None
    environment: list[tuple[str, str]] = field(default_factory=list)
    body: list[str] = field(default_factory=list)
    timeout: float | None = None


class _Writer:
    """Writes one Jenkinsfile, collecting what it cannot express as it goes."""

    def __init__(
        self,
        plan: Plan,
        variables: Mapping[str, Any],
        remote: bool,
        run_id: int | None,
        include: set[str] | None,
        fail_fast: bool,
    ) -> None:
        self.plan = plan
        self.pipeline = plan.pipeline
        self.variables = dict(variables)
        self.remote = remote
        self.run_id = run_id
        self.fail_fast = fail_fast
        self.nodes = [n for n in plan.nodes if include is None or n.id in include]
        self.problems: list[Problem] = []
        self.secrets = tuple(self.pipeline.secrets)
        self.stages: dict[str, str] = {}
        self.timeouts: set[str] = set()
        # per stage while rendering it
        self._needs_outputs_reader = False
        self._needs_run_status = False

    # --- problems -------------------------------------------------------------------------------

    def problem(self, step: str | None, message: str, fatal: bool = False) -> None:
        """Record a problem once (matrix instances of one step would repeat it)."""
        item = Problem(step, message, fatal)
        if item not in self.problems:
            self.problems.append(item)

    # --- templates ------------------------------------------------------------------------------

    def static_context(self, node: StepNode | None) -> dict[str, Any]:
        """The template values known before anything runs, which are written into the file."""
        return {
            "vars": self.variables,
            "pipeline": {"name": self.plan.name, "file": self.plan.file},
            "matrix": dict(node.matrix) if node is not None else {},
        }

    def pieces(self, text: str, node: StepNode | None, where: str) -> list[Piece]:
        """A templated string as text and agent-side references; problems are recorded."""
        step = node.id if node else None
        if not templates.has_template(text):
            return [text]
        out: list[Piece] = []
        position = 0
        for span in templates.spans(text):
            out.append(text[position : span.start])
            position = span.end
            out.append(self.span_piece(span.source, node, step, where))
        out.append(text[position:])
        return [p for p in out if p != ""]

    def span_piece(self, source: str, node: StepNode | None, step: str | None, where: str) -> Piece:
        """One `${{ }}`: its value when known now, else an agent-side reference if it is one."""
        refs = templates.references(source)
        runtime = [r for r in refs if r.chain and r.chain[0] not in STATIC_ROOTS]
        if not runtime:
            try:
                return templates.render_text(
                    templates.OPEN + source + templates.CLOSE, self.static_context(node)
                )
            except templates.TemplateError as exc:
                self.problem(step, f"{where}: {exc.message}", fatal=True)
                return ""
        compact = re.sub(r"\s+", "", source)
        ref = runtime[0]
        dotted = ".".join(ref.chain)
        if len(refs) != 1 or compact not in (dotted, _indexed(ref.chain)):
            self.problem(
                step,
                f"{where}: `${{{{ {source.strip()} }}}}` computes with values known only while "
                "running; Jenkins cannot evaluate it (left empty)",
                fatal=True,
            )
            return ""
        piece = self.runtime_piece(ref.chain, step, where)
        if piece is None:
            return ""
        return piece

    def runtime_piece(self, chain: tuple[str, ...], step: str | None, where: str) -> Piece | None:
        """How the agent reads a value known only while running; None (and a problem) if not."""
        root = chain[0]
        if root in ("env", "secrets") and len(chain) == 2:
            name = chain[1]
            if not IDENT.match(name):
                self.problem(step, f"{where}: `{root}.{name}` is not a shell variable name", True)
                return None
            return Dynamic("${" + name + "}", "${env." + name + "}")
        if root == "steps" and len(chain) == 4 and chain[2] == "outputs":
            owner, key = chain[1], chain[3]
            ids = [owner] if owner in self.plan.by_id else list(self.plan.instances.get(owner, ()))
            if not ids:
                self.problem(step, f"{where}: no step {owner!r}", True)
                return None
            files = " ".join(output_file(i) for i in ids)
            self._needs_outputs_reader = True
            return Dynamic(f"$(__ansflow_output {shlex.quote(key)} {files})", None)
        if root == "run" and chain == ("run", "id"):
            if self.remote and self.run_id is not None:
                return str(self.run_id)
            self.problem(step, f"{where}: `run.id` becomes Jenkins' BUILD_NUMBER")
            return Dynamic("${BUILD_NUMBER}", "${env.BUILD_NUMBER}")
        if root == "run" and chain == ("run", "status"):
            self._needs_run_status = True
            return Dynamic("${ANSFLOW_RUN_STATUS}", None)
        self.problem(
            step,
            f"{where}: `{'.'.join(chain)}` is known only to ansflow while it runs; Jenkins "
            "cannot read it (left empty)",
            fatal=True,
        )
        return None

    # --- layout ---------------------------------------------------------------------------------

    def waves(self) -> list[list[StepNode]]:
        """Each instance one wave after the last of its needs that is in the file."""
        level: dict[str, int] = {}
        for node in self.nodes:
            deps = [level[d] for d in node.needs if d in level]
            level[node.id] = max(deps) + 1 if deps else 0
        count = max(level.values(), default=-1) + 1
        return [[n for n in self.nodes if level[n.id] == index] for index in range(count)]

    def stopped_by_unrelated_failures(self) -> None:
        """Steps Jenkins skips after a failure they do not depend on, where ansflow runs them.

        NOTE: declarative Jenkins skips every stage after a failed one ("due to earlier
        failure(s)"); ansflow skips only the failed step's dependants (SPEC: ordering). A step
        whose `needs` are narrower than the file order (`needs: []`, or needs beside other
        steps) can land in a wave after a step it does not need, and then shares its fate.
        """
        if self.fail_fast:
            return  # NOTE: with --fail-fast ansflow stops the other steps too.
        waves = self.waves()
        stops: dict[str, list[str]] = {}
        for index, wave in enumerate(waves):
            earlier = [
                n
                for w in waves[:index]
                for n in w
                if not n.step.continue_on_error and n.step.when is not False
            ]
            for node in wave:
                if _decides_itself(node):
                    continue  # NOTE: `when: always()` and the like have a problem of their own.
                upstream = self.plan.upstream(node.id)
                for other in earlier:
                    if other.id in upstream or other.base_id == node.base_id:
                        continue
                    names = stops.setdefault(node.base_id, [])
                    if other.base_id not in names:
                        names.append(other.base_id)
        if not stops:
            return
        parts = []
        for step, names in stops.items():
            shown = names if len(names) <= 4 else [*names[:3], f"{len(names) - 3} more"]
            parts.append(f"{step} is skipped when {' or '.join(shown)} fails")
        self.problem(
            None,
            "a failed stage stops the later stages, even ones that do not need it (ansflow "
            "would still run them): " + "; ".join(parts),
        )

    def wrapper_name(self, wave: list[StepNode], used: set[str]) -> str:
        """A parallel stage's name: never a step id, so remote mode never maps it to a step."""
        bases = list(dict.fromkeys(n.base_id for n in wave))
        if len(bases) == 1 and wave[0].step.matrix:
            name = bases[0]
        else:
            name = "parallel: " + ", ".join(bases)
        unique, counter = name, 2
        while unique in used or unique in self.plan.by_id:
            unique = f"{name} ({counter})"
            counter += 1
        used.add(unique)
        return unique

    # --- the whole file -------------------------------------------------------------------------

    def write(self) -> Translation:
        """The whole file; problems found while writing it end up in its header."""
        lines: list[str] = ["pipeline {", f"{INDENT}agent any"]
        if self.secrets:
            lines.append(f"{INDENT}parameters {{")
            for name in self.secrets:
                lines.append(
                    f"{INDENT * 2}password(name: {groovy_single(name)}, defaultValue: '', "
                    f"description: {groovy_single(f'ansflow secret {name}')})"
                )
            lines.append(f"{INDENT}}}")
        environment = self.pipeline_environment()
        if environment:
            lines.append(f"{INDENT}environment {{")
            lines.extend(f"{INDENT * 2}{k} = {v}" for k, v in environment)
            lines.append(f"{INDENT}}}")
        self.stopped_by_unrelated_failures()
        lines.append(f"{INDENT}stages {{")
        used: set[str] = set()
        for wave in self.waves():
            if len(wave) == 1:
                lines.extend(self.stage_lines(wave[0], 2))
                continue
            wrapper = self.wrapper_name(wave, used)
            lines.append(f"{INDENT * 2}stage({groovy_single(wrapper)}) {{")
            if self.fail_fast:
                lines.append(f"{INDENT * 3}failFast true")
            lines.append(f"{INDENT * 3}parallel {{")
            for node in wave:
                lines.extend(self.stage_lines(node, 4))
            lines.append(f"{INDENT * 3}}}")
            lines.append(f"{INDENT * 2}}}")
        if not self.nodes:
            lines.append(f"{INDENT * 2}stage('nothing to run') {{ steps {{ echo 'no steps' }} }}")
        lines.append(f"{INDENT}}}")
        lines.append("}")
        concurrency = self.pipeline.concurrency
        widest = max((len(w) for w in self.waves()), default=0)
        if concurrency is not None and widest > concurrency:
            self.problem(
                None,
                f"`concurrency: {concurrency}` is not enforced: Jenkins runs the branches of a "
                "parallel stage all at once",
            )
        header = self.header()
        return Translation(
            text="\n".join(header + lines) + "\n",
            stages=dict(self.stages),
            timeouts=frozenset(self.timeouts),
            secrets=self.secrets,
            problems=tuple(self.problems),
        )

    def header(self) -> list[str]:
        """Where the file comes from, and what Jenkins cannot express, as `//` comments."""
        source, name = _comment(PurePath(self.plan.file).name), _comment(self.plan.name)
        if self.remote:
            origin = f"`ansflow run --remote` from {source} (pipeline {name}); ansflow rewrites it"
            lines = [f"// Kept by {origin} on every run."]
        else:
            lines = [
                f"// Generated by `ansflow export --format jenkinsfile` from {source} (pipeline "
                f"{name}); change the pipeline, then export again."
            ]
        if self.pipeline.description:
            lines.append(f"// {_comment(self.pipeline.description)}")
        lines.append(
            "// One stage per step; steps that may run at the same time are branches of a parallel."
        )
        if self.problems:
            lines.append("//")
            lines.append("// Not expressible in Jenkins (dropped or approximated):")
            lines.extend(f"//   - {_comment(p.text())}" for p in self.problems)
        return lines

    def pipeline_environment(self) -> list[tuple[str, str]]:
        """The pipeline's `env` and the ANSFLOW_* variables every step sees (SPEC section 1)."""
        pairs: list[tuple[str, str]] = []
        for key, value in self.pipeline.env.items():
            literal = self.groovy_value(self.pieces(value, None, f"env.{key}"), None, f"env.{key}")
            if literal is not None and self.env_name_ok(key, None):
                pairs.append((key, literal))
        pairs.append(("ANSFLOW", "'1'"))
        pairs.append(("ANSFLOW_PIPELINE", groovy_single(self.plan.name)))
        if self.remote and self.run_id is not None:
            pairs.append(("ANSFLOW_RUN_ID", groovy_single(str(self.run_id))))
        else:
            pairs.append(("ANSFLOW_RUN_ID", '"${env.BUILD_NUMBER}"'))
        return pairs

    def env_name_ok(self, name: str, step: str | None) -> bool:
        """Declarative `environment` keys must be identifiers; YAML keys need not be."""
        if IDENT.match(name):
            return True
        self.problem(
            step, f"environment variable {name!r} is not a name Jenkins accepts (left out)"
        )
        return False

    def groovy_value(self, pieces: list[Piece], step: str | None, where: str) -> str | None:
        """A Groovy string literal: single-quoted unless it must interpolate `${env.X}`."""
        if not any(isinstance(p, Dynamic) for p in pieces):
            return groovy_single("".join(p for p in pieces if isinstance(p, str)))
        literal = groovy_double(pieces)
        if literal is None:
            self.problem(
                step, f"{where}: a step output or the run status cannot be read there", True
            )
        return literal

    # --- one stage ------------------------------------------------------------------------------

    def stage_lines(self, node: StepNode, depth: int) -> list[str]:
        """The stage of one step instance, named by its id (remote mode maps it back by name)."""
        self._needs_outputs_reader = False
        self._needs_run_status = False
        stage = _Stage(node)
        self.stages[node.id] = node.id
        stage.when = self.when(node)
        stage.body = self.body(node)
        for key, value in node.step.env.items():
            if not self.env_name_ok(key, node.id):
                continue
            literal = self.groovy_value(
                self.pieces(value, node, f"env.{key}"), node.id, f"env.{key}"
            )
            if literal is not None:
                stage.environment.append((key, literal))
        stage.environment.extend(
            [
                ("ANSFLOW_STEP_ID", groovy_single(node.id)),
                ("ANSFLOW_STEP_TYPE", groovy_single(node.kind)),
                ("ANSFLOW_ATTEMPT", "'1'"),
            ]
        )
        if self._needs_run_status:
            stage.environment.append(("ANSFLOW_JENKINS_RESULT", '"${currentBuild.result}"'))
        pad, inner = INDENT * depth, INDENT * (depth + 1)
        lines = [f"{pad}stage({groovy_single(node.id)}) {{"]
        if stage.when is not None:
            lines.append(f"{inner}when {{ {stage.when} }}")
        if stage.environment:
            lines.append(f"{inner}environment {{")
            lines.extend(f"{inner}{INDENT}{k} = {v}" for k, v in stage.environment)
            lines.append(f"{inner}}}")
        lines.append(f"{inner}steps {{")
        lines.extend(self.wrap(node, stage.body, depth + 2))
        lines.append(f"{inner}}}")
        lines.append(f"{pad}}}")
        return lines

    def wrap(self, node: StepNode, body: list[str], depth: int) -> list[str]:
        """Retries, timeout, workdir and continue_on_error around the step's statements."""
        step = node.step
        defaults = self.pipeline.defaults
        blocks: list[str] = []
        workdir = step.workdir or defaults.workdir
        if workdir:
            pieces = self.pieces(workdir, node, "workdir")
            literal = self.groovy_value(pieces, node.id, "workdir")
            if literal is not None:
                blocks.append(f"dir({literal})")
        if step.continue_on_error:
            blocks.append("catchError(buildResult: 'SUCCESS', stageResult: 'FAILURE')")
        retries = step.retries if step.retries is not None else defaults.retries
        if retries:
            blocks.append(f"retry({retries + 1})")
            delay = step.retry_delay if step.retry_delay is not None else None
            if delay:
                self.problem(
                    node.id, f"`retry_delay: {delay:g}s` is not kept: Jenkins retries at once"
                )
        timeout = step.timeout if step.timeout is not None else defaults.timeout
        if timeout:
            blocks.append(f"timeout(time: {max(1, math.ceil(timeout))}, unit: 'SECONDS')")
            self.timeouts.add(node.id)
        lines: list[str] = []
        for index, block in enumerate(blocks):
            lines.append(f"{INDENT * (depth + index)}{block} {{")
        inner = INDENT * (depth + len(blocks))
        lines.extend(f"{inner}{statement}" for statement in body)
        for index in reversed(range(len(blocks))):
            lines.append(f"{INDENT * (depth + index)}}}")
        return lines

    def when(self, node: StepNode) -> str | None:
        """The stage's `when` condition, or None to run; decided now when only static values
        are read (Jenkins' `expression` cannot evaluate ansflow's templates), and given to
        Jenkins when it only tests the build's environment."""
        when = node.step.when
        if when is None or when is True:
            return None
        if when is False:
            return NEVER
        try:
            source = templates.condition_source(when)
        except templates.TemplateError as exc:
            self.problem(node.id, f"`when`: {exc.message}", True)
            return None
        if source is None:
            return None
        refs = templates.references(source)
        compact = re.sub(r"\s+", "", source)
        functions = {
            r.chain[0]
            for r in refs
            if len(r.chain) == 1 and r.chain[0] in templates.CONDITION_FUNCTIONS
        }
        if functions:
            if compact == "success()":
                return None
            if compact == "always()":
                self.problem(
                    node.id,
                    "`when: always()`: Jenkins skips every stage after a failure, so this "
                    "stage runs only when everything before it succeeded",
                )
                return None
            if compact in ("failure()", "cancelled()"):
                self.problem(
                    node.id,
                    f"`when: {compact}`: Jenkins skips every stage after a failure or an abort, "
                    "so this stage never runs",
                )
                return NEVER
            self.problem(
                node.id,
                f"`when: {source.strip()}` mixes {', '.join(sorted(functions))}() with other "
                "terms; Jenkins cannot express it",
                True,
            )
            return None
        runtime = [r for r in refs if r.chain and r.chain[0] not in STATIC_ROOTS]
        if runtime and all(r.chain[0] == "env" for r in runtime):
            translated = _env_condition(source)
            if translated is not None:
                return translated
        if runtime:
            names = ", ".join(sorted({".".join(r.chain) for r in runtime}))
            self.problem(
                node.id,
                f"`when: {source.strip()}` reads {names}, known only while running; Jenkins "
                "cannot decide it (the stage always runs)",
                True,
            )
            return None
        try:
            value = templates.evaluate(source, self.static_context(node))
        except templates.TemplateError as exc:
            self.problem(node.id, f"`when`: {exc.message}", True)
            return None
        return None if value else NEVER

    # --- step types -----------------------------------------------------------------------------

    def body(self, node: StepNode) -> list[str]:
        """The statements of a step type; what cannot run in Jenkins fails its stage loudly."""
        step = node.step
        spec = self.pipeline.targets.get(node.target)
        if isinstance(spec, SSHTarget):
            return self.unsupported(
                node, f"it runs on the SSH target {node.target!r}; a Jenkins agent cannot reach it"
            )
        if isinstance(step, AnsibleStep):
            return self.unsupported(node, "ansible steps need an SSH target's hosts")
        if isinstance(step, ApprovalStep):
            message = self.pieces(step.message or f"Approve {node.id}?", node, "message")
            if self.remote:
                return self.unsupported(
                    node,
                    "approval gates are decided by `ansflow approve`, which cannot reach a "
                    "Jenkins build; run it without --remote",
                )
            self.problem(node.id, "the approval gate becomes Jenkins' `input` step")
            literal = self.groovy_value(message, node.id, "message") or "'Approve?'"
            return [f"input(message: {literal})"]
        if isinstance(step, JenkinsStep):
            return self.jenkins_step(node, step)
        if isinstance(step, FetchCodeStep):
            return [self.sh(node, self.fetch_script(node, step), "bash")]
        if isinstance(step, NotifyStep):
            return [self.sh(node, self.notify_script(node, step), "bash")]
        if isinstance(step, DeployStep):
            return [self.sh(node, self.deploy_script(node, step), self.shell_of(step))]
        if isinstance(step, ShellStep | BuildStep | TestStep | SecurityScanStep):
            return [self.sh(node, self.run_script(node, step), self.shell_of(step))]
        return self.unsupported(node, f"step type {node.kind!r} has no Jenkins form")

    def unsupported(self, node: StepNode, why: str) -> list[str]:
        """An `error` step: an unrunnable step must fail, never pass silently."""
        self.problem(node.id, f"cannot run in Jenkins: {why} (its stage fails)", True)
        return [f"error({groovy_single(f'ansflow: step {node.id} cannot run in Jenkins: {why}')})"]

    def shell_of(self, step: StepBase) -> str | None:
        """The step's `shell`, else the pipeline default (None: bash)."""
        shell = getattr(step, "shell", None)
        return shell if shell is not None else self.pipeline.defaults.shell

    def run_script(self, node: StepNode, step: StepBase) -> str:
        """`run`, plus the checks ansflow makes after it that a shell can make too."""
        run = getattr(step, "run", None)
        parts: list[str] = []
        if run:
            parts.append(shell_text(self.pieces(run, node, "run")))
        if isinstance(step, BuildStep) and step.artifacts:
            checks = []
            for pattern in step.artifacts:
                word = shell_word(self.pieces(pattern, node, "artifacts"))
                checks.append(
                    f'compgen -G {word} > /dev/null || {{ echo "artifact {pattern} matched '
                    f'nothing" >&2; exit 1; }}'
                )
            parts.append("\n".join(checks))
            self.problem(node.id, "artifacts are checked but not archived or fingerprinted")
        if isinstance(step, TestStep) and step.junit:
            self.problem(node.id, "JUnit reports are not read (the exit status decides)")
        if isinstance(step, SecurityScanStep):
            report = shell_word(self.pieces(step.report, node, "report"))
            parts.append(f"test -f {report} || {{ echo 'no report {step.report}' >&2; exit 1; }}")
            self.problem(
                node.id,
                "the scan report is not read"
                + (f"; `fail_on: {step.fail_on}` is not applied" if step.fail_on else ""),
            )
        return "\n".join(parts) if parts else "true"

    def deploy_script(self, node: StepNode, step: DeployStep) -> str:
        """Copies on the agent (a `dest` ending in `/` is a folder), then `run`."""
        lines: list[str] = []
        for spec in step.files:
            src = shell_word(self.pieces(spec.src, node, "files.src"))
            dest_text = spec.dest
            dest = shell_word(self.pieces(dest_text, node, "files.dest"))
            if dest_text.endswith("/"):
                lines.append(f"mkdir -p {dest}")
            else:
                lines.append(f'mkdir -p "$(dirname {dest})"')
            lines.append(f"cp -R {src} {dest}")
            if spec.mode:
                lines.append(f"chmod {spec.mode} {dest}")
        if step.files:
            self.problem(node.id, "files are copied on the agent, relative to the workspace")
        if step.run:
            lines.append(shell_text(self.pieces(step.run, node, "run")))
        return "\n".join(lines) or "true"

    def fetch_script(self, node: StepNode, step: FetchCodeStep) -> str:
        """The git commands of fetch_code; the commit becomes output `commit` as locally."""
        from ansflow.steps.fetch_code import default_dest

        repo = shell_word(self.pieces(step.repo, node, "repo"))
        dest = shell_word(self.pieces(step.dest or default_dest(step.repo), node, "dest"))
        ref = shell_word(self.pieces(step.ref or "HEAD", node, "ref"))
        depth = f" --depth {step.depth}" if step.depth else ""
        lines = [
            "export GIT_TERMINAL_PROMPT=0",
            f"if [ -d {dest}/.git ]; then git -C {dest} remote set-url origin {repo};",
            f"else git clone --no-checkout{depth} -- {repo} {dest}; fi",
            f"git -C {dest} fetch{depth} --tags --force origin {ref}",
            f"git -C {dest} checkout --force FETCH_HEAD",
        ]
        if step.submodules:
            lines.append(f"git -C {dest} submodule update --init --recursive{depth}")
        lines.append(f'echo "commit=$(git -C {dest} rev-parse HEAD)" >> "$ANSFLOW_OUTPUT"')
        return "\n".join(lines)

    def notify_script(self, node: StepNode, step: NotifyStep) -> str:
        """The command with the message on stdin, or the webhook's JSON body through curl."""
        message = shell_word(self.pieces(step.message, node, "message"))
        lines = [f"ANSFLOW_MESSAGE={message}", "export ANSFLOW_MESSAGE"]
        if step.command is not None:
            command = shell_text(self.pieces(step.command, node, "command"))
            lines.append(f"printf '%s\\n' \"$ANSFLOW_MESSAGE\" | {{\n{command}\n}}")
            return "\n".join(lines)
        url = shell_word(self.pieces(step.webhook or "", node, "webhook"))
        self._needs_run_status = True
        run_id = str(self.run_id) if self.remote and self.run_id is not None else "$BUILD_NUMBER"
        lines += [
            '__ansflow_json() { local s=$1; s=${s//\\\\/\\\\\\\\}; s=${s//\\"/\\\\\\"}; '
            "s=${s//$'\\n'/\\\\n}; s=${s//$'\\t'/\\\\t}; s=${s//$'\\r'/\\\\r}; "
            'printf \'"%s"\' "$s"; }',
            'printf \'{"pipeline": %s, "run_id": %s, "status": %s, "message": %s}\' '
            f'"$(__ansflow_json {shlex.quote(self.plan.name)})" "{run_id}" '
            '"$(__ansflow_json "$ANSFLOW_RUN_STATUS")" "$(__ansflow_json "$ANSFLOW_MESSAGE")" \\',
            f"  | curl -fsS -X POST -H 'Content-Type: application/json' --data-binary @- {url}",
        ]
        return "\n".join(lines)

    def jenkins_step(self, node: StepNode, step: JenkinsStep) -> list[str]:
        """`job` becomes Jenkins' own `build` step; `run` is just a script in this pipeline."""
        if step.run is not None:
            return [self.sh(node, shell_text(self.pieces(step.run, node, "run")), "bash")]
        if self.remote:
            # NOTE: `build` needs the Pipeline: Build Step plugin and reaches only the Jenkins
            # running the Pipeline, which need not be the step's target; ansflow itself triggers
            # and follows such a job only when it runs the step.
            return self.unsupported(
                node,
                f"a step with `job:` triggers and follows another Jenkins job ({step.job!r} on "
                f"target {node.target!r}), which only ansflow itself does; run it without --remote",
            )
        job = self.groovy_value(self.pieces(step.job or "", node, "job"), node.id, "job") or "''"
        params = []
        for key, value in step.parameters.items():
            text = value if isinstance(value, str) else _scalar(value)
            literal = self.groovy_value(self.pieces(text, node, f"parameters.{key}"), node.id, key)
            if literal is not None:
                params.append(f"string(name: {groovy_single(key)}, value: {literal})")
        return [f"build(job: {job}, parameters: [{', '.join(params)}])"]

    def sh(self, node: StepNode, script: str, shell: str | None) -> str:
        """The `sh` step: bash with pipefail by default, as ansflow runs scripts (SPEC 1)."""
        preamble: list[str] = []
        if "ANSFLOW_OUTPUT" in script:
            preamble += [
                f'mkdir -p "{OUTPUTS_DIR}"',
                f"ANSFLOW_OUTPUT={output_file(node.id)}; export ANSFLOW_OUTPUT",
                ': > "$ANSFLOW_OUTPUT"',
            ]
        if self._needs_outputs_reader:
            preamble.append(
                '__ansflow_output() { local key=$1; shift; cat "$@" 2>/dev/null '
                '| sed -n "s/^${key//./\\\\.}=//p" | tail -n 1; }'
            )
        if self._needs_run_status:
            preamble.append(
                'case "${ANSFLOW_JENKINS_RESULT:-null}" in null|SUCCESS) '
                "ANSFLOW_RUN_STATUS=success;; ABORTED) ANSFLOW_RUN_STATUS=cancelled;; "
                "*) ANSFLOW_RUN_STATUS=failed;; esac"
            )
        if shell in (None, "", "bash"):
            text = "#!/bin/bash\nset -eo pipefail\n" + "\n".join([*preamble, script])
        elif shell == "sh":
            text = "\n".join([*preamble, script])
        else:
            delimiter = "ANSFLOW_SCRIPT"
            while delimiter in script.splitlines():
                delimiter += "_"
            path = f'"{OUTPUTS_DIR}/../scripts/{re.sub(r"[^A-Za-z0-9_.-]+", "_", node.id)}"'
            text = "\n".join(
                [
                    "#!/bin/bash",
                    "set -eo pipefail",
                    *preamble,
                    f'mkdir -p "$(dirname {path})"',
                    f"cat > {path} <<'{delimiter}'",
                    script,
                    delimiter,
                    f"{shell} {path}",
                ]
            )
        if not text.endswith("\n"):
            text += "\n"
        return f"sh(label: {groovy_single(node.id)}, script: {groovy_script(text)})"


def _env_condition(source: str) -> str | None:
    """A `when` made of `env.NAME` tests (`== 'text'`, `!= 'text'`, alone, with and/or/not) as
    Jenkins' own conditions (`environment`, `not`, `allOf`, `anyOf`), which read the build's
    environment; None for any other expression."""
    from jinja2 import nodes

    from ansflow.export.common import Untranslatable, parse_expression

    try:
        tree = parse_expression(source)
    except Untranslatable:
        return None

    def env_name(node: nodes.Node) -> str | None:
        if (
            isinstance(node, nodes.Getattr)
            and isinstance(node.node, nodes.Name)
            and node.node.name == "env"
            and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", node.attr)
        ):
            return node.attr
        return None

    def condition(node: nodes.Node) -> str | None:
        if isinstance(node, nodes.And | nodes.Or):
            left, right = condition(node.left), condition(node.right)
            if left is None or right is None:
                return None
            return f"{'allOf' if isinstance(node, nodes.And) else 'anyOf'} {{ {left}; {right} }}"
        if isinstance(node, nodes.Not):
            inner = condition(node.node)
            return None if inner is None else f"not {{ {inner} }}"
        name = env_name(node)
        if name is not None:
            # NOTE: as in ansflow, an unset or empty variable is false (Groovy truth).
            return f"expression {{ return env.{name} }}"
        if isinstance(node, nodes.Compare) and len(node.ops) == 1:
            name, operand = env_name(node.expr), node.ops[0]
            value = operand.expr
            if (
                name is not None
                and operand.op in ("eq", "ne")
                and isinstance(value, nodes.Const)
                and isinstance(value.value, str)
            ):
                test = (
                    f"environment name: {groovy_single(name)}, value: {groovy_single(value.value)}"
                )
                return test if operand.op == "eq" else f"not {{ {test} }}"
        return None

    return condition(tree)


def _decides_itself(node: StepNode) -> bool:
    """Whether the step's `when` uses always(), failure() or cancelled() (not just success())."""
    when = node.step.when
    if not isinstance(when, str):
        return False
    try:
        source = templates.condition_source(when)
        if source is None or not templates.calls_condition_function(source):
            return False
    except templates.TemplateError:
        return False
    return re.sub(r"\s+", "", source) != "success()"


def _indexed(chain: tuple[str, ...]) -> str:
    """`steps['test[python=3.11]'].outputs.x`, the other way to write a dotted reference."""
    head, *rest = chain
    return head + "".join(f"['{part}']" if not IDENT.match(part) else f".{part}" for part in rest)


def _scalar(value: Any) -> str:
    """A parameter value as YAML wrote it (booleans in lower case)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _comment(text: str) -> str:
    """Text on one line, so it cannot end a `//` comment early."""
    return " ".join(str(text).split())
