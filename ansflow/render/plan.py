"""`ansflow plan` formats: tree (for people), mermaid and dot (for diagrams), json (for tools)."""

from __future__ import annotations

import json
from collections.abc import Callable

from ansflow.planner import Plan, StepNode


def _label(node: StepNode) -> str:
    parts = [node.id, f"({node.kind}"]
    if node.target != "local":
        parts[-1] += f" on {node.target}"
    parts[-1] += ")"
    return " ".join(parts)


def _implicit(plan: Plan, node: StepNode) -> bool:
    return node.step.needs is None


def tree(plan: Plan) -> str:
    """Entries in order; parallel blocks and matrix steps grouped; explicit needs after `<-`."""
    entries: dict[int, list[StepNode]] = {}
    for node in sorted(plan.nodes, key=lambda n: (n.entry, n.path, n.position)):
        entries.setdefault(node.entry, []).append(node)
    groups: list[tuple[str | None, list[StepNode]]] = []
    for entry in sorted(entries):
        members = entries[entry]
        if members[0].in_parallel:
            groups.append(("parallel", members))
        elif len(members) > 1:
            groups.append((f"{members[0].base_id} (matrix: {len(members)} instances)", members))
        else:
            groups.append((None, members))
    lines = [f"{plan.name} ({plan.file}): {len(plan.nodes)} step instances"]
    for index, (title, members) in enumerate(groups):
        last = index == len(groups) - 1
        branch, indent = ("└── ", "    ") if last else ("├── ", "│   ")
        if title is None:
            lines.append(branch + _describe(plan, members[0]))
            continue
        lines.append(branch + title)
        for position, node in enumerate(members):
            sub = "└── " if position == len(members) - 1 else "├── "
            lines.append(indent + sub + _describe(plan, node))
    return "\n".join(lines) + "\n"


def _describe(plan: Plan, node: StepNode) -> str:
    text = _label(node)
    if not _implicit(plan, node):
        needs = sorted({plan.by_id[n].base_id for n in node.needs})
        text += "  <- " + (", ".join(needs) if needs else "(starts at once)")
    if node.step.when is not None:
        text += f"  when {node.step.when}"
    return text


def mermaid(plan: Plan) -> str:
    """A `flowchart TD` whose node names are safe for mermaid (ids may hold brackets)."""
    names = {node.id: f"s{index}" for index, node in enumerate(plan.nodes)}
    lines = ["flowchart TD"]
    for node in plan.nodes:
        label = _label(node).replace('"', "#quot;")
        lines.append(f'    {names[node.id]}["{label}"]')
    for node in plan.nodes:
        for need in node.needs:
            lines.append(f"    {names[need]} --> {names[node.id]}")
    return "\n".join(lines) + "\n"


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def dot(plan: Plan) -> str:
    """Graphviz: `ansflow plan --format dot | dot -Tsvg > plan.svg`."""
    lines = [f"digraph {_dot_quote(plan.name)} {{", "    rankdir=TB;", "    node [shape=box];"]
    for node in plan.nodes:
        lines.append(f"    {_dot_quote(node.id)} [label={_dot_quote(_label(node))}];")
    for node in plan.nodes:
        for need in node.needs:
            lines.append(f"    {_dot_quote(need)} -> {_dot_quote(node.id)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def as_json(plan: Plan) -> str:
    """Stable machine-readable plan: one object per step instance, in run order."""
    steps = [
        {
            "id": node.id,
            "step": node.base_id,
            "name": node.name,
            "type": node.kind,
            "on": node.target,
            "needs": list(node.needs),
            "matrix": dict(node.matrix),
            "entry": node.entry,
            "parallel": node.in_parallel,
            "when": node.step.when,
        }
        for node in plan.nodes
    ]
    return json.dumps({"pipeline": plan.name, "file": plan.file, "steps": steps}, indent=2) + "\n"


FORMATS: dict[str, Callable[[Plan], str]] = {
    "tree": tree,
    "mermaid": mermaid,
    "dot": dot,
    "json": as_json,
}
