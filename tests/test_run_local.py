"""`ansflow run` on the local machine, checked from the outside as a user would."""

from __future__ import annotations

import json
import re
import sqlite3
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.clihelp import Cli, alive, run_in_pty


def stamps(folder: Path, name: str) -> tuple[float, float]:
    start, end = (folder / f"{name}.times").read_text().split()
    return float(start), float(end)


TIMED = 'echo "$(date +%s.%N)" > {name}.times; {body}; echo "$(date +%s.%N)" >> {name}.times'


def timed(name: str, body: str = "true") -> str:
    return TIMED.format(name=name, body=body)


def test_top_level_entries_run_in_order(cli: Cli) -> None:
    cli.write(
        "p.yml",
        f"""
        steps:
          - {{id: a, run: '{timed("a")}'}}
          - {{id: b, run: '{timed("b")}'}}
          - {{id: c, run: '{timed("c")}'}}
        """,
    )
    result = cli("run", "p.yml")
    assert result.code == 0, result
    a, b, c = (stamps(cli.cwd, n) for n in "abc")
    assert a[1] <= b[0] and b[1] <= c[0]


WAIT_FOR = (
    "touch {me}.started; for i in $(seq 400); do [ -e {other}.started ] && exit 0; "
    "sleep 0.025; done; echo never saw {other}; exit 1"
)


def test_parallel_members_overlap_and_next_entry_waits_for_all(cli: Cli) -> None:
    cli.write(
        "p.yml",
        f"""
        steps:
          - parallel:
              - {{id: x, run: '{WAIT_FOR.format(me="x", other="y")}'}}
              - {{id: y, run: '{WAIT_FOR.format(me="y", other="x")}'}}
          - {{id: after, run: 'test -e x.started && test -e y.started'}}
        """,
    )
    result = cli("run", "p.yml")
    assert result.code == 0, result
    assert cli.statuses() == {"x": "success", "y": "success", "after": "success"}


def test_needs_replaces_the_implicit_order(cli: Cli) -> None:
    cli.write(
        "p.yml",
        f"""
        steps:
          - {{id: slow, run: '{WAIT_FOR.format(me="slow", other="free")}'}}
          - {{id: free, needs: [], run: '{WAIT_FOR.format(me="free", other="slow")}'}}
          - {{id: last, needs: [free], run: 'true'}}
        """,
    )
    result = cli("run", "p.yml")
    assert result.code == 0, result


CONCURRENCY_PROBE = """
( flock 9; n=$(( $(cat count 2>/dev/null || echo 0) + 1 )); echo $n > count; echo $n >> seen ) 9>lock
sleep 0.15
( flock 9; n=$(( $(cat count) - 1 )); echo $n > count ) 9>lock
"""


@pytest.mark.parametrize(("flag", "bound"), [([], 3), (["--concurrency", "2"], 2)])
def test_concurrency_bound_is_never_exceeded(cli: Cli, flag: list[str], bound: int) -> None:
    steps = "\n".join(
        f"  - id: s{i}\n    needs: []\n    run: |\n"
        + "".join(f"      {line}\n" for line in CONCURRENCY_PROBE.strip().splitlines())
        for i in range(8)
    )
    cli.write("p.yml", "concurrency: 3\nsteps:\n" + steps)
    result = cli("run", "p.yml", *flag)
    assert result.code == 0, result
    seen = [int(x) for x in (cli.cwd / "seen").read_text().split()]
    assert len(seen) == 8
    assert max(seen) == bound


def test_retries_with_a_counter_file_and_attempts_recorded(cli: Cli) -> None:
    cli.write(
        "p.yml",
        """
        steps:
          - id: flaky
            retries: 3
            retry_delay: 0.05
            run: |
              n=$(( $(cat counter 2>/dev/null || echo 0) + 1 )); echo $n > counter
              echo "attempt $ANSFLOW_ATTEMPT"
              [ $n -ge 3 ]
        """,
    )
    result = cli("run", "p.yml", "-o", "json")
    assert result.code == 0, result
    assert (cli.cwd / "counter").read_text().strip() == "3"
    step = cli.show()["steps"][0]
    assert step["status"] == "success" and step["attempts"] == 3
    events = result.json_lines()
    states = [e["status"] for e in events if e["event"] == "step_state"]
    assert states == ["retrying", "retrying"]
    started = [e["attempt"] for e in events if e["event"] == "step_started"]
    assert started == [1, 2, 3]
    db = sqlite3.connect(cli.db)
    rows = db.execute("SELECT attempt, status FROM attempts ORDER BY attempt").fetchall()
    assert rows == [(1, "failed"), (2, "failed"), (3, "success")]


def test_retries_exhausted_fail_and_dependants_are_skipped(cli: Cli) -> None:
    cli.write(
        "p.yml",
        """
        steps:
          - {id: bad, retries: 1, retry_delay: 0, run: 'echo no; exit 7'}
          - {id: next, run: 'true'}
          - {id: cleanup, when: '${{ always() }}', run: 'true'}
          - {id: on_fail, when: '${{ failure() }}', run: 'true'}
        """,
    )
    result = cli("run", "p.yml")
    assert result.code == 1, result
    shown = cli.show()
    by_id = {s["step"]: s for s in shown["steps"]}
    assert by_id["bad"]["status"] == "failed"
    assert by_id["bad"]["attempts"] == 2
    assert by_id["bad"]["exit_code"] == 7
    assert by_id["next"]["status"] == "skipped"
    assert by_id["cleanup"]["status"] == "success"
    assert by_id["on_fail"]["status"] == "success"
    assert shown["run"]["status"] == "failed"
    assert not {s["status"] for s in shown["steps"]} & {"pending", "running", "retrying"}


def test_timeout_kills_the_whole_process_group(cli: Cli) -> None:
    cli.write(
        "p.yml",
        """
        steps:
          - id: hang
            timeout: 1
            run: |
              sleep 300 &
              echo $! > child.pid
              bash -c 'echo $$ > grandchild.pid; exec sleep 300' &
              echo $$ > shell.pid
              wait
          - {id: after, run: 'true'}
        """,
    )
    result = cli("run", "p.yml")
    assert result.code == 1, result
    step = cli.show()["steps"][0]
    assert step["status"] == "timed_out"
    assert step["error"] == "timed out after 1s"
    assert cli.statuses()["after"] == "skipped"
    for name in ("child.pid", "grandchild.pid", "shell.pid"):
        pid = int((cli.cwd / name).read_text())
        assert not alive(pid), f"{name} ({pid}) survived the timeout"


def test_background_process_left_by_a_step_is_stopped(cli: Cli) -> None:
    cli.write(
        "p.yml",
        """
        steps:
          - {id: leaves, run: 'sleep 300 & echo $! > bg.pid'}
        """,
    )
    result = cli("run", "p.yml", timeout=30)
    assert result.code == 0, result
    assert not alive(int((cli.cwd / "bg.pid").read_text()))


def test_secrets_are_masked_in_output_logs_events_and_database(cli: Cli) -> None:
    secret = "hunter2-s3cr3t-value"
    cli.write(".secrets", f"API_TOKEN={secret}\n")
    cli.write(
        "p.yml",
        """
        secrets: [API_TOKEN, FROM_ENV]
        steps:
          - id: leak
            run: |
              echo "token=$API_TOKEN"
              echo "again ${{ secrets.API_TOKEN }} and $FROM_ENV" >&2
              echo "out=$API_TOKEN" >> "$ANSFLOW_OUTPUT"
          - id: fails
            run: 'echo "${{ secrets.FROM_ENV }}"; exit 3'
        """,
    )
    env = {"FROM_ENV": "env-secret-42"}
    for output in ("plain", "json"):
        result = cli("run", "p.yml", "--secrets-file", ".secrets", "-o", output, env=env)
        assert result.code == 1, result
        assert secret not in result.out + result.err
        assert "env-secret-42" not in result.out + result.err
        assert "***" in result.out
    logs = cli("logs", "last")
    assert secret not in logs.out and "token=***" in logs.out
    shown = cli("show", "last", "--json").out
    assert secret not in shown
    raw = b"".join(p.read_bytes() for p in cli.db.parent.glob("state.db*"))
    assert secret.encode() not in raw
    assert b"env-secret-42" not in raw


def test_missing_secret_is_an_error_before_anything_runs(cli: Cli) -> None:
    cli.write("p.yml", "secrets: [NOPE_TOKEN]\nsteps:\n  - {id: a, run: 'touch ran'}\n")
    result = cli("run", "p.yml")
    assert result.code == 2
    assert "NOPE_TOKEN" in result.err
    assert not (cli.cwd / "ran").exists()
    assert cli("runs", "--json").out.strip() == "[]"


def test_json_events_parse_and_follow_the_schema(cli: Cli) -> None:
    cli.write(
        "p.yml",
        """
        steps:
          - {id: a, run: 'echo hello; echo oops >&2'}
          - {id: b, run: 'exit 4'}
        """,
    )
    result = cli("run", "p.yml", "-o", "json")
    assert result.code == 1
    events = result.json_lines()
    names = [e["event"] for e in events]
    assert names[0] == "run_started" and names[-1] == "run_finished"
    for event in events:
        assert isinstance(event["run_id"], int)
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", event["ts"])
    logs = [e for e in events if e["event"] == "log"]
    assert any(
        {"step": "a", "stream": "stdout", "text": "hello"}.items() <= e.items() for e in logs
    )
    assert any(e["stream"] == "stderr" and e["text"] == "oops" for e in logs)
    finished = {e["step"]: e for e in events if e["event"] == "step_finished"}
    assert finished["b"]["status"] == "failed" and finished["b"]["exit_code"] == 4
    assert finished["a"]["host"] is None
    assert events[-1]["status"] == "failed"


def test_plain_output_has_no_escape_codes_and_one_line_per_event(cli: Cli) -> None:
    cli.write("p.yml", "steps:\n  - {id: a, run: 'printf \"one\\\\ntwo\\\\n\"'}\n")
    result = cli("run", "p.yml", "-o", "plain")
    assert result.code == 0, result
    assert "\x1b" not in result.out
    lines = result.out.splitlines()
    assert any(re.match(r"^\d\d:\d\d:\d\d a \| one$", line) for line in lines)
    assert any(re.match(r"^\d\d:\d\d:\d\d a \| two$", line) for line in lines)
    assert any(re.match(r"^\d\d:\d\d:\d\d a \| success", line) for line in lines)
    assert lines[-1].startswith("run 1 success")


def test_quiet_prints_only_failures_and_the_summary(cli: Cli) -> None:
    cli.write(
        "p.yml",
        "steps:\n  - {id: ok, run: 'echo fine'}\n  - {id: bad, needs: [], run: 'echo broken; exit 2'}\n",
    )
    result = cli("run", "p.yml", "-o", "plain", "--quiet")
    assert result.code == 1
    assert "fine" not in result.out
    assert "bad | failed" in result.out and "broken" in result.out
    assert result.out.strip().splitlines()[-1].startswith("run 1 failed")


def test_junit_report_has_a_testcase_per_step(cli: Cli) -> None:
    cli.write(
        "p.yml",
        """
        steps:
          - {id: good, run: 'true'}
          - {id: bad, needs: [], run: 'exit 1'}
          - {id: never, needs: [bad], run: 'true'}
        """,
    )
    result = cli("run", "p.yml", "--junit", "out/report.xml")
    assert result.code == 1
    root = ET.parse(cli.cwd / "out" / "report.xml").getroot()
    cases = {c.get("name"): c for c in root.iter("testcase")}
    assert set(cases) == {"good", "bad", "never"}
    assert cases["bad"].find("failure") is not None
    assert cases["never"].find("skipped") is not None
    assert len(list(cases["good"])) == 0


def test_outputs_flow_into_later_templates_and_matrix(cli: Cli) -> None:
    cli.write(
        "p.yml",
        """
        vars: {greeting: hi}
        steps:
          - id: make
            run: |
              echo "version=1.2.3" >> "$ANSFLOW_OUTPUT"
              printf 'notes<<EOF\\nline one\\nline two\\nEOF\\n' >> "$ANSFLOW_OUTPUT"
          - id: use
            matrix: {py: ["3.11", "3.12"]}
            run: |
              echo "${{ vars.greeting }} ${{ steps.make.outputs.version }} py${{ matrix.py }}" > use-${{ matrix.py }}.txt
              echo "same=yes" >> "$ANSFLOW_OUTPUT"
          - id: after
            run: |
              echo "${{ steps.use.outputs.same }}" > after.txt
              echo "${{ steps.make.outputs.notes }}" >> after.txt
        """,
    )
    result = cli("run", "p.yml", "--var", "greeting=hello")
    assert result.code == 0, result
    assert (cli.cwd / "use-3.11.txt").read_text() == "hello 1.2.3 py3.11\n"
    assert (cli.cwd / "use-3.12.txt").read_text() == "hello 1.2.3 py3.12\n"
    assert (cli.cwd / "after.txt").read_text() == "yes\nline one\nline two\n"
    steps = {s["step"]: s for s in cli.show()["steps"]}
    assert steps["make"]["outputs"] == {"version": "1.2.3", "notes": "line one\nline two"}


def test_undefined_name_at_run_time_fails_the_step_and_names_it(cli: Cli) -> None:
    cli.write(
        "p.yml",
        """
        steps:
          - {id: a, run: 'true'}
          - {id: b, run: 'echo ${{ steps.a.outputs.missing }}'}
        """,
    )
    result = cli("run", "p.yml")
    assert result.code == 1
    step = {s["step"]: s for s in cli.show()["steps"]}["b"]
    assert step["status"] == "failed"
    assert "step 'b', field `run`" in step["error"]
    assert "steps.a.outputs.missing" in step["error"]


def test_step_environment(cli: Cli) -> None:
    cli.write(
        "p.yml",
        """
        name: envcheck
        env: {GLOBAL: "g-${{ vars.v }}"}
        vars: {v: 1}
        steps:
          - id: show
            type: custom
            env: {LOCAL: here}
            run: env | grep -E '^(ANSFLOW|GLOBAL|LOCAL|CI)' | sort > env.txt
        """,
    )
    result = cli("run", "p.yml", env={"CI": "true"})
    assert result.code == 0, result
    lines = dict(line.split("=", 1) for line in (cli.cwd / "env.txt").read_text().splitlines())
    assert lines["ANSFLOW"] == "1"
    assert lines["CI"] == "true"
    assert lines["ANSFLOW_PIPELINE"] == "envcheck"
    assert lines["ANSFLOW_STEP_ID"] == "show"
    assert lines["ANSFLOW_STEP_TYPE"] == "shell"
    assert lines["ANSFLOW_ATTEMPT"] == "1"
    assert lines["ANSFLOW_RUN_ID"] == str(cli.show()["run"]["id"])
    assert lines["ANSFLOW_OUTPUT"]
    assert lines["GLOBAL"] == "g-1" and lines["LOCAL"] == "here"
    assert "ANSFLOW_HOST" not in lines


def test_state_is_committed_before_the_next_step_sees_it(cli: Cli) -> None:
    cli.write(
        "p.yml",
        """
        vars: {python: python3}
        steps:
          - {id: first, run: 'echo one'}
          - id: second
            run: ${{ vars.python }} -m ansflow show "$ANSFLOW_RUN_ID" --json > seen.json
        """,
    )
    result = cli("run", "p.yml", "--var", f"python={sys.executable}")
    assert result.code == 0, result
    seen = json.loads((cli.cwd / "seen.json").read_text())
    steps = {s["step"]: s["status"] for s in seen["steps"]}
    assert steps == {"first": "success", "second": "running"}
    assert seen["run"]["status"] == "running"


def test_when_continue_on_error_and_conditions(cli: Cli) -> None:
    cli.write(
        "p.yml",
        """
        vars: {branch: dev}
        steps:
          - {id: allowed, continue_on_error: true, run: 'exit 1'}
          - {id: runs_anyway, run: 'true'}
          - {id: only_main, when: "${{ vars.branch == 'main' }}", run: 'true'}
          - {id: bare_expr, needs: [runs_anyway], when: "vars.branch == 'dev'", run: 'true'}
          - {id: never, needs: [runs_anyway], when: false, run: 'true'}
        """,
    )
    result = cli("run", "p.yml")
    assert result.code == 0, result
    assert cli.statuses() == {
        "allowed": "failed",
        "runs_anyway": "success",
        "only_main": "skipped",
        "bare_expr": "success",
        "never": "skipped",
    }
    assert cli.show()["run"]["status"] == "success"


def test_fail_fast_cancels_the_rest(cli: Cli) -> None:
    cli.write(
        "p.yml",
        """
        steps:
          - {id: long, run: 'echo $$ > long.pid; touch long.started; sleep 300'}
          - {id: boom, needs: [], run: 'for i in $(seq 400); do [ -e long.started ] && exit 9; sleep 0.025; done'}
          - {id: later, needs: [long], run: 'true'}
        """,
    )
    result = cli("run", "p.yml", "--fail-fast", timeout=60)
    assert result.code == 1, result
    assert cli.statuses() == {"long": "cancelled", "boom": "failed", "later": "cancelled"}
    assert not alive(int((cli.cwd / "long.pid").read_text()))


def test_only_from_and_dry_run(cli: Cli) -> None:
    cli.write(
        "p.yml",
        """
        vars: {who: you}
        secrets: [TOK]
        steps:
          - {id: a, run: 'touch a'}
          - {id: b, run: 'echo ${{ vars.who }} ${{ secrets.TOK }} > b'}
          - {id: c, run: 'touch c'}
        """,
    )
    env = {"TOK": "tok-value"}
    only = cli("run", "p.yml", "--only", "b", env=env)
    assert only.code == 0, only
    assert cli.statuses() == {"a": "skipped", "b": "success", "c": "skipped"}
    assert not (cli.cwd / "a").exists() and (cli.cwd / "b").exists()
    start = cli("run", "p.yml", "--from", "b", env=env)
    assert start.code == 0
    assert cli.statuses() == {"a": "skipped", "b": "success", "c": "success"}
    unknown = cli("run", "p.yml", "--only", "zzz", env=env)
    assert unknown.code == 2 and "zzz" in unknown.err
    unknown_from = cli("run", "p.yml", "--from", "bb", env=env)
    assert unknown_from.code == 2 and "did you mean 'b'" in unknown_from.err
    runs_before = len(json.loads(cli("runs", "--json").out))
    dry = cli("run", "p.yml", "--dry-run", "--var", "who=me", env=env)
    assert dry.code == 0, dry
    assert "echo me *** > b" in dry.out
    assert "tok-value" not in dry.out
    assert len(json.loads(cli("runs", "--json").out)) == runs_before


def test_runs_show_and_logs(cli: Cli) -> None:
    cli.write("one.yml", "steps:\n  - {id: a, run: 'echo from-one'}\n")
    cli.write("two.yml", "steps:\n  - {id: a, run: 'echo from-two; exit 1'}\n")
    assert cli("run", "one.yml").code == 0
    assert cli("run", "two.yml").code == 1
    assert cli("run", "one.yml").code == 0
    listed = json.loads(cli("runs", "--json").out)
    assert [r["id"] for r in listed] == [3, 2, 1]
    assert set(listed[0]) >= {"id", "pipeline", "status", "started_at", "finished_at", "duration"}
    only_two = json.loads(cli("runs", "--json", "--pipeline", "two").out)
    assert [r["id"] for r in only_two] == [2]
    failed = json.loads(cli("runs", "--json", "--status", "failed").out)
    assert [r["id"] for r in failed] == [2]
    assert len(json.loads(cli("runs", "--json", "--limit", "1").out)) == 1
    table = cli("runs").out
    assert "PIPELINE" in table and "two" in table
    assert "from-two" in cli("logs", "2").out
    assert "from-two" in cli("logs", "2", "a").out
    assert cli("logs", "2", "nope").code == 2
    assert cli("show", "99").code == 2
    assert cli("show", "abc").code == 2
    text = cli("show", "2").out
    assert "failed" in text and "exited with status 1" in text


def test_logs_follow_streams_until_the_run_ends(cli: Cli) -> None:
    cli.write(
        "p.yml",
        """
        steps:
          - id: talk
            run: |
              echo first-line
              for i in $(seq 400); do [ -e go ] && break; sleep 0.025; done
              echo second-line
        """,
    )
    runner = cli.popen("run", "p.yml")
    follower = None
    try:
        for _ in range(400):
            if cli.db.exists() and cli("logs", "last").out.count("first-line"):
                break
            import time

            time.sleep(0.025)
        follower = cli.popen("logs", "last", "--follow")
        (cli.cwd / "go").touch()
        out, err = follower.communicate(timeout=60)
        assert follower.returncode == 0, err
        assert out.index("first-line") < out.index("second-line")
        assert runner.wait(timeout=60) == 0
    finally:
        for proc in (runner, follower):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


def test_tty_view_under_a_pseudo_terminal(cli: Cli) -> None:
    cli.write(
        "p.yml",
        """
        steps:
          - {id: build, run: 'echo compiling'}
          - {id: check, run: 'echo checking; exit 1'}
        """,
    )
    code, screen = run_in_pty(cli, ["run", "p.yml"], colour=True)
    assert code == 1, screen
    assert "\x1b[" in screen  # a live, coloured view
    assert "ansflow run 1" in screen  # the live view's title row
    assert "check" in screen and "failed" in screen
    assert "run 1 failed" in screen  # the summary
    assert "last 1 lines of check" in screen and "checking" in screen


def test_bad_input_exit_codes(cli: Cli) -> None:
    assert cli("run", "missing.yml").code == 2
    cli.write("p.yml", "steps:\n  - {id: a, run: 'true'}\n")
    assert cli("run", "p.yml", "--var", "novalue").code == 2
    assert cli("run", "p.yml", "--output", "fancy").code == 2
    assert cli("run", "p.yml", "--concurrency", "0").code == 2
    assert cli("run", "p.yml").code == 0


def test_show_lists_what_steps_recorded(cli: Cli) -> None:
    import hashlib

    cli.write(
        "p.yml",
        """
        steps:
          - id: b
            type: build
            run: 'mkdir -p out && printf data > out/a.bin && echo "v=7" >> "$ANSFLOW_OUTPUT"'
            artifacts: [out/*.bin]
        """,
    )
    assert cli("run", "p.yml").code == 0
    text = cli("show", "last").out
    assert f"sha256 {hashlib.sha256(b'data').hexdigest()}" in text
    assert "4 bytes" in text and "output v=7" in text


def test_stats_per_step(cli: Cli) -> None:
    cli.write(
        "p.yml",
        """
        steps:
          - {id: quick, run: 'true'}
          - {id: flaky, continue_on_error: true, run: '[ -e pass ]'}
        """,
    )
    for _ in range(3):
        assert cli("run", "p.yml").code == 0
    (cli.cwd / "pass").touch()
    assert cli("run", "p.yml").code == 0
    entries = {e["step"]: e for e in json.loads(cli("stats", "--json").out)}
    assert entries["quick"]["runs"] == 4 and entries["quick"]["success_rate"] == 1.0
    assert entries["flaky"]["runs"] == 4 and entries["flaky"]["success_rate"] == 0.25
    assert entries["flaky"]["recent"] == ["failed", "failed", "failed", "success"]
    assert 0 <= entries["quick"]["median"] <= entries["quick"]["p95"]
    table = cli("stats", "p").out
    assert "flaky" in table and "25%" in table and "✗✗✗✓" in table
    assert cli("stats", "other-pipeline").out.strip() == "no finished steps yet"
