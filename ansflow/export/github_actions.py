"""`ansflow export --format github-actions`: the pipeline as a GitHub Actions workflow.

One job per step, `needs:` as in ansflow's graph, the matrix as `strategy.matrix`. GitHub's
`${{ }}` expressions are close to ansflow's, so templates and `when` are translated expression by
expression: `vars` become `workflow_dispatch` inputs (with the pipeline's values as defaults, so a
push runs them as ansflow would), outputs become job outputs read through `needs`, and `run.status`
is computed from the results of every upstream job. Each expression is checked against the
contexts GitHub allows where it is written (a job's `if:` cannot read `env` or `matrix`).
Everything that cannot be said is listed at the top of the file.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ansflow import templates
from ansflow.export.common import (
    OUTPUT_VAR,
    Analysis,
    StepInfo,
    TextTranslator,
    Untranslatable,
    Work,
    ansible_work,
    artifact_root,
    chain_of,
    clone_work,
    default_dest,
    deploy_local_work,
    dump_yaml,
    duration_text,
    github_repository,
    header,
    jenkins_work,
    join_path,
    notify_work,
    parse_expression,
    remote_work,
    short,
    static_value,
    status_call,
    to_text,
    unique_ids,
    uses_files,
    whole_minutes,
)
from ansflow.model import (
    AnsibleStep,
    ApprovalStep,
    BuildStep,
    DeployStep,
    FetchCodeStep,
    JenkinsStep,
    NotifyStep,
    SecurityScanStep,
    TestStep,
)

if TYPE_CHECKING:
    from jinja2.nodes import Node

    from ansflow.loader import LoadedPipeline

SYSTEM = "GitHub Actions"
RUNS_ON = "ubuntu-latest"
CHECKOUT = "actions/checkout@v4"
UPLOAD = "actions/upload-artifact@v4"
DOWNLOAD = "actions/download-artifact@v4"
#: GitHub's limit on `workflow_dispatch` inputs (older servers); later vars are fixed values.
MAX_INPUTS = 10
#: Contexts GitHub allows, by where an expression is written.
JOB_IF = frozenset({"github", "needs", "inputs"})
JOB_LEVEL = JOB_IF | {"matrix", "secrets", "strategy"}
WORKFLOW_ENV = frozenset({"github", "secrets", "inputs"})
STEP_LEVEL = JOB_LEVEL | {"env", "runner", "job", "steps"}
_NAME = re.compile(r"^[_a-zA-Z][a-zA-Z0-9_-]*$")
#: ansflow step states as GitHub job results, for `steps.<id>.status == '...'`.
_RESULTS = {
    "success": "success",
    "failed": "failure",
    "timed_out": "failure",
    "skipped": "skipped",
    "cancelled": "cancelled",
}
_COMPARE = {"eq": "==", "ne": "!=", "lt": "<", "gt": ">", "lteq": "<=", "gteq": ">="}
_RUN_STATUS = (
    "((contains(needs.*.result, 'failure') && 'failed') || "
    "(contains(needs.*.result, 'cancelled') && 'cancelled') || 'success')"
)


def render(loaded: LoadedPipeline) -> str:
    """The workflow text of a loaded pipeline (no network, no secrets needed)."""
    return GitHubExport(Analysis(loaded)).render()


def _job_id(step_id: str) -> str:
    return step_id if _NAME.match(step_id) else f"step-{step_id}"


def literal(value: Any) -> str:
    """A value as a GitHub expression literal."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return "fromJSON(" + literal(to_text(value)) + ")"


@dataclass(frozen=True)
class Input:
    """A pipeline var offered as a `workflow_dispatch` input (the GitHub side of `--var`)."""

    name: str
    default: Any

    @property
    def definition(self) -> dict[str, Any]:
        kind = "boolean" if isinstance(self.default, bool) else "string"
        default = self.default if kind == "boolean" else to_text(self.default)
        return {
            "description": f"ansflow var {self.name} (ansflow run --var {self.name}=...)",
            "type": kind,
            "default": default,
        }

    @property
    def expression(self) -> str:
        """The input's value, or the default when the run was not started by hand.

        NOTE: `inputs` is empty on a push; `||` supplies the default. Booleans go through
        `format()` because GitHub compares null and false as equal.
        """
        if isinstance(self.default, bool):
            op = "!=" if self.default else "=="
            expected = "false" if self.default else "true"
            return f"(format('{{0}}', inputs.{self.name}) {op} '{expected}')"
        return f"(inputs.{self.name} || {literal(self.default)})"


@dataclass
class JobState:
    """What translating a job's expressions found out: jobs it must also need, and why."""

    info: StepInfo
    needs: list[str] = field(default_factory=list)
    all_upstream: bool = False

    def need(self, step_id: str) -> None:
        if step_id not in self.needs and step_id != self.info.id:
            self.needs.append(step_id)


class GitHubExport:
    """Builds the workflow job by job; notes go to the analysis, the header is written last."""

    def __init__(self, analysis: Analysis) -> None:
        self.analysis = analysis
        self.notes = analysis.notes
        self.ids = unique_ids((info.id for info in analysis.steps), _job_id)
        self.inputs = self._inputs()

    def _inputs(self) -> dict[str, Input]:
        inputs: dict[str, Input] = {}
        for key, value in self.analysis.pipeline.vars.items():
            why = None
            if not isinstance(value, str | int | float | bool):
                why = "only text, number and boolean vars can be inputs"
            elif not _NAME.match(key):
                why = "its name is not a valid input name"
            elif len(inputs) >= MAX_INPUTS:
                why = f"a workflow takes at most {MAX_INPUTS} inputs"
            if why is None:
                inputs[key] = Input(key, value)
            else:
                self.notes.drop(
                    "pipeline",
                    f"var {key} is fixed to {short(to_text(value))!r} ({why}), so it cannot be "
                    "changed per run",
                )
        return inputs

    # --- whole document -----------------------------------------------------------------------

    def render(self) -> str:
        analysis = self.analysis
        pipeline = analysis.pipeline
        analysis.general_notes(SYSTEM)
        dispatch: dict[str, Any] | None = None
        if self.inputs:
            dispatch = {"inputs": {k: i.definition for k, i in self.inputs.items()}}
        workflow: dict[str, Any] = {
            "name": analysis.name,
            "on": {"push": None, "workflow_dispatch": dispatch},
            "permissions": {"contents": "read"},
            "env": self._workflow_env(),
            "defaults": {"run": {"shell": "bash"}},
            "jobs": {self.ids[info.id]: self._job(info) for info in analysis.steps},
        }
        if pipeline.secrets:
            self.notes.setup(
                "pipeline",
                f"secrets {', '.join(pipeline.secrets)}: add them as repository secrets "
                "(Settings > Secrets and variables > Actions)",
            )
        title = (
            f"Generated by `ansflow export --format github-actions` from {analysis.repo.file} "
            f"(pipeline {analysis.name}); change the pipeline, then export again."
        )
        return header(title, pipeline.description, SYSTEM, self.notes) + "\n" + dump_yaml(workflow)

    def _workflow_env(self) -> dict[str, str]:
        pipeline = self.analysis.pipeline
        env = {
            "ANSFLOW": "1",
            "ANSFLOW_PIPELINE": self.analysis.name,
            "ANSFLOW_RUN_ID": "${{ github.run_id }}",
        }
        for key, value in pipeline.env.items():
            env[key] = self._text(value, None, f"env {key}", WORKFLOW_ENV, None)
        for name in pipeline.secrets:
            env[name] = f"${{{{ secrets.{name} }}}}"
        return env

    def _text(
        self,
        value: str,
        info: StepInfo | None,
        where: str,
        allowed: frozenset[str],
        state: JobState | None,
    ) -> str:
        return Text(self, allowed, state).text(value, info, where)

    # --- one job ------------------------------------------------------------------------------

    def _job(self, info: StepInfo) -> dict[str, Any]:
        step = info.step
        notes = self.notes
        state = JobState(info)
        job: dict[str, Any] = {}
        if step.name is not None:
            job["name"] = self._text(step.name, info, "name", JOB_LEVEL, state)
        job_if, step_if = self._condition(info, state)
        if isinstance(step, ApprovalStep):
            job["environment"] = self.ids[info.id]
            reviewers = f" ({', '.join(step.approvers)})" if step.approvers else ""
            notes.setup(
                info.id,
                f"create the environment `{self.ids[info.id]}` with required reviewers"
                f"{reviewers} (Settings > Environments); the job waits for their approval",
            )
            if step.message:
                notes.drop(
                    info.id,
                    "the message is not shown to reviewers (environments have no approval "
                    "message); the job prints it once approved",
                )
        if info.timeout is not None:
            if isinstance(step, ApprovalStep):
                notes.drop(
                    info.id,
                    f"timeout {duration_text(info.timeout)} for the decision: GitHub waits up to "
                    "30 days for a review",
                )
            else:
                job["timeout-minutes"] = whole_minutes(info.timeout)
                if info.timeout % 60:
                    # NOTE: a default applies to every step; say it once, not once per job.
                    owner, what = (
                        (info.id, "timeout")
                        if step.timeout is not None
                        else ("pipeline", "defaults.timeout")
                    )
                    notes.drop(
                        owner,
                        f"{what} {duration_text(info.timeout)} rounded up to "
                        f"{whole_minutes(info.timeout)} minute(s)",
                    )
        if info.retries:
            delay = f" (retry_delay {duration_text(info.retry_delay)})" if info.retry_delay else ""
            notes.drop(
                info.id, f"retries {info.retries}{delay}: GitHub Actions does not retry jobs"
            )
        if step.continue_on_error:
            job["continue-on-error"] = True
        if info.matrix:
            job["strategy"] = {"fail-fast": False, "matrix": info.matrix}
        steps = self._steps(info, state, step_if)
        outputs = self._outputs(info)
        if outputs:
            job["outputs"] = outputs
        job["env"] = self._job_env(info)
        job["steps"] = steps
        extra = set(state.needs) | (set(info.upstream) if state.all_upstream else set())
        needs = [*info.needs]
        needs += [s.id for s in self.analysis.steps if s.id in extra and s.id not in needs]
        for dep, wanted in info.partial_needs.items():
            notes.drop(
                info.id,
                f"needs {', '.join(wanted)}: GitHub waits for every instance of {dep}",
            )
        head: dict[str, Any] = {}
        if "name" in job:
            head["name"] = job.pop("name")
        if needs:
            head["needs"] = [self.ids[n] for n in needs]
        if job_if is not None:
            head["if"] = job_if
        head["runs-on"] = RUNS_ON
        return {**head, **job}

    def _condition(self, info: StepInfo, state: JobState) -> tuple[str | None, str | None]:
        """The job's `if:`, or (when it reads what only steps may) the steps' `if:`."""
        from jinja2 import nodes

        when = info.step.when
        if when is None or when is True:
            return None, None
        if when is False:
            return "${{ false }}", None
        try:
            source = templates.condition_source(when)
        except templates.TemplateError as exc:
            self.notes.drop(info.id, f"`when`: {exc.message}; the job never runs")
            return "${{ false }}", None
        if source is None:
            return None, None
        try:
            node = parse_expression(source)
            return "${{ " + Expr(self, info, JOB_IF, state).translate(node) + " }}", None
        except Untranslatable as exc:
            reason = str(exc)
        try:
            node = parse_expression(source)
            if status_call(node) or any(status_call(n) for n in node.find_all(nodes.Call)):
                raise Untranslatable(reason)
            step_if = Expr(self, info, STEP_LEVEL, state).translate(node)
        except Untranslatable:
            self.notes.drop(
                info.id,
                f"`when: {short(source)}` cannot be said in GitHub Actions ({reason}); "
                "the job never runs",
            )
            return "${{ false }}", None
        self.notes.drop(
            info.id,
            f"`when: {short(source)}` is checked by each step ({reason} in a job's `if:`): "
            "when false the job succeeds without doing anything",
        )
        return None, "${{ " + step_if + " }}"

    def _job_env(self, info: StepInfo) -> dict[str, str]:
        step_id = info.id
        if info.matrix:
            pattern = ",".join(f"{k}={{{i}}}" for i, k in enumerate(info.matrix))
            args = ", ".join(f"matrix.{k}" for k in info.matrix)
            step_id = f"${{{{ format('{info.id}[{pattern}]', {args}) }}}}"
        return {"ANSFLOW_STEP_ID": step_id, "ANSFLOW_STEP_TYPE": info.kind}

    def _outputs(self, info: StepInfo) -> dict[str, str]:
        """Job outputs for the keys later jobs read (ansflow writes them to $ANSFLOW_OUTPUT)."""
        if not info.outputs_read or info.remote:
            return {}
        outputs: dict[str, str] = {}
        own_checkout = self._checkout_action(info) is not None
        for key in info.outputs_read:
            if not _NAME.match(key):
                self.notes.drop(info.id, f"output {key}: not a valid GitHub output name")
            elif own_checkout and key == "commit":
                outputs[key] = "${{ steps.checkout.outputs.commit }}"
            elif own_checkout and key == "dest":
                step = info.step
                assert isinstance(step, FetchCodeStep)
                outputs[key] = step.dest or default_dest(step.repo)
            else:
                outputs[key] = f"${{{{ steps.outputs.outputs.{key} }}}}"
        if info.matrix and outputs:
            self.notes.drop(
                info.id,
                "outputs of a matrix job: GitHub keeps one instance's values, ansflow requires "
                "all instances to agree",
            )
        return outputs

    # --- the job's steps ----------------------------------------------------------------------

    def _checkout_action(self, info: StepInfo) -> dict[str, Any] | None:
        """`actions/checkout` for a fetch_code of this repository or of a github.com one."""
        step = info.step
        if not isinstance(step, FetchCodeStep) or info.remote:
            return None
        own = self.analysis.is_own_repo(info)
        repository = None if own else github_repository(step.repo)
        if not own and repository is None:
            return None
        options: dict[str, Any] = {}
        if repository is not None:
            options["repository"] = repository
        if step.ref is not None:
            options["ref"] = step.ref
        dest = join_path(info.workdir, step.dest or default_dest(step.repo))
        if dest.rstrip("/") not in ("", "."):
            options["path"] = dest
        options["fetch-depth"] = step.depth or 0
        if step.submodules:
            options["submodules"] = "recursive"
        return {"name": info.step.display_name, "id": "checkout", "uses": CHECKOUT, "with": options}

    def _steps(self, info: StepInfo, state: JobState, step_if: str | None) -> list[dict[str, Any]]:
        step = info.step
        notes = self.notes

        def text(value: str, where: str) -> str:
            return self._text(value, info, where, STEP_LEVEL, state)

        def conditional(entry: dict[str, Any]) -> dict[str, Any]:
            if not step_if:
                return entry
            named = {"name": entry["name"]} if "name" in entry else {}
            return {**named, "if": step_if, **entry}

        if isinstance(step, ApprovalStep):
            message = step.message or f"approve {info.id}?"
            return [
                conditional(
                    {
                        "name": info.step.display_name,
                        "env": {"ANSFLOW_MESSAGE": text(message, "message")},
                        "run": 'echo "approved: $ANSFLOW_MESSAGE"',
                    }
                )
            ]
        checkout = self._checkout_action(info)
        if checkout is not None:
            checkout["with"] = {
                k: text(v, k) if isinstance(v, str) else v for k, v in checkout["with"].items()
            }
            if "repository" in checkout["with"]:
                notes.setup(
                    info.id,
                    f"a private {checkout['with']['repository']} needs a token with access to "
                    "it (actions/checkout `token:`)",
                )
            return [conditional(checkout)]
        steps: list[dict[str, Any]] = []
        if uses_files(info):
            steps.append({"uses": CHECKOUT})
        steps += self._downloads(info)
        work = self._work(info)
        env: dict[str, str] = {OUTPUT_VAR: "${{ runner.temp }}/ansflow-output"}
        for key, value in step.env.items():
            env[key] = text(value, f"env {key}")
        for key, value in work.env.items():
            env[key] = text(value, work.fields.get(key, key))
        runs: list[dict[str, Any]] = []
        user = work.user_script
        if user is not None:
            user = text(user, "run")
        if work.prelude and user is not None and work.user_shell in (None, "bash"):
            runs.append({"run": work.prelude + user})
        else:
            if work.prelude:
                runs.append({"run": work.prelude.rstrip("\n")})
            if user is not None:
                entry: dict[str, Any] = {"run": user}
                if work.user_shell not in (None, "bash"):
                    entry["shell"] = "sh" if work.user_shell == "sh" else f"{work.user_shell} {{0}}"
                runs.append(entry)
        if not runs:
            runs.append({"run": "true"})
        for index, entry in enumerate(runs):
            main: dict[str, Any] = {"name": info.step.display_name}
            if index == len(runs) - 1:
                main["id"] = "run"
            if info.workdir is not None and uses_files(info):
                # NOTE: only a job that checked the repository out has the folder.
                main["working-directory"] = text(info.workdir, "workdir")
            main["env"] = env
            steps.append(conditional({**main, **entry}))
        steps += self._uploads(info, state)
        if info.outputs_read and not info.remote:
            steps.append(
                conditional(
                    {
                        "name": "outputs for later jobs",
                        "id": "outputs",
                        "run": (
                            'touch "$RUNNER_TEMP/ansflow-output"\n'
                            'cat "$RUNNER_TEMP/ansflow-output" >> "$GITHUB_OUTPUT"'
                        ),
                    }
                )
            )
        return steps

    def _work(self, info: StepInfo) -> Work:
        step = info.step
        if isinstance(step, FetchCodeStep):
            self.analysis.local_repo_note(info)
            if info.remote:
                return remote_work(self.analysis, info, clone_work(info, step).prelude, [])
            return clone_work(info, step)
        if isinstance(step, NotifyStep):
            return notify_work(info, step)
        if isinstance(step, JenkinsStep):
            if step.job is not None:
                return jenkins_work(self.analysis, info, step)
            self.notes.drop(
                info.id, "the managed Jenkins job is not kept: its `run` script runs in this job"
            )
            return Work(user_script=step.run, user_shell=info.shell)
        if isinstance(step, AnsibleStep):
            return ansible_work(self.analysis, info, step)
        if info.remote:
            files = step.files if isinstance(step, DeployStep) else []
            return remote_work(self.analysis, info, getattr(step, "run", None), files)
        if isinstance(step, DeployStep):
            return deploy_local_work(info, step)
        return Work(user_script=getattr(step, "run", None), user_shell=info.shell)

    def _downloads(self, info: StepInfo) -> list[dict[str, Any]]:
        """Upstream build artifacts, put back where ansflow's shared folder would have them."""
        steps: list[dict[str, Any]] = []
        for producer in self.analysis.artifact_producers(info):
            assert isinstance(producer.step, BuildStep)
            name = f"artifacts.{self.ids[producer.id]}"
            globs = [join_path(producer.workdir, p) for p in producer.step.artifacts]
            options: dict[str, Any] = (
                {"pattern": f"{name}.*", "merge-multiple": True}
                if producer.matrix
                else {"name": name}
            )
            options["path"] = artifact_root(globs)
            steps.append(
                {
                    "name": f"artifacts of {producer.id}",
                    "uses": DOWNLOAD,
                    # NOTE: the build may have been skipped; ansflow would find no files either.
                    "continue-on-error": True,
                    "with": options,
                }
            )
        return steps

    def _uploads(self, info: StepInfo, state: JobState) -> list[dict[str, Any]]:
        step = info.step
        notes = self.notes
        suffix = ".${{ strategy.job-index }}" if info.matrix else ""

        def paths(globs: list[str]) -> str:
            joined = [join_path(info.workdir, g) for g in globs]
            return "\n".join(self._text(g, info, "artifacts", STEP_LEVEL, state) for g in joined)

        if info.remote and isinstance(step, BuildStep | TestStep | SecurityScanStep):
            notes.drop(info.id, "artifacts and reports stay on the SSH hosts")
            return []
        if isinstance(step, BuildStep) and step.artifacts:
            if any(re.search(r"[*?\[][^/]*/", g) for g in step.artifacts):
                notes.drop(
                    info.id,
                    "artifacts with a wildcard in a folder name may come back in another folder "
                    "in later jobs (upload-artifact drops their common folder)",
                )
            return [
                {
                    "name": "upload artifacts",
                    "uses": UPLOAD,
                    "with": {
                        "name": f"artifacts.{self.ids[info.id]}{suffix}",
                        "path": paths(step.artifacts),
                        "if-no-files-found": "error",
                    },
                }
            ]
        reports: list[str] = []
        if isinstance(step, TestStep) and step.junit:
            reports = list(step.junit)
            notes.drop(
                info.id,
                "JUnit results are uploaded as an artifact, not checked: the job fails only "
                "when `run` fails",
            )
        elif isinstance(step, SecurityScanStep):
            reports = [step.report]
            if step.fail_on:
                notes.drop(
                    info.id,
                    f"fail_on {step.fail_on}: the report is uploaded, not read; the job fails "
                    "only when the scanner does",
                )
        if not reports:
            return []
        return [
            {
                "name": "upload reports",
                "if": "${{ !cancelled() }}",
                "uses": UPLOAD,
                "with": {
                    "name": f"reports.{self.ids[info.id]}{suffix}",
                    "path": paths(reports),
                    "if-no-files-found": "warn",
                },
            }
        ]


class Text(TextTranslator):
    """Templates in a string field: `${{ }}` with GitHub's expression for each span."""

    system = SYSTEM

    def __init__(
        self, export: GitHubExport, allowed: frozenset[str], state: JobState | None
    ) -> None:
        super().__init__(export.analysis)
        self.export = export
        self.allowed = allowed
        self.state = state

    def span(self, source: str, step: StepInfo | None, where: str) -> str:
        constant = self.constant(source)
        if constant is not None:
            return constant
        try:
            refs = templates.references(source)
        except templates.TemplateError:
            refs = []
        fixed = [
            r
            for r in refs
            if r.chain[0] == "vars" and r.chain[1:2] and r.chain[1] not in self.export.inputs
        ]
        if refs and len(fixed) == len(refs):
            # NOTE: vars that are not inputs have one value; paste its text as ansflow would.
            with contextlib.suppress(Untranslatable):
                value, _ = static_value(source, self.analysis)
                return to_text(value)
        try:
            node = parse_expression(source)
            return (
                "${{ " + Expr(self.export, step, self.allowed, self.state).translate(node) + " }}"
            )
        except Untranslatable as exc:
            return self.fallback(source, step, where, str(exc))


class Expr:
    """One ansflow expression as a GitHub expression, using only the contexts allowed there."""

    def __init__(
        self,
        export: GitHubExport,
        info: StepInfo | None,
        allowed: frozenset[str],
        state: JobState | None,
    ) -> None:
        self.export = export
        self.info = info
        self.allowed = allowed
        self.state = state

    def translate(self, node: Node) -> str:
        from jinja2 import nodes

        name = status_call(node)
        if name is not None:
            return f"{name}()"
        if isinstance(node, nodes.Const):
            if isinstance(node.value, float) and not node.value == node.value:
                raise Untranslatable("not a number")
            return literal(node.value)
        if isinstance(node, nodes.And | nodes.Or):
            op = "&&" if isinstance(node, nodes.And) else "||"
            return f"({self.translate(node.left)} {op} {self.translate(node.right)})"
        if isinstance(node, nodes.Not):
            return f"!({self.translate(node.node)})"
        if isinstance(node, nodes.Compare):
            return self._compare(node)
        if isinstance(node, nodes.Concat):
            parts = [self.translate(n) for n in node.nodes]
            pattern = "".join(f"{{{i}}}" for i in range(len(parts)))
            return f"format('{pattern}', {', '.join(parts)})"
        if isinstance(node, nodes.Filter) and node.node is not None:
            if node.name == "default" and len(node.args) == 1 and not node.kwargs:
                return f"({self.translate(node.node)} || {self.translate(node.args[0])})"
            if node.name == "join" and len(node.args) <= 1 and not node.kwargs:
                separator = self.translate(node.args[0]) if node.args else "''"
                return f"join({self.translate(node.node)}, {separator})"
            if node.name == "string" and not node.args:
                return f"format('{{0}}', {self.translate(node.node)})"
            raise Untranslatable(f"GitHub has no `{node.name}` filter")
        chain = chain_of(node)
        if chain is not None:
            return self.reference(chain)
        raise Untranslatable(f"GitHub expressions have no `{type(node).__name__}`")

    def _compare(self, node: Node) -> str:
        from jinja2 import nodes

        assert isinstance(node, nodes.Compare)
        if len(node.ops) != 1:
            raise Untranslatable("chained comparisons")
        op = node.ops[0]
        if op.op in ("in", "notin"):
            if isinstance(op.expr, nodes.List | nodes.Tuple):
                if not all(isinstance(item, nodes.Const) for item in op.expr.items):
                    raise Untranslatable("`in` a list of non-literals")
                values = [item.value for item in op.expr.items if isinstance(item, nodes.Const)]
                haystack = literal(values)
            else:
                haystack = self.translate(op.expr)
            test = f"contains({haystack}, {self.translate(node.expr)})"
            return test if op.op == "in" else f"!{test}"
        if op.op not in _COMPARE:
            raise Untranslatable(f"`{op.op}` comparisons")
        left, right = node.expr, op.expr
        for status_side, other in ((left, right), (right, left)):
            chain = chain_of(status_side)
            if (
                chain is not None
                and len(chain) == 3
                and chain[0] == "steps"
                and chain[2] == "status"
                and isinstance(other, nodes.Const)
                and isinstance(other.value, str)
            ):
                if other.value not in _RESULTS:
                    raise Untranslatable(f"step status {other.value!r} has no GitHub result")
                mapped = literal(_RESULTS[other.value])
                status = self.reference(chain)
                return f"({status} {_COMPARE[op.op]} {mapped})"
        return f"({self.translate(left)} {_COMPARE[op.op]} {self.translate(right)})"

    def _require(self, context: str, dotted: str) -> None:
        if context not in self.allowed:
            raise Untranslatable(f"`{dotted}` would need the `{context}` context, not available")

    def reference(self, chain: tuple[str, ...]) -> str:
        """A dotted ansflow name as a GitHub expression."""
        export = self.export
        analysis = export.analysis
        head = chain[0]
        dotted = ".".join(chain)
        if head == "vars" and len(chain) >= 2 and chain[1] in analysis.pipeline.vars:
            if len(chain) == 2 and chain[1] in export.inputs:
                self._require("inputs", dotted)
                return export.inputs[chain[1]].expression
            value: Any = analysis.pipeline.vars[chain[1]]
            for part in chain[2:]:
                if not isinstance(value, dict) or part not in value:
                    raise Untranslatable(f"`{dotted}` is not defined")
                value = value[part]
            return literal(value)
        if head == "pipeline" and len(chain) == 2 and chain[1] in ("name", "file"):
            return literal(analysis.name if chain[1] == "name" else analysis.repo.file)
        if head == "env" and len(chain) == 2:
            if "env" in self.allowed:
                return f"env.{chain[1]}" if _NAME.match(chain[1]) else f"env[{literal(chain[1])}]"
            value = analysis.pipeline.env.get(chain[1])
            if value is not None and not templates.has_template(value):
                return literal(value)
            self._require("env", dotted)
        if head == "secrets" and len(chain) == 2:
            self._require("secrets", dotted)
            return f"secrets.{chain[1]}"
        if head == "matrix" and len(chain) == 2 and self.info and chain[1] in self.info.matrix:
            self._require("matrix", dotted)
            return f"matrix.{chain[1]}"
        if chain == ("run", "id"):
            return "github.run_id"
        if chain == ("run", "status"):
            self._require("needs", dotted)
            if self.state is not None:
                self.state.all_upstream = True
            return _RUN_STATUS
        if head == "steps" and len(chain) >= 3 and chain[1] in analysis.by_id:
            producer = analysis.by_id[chain[1]]
            job = export.ids[producer.id]
            self._require("needs", dotted)
            if len(chain) == 3 and chain[2] == "status":
                self._need(producer.id)
                return f"needs.{job}.result"
            if len(chain) == 4 and chain[2] == "outputs" and not producer.remote:
                if not _NAME.match(chain[3]):
                    raise Untranslatable(f"`{chain[3]}` is not a valid GitHub output name")
                self._need(producer.id)
                return f"needs.{job}.outputs.{chain[3]}"
        raise Untranslatable(f"`{dotted}` has no GitHub Actions equivalent")

    def _need(self, step_id: str) -> None:
        if self.state is None:
            raise Untranslatable("outputs of steps are only available to jobs")
        self.state.need(step_id)
