"""`ansflow export --format jenkinsfile`: the file runs on the Jenkins emulator as a Pipeline job
and its stages are the plan's step instances; what Jenkins cannot express is listed on top.
"""

from __future__ import annotations

from collections.abc import Iterator

import jenkins
import pytest

from ansflow.export.jenkinsfile import groovy_script, groovy_single, translate
from tests.clihelp import Cli
from tests.helpers_files import EXAMPLES, load
from tests.jenkins_emulator import BuildRecord, JenkinsEmulator, parse_jenkinsfile, running_emulator

pytestmark = pytest.mark.jenkins

USER, TOKEN = "robot", "token123"


@pytest.fixture(scope="module")
def emu() -> Iterator[JenkinsEmulator]:
    with running_emulator(users={USER: TOKEN}) as emulator:
        yield emulator


def run_on_jenkins(emu: JenkinsEmulator, name: str, text: str) -> BuildRecord:
    emu.add_pipeline_job(name, jenkinsfile=text)
    client = jenkins.Jenkins(emu.url, username=USER, password=TOKEN, timeout=10)
    client.get_whoami()
    client.build_job(name)
    return emu.wait_for_build(name, 1, timeout=30)


def header(text: str) -> list[str]:
    """The comment lines before `pipeline {`."""
    lines = text.splitlines()
    return lines[: lines.index("pipeline {")]


def test_fanout_example_runs_on_jenkins_with_one_stage_per_step(
    emu: JenkinsEmulator, cli: Cli
) -> None:
    result = cli("export", str(EXAMPLES / "fanout.yml"), "--format", "jenkinsfile")
    assert result.code == 0, str(result)
    text = result.out
    build = run_on_jenkins(emu, "fanout", text)
    assert build.result == "SUCCESS", build.console
    plan = load((EXAMPLES / "fanout.yml").read_text(), "fanout.yml").plan()
    stages = {s.name: s for s in build.stages}
    wrappers = {"parallel: prepare, lint", "parallel: compile, docs", "test"}
    assert set(stages) == {n.id for n in plan.nodes} | wrappers
    for node in plan.nodes:  # every step starts after each of its needs ended
        for need in node.needs:
            before = stages[need]
            assert stages[node.id].start_ms >= before.start_ms + before.duration_ms, node.id
    # Outputs flow between stages through the workspace, as $ANSFLOW_OUTPUT does locally.
    assert "packaging 1.4." in build.console and ": tests ok" in build.console
    assert "pipeline fanout is success" in build.console
    assert header(text)[-1].startswith("//   - summary: `when: always()`")


def test_export_writes_the_file_with_o(cli: Cli) -> None:
    cli.write("p.yml", "steps:\n  - {id: a, run: echo a}\n")
    result = cli("export", "p.yml", "--format", "jenkinsfile", "-o", "ci/Jenkinsfile")
    assert result.code == 0, str(result)
    text = (cli.cwd / "ci" / "Jenkinsfile").read_text()
    assert "stage('a')" in text
    parse_jenkinsfile(text)


def test_what_jenkins_cannot_express_is_listed_at_the_top(emu: JenkinsEmulator) -> None:
    loaded = load(
        """
        name: odd
        concurrency: 1
        secrets: [API_KEY]
        targets:
          web: {type: ssh, hosts: [web1]}
        steps:
          - {id: unit, type: test, run: 'true', junit: [r.xml], retries: 2, retry_delay: 5}
          - {id: gate, type: approval, message: "ship ${{ pipeline.name }}?"}
          - {id: remote, on: web, run: uptime}
          - {id: late, when: "${{ failure() }}", run: echo late}
          - parallel:
              - {id: x, run: "echo x"}
              - {id: y, run: "echo ${{ steps.unit.status }}"}
        """
    )
    text = translate(loaded.plan(), variables={}).text
    notes = "\n".join(header(text))
    for expected in [
        "unit: JUnit reports are not read",
        "unit: `retry_delay: 5s` is not kept",
        "gate: the approval gate becomes Jenkins' `input` step",
        "remote: cannot run in Jenkins: it runs on the SSH target 'web'",
        "late: `when: failure()`",
        "y: run: `steps.unit.status` is known only to ansflow",
        "pipeline: `concurrency: 1` is not enforced",
    ]:
        assert expected in notes, notes
    assert all(line.startswith("//") for line in header(text))
    assert "password(name: 'API_KEY'" in text  # secrets are parameters, never values
    assert "input(message: 'ship odd?')" in text
    assert "retry(3)" in text
    parse_jenkinsfile(text)


NARROW_NEEDS = """
    name: narrow
    steps:
      - {id: a, run: exit 1}
      - {id: b, needs: [], run: echo b}
      - {id: t, needs: [b], run: echo t}
    """


def test_steps_jenkins_skips_after_a_failure_they_do_not_need_are_listed(
    emu: JenkinsEmulator,
) -> None:
    text = translate(load(NARROW_NEEDS).plan(), variables={}).text
    assert header(text)[-1] == (
        "//   - pipeline: a failed stage stops the later stages, even ones that do not need it "
        "(ansflow would still run them): t is skipped when a fails"
    )
    # What the comment warns of: locally t runs (it needs only b); Jenkins skips it.
    build = run_on_jenkins(emu, "narrow", text)
    stages = {s.name: s for s in build.stages}
    assert stages["b"].status == "SUCCESS" and stages["a"].status == "FAILED"
    assert 'Stage "t" skipped due to earlier failure(s)' in build.console


@pytest.mark.parametrize(
    "steps",
    [
        # every step after the one before it: a failure skips the rest either way
        "- {id: a, run: exit 1}\n- {id: b, run: echo b}\n- {id: c, needs: [a, b], run: echo c}\n",
        # a failure that Jenkins forgives stops nothing
        "- {id: a, run: exit 1, continue_on_error: true}\n- {id: b, needs: [], run: echo b}\n"
        "- {id: t, needs: [b], run: echo t}\n",
    ],
)
def test_no_needs_note_when_jenkins_order_loses_nothing(steps: str) -> None:
    text = translate(load("steps:\n" + steps).plan(), variables={}).text
    assert "a failed stage stops" not in text


def test_the_needs_note_lists_every_step_and_what_stops_it() -> None:
    plan = load((EXAMPLES / "fanout.yml").read_text(), "fanout.yml").plan()
    notes = header(translate(plan, variables={}).text)
    assert notes[-2] == (
        "//   - pipeline: a failed stage stops the later stages, even ones that do not need it "
        "(ansflow would still run them): compile is skipped when lint fails; docs is skipped "
        "when lint fails; test is skipped when lint or docs fails"
    )
    # `--fail-fast` stops the other steps in ansflow too: nothing to warn of.
    fast = translate(plan, variables={}, remote=True, fail_fast=True).text
    assert "a failed stage stops" not in fast


def test_quoting_survives_groovy_and_the_shell(emu: JenkinsEmulator) -> None:
    loaded = load(
        r"""
        name: quotes
        vars: {who: "o'brien $HOME \\", plain: "x'y"}
        env: {GREETING: "it's ${{ vars.who }}"}
        steps:
          - id: tricky
            env: {LOCAL: 'a$b'}
            run: |
              printf '%s|' "$GREETING" "$LOCAL" '$HOME' "tab	end" "back\\slash" "${NOPE:-dflt}"
              echo
              echo "triple ''' and \${x} and ${{ vars.plain }}"
              echo 'pipe' | tr a-z A-Z
          - {id: gone, when: "${{ vars.who == 'nobody' }}", run: echo gone}
          - {id: there, when: "${{ vars.who != 'nobody' }}", run: echo there}
        """
    )
    text = translate(loaded.plan(), variables=loaded.pipeline.vars).text
    build = run_on_jenkins(emu, "quotes", text)
    assert build.result == "SUCCESS", build.console
    home_safe = "o'brien $HOME \\"
    expected = f"it's {home_safe}|a$b|$HOME|tab\tend|back\\slash|dflt|"
    assert expected in build.console, build.console
    assert "triple ''' and ${x} and x'y" in build.console
    assert "PIPE" in build.console
    stages = {s.name: s for s in build.stages}
    assert 'Stage "gone" skipped due to when conditional' in stages["gone"].log
    assert "there" in build.console


def test_when_on_the_environment_becomes_jenkins_own_conditions(emu: JenkinsEmulator) -> None:
    """`env.X` is only known while running, but Jenkins knows the build's environment too."""
    loaded = load(
        """
        name: envwhen
        env: {DEPLOY: "yes", EMPTY: ""}
        steps:
          - {id: go, when: "${{ env.DEPLOY == 'yes' }}", run: echo go-ran}
          - {id: stay, when: "${{ env.DEPLOY != 'yes' }}", run: echo stay-ran}
          - {id: both, when: "${{ env.DEPLOY == 'yes' and not env.EMPTY }}", run: echo both-ran}
          - {id: either, when: "${{ env.DEPLOY == 'no' or env.EMPTY }}", run: echo either-ran}
        """
    )
    text = translate(loaded.plan(), variables=loaded.pipeline.vars).text
    assert "when { environment name: 'DEPLOY', value: 'yes' }" in text
    assert "known only while running" not in text
    build = run_on_jenkins(emu, "envwhen", text)
    assert build.result == "SUCCESS", build.console
    ran = {n for n in ("go", "stay", "both", "either") if f"{n}-ran" in build.console}
    assert ran == {"go", "both"}, build.console
    stages = {s.name: s for s in build.stages}
    assert 'Stage "stay" skipped due to when conditional' in stages["stay"].log


def test_groovy_strings_escape_what_groovy_would_read() -> None:
    assert groovy_single("a'b\\c$d\n") == "'a\\'b\\\\c$d\\n'"
    assert groovy_script("x'''y\\") == "'''\\\nx\\'\\'\\'y\\\\'''"


def test_a_failing_step_fails_its_stage_and_jenkins_skips_the_rest(emu: JenkinsEmulator) -> None:
    loaded = load(
        """
        name: fails
        steps:
          - {id: ok, run: 'true'}
          - {id: tolerated, run: 'exit 4', continue_on_error: true}
          - {id: boom, run: 'false | true'}
          - {id: after, run: echo after}
        """
    )
    build = run_on_jenkins(emu, "fails", translate(loaded.plan(), variables={}).text)
    stages = {s.name: s.status for s in build.stages}
    # `false | true` fails with pipefail, as ansflow runs scripts locally.
    assert stages == {"ok": "SUCCESS", "tolerated": "FAILED", "boom": "FAILED", "after": "SUCCESS"}
    assert 'Stage "after" skipped due to earlier failure(s)' in build.console
    assert build.result == "FAILURE"
