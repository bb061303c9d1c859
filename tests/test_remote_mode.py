"""`ansflow run FILE --remote TARGET` against the Jenkins emulator, through the real CLI.

Every test ends by checking the invariant the project was born from: once the run has ended, no
step is pending or running, whatever Jenkins did (failed, skipped, aborted, went away).
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.clihelp import Cli
from tests.jenkins_emulator import BuildRecord, JenkinsEmulator, running_emulator
from tests.test_jenkins_step import (
    DEADLINE_S,
    TOKEN,
    USER,
    Events,
    closed_port,
    step_rows,
    target,
    unfinished,
)

pytestmark = pytest.mark.jenkins

JOB = "ansflow-r"


@pytest.fixture
def emu() -> Iterator[JenkinsEmulator]:
    with running_emulator(users={USER: TOKEN}) as emulator:
        yield emulator
    assert emulator.live_pids() == []


@pytest.fixture
def jcli(tmp_path: Path) -> Cli:
    return Cli(tmp_path, env={"JT": TOKEN, "JT_WRONG": "wrong"})


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts; killed (by pid) if the test leaves them behind."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def remote(emu_url: str, steps: str, head: str = "", token: str = "${{ secrets.JT }}") -> str:
    return (
        "name: r\nsecrets: [JT]\n"
        + head
        + "targets:\n"
        + target("ci", emu_url, token=token)
        + "steps:\n"
        + steps
    )


def iso(millis: int) -> str:
    moment = datetime.fromtimestamp(millis // 1000, UTC).replace(microsecond=millis % 1000 * 1000)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def assert_times_from_jenkins(cli: Cli, build: BuildRecord) -> None:
    """Each step's start and end are its stage's, as Jenkins measured them."""
    stages = {s.name: s for s in build.stages}
    for row in cli.show()["steps"]:
        stage = stages.get(row["step"])
        if stage is None:
            continue
        assert row["finished_at"] == iso(stage.start_ms + stage.duration_ms), row
        if row["status"] == "skipped":
            assert row["started_at"] is None, row
        else:
            assert row["started_at"] == iso(stage.start_ms), row


def run_remote(cli: Cli, *args: str) -> Any:
    return cli("run", "p.yml", "--remote", "ci", "-o", "plain", *args, timeout=DEADLINE_S)


FANOUT = """\
  - id: prepare
    run: echo "version=1.2" >> "$ANSFLOW_OUTPUT"
  - parallel:
      - {id: compile, run: 'echo "compiling ${{ steps.prepare.outputs.version }}"'}
      - {id: docs, run: echo docs}
  - id: test
    matrix: {py: ["3.11", "3.12"]}
    needs: [compile]
    run: echo "py ${{ matrix.py }} token=$JT"
  - {id: lint, needs: [], run: echo lint}
  - {id: package, needs: [test, docs, lint], run: echo "package $BUILD_MODE"}
"""


def test_a_pipeline_runs_as_one_jenkins_job_and_each_step_gets_its_stage(
    emu: JenkinsEmulator, jcli: Cli
) -> None:
    jcli.write("p.yml", remote(emu.url, FANOUT, head="env: {BUILD_MODE: release}\n"))
    result = run_remote(jcli)
    assert result.code == 0, str(result)
    assert set(jcli.statuses().values()) == {"success"}
    assert len(jcli.statuses()) == 7
    (build,) = emu.builds(JOB)
    assert build.result == "SUCCESS"
    assert build.parameters == {"JT": TOKEN}  # the secret, as a password parameter
    assert_times_from_jenkins(jcli, build)
    logs = jcli("logs", "last", "compile").out
    assert "compiling 1.2" in logs
    assert "py 3.12 token=***" in jcli("logs", "last", "test").out
    assert TOKEN not in jcli("logs", "last").out
    assert "package release" in jcli("logs", "last", "package").out
    assert f"created Pipeline job '{JOB}'" in jcli("logs", "last").out
    # A changed pipeline updates the same job; its stages follow.
    jcli.write(
        "p.yml",
        remote(emu.url, FANOUT + "  - {id: extra, run: echo extra}\n", "env: {BUILD_MODE: x}\n"),
    )
    again = run_remote(jcli)
    assert again.code == 0, str(again)
    assert jcli.statuses()["extra"] == "success"
    assert f"updated Pipeline job '{JOB}'" in jcli("logs", "last").out
    assert [b.number for b in emu.builds(JOB)] == [1, 2]
    assert unfinished(jcli) == []


@pytest.mark.parametrize("skip_status", ["SUCCESS", "SKIPPED"])
def test_failed_stage_skips_the_rest_as_jenkins_did(tmp_path: Path, skip_status: str) -> None:
    with running_emulator(users={USER: TOKEN}, conditional_skip_status=skip_status) as jenkins:
        cli = Cli(tmp_path, env={"JT": TOKEN})
        cli.write(
            "p.yml",
            remote(
                jenkins.url,
                """\
  - {id: first, run: echo first}
  - {id: never, run: echo never, when: "${{ vars.go == 'yes' }}"}
  - parallel:
      - {id: boom, run: "echo boom; exit 3"}
      - {id: sibling, run: echo sibling}
  - {id: after, run: echo after}
  - {id: last, run: echo last}
""",
                head="vars: {go: 'no'}\n",
            ),
        )
        result = run_remote(cli)
        assert result.code == 1, str(result)
        (build,) = jenkins.builds(JOB)
        # What wfapi says about the skipped stages: SUCCESS, not that they never ran.
        listed = {s.name: s.status for s in build.stages}
        assert listed["after"] == "SUCCESS" and listed["never"] == skip_status
        rows = step_rows(cli)
        assert {k: v["status"] for k, v in rows.items()} == {
            "first": "success",
            "never": "skipped",
            "boom": "failed",
            "sibling": "success",
            "after": "skipped",
            "last": "skipped",
        }
        assert rows["boom"]["error"] == "stage failed: script returned exit code 3"
        assert rows["after"]["error"] == "skipped by Jenkins after an earlier failure or abort"
        assert rows["never"]["error"] == "skipped by Jenkins: its `when` condition is false"
        assert_times_from_jenkins(cli, build)
        assert "boom" in cli("logs", "last", "boom").out
        assert 'Stage "after" skipped due to earlier failure(s)' in cli("logs", "last", "after").out
        assert cli.show()["run"]["status"] == "failed"
        assert unfinished(cli) == []


HANGING = """\
  - {id: one, run: echo one}
  - {id: hang, run: "echo hanging; sleep 60"}
  - {id: three, run: echo three}
"""


def test_a_build_aborted_on_jenkins_cancels_the_running_step(
    emu: JenkinsEmulator, jcli: Cli, procs: list[subprocess.Popen[str]]
) -> None:
    jcli.write("p.yml", remote(emu.url, HANGING))
    proc = jcli.popen("run", "p.yml", "--remote", "ci", "-o", "json")
    procs.append(proc)
    events = Events(proc)
    line = events.log("hanging")
    assert line["step"] == "hang"
    emu.abort_build(JOB, 1, user="admin")
    assert events.finish() == 3
    rows = step_rows(jcli)
    assert {k: v["status"] for k, v in rows.items()} == {
        "one": "success",
        "hang": "cancelled",
        "three": "skipped",
    }
    assert rows["hang"]["error"] == "aborted on Jenkins"
    build = emu.build(JOB, 1)
    assert build.result == "ABORTED"
    assert_times_from_jenkins(jcli, build)
    assert jcli.show()["run"]["status"] == "cancelled"
    assert unfinished(jcli) == []


@pytest.mark.parametrize("how", ["sigint", "ansflow cancel"])
def test_sigint_or_cancel_stops_the_jenkins_build(
    emu: JenkinsEmulator, jcli: Cli, procs: list[subprocess.Popen[str]], how: str
) -> None:
    jcli.write("p.yml", remote(emu.url, HANGING))
    proc = jcli.popen("run", "p.yml", "--remote", "ci", "-o", "json")
    procs.append(proc)
    events = Events(proc)
    events.log("hanging")
    if how == "sigint":
        proc.send_signal(signal.SIGINT)
    else:
        assert jcli("cancel", "last").code == 0
    assert events.finish() == 3
    assert jcli.statuses() == {"one": "success", "hang": "cancelled", "three": "cancelled"}
    build = emu.build(JOB, 1)
    assert build.result == "ABORTED" and not build.building
    assert f"Aborted by {USER}" in build.console
    assert jcli.show()["run"]["status"] == "cancelled"
    assert unfinished(jcli) == []


def test_jenkins_gone_for_good_ends_the_run_with_no_step_left_open(
    emu: JenkinsEmulator, tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    cli = Cli(tmp_path, env={"JT": TOKEN, "ANSFLOW_JENKINS_RETRY_WINDOW": "1.5"})
    cli.write("p.yml", remote(emu.url, HANGING))
    proc = cli.popen("run", "p.yml", "--remote", "ci", "-o", "json")
    procs.append(proc)
    events = Events(proc)
    events.log("hanging")
    emu.go_away()
    assert events.finish() == 1
    rows = step_rows(cli)
    assert {k: v["status"] for k, v in rows.items()} == {
        "one": "success",
        "hang": "failed",
        "three": "skipped",
    }
    error = rows["hang"]["error"]
    assert error.startswith(f"Jenkins {emu.url}: job 'ansflow-r': cannot reach Jenkins while ")
    assert error.endswith("no answer for 1.5 s, gave up following the build (it may still run)")
    assert rows["three"]["error"].startswith("not run: Jenkins ")
    assert unfinished(cli) == []


def test_a_stage_timeout_is_timed_out(emu: JenkinsEmulator, jcli: Cli) -> None:
    jcli.write(
        "p.yml",
        remote(emu.url, "  - {id: slow, run: sleep 30, timeout: 1}\n  - {id: next, run: 'true'}\n"),
    )
    result = run_remote(jcli)
    assert result.code == 1, str(result)
    assert jcli.statuses() == {"slow": "timed_out", "next": "skipped"}
    assert emu.build(JOB, 1).result == "ABORTED"


def test_steps_jenkins_cannot_run_are_refused_before_anything_starts(
    emu: JenkinsEmulator, jcli: Cli
) -> None:
    jcli.write(
        "p.yml",
        remote(
            emu.url,
            "  - {id: build, run: make}\n"
            "  - {id: gate, type: approval}\n"
            "  - {id: check, run: 'echo ${{ steps.build.status }}'}\n",
        ),
    )
    result = run_remote(jcli)
    assert result.code == 2, str(result)
    assert "cannot run as one Jenkins Pipeline" in result.err
    assert "gate: cannot run in Jenkins: approval gates are decided by" in result.err
    assert "check: run: `steps.build.status` is known only to ansflow" in result.err
    # NOTE: bad input stores nothing: the refusal comes before the run is recorded.
    assert jcli("runs", "--json").out.strip() == "[]"
    assert [r for r in emu.requests if r[0] == "POST"] == []


def test_a_jenkins_step_with_a_job_is_refused_naming_the_step(
    emu: JenkinsEmulator, jcli: Cli
) -> None:
    emu.add_freestyle_job("plain", "echo plain")
    jcli.write(
        "p.yml",
        remote(
            emu.url,
            "  - {id: a, run: echo a}\n  - {id: j, type: jenkins, on: ci, job: plain}\n",
        ),
    )
    result = run_remote(jcli)
    assert result.code == 2, str(result)
    assert "cannot run as one Jenkins Pipeline" in result.err
    assert (
        "j: cannot run in Jenkins: a step with `job:` triggers and follows another " in result.err
    )
    assert "run it without --remote" in result.err
    assert "No such DSL method" not in result.err
    assert jcli("runs", "--json").out.strip() == "[]"
    assert [r for r in emu.requests if r[0] == "POST"] == []
    # Without --remote ansflow triggers and follows the job itself.
    local = jcli("run", "p.yml", "-o", "plain", timeout=DEADLINE_S)
    assert local.code == 0, str(local)
    assert len(emu.builds("plain")) == 1


def test_a_quiet_period_is_logged_once_not_on_every_poll(tmp_path: Path) -> None:
    with running_emulator(users={USER: TOKEN}, queue_delay=0.8) as quiet:
        cli = Cli(tmp_path, env={"JT": TOKEN})
        cli.write("p.yml", remote(quiet.url, "  - {id: a, run: echo a}\n"))
        result = run_remote(cli)
        assert result.code == 0, str(result)
        polls = [r for r in quiet.requests if r[1].startswith("/queue/item/1/api/json")]
        assert len(polls) >= 3, polls
    waits = [line for line in result.out.splitlines() if "waiting in the Jenkins queue" in line]
    assert len(waits) == 1, result.out
    assert "In the quiet period. Expires in " in waits[0]


def test_jenkins_skipping_steps_that_do_not_need_the_failed_one_is_said_up_front(
    emu: JenkinsEmulator, jcli: Cli
) -> None:
    jcli.write(
        "p.yml",
        remote(
            emu.url,
            "  - {id: a, run: exit 1}\n"
            "  - {id: b, needs: [], run: echo b}\n"
            "  - {id: t, needs: [b], run: echo t}\n",
        ),
    )
    result = run_remote(jcli)
    assert result.code == 1, str(result)
    # NOTE: locally t would run (it needs only b); Jenkins skips every stage after a failure.
    assert jcli.statuses() == {"a": "failed", "b": "success", "t": "skipped"}
    assert (
        "note: in Jenkins, pipeline: a failed stage stops the later stages, even ones that do "
        "not need it (ansflow would still run them): t is skipped when a fails"
    ) in jcli("logs", "last").out
    assert unfinished(jcli) == []


def test_refused_credentials_end_the_run_with_one_message(emu: JenkinsEmulator, jcli: Cli) -> None:
    jcli.write("p.yml", remote(emu.url, "  - {id: a, run: 'true'}\n", token="${{ env.JT_WRONG }}"))
    result = run_remote(jcli)
    assert result.code == 1, str(result)
    assert result.err.strip() == (
        f"ansflow: Jenkins {emu.url}: job 'ansflow-r': user 'robot' was refused (HTTP 401: Invalid password/token "
        "for user: robot); check the user and API token of target 'ci'"
    )
    assert jcli.statuses() == {"a": "skipped"}
    assert jcli.show()["run"]["status"] == "failed"


def test_unreachable_jenkins_ends_the_run_with_one_message(jcli: Cli) -> None:
    url = f"http://127.0.0.1:{closed_port()}/"
    jcli.write("p.yml", remote(url, "  - {id: a, run: 'true'}\n"))
    result = run_remote(jcli)
    assert result.code == 1, str(result)
    assert f"ansflow: Jenkins {url}: job 'ansflow-r': cannot reach Jenkins" in result.err
    assert "(connection refused)" in result.err
    assert unfinished(jcli) == []


def test_console_lines_go_to_the_stage_that_printed_them() -> None:
    from ansflow.remote_mode import _Router

    router = _Router({"a": "a", "b": "b", "c": "c"}, default="a")
    console = [
        ("Started by user robot", None),
        ("[Pipeline] stage", None),
        ("[Pipeline] { (a)", "a"),
        ("+ echo a", "a"),
        ("[Pipeline] }", "a"),
        ("[Pipeline] // stage", None),
        ("[Pipeline] stage", None),
        ("[Pipeline] { (parallel: b, c)", None),
        ("[Pipeline] parallel", None),
        ("[Pipeline] { (Branch: b)", None),
        ("[Pipeline] { (Branch: c)", None),
        ("[Pipeline] [b] { (b)", "b"),
        ("[c] [Pipeline] { (c)", "c"),  # the other prefix order
        ("[b] + echo b", "b"),
        ("[c] + echo c", "c"),
        ('[c] Stage "c" skipped due to when conditional', "c"),
    ]
    for line, expected in console:
        assert router.route(line)[0] == expected, line
    assert router.skips == {"c": "when conditional"}
