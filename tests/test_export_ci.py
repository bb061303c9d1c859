"""`ansflow export --format gitlab-ci|github-actions`, end to end through the CLI.

Every pipeline here is exported once in both formats (side by side, in one module fixture); the
outputs must pass the schemas vendored by check-jsonschema (offline), carry the structure each
feature maps to, and list at the top whatever the target cannot express. The examples' output is
kept in `tests/golden/export/` (rewrite it with UPDATE_GOLDEN=1 and review the diff).
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from ansflow.export.gitlab_ci import shell_contexts
from ansflow.loader import load_text
from tests.clihelp import Cli, Result
from tests.helpers_files import EXAMPLES, GOLDEN, check_golden

FORMATS = ("gitlab-ci", "github-actions")
SCHEMAS = {"gitlab-ci": "vendor.gitlab-ci", "github-actions": "vendor.github-workflows"}
SUFFIX = {"gitlab-ci": "gitlab-ci.yml", "github-actions": "github.yml"}
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"
EXAMPLE_NAMES = ("hello", "fanout", "release")

#: Small pipelines, each exercising a few features; exported in both formats.
PIPELINES: dict[str, str] = {
    "limits": """
        name: limits
        steps:
          - id: flaky
            run: ./flaky.sh
            retries: 5
            retry_delay: 3s
            timeout: 90s
            continue_on_error: true
          - id: quick
            run: echo quick
            timeout: 1h30m
            retries: 1
    """,
    "conditions": """
        name: conditions
        vars: {branch: main, deploy: false}
        env: {STAGE: prod}
        steps:
          - id: build
            run: make
          - id: on-main
            when: ${{ vars.branch == 'main' }}
            run: echo main
          - id: after-main
            run: echo after
          - id: cleanup
            needs: [build]
            when: ${{ always() }}
            run: echo cleanup
          - id: on-failure
            needs: [build]
            when: ${{ failure() }}
            run: echo failed
          - id: on-cancel
            needs: [build]
            when: ${{ cancelled() }}
            run: echo cancelled
          - id: mixed
            needs: [build]
            when: ${{ failure() or vars.deploy }}
            run: echo mixed
          - id: listed
            needs: [build]
            when: ${{ always() and vars.branch in ['main', 'release'] and not vars.deploy }}
            run: echo listed
          - id: off
            needs: [build]
            when: false
            run: echo never
          - id: by-env
            needs: [build]
            when: ${{ env.STAGE == 'prod' }}
            run: echo prod
    """,
    "matrix": """
        name: matrix
        steps:
          - id: test
            matrix: {os: [linux, mac], py: ["3.11", "3.12"]}
            run: echo ${{ matrix.os }} ${{ matrix.py }}
          - id: one
            needs: ["test[os=linux,py=3.11]"]
            run: echo one
          - id: per-os
            needs: []
            matrix: {os: [linux, mac]}
            when: ${{ matrix.os == 'linux' }}
            run: echo linux only
    """,
    "data": """
        name: data
        secrets: [API_TOKEN]
        vars: {who: team}
        steps:
          - id: make
            type: build
            workdir: app
            run: |
              make dist
              echo "sha=abc" >> "$ANSFLOW_OUTPUT"
            artifacts: [dist/app.tgz]
          - parallel:
              - id: unit
                type: test
                workdir: app
                run: pytest --junitxml=reports/unit.xml
                junit: reports/unit.xml
              - id: scan
                type: security_scan
                run: bandit -r . -f json -o bandit.json
                report: bandit.json
                fail_on: high
          - id: use
            env: {SHA: "${{ steps.make.outputs.sha }}"}
            run: |
              echo "single '${{ vars.who }}' and ${{ secrets.API_TOKEN }}"
              echo 'sha ${{ steps.make.outputs.sha }}'
          - id: here
            run: |
              cat <<EOF
              hello ${{ vars.who }}
              EOF
          - id: py
            shell: python3
            run: print("${{ vars.who }}")
          - id: posix
            shell: sh
            run: echo posix
    """,
    "kinds": """
        name: kinds
        targets:
          web:
            type: ssh
            hosts: [web1, "deploy@10.0.0.7:2222"]
            user: ops
            known_hosts: accept-new
          ci:
            type: jenkins
            url: https://jenkins.example.com
            user: robot
            token: ${{ secrets.JENKINS_TOKEN }}
        secrets: [JENKINS_TOKEN]
        steps:
          - id: tools
            type: fetch_code
            repo: https://github.com/acme/tools.git
            ref: v2
            depth: 1
            submodules: true
          - id: vendor
            type: fetch_code
            repo: https://git.example.com/vendor.git
          - id: gate
            type: approval
            message: Ship it?
            approvers: [alice]
            timeout: 2h
          - id: ship
            type: deploy
            on: web
            files: [{src: dist/app.tgz, dest: /opt/app/}]
            run: /opt/app/install.sh ${{ host.name }}
          - id: trigger
            type: jenkins
            on: ci
            job: folder/integration
            parameters: {REF: "${{ steps.tools.outputs.commit }}", FAST: true}
          - id: managed
            type: jenkins
            on: ci
            run: make on-jenkins
          - id: play
            type: ansible
            on: web
            playbook: site.yml
            tags: [config]
          - id: tell
            type: notify
            when: ${{ always() }}
            webhook: https://chat.example.com/hook
          - id: tell-cmd
            type: notify
            command: logger -t ansflow
            message: done ${{ run.id }}
    """,
    "names": """
        name: names
        steps:
          - id: pages
            run: echo pages
          - id: 1st
            run: echo first
          - id: variables
            needs: [pages, 1st]
            run: echo vars
    """,
    "plain": """
        name: plain
        steps:
          - id: only
            run: echo hello
    """,
}


def _outputs(cli: Cli) -> dict[tuple[str, str], Result]:
    """Every pipeline exported in both formats, in parallel threads (each is its own process)."""
    for name in EXAMPLE_NAMES:
        cli.write(f"{name}.yml", (EXAMPLES / f"{name}.yml").read_text(encoding="utf-8"))
    cli.write("hosts.ini", (EXAMPLES / "hosts.ini").read_text(encoding="utf-8"))
    for name, text in PIPELINES.items():
        cli.write(f"{name}.yml", text)
    cases = [(name, fmt) for name in (*EXAMPLE_NAMES, *PIPELINES) for fmt in FORMATS]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda c: cli("export", f"{c[0]}.yml", "--format", c[1]), cases))
    return dict(zip(cases, results, strict=True))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Result]:
    return _outputs(Cli(tmp_path_factory.mktemp("export")))


def doc(exported: dict[tuple[str, str], Result], name: str, fmt: str) -> dict[str, Any]:
    result = exported[(name, fmt)]
    assert result.code == 0, str(result)
    data = yaml.safe_load(result.out)
    assert isinstance(data, dict)
    return data


def dropped(result: Result) -> list[str]:
    """The `# - step: text` lines of the header's "Not expressible" section."""
    lines = result.out.split("\n\n", 1)[0].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# Not expressible"))
    return [line[len("#   - ") :] for line in lines[start + 1 :] if line.startswith("#   - ")]


def setups(result: Result) -> list[str]:
    lines = result.out.split("\n\n", 1)[0].splitlines()
    if not any(line.startswith("# Set up") for line in lines):
        return []
    start = next(i for i, line in enumerate(lines) if line.startswith("# Set up"))
    out = []
    for line in lines[start + 1 :]:
        if not line.startswith("#   - "):
            break
        out.append(line[len("#   - ") :])
    return out


def has_note(notes: list[str], step: str, *words: str) -> bool:
    return any(n.startswith(f"{step}: ") and all(w in n for w in words) for n in notes)


def jobs(data: dict[str, Any]) -> dict[str, Any]:
    """GitLab jobs: the top-level mappings that have a script."""
    return {k: v for k, v in data.items() if isinstance(v, dict) and "script" in v}


def need_names(job: dict[str, Any]) -> list[str]:
    return [n if isinstance(n, str) else n["job"] for n in job.get("needs", [])]


# --- the whole outputs ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_output_passes_the_vendored_schema(
    fmt: str, exported: dict[tuple[str, str], Result], tmp_path: Path
) -> None:
    files = []
    for (name, each), result in sorted(exported.items()):
        if each != fmt:
            continue
        assert result.code == 0, str(result)
        assert result.err == ""
        path = tmp_path / f"{name}.{SUFFIX[fmt]}"
        path.write_text(result.out, encoding="utf-8")
        files.append(str(path))
    proc = subprocess.run(
        [str(CHECK_JSONSCHEMA), "--builtin-schema", SCHEMAS[fmt], *files],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
@pytest.mark.parametrize("fmt", FORMATS)
def test_examples_golden(name: str, fmt: str, exported: dict[tuple[str, str], Result]) -> None:
    result = exported[(name, fmt)]
    assert result.code == 0, str(result)
    check_golden(GOLDEN / "export" / f"{name}.{SUFFIX[fmt]}", result.out)


@pytest.mark.parametrize("fmt", FORMATS)
def test_header_names_a_step_for_every_dropped_feature(
    fmt: str, exported: dict[tuple[str, str], Result]
) -> None:
    for (name, each), result in exported.items():
        if each != fmt:
            continue
        assert result.out.startswith("# Generated by `ansflow export --format "), name
        head = result.out.split("\n\n", 1)[0]
        assert all(line.startswith("#") for line in head.splitlines()), name
        text = (
            (EXAMPLES / f"{name}.yml").read_text(encoding="utf-8")
            if name in EXAMPLE_NAMES
            else textwrap.dedent(PIPELINES[name])
        )
        loaded = load_text(text, Path(f"{name}.yml"))
        ids = {"pipeline"} | {step.id for _, step in loaded.pipeline.iter_steps()}
        for note in dropped(result) + setups(result):
            assert note.split(": ", 1)[0] in ids, f"{name}: {note}"


def test_nothing_dropped_says_so(exported: dict[tuple[str, str], Result]) -> None:
    assert "# Not expressible in GitLab CI: nothing" in exported[("plain", "gitlab-ci")].out
    assert (
        "# Not expressible in GitHub Actions: nothing" in exported[("plain", "github-actions")].out
    )


# --- GitLab CI -----------------------------------------------------------------------------------


def test_gitlab_stages_needs_and_matrix_of_fanout(exported: dict[tuple[str, str], Result]) -> None:
    data = doc(exported, "fanout", "gitlab-ci")
    found = jobs(data)
    assert data["stages"] == ["prepare", "compile, docs", "test", "lint", "package", "summary"]
    assert found["compile"]["stage"] == found["docs"]["stage"] == "compile, docs"
    assert found["prepare"]["needs"] == []
    assert found["lint"]["needs"] == []
    assert need_names(found["package"]) == ["test", "docs", "lint", "prepare"]
    assert found["test"]["parallel"] == {
        "matrix": [{"python": ["3.11", "3.12"], "suite": ["unit", "api"]}]
    }
    assert found["summary"]["when"] == "always"
    # outputs travel as dotenv artifacts, read as variables
    assert found["prepare"]["artifacts"]["reports"]["dotenv"] == "ansflow-outputs-prepare.env"
    assert "${ANSFLOW_OUT_prepare_version}" in found["compile"]["script"][-1]
    assert data["variables"]["BUILD_MODE"] == "release"


def test_gitlab_release_gate_rules_and_artifacts(exported: dict[tuple[str, str], Result]) -> None:
    result = exported[("release", "gitlab-ci")]
    found = jobs(doc(exported, "release", "gitlab-ci"))
    assert found["gate"]["when"] == "manual"
    assert found["gate"]["allow_failure"] is False
    assert found["gate"]["manual_confirmation"] == "Roll out main to production?"
    assert found["rollout"]["rules"] == [{"if": '$BRANCH == "main"'}]
    assert found["rollout"]["retry"] == 2
    # a step that needs a conditional one carries its rule (ansflow would skip it too)
    assert found["integration"]["rules"] == [{"if": '$BRANCH == "main"'}]
    assert found["integration"]["needs"][0] == {"job": "rollout", "optional": True}
    assert found["announce"]["when"] == "always"
    assert "rules" not in found["announce"]
    assert found["build"]["artifacts"] == {"paths": ["dist/shop.tar.gz"]}
    assert found["unit"]["artifacts"]["reports"] == {"junit": ["reports/unit.xml"]}
    assert found["build"]["timeout"] == "10m"
    assert "scp -r" in found["rollout"]["script"][-1]
    notes = dropped(result)
    assert has_note(notes, "scan", "fail_on high")
    assert has_note(notes, "rollout", "retry_delay 5s")
    assert has_note(notes, "integration", "does not follow")
    assert has_note(notes, "announce", "run.status")
    assert has_note(setups(result), "pipeline", "DEPLOY_TOKEN", "JENKINS_TOKEN")


def test_gitlab_limits(exported: dict[tuple[str, str], Result]) -> None:
    result = exported[("limits", "gitlab-ci")]
    found = jobs(doc(exported, "limits", "gitlab-ci"))
    assert found["flaky"]["retry"] == 2
    assert found["flaky"]["timeout"] == "1m 30s"
    assert found["flaky"]["allow_failure"] is True
    assert found["quick"]["timeout"] == "1h 30m"
    assert found["quick"]["retry"] == 1
    notes = dropped(result)
    assert has_note(notes, "flaky", "retries 5 clamped to 2")
    assert has_note(notes, "flaky", "retry_delay 3s")


def test_gitlab_conditions(exported: dict[tuple[str, str], Result]) -> None:
    result = exported[("conditions", "gitlab-ci")]
    found = jobs(doc(exported, "conditions", "gitlab-ci"))
    assert found["on-main"]["rules"] == [{"if": '$BRANCH == "main"'}]
    assert found["after-main"]["rules"] == [{"if": '$BRANCH == "main"'}]
    assert found["cleanup"]["when"] == "always"
    assert found["on-failure"]["when"] == "on_failure"
    assert found["listed"]["rules"] == [
        {"if": '$BRANCH =~ /^(main|release)$/ && $DEPLOY != "true"', "when": "always"}
    ]
    assert found["off"]["rules"] == [{"when": "never"}]
    assert found["by-env"]["rules"] == [{"if": '$STAGE == "prod"'}]
    # what GitLab cannot say becomes a manual job, and the header says so
    assert found["on-cancel"]["when"] == "manual"
    assert found["mixed"]["when"] == "manual"
    notes = dropped(result)
    assert has_note(notes, "on-cancel", "cancelled()", "manual")
    assert has_note(notes, "mixed", "manual")


def test_gitlab_matrix_instance_needs(exported: dict[tuple[str, str], Result]) -> None:
    result = exported[("matrix", "gitlab-ci")]
    found = jobs(doc(exported, "matrix", "gitlab-ci"))
    assert found["one"]["needs"] == [
        {"job": "test", "parallel": {"matrix": [{"os": "linux", "py": "3.11"}]}}
    ]
    assert found["test"]["variables"]["ANSFLOW_STEP_ID"] == "test[os=${os},py=${py}]"
    assert found["test"]["script"] == ["echo ${os} ${py}"]
    assert found["per-os"]["when"] == "manual"
    assert has_note(dropped(result), "per-os", "matrix")


def test_gitlab_scripts_quote_templates_for_the_shell(
    exported: dict[tuple[str, str], Result],
) -> None:
    data = doc(exported, "data", "gitlab-ci")
    found = jobs(data)
    assert data["variables"]["WHO"] == {
        "value": "team",
        "description": "ansflow var who (ansflow run --var who=...)",
    }
    use = found["use"]
    assert use["variables"]["SHA"] == "${ANSFLOW_OUT_make_sha}"
    script = use["script"][-1]
    assert """echo "single '${WHO}' and ${API_TOKEN}\"""" in script
    assert """echo 'sha '"${ANSFLOW_OUT_make_sha}"''""" in script
    # a template in a here-document: the script goes whole through a variable GitLab expands
    assert found["here"]["variables"]["ANSFLOW_SCRIPT"] == "cat <<EOF\nhello ${WHO}\nEOF\n"
    assert found["py"]["script"][-1] == 'python3 "$ansflow_script"'
    assert found["posix"]["script"][-1] == 'sh -e "$ansflow_script"'
    assert found["make"]["script"][0] == "cd app"
    assert found["make"]["artifacts"]["paths"] == ["app/dist/app.tgz"]
    assert found["unit"]["artifacts"]["reports"]["junit"] == ["app/reports/unit.xml"]
    assert found["unit"]["stage"] == found["scan"]["stage"]
    assert {"job": "make", "optional": True} in found["use"]["needs"]


def test_gitlab_ids_are_sanitised(exported: dict[tuple[str, str], Result]) -> None:
    data = doc(exported, "names", "gitlab-ci")
    assert isinstance(data["variables"], dict) and "ANSFLOW" in data["variables"]
    found = jobs(data)
    assert set(found) == {"step-pages", "1st", "step-variables"}
    assert found["step-variables"]["needs"] == ["step-pages", "1st"]


def test_gitlab_step_kinds(exported: dict[tuple[str, str], Result]) -> None:
    result = exported[("kinds", "gitlab-ci")]
    found = jobs(doc(exported, "kinds", "gitlab-ci"))
    assert "git clone --no-checkout --depth 1 --" in found["tools"]["script"][-2]
    assert "curl -fsS --retry 2 -X POST" in found["tell"]["script"][-1]
    assert "/job/folder/job/integration/buildWithParameters" in found["trigger"]["script"][-1]
    assert found["trigger"]["variables"]["ANSFLOW_JENKINS_AUTH"] == "robot:${JENKINS_TOKEN}"
    assert "ansible-playbook -i ansflow-inventory.ini --tags config" in found["play"]["script"][-1]
    assert "ansflow_host deploy@10.0.0.7 2222" in found["ship"]["script"][-1]
    notes = dropped(result)
    assert has_note(notes, "ship", "host.name")
    assert has_note(notes, "managed", "managed Jenkins job")
    assert has_note(notes, "gate", "approvers alice")
    assert has_note(notes, "gate", "timeout 2h")
    assert has_note(setups(result), "ship", "SSH access")


# --- GitHub Actions ------------------------------------------------------------------------------


def test_github_fanout(exported: dict[tuple[str, str], Result]) -> None:
    data = doc(exported, "fanout", "github-actions")
    found = data["jobs"]
    assert "needs" not in found["prepare"]
    assert "needs" not in found["lint"]
    assert found["compile"]["needs"] == ["prepare"]
    assert found["package"]["needs"] == ["test", "docs", "lint", "prepare"]
    assert found["test"]["strategy"] == {
        "fail-fast": False,
        "matrix": {"python": ["3.11", "3.12"], "suite": ["unit", "api"]},
    }
    assert found["prepare"]["outputs"] == {"version": "${{ steps.outputs.outputs.version }}"}
    assert "${{ needs.prepare.outputs.version }}" in found["compile"]["steps"][-1]["run"]
    summary = found["summary"]
    assert summary["if"] == "${{ always() }}"
    # run.status is computed from every upstream job, so all are needed
    assert set(summary["needs"]) == {"prepare", "compile", "docs", "test", "lint", "package"}
    assert "contains(needs.*.result, 'failure')" in summary["steps"][-1]["run"]
    assert data["env"]["BUILD_MODE"] == "release"


def test_github_release(exported: dict[tuple[str, str], Result]) -> None:
    result = exported[("release", "github-actions")]
    data = doc(exported, "release", "github-actions")
    found = data["jobs"]
    assert data["on"]["workflow_dispatch"]["inputs"]["branch"]["default"] == "main"
    assert found["rollout"]["if"] == "${{ ((inputs.branch || 'main') == 'main') }}"
    assert found["build"]["timeout-minutes"] == 10
    assert found["gate"]["environment"] == "gate"
    upload = found["build"]["steps"][-1]
    assert upload["uses"] == "actions/upload-artifact@v4"
    assert upload["with"]["if-no-files-found"] == "error"
    download = [
        s
        for s in found["rollout"]["steps"]
        if s.get("uses", "").startswith("actions/download-artifact")
    ]
    assert download and download[0]["with"] == {"name": "artifacts.build", "path": "dist"}
    assert data["env"]["DEPLOY_TOKEN"] == "${{ secrets.DEPLOY_TOKEN }}"
    notes = dropped(result)
    assert has_note(notes, "rollout", "retries 2", "does not retry")
    assert has_note(notes, "gate", "timeout 1h")
    assert has_note(setups(result), "gate", "environment `gate`", "required reviewers")


def test_github_limits(exported: dict[tuple[str, str], Result]) -> None:
    result = exported[("limits", "github-actions")]
    found = doc(exported, "limits", "github-actions")["jobs"]
    assert found["flaky"]["timeout-minutes"] == 2
    assert found["flaky"]["continue-on-error"] is True
    assert found["quick"]["timeout-minutes"] == 90
    notes = dropped(result)
    assert has_note(notes, "flaky", "retries 5", "does not retry")
    assert has_note(notes, "flaky", "rounded up to 2 minute")
    assert has_note(notes, "quick", "retries 1")


def test_github_conditions(exported: dict[tuple[str, str], Result]) -> None:
    result = exported[("conditions", "github-actions")]
    found = doc(exported, "conditions", "github-actions")["jobs"]
    assert found["on-main"]["if"] == "${{ ((inputs.branch || 'main') == 'main') }}"
    assert "if" not in found["after-main"]  # GitHub skips it by itself when on-main is skipped
    assert found["cleanup"]["if"] == "${{ always() }}"
    assert found["on-failure"]["if"] == "${{ failure() }}"
    assert found["on-cancel"]["if"] == "${{ cancelled() }}"
    assert found["mixed"]["if"] == (
        "${{ (failure() || (format('{0}', inputs.deploy) == 'true')) }}"
    )
    assert 'contains(fromJSON(\'["main", "release"]\')' in found["listed"]["if"]
    assert found["off"]["if"] == "${{ false }}"
    # a job's `if:` cannot read env; the value is known, so it is written in
    assert found["by-env"]["if"] == "${{ ('prod' == 'prod') }}"
    assert [n for n in dropped(result) if not n.startswith("pipeline: ")] == []


def test_github_matrix(exported: dict[tuple[str, str], Result]) -> None:
    result = exported[("matrix", "github-actions")]
    found = doc(exported, "matrix", "github-actions")["jobs"]
    assert found["one"]["needs"] == ["test"]
    assert found["test"]["env"]["ANSFLOW_STEP_ID"] == (
        "${{ format('test[os={0},py={1}]', matrix.os, matrix.py) }}"
    )
    per_os = found["per-os"]
    assert "if" not in per_os
    assert per_os["steps"][-1]["if"] == "${{ (matrix.os == 'linux') }}"
    notes = dropped(result)
    assert has_note(notes, "one", "GitHub waits for every instance of test")
    assert has_note(notes, "per-os", "checked by each step")


def test_github_data(exported: dict[tuple[str, str], Result]) -> None:
    data = doc(exported, "data", "github-actions")
    found = data["jobs"]
    make = found["make"]
    run = next(s for s in make["steps"] if s.get("id") == "run")
    assert run["working-directory"] == "app"
    assert run["env"]["ANSFLOW_OUTPUT"] == "${{ runner.temp }}/ansflow-output"
    assert make["outputs"] == {"sha": "${{ steps.outputs.outputs.sha }}"}
    assert make["steps"][-1]["run"].endswith('>> "$GITHUB_OUTPUT"')
    use = found["use"]
    assert use["needs"] == ["unit", "scan", "make"]
    use_run = next(s for s in use["steps"] if s.get("id") == "run")
    assert use_run["env"]["SHA"] == "${{ needs.make.outputs.sha }}"
    assert "${{ secrets.API_TOKEN }}" in use_run["run"]
    assert "${{ (inputs.who || 'team') }}" in use_run["run"]
    assert data["env"]["API_TOKEN"] == "${{ secrets.API_TOKEN }}"
    py = next(s for s in found["py"]["steps"] if s.get("id") == "run")
    assert py["shell"] == "python3 {0}"
    posix = next(s for s in found["posix"]["steps"] if s.get("id") == "run")
    assert posix["shell"] == "sh"
    reports = found["unit"]["steps"][-1]
    assert reports["if"] == "${{ !cancelled() }}"
    assert reports["with"]["path"] == "app/reports/unit.xml"


def test_github_ids_are_sanitised(exported: dict[tuple[str, str], Result]) -> None:
    found = doc(exported, "names", "github-actions")["jobs"]
    assert list(found) == ["pages", "step-1st", "variables"]
    assert found["variables"]["needs"] == ["pages", "step-1st"]


def test_github_step_kinds(exported: dict[tuple[str, str], Result]) -> None:
    result = exported[("kinds", "github-actions")]
    found = doc(exported, "kinds", "github-actions")["jobs"]
    assert found["tools"]["steps"] == [
        {
            "name": "tools",
            "id": "checkout",
            "uses": "actions/checkout@v4",
            "with": {
                "repository": "acme/tools",
                "ref": "v2",
                "path": "tools",
                "fetch-depth": 1,
                "submodules": "recursive",
            },
        }
    ]
    assert found["tools"]["outputs"] == {"commit": "${{ steps.checkout.outputs.commit }}"}
    assert "git clone --no-checkout --" in found["vendor"]["steps"][-1]["run"]
    trigger = found["trigger"]
    assert trigger["needs"] == ["managed"] or "tools" in trigger["needs"]
    assert "${{ needs.tools.outputs.commit }}" in str(trigger["steps"][-1]["env"])
    assert found["tell"]["if"] == "${{ always() }}"
    assert "curl" in found["tell"]["steps"][-1]["run"]
    assert found["gate"]["environment"] == "gate"
    assert "timeout-minutes" not in found["gate"]
    notes = dropped(result)
    assert has_note(notes, "ship", "host.name")
    assert has_note(notes, "gate", "not shown to reviewers")
    assert has_note(setups(result), "gate", "(alice)")


# --- fetch_code of the repository itself ---------------------------------------------------------


def test_fetch_code_of_this_repository(cli: Cli) -> None:
    cli.write(
        ".git/config",
        '[remote "origin"]\n\turl = git@github.com:acme/shop.git\n',
    )
    cli.write(
        "ansflow.yml",
        """
        steps:
          - id: code
            type: fetch_code
            repo: https://github.com/acme/shop
            dest: .
          - id: build
            run: echo ${{ steps.code.outputs.commit }}
        """,
    )
    github = cli("export", "--format", "github-actions")
    assert github.code == 0, str(github)
    code = yaml.safe_load(github.out)["jobs"]["code"]
    assert code["steps"][0]["uses"] == "actions/checkout@v4"
    assert "repository" not in code["steps"][0]["with"]
    assert has_note(dropped(github), "code", "commit the pipeline runs for")
    gitlab = cli("export", "--format", "gitlab-ci")
    assert gitlab.code == 0, str(gitlab)
    script = yaml.safe_load(gitlab.out)["code"]["script"][0]
    assert "git clone" not in script
    assert 'echo "commit=$(git rev-parse HEAD)"' in script


# --- the command ---------------------------------------------------------------------------------


def test_output_file(cli: Cli) -> None:
    cli.write("ansflow.yml", PIPELINES["plain"])
    result = cli("export", "--format", "gitlab-ci", "-o", "ci/.gitlab-ci.yml")
    assert result.code == 0, str(result)
    assert result.out == ""
    assert "ci/.gitlab-ci.yml" in result.err
    written = (cli.cwd / "ci" / ".gitlab-ci.yml").read_text(encoding="utf-8")
    assert written == cli("export", "--format", "gitlab-ci").out


def test_unknown_format_exits_2(cli: Cli) -> None:
    cli.write("ansflow.yml", PIPELINES["plain"])
    result = cli("export", "--format", "circleci")
    assert result.code == 2
    assert "gitlab-ci" in result.err and "github-actions" in result.err
    assert result.out == ""


def test_output_is_deterministic_and_needs_no_secrets(cli: Cli) -> None:
    """The same text from another folder and run; secrets need no values to export."""
    cli.write("p/release.yml", (EXAMPLES / "release.yml").read_text(encoding="utf-8"))
    cli.write("p/hosts.ini", "")
    for fmt in FORMATS:
        first = cli("export", "p/release.yml", "--format", fmt)
        again = Cli(cli.cwd / "p")("export", "release.yml", "--format", fmt)
        assert first.code == again.code == 0, str(first)
        assert first.out == again.out


# --- the shell scanner used for GitLab scripts ---------------------------------------------------


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("echo X", ["plain"]),
        ('echo "a X"', ["double"]),
        ("echo 'a X'", ["single"]),
        ('echo "it\'s X"', ["double"]),
        ("echo \"$(echo 'X')\"", ["single"]),
        ("echo `echo X`", ["plain"]),
        ("# don't X\necho X", ["plain", "plain"]),
        ("echo \\' X", ["plain"]),
        ("cat <<EOF\nX\nEOF", ["heredoc"]),
    ],
)
def test_shell_contexts(script: str, expected: list[str]) -> None:
    spans = [(m.start(), m.end()) for m in re.finditer("X", script)]
    assert shell_contexts(script, spans) == expected


def test_pipelines_here_are_valid() -> None:
    """Guard: the pipelines above load (a broken one would test nothing)."""
    for name, text in PIPELINES.items():
        load_text(textwrap.dedent(text), Path(f"{name}.yml"))
