"""The `jenkins` step against the Jenkins emulator, through the real CLI and python-jenkins.

Nothing sleeps to synchronise: a build that must be caught mid-way waits for a gate file that the
test creates after it saw (in the JSON event stream, or on the emulator) that the build got there.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ansflow.model import JenkinsTarget
from ansflow.remote.jenkins import check_jenkins, connect
from tests.clihelp import Cli, Events, wait_for
from tests.jenkins_emulator import JenkinsEmulator, running_emulator

pytestmark = pytest.mark.jenkins

USER, TOKEN = "robot", "token123"
VIEWER, VIEWER_TOKEN = "viewer", "view456"
DEADLINE_S = 30.0


# --- helpers shared with tests/test_remote_mode.py -------------------------------------------


@pytest.fixture
def emu() -> Iterator[JenkinsEmulator]:
    with running_emulator(
        users={USER: TOKEN, VIEWER: VIEWER_TOKEN}, read_only_users=[VIEWER]
    ) as emulator:
        yield emulator
    assert emulator.live_pids() == []


@pytest.fixture
def jcli(tmp_path: Path) -> Cli:
    """The CLI with the token in the environment and a short window for losing Jenkins."""
    return Cli(
        tmp_path,
        env={
            "JT": TOKEN,
            "JT_WRONG": "wrong",
            "JT_VIEWER": VIEWER_TOKEN,
            "ANSFLOW_JENKINS_RETRY_WINDOW": "20",
        },
    )


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts; killed (by pid) if the test leaves them behind."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def target(name: str, url: str, user: str = USER, token: str = "${{ secrets.JT }}") -> str:
    return f'  {name}: {{type: jenkins, url: "{url}", user: {user}, token: "{token}"}}\n'


def pipeline(emu: JenkinsEmulator, steps: str, targets: str = "", head: str = "") -> str:
    """A pipeline file with target `ci` on the emulator; `steps` is YAML indented by 2."""
    return (
        "name: p\nsecrets: [JT]\n"
        + head
        + "targets:\n"
        + target("ci", emu.url)
        + targets
        + "steps:\n"
        + steps
    )


def unfinished(cli: Cli) -> list[str]:
    return [k for k, v in cli.statuses().items() if v in ("pending", "running", "retrying")]


def step_rows(cli: Cli) -> dict[str, dict[str, Any]]:
    return {s["step"]: s for s in cli.show()["steps"]}


def gate_script(gate: Path, before: str = "echo waiting-for-gate", after: str = "true") -> str:
    return f"{before}; while [ ! -f {gate} ]; do sleep 0.02; done; {after}"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- triggering and following ----------------------------------------------------------------


def test_job_with_parameters_waits_in_the_queue_then_streams_its_build(
    emu: JenkinsEmulator, jcli: Cli, procs: list[subprocess.Popen[str]]
) -> None:
    emu.add_freestyle_job(
        "shop", 'echo "branch=$BRANCH n=$N"', parameters={"BRANCH": "dev", "N": "", "KEEP": "k"}
    )
    jcli.write(
        "p.yml",
        pipeline(
            emu,
            "  - {id: it, type: jenkins, on: ci, job: shop,"
            " parameters: {BRANCH: '${{ vars.branch }}', N: 3}}\n",
            head="vars: {branch: main}\n",
        ),
    )
    emu.hold_queue(True)
    proc = jcli.popen("run", "p.yml", "-o", "json")
    procs.append(proc)
    events = Events(proc, DEADLINE_S)
    events.log("waiting in the Jenkins queue: Waiting for next available executor")
    emu.hold_queue(False)
    events.log("branch=main n=3")
    assert events.finish() == 0
    (build,) = emu.builds("shop")
    assert build.parameters == {"BRANCH": "main", "N": "3", "KEEP": "k"}
    assert build.result == "SUCCESS"
    finished = [e for e in events.seen if e["event"] == "step_finished"]
    assert finished[0]["status"] == "success"
    assert finished[0]["details"]["url"] == f"{emu.url}job/shop/1/"
    logs = jcli("logs", "last").out
    assert f"build #1 started: {emu.url}job/shop/1/" in logs
    assert "Finished: SUCCESS" in logs


def test_a_quiet_period_is_logged_once_not_on_every_poll(tmp_path: Path) -> None:
    # NOTE: Jenkins counts the quiet period down in the queue item's `why`, so the text changes
    # on every poll although the reason does not.
    with running_emulator(users={USER: TOKEN}, queue_delay=0.8) as quiet:
        quiet.add_freestyle_job("shop", "echo hi")
        cli = Cli(tmp_path, env={"JT": TOKEN})
        cli.write("p.yml", pipeline(quiet, "  - {id: it, type: jenkins, on: ci, job: shop}\n"))
        result = cli("run", "p.yml", "-o", "plain", timeout=DEADLINE_S)
        assert result.code == 0, str(result)
        polls = [r for r in quiet.requests if r[1].startswith("/queue/item/1/api/json")]
        assert len(polls) >= 3, polls
    waits = [line for line in result.out.splitlines() if "waiting in the Jenkins queue" in line]
    assert len(waits) == 1, result.out
    assert "In the quiet period. Expires in " in waits[0]


def test_a_queue_reason_is_the_same_whatever_its_numbers() -> None:
    from ansflow.remote.jenkins import queue_reason

    quiet = "In the quiet period. Expires in 4.9 sec"
    assert queue_reason(quiet) == queue_reason("In the quiet period. Expires in 0.36 sec")
    assert queue_reason(quiet) != queue_reason("Waiting for next available executor")
    assert queue_reason("Build #3 is already in progress") == queue_reason(
        "Build #12 is already in progress"
    )


def test_console_lines_are_stored_and_shown_while_the_build_runs(
    emu: JenkinsEmulator, jcli: Cli, procs: list[subprocess.Popen[str]]
) -> None:
    gate = jcli.cwd / "gate"
    emu.add_freestyle_job("slow", gate_script(gate, "echo first-line", "echo after-gate"))
    jcli.write("p.yml", pipeline(emu, "  - {id: it, type: jenkins, on: ci, job: slow}\n"))
    proc = jcli.popen("run", "p.yml", "-o", "json")
    procs.append(proc)
    events = Events(proc, DEADLINE_S)
    line = events.log("first-line")
    assert line["step"] == "it" and line["stream"] == "stdout"
    # NOTE: the run is still going (the build waits for the gate): the line is in the database.
    assert "first-line" in jcli("logs", "last", "it").out
    assert jcli.statuses() == {"it": "running"}
    gate.touch()
    events.log("after-gate")
    assert events.finish() == 0
    assert "after-gate" in jcli("logs", "last", "it").out


def test_every_jenkins_result_maps_to_its_ansflow_state(
    emu: JenkinsEmulator, jcli: Cli, procs: list[subprocess.Popen[str]]
) -> None:
    emu.add_freestyle_job("ok", "echo fine")
    emu.add_freestyle_job("bad", "echo broken; exit 2")
    emu.add_freestyle_job("shaky", "echo '##emulator:UNSTABLE##'")
    emu.add_freestyle_job("unbuilt", "echo '##emulator:NOT_BUILT##'")
    emu.add_freestyle_job("hang", "echo ready; sleep 60")
    steps = "".join(
        f"  - {{id: {sid}, type: jenkins, on: ci, job: {job}, needs: []{extra}}}\n"
        for sid, job, extra in [
            ("ok", "ok", ""),
            ("bad", "bad", ""),
            ("shaky", "shaky", ""),
            ("shaky_ok", "shaky", ", continue_on_error: true"),
            ("unbuilt", "unbuilt", ""),
            ("aborted", "hang", ""),
        ]
    )
    jcli.write("p.yml", pipeline(emu, steps))
    proc = jcli.popen("run", "p.yml", "-o", "json")
    procs.append(proc)
    events = Events(proc, DEADLINE_S)
    emu.wait_for_console("hang", 1, "ready", timeout=DEADLINE_S)
    emu.abort_build("hang", 1, user="admin")
    assert events.finish() == 1
    rows = step_rows(jcli)
    assert {k: v["status"] for k, v in rows.items()} == {
        "ok": "success",
        "bad": "failed",
        "shaky": "failed",
        "shaky_ok": "success",
        "unbuilt": "skipped",
        "aborted": "cancelled",
    }
    assert rows["bad"]["error"] == f"Jenkins job 'bad' build #1 failed: {emu.url}job/bad/1/"
    assert "UNSTABLE" in rows["shaky"]["error"]
    assert "NOT_BUILT" in rows["unbuilt"]["error"]
    assert rows["aborted"]["error"] == (
        f"Jenkins job 'hang' build #1 was aborted on Jenkins by admin: {emu.url}job/hang/1/"
    )
    assert "continue_on_error makes that a success" in jcli("logs", "last", "shaky_ok").out
    assert unfinished(jcli) == []


def test_a_queue_item_cancelled_on_jenkins_ends_the_step_with_a_clear_error(
    emu: JenkinsEmulator, jcli: Cli, procs: list[subprocess.Popen[str]]
) -> None:
    emu.add_freestyle_job("shop", "echo never")
    jcli.write(
        "p.yml",
        pipeline(
            emu, "  - {id: it, type: jenkins, on: ci, job: shop}\n  - {id: after, run: 'true'}\n"
        ),
    )
    emu.hold_queue(True)
    proc = jcli.popen("run", "p.yml", "-o", "json")
    procs.append(proc)
    events = Events(proc, DEADLINE_S)
    events.log("queued job 'shop' as queue item 1")
    assert emu.cancel_queue_item(1)
    # NOTE: cancelled on Jenkins is not a success: the run is cancelled too (exit 3).
    assert events.finish() == 3
    assert jcli.show()["run"]["status"] == "cancelled"
    rows = step_rows(jcli)
    # SPEC section 7: a queue item cancelled on Jenkins -> cancelled.
    assert rows["it"]["status"] == "cancelled"
    assert rows["it"]["error"] == (
        f"Jenkins {emu.url}: job 'shop': queue item 1 was cancelled on Jenkins before the build "
        "started"
    )
    assert rows["after"]["status"] == "skipped"
    assert emu.builds("shop") == []


def test_ansflow_timeout_stops_the_build_on_jenkins(emu: JenkinsEmulator, jcli: Cli) -> None:
    emu.add_freestyle_job("slow", "echo started; sleep 60")
    jcli.write(
        "p.yml", pipeline(emu, "  - {id: it, type: jenkins, on: ci, job: slow, timeout: 1}\n")
    )
    result = jcli("run", "p.yml", "-o", "plain", timeout=DEADLINE_S)
    assert result.code == 1, str(result)
    rows = step_rows(jcli)
    assert rows["it"]["status"] == "timed_out"
    (build,) = emu.builds("slow")
    assert build.result == "ABORTED" and not build.building
    assert f"Aborted by {USER}" in build.console
    assert "stopped build #1 (the step timed out)" in jcli("logs", "last").out
    wait_for(lambda: emu.live_pids() == [], "the build's processes to end")


def test_a_timeout_while_queued_cancels_the_queue_item(emu: JenkinsEmulator, jcli: Cli) -> None:
    emu.add_freestyle_job("shop", "echo never")
    jcli.write(
        "p.yml", pipeline(emu, "  - {id: it, type: jenkins, on: ci, job: shop, timeout: 2}\n")
    )
    emu.hold_queue(True)
    result = jcli("run", "p.yml", "-o", "plain", timeout=DEADLINE_S)
    assert result.code == 1, str(result)
    assert jcli.statuses() == {"it": "timed_out"}
    assert "cancelled queue item 1" in jcli("logs", "last").out
    assert ("POST", "/queue/cancelItem?id=1") in emu.requests
    emu.hold_queue(False)
    assert emu.builds("shop") == []


def test_sigint_aborts_the_build_and_cancels_the_step(
    emu: JenkinsEmulator, jcli: Cli, procs: list[subprocess.Popen[str]]
) -> None:
    emu.add_freestyle_job("slow", "echo started; sleep 60")
    jcli.write(
        "p.yml",
        pipeline(
            emu, "  - {id: it, type: jenkins, on: ci, job: slow}\n  - {id: later, run: 'true'}\n"
        ),
    )
    proc = jcli.popen("run", "p.yml", "-o", "json")
    procs.append(proc)
    events = Events(proc, DEADLINE_S)
    events.log("started")
    proc.send_signal(signal.SIGINT)
    assert events.finish() == 3
    assert jcli.statuses() == {"it": "cancelled", "later": "cancelled"}
    (build,) = emu.builds("slow")
    assert build.result == "ABORTED" and not build.building
    assert jcli.show()["run"]["status"] == "cancelled"


# --- managed jobs ----------------------------------------------------------------------------


def test_run_keeps_a_managed_job_with_the_environment_as_parameters(
    emu: JenkinsEmulator, jcli: Cli
) -> None:
    def write(version: str) -> None:
        jcli.write(
            "p.yml",
            pipeline(
                emu,
                "  - id: m\n"
                "    type: jenkins\n"
                "    on: ci\n"
                "    env: {STAGE: blue}\n"
                "    run: |\n"
                f'      echo "{version} $APP $STAGE token=$JT"\n'
                '      echo "ver=7" >> "$ANSFLOW_OUTPUT"\n'
                "  - {id: use, run: 'echo got ${{ steps.m.outputs.ver }}'}\n",
                head="env: {APP: shop}\n",
            ),
        )

    write("v1")
    first = jcli("run", "p.yml", "-o", "plain", timeout=DEADLINE_S)
    assert first.code == 0, str(first)
    job = "ansflow-p-m"
    config = emu_config(emu, job)
    assert "echo &quot;v1" in config or 'echo "v1' in config
    assert "hudson.model.PasswordParameterDefinition" in config and TOKEN not in config
    (build,) = emu.builds(job)
    assert build.parameters["JT"] == TOKEN
    assert build.parameters["APP"] == "shop" and build.parameters["STAGE"] == "blue"
    assert build.parameters["ANSFLOW_STEP_ID"] == "m"
    assert "PATH" not in build.parameters and "ANSFLOW_OUTPUT" not in build.parameters
    logs = jcli("logs", "last").out
    assert "v1 shop blue token=***" in logs and TOKEN not in logs
    assert "got 7" in logs
    assert f"created managed job '{job}'" in logs
    write("v2")
    second = jcli("run", "p.yml", "-o", "plain", timeout=DEADLINE_S)
    assert second.code == 0, str(second)
    config = emu_config(emu, job)
    assert "v2" in config and "v1" not in config
    assert [b.number for b in emu.builds(job)] == [1, 2]
    assert f"updated managed job '{job}'" in jcli("logs", "last").out


def emu_config(emu: JenkinsEmulator, job: str) -> str:
    import jenkins

    client = jenkins.Jenkins(emu.url, username=USER, password=TOKEN, timeout=10)
    client.get_whoami()
    return str(client.get_job_config(job))


def test_a_job_of_the_same_name_made_by_someone_else_is_not_overwritten(
    emu: JenkinsEmulator, jcli: Cli
) -> None:
    emu.add_freestyle_job("ansflow-p-m", "echo mine")
    jcli.write("p.yml", pipeline(emu, "  - {id: m, type: jenkins, on: ci, run: echo hi}\n"))
    result = jcli("run", "p.yml", "-o", "plain", timeout=DEADLINE_S)
    assert result.code == 1
    assert step_rows(jcli)["m"]["error"] == (
        f"Jenkins {emu.url}: job 'ansflow-p-m' exists and was not created by ansflow; ansflow "
        "will not overwrite it (rename or delete it, or change `job_prefix` on target 'ci')"
    )
    assert emu.builds("ansflow-p-m") == []


def test_a_job_prefix_folder_missing_on_jenkins_is_named_as_a_folder(
    emu: JenkinsEmulator, jcli: Cli
) -> None:
    """Jenkins answers createItem in a missing folder with 404: not "job not found"."""
    team = target("team", emu.url).replace("}\n", ", job_prefix: nowhere/ansflow-}\n")
    jcli.write("p.yml", pipeline(emu, "  - {id: m, type: jenkins, on: team, run: echo hi}\n", team))
    result = jcli("run", "p.yml", "-o", "plain", timeout=DEADLINE_S)
    assert result.code == 1, str(result)
    assert step_rows(jcli)["m"]["error"] == (
        f"Jenkins {emu.url}: folder 'nowhere' not found (HTTP 404) while creating job "
        "'nowhere/ansflow-p-m'; create the folder on Jenkins, or change `job_prefix` on target "
        "'team'"
    )


# --- faults ----------------------------------------------------------------------------------


def test_every_refusal_is_one_clear_line_naming_the_url_and_the_job(
    emu: JenkinsEmulator, jcli: Cli
) -> None:
    emu.add_freestyle_job("shop", "echo hi")
    closed = f"http://127.0.0.1:{closed_port()}/"
    targets = (
        target("badtoken", emu.url, token="${{ env.JT_WRONG }}")
        + target("viewer", emu.url, user=VIEWER, token="${{ env.JT_VIEWER }}")
        + target("gone", closed)
    )
    steps = "".join(
        f"  - {{id: {sid}, type: jenkins, on: {on}, job: {job}, needs: []}}\n"
        for sid, on, job in [
            ("unauthorized", "badtoken", "shop"),
            ("forbidden", "viewer", "shop"),
            ("missing", "ci", "nope"),
            ("unreachable", "gone", "shop"),
        ]
    )
    jcli.write("p.yml", pipeline(emu, steps, targets))
    result = jcli("run", "p.yml", "-o", "plain", timeout=DEADLINE_S)
    assert result.code == 1
    errors = {k: v["error"] for k, v in step_rows(jcli).items()}
    assert errors == {
        "unauthorized": f"Jenkins {emu.url}: job 'shop': user 'robot' was refused (HTTP 401: Invalid "
        "password/token for user: robot); check the user and API token of target 'badtoken'",
        "forbidden": f"Jenkins {emu.url}: job 'shop': user 'viewer' may not do this: starting a "
        "build (HTTP 403: viewer is missing the Job/Build permission)",
        "missing": f"Jenkins {emu.url}: job 'nope' not found (HTTP 404)",
        "unreachable": f"Jenkins {closed}: job 'shop': cannot reach Jenkins while reading the job "
        "(connection refused)",
    }
    assert emu.builds("shop") == []


def test_jenkins_going_away_mid_build_and_coming_back_is_survived(
    emu: JenkinsEmulator, jcli: Cli, procs: list[subprocess.Popen[str]]
) -> None:
    gate = jcli.cwd / "gate"
    emu.add_freestyle_job("slow", gate_script(gate, after="echo done-after-outage"))
    jcli.write("p.yml", pipeline(emu, "  - {id: it, type: jenkins, on: ci, job: slow}\n"))
    proc = jcli.popen("run", "p.yml", "-o", "json")
    procs.append(proc)
    events = Events(proc, DEADLINE_S)
    events.log("waiting-for-gate")
    emu.go_away()
    events.log("retrying for up to 20 s")
    gate.touch()  # the build ends while ansflow cannot see it
    emu.wait_for_build("slow", 1, timeout=DEADLINE_S)
    emu.come_back()
    events.log("Jenkins answers again")
    assert events.finish() == 0
    assert jcli.statuses() == {"it": "success"}
    assert "done-after-outage" in jcli("logs", "last").out


def test_jenkins_gone_for_good_fails_the_step_after_the_window(
    emu: JenkinsEmulator, tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    cli = Cli(tmp_path, env={"JT": TOKEN, "ANSFLOW_JENKINS_RETRY_WINDOW": "1.5"})
    emu.add_freestyle_job("slow", "echo waiting-for-gate; sleep 60")
    cli.write("p.yml", pipeline(emu, "  - {id: it, type: jenkins, on: ci, job: slow}\n"))
    proc = cli.popen("run", "p.yml", "-o", "json")
    procs.append(proc)
    events = Events(proc, DEADLINE_S)
    events.log("waiting-for-gate")
    emu.go_away()
    started = time.monotonic()
    assert events.finish() == 1
    assert time.monotonic() - started < 30  # the window, not SPEC's default 60 s
    error = step_rows(cli)["it"]["error"]
    assert error.startswith(
        f"Jenkins {emu.url}: job 'slow': cannot reach Jenkins while reading the console"
    )
    assert error.endswith("no answer for 1.5 s, gave up following the build (it may still run)")
    assert unfinished(cli) == []


# --- job names -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("job", "message"),
    [
        ("''", "must not be empty"),
        ("../shop", "'..' is not a folder or job name Jenkins allows"),
        ("team/./shop", "'.' is not a folder or job name Jenkins allows"),
        ("team//shop", "has an empty folder or job name: separate folders with one `/`"),
        ("/shop", "has an empty folder or job name"),
        ("shop/", "has an empty folder or job name"),
        ("'team:shop'", "Jenkins does not allow ':' in a folder or job name"),
    ],
)
def test_a_bad_job_name_is_an_error_at_its_line_and_column(
    cli: Cli, job: str, message: str
) -> None:
    cli.write(
        "p.yml",
        "targets:\n"
        "  ci: {type: jenkins, url: 'http://127.0.0.1:1/'}\n"
        "steps:\n"
        "  - id: j\n"
        "    type: jenkins\n"
        "    on: ci\n"
        f"    job: {job}\n",
    )
    result = cli("validate", "p.yml")
    assert result.code == 2, str(result)
    first = (result.out + result.err).splitlines()[0]
    assert first.startswith(f"p.yml:7:10: step 'j': `job`: {message}"), first
    assert cli("run", "p.yml").code == 2
    assert cli("runs", "--json").out.strip() == "[]"


def test_good_and_templated_job_names_pass_validation(cli: Cli) -> None:
    cli.write(
        "p.yml",
        "vars: {j: shop}\n"
        "targets:\n"
        "  ci: {type: jenkins, url: 'http://127.0.0.1:1/', job_prefix: team/ansflow-}\n"
        "  plain: {type: jenkins, url: 'http://127.0.0.1:1/', job_prefix: ''}\n"
        "steps:\n"
        "  - {id: a, type: jenkins, on: ci, job: team/sub/shop-1.2_x}\n"
        "  - {id: b, type: jenkins, on: ci, job: '${{ vars.j }}'}\n"
        "  - {id: c, type: jenkins, on: plain, run: echo hi}\n",
    )
    result = cli("validate", "p.yml")
    assert result.code == 0, str(result)


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        ("team//ansflow-", "has an empty folder name"),
        ("/ansflow-", "has an empty folder name"),
        ("../ansflow-", "'..' is not a folder name Jenkins allows"),
    ],
)
def test_a_job_prefix_must_name_real_folders(cli: Cli, prefix: str, message: str) -> None:
    cli.write(
        "p.yml",
        "targets:\n"
        "  ci:\n"
        "    type: jenkins\n"
        "    url: 'http://127.0.0.1:1/'\n"
        f"    job_prefix: '{prefix}'\n"
        "steps:\n"
        "  - {id: m, type: jenkins, on: ci, run: echo hi}\n",
    )
    result = cli("validate", "p.yml")
    assert result.code == 2, str(result)
    first = (result.out + result.err).splitlines()[0]
    assert first.startswith(f"p.yml:5:17: target 'ci': `job_prefix`: {message}"), first


# --- connecting, TLS and `targets check` -----------------------------------------------------


def spec(url: str, **fields: Any) -> JenkinsTarget:
    return JenkinsTarget.model_validate({"type": "jenkins", "url": url, **fields})


CONTEXT: dict[str, Any] = {"secrets": {"JT": TOKEN}, "env": {}, "vars": {}}


def test_tls_is_verified_unless_verify_false_is_written(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONHTTPSVERIFY", "0")  # python-jenkins would turn verification off
    default = connect(
        "ci", spec("https://ci.example", user=USER, token="${{ secrets.JT }}"), {}, CONTEXT
    )
    assert default.verify is True and default._server._session.verify is True
    off = connect(
        "ci",
        spec("https://ci.example", user=USER, token="${{ secrets.JT }}", verify=False),
        {},
        CONTEXT,
    )
    assert off._server._session.verify is False


@pytest.mark.parametrize(
    ("written", "accepted"),
    [
        ("s3cr3t-api-token", False),
        ("'${{ vars.token }}'", False),
        ("'prefix-${{ secrets.JT }}'", False),
        ("'${{ secrets.JT }}'", True),
        ("'${{ env.JENKINS_API_TOKEN }}'", True),
    ],
)
def test_a_jenkins_token_must_be_a_reference(cli: Cli, written: str, accepted: bool) -> None:
    cli.write(
        "p.yml",
        "version: 1\nsecrets: [JT]\nvars: {token: x}\ntargets:\n  ci:\n"
        f"    type: jenkins\n    url: http://127.0.0.1:9/\n    user: robot\n    token: {written}\n"
        "steps:\n  - {id: a, type: jenkins, on: ci, job: shop}\n",
    )
    result = cli("validate", "p.yml")
    if accepted:
        assert result.code == 0, result
        return
    assert result.code == 2, result
    text = result.out + result.err
    assert (
        "p.yml:9:12: target 'ci': `token`: must be a ${{ secrets.NAME }} or ${{ env.NAME }} "
        "reference; got a literal value" in text
    ), text
    assert "s3cr3t-api-token" not in text and "    token: ***" in text


def test_credentials_come_from_a_secret_or_the_environment() -> None:
    client = connect(
        "ci", spec("http://x/", user=USER, token="${{ secrets.JT }}"), {"JT": TOKEN}, CONTEXT
    )
    assert client.user == USER
    from_env = connect(
        "ci", spec("http://x/"), {}, {**CONTEXT, "env": {"JENKINS_USER": "u", "JENKINS_TOKEN": "t"}}
    )
    assert from_env.user == "u"
    from ansflow.remote.jenkins import JenkinsError

    with pytest.raises(JenkinsError, match="user 'robot' has no API token"):
        connect("ci", spec("http://x/", user=USER), {}, CONTEXT)


@pytest.fixture
def tls_proxy(emu: JenkinsEmulator, tmp_path: Path) -> Iterator[str]:
    """An HTTPS front for the emulator with a self-signed certificate (no CA trusts it)."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.05)
    stop = threading.Event()

    def pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def serve() -> None:
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            raw.settimeout(None)
            try:
                conn = context.wrap_socket(raw, server_side=True)
            except (OSError, ssl.SSLError):
                raw.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", emu.port))
            threading.Thread(target=pipe, args=(conn, upstream), daemon=True).start()
            threading.Thread(target=pipe, args=(upstream, conn), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{listener.getsockname()[1]}/"
    stop.set()
    listener.close()
    thread.join(2)


def test_targets_check_reports_version_user_and_jobs(emu: JenkinsEmulator) -> None:
    emu.add_freestyle_job("shop", "true", parameters=["BRANCH"])
    checks = check_jenkins(
        "ci", spec(emu.url, user=USER, token="${{ secrets.JT }}"), {"JT": TOKEN}, CONTEXT,
        ["shop", "nope"],
    )  # fmt: skip
    assert [(c.what, c.ok) for c in checks] == [
        ("server", True),
        ("job shop", True),
        ("job nope", False),
    ]
    assert checks[0].detail == f"Jenkins 2.462.3 at {emu.url}, as robot"
    assert checks[1].detail == "FreeStyleProject, parameters: BRANCH"
    assert checks[2].error == f"Jenkins {emu.url}: job 'nope' not found (HTTP 404)"
    bad = {**CONTEXT, "env": {"BAD": "bad"}}
    wrong = check_jenkins("ci", spec(emu.url, user=USER, token="${{ env.BAD }}"), {}, bad, ["shop"])
    assert len(wrong) == 1 and not wrong[0].ok
    assert "user 'robot' was refused (HTTP 401" in (wrong[0].error or "")


def test_targets_check_verifies_tls_unless_told_not_to(tls_proxy: str) -> None:
    strict = check_jenkins(
        "ci", spec(tls_proxy, user=USER, token="${{ secrets.JT }}"), {}, CONTEXT, []
    )
    assert not strict[0].ok
    assert (strict[0].error or "").startswith(f"Jenkins {tls_proxy}: TLS check failed")
    assert "`verify: false` on target 'ci'" in (strict[0].error or "")
    lax = check_jenkins(
        "ci", spec(tls_proxy, user=USER, token="${{ secrets.JT }}", verify=False), {}, CONTEXT, []
    )
    assert lax[0].ok, lax
    assert lax[0].detail.endswith(", TLS NOT verified")


def test_targets_check_command_lists_jenkins_jobs(emu: JenkinsEmulator, jcli: Cli) -> None:
    emu.add_freestyle_job("shop", "true")
    jcli.write(
        "p.yml",
        pipeline(emu, "  - {id: it, type: jenkins, on: ci, job: shop}\n"
                 "  - {id: no, type: jenkins, on: ci, job: nope, needs: []}\n"),
    )  # fmt: skip
    result = jcli("targets", "check", "p.yml", "--json")
    assert result.code == 1, str(result)
    rows = {r["what"]: r for r in json.loads(result.out)}
    assert rows["server"]["ok"] and rows["job shop"]["ok"] and not rows["job nope"]["ok"]
    assert os.environ.get("JT") is None  # the token came from the CLI's environment only


def test_targets_check_renders_job_names_as_run_does(emu: JenkinsEmulator, jcli: Cli) -> None:
    emu.add_freestyle_job("shop", "true")
    emu.add_freestyle_job("app-a", "true")
    emu.add_freestyle_job("app-b", "true")
    jcli.write(
        "p.yml",
        pipeline(
            emu,
            "  - {id: first, run: 'echo name=shop >> \"$ANSFLOW_OUTPUT\"'}\n"
            "  - {id: v, type: jenkins, on: ci, job: '${{ vars.j }}'}\n"
            "  - {id: m, type: jenkins, on: ci, job: 'app-${{ matrix.x }}', matrix: {x: [a, b]}}\n"
            "  - {id: s, type: jenkins, on: ci, job: '${{ steps.first.outputs.name }}'}\n",
            head="vars: {j: shop}\n",
        ),
    )
    result = jcli("targets", "check", "p.yml")
    assert result.code == 0, str(result)
    assert "${{ vars.j }}" not in result.out
    assert "not found" not in result.out
    assert "4 ok, 0 failed, 1 skipped" in result.out
    rows = {r["what"]: r for r in json.loads(jcli("targets", "check", "p.yml", "--json").out)}
    assert set(rows) == {
        "server",
        "job shop",
        "job app-a",
        "job app-b",
        "job ${{ steps.first.outputs.name }}",
    }
    unknown = rows["job ${{ steps.first.outputs.name }}"]
    assert unknown["ok"] and unknown["skipped"]
    assert unknown["detail"] == (
        "not checked: the name reads steps.first, known only while the pipeline runs (step 's')"
    )
    # The same names as `run` uses: the run triggers the jobs that were checked.
    assert jcli("run", "p.yml", "-o", "plain", timeout=DEADLINE_S).code == 0
    assert len(emu.builds("shop")) == 2 and len(emu.builds("app-b")) == 1


def test_targets_check_fails_a_job_name_that_renders_badly(emu: JenkinsEmulator, jcli: Cli) -> None:
    emu.add_freestyle_job("shop", "true")
    jcli.write(
        "p.yml",
        pipeline(
            emu,
            "  - {id: up, type: jenkins, on: ci, job: '${{ vars.j }}'}\n",
            head="vars: {j: ../shop}\n",
        ),
    )
    result = jcli("targets", "check", "p.yml", "--json")
    assert result.code == 1, str(result)
    rows = {r["what"]: r for r in json.loads(result.out)}
    assert rows["job ${{ vars.j }}"]["error"] == (
        "step 'up', `job`: renders to '../shop': '..' is not a folder or job name Jenkins allows"
    )
    assert [r for r in emu.requests if "/job/" in r[1]] == []


def test_console_reader_keeps_partial_lines_and_split_characters() -> None:
    from ansflow.remote.jenkins import ConsoleReader

    chunks = [(b"one\ntw", True), (b"o \xc3", True), (b"\xa9t\xc3\xa9\r\nlast", False)]

    class Fake:
        def progressive(self, job: str, number: int, start: int) -> tuple[bytes, int, bool]:
            data, more = chunks.pop(0)
            return data, start + len(data), more

    reader = ConsoleReader(Fake(), "job", 1)  # type: ignore[arg-type]
    assert reader.read() == ["one"]
    assert reader.read() == []
    assert reader.read() == ["two été", "last"]
    assert reader.more is False
