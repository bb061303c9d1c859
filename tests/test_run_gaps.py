"""Gaps of `ansflow run` found after the first pass (issue 3, and issue 4 leftovers).

Each is checked from the outside, as a user would meet it: cleanup steps after a cancel, what
each attempt recorded, dry-run placeholders, a bad `--junit` path, `runs --status`, times of steps
that never ran, `--quiet` JSON, and commands that must not create a database folder.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.clihelp import Cli, alive, wait_for

DEADLINE_S = 60.0

CLEANUP = """
steps:
  - {id: done, run: 'true'}
  - {id: busy, run: 'touch busy.started; sleep 300'}
  - {id: later, run: 'touch later.ran'}
  - {id: cleanup, when: '${{ always() }}', run: 'echo "${{ run.status }}" > cleanup.ran'}
  - {id: on_cancel, when: '${{ cancelled() }}', run: 'touch on_cancel.ran'}
  - {id: plain, run: 'touch plain.ran'}
"""


def by_step(cli: Cli) -> dict[str, dict[str, object]]:
    return {str(s["step"]): s for s in cli.show()["steps"]}


# --- 1. always() and cancelled() after a cancel --------------------------------------------------


@pytest.mark.parametrize("how", ["sigint", "ansflow cancel"])
def test_always_and_cancelled_steps_run_after_a_cancel(
    cli: Cli, procs: list[subprocess.Popen[str]], how: str
) -> None:
    cli.write("p.yml", CLEANUP)
    proc = cli.popen("run", "p.yml", "-o", "plain")
    procs.append(proc)
    wait_for(lambda: (cli.cwd / "busy.started").exists(), "the busy step to start")
    if how == "sigint":
        proc.send_signal(signal.SIGINT)
    else:
        cancelled = cli("cancel", "last")
        assert cancelled.code == 0, cancelled
        assert "is cancelled" in cancelled.out
    out, _ = proc.communicate(timeout=DEADLINE_S)
    assert proc.returncode == 3, out
    assert (cli.cwd / "cleanup.ran").read_text() == "cancelled\n"
    assert (cli.cwd / "on_cancel.ran").exists()
    assert not (cli.cwd / "later.ran").exists() and not (cli.cwd / "plain.ran").exists()
    steps = by_step(cli)
    assert {k: v["status"] for k, v in steps.items()} == {
        "done": "success",
        "busy": "cancelled",
        "later": "cancelled",
        "cleanup": "success",
        "on_cancel": "success",
        "plain": "cancelled",
    }
    # The cleanup step waited for the cancelled step before it to stop.
    assert str(steps["busy"]["finished_at"]) <= str(steps["cleanup"]["started_at"])
    assert cli.show()["run"]["status"] == "cancelled"


def test_a_second_sigint_stops_the_cleanup_steps_too(
    cli: Cli, procs: list[subprocess.Popen[str]]
) -> None:
    cli.write(
        "p.yml",
        """
        steps:
          - {id: busy, run: 'touch busy.started; sleep 300'}
          - id: cleanup
            when: '${{ always() }}'
            run: 'echo $$ > cleanup.pid; touch cleanup.started; sleep 300'
          - {id: notify, when: '${{ always() }}', run: 'touch notify.ran'}
        """,
    )
    proc = cli.popen("run", "p.yml", "-o", "plain")
    procs.append(proc)
    wait_for(lambda: (cli.cwd / "busy.started").exists(), "the busy step to start")
    proc.send_signal(signal.SIGINT)
    wait_for(lambda: (cli.cwd / "cleanup.started").exists(), "the cleanup step to start")
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=DEADLINE_S)
    assert proc.returncode == 3, out
    steps = by_step(cli)
    assert {k: v["status"] for k, v in steps.items()} == {
        "busy": "cancelled",
        "cleanup": "cancelled",
        "notify": "cancelled",
    }
    assert "second interrupt" in str(steps["cleanup"]["error"])
    assert not (cli.cwd / "notify.ran").exists()
    pid = int((cli.cwd / "cleanup.pid").read_text())
    wait_for(lambda: not alive(pid), "the cleanup step to be killed", timeout=10)


def test_fail_fast_still_cancels_cleanup_steps(cli: Cli) -> None:
    """--fail-fast keeps its meaning: everything not started is cancelled, and the run is
    `failed`, not cancelled, so `cancelled()` steps do not run either."""
    cli.write(
        "p.yml",
        """
        steps:
          - {id: long, run: 'touch long.started; sleep 300'}
          - {id: boom, needs: [], run: 'for i in $(seq 400); do [ -e long.started ] && exit 9; sleep 0.025; done'}
          - {id: cleanup, needs: [long], when: '${{ always() }}', run: 'touch cleanup.ran'}
          - {id: on_cancel, needs: [long], when: '${{ cancelled() }}', run: 'touch on_cancel.ran'}
        """,
    )
    result = cli("run", "p.yml", "--fail-fast", timeout=DEADLINE_S)
    assert result.code == 1, result
    assert cli.statuses() == {
        "long": "cancelled",
        "boom": "failed",
        "cleanup": "cancelled",
        "on_cancel": "cancelled",
    }
    assert not (cli.cwd / "cleanup.ran").exists() and not (cli.cwd / "on_cancel.ran").exists()


# --- 2. each attempt keeps its own outcome -------------------------------------------------------


def attempt_rows(cli: Cli) -> list[tuple[int, str, int | None]]:
    with sqlite3.connect(cli.db) as db:
        rows = db.execute("SELECT attempt, status, exit_code FROM attempts ORDER BY attempt")
        return [(int(a), str(s), c) for a, s, c in rows.fetchall()]


def test_each_attempt_keeps_its_exit_code_and_timeout(cli: Cli) -> None:
    cli.write(
        "p.yml",
        """
        steps:
          - id: flaky
            retries: 2
            retry_delay: 0
            timeout: 1
            run: |
              n=$(( $(cat counter 2>/dev/null || echo 0) + 1 )); echo $n > counter
              if [ $n = 1 ]; then exit 3; fi
              if [ $n = 2 ]; then sleep 30; fi
              exit 5
        """,
    )
    result = cli("run", "p.yml")
    assert result.code == 1, result
    rows = attempt_rows(cli)
    assert [(a, s) for a, s, _ in rows] == [(1, "failed"), (2, "timed_out"), (3, "failed")]
    assert rows[0][2] == 3 and rows[2][2] == 5
    step = by_step(cli)["flaky"]
    assert (step["status"], step["exit_code"], step["attempts"]) == ("failed", 5, 3)


def test_a_cancel_while_waiting_to_retry_keeps_the_failed_attempt(
    cli: Cli, procs: list[subprocess.Popen[str]]
) -> None:
    cli.write(
        "p.yml",
        "steps:\n  - {id: flaky, retries: 1, retry_delay: 300, run: 'exit 3'}\n",
    )
    proc = cli.popen("run", "p.yml", "-o", "plain")
    procs.append(proc)
    wait_for(
        lambda: cli.db.exists() and cli.statuses().get("flaky") == "retrying",
        "the first attempt to fail",
    )
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=DEADLINE_S)
    assert proc.returncode == 3, out
    assert [(a, s) for a, s, _ in attempt_rows(cli)] == [(1, "failed")]
    assert by_step(cli)["flaky"]["status"] == "cancelled"


# --- 3. dry-run placeholders ---------------------------------------------------------------------


def test_dry_run_shows_run_time_values_by_name(cli: Cli) -> None:
    cli.write(
        "p.yml",
        """
        steps:
          - {id: build, run: 'echo "version=1.2" >> "$ANSFLOW_OUTPUT"'}
          - {id: ship, run: 'echo ship ${{ steps.build.outputs.version }} in run ${{ run.id }}'}
          - {id: lone, run: '${{ steps.build.outputs.command }}'}
        """,
    )
    result = cli("run", "p.yml", "--dry-run")
    assert result.code == 0, result
    assert "echo ship <steps.build.outputs.version> in run <run.id>" in result.out
    assert "    <steps.build.outputs.command>" in result.out
    assert "{}" not in result.out


# --- 4. a --junit path that cannot be written ----------------------------------------------------


@pytest.mark.parametrize("where", ["below a file", "a folder"])
def test_unwritable_junit_path_is_bad_input_before_anything_runs(cli: Cli, where: str) -> None:
    cli.write("afile", "not a folder\n")
    (cli.cwd / "afolder").mkdir()
    target = "afile/report.xml" if where == "below a file" else "afolder"
    cli.write("p.yml", "steps:\n  - {id: a, run: 'touch ran'}\n")
    result = cli("run", "p.yml", "--junit", target)
    assert result.code == 2, result
    assert str(cli.cwd / target) in result.err
    assert not (cli.cwd / "ran").exists()
    assert cli("runs", "--json").out.strip() == "[]"


def test_junit_in_a_new_folder_still_works(cli: Cli) -> None:
    cli.write("p.yml", "steps:\n  - {id: a, run: 'true'}\n")
    result = cli("run", "p.yml", "--junit", "new/deeper/report.xml")
    assert result.code == 0, result
    assert (cli.cwd / "new" / "deeper" / "report.xml").is_file()


# --- 5. runs --status ----------------------------------------------------------------------------


def test_runs_status_must_be_a_run_state(cli: Cli) -> None:
    cli.write("p.yml", "steps:\n  - {id: a, run: 'true'}\n")
    assert cli("run", "p.yml").code == 0
    bogus = cli("runs", "--status", "bogus")
    assert bogus.code == 2, bogus
    assert "bogus" in bogus.err
    for state in ("running", "success", "failed", "cancelled", "interrupted", "waiting"):
        assert state in bogus.err
    good = cli("runs", "--status", "success", "--json")
    assert good.code == 0 and len(json.loads(good.out)) == 1


# --- 6. steps that never ran have no start and no duration ---------------------------------------


def test_steps_that_never_started_have_no_start_or_duration(cli: Cli) -> None:
    cli.write(
        "p.yml",
        """
        steps:
          - {id: bad, run: 'exit 1'}
          - {id: after_bad, run: 'true'}
          - {id: never, needs: [], when: false, run: 'true'}
          - {id: ran, needs: [], run: 'true'}
        """,
    )
    assert cli("run", "p.yml").code == 1
    steps = by_step(cli)
    for name in ("after_bad", "never"):
        assert steps[name]["status"] == "skipped"
        assert steps[name]["started_at"] is None, steps[name]
        assert steps[name]["duration"] is None, steps[name]
        assert steps[name]["finished_at"]
    for name in ("bad", "ran"):
        assert steps[name]["started_at"] and steps[name]["duration"] is not None


def test_steps_cancelled_before_starting_have_no_start_or_duration(
    cli: Cli, procs: list[subprocess.Popen[str]]
) -> None:
    cli.write("p.yml", CLEANUP)
    proc = cli.popen("run", "p.yml", "-o", "plain")
    procs.append(proc)
    wait_for(lambda: (cli.cwd / "busy.started").exists(), "the busy step to start")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=DEADLINE_S) == 3
    steps = by_step(cli)
    for name in ("later", "plain"):
        assert steps[name]["status"] == "cancelled"
        assert steps[name]["started_at"] is None and steps[name]["duration"] is None
    assert steps["busy"]["started_at"] and steps["busy"]["duration"] is not None


# --- 7. --quiet with JSON ------------------------------------------------------------------------


def test_quiet_json_has_only_failures_and_the_end(cli: Cli) -> None:
    cli.write(
        "p.yml",
        """
        steps:
          - {id: ok, run: 'echo fine'}
          - {id: bad, needs: [], run: 'echo broken; exit 2'}
          - {id: skipped_one, needs: [bad], run: 'true'}
        """,
    )
    result = cli("run", "p.yml", "-o", "json", "--quiet")
    assert result.code == 1, result
    events = result.json_lines()
    assert [e["event"] for e in events] == ["log", "step_finished", "run_finished"]
    assert events[0]["step"] == "bad" and events[0]["text"] == "broken"
    assert events[1]["step"] == "bad" and events[1]["status"] == "failed"
    assert events[2]["status"] == "failed" and events[2]["exit_code"] == 1
    assert "fine" not in result.out


# --- 8. waiting runs have not ended; steering commands create nothing ----------------------------

GATED = """
steps:
  - {id: build, run: 'true'}
  - {id: gate, type: approval}
  - {id: deploy, run: 'true'}
"""


def test_a_waiting_run_has_no_end_time(cli: Cli) -> None:
    cli.write("p.yml", GATED)
    assert cli("run", "p.yml").code == 4
    run = cli.show()["run"]
    assert run["status"] == "waiting" and run["finished_at"] is None
    assert json.loads(cli("runs", "--json").out)[0]["finished_at"] is None
    assert cli("approve", "last", "gate").code == 0
    assert cli("resume", "last").code == 0
    run = cli.show()["run"]
    assert run["status"] == "success" and run["finished_at"] and run["duration"] is not None


@pytest.mark.parametrize("command", [["repair"], ["cancel", "1"], ["approve", "1", "gate"]])
def test_steering_commands_never_create_a_database_folder(
    cli: Cli, tmp_path: Path, command: list[str]
) -> None:
    missing = tmp_path / "no" / "such" / "state.db"
    result = cli(*command, "--db", str(missing))
    assert result.code == 2, result
    assert str(missing) in result.err
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize("command", [["repair"], ["cancel", "1"]])
def test_steering_commands_never_create_a_database_file(cli: Cli, command: list[str]) -> None:
    cli.db.parent.mkdir()
    result = cli(*command)
    assert result.code == (0 if command == ["repair"] else 2), result
    assert not cli.db.exists()


def test_run_still_creates_the_database_folder(cli: Cli, tmp_path: Path) -> None:
    cli.write("p.yml", "steps:\n  - {id: a, run: 'true'}\n")
    fresh = tmp_path / "new" / "dir" / "state.db"
    assert cli("run", "p.yml", "--db", str(fresh)).code == 0
    assert fresh.is_file()
