"""ansflow.yamlsrc: YAML 1.2 scalars, positions, duplicate keys and the limits on what we read."""

from __future__ import annotations

import pytest

from ansflow.yamlsrc import (
    MAX_BYTES,
    MAX_DEPTH,
    MAX_NODES,
    Mark,
    YamlError,
    decode,
    line_col,
    load_plain,
    parse,
    split_lines,
)
from tests.helpers_files import dedent


def problems(text: str) -> list[tuple[int, int, str]]:
    with pytest.raises(YamlError) as info:
        parse(dedent(text))
    return [(p.line, p.col, p.message) for p in info.value.problems]


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("true", True),
        ("false", False),
        ("True", True),
        ("FALSE", False),
        # YAML 1.1 booleans are plain strings in YAML 1.2.
        ("yes", "yes"),
        ("no", "no"),
        ("on", "on"),
        ("off", "off"),
        ("y", "y"),
        ("n", "n"),
        ("Yes", "Yes"),
        # Core-schema numbers.
        ("42", 42),
        ("-7", -7),
        ("012", 12),
        ("0o17", 15),
        ("0x1f", 31),
        ("1.5", 1.5),
        ("1e3", 1000.0),
        (".5", 0.5),
        # YAML 1.1 forms that are strings in 1.2.
        ("1_000", "1_000"),
        ("1:30", "1:30"),
        ("0b101", "0b101"),
        ("2024-01-31", "2024-01-31"),
        ("~", None),
        ("null", None),
        ("", None),
        ('"true"', "true"),
        ("'42'", "42"),
        ("!!str 42", "42"),
    ],
)
def test_scalars_follow_yaml_1_2_core_schema(written: str, expected: object) -> None:
    value = parse(f"key: {written}\n").data["key"]
    assert value == expected
    assert type(value) is type(expected)


def test_on_key_is_the_string_on() -> None:
    data = parse("on: yes\n").data
    assert data == {"on": "yes"}


@pytest.mark.parametrize("written", [".inf", "-.inf", "+.inf", ".Inf", ".nan", ".NaN", "1e400"])
def test_non_finite_numbers_are_refused(written: str) -> None:
    found = problems(f"a: 1\nb: {written}\n")
    assert found == [(2, 4, f"numbers must be finite, got {written}")]


def test_duplicate_key_names_both_lines() -> None:
    found = problems(
        """
        steps:
          - id: a
            run: x
            run: y
        """
    )
    assert found == [(4, 5, "duplicate key 'run' (first at line 3)")]


def test_every_duplicate_key_is_reported() -> None:
    found = problems("a: 1\nb: 2\na: 3\nb: 4\n")
    assert [(line, col) for line, col, _ in found] == [(3, 1), (4, 1)]


def test_merge_keys_merge_and_explicit_keys_win() -> None:
    data = parse(
        dedent(
            """
            base: &base {a: 1, b: 2}
            x:
              <<: *base
              b: 3
            """
        )
    ).data
    assert data["x"] == {"a": 1, "b": 3}


def test_merging_a_list_of_scalars_is_an_error() -> None:
    found = problems("x:\n  <<: [1]\n")
    assert found[0][0] == 2
    assert "merges only mappings" in found[0][2]


def test_marks_of_values_and_keys() -> None:
    text = dedent(
        """
        name: demo
        steps:
          - id: a
            run: echo hi
        """
    )
    doc = parse(text)
    assert doc.marks[("name",)].line == 1
    assert doc.marks[("name",)].col == 7
    assert doc.key_marks[("steps",)] == Mark(2, 1, text.index("steps"), text.index("steps") + 5)
    assert doc.marks[("steps", 0, "run")].line == 4
    assert doc.marks[("steps", 0, "run")].col == 10
    assert text[doc.marks[("steps", 0, "run")].start :].startswith("echo hi")
    assert doc.key_marks[("steps", 0, "id")].line == 3


def test_scalar_styles_are_recorded() -> None:
    doc = parse('a: plain\nb: "dq"\nc: |\n  block\n')
    assert doc.styles[("a",)] is None
    assert doc.styles[("b",)] == '"'
    assert doc.styles[("c",)] == "|"


def test_nesting_deeper_than_the_limit_is_refused_quickly() -> None:
    found = problems("[" * 10_000)
    assert len(found) == 1
    line, col, message = found[0]
    assert line == 1
    assert col == MAX_DEPTH + 1
    assert f"nesting deeper than {MAX_DEPTH} levels" in message


def test_nesting_within_the_limit_is_read() -> None:
    depth = MAX_DEPTH - 2
    data = parse("a: " + "[" * depth + "]" * depth + "\n").data
    for _ in range(depth - 1):
        data = data["a"] if isinstance(data, dict) else data[0]
    assert data in ([], [[]])


def test_alias_bomb_is_refused() -> None:
    lines = ['l0: &l0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for level in range(1, 9):
        refs = ", ".join([f"*l{level - 1}"] * 10)
        lines.append(f"l{level}: &l{level} [{refs}]")
    found = problems("\n".join(lines) + "\n")
    assert len(found) == 1
    assert f"more than {MAX_NODES} values" in found[0][2]


def test_a_few_aliases_are_fine() -> None:
    data = parse("a: &a [1, 2]\nb: *a\nc: *a\n").data
    assert data == {"a": [1, 2], "b": [1, 2], "c": [1, 2]}


def test_recursive_alias_is_an_error() -> None:
    found = problems("a: &x [1, *x]\n")
    assert found[0][:2] == (1, 4)
    assert "recursive alias" in found[0][2]


def test_undefined_alias_is_an_error() -> None:
    found = problems("a: 1\nb: *nope\n")
    assert found[0][0] == 2
    assert "undefined alias" in found[0][2]


def test_second_document_is_an_error_at_its_start() -> None:
    found = problems("a: 1\n---\nb: 2\n")
    assert found == [(2, 1, "a pipeline file holds one YAML document; a second one starts here")]


def test_tab_indentation_has_a_clear_message() -> None:
    found = problems("steps:\n  - id: a\n\trun: x\n")
    assert found == [(3, 1, "tab characters are not allowed for indentation in YAML; use spaces")]


def test_syntax_error_is_located() -> None:
    found = problems("a: [1, 2\nb: 3\n")
    assert found[0][0] == 2
    assert "while parsing a flow sequence at line 1" in found[0][2]


def test_control_characters_are_refused_at_their_position() -> None:
    with pytest.raises(YamlError) as info:
        parse('a: 1\nb: "x\x00y"\n')
    problem = info.value.problems[0]
    assert (problem.line, problem.col) == (2, 6)
    assert "unacceptable character" in problem.message


@pytest.mark.parametrize("tag", ["!!python/object:os.system", "!!binary", "!custom"])
def test_unknown_tags_are_refused(tag: str) -> None:
    found = problems(f"a: 1\nb: {tag} x\n")
    assert found[0][0] == 2
    assert "unsupported tag" in found[0][2]


def test_complex_keys_are_refused() -> None:
    found = problems("? [a, b]\n: 1\n")
    assert found[0][:2] == (1, 3)
    assert "mapping key must be a plain value" in found[0][2]


def test_empty_and_comment_only_text_is_none() -> None:
    assert parse("").data is None
    assert parse("# nothing\n\n").data is None


def test_decode_removes_a_bom() -> None:
    assert decode("\ufeffa: 1\n".encode()) == "a: 1\n"


def test_decode_locates_the_first_bad_byte_in_characters() -> None:
    raw = "a: 1\nnamé: é\xff".encode().replace("\xff".encode(), b"\xff")
    with pytest.raises(YamlError) as info:
        decode(raw)
    problem = info.value.problems[0]
    assert (problem.line, problem.col) == (2, 8)
    assert "0xff" in problem.message


def test_decode_refuses_huge_files() -> None:
    with pytest.raises(YamlError, match="larger than"):
        decode(b"#" * (MAX_BYTES + 1))


def test_load_plain_returns_data() -> None:
    assert load_plain("hosts: [a, b]\nport: 22\n") == {"hosts": ["a", "b"], "port": 22}


def test_lines_are_counted_as_yaml_counts_them() -> None:
    assert split_lines("a\r\nb\rc\nd\x85e\u2028f\x0cg\n") == ["a", "b", "c", "d", "e", "f\x0cg"]
    assert split_lines("") == []
    assert split_lines("x\n\n") == ["x", ""]
    assert line_col("a\r\nb\rcd", 6) == (3, 2)
    assert line_col("abc", 0) == (1, 1)


def test_positions_after_unusual_line_breaks_match_the_parser() -> None:
    text = 'a: "x\u2028y"\rb: 1\nb: 2\n'
    found = problems(text)
    assert found == [(4, 1, "duplicate key 'b' (first at line 3)")]
    assert split_lines(text)[3] == "b: 2"
