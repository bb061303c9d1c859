"""ansflow.templates: `${{ }}` in jinja2's sandbox, and nothing else read as a template."""

from __future__ import annotations

import re
from typing import Any

import pytest

from ansflow import templates
from ansflow.templates import (
    CommonValues,
    Reference,
    TemplateError,
    calls_condition_function,
    check_syntax,
    condition_source,
    evaluate,
    references,
    render,
    render_text,
    render_value,
    spans,
)

CONTEXT: dict[str, Any] = {
    "vars": {"n": 3, "branch": "main", "flag": True, "items": [1, 2], "conf": {"a": 1}},
    "env": {"HOME": "/root"},
    "pipeline": {"name": "demo", "file": "demo.yml"},
    "run": {"id": "r1", "status": "success"},
    "steps": {"build": {"status": "success", "outputs": {"sha": "abc"}}},
}


def test_spans_are_found_with_positions() -> None:
    text = "a ${{ vars.n }} b ${{ env.HOME }}"
    found = spans(text)
    assert [(s.start, s.end, s.source) for s in found] == [
        (2, 15, " vars.n "),
        (18, 33, " env.HOME "),
    ]
    assert found[0].text == "${{ vars.n }}"


def test_unclosed_span_is_an_error_at_its_offset() -> None:
    with pytest.raises(TemplateError) as info:
        spans("echo ${{ vars.n }} and ${{ oops")
    assert info.value.offset == 23
    assert "never closed" in info.value.message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${{ vars.n }}", 3),
        ("${{ vars.n > 2 }}", True),
        ("${{ vars.flag }}", True),
        ("${{ vars.items }}", [1, 2]),
        ("${{ vars.conf }}", {"a": 1}),
        ("${{ vars.n * 2 }}", 6),
        ("${{ vars.branch == 'main' }}", True),
        ("${{ vars.missing | default(7) }}", 7),
    ],
)
def test_a_lone_expression_keeps_its_type(text: str, expected: object) -> None:
    value = render(text, CONTEXT)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("n=${{ vars.n }}", "n=3"),
        (" ${{ vars.n }}", " 3"),
        ("${{ vars.flag }}!", "true!"),
        ("${{ vars.n > 5 }} x", "false x"),
        ("items ${{ vars.items }}", "items [1, 2]"),
        ("conf ${{ vars.conf }}", 'conf {"a": 1}'),
        ("${{ vars.branch }}-${{ run.id }}", "main-r1"),
        ("sha ${{ steps.build.outputs.sha }}", "sha abc"),
        ("no templates here", "no templates here"),
    ],
)
def test_mixed_text_renders_to_a_string(text: str, expected: str) -> None:
    assert render(text, CONTEXT) == expected


def test_render_text_is_always_a_string() -> None:
    assert render_text("${{ vars.n }}", CONTEXT) == "3"
    assert render_text("${{ vars.flag }}", CONTEXT) == "true"
    assert render_text("${{ vars.items }}", CONTEXT) == "[1, 2]"


@pytest.mark.parametrize("key", ["items", "keys", "values", "get", "update", "copy", "pop"])
def test_keys_named_like_dict_methods_are_the_values(key: str) -> None:
    context = {"vars": {key: "mine"}, "steps": {"a": {"outputs": {key: "out"}}}}
    assert render(f"${{{{ vars.{key} }}}}", context) == "mine"
    assert render(f"x ${{{{ steps.a.outputs.{key} }}}}", context) == "x out"


def test_render_value_walks_lists_and_mappings() -> None:
    value = {"a": ["${{ vars.n }}", "x${{ vars.n }}"], "b": {"c": "${{ vars.flag }}"}, "d": 5}
    assert render_value(value, CONTEXT) == {"a": [3, "x3"], "b": {"c": True}, "d": 5}


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("${{ vars.missing }}", ["`vars.missing` is not defined", "branch", "n"]),
        ("x ${{ steps.build.outputs.nope }}", ["`steps.build.outputs.nope` is not defined", "sha"]),
        ("${{ steps.deploy.status }}", ["`steps.deploy` is not defined", "build"]),
        ("${{ nothing }}", ["`nothing` is not defined"]),
    ],
)
def test_undefined_names_are_errors_that_name_them(text: str, names: list[str]) -> None:
    with pytest.raises(TemplateError) as info:
        render(text, CONTEXT)
    for name in names:
        assert name in info.value.message


def test_undefined_is_never_an_empty_string() -> None:
    with pytest.raises(TemplateError):
        render_text("echo '${{ vars.typo }}'", CONTEXT)


def test_errors_in_mixed_text_carry_their_span() -> None:
    with pytest.raises(TemplateError) as info:
        render("echo ${{ vars.n }} ${{ vars.nope }}", CONTEXT)
    assert info.value.offset == 19
    assert info.value.span == "${{ vars.nope }}"


def test_errors_of_a_lone_expression_carry_their_span() -> None:
    with pytest.raises(TemplateError) as info:
        render("${{ vars.nope }}", CONTEXT)
    assert info.value.offset == 0
    assert info.value.span == "${{ vars.nope }}"


@pytest.mark.parametrize(
    "expression",
    [
        "().__class__.__mro__",
        "''.__class__.__mro__[1].__subclasses__()",
        "vars.__class__",
        "vars.items.__class__.__base__",
        "env.HOME.__class__",
        "(1).__class__.__subclasses__()",
        "lipsum.__globals__",
        "cycler.__init__.__globals__",
        "range.__self__",
        "vars.conf.update({'a': 2})",
        "vars.items.append(3)",
        "range(10 ** 9) | list",
    ],
)
def test_sandbox_escapes_become_template_errors(expression: str) -> None:
    for text in (f"${{{{ {expression} }}}}", f"x ${{{{ {expression} }}}}"):
        with pytest.raises(TemplateError):
            render(text, CONTEXT)
    with pytest.raises(TemplateError):
        evaluate(expression, CONTEXT)
    assert CONTEXT["vars"]["conf"] == {"a": 1}
    assert CONTEXT["vars"]["items"] == [1, 2]


def test_unsafe_attribute_message_says_why() -> None:
    with pytest.raises(TemplateError, match="unsafe"):
        evaluate("vars.__class__", CONTEXT)


def test_dunder_attributes_are_refused_before_running() -> None:
    found = check_syntax("echo ${{ ().__class__.__mro__ }}")
    assert len(found) == 1
    assert "`__class__` cannot be used" in found[0].message
    assert found[0].span == "${{ ().__class__.__mro__ }}"


def test_private_looking_keys_still_work() -> None:
    assert render("${{ vars._x }}", {"vars": {"_x": 1}}) == 1


@pytest.mark.parametrize(
    "text",
    [
        'echo "${#arr[@]}" ${arr[0]} ${HOME} $((1 + 2))',
        "{% raw %}{{ not_a_template }}{% endraw %}",
        "{{ x }} {% if y %} {# comment #}",
        "awk '{ print $1 }' | sed 's/{{/x/'",
        "printf '%s\\n' '}}' '{{'",
        "$ {{ x }} and $${{",
    ],
)
def test_shell_text_outside_expressions_passes_through(text: str) -> None:
    if "$${{" in text:
        with pytest.raises(TemplateError):
            render(text, CONTEXT)
        return
    assert render(text, CONTEXT) == text
    assert check_syntax(text) == []


def test_shell_text_next_to_an_expression_is_kept() -> None:
    text = 'n=${#arr[@]}; {% raw %} echo "${{ vars.branch }}" {# x #}'
    assert render(text, CONTEXT) == 'n=${#arr[@]}; {% raw %} echo "main" {# x #}'


def test_check_syntax_reports_each_bad_expression() -> None:
    found = check_syntax("a ${{ vars.n + }} b ${{ }} c ${{ vars.n }} d ${{ vars.n) }}")
    assert [e.span for e in found] == ["${{ vars.n + }}", "${{ }}", "${{ vars.n) }}"]
    assert [e.offset for e in found] == [2, 20, 45]
    assert "template syntax error" in found[0].message
    assert "empty expression" in found[1].message


@pytest.mark.parametrize(
    "expression",
    [
        "(" * 3000 + "1" + ")" * 3000,
        "[" * 300 + "]" * 300,
        "-" * 3000 + "1",
        "+".join(["1"] * 5000),
        "not " * 2000 + "true",
        "a" + ".b" * 250,
    ],
)
def test_absurdly_nested_expressions_are_errors_not_crashes(expression: str) -> None:
    found = check_syntax("${{ " + expression + " }}")
    assert len(found) == 1
    assert "nested too deeply" in found[0].message
    with pytest.raises(TemplateError):
        render("${{ " + expression + " }}", CONTEXT)


def test_evaluate_turns_any_failure_into_a_template_error() -> None:
    with pytest.raises(TemplateError, match="division by zero"):
        evaluate("1 / 0", CONTEXT)
    with pytest.raises(TemplateError, match="template syntax error"):
        evaluate("vars.n +", CONTEXT)
    with pytest.raises(TemplateError, match="cannot evaluate"):
        evaluate("vars.branch + 1", CONTEXT)


@pytest.mark.parametrize(
    ("expression", "words"),
    [
        ('"a" * 400000000', "`*` would make"),
        ("400000000 * [1]", "`*` would make"),
        ("10 ** 100000", "`**` would make"),
        ('"a" | center(300000000)', "`center` width"),
        ('"a" | indent(width=300000000)', "`indent` width"),
    ],
)
def test_values_too_large_to_build_are_refused_before_building(expression: str, words: str) -> None:
    """At run time these would take gigabytes (or minutes of big-number arithmetic) first."""
    with pytest.raises(TemplateError, match=re.escape(words)):
        evaluate(expression, CONTEXT)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [('"ab" * 3', "ababab"), ("[0] * 2", [0, 0]), ("2 ** 10", 1024), ('"a" | center(3)', " a ")],
)
def test_ordinary_products_and_padding_still_work(expression: str, expected: object) -> None:
    assert evaluate(expression, CONTEXT) == expected


def test_references_lists_dotted_names() -> None:
    found = references("steps.build.outputs.sha ~ vars['branch'] ~ (env.X | default('y'))")
    assert Reference(("steps", "build", "outputs", "sha")) in found
    assert Reference(("vars", "branch")) in found
    assert Reference(("env", "X"), guarded=True) in found
    assert str(found[0]) == "steps.build.outputs.sha"


def test_references_of_calls() -> None:
    found = references("always() or vars.n > 1")
    assert Reference(("always",)) in found
    assert Reference(("vars", "n")) in found


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("always()", True),
        ("success() and vars.x", True),
        ("failure() or cancelled()", True),
        ("vars.branch == 'main'", False),
        ("vars.always", False),
    ],
)
def test_calls_condition_function(source: str, expected: bool) -> None:
    assert calls_condition_function(source) is expected


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        (None, None),
        (True, None),
        ("${{ always() }}", " always() "),
        ("  ${{ vars.n > 1 }} ", " vars.n > 1 "),
        ("vars.n > 1", "vars.n > 1"),
    ],
)
def test_condition_source(when: str | bool | None, expected: str | None) -> None:
    assert condition_source(when) == expected


@pytest.mark.parametrize("when", ["${{ a }} and ${{ b }}", "x ${{ a }}", "${{ a }} y"])
def test_condition_must_be_one_expression(when: str) -> None:
    with pytest.raises(TemplateError, match="one expression"):
        condition_source(when)


def test_common_values_agree() -> None:
    values = CommonValues("steps.t", {"h1": {"v": "1", "x": "a"}, "h2": {"v": "1"}})
    assert values["v"] == "1"
    assert values["x"] == "a"
    assert sorted(values) == ["v", "x"]
    assert len(values) == 2
    with pytest.raises(KeyError):
        values["nope"]
    context = {"steps": {"t": {"outputs": values}}}
    assert render("${{ steps.t.outputs.v }}", context) == "1"


def test_common_values_that_differ_are_an_error() -> None:
    values = CommonValues("steps.t", {"h1": {"v": "1"}, "h2": {"v": "2"}})
    with pytest.raises(TemplateError) as info:
        values["v"]
    assert "`steps.t.outputs.v` differs" in info.value.message
    assert "steps.t.hosts.<name>.outputs.v" in info.value.message
    context = {"steps": {"t": {"outputs": values}}}
    with pytest.raises(TemplateError, match="differs"):
        render("x ${{ steps.t.outputs.v }}", context)
    with pytest.raises(TemplateError, match="not defined"):
        render("x ${{ steps.t.outputs.w }}", context)


def test_has_template() -> None:
    assert templates.has_template("a ${{ b }}")
    assert not templates.has_template("a { b }")
    assert not templates.has_template(3)
