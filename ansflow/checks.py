"""Checks that need the whole pipeline: targets, step/target fit, and every template's names.

Each check returns problems as (path in the YAML document, message); the loader turns paths into
`file:line:col`. Names that cannot be known before running (`env.*`, outputs' keys) are left to run
time, where an undefined name is an error too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ansflow import templates
from ansflow.model import (
    AnsibleStep,
    ApprovalStep,
    JenkinsStep,
    LocalTarget,
    Pipeline,
    SSHTarget,
    StepBase,
)
from ansflow.planner import Graph, GraphProblem, split_needs_name

#: Step fields that are never templates (they shape the graph, which is fixed before running).
STATIC_FIELDS = frozenset({"id", "type", "needs", "on", "matrix", "serial", "retries", "name"})
STEP_PARTS = ("status", "outputs", "hosts", "result")
PIPELINE_PARTS = ("name", "file")
RUN_PARTS = ("id", "status")
HOST_PARTS = ("name", "address", "port", "user", "vars")


def target_problems(pipeline: Pipeline) -> list[GraphProblem]:
    """`on:` names a target that exists and suits the step type."""
    problems: list[GraphProblem] = []
    targets = pipeline.targets
    for path, step in pipeline.iter_steps():
        name = step.on or "local"
        target = targets.get(name)
        if target is None and name != "local":
            known = ", ".join(["local", *targets]) or "local"
            problems.append(
                GraphProblem(
                    (*path, "on"), f"step {step.id!r}: unknown target {name!r} (known: {known})"
                )
            )
            continue
        kind = "local" if target is None or isinstance(target, LocalTarget) else target.type
        if isinstance(step, JenkinsStep) and kind != "jenkins":
            problems.append(
                GraphProblem(
                    (*path, "on") if step.on else (*path, "type"),
                    f"step {step.id!r}: a jenkins step needs `on:` a target of type jenkins",
                )
            )
        elif not isinstance(step, JenkinsStep) and kind == "jenkins":
            problems.append(
                GraphProblem(
                    (*path, "on"),
                    f"step {step.id!r}: only `type: jenkins` steps run on jenkins target {name!r}",
                )
            )
        if isinstance(step, AnsibleStep) and kind != "ssh":
            problems.append(
                GraphProblem(
                    (*path, "on") if step.on else (*path, "type"),
                    f"step {step.id!r}: an ansible step needs `on:` a target of type ssh",
                )
            )
        if isinstance(step, ApprovalStep) and kind != "local":
            problems.append(
                GraphProblem((*path, "on"), f"step {step.id!r}: an approval gate runs locally")
            )
        if step.serial is not None and kind != "ssh":
            problems.append(
                GraphProblem(
                    (*path, "serial"), f"step {step.id!r}: `serial` applies to ssh targets only"
                )
            )
    seen: set[str] = set()
    for index, secret in enumerate(pipeline.secrets):
        if secret in seen:
            problems.append(
                GraphProblem(("secrets", index), f"secret {secret!r} is declared twice")
            )
        seen.add(secret)
    return problems


def _step_strings(step: StepBase) -> Iterator[tuple[tuple[Any, ...], str]]:
    data = step.model_dump(exclude_defaults=False)
    for key, value in data.items():
        if key in STATIC_FIELDS:
            continue
        source = getattr(step, key)
        if key in step.model_fields_set or source != type(step).model_fields[key].default:
            yield from templates.iter_strings(value, (key,))


def template_problems(
    pipeline: Pipeline, graph: Graph | None, targets_sound: bool = True
) -> list[GraphProblem]:
    """Syntax of every `${{ }}` and every name that can be known before running.

    Without a graph (its own errors are being reported) `steps.X` is checked to name a step but
    not to be upstream, and without sound targets `host` is not checked: either would repeat
    those errors in other words.
    """
    problems: list[GraphProblem] = []
    base = {
        "vars": set(pipeline.vars),
        "secrets": set(pipeline.secrets),
        "steps": {step.id for _, step in pipeline.iter_steps()},
    }

    def check(path: tuple[Any, ...], text: str, step: StepBase | None, field: str) -> None:
        where = f"step {step.id!r}, field `{field}`" if step else f"`{field}`"
        errors = templates.check_syntax(text)
        if field == "when" and not errors:
            try:
                source = templates.condition_source(text)
            except templates.TemplateError as exc:
                errors = [exc]
            else:
                # NOTE: a bare `when: vars.x == 1` has no `${{ }}` for check_syntax to look at.
                bare = source is not None and not templates.spans(text)
                problem = templates.expression_problem(source) if bare and source else None
                if problem is not None:
                    errors = [problem]
        for error in errors:
            problems.append(GraphProblem(path, f"{where}: {error.message}", span=error.span))
        if errors:
            return
        sources = [s.source for s in templates.spans(text)]
        if field == "when" and not sources:
            sources = [text]
        for source in sources:
            for ref in templates.references(source):
                message = _reference_problem(ref, step, pipeline, graph, base, targets_sound)
                if message:
                    span = templates.OPEN + source + templates.CLOSE
                    problems.append(GraphProblem(path, f"{where}: {message}", span=span))

    for key, value in pipeline.env.items():
        check(("env", key), value, None, f"env.{key}")
    for name, target in pipeline.targets.items():
        rendered = RENDERED_TARGET_FIELDS.get(target.type, frozenset())
        for field in sorted(rendered & target.model_fields_set):
            value = getattr(target, field)
            if isinstance(value, str):
                check(("targets", name, field), value, None, f"targets.{name}.{field}")
    for path, step in pipeline.iter_steps():
        for sub, text in _step_strings(step):
            field = ".".join(str(p) for p in sub)
            check((*path, *sub), text, step, field)
    problems.extend(fixed_field_problems(pipeline))
    return problems


#: Target fields rendered when the target is used; the rest are read as written.
RENDERED_TARGET_FIELDS: dict[str, frozenset[str]] = {
    "ssh": frozenset({"user", "identity_file", "password", "ssh_config", "known_hosts_file"}),
    "jenkins": frozenset({"url", "user", "token"}),
}


def fixed_field_problems(pipeline: Pipeline) -> list[GraphProblem]:
    """`${{ }}` where it would be used as written: hosts (they decide the step instances before
    anything runs), `defaults`, `inventory`, env names, and target fields read literally."""
    problems: list[GraphProblem] = []

    def refuse(path: tuple[Any, ...], label: str, why: str, at_key: bool = False) -> None:
        problems.append(
            GraphProblem(path, f"{label} cannot use `${{{{ }}}}`: {why}", at_key, span="${{")
        )

    for field in ("workdir", "shell"):
        if templates.has_template(getattr(pipeline.defaults, field)):
            refuse(
                ("defaults", field),
                f"`defaults.{field}`",
                "defaults are read as written; set it on the steps that need it",
            )
    if templates.has_template(pipeline.inventory):
        refuse(("inventory",), "`inventory`", "the inventory is read before anything is rendered")
    for name, target in pipeline.targets.items():
        rendered = RENDERED_TARGET_FIELDS.get(target.type, frozenset())
        for field in sorted(target.model_fields_set - rendered):
            value = getattr(target, field)
            entries = value if isinstance(value, list) else [value]
            for index, entry in enumerate(entries):
                if templates.has_template(entry):
                    path = ("targets", name, field, *((index,) if isinstance(value, list) else ()))
                    why = (
                        "hosts decide the step instances before anything runs"
                        if field == "hosts"
                        else "this field is read as written"
                    )
                    refuse(path, f"`targets.{name}.{field}`", why)
    envs: list[tuple[tuple[Any, ...], dict[str, Any], str]] = [((), pipeline.env, "")]
    envs.extend((path, step.env, f"step {step.id!r}: ") for path, step in pipeline.iter_steps())
    for path, env, owner in envs:
        for key in env:
            if templates.has_template(key):
                refuse(
                    (*path, "env", key),
                    f"{owner}`env` name {key!r}",
                    "names are read as written",
                    True,
                )
            elif not key or "=" in key or "\0" in key:
                message = f"{owner}`env` name {key!r} is not a valid environment variable name"
                problems.append(
                    GraphProblem(
                        (*path, "env", key), f"{message} (empty, or holds `=` or NUL)", at_key=True
                    )
                )
    return problems


def _reference_problem(
    ref: templates.Reference,
    step: StepBase | None,
    pipeline: Pipeline,
    graph: Graph | None,
    base: dict[str, set[str]],
    targets_sound: bool = True,
) -> str | None:
    chain = ref.chain
    root = chain[0]
    if root in templates.CONDITION_FUNCTIONS:
        return None
    if root not in templates.CONTEXT_NAMES:
        from jinja2.defaults import DEFAULT_NAMESPACE

        if root in DEFAULT_NAMESPACE:
            return None
        import difflib

        close = difflib.get_close_matches(root, templates.CONTEXT_NAMES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        known = ", ".join(templates.CONTEXT_NAMES)
        return f"unknown name {root!r} in `{ref}`{hint}; expressions can use {known}"
    if ref.guarded or len(chain) < 2:
        return None
    key = chain[1]
    if root in ("vars", "secrets"):
        if key not in base[root]:
            what = "var" if root == "vars" else "secret (declare it under `secrets:`)"
            known = ", ".join(sorted(base[root])) or "none"
            return f"`{root}.{key}` is not a declared {what}; known: {known}"
    elif root == "pipeline" and key not in PIPELINE_PARTS:
        return f"`pipeline.{key}` does not exist; pipeline has {', '.join(PIPELINE_PARTS)}"
    elif root == "run" and key not in RUN_PARTS:
        return f"`run.{key}` does not exist; run has {', '.join(RUN_PARTS)}"
    elif root == "matrix":
        if step is None or not step.matrix:
            return f"`{ref}` is used but step has no `matrix`"
        if key not in step.matrix:
            return f"`matrix.{key}` is not a matrix key; keys: {', '.join(step.matrix)}"
    elif root == "host" and targets_sound:
        target = pipeline.targets.get(step.on or "local") if step else None
        if not isinstance(target, SSHTarget):
            return "`host` is only defined for steps on ssh targets"
        if key not in HOST_PARTS:
            return f"`host.{key}` does not exist; host has {', '.join(HOST_PARTS)}"
    elif root == "steps":
        other = split_needs_name(key)
        if other not in base["steps"]:
            return f"`steps.{key}` names no step"
        if graph is None:
            return None
        if step is None:
            return f"`steps.{key}` cannot be used outside a step"
        if not graph.is_upstream(other, step.id):
            return (
                f"`steps.{key}` is not upstream of step {step.id!r}: add it to `needs` "
                "so it has finished before this step starts"
            )
        if len(chain) > 2 and chain[2] not in STEP_PARTS:
            return f"`steps.{key}.{chain[2]}` does not exist; a step has {', '.join(STEP_PARTS)}"
    return None


def host_problems(pipeline: Pipeline, pipeline_dir: Path) -> list[GraphProblem]:
    """Every ssh target's `hosts:` names something in the inventory (which must be readable).

    Kept out of loading: it reads another file, which `plan`, `export` or a resume from stored text
    should not depend on; `validate` and `run` call it.
    """
    from ansflow.inventory import Inventory, InventoryError, load_pipeline_inventory

    ssh_targets = {n: t for n, t in pipeline.targets.items() if isinstance(t, SSHTarget)}
    if not ssh_targets:
        return []
    inventory = Inventory()
    if pipeline.inventory and "${{" not in pipeline.inventory:
        try:
            inventory = load_pipeline_inventory(pipeline.inventory, pipeline_dir)
        except InventoryError as exc:
            return [GraphProblem(("inventory",), f"inventory: {exc}")]
    problems: list[GraphProblem] = []
    for name, target in ssh_targets.items():
        if any("${{" in h for h in target.hosts):
            continue
        try:
            inventory.resolve(target.hosts)
        except InventoryError as exc:
            problems.append(GraphProblem(("targets", name, "hosts"), f"target {name!r}: {exc}"))
    return problems
