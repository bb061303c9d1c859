"""ansflow.model: the pydantic models of SPEC section 1, without YAML in between."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from ansflow.model import (
    MAX_MATRIX_INSTANCES,
    STEP_MODELS,
    STEP_TYPE_NAMES,
    AnsibleStep,
    ApprovalStep,
    BuildStep,
    DeployStep,
    FetchCodeStep,
    JenkinsStep,
    JenkinsTarget,
    NotifyStep,
    ParallelBlock,
    Pipeline,
    SecurityScanStep,
    ShellStep,
    SSHTarget,
    TestStep,
    field_names_at,
)


def pipeline(*steps: dict[str, Any], **top: Any) -> Pipeline:
    return Pipeline.model_validate({"steps": list(steps), **top})


def error_types(data: dict[str, Any]) -> list[tuple[tuple[Any, ...], str]]:
    with pytest.raises(ValidationError) as info:
        Pipeline.model_validate(data)
    return [(tuple(e["loc"]), e["type"]) for e in info.value.errors()]


def test_minimal_pipeline_and_defaults() -> None:
    p = pipeline({"id": "a", "run": "echo"})
    step = p.steps[0]
    assert isinstance(step, ShellStep)
    assert step.type == "shell"
    assert step.on is None
    assert step.needs is None
    assert step.env == {}
    assert step.continue_on_error is False
    assert p.version == 1
    assert p.defaults.retries == 0
    assert p.defaults.retry_delay == 1.0
    assert p.targets == {}
    assert step.display_name == "a"


def test_custom_is_an_alias_of_shell() -> None:
    step = pipeline({"id": "a", "type": "custom", "run": "x"}).steps[0]
    assert isinstance(step, ShellStep)
    assert step.type == "custom"


@pytest.mark.parametrize(
    ("data", "model"),
    [
        (
            {"type": "fetch_code", "repo": "https://x/y.git", "ref": "main", "depth": 1},
            FetchCodeStep,
        ),
        ({"type": "build", "run": "make", "artifacts": "dist/*.tgz"}, BuildStep),
        ({"type": "test", "run": "pytest", "junit": ["a.xml", "b.xml"]}, TestStep),
        ({"type": "security_scan", "report": "r.json", "fail_on": "high"}, SecurityScanStep),
        ({"type": "deploy", "files": [{"src": "a", "dest": "/b/"}]}, DeployStep),
        ({"type": "deploy", "run": "install.sh"}, DeployStep),
        ({"type": "notify", "webhook": "https://hooks/x"}, NotifyStep),
        ({"type": "notify", "command": "mail -s hi"}, NotifyStep),
        ({"type": "approval", "message": "go?", "approvers": "alice"}, ApprovalStep),
        ({"type": "jenkins", "job": "j", "parameters": {"A": 1, "B": "x"}}, JenkinsStep),
        ({"type": "jenkins", "run": "make"}, JenkinsStep),
        ({"type": "ansible", "playbook": "site.yml", "tags": "web"}, AnsibleStep),
    ],
)
def test_every_step_type_validates(data: dict[str, Any], model: type) -> None:
    step = pipeline({"id": "s", **data}).steps[0]
    assert type(step) is model


def test_string_or_list_fields_become_lists() -> None:
    p = pipeline(
        {"id": "b", "type": "build", "run": "make", "artifacts": "dist/a"},
        {"id": "g", "type": "approval", "approvers": "alice"},
    )
    assert p.steps[0].artifacts == ["dist/a"]  # type: ignore[union-attr]
    assert p.steps[1].approvers == ["alice"]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"type": "deploy"}, "needs `files`, `run`, or both"),
        ({"type": "notify"}, "exactly one of `webhook` or `command`"),
        ({"type": "notify", "webhook": "https://x", "command": "y"}, "exactly one of"),
        ({"type": "jenkins"}, "exactly one of `job` or `run`"),
        ({"type": "jenkins", "job": "a", "run": "b"}, "exactly one of `job` or `run`"),
    ],
)
def test_steps_that_have_nothing_to_do_are_refused(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        pipeline({"id": "s", **data})


def test_required_fields() -> None:
    found = error_types({"steps": [{"id": "a"}, {"run": "x"}]})
    assert (("steps", 0, "shell", "run"), "missing") in found
    assert (("steps", 1, "shell", "id"), "missing") in found
    assert error_types({}) == [(("steps",), "missing")]


def test_unknown_fields_are_refused_everywhere() -> None:
    found = error_types(
        {
            "bogus": 1,
            "defaults": {"tmeout": 1},
            "targets": {"w": {"type": "ssh", "hosts": ["a"], "hostz": 1}},
            "steps": [{"id": "a", "run": "x", "neeeds": []}],
        }
    )
    assert set(found) == {
        (("bogus",), "extra_forbidden"),
        (("defaults", "tmeout"), "extra_forbidden"),
        (("targets", "w", "ssh", "hostz"), "extra_forbidden"),
        (("steps", 0, "shell", "neeeds"), "extra_forbidden"),
    }


def test_unknown_step_type_is_a_tag_error() -> None:
    found = error_types({"steps": [{"id": "a", "type": "shel", "run": "x"}]})
    assert found == [(("steps", 0), "union_tag_invalid")]


def test_steps_must_be_a_non_empty_list() -> None:
    assert error_types({"steps": {"a": 1}}) == [(("steps",), "list_type")]
    assert error_types({"steps": []}) == [(("steps",), "too_short")]


def test_parallel_block_holds_steps() -> None:
    p = pipeline({"parallel": [{"id": "a", "run": "x"}, {"id": "b", "type": "test", "run": "y"}]})
    block = p.steps[0]
    assert isinstance(block, ParallelBlock)
    assert [s.id for s in block.parallel] == ["a", "b"]
    assert error_types({"steps": [{"parallel": []}]}) == [
        (("steps", 0, "parallel", "parallel"), "too_short")
    ]


def test_iter_steps_gives_paths_in_file_order() -> None:
    p = pipeline(
        {"id": "a", "run": "x"},
        {"parallel": [{"id": "b", "run": "x"}, {"id": "c", "run": "x"}]},
        {"id": "d", "run": "x"},
    )
    assert [(path, step.id) for path, step in p.iter_steps()] == [
        (("steps", 0), "a"),
        (("steps", 1, "parallel", 0), "b"),
        (("steps", 1, "parallel", 1), "c"),
        (("steps", 2), "d"),
    ]


@pytest.mark.parametrize(
    ("written", "seconds"),
    [(90, 90.0), (1.5, 1.5), ("90", 90.0), ("30s", 30.0), ("5m", 300.0), ("1h30m", 5400.0)],
)
def test_durations(written: object, seconds: float) -> None:
    assert pipeline({"id": "a", "run": "x", "timeout": written}).steps[0].timeout == seconds


@pytest.mark.parametrize(
    "written", ["5 parsecs", "", "-5s", -1, True, float("inf"), float("nan"), [1]]
)
def test_bad_durations(written: object) -> None:
    with pytest.raises(ValidationError):
        pipeline({"id": "a", "run": "x", "timeout": written})


@pytest.mark.parametrize(
    ("field", "value", "ok"),
    [
        ("retries", 0, True),
        ("retries", -1, False),
        ("retries", 1.5, False),
        ("retries", "2", False),
        ("retries", True, False),
        ("serial", 0, False),
        ("serial", 1, True),
    ],
)
def test_counts_are_whole_and_bounded(field: str, value: object, ok: bool) -> None:
    data = {"id": "a", "run": "x", field: value}
    if ok:
        pipeline(data)
    else:
        with pytest.raises(ValidationError):
            pipeline(data)


@pytest.mark.parametrize("value", [0, -3, 2.0, "4"])
def test_concurrency_is_a_positive_whole_number(value: object) -> None:
    with pytest.raises(ValidationError):
        pipeline({"id": "a", "run": "x"}, concurrency=value)


def test_matrix_values() -> None:
    step = pipeline({"id": "t", "run": "x", "matrix": {"py": ["3.11", 3], "ok": [True]}}).steps[0]
    assert step.matrix == {"py": ["3.11", 3], "ok": [True]}


@pytest.mark.parametrize(
    ("matrix", "message"),
    [
        ([1, 2], "valid dictionary"),
        ({}, "at least one key"),
        ({"x": []}, "non-empty list"),
        ({"x": 1}, "non-empty list"),
        ({"x": [[1]]}, "strings, numbers or booleans"),
        ({"x": [None]}, "strings, numbers or booleans"),
        ({"x": list(range(17)), "y": list(range(16))}, "272 instances"),
        ({"bad key": [1]}, "pattern"),
        ({"v": [1, "1"]}, "matrix key 'v' lists '1' twice"),
        ({"v": [True, "true", "x"]}, "lists 'true' twice"),
        ({"x": ["a,y=b", "a"], "y": ["c", "b,y=c"]}, r"same instance id \[x=a,y=b,y=c\]"),
    ],
)
def test_bad_matrices(matrix: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        pipeline({"id": "t", "run": "x", "matrix": matrix})


def test_matrix_at_the_limit_is_fine() -> None:
    assert MAX_MATRIX_INSTANCES == 256
    pipeline({"id": "t", "run": "x", "matrix": {"a": list(range(16)), "b": list(range(16))}})


@pytest.mark.parametrize("name", ["DEPLOY_TOKEN", "_x", "a1"])
def test_good_secret_names(name: str) -> None:
    assert pipeline({"id": "a", "run": "x"}, secrets=[name]).secrets == [name]


@pytest.mark.parametrize("name", ["1bad", "with-dash", "sp ace", "", "é"])
def test_bad_secret_names(name: str) -> None:
    with pytest.raises(ValidationError):
        pipeline({"id": "a", "run": "x"}, secrets=[name])


@pytest.mark.parametrize("step_id", ["bad id", "a.b", "", "x[1]", "a/b"])
def test_bad_step_ids(step_id: str) -> None:
    with pytest.raises(ValidationError):
        pipeline({"id": step_id, "run": "x"})


def test_env_values_become_strings() -> None:
    p = pipeline({"id": "a", "run": "x", "env": {"N": 3, "F": 1.5, "B": True}}, env={"X": False})
    assert p.steps[0].env == {"N": "3", "F": "1.5", "B": "true"}
    assert p.env == {"X": "false"}
    with pytest.raises(ValidationError):
        pipeline({"id": "a", "run": "x", "env": {"L": [1]}})


def test_file_mode_keeps_the_digits_as_written() -> None:
    step = pipeline(
        {"id": "d", "type": "deploy", "files": [{"src": "a", "dest": "b", "mode": 644}]}
    ).steps[0]
    assert step.files[0].mode == "644"  # type: ignore[union-attr]
    with pytest.raises(ValidationError):
        pipeline({"id": "d", "type": "deploy", "files": [{"src": "a", "dest": "b", "mode": "999"}]})


def test_targets() -> None:
    p = pipeline(
        {"id": "a", "run": "x"},
        targets={
            "web": {"type": "ssh", "hosts": ["w1", "deploy@10.0.0.7:2222"], "forks": 3},
            "ci": {"type": "jenkins", "url": "https://ci", "token": "${{ secrets.T }}"},
        },
    )
    web, ci = p.targets["web"], p.targets["ci"]
    assert isinstance(web, SSHTarget)
    assert web.known_hosts == "strict"
    assert web.forks == 3
    assert isinstance(ci, JenkinsTarget)
    assert ci.verify is True


@pytest.mark.parametrize(
    "target",
    [
        {"type": "ssh", "hosts": []},
        {"type": "ssh", "hosts": ["a"], "port": 70000},
        {"type": "ssh", "hosts": ["a"], "known_hosts": "maybe"},
        {"type": "jenkins", "url": "ftp://ci"},
        {"type": "telnet"},
        {"hosts": ["a"]},
    ],
)
def test_bad_targets(target: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        pipeline({"id": "a", "run": "x"}, targets={"t": target})


@pytest.mark.parametrize("written", ["no", "off", "false", 0, 1, "yes"])
def test_only_yaml_true_and_false_are_booleans(written: object) -> None:
    """SPEC: YAML 1.2 booleans. `verify: no` must not quietly turn TLS checks off."""
    with pytest.raises(ValidationError):
        pipeline(
            {"id": "a", "run": "x"},
            targets={"ci": {"type": "jenkins", "url": "https://ci", "verify": written}},
        )
    with pytest.raises(ValidationError):
        pipeline({"id": "a", "run": "x", "continue_on_error": written})
    with pytest.raises(ValidationError):
        pipeline({"id": "a", "type": "fetch_code", "repo": "r", "submodules": written})
    ci = pipeline(
        {"id": "a", "run": "x"},
        targets={"ci": {"type": "jenkins", "url": "https://ci", "verify": False}},
    ).targets["ci"]
    assert isinstance(ci, JenkinsTarget) and ci.verify is False


def test_models_are_frozen() -> None:
    p = pipeline({"id": "a", "run": "x"})
    with pytest.raises(ValidationError):
        p.name = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        p.steps[0].run = "rm -rf /"  # type: ignore[union-attr,misc]


def test_step_type_names() -> None:
    assert set(STEP_TYPE_NAMES) == {*STEP_MODELS, "custom"}
    assert set(STEP_MODELS) == {
        "shell",
        "fetch_code",
        "build",
        "test",
        "security_scan",
        "deploy",
        "notify",
        "approval",
        "jenkins",
        "ansible",
    }


@pytest.mark.parametrize(
    ("loc", "expected"),
    [
        (("steps", 0, "shell", "neeeds"), "needs"),
        (("steps", 0, "build", "artifactz"), "artifacts"),
        (("steps", 0, "parallel", "parallel", 1, "test", "junitt"), "junit"),
        (("targets", "w", "ssh", "hostz"), "hosts"),
        (("defaults", "tmeout"), "timeout"),
        (("bogus",), "steps"),
    ],
)
def test_field_names_at_follows_the_models(loc: tuple[Any, ...], expected: str) -> None:
    assert expected in field_names_at(loc)


def test_field_names_at_unknown_place_is_empty() -> None:
    assert field_names_at(("steps", 0, "nonsense", "x")) == []
