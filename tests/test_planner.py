"""ansflow.planner: ordering rules, cycles, matrix expansion and the immutable Plan."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from ansflow.model import Pipeline
from ansflow.planner import (
    GraphError,
    Plan,
    StepNode,
    build_graph,
    expand,
    instance_id,
    split_needs_name,
)
from tests.helpers_files import EXAMPLES, load


def make(*steps: dict[str, Any]) -> Pipeline:
    """A pipeline of shell steps; a str in `steps` is shorthand for `{id: s, run: x}`."""
    entries = [
        {"id": s, "run": "x"}
        if isinstance(s, str)
        else {"parallel": [{"id": m, "run": "x"} if isinstance(m, str) else m for m in s["p"]]}
        if "p" in s
        else {"run": "x", **s}
        for s in steps
    ]
    return Pipeline.model_validate({"steps": entries})


def plan_of(*steps: Any) -> Plan:
    pipeline = make(*steps)
    return expand(pipeline, build_graph(pipeline), "p", "p.yml")


def needs(plan: Plan) -> dict[str, tuple[str, ...]]:
    return {node.id: node.needs for node in plan.nodes}


def graph_problems(*steps: Any) -> list[str]:
    with pytest.raises(GraphError) as info:
        build_graph(make(*steps))
    return [p.message for p in info.value.problems]


def test_top_level_entries_form_a_chain() -> None:
    assert needs(plan_of("a", "b", "c")) == {"a": (), "b": ("a",), "c": ("b",)}


def test_parallel_block_is_one_entry() -> None:
    plan = plan_of("a", {"p": ["b", "c"]}, "d")
    assert needs(plan) == {"a": (), "b": ("a",), "c": ("a",), "d": ("b", "c")}
    assert plan.by_id["b"].in_parallel
    assert not plan.by_id["d"].in_parallel
    assert plan.by_id["b"].entry == plan.by_id["c"].entry == 1


def test_parallel_block_first() -> None:
    assert needs(plan_of({"p": ["a", "b"]}, "c")) == {"a": (), "b": (), "c": ("a", "b")}


def test_needs_replaces_the_implicit_order() -> None:
    plan = plan_of("a", "b", {"id": "c", "needs": ["a"]}, "d")
    assert needs(plan) == {"a": (), "b": ("a",), "c": ("a",), "d": ("c",)}


def test_empty_needs_starts_at_once() -> None:
    plan = plan_of("a", "b", {"id": "c", "needs": []})
    assert plan.by_id["c"].needs == ()
    assert plan.upstream("c") == frozenset()


def test_a_parallel_member_may_have_needs() -> None:
    plan = plan_of("a", "b", {"p": [{"id": "c", "run": "x", "needs": ["a"]}, "d"]})
    assert plan.by_id["c"].needs == ("a",)
    assert plan.by_id["d"].needs == ("b",)


def test_duplicate_needs_are_one_dependency() -> None:
    assert plan_of("a", {"id": "b", "needs": ["a", "a"]}).by_id["b"].needs == ("a",)


def test_nodes_keep_file_order_where_dependencies_allow() -> None:
    plan = plan_of("a", {"id": "b", "needs": ["c"]}, {"id": "c", "needs": []}, "d")
    assert [n.id for n in plan.nodes] == ["a", "c", "b", "d"]
    assert [n.position for n in plan.nodes] == [0, 1, 2, 3]


def test_upstream_and_dependants_are_transitive() -> None:
    plan = plan_of("a", "b", "c", {"id": "x", "needs": []})
    assert plan.upstream("c") == {"a", "b"}
    assert plan.dependants("a") == ["b", "c"]
    assert plan.dependants("x") == []
    assert plan.graph.is_upstream("a", "c")
    assert not plan.graph.is_upstream("c", "a")


def test_matrix_instances_and_ids() -> None:
    plan = plan_of({"id": "test", "matrix": {"python": ["3.11", "3.12"], "os": ["a", "b"]}})
    assert [n.id for n in plan.nodes] == [
        "test[python=3.11,os=a]",
        "test[python=3.11,os=b]",
        "test[python=3.12,os=a]",
        "test[python=3.12,os=b]",
    ]
    node = plan.by_id["test[python=3.11,os=a]"]
    assert node.base_id == "test"
    assert dict(node.matrix) == {"python": "3.11", "os": "a"}
    assert plan.instances["test"] == tuple(n.id for n in plan.nodes)
    assert plan.resolve("test") == list(plan.instances["test"])
    assert plan.resolve("test[python=3.12,os=b]") == ["test[python=3.12,os=b]"]
    assert plan.resolve("nope") == []


def test_instance_id_formats_scalars() -> None:
    assert instance_id("t", {}) == "t"
    assert instance_id("t", {"debug": True, "n": 2, "x": 1.5}) == "t[debug=true,n=2,x=1.5]"
    assert split_needs_name("t[debug=true]") == "t"
    assert split_needs_name("t") == "t"


def test_needs_on_a_matrix_step_fans_out_to_every_instance() -> None:
    plan = plan_of(
        {"id": "t", "matrix": {"v": [1, 2, 3]}}, "after", {"id": "other", "needs": ["t"]}
    )
    instances = ("t[v=1]", "t[v=2]", "t[v=3]")
    assert plan.by_id["after"].needs == instances
    assert plan.by_id["other"].needs == instances
    assert plan.upstream("after") == set(instances)


def test_a_matrix_step_after_a_matrix_step_needs_all_instances() -> None:
    plan = plan_of({"id": "a", "matrix": {"v": [1, 2]}}, {"id": "b", "matrix": {"w": ["x", "y"]}})
    for node_id in ("b[w=x]", "b[w=y]"):
        assert plan.by_id[node_id].needs == ("a[v=1]", "a[v=2]")


def test_needs_may_name_single_instances() -> None:
    plan = plan_of(
        {"id": "t", "matrix": {"v": [1, 2, 3]}},
        {"id": "one", "needs": ["t[v=2]"]},
        {"id": "two", "needs": ["t[v=1]", "t[v=3]"]},
        {"id": "all", "needs": ["t[v=1]", "t"]},
    )
    assert plan.by_id["one"].needs == ("t[v=2]",)
    assert plan.by_id["two"].needs == ("t[v=1]", "t[v=3]")
    assert plan.by_id["all"].needs == ("t[v=1]", "t[v=2]", "t[v=3]")


def test_needs_naming_a_missing_instance_is_an_error() -> None:
    found = graph_problems({"id": "t", "matrix": {"v": [1, 2]}}, {"id": "u", "needs": ["t[v=9]"]})
    assert found == [
        "step 'u' needs 't[v=9]', which is not an instance of step 't' (instances: t[v=1], t[v=2])"
    ]


def test_node_names_and_kinds() -> None:
    plan = plan_of(
        {"id": "t", "name": "Tests", "type": "custom", "matrix": {"v": [1]}},
        {"id": "plain", "on": "web"},
    )
    node = plan.by_id["t[v=1]"]
    assert node.name == "Tests[v=1]"
    assert node.kind == "shell"
    assert node.target == "local"
    assert plan.by_id["plain"].name == "plain"
    assert plan.by_id["plain"].target == "web"


def test_cycle_message_follows_needs() -> None:
    found = graph_problems(
        {"id": "a", "needs": ["b"]}, {"id": "b", "needs": ["c"]}, {"id": "c", "needs": ["a"]}
    )
    assert found == ["dependency cycle: a -> b -> c -> a (each arrow reads 'needs')"]


@pytest.mark.parametrize(
    "order",
    [("x", "a", "b", "c"), ("c", "b", "a", "x"), ("b", "x", "c", "a"), ("x", "c", "a", "b")],
)
def test_cycle_starts_at_its_first_step_in_the_file(order: tuple[str, ...]) -> None:
    rule = {"a": ["b"], "b": ["c"], "c": ["a"], "x": []}
    found = graph_problems(*({"id": s, "needs": rule[s]} for s in order))
    cycle = {"a": "a -> b -> c -> a", "b": "b -> c -> a -> b", "c": "c -> a -> b -> c"}
    first = next(s for s in order if s != "x")
    assert found == [f"dependency cycle: {cycle[first]} (each arrow reads 'needs')"]


def test_cycle_through_the_implicit_order() -> None:
    found = graph_problems({"id": "a", "needs": ["b"]}, "b")
    assert found == ["dependency cycle: a -> b -> a (each arrow reads 'needs')"]


def test_graph_errors_are_all_reported() -> None:
    found = graph_problems(
        "a",
        {"id": "b", "needs": ["b"]},
        {"id": "c", "needs": ["bb", "zzz"]},
        "a",
    )
    assert found == [
        "duplicate step id 'a' (first used by step #1)",
        "step 'b' needs itself",
        "step 'c' needs unknown step 'bb' (did you mean 'b'?)",
        "step 'c' needs unknown step 'zzz'",
    ]


def test_problems_carry_paths_into_the_file() -> None:
    with pytest.raises(GraphError) as info:
        build_graph(make("a", {"p": ["b", "a"]}, {"id": "c", "needs": ["a", "q"]}))
    assert [p.path for p in info.value.problems] == [
        ("steps", 1, "parallel", 1, "id"),
        ("steps", 2, "needs", 1),
    ]
    assert "first used by step #1" in info.value.problems[0].message


def test_a_long_chain_does_not_overflow_the_stack() -> None:
    plan = plan_of(*(f"s{i}" for i in range(3000)))
    assert plan.upstream("s2999") == {f"s{i}" for i in range(2999)}
    assert plan.nodes[-1].needs == ("s2998",)


def test_plan_is_immutable() -> None:
    plan = plan_of("a", {"id": "t", "matrix": {"v": [1, 2]}})
    node = plan.nodes[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.name = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        node.needs = ()  # type: ignore[misc]
    with pytest.raises(TypeError):
        plan.by_id["x"] = node  # type: ignore[index]
    with pytest.raises(TypeError):
        plan.instances["t"] = ()  # type: ignore[index]
    with pytest.raises(TypeError):
        plan.by_id["t[v=1]"].matrix["v"] = 3  # type: ignore[index]
    with pytest.raises(TypeError):
        plan.graph.needs["a"] = ()  # type: ignore[index]
    with pytest.raises(TypeError):
        plan.graph.steps["z"] = node.step  # type: ignore[index]
    assert isinstance(plan.nodes, tuple)
    assert isinstance(node.needs, tuple)
    assert isinstance(plan.graph.parallel, frozenset)
    assert all(isinstance(n, StepNode) for n in plan.nodes)
    with pytest.raises(AttributeError):
        plan.nodes.append(node)  # type: ignore[attr-defined]


def test_expand_is_repeatable() -> None:
    pipeline = make("a", {"p": ["b", "c"]}, {"id": "d", "matrix": {"k": [1, 2]}})
    graph = build_graph(pipeline)
    first = expand(pipeline, graph, "p", "p.yml")
    second = expand(pipeline, graph, "p", "p.yml")
    assert first.nodes == second.nodes


def test_fanout_example_plan() -> None:
    loaded = load((EXAMPLES / "fanout.yml").read_text(encoding="utf-8"), "fanout.yml")
    plan = loaded.plan()
    tests = tuple(f"test[python={p},suite={s}]" for p in ("3.11", "3.12") for s in ("unit", "api"))
    assert plan.by_id["compile"].needs == ("prepare",)
    assert plan.by_id["docs"].needs == ("prepare",)
    for instance in tests:
        assert plan.by_id[instance].needs == ("compile",)
    assert plan.by_id["lint"].needs == ()
    assert plan.by_id["package"].needs == (*tests, "docs", "lint")
    assert plan.by_id["summary"].needs == ("package",)
    assert plan.name == "fanout"
    assert plan.file == "fanout.yml"


# --- rendering a plan (ansflow.render.plan) --------------------------------------------------------


def test_renderers_quote_awkward_matrix_values() -> None:
    from ansflow.render.plan import as_json, dot, mermaid, tree

    plan = plan_of(
        {"id": "t", "matrix": {"v": ['say "hi"', "back\\slash"]}}, {"id": "u", "needs": []}
    )
    assert 's0["t[v=say #quot;hi#quot;] (shell)"]' in mermaid(plan)
    assert '"t[v=say \\"hi\\"]" [label="t[v=say \\"hi\\"] (shell)"];' in dot(plan)
    assert '"t[v=back\\\\slash]"' in dot(plan)
    data = json.loads(as_json(plan))
    assert [s["id"] for s in data["steps"]] == ['t[v=say "hi"]', "t[v=back\\slash]", "u"]
    text = tree(plan)
    assert "├── t (matrix: 2 instances)" in text
    assert "└── u (shell)  <- (starts at once)" in text


def test_tree_shows_targets_needs_and_conditions() -> None:
    from ansflow.render.plan import tree

    plan = plan_of("a", {"id": "b", "on": "web", "needs": ["a"], "when": "${{ always() }}"})
    assert tree(plan).splitlines() == [
        "p (p.yml): 2 step instances",
        "├── a (shell)",
        "└── b (shell on web)  <- a  when ${{ always() }}",
    ]
