"""The dependency graph of a pipeline (SPEC: ordering) and its expansion into step instances.

Ordering rules: an entry without `needs` waits for the entry before it; a `parallel:` block is one
entry; `needs` replaces the implicit order. graphlib finds cycles; matrix steps become one instance
per combination. The Plan is immutable: the executor reads it, never changes it.
"""

from __future__ import annotations

import graphlib
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ansflow.model import ParallelBlock, Pipeline, Scalar, StepBase, matrix_text

Path = tuple[Any, ...]


@dataclass(frozen=True)
class GraphProblem:
    """A graph error and where it is in the file (a path into the YAML document)."""

    path: Path
    message: str
    at_key: bool = False
    #: The `${{ }}` text a template problem is about, to point at its column inside a string.
    span: str | None = None


class GraphError(Exception):
    """Ids, needs or cycles that make the pipeline impossible to order."""

    def __init__(self, problems: list[GraphProblem]) -> None:
        super().__init__("; ".join(p.message for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class StepNode:
    """One step instance: a step, or one combination of a matrix step."""

    id: str
    base_id: str
    step: StepBase
    matrix: Mapping[str, Scalar]
    needs: tuple[str, ...]
    entry: int
    in_parallel: bool
    path: Path
    position: int

    @property
    def name(self) -> str:
        if self.step.name is None:
            return self.id
        suffix = self.id[len(self.base_id) :]
        return self.step.name + suffix

    @property
    def target(self) -> str:
        return self.step.on or "local"

    @property
    def kind(self) -> str:
        kind = str(getattr(self.step, "type", "shell"))  # every concrete step type has `type`
        return "shell" if kind == "custom" else kind


@dataclass(frozen=True)
class Graph:
    """Base-step dependencies (before matrix expansion), in file order."""

    steps: Mapping[str, StepBase]
    paths: Mapping[str, Path]
    entries: Mapping[str, int]
    parallel: frozenset[str]
    needs: Mapping[str, tuple[str, ...]]
    upstream: Mapping[str, frozenset[str]]

    def is_upstream(self, dependency: str, of: str) -> bool:
        return dependency in self.upstream.get(of, frozenset())


def instance_id(base_id: str, combo: Mapping[str, Scalar]) -> str:
    if not combo:
        return base_id
    inner = ",".join(f"{key}={matrix_text(value)}" for key, value in combo.items())
    return f"{base_id}[{inner}]"


def split_needs_name(name: str) -> str:
    """The base id of a `needs` entry, which may name a matrix instance `test[python=3.11]`."""
    return name.split("[", 1)[0]


def build_graph(pipeline: Pipeline) -> Graph:
    """Check ids and needs, find cycles; raises GraphError listing every problem."""
    problems: list[GraphProblem] = []
    steps: dict[str, StepBase] = {}
    paths: dict[str, Path] = {}
    entries: dict[str, int] = {}
    parallel: set[str] = set()
    entry_members: list[list[str]] = []
    for index, entry in enumerate(pipeline.steps):
        members = entry.parallel if isinstance(entry, ParallelBlock) else [entry]
        names: list[str] = []
        for member_index, step in enumerate(members):
            path: Path = (
                ("steps", index, "parallel", member_index)
                if isinstance(entry, ParallelBlock)
                else ("steps", index)
            )
            if step.id in steps:
                first = paths[step.id]
                problems.append(
                    GraphProblem(
                        (*path, "id"),
                        f"duplicate step id {step.id!r} (first used by step #{_ordinal(first)})",
                    )
                )
                continue
            steps[step.id] = step
            paths[step.id] = path
            entries[step.id] = index
            if isinstance(entry, ParallelBlock):
                parallel.add(step.id)
            names.append(step.id)
        entry_members.append(names)

    needs: dict[str, tuple[str, ...]] = {}
    for step_id, step in steps.items():
        index = entries[step_id]
        if step.needs is None:
            needs[step_id] = tuple(entry_members[index - 1]) if index > 0 else ()
            continue
        resolved: list[str] = []
        for position, name in enumerate(step.needs):
            base = split_needs_name(name)
            where = (*paths[step_id], "needs", position)
            if base == step_id:
                problems.append(GraphProblem(where, f"step {step_id!r} needs itself"))
            elif base not in steps:
                hint = _did_you_mean(base, steps)
                problems.append(
                    GraphProblem(where, f"step {step_id!r} needs unknown step {name!r}{hint}")
                )
            elif name != base and name not in _instance_ids(base, steps[base]):
                known = ", ".join(_instance_ids(base, steps[base]))
                problems.append(
                    GraphProblem(
                        where,
                        f"step {step_id!r} needs {name!r}, which is not an instance of "
                        f"step {base!r} (instances: {known})",
                    )
                )
            elif base not in resolved:
                resolved.append(base)
        needs[step_id] = tuple(resolved)

    if not problems:
        sorter = graphlib.TopologicalSorter({k: v for k, v in needs.items()})
        try:
            sorter.prepare()
        except graphlib.CycleError as exc:
            # NOTE: graphlib may enter the cycle anywhere; start it at its first step in the file
            # so that the message does not change when unrelated steps are added.
            ring = list(reversed(exc.args[1]))[:-1]
            start = min(range(len(ring)), key=lambda i: entries[ring[i]])
            cycle = ring[start:] + ring[:start] + [ring[start]]
            first = cycle[0]
            problems.append(
                GraphProblem(
                    (*paths[first], "needs"),
                    "dependency cycle: " + " -> ".join(cycle) + " (each arrow reads 'needs')",
                )
            )
    if problems:
        raise GraphError(problems)

    upstream: dict[str, frozenset[str]] = {}
    for step_id in steps:  # file order is a valid topological order only without needs: recurse
        _collect_upstream(step_id, needs, upstream)
    return Graph(
        steps=MappingProxyType(steps),
        paths=MappingProxyType(paths),
        entries=MappingProxyType(entries),
        parallel=frozenset(parallel),
        needs=MappingProxyType(needs),
        upstream=MappingProxyType(upstream),
    )


def _collect_upstream(
    step_id: str, needs: Mapping[str, tuple[str, ...]], memo: dict[str, frozenset[str]]
) -> frozenset[str]:
    # NOTE: iterative on purpose: a pipeline of thousands of sequential steps would overflow the
    # stack with plain recursion.
    stack = [step_id]
    while stack:
        current = stack[-1]
        if current in memo:
            stack.pop()
            continue
        missing = [dep for dep in needs[current] if dep not in memo]
        if missing:
            stack.extend(missing)
            continue
        result: set[str] = set()
        for dep in needs[current]:
            result.add(dep)
            result |= memo[dep]
        memo[current] = frozenset(result)
        stack.pop()
    return memo[step_id]


def _combinations(step: StepBase) -> list[dict[str, Scalar]]:
    """One mapping per matrix combination, in the order the matrix lists them; [{}] without one."""
    if not step.matrix:
        return [{}]
    keys = list(step.matrix)
    product = itertools.product(*(step.matrix[k] for k in keys))
    return [dict(zip(keys, values, strict=True)) for values in product]


def _instance_ids(step_id: str, step: StepBase) -> tuple[str, ...]:
    return tuple(instance_id(step_id, combo) for combo in _combinations(step))


def _ordinal(path: Path) -> str:
    text = str(path[1] + 1)
    if len(path) > 2:
        text += f", parallel member {path[3] + 1}"
    return text


def _did_you_mean(name: str, known: Mapping[str, Any] | Sequence[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


@dataclass(frozen=True)
class Plan:
    """Everything the executor needs to know about what to run, in a stable order."""

    pipeline: Pipeline
    name: str
    file: str
    graph: Graph
    nodes: tuple[StepNode, ...]
    by_id: Mapping[str, StepNode] = field(repr=False)
    instances: Mapping[str, tuple[str, ...]] = field(repr=False)

    def upstream(self, node_id: str) -> frozenset[str]:
        """Instance ids this instance (transitively) depends on."""
        node = self.by_id[node_id]
        bases = self.graph.upstream[node.base_id]
        ids: set[str] = set()
        for base in bases:
            ids.update(self.instances[base])
        return frozenset(ids)

    def dependants(self, node_id: str) -> list[str]:
        """Instance ids that (transitively) depend on this one, in plan order."""
        base = self.by_id[node_id].base_id
        return [n.id for n in self.nodes if base in self.graph.upstream[n.base_id]]

    def resolve(self, name: str) -> list[str]:
        """Instance ids named by a step id or an instance id; empty when unknown."""
        if name in self.by_id:
            return [name]
        return list(self.instances.get(name, ()))


def expand(pipeline: Pipeline, graph: Graph, name: str, file: str) -> Plan:
    """Matrix expansion: one StepNode per combination, needs fanned out to every instance."""
    instances: dict[str, tuple[str, ...]] = {}
    combos: dict[str, list[dict[str, Scalar]]] = {}
    for step_id, step in graph.steps.items():
        combos[step_id] = _combinations(step)
        instances[step_id] = tuple(instance_id(step_id, c) for c in combos[step_id])

    nodes: list[StepNode] = []
    position = 0
    for step_id in _file_order_topological(graph):
        step = graph.steps[step_id]
        # NOTE: `needs` may name single matrix instances, several of one step; naming the step
        # itself means all of its instances.
        explicit: dict[str, list[str]] = {}
        for need in step.needs or []:
            explicit.setdefault(split_needs_name(need), []).append(need)
        dep_ids: list[str] = []
        for dep in graph.needs[step_id]:
            wanted = explicit.get(dep, [dep])
            chosen = instances[dep] if dep in wanted else [w for w in wanted if w in instances[dep]]
            dep_ids.extend(i for i in chosen if i not in dep_ids)
        for combo in combos[step_id]:
            nodes.append(
                StepNode(
                    id=instance_id(step_id, combo),
                    base_id=step_id,
                    step=step,
                    matrix=MappingProxyType(combo),
                    needs=tuple(dep_ids),
                    entry=graph.entries[step_id],
                    in_parallel=step_id in graph.parallel,
                    path=graph.paths[step_id],
                    position=position,
                )
            )
            position += 1
    return Plan(
        pipeline=pipeline,
        name=name,
        file=file,
        graph=graph,
        nodes=tuple(nodes),
        by_id=MappingProxyType({n.id: n for n in nodes}),
        instances=MappingProxyType(instances),
    )


def _file_order_topological(graph: Graph) -> list[str]:
    """A topological order that keeps file order wherever dependencies allow."""
    order = {step_id: i for i, step_id in enumerate(graph.steps)}
    sorter = graphlib.TopologicalSorter(dict(graph.needs))
    sorter.prepare()
    result: list[str] = []
    ready: list[str] = []
    while sorter.is_active():
        ready.extend(sorter.get_ready())
        ready.sort(key=order.__getitem__)
        current = ready.pop(0)
        result.append(current)
        sorter.done(current)
    return result
