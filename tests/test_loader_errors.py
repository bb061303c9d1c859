"""Every kind of bad pipeline file, through the CLI: exit 2, `FILE:LINE:COL: message`, the offending
line under it, every error of the file at once, and never a traceback.

The files are `tests/golden/bad/*.yml`; the exact stderr of `ansflow validate` for each is kept
next to it as `*.err` (rewrite them with UPDATE_GOLDEN=1 and review the diff). Inputs that are best
made by code (random bytes, 10 000 brackets) are written to a temporary folder instead.
"""

from __future__ import annotations

import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ansflow.loader import load_text
from ansflow.yamlsrc import split_lines
from tests.helpers_files import (
    GOLDEN,
    check_golden,
    cli_env,
    dedent,
    errors,
    load,
    one_error,
    run_cli,
    run_cli_many,
)

BAD = GOLDEN / "bad"
BAD_FILES = sorted(BAD.glob("*.yml"))

#: For each bad file: (line, part of the message) of every error, in the order they are printed.
EXPECTED: dict[str, list[tuple[int, str]]] = {
    "yaml_syntax": [
        (7, "expected ',' or ']', but got ':' (while parsing a flow sequence at line 6)")
    ],
    "tab_indent": [(4, "tab characters are not allowed for indentation")],
    "empty": [(1, "the file is empty")],
    "top_list": [(2, "the top level must be a mapping with `steps:`, not a list")],
    "top_scalar": [(2, "the top level must be a mapping with `steps:`, not a single value")],
    "steps_not_list": [(3, "`steps` must be a list of steps")],
    "unknown_step_type": [(6, "step 'build': unknown step type 'biuld' (did you mean 'build'?)")],
    "unknown_field": [(5, "step 'test': unknown field 'neeeds' (did you mean 'needs'?)")],
    "duplicate_id": [(7, "duplicate step id 'build' (first used by step #1)")],
    "duplicate_key": [(5, "duplicate key 'run' (first at line 3)")],
    "unknown_needs": [(5, "step 'test' needs unknown step 'biuld' (did you mean 'build'?)")],
    "cycle": [(3, "dependency cycle: a -> b -> c -> a")],
    "bad_duration": [(4, "`timeout`: expected a duration like 90, 30s, 5m or 1h30m")],
    "matrix_not_list": [(4, "`matrix.python`: must be a non-empty list of values (got '3.11')")],
    "matrix_empty": [(4, "`matrix.python`: must be a non-empty list of values (got [])")],
    "matrix_too_big": [(4, "matrix expands to 272 instances; at most 256 are allowed")],
    "undefined_name": [(5, "`vars.brnach` is not a declared var; known: branch")],
    "unknown_context": [(3, "unknown name 'secret' in `secret.TOKEN` (did you mean 'secrets'?)")],
    "template_syntax": [(5, "step 'count', field `run`: template syntax error")],
    "not_upstream": [(6, "`steps.build` is not upstream of step 'lint'")],
    "alias_bomb": [(2, "document expands to more than 100000 values")],
    "non_finite": [(4, "numbers must be finite, got .inf")],
    "yaml11_booleans": [(5, "step 'build': unknown target 'yes' (known: local)")],
    "second_document": [(4, "one YAML document; a second one starts here")],
    "unknown_target": [(8, "step 'deploy': unknown target 'wbe' (known: local, web)")],
    "bad_secret": [(1, "`secrets`: must be made of letters, digits and `_`")],
    "several_schema_errors": [
        (1, "`concurrency`: Input should be greater than or equal to 1"),
        (5, "step 'build': unknown field 'tmeout' (did you mean 'timeout'?)"),
        (7, "step 'test': unknown step type 'tset' (did you mean 'test'?)"),
        (11, "step 'deploy': `retries`: Input should be greater than or equal to 0"),
    ],
    "several_graph_errors": [
        (4, "step 'build': unknown target 'nowhere'"),
        (6, "step 'test' needs unknown step 'biuld'"),
        (8, "duplicate step id 'build'"),
    ],
    "several_template_errors": [
        (5, "`vars.nope` is not a declared var"),
        (7, "`matrix.mode` is used but step has no `matrix`"),
        (9, "field `when`: template syntax error"),
    ],
    "every_stage": [
        (3, "step 'build', field `run`: `vars.version` is not a declared var"),
        (4, "step 'build': `retries`: Input should be a valid integer"),
        (5, "step 'test': missing required field 'run'"),
        (6, "step 'test': unknown field 'tpye' (did you mean 'type'?)"),
        (7, "step 'test' needs unknown step 'lint'"),
        (9, "step 'deploy', field `run`: `steps.tset` names no step"),
    ],
    "fixed_fields": [
        (3, "`defaults.workdir` cannot use `${{ }}`: defaults are read as written"),
        (5, "`env` name '${{ vars.name }}' cannot use `${{ }}`"),
        (9, "`targets.web.hosts` cannot use `${{ }}`: hosts decide the step instances"),
    ],
}

HEADER = re.compile(r"^(?P<file>[^\s:]+):(?P<line>\d+):(?P<col>\d+): (?P<message>.*)$")


def diagnostics_of(stderr: str, file: str) -> list[tuple[int, int, str, str | None]]:
    """(line, col, message, snippet) of every diagnostic in the CLI's stderr."""
    return [d[:4] for d in _blocks(stderr, file)]


def _blocks(stderr: str, file: str) -> list[tuple[int, int, str, str | None, str | None]]:
    """Each diagnostic's header fields, the source line under it and the caret line under that."""
    lines = stderr.splitlines()
    found: list[tuple[int, int, str, str | None, str | None]] = []
    for index, text in enumerate(lines):
        match = HEADER.match(text)
        if match is None:
            continue
        assert match["file"] == file
        below = [*lines[index + 1 : index + 3], "", ""]
        snippet = below[0][4:] if below[0].startswith("    ") else None
        caret = below[1] if snippet is not None and below[1].strip() == "^" else None
        found.append((int(match["line"]), int(match["col"]), match["message"], snippet, caret))
    return found


def assert_reported(result: subprocess.CompletedProcess[str], file: str, source: str) -> None:
    """Exit 2, nothing on stdout, and each diagnostic shows its line of the source, caret below."""
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    found = _blocks(result.stderr, file)
    assert found, result.stderr
    source_lines = split_lines(source)
    for line, col, _message, snippet, caret in found:
        if not source_lines:
            assert (line, col) == (1, 1)
            continue
        assert 1 <= line <= len(source_lines)
        assert snippet is not None, f"no source line under the message:\n{result.stderr}"
        shown = source_lines[line - 1].replace("\x00", "\ufffd")
        if snippet.endswith(" ...") and not shown.endswith(" ..."):
            assert shown.startswith(snippet.removesuffix(" ...")), (snippet, shown)
        else:
            assert snippet == shown
        assert caret is not None, f"no caret under the source line:\n{result.stderr}"
        assert len(caret) == 4 + col, "the caret must sit under the column in the message"
    if len(found) > 1:
        assert result.stderr.rstrip().endswith(f"{len(found)} errors")


def test_every_bad_file_has_expectations() -> None:
    assert {p.stem for p in BAD_FILES} == set(EXPECTED)


@pytest.fixture(scope="module")
def validated() -> dict[str, subprocess.CompletedProcess[str]]:
    """`ansflow validate NAME.yml` of every bad file, each a real subprocess, run side by side."""
    results = run_cli_many([(("validate", path.name), BAD) for path in BAD_FILES])
    return {path.stem: result for path, result in zip(BAD_FILES, results, strict=True)}


@pytest.mark.parametrize("path", BAD_FILES, ids=[p.stem for p in BAD_FILES])
def test_bad_file_through_the_cli(
    path: Path, validated: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    result = validated[path.stem]
    source = path.read_text(encoding="utf-8")
    assert_reported(result, path.name, source)
    found = diagnostics_of(result.stderr, path.name)
    expected = EXPECTED[path.stem]
    assert [line for line, *_ in found] == [line for line, _ in expected], result.stderr
    for (_, _, message, _), (_, part) in zip(found, expected, strict=True):
        assert part in message
    check_golden(path.with_suffix(".err"), result.stderr)


def test_plan_refuses_a_bad_file_the_same_way() -> None:
    result = run_cli("plan", "cycle.yml", "--format", "json", cwd=BAD)
    assert_reported(result, "cycle.yml", (BAD / "cycle.yml").read_text(encoding="utf-8"))
    assert "a -> b -> c -> a" in result.stderr


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_binary_junk(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    junk = bytes(rng.randrange(256) for _ in range(2000))
    raw = b"steps:\n  - id: a\n    run: x\n" + junk[:500] + b"\x00\xff\xfe" + junk[500:]
    (tmp_path / "junk.yml").write_bytes(raw)
    bad = raw.decode("utf-8", errors="surrogateescape")
    first = next(i for i, c in enumerate(bad) if "\udc80" <= c <= "\udcff")
    expected_line = bad.count("\n", 0, first) + 1
    result = run_cli("validate", "junk.yml", cwd=tmp_path)
    assert result.returncode == 2
    found = diagnostics_of(result.stderr, "junk.yml")
    assert len(found) == 1
    line, _col, message, snippet = found[0]
    assert line == expected_line
    assert "file is not UTF-8 text" in message
    assert snippet is not None
    assert "\x00" not in result.stderr


def test_nul_character(tmp_path: Path) -> None:
    source = 'steps:\n  - id: a\n    run: "x\x00y"\n'
    (tmp_path / "nul.yml").write_text(source, encoding="utf-8")
    result = run_cli("validate", "nul.yml", cwd=tmp_path)
    assert_reported(result, "nul.yml", source)
    assert diagnostics_of(result.stderr, "nul.yml")[0][:2] == (3, 12)
    assert "\x00" not in result.stderr


def test_very_deep_nesting(tmp_path: Path) -> None:
    source = "steps:\n  - id: a\n    run: " + "[" * 10_000 + "\n"
    (tmp_path / "deep.yml").write_text(source, encoding="utf-8")
    started = time.monotonic()
    result = run_cli("validate", "deep.yml", cwd=tmp_path, timeout=30)
    assert time.monotonic() - started < 10
    assert_reported(result, "deep.yml", source)
    found = diagnostics_of(result.stderr, "deep.yml")
    assert [(line, message) for line, _, message, _ in found] == [
        (3, "nesting deeper than 64 levels")
    ]
    assert len(result.stderr) < 1000, "a 10 000-character line must be cut in the message"


def test_very_deep_nesting_of_mappings(tmp_path: Path) -> None:
    source = "steps:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 200))
    (tmp_path / "deep.yml").write_text(source, encoding="utf-8")
    result = run_cli("validate", "deep.yml", cwd=tmp_path)
    assert_reported(result, "deep.yml", source)
    assert "nesting deeper than 64 levels" in result.stderr


#: Sets a 500 MB address-space limit, then becomes `python -m ansflow ARGS` (no preexec_fn, which
#: is unsafe when the test process has threads).
LIMITED = (
    "import os, resource, sys\n"
    "limit = 500 * 1024 * 1024\n"
    "resource.setrlimit(resource.RLIMIT_AS, (limit, limit))\n"
    "os.execv(sys.executable, [sys.executable, '-m', 'ansflow', *sys.argv[1:]])\n"
)


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS is only reliable on Linux")
def test_alias_bomb_fails_fast_in_little_memory(tmp_path: Path) -> None:
    levels = ["l0: &l0 [" + ", ".join(['"lol"'] * 10) + "]"]
    levels += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 12)]
    source = "\n".join(levels) + "\nsteps:\n  - id: a\n    run: x\n"
    (tmp_path / "bomb.yml").write_text(source, encoding="utf-8")
    for name in ("bomb.yml", str(BAD / "alias_bomb.yml")):
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-c", LIMITED, "validate", name],
            cwd=tmp_path,
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        elapsed = time.monotonic() - started
        assert "Traceback" not in result.stderr
        assert "MemoryError" not in result.stderr
        assert result.returncode == 2, result.stderr
        assert "document expands to more than 100000 values" in result.stderr
        assert elapsed < 5, f"the alias bomb took {elapsed:.1f}s to refuse"


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS is only reliable on Linux")
def test_the_memory_limit_is_real() -> None:
    """Control: under the same limit, building what the bomb describes would fail."""
    result = subprocess.run(
        [sys.executable, "-c", LIMITED.replace("os.execv", "x = [0] * 10**9  #"), "x"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "MemoryError" in result.stderr


def test_a_missing_file() -> None:
    result = run_cli("validate", "no-such-file.yml", cwd=BAD)
    assert result.returncode == 2
    assert result.stderr.strip() == "no-such-file.yml: no such file"


def test_the_default_file_is_missing(tmp_path: Path) -> None:
    result = run_cli("validate", cwd=tmp_path)
    assert result.returncode == 2
    assert "ansflow.yml: no such file (create one with `ansflow init`)" in result.stderr


def test_a_folder_instead_of_a_file(tmp_path: Path) -> None:
    result = run_cli("validate", ".", cwd=tmp_path)
    assert result.returncode == 2
    assert "is a folder" in result.stderr


# --- the same rules in-process, for the details -------------------------------------------------


def test_yaml_1_1_booleans_stay_strings() -> None:
    loaded = load(
        """
        vars: {a: yes, b: no, c: on, d: off, e: true}
        targets:
          yes: {type: ssh, hosts: [h1]}
        steps:
          - id: build
            run: echo ${{ vars.a }}
            on: yes
        """
    )
    assert loaded.pipeline.vars == {"a": "yes", "b": "no", "c": "on", "d": "off", "e": True}
    assert loaded.pipeline.steps[0].on == "yes"  # type: ignore[union-attr]


def test_on_as_a_key_is_not_a_boolean() -> None:
    loaded = load("steps:\n  - id: a\n    run: x\n    on: local\n")
    assert loaded.pipeline.steps[0].on == "local"  # type: ignore[union-attr]


def test_schema_graph_and_template_errors_are_reported_at_once() -> None:
    found = errors(
        """
        steps:
          - id: a
            run: echo ${{ vars.nope }}
            retries: many
          - id: b
            needs: [zzz]
            run: x
        """
    )
    assert [d.line for d in found] == [3, 4, 6]
    assert "vars.nope" in found[0].message
    assert "retries" in found[1].message
    assert "zzz" in found[2].message


def test_a_refused_step_still_counts_in_the_graph() -> None:
    """The stub keeps the step's id and needs: no "unknown needs" echo, but a real cycle shows."""
    found = errors(
        """
        steps:
          - id: a
            type: tset
            needs: [b]
          - parallel:
              - {id: b, needs: [a], run: x, timeout: soon}
              - {id: c, run: "echo ${{ steps.a.status }}"}
          - id: d
            needs: [a, c]
            run: echo ${{ vars.missing }}
        """
    )
    assert [d.line for d in found] == [3, 4, 6, 10]
    assert "unknown step type 'tset'" in found[0].message
    assert "cycle: a -> b -> a" in found[1].message
    assert "timeout" in found[2].message
    assert "vars.missing" in found[3].message
    assert not any("unknown" in d.message and "needs" in d.message for d in found)


def test_duplicate_keys_are_reported_with_the_other_errors() -> None:
    found = errors(
        """
        steps:
          - id: a
            run: x
            run: y
            retries: -1
        """
    )
    assert [d.line for d in found] == [4, 5]
    assert "duplicate key 'run'" in found[0].message


def test_a_refused_id_ends_the_checks_at_the_schema() -> None:
    """Without its id a step cannot stand in the graph; `needs: [a b]` elsewhere is not echoed."""
    found = errors(
        """
        steps:
          - id: a b
            run: x
          - id: c
            needs: [a b]
            run: echo ${{ vars.nope }}
        """
    )
    assert [d.line for d in found] == [2]


def test_refused_vars_skip_the_template_checks_only() -> None:
    found = errors(
        """
        vars: [not, a, mapping]
        steps:
          - id: a
            needs: [nope]
            run: echo ${{ vars.x }}
        """
    )
    assert [d.line for d in found] == [1, 4]


def test_graph_and_target_problems_are_reported_together() -> None:
    found = errors(
        """
        steps:
          - id: a
            run: x
            on: mars
          - id: b
            needs: [a, c]
            run: x
          - id: a
            run: y
        """
    )
    assert [d.line for d in found] == [4, 6, 8]


def test_unknown_field_in_a_parallel_member_and_the_block() -> None:
    found = errors(
        """
        steps:
          - parallel:
              - id: a
                run: x
                neeeds: []
            id: block
        """
    )
    assert [(d.line, d.col, d.message) for d in found] == [
        (5, 9, "step 'a': unknown field 'neeeds' (did you mean 'needs'?)"),
        (6, 5, "parallel block (entry 1): unknown field 'id'"),
    ]


def test_unknown_field_in_a_target_and_defaults() -> None:
    found = errors(
        """
        defaults: {tmeout: 5m}
        targets:
          web:
            type: ssh
            hosts: [a]
            forkz: 3
        steps:
          - id: a
            run: x
        """
    )
    assert [(d.line, d.message) for d in found] == [
        (1, "unknown field 'tmeout' in `defaults` (did you mean 'timeout'?)"),
        (6, "target 'web': unknown field 'forkz' (did you mean 'forks'?)"),
    ]


def test_step_that_is_not_a_mapping() -> None:
    found = errors("steps:\n  - build\n  - [1]\n")
    assert [(d.line, d.col) for d in found] == [(2, 5), (3, 5)]
    assert "not 'build'" in found[0].message
    assert "not a list" in found[1].message


def test_missing_steps_and_missing_id() -> None:
    assert one_error("name: x\n").message == "missing required field 'steps'"
    found = one_error("steps:\n  - run: x\n")
    assert (found.line, found.message) == (2, "step #1: missing required field 'id'")


def test_template_error_points_inside_the_string() -> None:
    found = one_error('steps:\n  - id: a\n    run: "echo ok; ${{ vars.x }}"\n')
    assert (found.line, found.col) == (3, 20)


def test_template_error_in_a_block_scalar_points_at_its_line() -> None:
    found = one_error(
        """
        steps:
          - id: a
            run: |
              echo one
              echo ${{ vars.nope }}
        """
    )
    assert (found.line, found.col) == (5, 12)
    assert found.snippet == "      echo ${{ vars.nope }}"


def test_a_bare_when_expression_is_checked() -> None:
    found = one_error("steps:\n  - id: a\n    run: x\n    when: vars.x ==\n")
    assert found.line == 4
    assert "template syntax error" in found.message


def test_sandbox_escape_is_refused_at_validate_time() -> None:
    found = one_error("steps:\n  - id: a\n    run: echo ${{ ().__class__.__mro__ }}\n")
    assert found.line == 3
    assert "`__class__` cannot be used" in found.message


def test_absurd_expression_is_an_error_not_a_crash() -> None:
    found = one_error(
        "steps:\n  - id: a\n    run: echo ${{ " + "(" * 2000 + "1" + ")" * 2000 + " }}\n"
    )
    assert found.line == 3
    assert "nested too deeply" in found.message


def test_references_to_a_matrix_instance_need_it_upstream() -> None:
    load(
        """
        steps:
          - id: t
            matrix: {v: [1, 2]}
            run: echo "r=${{ matrix.v }}" >> "$ANSFLOW_OUTPUT"
          - id: u
            needs: ["t[v=1]"]
            run: echo ${{ steps['t[v=1]'].outputs.r }}
        """
    )


def test_a_needs_entry_naming_a_missing_instance() -> None:
    found = one_error(
        """
        steps:
          - id: t
            matrix: {v: [1, 2]}
            run: x
          - id: u
            needs: ["t[v=3]"]
            run: y
        """
    )
    assert found.line == 6
    assert "not an instance of step 't' (instances: t[v=1], t[v=2])" in found.message


def test_a_syntax_error_at_the_end_points_at_the_last_line() -> None:
    found = one_error("steps:\n  - id: a\n    run: [echo\n\n\n")
    assert (found.line, found.col) == (3, 15)
    assert found.snippet == "    run: [echo"


def test_text_and_bytes_give_the_same_errors() -> None:
    source = (BAD / "several_schema_errors.yml").read_text(encoding="utf-8")
    from_text = errors(source)
    from_bytes = errors(source.encode())
    assert from_text == from_bytes


def test_every_bad_file_fails_in_process_with_located_errors() -> None:
    for path in BAD_FILES:
        with pytest.raises(Exception) as info:
            load_text(path.read_bytes(), path)
        diagnostics = info.value.diagnostics  # type: ignore[attr-defined]
        assert all(d.line is not None for d in diagnostics), path


def test_template_error_after_an_unusual_line_break() -> None:
    found = one_error('description: "a\u2028b"\nsteps:\n  - id: x\n    run: echo ${{ vars.q }}\n')
    assert found.snippet == "    run: echo ${{ vars.q }}"
    assert found.col == 15


# --- checks that need the whole pipeline (ansflow.checks) -------------------------------------------

TARGETS = """
targets:
  web: {type: ssh, hosts: [h1]}
  ci: {type: jenkins, url: "https://ci"}
"""


def with_targets(block: str) -> str:
    """The two targets above, then `block` (dedented): its first line is line 4."""
    return TARGETS.lstrip("\n") + dedent(block)


def test_steps_must_suit_their_target() -> None:
    block = """
        secrets: [S, S]
        steps:
          - {id: j, type: jenkins, job: x}
          - {id: s, on: ci, run: x}
          - {id: an, type: ansible, playbook: p.yml}
          - {id: ap, type: approval, on: web}
          - {id: se, serial: 1, run: x}
          - {id: ok1, type: jenkins, on: ci, job: x}
          - {id: ok2, type: ansible, on: web, playbook: p.yml, serial: 1}
        """
    found = errors(with_targets(block))
    assert [(d.line, d.message) for d in found] == [
        (4, "secret 'S' is declared twice"),
        (6, "step 'j': a jenkins step needs `on:` a target of type jenkins"),
        (7, "step 's': only `type: jenkins` steps run on jenkins target 'ci'"),
        (8, "step 'an': an ansible step needs `on:` a target of type ssh"),
        (9, "step 'ap': an approval gate runs locally"),
        (10, "step 'se': `serial` applies to ssh targets only"),
    ]


def test_template_names_are_checked_before_running() -> None:
    block = """
        env:
          E: ${{ steps.a.status }}
        steps:
          - id: a
            run: echo ${{ pipeline.nope }} ${{ run.nope }} ${{ host.name }} ${{ matrix.k }}
          - id: b
            on: web
            run: echo ${{ host.bogus }} ${{ steps.nope.status }} ${{ steps.a.bogus }}
        """
    found = errors(with_targets(block))
    assert [(d.line, d.col, d.message.split(": ", 1)[1]) for d in found] == [
        (5, 6, "`steps.a` cannot be used outside a step"),
        (8, 15, "`pipeline.nope` does not exist; pipeline has name, file"),
        (8, 36, "`run.nope` does not exist; run has id, status"),
        (8, 52, "`host` is only defined for steps on ssh targets"),
        (8, 69, "`matrix.k` is used but step has no `matrix`"),
        (11, 15, "`host.bogus` does not exist; host has name, address, port, user, vars"),
        (11, 33, "`steps.nope` names no step"),
        (11, 58, "`steps.a.bogus` does not exist; a step has status, outputs, hosts, result"),
    ]


def test_templates_in_targets_are_checked() -> None:
    found = one_error(
        'targets:\n  ci: {type: jenkins, url: "https://ci", token: "${{ secrets.T }}"}\n'
        "steps:\n  - {id: a, run: x}\n"
    )
    assert (found.line, found.col) == (2, 50)
    assert "`secrets.T` is not a declared secret" in found.message


def test_names_that_are_fine() -> None:
    block = """
        vars: {a: 1}
        secrets: [T]
        env:
          E: ${{ vars.a }} ${{ secrets.T }} ${{ pipeline.name }}
        steps:
          - id: a
            matrix: {k: [1, 2]}
            run: echo ${{ matrix.k }} ${{ vars.zz | default(1) }} ${{ range(3) | list }}
            env: {H: "${{ env.HOME }}"}
          - id: b
            on: web
            run: echo ${{ host.name }} ${{ host.vars.role }} ${{ steps.a.outputs.x }}
            when: always() and vars.a
          - id: c
            when: ${{ failure() }}
            run: echo ${{ steps.b.hosts.h1.outputs.x }} ${{ steps.a.status }} ${{ run.id }}
        """
    assert load(with_targets(block)).plan().by_id["c"].needs == ("b",)


def test_the_same_mistake_twice_in_one_string_is_reported_once() -> None:
    found = one_error("steps:\n  - id: a\n    run: echo ${{ vars.x }} ${{ vars.x }}\n")
    assert found.line == 3


@pytest.mark.parametrize(
    "expression", ['"a" * 400000000', '"a" | center(300000000)', "10 ** 5000", "[1] * 100000000"]
)
def test_validate_never_evaluates_a_template(tmp_path: Path, expression: str) -> None:
    """jinja's optimizer would fold these constants while compiling: gigabytes, or a crash."""
    (tmp_path / "p.yml").write_text(f"steps:\n  - id: a\n    run: '${{{{ {expression} }}}}'\n")
    result = run_cli("validate", "p.yml", cwd=tmp_path, timeout=20)
    assert result.returncode == 0, result.stderr


def test_an_endless_special_file_is_refused_without_reading_it_all() -> None:
    result = run_cli("validate", "/dev/zero", timeout=20)
    assert result.returncode == 2
    assert result.stderr.startswith("/dev/zero:1:1: file is larger than")
