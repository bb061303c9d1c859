"""Property tests: whatever the input, loading ends in a pipeline or a located LoadError.

Inputs: random YAML documents (nested dicts, lists and scalars dumped with yaml.safe_dump), shapes
close to pipelines (so the graph and template checks run too), random text and bytes, and random
mutations of the example pipelines. Never any other exception; a pipeline that loads also plans and
renders in every format.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansflow.errors import LoadError
from ansflow.loader import load_text
from ansflow.render.plan import FORMATS
from ansflow.yamlsrc import split_lines
from tests.helpers_files import EXAMPLE_FILES, STARTER

#: Raise with e.g. ANSFLOW_FUZZ_EXAMPLES=5000 for a longer hunt; the default keeps the suite quick.
EXAMPLES = int(os.environ.get("ANSFLOW_FUZZ_EXAMPLES", "200"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SOURCES = [p.read_text(encoding="utf-8") for p in [*EXAMPLE_FILES, STARTER]]

FIELDS = [
    "steps", "id", "run", "needs", "parallel", "type", "matrix", "on", "when", "vars", "env",
    "targets", "hosts", "secrets", "timeout", "retries", "name", "defaults", "serial", "files",
    "src", "dest", "job", "webhook", "message", "concurrency", "version", "x",
]  # fmt: skip
TYPES = ["shell", "custom", "build", "test", "deploy", "notify", "approval", "jenkins", "ansible"]
TEMPLATE_BITS = [
    "${{ vars.a }}", "${{ steps.a.outputs.x }}", "${{ matrix.k }}", "${{ always() }}", "${{",
    "}}", "${{ }}", "${{ ().__class__ }}", "${{ secrets.S }}", "${{ host.name }}", "${#a[@]}",
    "{% raw %}", "${{ vars.a + }}", "${{ steps['a[k=1]'].status }}",
]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(FIELDS + TYPES + TEMPLATE_BITS + ["a", "b", "c", "yes", "1h", "5m"]),
)
keys = st.one_of(st.sampled_from(FIELDS), st.text(max_size=8))
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(keys, children, max_size=5)
    ),
    max_leaves=30,
)


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`good` about nine times in ten: most pipelines then load, and get planned and rendered."""
    return st.sampled_from([True] * 9 + [False]).flatmap(lambda ok: good if ok else bad)


good_ids = st.sampled_from(["a", "b", "c", "d", "e"])
step_ids = mostly(good_ids, st.sampled_from(["a[k=1]", "bad id", ""]))
RUNS = [
    "echo hi", "echo ${{ vars.a }}", "echo ${{ pipeline.name }} ${{ run.id }}", "n=${#a[@]}",
    "echo ${{ matrix.k }}", "echo ${{ steps.a.outputs.x }}", "{% raw %}{{ x }}",
]  # fmt: skip
runs = mostly(st.sampled_from(RUNS), st.one_of(st.sampled_from(TEMPLATE_BITS), st.text(max_size=9)))
steps = st.fixed_dictionaries(
    {"id": step_ids, "run": runs},
    optional={
        "type": mostly(
            st.sampled_from(["shell", "custom", "build", "test"]), st.sampled_from(TYPES)
        ),
        "needs": st.lists(step_ids, max_size=3),
        "matrix": mostly(
            st.dictionaries(
                st.sampled_from(["k", "j"]),
                st.lists(st.integers(0, 3), min_size=1, max_size=3, unique=True),
                min_size=1,
                max_size=2,
            ),
            documents,
        ),
        "when": mostly(
            st.sampled_from(["${{ always() }}", "${{ vars.a == 1 }}", "failure()"]),
            st.sampled_from(["", *TEMPLATE_BITS]),
        ),
        "on": mostly(st.just("local"), st.sampled_from(["web", "ci", "yes"])),
        "env": st.dictionaries(st.sampled_from(["A", "B"]), runs, max_size=2),
        "timeout": mostly(st.sampled_from([1, "5m", "1h30m", 0.5]), st.sampled_from(["x", -1])),
        "retries": mostly(st.integers(0, 3), st.just(-1)),
        "name": st.text(max_size=5),
    },
)
entries = st.one_of(
    steps, steps, st.fixed_dictionaries({"parallel": st.lists(steps, min_size=1, max_size=3)})
)
pipelines = st.fixed_dictionaries(
    {"steps": st.lists(entries, min_size=1, max_size=5), "vars": st.just({"a": 1})},
    optional={
        "secrets": mostly(st.just(["S", "T"]), st.just(["1x"])),
        "targets": st.just(
            {"web": {"type": "ssh", "hosts": ["h"]}, "ci": {"type": "jenkins", "url": "https://c"}}
        ),
        "concurrency": mostly(st.integers(1, 8), st.just(0)),
    },
)


def check(raw: str | bytes) -> None:
    """The property: a pipeline that plans and renders, or a LoadError with every line known."""
    try:
        loaded = load_text(raw, Path("x.yml"))
    except LoadError as exc:
        assert exc.diagnostics
        text = raw if isinstance(raw, str) else raw.decode("utf-8", errors="replace")
        last = max(1, len(split_lines(text)))
        for diagnostic in exc.diagnostics:
            assert diagnostic.line is not None, diagnostic
            assert 1 <= diagnostic.line <= last, diagnostic  # a line of the file
            assert diagnostic.file == "x.yml"
            assert diagnostic.message
        return
    plan = loaded.plan()
    assert plan.nodes
    for render in FORMATS.values():
        assert render(plan)


def dump(data: Any, flow: bool | None, unicode: bool) -> str:
    return yaml.safe_dump(data, default_flow_style=flow, allow_unicode=unicode, sort_keys=False)


@FUZZ
@given(documents, st.sampled_from([None, True, False]), st.booleans())
def test_random_yaml_documents(data: Any, flow: bool | None, unicode: bool) -> None:
    check(dump(data, flow, unicode))


@FUZZ
@given(pipelines, st.sampled_from([None, True, False]))
def test_random_pipeline_shapes(data: dict[str, Any], flow: bool | None) -> None:
    check(dump(data, flow, True))


@FUZZ
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_random_text_and_bytes(raw: str | bytes) -> None:
    check(raw)


INSERTS = ["\t", " ", ":", "- ", "[", "]", "{", "}", "&a ", "*a", "!", "|", ">", "#", '"', "'"]
INSERTS += ["\n", "${{", "}}", "\x00", "\ufeff", "é", "%", "@", "`", ",", "? ", "<<: ", "\r"]
INSERTS += ["---\n", "\x85", "\u2028", "needs: [", "parallel:", "*", ".inf", "yes"]

mutation = st.tuples(
    st.sampled_from(["delete", "duplicate", "swap", "indent", "dedent", "insert"]),
    st.integers(min_value=0, max_value=10_000),
    st.integers(min_value=0, max_value=10_000),
    st.sampled_from(INSERTS),
)


def mutate(text: str, mutations: list[tuple[str, int, int, str]]) -> str:
    lines = text.split("\n")
    for op, first, second, insert in mutations:
        i, j = first % len(lines), second % len(lines)
        if op == "delete" and len(lines) > 1:
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[j])
        elif op == "swap":
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "indent":
            lines[i] = " " * (second % 7) + lines[i]
        elif op == "dedent":
            lines[i] = lines[i][second % 5 :]
        else:
            column = second % (len(lines[i]) + 1)
            lines[i] = lines[i][:column] + insert + lines[i][column:]
    return "\n".join(lines)


@FUZZ
@given(st.sampled_from(SOURCES), st.lists(mutation, min_size=1, max_size=5), st.booleans())
def test_mutated_example_pipelines(
    source: str, mutations: list[tuple[str, int, int, str]], as_bytes: bool
) -> None:
    text = mutate(source, mutations)
    check(text.encode("utf-8", errors="surrogatepass") if as_bytes else text)


def test_the_unmutated_sources_load() -> None:
    for source in SOURCES:
        check(source)
        load_text(source, Path("x.yml"))
