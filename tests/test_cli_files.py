"""The pipeline-file commands end to end: validate, plan (4 formats), schema, init, --version, and
the exit codes, each run as `python -m ansflow` in a real process.

The expected `plan` output of every example is kept in `tests/golden/plan/` (rewrite it with
UPDATE_GOLDEN=1 and review the diff); errors are checked in test_loader_errors.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

import ansflow
from ansflow import cli
from ansflow.starter import starter_text
from ansflow.yamlsrc import load_plain
from tests.helpers_files import (
    EXAMPLE_FILES,
    GOLDEN,
    ROOT,
    STARTER,
    check_golden,
    cli_env,
    run_cli,
    run_cli_many,
)

FORMATS = ("tree", "mermaid", "dot", "json")
PLAN_CASES = [(path, fmt) for path in EXAMPLE_FILES for fmt in FORMATS]
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"


@pytest.fixture(scope="module")
def planned() -> dict[tuple[str, str], subprocess.CompletedProcess[str]]:
    """`ansflow plan examples/X.yml --format F` for every example and format, side by side."""
    calls = [
        (("plan", path.relative_to(ROOT).as_posix(), "--format", fmt), ROOT)
        for path, fmt in PLAN_CASES
    ]
    results = run_cli_many(calls)
    return {(p.stem, f): r for (p, f), r in zip(PLAN_CASES, results, strict=True)}


@pytest.fixture(scope="module")
def schema_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    result = run_cli("schema")
    assert result.returncode == 0
    assert result.stderr == ""
    path = tmp_path_factory.mktemp("schema") / "schema.json"
    path.write_text(result.stdout, encoding="utf-8")
    return path


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=[p.stem for p in EXAMPLE_FILES])
def test_validate_examples(path: Path) -> None:
    result = run_cli("validate", path.relative_to(ROOT).as_posix())
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.startswith(f"examples/{path.name}: ok (")


def test_the_release_example_uses_every_step_type_and_target_kind() -> None:
    """Issue 2 asks release.yml to show every step type of SPEC's table, `custom` included."""
    from ansflow.model import STEP_TYPE_NAMES

    data = load_plain((ROOT / "examples" / "release.yml").read_text(encoding="utf-8"))
    steps = [m for e in data["steps"] for m in e.get("parallel", [e])]
    assert {s.get("type", "shell") for s in steps} | {"shell"} >= set(STEP_TYPE_NAMES)
    assert "custom" in {s.get("type") for s in steps}
    assert {t["type"] for t in data["targets"].values()} == {"ssh", "jenkins"}


def test_validate_reports_counts() -> None:
    result = run_cli("validate", "examples/fanout.yml")
    assert result.stdout == "examples/fanout.yml: ok (fanout: 7 steps, 10 instances)\n"


@pytest.mark.parametrize(("path", "fmt"), PLAN_CASES, ids=[f"{p.stem}-{f}" for p, f in PLAN_CASES])
def test_plan_golden(
    path: Path, fmt: str, planned: dict[tuple[str, str], subprocess.CompletedProcess[str]]
) -> None:
    result = planned[(path.stem, fmt)]
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    check_golden(GOLDEN / "plan" / f"{path.stem}.{fmt}", result.stdout)


def test_plan_formats_are_well_formed(
    planned: dict[tuple[str, str], subprocess.CompletedProcess[str]],
) -> None:
    for path in EXAMPLE_FILES:
        tree = planned[(path.stem, "tree")].stdout
        mermaid = planned[(path.stem, "mermaid")].stdout
        dot = planned[(path.stem, "dot")].stdout
        data = json.loads(planned[(path.stem, "json")].stdout)
        ids = [step["id"] for step in data["steps"]]
        assert data["file"] == f"examples/{path.name}"
        assert len(ids) == len(set(ids))
        assert tree.splitlines()[0].endswith(f"{len(ids)} step instances")
        assert mermaid.startswith("flowchart TD\n")
        assert dot.startswith("digraph ") and dot.rstrip().endswith("}")
        edges = sum(len(step["needs"]) for step in data["steps"])
        assert mermaid.count(" --> ") == edges
        assert dot.count(" -> ") == edges
        known = set()
        for step in data["steps"]:  # run order: every need comes earlier
            assert set(step["needs"]) <= known
            known.add(step["id"])


def test_plan_default_format_is_tree(
    planned: dict[tuple[str, str], subprocess.CompletedProcess[str]],
) -> None:
    result = run_cli("plan", "examples/hello.yml")
    assert result.returncode == 0
    assert result.stdout == planned[("hello", "tree")].stdout


def test_plan_unknown_format_is_a_usage_error() -> None:
    result = run_cli("plan", "examples/hello.yml", "--format", "svg")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "unknown format 'svg'; choose one of tree, mermaid, dot, json" in result.stderr


def test_plan_matrix_ids(planned: dict[tuple[str, str], subprocess.CompletedProcess[str]]) -> None:
    data = json.loads(planned[("fanout", "json")].stdout)
    by_id = {step["id"]: step for step in data["steps"]}
    assert by_id["test[python=3.11,suite=unit]"]["matrix"] == {"python": "3.11", "suite": "unit"}
    assert by_id["package"]["needs"][:4] == [
        "test[python=3.11,suite=unit]",
        "test[python=3.11,suite=api]",
        "test[python=3.12,suite=unit]",
        "test[python=3.12,suite=api]",
    ]


def test_schema_is_valid_draft_2020_12(schema_file: Path) -> None:
    schema = json.loads(schema_file.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["additionalProperties"] is False
    assert "steps" in schema["required"]


def check_jsonschema(schema: Path, *files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CHECK_JSONSCHEMA), "--schemafile", str(schema), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=cli_env(),
    )


def test_schema_accepts_every_example_and_rejects_unknown_keys(
    schema_file: Path, tmp_path: Path
) -> None:
    unknown_top = tmp_path / "unknown_top.yml"
    unknown_top.write_text("stepz: []\nsteps:\n  - id: a\n    run: x\n", encoding="utf-8")
    unknown_step = tmp_path / "unknown_step.yml"
    unknown_step.write_text("steps:\n  - id: a\n    run: x\n    neeeds: []\n", encoding="utf-8")
    good = check_jsonschema(schema_file, *EXAMPLE_FILES, STARTER)
    assert good.returncode == 0, good.stdout + good.stderr
    for bad in (unknown_top, unknown_step):
        result = check_jsonschema(schema_file, bad)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "Additional properties are not allowed" in result.stdout


def test_schema_agrees_with_the_loader_on_examples(schema_file: Path) -> None:
    validator = Draft202012Validator(json.loads(schema_file.read_text(encoding="utf-8")))
    for path in [*EXAMPLE_FILES, STARTER]:
        data = load_plain(path.read_text(encoding="utf-8"))  # YAML 1.2, as the loader reads it
        assert not list(validator.iter_errors(data)), path
    wrong = {"steps": [{"id": "a", "run": "x", "retries": -1}], "bogus": 1}
    assert len(list(validator.iter_errors(wrong))) >= 2


def test_init_writes_a_starter_that_validates(tmp_path: Path) -> None:
    result = run_cli("init", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    written = tmp_path / "ansflow.yml"
    assert written.read_text(encoding="utf-8") == starter_text()
    assert "wrote ansflow.yml" in result.stdout
    check = run_cli("validate", cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    assert check.stdout.startswith("ansflow.yml: ok (")
    assert starter_text().startswith("#")  # a commented starter


def test_init_never_overwrites_without_force(tmp_path: Path) -> None:
    target = tmp_path / "ansflow.yml"
    target.write_text("mine: true\n", encoding="utf-8")
    refused = run_cli("init", cwd=tmp_path)
    assert refused.returncode == 2
    assert "already exists; use --force" in refused.stderr
    assert target.read_text(encoding="utf-8") == "mine: true\n"
    forced = run_cli("init", "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert target.read_text(encoding="utf-8") == starter_text()


def test_init_to_another_path_and_into_a_folder(tmp_path: Path) -> None:
    result = run_cli("init", "ci/pipeline.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "ci" / "pipeline.yml").read_text(encoding="utf-8") == starter_text()
    folder = run_cli("init", "ci", cwd=tmp_path)
    assert folder.returncode == 2
    assert "is a folder" in folder.stderr


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout == f"ansflow {ansflow.__version__}\n"


def test_console_script_and_module_agree() -> None:
    script = Path(sys.executable).parent / "ansflow"
    result = subprocess.run(
        [str(script), "plan", "examples/hello.yml", "--format", "json"],
        cwd=ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == run_cli("plan", "examples/hello.yml", "--format", "json").stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no-such-command"], "No such command"),
        (["validate", "--no-such-flag"], "No such option"),
        (["validate", "a.yml", "b.yml"], "unexpected extra argument"),
        (["plan", "--format"], "requires an argument"),
    ],
)
def test_usage_errors_exit_2(args: list[str], message: str) -> None:
    result = run_cli(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""


def test_no_arguments_shows_help() -> None:
    result = run_cli()
    assert result.returncode in (0, 2)
    assert "Usage: ansflow" in result.stdout + result.stderr


# --- main() maps every error to a message and an exit code (in-process) --------------------------


def run_main(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setenv("ANSFLOW_NO_FAST_EXIT", "1")  # NOTE: never os._exit inside pytest
    monkeypatch.setattr(sys, "argv", ["ansflow", *args])
    with pytest.raises(SystemExit) as info:
        cli.main()
    code = info.value.code
    return code if isinstance(code, int) else 1


def test_unexpected_errors_are_a_message_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def boom(path: object) -> None:
        raise RuntimeError("something odd")

    monkeypatch.delenv("ANSFLOW_DEBUG", raising=False)
    monkeypatch.setattr("ansflow.loader.load_file", boom)
    assert run_main(monkeypatch, "validate", "examples/hello.yml") == 70
    err = capsys.readouterr().err
    assert "internal error: RuntimeError: something odd" in err
    assert "Traceback" not in err
    monkeypatch.setenv("ANSFLOW_DEBUG", "1")
    monkeypatch.setattr(sys, "argv", ["ansflow", "validate", "examples/hello.yml"])
    with pytest.raises(RuntimeError):
        cli.main()


def test_interrupt_exits_3(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(path: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("ansflow.loader.load_file", interrupted)
    assert run_main(monkeypatch, "validate", "examples/hello.yml") == 3
    assert "interrupted" in capsys.readouterr().err


def test_load_errors_exit_2_in_process(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("steps:\n  - id: a\n    run: x\n  - id: a\n    run: y\n", encoding="utf-8")
    assert run_main(monkeypatch, "validate", str(bad)) == 2
    err = capsys.readouterr().err
    assert f"{bad}:4:9: duplicate step id 'a'" in err


@pytest.mark.parametrize(
    ("inventory", "hosts", "words"),
    [
        ("nope.ini", "[web]", "cannot read the inventory"),
        ("hosts.ini", "[webz]", "no host or group named 'webz'"),
        ("hosts.ini", "[web]", "address '1.2.3.4;id' holds characters"),
        (None, "['root@127.0.0.1:70000']", "out of range"),
    ],
)
def test_validate_resolves_ssh_hosts(
    tmp_path: Path, inventory: str | None, hosts: str, words: str
) -> None:
    (tmp_path / "hosts.ini").write_text("[web]\nw1\nw2 ansible_host='1.2.3.4;id'\n")
    top = f"inventory: {inventory}\n" if inventory else ""
    (tmp_path / "p.yml").write_text(
        top + f"targets:\n  t: {{type: ssh, hosts: {hosts}}}\n"
        "steps:\n  - {id: a, on: t, run: 'true'}\n"
    )
    result = run_cli("validate", "p.yml", cwd=tmp_path)
    assert result.returncode == 2, result
    assert words in result.stderr
    assert result.stderr.startswith("p.yml:"), result.stderr
    assert "Traceback" not in result.stderr
