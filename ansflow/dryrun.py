"""`ansflow run --dry-run`: the plan with every command rendered, and nothing run or stored.

Values only known while running (outputs of earlier steps, the run id) are shown as placeholders;
secrets are shown as ***.
"""

from __future__ import annotations

from typing import Any

from ansflow import templates
from ansflow.checks import STATIC_FIELDS
from ansflow.executor import host_context

SHOWN_FIELDS = ("run", "command", "repo", "ref", "dest", "job", "playbook", "webhook", "message")


class Placeholder:
    """Any attribute path below it renders as `<steps.build.outputs.sha>`.

    Deliberately not a Mapping: templates turn a mapping into JSON text, so an empty one would
    print as `{}` where the reader needs to see which value is only known at run time.
    """

    def __init__(self, path: str) -> None:
        self._path = path

    def __getitem__(self, key: str) -> Placeholder:
        return Placeholder(f"{self._path}.{key}")

    def __getattr__(self, key: str) -> Placeholder:
        if key.startswith("__"):
            raise AttributeError(key)
        return Placeholder(f"{self._path}.{key}")

    def __str__(self) -> str:
        return f"<{self._path}>"

    def __bool__(self) -> bool:
        return True


def dry_run_text(prepared: Any) -> str:
    plan = prepared.plan
    secrets = {name: "***" for name in prepared.secrets}
    base = {
        "vars": prepared.variables,
        "secrets": secrets,
        "env": Placeholder("env"),
        "pipeline": {"name": plan.name, "file": plan.file},
        "run": {"id": Placeholder("run.id"), "status": Placeholder("run.status")},
        "steps": Placeholder("steps"),
    }
    lines = [
        f"dry run of {plan.name} ({plan.file}): {len(plan.nodes)} step instances, nothing runs"
    ]
    for node in plan.nodes:
        hosts = [h for h in prepared.places.hosts(node) if h is not None]
        where = node.target + (f" ({', '.join(h.name for h in hosts)})" if hosts else "")
        needs = ", ".join(node.needs) if node.needs else "-"
        lines.append(f"\n{node.id}  [{node.kind} on {where}]  needs: {needs}")
        if node.step.when is not None:
            lines.append(f"  when: {node.step.when}")
        context = {**base, "matrix": dict(node.matrix)}
        if hosts:
            context["host"] = host_context(hosts[0])
        data = node.step.model_dump(exclude_defaults=True)
        for field in SHOWN_FIELDS:
            if field in STATIC_FIELDS or field not in data or not isinstance(data[field], str):
                continue
            try:
                text = templates.render_text(data[field], context)
            except templates.TemplateError as exc:
                text = f"(cannot render: {exc.message})"
            except TypeError:
                # NOTE: a placeholder inside a list or mapping cannot become JSON text.
                text = "(known only when running: a run-time value inside a list or mapping)"
            lines.append(f"  {field}:")
            lines.extend(f"    {line}" for line in text.splitlines() or [""])
    return prepared.masker("\n".join(lines) + "\n")
