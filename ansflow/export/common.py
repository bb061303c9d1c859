"""What the GitLab CI and GitHub Actions exporters share: the reading of a pipeline, the notes on
what cannot be expressed, expressions, generated shell, durations, ids and the YAML writer.

Both systems run one job per step in a fresh workspace, so the questions are the same (which steps
read whose outputs, which files must travel as artifacts, where a step runs); only the syntax of
the answers differs, and that lives in the two format modules.
"""

from __future__ import annotations

import json
import math
import posixpath
import re
import shlex
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import yaml

from ansflow import templates
from ansflow.model import (
    AnsibleStep,
    ApprovalStep,
    BuildStep,
    DeployStep,
    FetchCodeStep,
    JenkinsStep,
    JenkinsTarget,
    NotifyStep,
    Scalar,
    SSHTarget,
    StepBase,
    matrix_text,
)
from ansflow.planner import split_needs_name

if TYPE_CHECKING:
    from jinja2.nodes import Node

    from ansflow.loader import LoadedPipeline
    from ansflow.planner import StepNode

STATUS_FUNCTIONS = templates.CONDITION_FUNCTIONS
#: Where ansflow steps write `key=value` outputs; the exporters point it at a file of their own.
OUTPUT_VAR = "ANSFLOW_OUTPUT"


# --- notes ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Note:
    """One line of the header: a step (or `pipeline`) and what happened to one of its features."""

    order: int
    seq: int
    step: str
    text: str


class Notes:
    """What the target cannot express (or needs set up by hand), so nothing is dropped silently.

    Notes are ordered by the step's place in the plan, then by when they were made, so the
    header reads top to bottom like the pipeline and does not depend on the order of rendering.
    """

    def __init__(self, order: Mapping[str, int]) -> None:
        self._order = order
        self._dropped: list[Note] = []
        self._setup: list[Note] = []
        self._seen: set[tuple[str, str, str]] = set()

    def _add(self, kind: str, into: list[Note], step: str, text: str) -> None:
        key = (kind, step, text)
        if key in self._seen:
            return
        self._seen.add(key)
        into.append(Note(self._order.get(step, -1), len(self._seen), step, text))

    def drop(self, step: str, text: str) -> None:
        """Something of `step` the target cannot express: dropped or approximated."""
        self._add("drop", self._dropped, step, text)

    def setup(self, step: str, text: str) -> None:
        """Something the user must set up in the CI system for `step` to work."""
        self._add("setup", self._setup, step, text)

    @property
    def dropped(self) -> list[Note]:
        return sorted(self._dropped, key=lambda n: (n.order, n.seq))

    @property
    def setups(self) -> list[Note]:
        return sorted(self._setup, key=lambda n: (n.order, n.seq))


def comment_text(text: str) -> str:
    """Text safe inside one `# ...` line: no line breaks or control characters."""
    flat = re.sub(r"\s*[\r\n]+\s*", " ", text)
    return "".join(c if c.isprintable() else "\ufffd" for c in flat)


def header(title: str, description: str | None, system: str, notes: Notes) -> str:
    """The comment block that opens the file: origin, what to set up, what was dropped."""
    lines = [f"# {comment_text(title)}"]
    if description:
        lines += [f"# {comment_text(line)}" for line in description.strip().splitlines()]
    if notes.setups:
        lines += ["#", f"# Set up in {system} before the first run:"]
        lines += [f"#   - {comment_text(n.step)}: {comment_text(n.text)}" for n in notes.setups]
    lines.append("#")
    if notes.dropped:
        lines.append(f"# Not expressible in {system} (dropped or approximated):")
        lines += [f"#   - {comment_text(n.step)}: {comment_text(n.text)}" for n in notes.dropped]
    else:
        lines.append(f"# Not expressible in {system}: nothing, every feature was translated.")
    return "\n".join(lines) + "\n"


def short(text: str, limit: int = 60) -> str:
    """A value quoted in a note, cut so that a long script does not flood the header."""
    flat = comment_text(text).strip()
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


# --- the repository around the pipeline file ------------------------------------------------------


@dataclass(frozen=True)
class Repo:
    """Where the pipeline file sits in its git work tree; CI jobs start at the tree's root."""

    #: The pipeline file's folder relative to the work tree root ("." at the root).
    folder: str
    #: The pipeline file relative to the work tree root (its name when there is no work tree).
    file: str
    #: The `origin` remote, to tell a `fetch_code` of this very repository from another one.
    origin: str | None


def find_repo(path: Path) -> Repo:
    """The work tree holding `path` (the nearest folder with `.git`), read from disk only.

    Without a work tree the pipeline's folder is taken as the root: that is where the CI file
    would be committed next to it.
    """
    folder = path.resolve().parent
    for candidate in (folder, *folder.parents):
        git = candidate / ".git"
        if git.exists():
            rel = folder.relative_to(candidate).as_posix()
            return Repo(
                rel, posixpath.join(rel, path.name) if rel != "." else path.name, _origin_url(git)
            )
    return Repo(".", path.name, None)


_REMOTE_ORIGIN = re.compile(r'^\s*\[remote\s+"origin"\]\s*$')
_SECTION = re.compile(r"^\s*\[")
_URL = re.compile(r"^\s*url\s*=\s*(.+?)\s*$")


def _origin_url(git: Path) -> str | None:
    """`remote.origin.url` from `.git/config` (a `.git` file of a worktree is not followed)."""
    try:
        text = (git / "config").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    inside = False
    for line in text.splitlines():
        if _SECTION.match(line):
            inside = bool(_REMOTE_ORIGIN.match(line))
        elif inside and (match := _URL.match(line)):
            return match.group(1)
    return None


def normalise_repo_url(url: str) -> str:
    """`git@github.com:o/r.git`, `https://u@github.com/o/r/` -> `github.com/o/r`, to compare."""
    text = url.strip().rstrip("/").removesuffix(".git")
    if "://" in text:
        text = text.split("://", 1)[1]
        text = text.split("@", 1)[1] if "@" in text.split("/", 1)[0] else text
    elif re.match(r"^[^/]+:", text):  # scp-like user@host:path
        host, rest = text.split(":", 1)
        text = host.split("@", 1)[-1] + "/" + rest.lstrip("/")
    host, _, rest = text.partition("/")
    host = re.sub(r":\d+$", "", host.lower())
    return f"{host}/{rest}" if rest else host


def github_repository(url: str) -> str | None:
    """`owner/name` of a github.com URL, which `actions/checkout` can fetch by itself."""
    normal = normalise_repo_url(url)
    parts = normal.split("/")
    if len(parts) == 3 and parts[0] == "github.com" and all(parts[1:]):
        return f"{parts[1]}/{parts[2]}"
    return None


def default_dest(repo: str) -> str:
    """`https://x/shop.git` -> `shop`, the folder `fetch_code` clones into without `dest`.

    NOTE: the same rule as ansflow.steps.fetch_code; not imported so that exporting does not load
    the step runners.
    """
    tail = re.split(r"[/:]", repo.rstrip("/"))[-1]
    return tail.removesuffix(".git") or "repo"


# --- the pipeline, read once for both formats -----------------------------------------------------


@dataclass
class StepInfo:
    """One step (all its matrix instances) with everything a job needs, defaults applied."""

    id: str
    step: StepBase
    kind: str
    nodes: tuple[StepNode, ...]
    position: int
    #: Base ids this step waits for (its `needs`, or the entry before it).
    needs: tuple[str, ...]
    #: Needed steps of which only some matrix instances are needed: {base id: instance ids}.
    partial_needs: dict[str, tuple[str, ...]]
    upstream: frozenset[str]
    target_kind: str
    timeout: float | None
    retries: int
    retry_delay: float | None
    shell: str | None
    #: Folder relative to the work tree root (or absolute) where the step runs; None: the root.
    workdir: str | None
    #: Output keys other steps read from this one (`steps.<id>.outputs.<key>`), sorted.
    outputs_read: list[str] = field(default_factory=list)
    #: Steps whose outputs this one reads.
    reads_outputs_of: list[str] = field(default_factory=list)
    reads_run_status: bool = False

    @property
    def matrix(self) -> dict[str, list[Scalar]]:
        return dict(self.step.matrix or {})

    @property
    def remote(self) -> bool:
        """Whether its commands run on SSH hosts (an ansible step runs its playbook locally)."""
        return self.target_kind == "ssh" and self.kind != "ansible"


class Analysis:
    """A loaded pipeline seen as CI jobs: steps in plan order, their data flow and defaults."""

    def __init__(self, loaded: LoadedPipeline) -> None:
        self.loaded = loaded
        self.pipeline = loaded.pipeline
        self.name = loaded.name
        self.repo = find_repo(loaded.path)
        plan = loaded.plan()
        self.plan = plan
        grouped: dict[str, list[StepNode]] = {}
        for node in plan.nodes:
            grouped.setdefault(node.base_id, []).append(node)
        self.steps: list[StepInfo] = []
        for position, (base_id, nodes) in enumerate(grouped.items()):
            self.steps.append(self._info(base_id, tuple(nodes), position))
        self.by_id = {info.id: info for info in self.steps}
        self.notes = Notes({info.id: info.position for info in self.steps})
        self._read_references()

    def _info(self, base_id: str, nodes: tuple[StepNode, ...], position: int) -> StepInfo:
        step = nodes[0].step
        defaults = self.pipeline.defaults
        partial: dict[str, tuple[str, ...]] = {}
        needs = self.plan.graph.needs[base_id]
        for dep in needs:
            wanted = tuple(i for i in nodes[0].needs if split_needs_name(i) == dep)
            if set(wanted) != set(self.plan.instances[dep]):
                partial[dep] = wanted
        target = self.pipeline.targets.get(step.on or "local")
        retry_delay = step.retry_delay
        if retry_delay is None and "retry_delay" in defaults.model_fields_set:
            retry_delay = defaults.retry_delay
        return StepInfo(
            id=base_id,
            step=step,
            kind=nodes[0].kind,
            nodes=nodes,
            position=position,
            needs=needs,
            partial_needs=partial,
            upstream=self.plan.graph.upstream[base_id],
            target_kind=target.type if target is not None else "local",
            timeout=step.timeout if step.timeout is not None else defaults.timeout,
            retries=step.retries if step.retries is not None else defaults.retries,
            retry_delay=retry_delay,
            shell=getattr(step, "shell", None) or defaults.shell,
            workdir=self._workdir(step.workdir or defaults.workdir),
        )

    def _workdir(self, workdir: str | None) -> str | None:
        """The step's folder seen from the work tree root, where CI jobs start."""
        base = self.repo.folder
        if workdir is None:
            return None if base == "." else base
        if workdir.startswith(("/", "~", "$")) or base == ".":
            return workdir
        if templates.has_template(workdir):
            return f"{base}/{workdir}"
        return posixpath.normpath(posixpath.join(base, workdir))

    def _read_references(self) -> None:
        """Who reads whose outputs, and who reads `run.status`: both need extra job plumbing."""
        read: dict[str, set[str]] = {}
        for info in self.steps:
            readers: list[str] = []
            for chain in step_references(info.step):
                if chain[:2] == ("run", "status"):
                    info.reads_run_status = True
                if len(chain) >= 4 and chain[0] == "steps" and chain[2] == "outputs":
                    producer = chain[1]
                    if producer in self.by_id and producer != info.id:
                        read.setdefault(producer, set()).add(chain[3])
                        if producer not in readers:
                            readers.append(producer)
            info.reads_outputs_of = readers
        for producer, keys in read.items():
            self.by_id[producer].outputs_read = sorted(keys)

    def is_own_repo(self, info: StepInfo) -> bool:
        """Whether a fetch_code step fetches the repository the CI file lives in (its origin).

        The CI system has checked that repository out already; without a `ref` the job keeps
        the commit the pipeline runs for, which is what a CI user means (with a note).
        """
        step = info.step
        origin = self.repo.origin
        if not isinstance(step, FetchCodeStep) or origin is None:
            return False
        own = normalise_repo_url(origin) == normalise_repo_url(step.repo)
        if own and step.ref is None:
            self.notes.drop(
                info.id,
                "no `ref`: the job uses the commit the pipeline runs for, not the remote's HEAD",
            )
        return own

    def local_repo_note(self, info: StepInfo) -> None:
        step = info.step
        if isinstance(step, FetchCodeStep) and not re.match(r"^[a-z+]+://|^[^/]+:", step.repo):
            self.notes.drop(
                info.id, f"repo {step.repo} is a local path, which the CI runner does not have"
            )

    def target(self, info: StepInfo) -> Any:
        return self.pipeline.targets.get(info.step.on or "local")

    def static_context(self) -> dict[str, Any]:
        """What an expression may read at export time: the default vars and the pipeline."""
        literal_env = {k: v for k, v in self.pipeline.env.items() if not templates.has_template(v)}
        return {
            "vars": self.pipeline.vars,
            "pipeline": {"name": self.name, "file": self.repo.file},
            "env": literal_env,
        }

    def artifact_producers(self, info: StepInfo) -> list[StepInfo]:
        """Upstream `build` steps with artifacts: their files must reach this step's job."""
        if not uses_files(info):
            return []
        return [
            other
            for other in self.steps
            if other.id in info.upstream
            and isinstance(other.step, BuildStep)
            and other.step.artifacts
            and not other.remote
        ]

    def general_notes(self, system: str) -> None:
        """Notes about the pipeline as a whole (not about one step)."""
        pipeline = self.pipeline
        notes = self.notes
        if pipeline.concurrency is not None:
            notes.drop(
                "pipeline",
                f"concurrency {pipeline.concurrency}: {system} runs as many jobs at once as it "
                "has runners",
            )
        if len(self.steps) > 1:
            notes.drop(
                "pipeline",
                "each job starts from a fresh checkout: only `build` artifacts and outputs reach "
                "later jobs, other files a step writes do not",
            )
        if pipeline.inventory:
            notes.drop(
                "pipeline",
                f"inventory {pipeline.inventory}: SSH hosts are used as written in `hosts:` "
                "(groups and host variables are not resolved, except by ansible steps)",
            )


_SKIPPED_FIELDS = frozenset({"id", "type", "needs", "matrix"})


def uses_files(info: StepInfo) -> bool:
    """Whether the step runs the user's commands or files (and so needs the checkout)."""
    step = info.step
    if isinstance(step, ApprovalStep | FetchCodeStep):
        return False
    if isinstance(step, NotifyStep):
        return step.command is not None
    if isinstance(step, JenkinsStep):
        return step.run is not None
    return True


def step_references(step: StepBase) -> list[tuple[str, ...]]:
    """Every dotted name the step's templates and `when` read (the loader checked their syntax)."""
    chains: list[tuple[str, ...]] = []
    data = step.model_dump(exclude=set(_SKIPPED_FIELDS))
    when = data.pop("when", None)
    sources: list[str] = []
    if isinstance(when, str):
        try:
            source = templates.condition_source(when)
        except templates.TemplateError:
            source = None
        if source is not None:
            sources.append(source)
    for _path, text in templates.iter_strings(data):
        if templates.has_template(text):
            sources += [span.source for span in templates.spans(text)]
    for source in sources:
        try:
            chains += [ref.chain for ref in templates.references(source)]
        except templates.TemplateError:
            continue
    return chains


# --- expressions ---------------------------------------------------------------------------------


class Untranslatable(Exception):
    """An expression (or part of one) the target system has no way to say."""


def parse_expression(source: str) -> Node:
    """The syntax tree of one `${{ }}` expression (the same grammar ansflow evaluates)."""
    from jinja2 import Environment, nodes

    try:
        tree = Environment().parse("{{ (" + source + "\n) }}")
    except Exception as exc:  # NOTE: the loader already refused bad syntax; be safe anyway
        raise Untranslatable(f"cannot read `{source.strip()}`") from exc
    output = tree.body[0]
    assert isinstance(output, nodes.Output)
    return output.nodes[0]


def chain_of(node: Node) -> tuple[str, ...] | None:
    """`steps.build.outputs.sha` (or `vars['x']`) as a tuple of names; None for anything else."""
    from jinja2 import nodes

    if isinstance(node, nodes.Name):
        return (node.name,)
    if isinstance(node, nodes.Getattr):
        base = chain_of(node.node)
        return None if base is None else (*base, node.attr)
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        base = chain_of(node.node)
        return None if base is None else (*base, str(node.arg.value))
    return None


def status_call(node: Node) -> str | None:
    """`always()` -> "always"; None when the node is not a call of a status function."""
    from jinja2 import nodes

    if (
        isinstance(node, nodes.Call)
        and isinstance(node.node, nodes.Name)
        and node.node.name in STATUS_FUNCTIONS
        and not node.args
        and not node.kwargs
    ):
        return node.node.name
    return None


def _and_operands(node: Node) -> list[Node]:
    from jinja2 import nodes

    if isinstance(node, nodes.And):
        return _and_operands(node.left) + _and_operands(node.right)
    return [node]


def _calls_status(node: Node) -> bool:
    from jinja2 import nodes

    return any(status_call(n) for n in node.find_all(nodes.Call)) or bool(status_call(node))


@dataclass(frozen=True)
class Condition:
    """A `when`, split as the CI systems with no expression language need it.

    `status` is the status function it hinges on (success when it names none); `rest` is what is
    left once that function is taken out of a top-level `and`; `mixed` says the functions sit
    deeper (`failure() or vars.x`), which only GitHub can say.
    """

    status: str
    rest: Node | None
    source: str | None
    node: Node | None
    constant: bool | None = None
    mixed: bool = False


def split_condition(when: str | bool | None) -> Condition:
    """Read a step's `when` (default success())."""
    from jinja2 import nodes

    if when is None or when is True:
        return Condition("success", None, None, None)
    if when is False:
        return Condition("success", None, None, None, constant=False)
    source = templates.condition_source(when)
    if source is None:
        return Condition("success", None, None, None)
    node = parse_expression(source)
    if isinstance(node, nodes.Const) and isinstance(node.value, bool):
        return Condition("success", None, source, node, constant=node.value)
    operands = _and_operands(node)
    called = [status_call(op) for op in operands]
    statuses = [c for c in called if c]
    others = [op for op, c in zip(operands, called, strict=True) if not c]
    if len(statuses) > 1 or any(_calls_status(op) for op in others):
        return Condition("success", None, source, node, mixed=True)
    rest: Node | None = None
    for op in others:
        rest = op if rest is None else nodes.And(rest, op)
    return Condition(statuses[0] if statuses else "success", rest, source, node)


def to_text(value: Any) -> str:
    """A value as ansflow writes it into a string (booleans lower case, lists as JSON)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value)
    return str(value)


def static_value(source: str, analysis: Analysis) -> tuple[Any, bool]:
    """Evaluate an expression at export time: (value, whether it read `vars`).

    Raises Untranslatable when it needs anything only known while running (outputs, secrets,
    matrix values, the run).
    """
    try:
        value = templates.evaluate(source, analysis.static_context())
    except templates.TemplateError as exc:
        raise Untranslatable(exc.message) from None
    reads_vars = any(ref.chain[0] == "vars" for ref in templates.references(source))
    return value, reads_vars


# --- text with templates, as the formats translate it --------------------------------------------


class TextTranslator:
    """Turns `${{ }}` spans inside a string into the target's syntax, one span at a time.

    Subclasses translate one span (`span`); what they cannot translate is evaluated at export time
    when it only reads the default vars and the pipeline (with a note, since `--var` can no longer
    change it), and otherwise left out with a note naming the step and the field.
    """

    system = "the target"

    def __init__(self, analysis: Analysis) -> None:
        self.analysis = analysis

    def span(self, source: str, step: StepInfo | None, where: str) -> str:
        raise NotImplementedError

    def literal(self, text: str) -> str:
        """Plain text between spans, escaped for the target."""
        return text

    def constant(self, source: str) -> str | None:
        """The text of an expression that reads nothing but the pipeline's name and file."""
        try:
            if any(ref.chain[0] != "pipeline" for ref in templates.references(source)):
                return None
            value, _ = static_value(source, self.analysis)
        except (Untranslatable, templates.TemplateError):
            return None
        return self.literal(to_text(value))

    def fallback(self, source: str, step: StepInfo | None, where: str, why: str) -> str:
        owner = step.id if step else "pipeline"
        try:
            value, reads_vars = static_value(source, self.analysis)
        except Untranslatable:
            self.analysis.notes.drop(
                owner,
                f"{where}: `${{{{ {source.strip()} }}}}` is left out ({why})",
            )
            return ""
        text = to_text(value)
        if reads_vars:
            self.analysis.notes.drop(
                owner,
                f"{where}: `${{{{ {source.strip()} }}}}` is fixed to {short(text)!r}, its value "
                f"with the default vars ({why})",
            )
        return self.literal(text)

    def text(self, value: str, step: StepInfo | None, where: str) -> str:
        """The whole string with every span translated."""
        if not templates.has_template(value):
            return self.literal(value)
        out: list[str] = []
        position = 0
        for found in templates.spans(value):
            out.append(self.literal(value[position : found.start]))
            out.append(self.span(found.source, step, where))
            position = found.end
        out.append(self.literal(value[position:]))
        return "".join(out)


# --- generated shell -----------------------------------------------------------------------------


@dataclass
class Work:
    """What a job runs, before the format writes it.

    `prelude` is bash written by the exporter (no templates in it); values that come from the
    pipeline and may hold templates are passed in `env`, which the format translates, so that no
    template text is ever pasted into generated shell. `user_script` is the step's own `run`,
    which the format translates as a script and runs with `user_shell` after the prelude.
    """

    prelude: str = ""
    env: dict[str, str] = field(default_factory=dict)
    #: The pipeline field each env value comes from, to name it in notes.
    fields: dict[str, str] = field(default_factory=dict)
    user_script: str | None = None
    user_shell: str | None = None

    def set(self, name: str, text: str, where: str) -> None:
        self.env[name] = text
        self.fields[name] = where

    def word(self, name: str, text: str, where: str) -> str:
        """A shell word for `text`: quoted when it is plain, else an env var set to it."""
        if not templates.has_template(text):
            return shlex.quote(text)
        self.set(name, text, where)
        return f'"${name}"'

    def add(self, *lines: str) -> None:
        self.prelude += "".join(line + "\n" for line in lines)


REMOTE_SCRIPT_VAR = "ANSFLOW_REMOTE_SCRIPT"
#: Plain paths are left unquoted in generated shell so that their globs expand on the runner.
_PLAIN_PATH = re.compile(r"[A-Za-z0-9_./*?\[\]-]+")


def interpreter(shell: str | None) -> str:
    """The command ansflow runs a script file with (SPEC: `shell` field)."""
    if shell in (None, "bash"):
        return "bash -e -o pipefail"
    if shell == "sh":
        return "sh -e"
    return str(shell)


@dataclass(frozen=True)
class SshHost:
    """One entry of an SSH target's `hosts:`, as ssh and scp are given it."""

    name: str
    user: str | None
    port: int | None

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.name}" if self.user else self.name


def ssh_hosts(target: SSHTarget) -> list[SshHost]:
    """`[user@]host[:port]` entries with the target's user and port as defaults."""
    hosts: list[SshHost] = []
    for entry in target.hosts:
        user: str | None = target.user
        rest = entry
        if "@" in rest:
            user, rest = rest.rsplit("@", 1)
        port = target.port
        match = re.match(r"^\[(.+)\]:(\d+)$", rest) or re.match(r"^([^:]+):(\d+)$", rest)
        if match:
            rest, port = match.group(1), int(match.group(2))
        hosts.append(SshHost(rest.strip("[]"), user, port))
    return hosts


_KNOWN_HOSTS = {
    "strict": "-o StrictHostKeyChecking=yes",
    "accept-new": "-o StrictHostKeyChecking=accept-new",
    "off": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
}


def _path_word(work: Work, name: str, path: str) -> str:
    if not templates.has_template(path) and _PLAIN_PATH.fullmatch(path):
        return path
    return work.word(name, path, "files")


def remote_work(analysis: Analysis, info: StepInfo, run: str | None, files: list[Any]) -> Work:
    """ssh/scp commands that do on each host of an SSH target what ansflow does over paramiko.

    Hosts are worked on one after another (the safe reading of `serial`); the script reaches the
    host on stdin from an env var, so that the format translates its templates like any value.
    """
    target = analysis.target(info)
    assert isinstance(target, SSHTarget)
    notes = analysis.notes
    hosts = ssh_hosts(target)
    if len(hosts) > 1 and info.step.serial != 1:
        notes.drop(
            info.id,
            f"hosts of target {info.step.on} are worked on one after another, not "
            f"{info.step.serial or target.forks} at once",
        )
    setup = f"target {info.step.on} needs SSH access from the runner: its private key"
    if target.identity_file:
        setup += f" ({target.identity_file})"
    setup += " in an ssh-agent or ~/.ssh"
    if target.known_hosts != "off":
        setup += ", and the hosts' keys in ~/.ssh/known_hosts"
    notes.setup(info.id, setup)
    if target.password:
        notes.drop(info.id, f"password login to target {info.step.on} is not scripted")
    if info.outputs_read:
        notes.drop(info.id, "outputs written on SSH hosts do not reach later jobs")
    work = Work()
    timeout = math.ceil(target.connect_timeout)
    work.add(
        "ansflow_host() {",
        f"  ssh_opts=(-o BatchMode=yes {_KNOWN_HOSTS[target.known_hosts]} "
        f"-o ConnectTimeout={timeout})",
        '  if [ -n "$2" ]; then ssh_port=(-p "$2"); scp_port=(-P "$2"); '
        "else ssh_port=(); scp_port=(); fi",
    )
    ssh = 'ssh "${ssh_opts[@]}" "${ssh_port[@]}" "$1"'
    for index, spec in enumerate(files, start=1):
        src = _path_word(work, f"ANSFLOW_SRC_{index}", spec.src)
        dest = work.word(f"ANSFLOW_DEST_{index}", spec.dest, "files")
        if spec.dest.endswith("/"):
            work.add(f'  {ssh} "mkdir -p -- $(printf %q {dest})"')
        work.add(f'  scp -r "${{ssh_opts[@]}}" "${{scp_port[@]}}" {src} "$1:"{dest}')
        if spec.mode:
            work.add(f'  {ssh} "chmod {spec.mode} -- $(printf %q {dest})"')
    if run is not None:
        work.set(REMOTE_SCRIPT_VAR, run, "run")
        if info.shell in (None, "bash", "sh"):
            command = interpreter(info.shell) + " -s"
        else:
            command = f"{info.shell} /dev/stdin"
        # NOTE: ansflow's outputs are not carried back from hosts; a script writing them must not
        # fail on an unset $ANSFLOW_OUTPUT.
        remote = shlex.quote(f"{OUTPUT_VAR}=/dev/null {command}")
        work.add(f"  printf '%s\\n' \"${REMOTE_SCRIPT_VAR}\" | {ssh} {remote}")
    work.add("}")
    for host in hosts:
        work.add(f"ansflow_host {shlex.quote(host.destination)} {host.port or chr(39) * 2}")
    return work


def deploy_local_work(info: StepInfo, step: DeployStep) -> Work:
    """A local deploy: copy the files (a `dest` ending in `/` is a folder), then run."""
    work = Work()
    for index, spec in enumerate(step.files, start=1):
        src = _path_word(work, f"ANSFLOW_SRC_{index}", spec.src)
        dest = work.word(f"ANSFLOW_DEST_{index}", spec.dest, "files")
        if spec.dest.endswith("/"):
            work.add(f"mkdir -p -- {dest}")
        work.add(f"cp -R -- {src} {dest}")
        if spec.mode:
            work.add(f"chmod {spec.mode} -- {dest}")
    work.user_script = step.run
    work.user_shell = info.shell
    return work


_JSON_FUNCTION = (
    "ansflow_json() {\n"
    "  printf '%s' \"$1\" | sed -e 's/\\\\/\\\\\\\\/g' -e 's/\"/\\\\\"/g' -e 's/\\t/\\\\t/g' "
    "-e 's/\\r/\\\\r/g' | sed -e ':a' -e 'N' -e '$!ba' -e 's/\\n/\\\\n/g'\n"
    "}"
)


def notify_work(info: StepInfo, step: NotifyStep) -> Work:
    """POST ansflow's JSON (pipeline, run_id, status, message) with curl, or run `command`."""
    work = Work()
    work.set("ANSFLOW_MESSAGE", step.message, "message")
    if step.command is not None:
        # NOTE: ansflow runs the command with bash whatever the step's `shell` says.
        command = work.word("ANSFLOW_COMMAND", step.command, "command")
        work.add(f"printf '%s\\n' \"$ANSFLOW_MESSAGE\" | bash -e -o pipefail -c {command}")
        return work
    assert step.webhook is not None
    work.set("ANSFLOW_STATUS", "${{ run.status }}", "the webhook's status")
    webhook = work.word("ANSFLOW_WEBHOOK", step.webhook, "webhook")
    work.add(
        _JSON_FUNCTION,
        'payload="{\\"pipeline\\": \\"$(ansflow_json "$ANSFLOW_PIPELINE")\\", '
        '\\"run_id\\": ${ANSFLOW_RUN_ID:-0}, '
        '\\"status\\": \\"$(ansflow_json "$ANSFLOW_STATUS")\\", '
        '\\"message\\": \\"$(ansflow_json "$ANSFLOW_MESSAGE")\\"}"',
        "curl -fsS --retry 2 -X POST -H 'Content-Type: application/json' "
        f'--data "$payload" {webhook}',
    )
    return work


def jenkins_work(analysis: Analysis, info: StepInfo, step: JenkinsStep) -> Work:
    """Trigger the Jenkins job over its REST API (`buildWithParameters`), without following it."""
    target = analysis.target(info)
    work = Work()
    if not isinstance(target, JenkinsTarget):
        analysis.notes.drop(info.id, "a jenkins step without a jenkins target is not run")
        work.add("echo 'no jenkins target' >&2", "exit 1")
        return work
    assert step.job is not None
    path = "".join(f"/job/{quote(part, safe='')}" for part in step.job.split("/") if part)
    endpoint = "buildWithParameters" if step.parameters else "build"
    command = ["curl -fsS -X POST"]
    if target.user or target.token:
        auth = f"{target.user or ''}:{target.token or ''}"
        command.append(f"--user {work.word('ANSFLOW_JENKINS_AUTH', auth, 'token')}")
    if not target.verify:
        command.append("--insecure")
    for index, (key, value) in enumerate(sorted(step.parameters.items()), start=1):
        text = f"{key}={matrix_text(value)}"
        command.append(
            f"--data-urlencode {work.word(f'ANSFLOW_PARAM_{index}', text, 'parameters')}"
        )
    url = f"{target.url.rstrip('/')}{path}/{endpoint}"
    command.append(work.word("ANSFLOW_JENKINS_URL", url, "url"))
    work.add(" \\\n  ".join(command))
    analysis.notes.drop(
        info.id,
        f"triggers Jenkins job {step.job} but does not follow its build: the job's result, "
        "console and cancel stay on Jenkins",
    )
    return work


def ansible_work(analysis: Analysis, info: StepInfo, step: AnsibleStep) -> Work:
    """ansible-playbook against the target's hosts (an inventory written on the fly)."""
    target = analysis.target(info)
    work = Work()
    args = ["ansible-playbook"]
    if analysis.pipeline.inventory and isinstance(target, SSHTarget):
        # NOTE: ansflow reads the inventory next to the pipeline file; the job runs in workdir.
        inventory = analysis.pipeline.inventory
        if not inventory.startswith(("/", "~")) and not templates.has_template(info.workdir or ""):
            from_root = posixpath.join(analysis.repo.folder, inventory)
            inventory = posixpath.relpath(from_root, info.workdir or ".")
        names = ",".join(host.name for host in ssh_hosts(target))
        args += ["-i", shlex.quote(inventory), "--limit", shlex.quote(names)]
    elif isinstance(target, SSHTarget):
        lines = []
        for host in ssh_hosts(target):
            line = host.name
            if host.user:
                line += f" ansible_user={host.user}"
            if host.port:
                line += f" ansible_port={host.port}"
            lines.append(line)
        delimiter = heredoc_delimiter("\n".join(lines), "ANSFLOW_INVENTORY")
        work.add(f"cat > ansflow-inventory.ini <<'{delimiter}'", *lines, delimiter)
        args += ["-i", "ansflow-inventory.ini"]
        if target.known_hosts == "off":
            work.add("export ANSIBLE_HOST_KEY_CHECKING=False")
    else:
        args += ["-i", "localhost,", "-c", "local"]
    if step.tags:
        args += ["--tags", shlex.quote(",".join(step.tags))]
    if step.extra_vars:
        args += [
            "--extra-vars",
            work.word("ANSFLOW_EXTRA_VARS", json.dumps(step.extra_vars), "extra_vars"),
        ]
    args.append(work.word("ANSFLOW_PLAYBOOK", step.playbook, "playbook"))
    work.add(" ".join(args))
    analysis.notes.setup(info.id, "needs ansible-playbook on the runner")
    if isinstance(target, SSHTarget):
        analysis.notes.setup(
            info.id, f"needs SSH access from the runner to the hosts of target {step.on}"
        )
    return work


def clone_work(
    info: StepInfo, step: FetchCodeStep, repo_word: str | None = None, ref_word: str | None = None
) -> Work:
    """`git clone`, fetch `ref`, check it out, as ansflow's fetch_code does; writes its outputs."""
    work = Work()
    repo = repo_word or work.word("ANSFLOW_REPO", step.repo, "repo")
    dest_text = step.dest or default_dest(step.repo)
    dest = work.word("ANSFLOW_DEST", dest_text, "dest")
    ref = ref_word or work.word("ANSFLOW_REF", step.ref or "HEAD", "ref")
    depth = f" --depth {step.depth}" if step.depth else ""
    work.add(
        "export GIT_TERMINAL_PROMPT=0",
        f"git clone --no-checkout{depth} -- {repo} {dest}",
        f"git -C {dest} fetch{depth} --tags --force origin {ref}",
        f"git -C {dest} checkout --force --detach FETCH_HEAD",
    )
    if step.submodules:
        work.add(f"git -C {dest} submodule update --init --recursive --force{depth}")
    work.add(
        f'echo "commit=$(git -C {dest} rev-parse HEAD)" >> "${OUTPUT_VAR}"',
        f'echo "dest="{dest} >> "${OUTPUT_VAR}"',
    )
    return work


def heredoc_delimiter(text: str, base: str) -> str:
    """A here-document delimiter that no line of `text` equals."""
    lines = set(text.splitlines())
    candidate, count = base, 1
    while candidate in lines:
        count += 1
        candidate = f"{base}_{count}"
    return candidate


# --- small formatting helpers --------------------------------------------------------------------


def duration_text(seconds: float) -> str:
    """`5400` -> `1h 30m`, the form GitLab reads (whole seconds, rounded up)."""
    total = max(1, math.ceil(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes else "",
        f"{secs}s" if secs else "",
    ]
    return " ".join(p for p in parts if p)


def whole_minutes(seconds: float) -> int:
    return max(1, math.ceil(seconds / 60))


def unique_ids(ids: Iterable[str], clean: Callable[[str], str]) -> dict[str, str]:
    """Each id made acceptable to the target, distinct (case-insensitively), in a stable way."""
    taken: set[str] = set()
    mapping: dict[str, str] = {}
    for original in ids:
        candidate = clean(original)
        base, count = candidate, 1
        while candidate.lower() in taken:
            count += 1
            candidate = f"{base}-{count}"
        taken.add(candidate.lower())
        mapping[original] = candidate
    return mapping


def env_name(text: str) -> str:
    """A variable name both systems accept: `[A-Za-z_][A-Za-z0-9_]*`."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", text)
    return name if name and not name[0].isdigit() else f"_{name}"


def artifact_root(globs: list[str]) -> str:
    """The folder the artifact globs have in common before any wildcard ("." for none).

    NOTE: actions/upload-artifact stores files relative to their common folder, so the download
    must put them back there.
    """
    folders: list[list[str]] = []
    for pattern in globs:
        parts = pattern.split("/")[:-1]
        fixed: list[str] = []
        for part in parts:
            if any(c in part for c in "*?[") or templates.has_template(part):
                break
            fixed.append(part)
        folders.append(fixed)
    if not folders:
        return "."
    common: list[str] = []
    for column in zip(*folders, strict=False):
        if len(set(column)) != 1:
            break
        common.append(column[0])
    return "/".join(common) or "."


def join_path(folder: str | None, path: str) -> str:
    """`path` seen from the work tree root when the step runs in `folder`."""
    if folder is None or path.startswith(("/", "~")):
        return path
    joined = posixpath.join(folder, path)
    return joined if templates.has_template(joined) else posixpath.normpath(joined)


# --- YAML ----------------------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    """Block style, lists indented under their key, scripts as literal blocks, no anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data.rstrip("\n") or data.endswith("\n") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _represent_str)


def dump_yaml(data: Mapping[str, Any]) -> str:
    """Deterministic YAML: keys in the order built, no line folding, unicode kept."""
    return yaml.dump(
        dict(data),
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        width=1_000_000,
        default_flow_style=False,
    )
