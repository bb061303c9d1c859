"""The truth under faults: crashes, signals, cancel, resume, approvals, locks, storage problems."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import subprocess
import time

import pytest

from tests.clihelp import Cli, alive, run_in_pty, wait_for

DEADLINE_S = 60.0


def unfinished(cli: Cli, run: str = "last") -> list[str]:
    return [k for k, v in cli.statuses(run).items() if v in ("pending", "running", "retrying")]


COUNTING = "n=$(( $(cat {name}.count 2>/dev/null || echo 0) + 1 )); echo $n > {name}.count"


def crash_pipeline(cli: Cli) -> None:
    cli.write(
        "p.yml",
        f"""
        steps:
          - {{id: first, run: '{COUNTING.format(name="first")}'}}
          - id: slow
            run: |
              {COUNTING.format(name="slow")}
              if [ "$(cat slow.count)" = 1 ]; then echo $$ > slow.pid; touch slow.started; sleep 300; fi
          - {{id: last, run: '{COUNTING.format(name="last")}'}}
        """,
    )


def test_kill_9_mid_step_then_show_says_interrupted_and_resume_finishes(
    cli: Cli, procs: list[subprocess.Popen[str]]
) -> None:
    crash_pipeline(cli)
    proc = cli.popen("run", "p.yml")
    procs.append(proc)
    wait_for(lambda: (cli.cwd / "slow.started").exists(), "the slow step to start")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    os.kill(int((cli.cwd / "slow.pid").read_text()), signal.SIGKILL)

    shown = cli.show()
    assert shown["run"]["status"] == "interrupted"
    statuses = {s["step"]: s["status"] for s in shown["steps"]}
    assert statuses == {"first": "success", "slow": "interrupted", "last": "interrupted"}
    assert all(s["finished_at"] for s in shown["steps"])
    assert unfinished(cli) == []

    resumed = cli("resume", "last")
    assert resumed.code == 0, resumed
    assert cli.statuses() == {"first": "success", "slow": "success", "last": "success"}
    assert (cli.cwd / "first.count").read_text().strip() == "1"
    assert (cli.cwd / "slow.count").read_text().strip() == "2"
    assert (cli.cwd / "last.count").read_text().strip() == "1"
    slow = {s["step"]: s for s in cli.show()["steps"]}["slow"]
    assert slow["attempts"] == 2
    runs = json.loads(cli("runs", "--json").out)
    assert len(runs) == 1 and runs[0]["status"] == "success"


def test_the_steps_a_killed_ansflow_left_are_stopped_when_its_run_is_closed(
    cli: Cli, procs: list[subprocess.Popen[str]]
) -> None:
    """kill -9 of ansflow leaves its step running; closing the run must stop it (and its child,
    which cleared its environment), or `resume` would run a second copy beside it."""
    cli.write(
        "p.yml",
        """
        steps:
          - id: slow
            run: |
              env -i sleep 301 & echo $! > child.pid
              echo $$ > slow.pid
              touch slow.started
              sleep 300
        """,
    )
    cli.write("other.yml", "steps:\n  - {id: wait, run: 'touch other.started; sleep 300'}\n")
    other = cli.popen("run", "other.yml")
    procs.append(other)
    wait_for(lambda: (cli.cwd / "other.started").exists(), "the other run")
    tmp = cli.cwd / "tmp"
    tmp.mkdir()
    own_tmp = {"TMPDIR": str(tmp)}
    proc = cli.popen("run", "p.yml", env=own_tmp)
    procs.append(proc)
    wait_for(lambda: (cli.cwd / "slow.started").exists(), "the slow step to start")
    step, child = (int((cli.cwd / f"{n}.pid").read_text()) for n in ("slow", "child"))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    try:
        assert alive(step) and alive(child)
        # The killed ansflow's private folder (the step's script) is still there...
        mine = f"ansflow-{proc.pid}-"
        assert len([p for p in tmp.iterdir() if p.name.startswith(mine)]) == 1
        result = cli("repair", env=own_tmp)
        assert result.code == 0, result
        assert "stopped 1 step process group(s) it left running" in result.out
        wait_for(lambda: not alive(step) and not alive(child), "the leftovers to be stopped", 10)
        # ...and goes with its run (the lock folder `ansflow-UID` stays).
        assert [p for p in tmp.iterdir() if p.name.startswith(mine)] == []
        assert cli.show("2")["run"]["status"] == "interrupted"
        # The other run's step belongs to a live ansflow: untouched.
        assert cli.statuses("1") == {"wait": "running"}
    finally:
        other.send_signal(signal.SIGTERM)
        assert other.wait(timeout=DEADLINE_S) == 3
        if alive(step):
            os.killpg(step, signal.SIGKILL)  # the step's group: its `sleep 300` too
        if alive(child):
            os.kill(child, signal.SIGKILL)


def test_repair_closes_dead_runs_and_leaves_live_ones(
    cli: Cli, procs: list[subprocess.Popen[str]]
) -> None:
    crash_pipeline(cli)
    cli.write("live.yml", "steps:\n  - {id: wait, run: 'touch live.started; sleep 300'}\n")
    live = cli.popen("run", "live.yml")
    procs.append(live)
    wait_for(lambda: (cli.cwd / "live.started").exists(), "the live run")
    dead = cli.popen("run", "p.yml")
    procs.append(dead)
    wait_for(lambda: (cli.cwd / "slow.started").exists(), "the slow step")
    dead.send_signal(signal.SIGKILL)
    dead.wait()
    os.kill(int((cli.cwd / "slow.pid").read_text()), signal.SIGKILL)

    # NOTE: raw SQL, not an ansflow command, so that nothing has repaired the dead run yet.
    with sqlite3.connect(cli.db) as db:
        assert db.execute("SELECT status FROM runs WHERE id = 2").fetchone()[0] == "running"
    result = cli("repair")
    assert result.code == 0, result
    assert "run 2 (p)" in result.out and "interrupted" in result.out
    assert "run 1" not in result.out
    assert cli.show("2")["run"]["status"] == "interrupted"
    assert cli.show("1")["run"]["status"] == "running"
    again = cli("repair")
    assert "nothing to repair" in again.out
    live.send_signal(signal.SIGTERM)
    assert live.wait(timeout=DEADLINE_S) == 3


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_cancels_cleanly_and_kills_children(
    cli: Cli, procs: list[subprocess.Popen[str]], sig: signal.Signals
) -> None:
    cli.write(
        "p.yml",
        """
        steps:
          - {id: done, run: 'true'}
          - id: busy
            run: |
              sleep 300 & echo $! > child.pid
              touch busy.started
              wait
          - {id: later, run: 'touch later.ran'}
          - {id: side, needs: [done], run: 'true'}
        """,
    )
    proc = cli.popen("run", "p.yml", "-o", "plain")
    procs.append(proc)
    wait_for(lambda: (cli.cwd / "busy.started").exists(), "the busy step")
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=DEADLINE_S)
    assert proc.returncode == 3, out
    assert not alive(int((cli.cwd / "child.pid").read_text()))
    assert not (cli.cwd / "later.ran").exists()
    statuses = cli.statuses()
    assert statuses["done"] == "success"
    assert statuses["busy"] == "cancelled"
    assert statuses["later"] == "cancelled"
    assert cli.show()["run"]["status"] == "cancelled"
    assert unfinished(cli) == []


def test_second_sigint_forces_the_stop(cli: Cli, procs: list[subprocess.Popen[str]]) -> None:
    cli.write(
        "p.yml",
        """
        steps:
          - id: stubborn
            run: |
              trap 'touch got.term' TERM
              echo $$ > stubborn.pid
              touch stubborn.started
              while true; do sleep 0.05 || true; done
        """,
    )
    proc = cli.popen("run", "p.yml", "-o", "plain")
    procs.append(proc)
    wait_for(lambda: (cli.cwd / "stubborn.started").exists(), "the stubborn step")
    stubborn = int((cli.cwd / "stubborn.pid").read_text())
    proc.send_signal(signal.SIGINT)
    # NOTE: two SIGINTs sent back to back may be merged into one by the kernel.
    wait_for(lambda: (cli.cwd / "got.term").exists(), "the first interrupt to reach the step")
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=DEADLINE_S)
    assert proc.returncode == 3
    assert cli.statuses() == {"stubborn": "cancelled"}
    assert "second interrupt" in cli.show()["steps"][0]["error"]
    # The step ignores SIGTERM; a forced stop must SIGKILL it before ansflow exits, since the
    # grace-period timer dies with ansflow. Killed means gone at once (init reaps it).
    try:
        wait_for(lambda: not alive(stubborn), "the stubborn step to be killed", timeout=10)
    finally:
        if alive(stubborn):
            os.kill(stubborn, signal.SIGKILL)


def test_ansflow_cancel_from_another_process(cli: Cli, procs: list[subprocess.Popen[str]]) -> None:
    cli.write(
        "p.yml",
        """
        steps:
          - {id: hang, run: 'sleep 300 & echo $! > child.pid; touch hang.started; wait'}
          - {id: never, run: 'true'}
        """,
    )
    proc = cli.popen("run", "p.yml")
    procs.append(proc)
    wait_for(lambda: (cli.cwd / "hang.started").exists(), "the step")
    result = cli("cancel", "last")
    assert result.code == 0, result
    assert "is cancelled" in result.out
    assert proc.wait(timeout=DEADLINE_S) == 3
    assert cli.statuses() == {"hang": "cancelled", "never": "cancelled"}
    assert not alive(int((cli.cwd / "child.pid").read_text()))
    not_running = cli("cancel", "last")
    assert not_running.code == 2 and "not running" in not_running.err


GATED = """
steps:
  - {id: build, run: 'true'}
  - {id: gate, type: approval, message: "Ship ${{ vars.what }}?"}
  - {id: deploy, run: 'touch deployed'}
  - {id: docs, needs: [build], run: 'touch docs.done'}
vars: {what: it}
"""


def test_approval_without_a_terminal_waits_then_approve_and_resume(cli: Cli) -> None:
    cli.write("p.yml", GATED)
    result = cli("run", "p.yml", "-o", "plain")
    assert result.code == 4, result
    assert "Ship it?" in result.out
    assert (cli.cwd / "docs.done").exists()
    assert not (cli.cwd / "deployed").exists()
    assert cli.statuses() == {
        "build": "success",
        "gate": "waiting",
        "deploy": "pending",
        "docs": "success",
    }
    assert cli.show()["run"]["status"] == "waiting"
    approved = cli("approve", "last", "gate", "--comment", "lgtm")
    assert approved.code == 0 and "resume" in approved.out
    with sqlite3.connect(cli.db) as db:
        user, comment, when = db.execute(
            "SELECT user, comment, decided_at FROM approvals WHERE step = 'gate'"
        ).fetchone()
    assert user and comment == "lgtm" and when
    resumed = cli("resume", "last")
    assert resumed.code == 0, resumed
    assert (cli.cwd / "deployed").exists()
    assert cli.statuses() == dict.fromkeys(["build", "gate", "deploy", "docs"], "success")


def test_reject_fails_the_gate_at_once(cli: Cli) -> None:
    cli.write("p.yml", GATED)
    assert cli("run", "p.yml").code == 4
    rejected = cli("reject", "last", "gate", "-m", "not today")
    assert rejected.code == 0, rejected
    shown = cli.show()
    assert shown["run"]["status"] == "failed"
    statuses = {s["step"]: s for s in shown["steps"]}
    assert statuses["gate"]["status"] == "failed"
    assert "not today" in statuses["gate"]["error"]
    assert statuses["deploy"]["status"] == "skipped"
    assert unfinished(cli) == []
    assert cli("approve", "last", "gate").code == 2


def test_approve_flag_and_all(cli: Cli) -> None:
    cli.write("p.yml", GATED)
    assert cli("run", "p.yml", "--approve", "gate").code == 0
    assert (cli.cwd / "deployed").exists()
    (cli.cwd / "deployed").unlink()
    assert cli("run", "p.yml", "--approve", "all").code == 0
    assert (cli.cwd / "deployed").exists()
    with sqlite3.connect(cli.db) as db:
        count = db.execute("SELECT count(*) FROM approvals WHERE decision = 'approved'").fetchone()
    assert count[0] == 2


def test_approvers_list_is_enforced(cli: Cli) -> None:
    cli.write(
        "p.yml",
        """
        steps:
          - {id: gate, type: approval, approvers: [somebody-else]}
          - {id: after, run: 'true'}
        """,
    )
    assert cli("run", "p.yml", "--approve", "gate").code == 4
    refused = cli("approve", "last", "gate")
    assert refused.code == 2 and "somebody-else" in refused.err
    # The approver is the OS user, not what $LOGNAME or $USER claim.
    disguised = {"LOGNAME": "somebody-else", "USER": "somebody-else"}
    assert cli("approve", "last", "gate", env=disguised).code == 2


def test_approval_while_the_run_is_still_going(
    cli: Cli, procs: list[subprocess.Popen[str]]
) -> None:
    cli.write(
        "p.yml",
        """
        steps:
          - {id: gate, type: approval}
          - {id: after_gate, run: 'touch after_gate.ran'}
          - {id: slow, needs: [], run: 'for i in $(seq 2000); do [ -e after_gate.ran ] && exit 0; sleep 0.025; done; exit 1'}
        """,
    )
    proc = cli.popen("run", "p.yml")
    procs.append(proc)
    wait_for(lambda: cli.db.exists() and cli.statuses().get("gate") == "waiting", "the gate")
    assert cli("approve", "last", "gate").code == 0
    assert proc.wait(timeout=DEADLINE_S) == 0
    assert cli.statuses() == {"gate": "success", "after_gate": "success", "slow": "success"}


@pytest.mark.parametrize(("answer", "code", "gate"), [("y\n", 0, "success"), ("n\n", 1, "failed")])
def test_terminal_prompt(cli: Cli, answer: str, code: int, gate: str) -> None:
    cli.write("p.yml", GATED)
    returncode, screen = run_in_pty(cli, ["run", "p.yml"], answer)
    assert "Ship it?" in screen
    assert returncode == code, screen
    assert cli.statuses()["gate"] == gate


def test_terminal_prompt_times_out(cli: Cli) -> None:
    cli.write(
        "p.yml",
        """
        steps:
          - {id: gate, type: approval, message: "Go?", timeout: 1}
          - {id: after, run: 'true'}
        """,
    )
    returncode, screen = run_in_pty(cli, ["run", "p.yml"], None)
    assert returncode == 1, screen
    assert cli.statuses() == {"gate": "timed_out", "after": "skipped"}


def test_lock_refuses_a_second_run_and_wait_lock_waits(
    cli: Cli, procs: list[subprocess.Popen[str]]
) -> None:
    cli.write(
        "p.yml",
        "steps:\n  - {id: hold, run: 'touch held; while [ ! -e release ]; do sleep 0.02; done'}\n",
    )
    first = cli.popen("run", "p.yml")
    procs.append(first)
    wait_for(lambda: (cli.cwd / "held").exists(), "the first run")
    second = cli("run", "p.yml")
    assert second.code == 5
    assert "run 1" in second.err and "--wait-lock" in second.err
    waiting = cli.popen("run", "p.yml", "--wait-lock")
    procs.append(waiting)
    time.sleep(0.3)  # NOTE: a negative check: nothing happens while the lock is held.
    assert waiting.poll() is None
    (cli.cwd / "release").touch()
    assert first.wait(timeout=DEADLINE_S) == 0
    assert waiting.wait(timeout=DEADLINE_S) == 0
    assert [r["status"] for r in json.loads(cli("runs", "--json").out)] == ["success"] * 2


def test_the_lock_is_the_files_through_a_symlink_and_with_another_db(
    cli: Cli, procs: list[subprocess.Popen[str]]
) -> None:
    cli.write(
        "p.yml",
        "steps:\n  - {id: hold, run: 'touch held; while [ ! -e release ]; do sleep 0.02; done'}\n",
    )
    (cli.cwd / "link.yml").symlink_to("p.yml")
    first = cli.popen("run", "p.yml")
    procs.append(first)
    wait_for(lambda: (cli.cwd / "held").exists(), "the first run")
    try:
        through_link = cli("run", "link.yml")
        assert through_link.code == 5, through_link
        other_db = cli("run", "p.yml", "--db", str(cli.cwd / "other" / "state.db"))
        assert other_db.code == 5, other_db
        assert "run 1" in other_db.err
    finally:
        (cli.cwd / "release").touch()
    assert first.wait(timeout=DEADLINE_S) == 0


def test_lock_is_released_when_the_process_dies(
    cli: Cli, procs: list[subprocess.Popen[str]]
) -> None:
    cli.write("p.yml", "steps:\n  - {id: hold, run: 'echo $$ > hold.pid; touch held; sleep 300'}\n")
    first = cli.popen("run", "p.yml")
    procs.append(first)
    wait_for(lambda: (cli.cwd / "held").exists(), "the first run")
    first.send_signal(signal.SIGKILL)
    first.wait()
    os.kill(int((cli.cwd / "hold.pid").read_text()), signal.SIGKILL)
    cli.write("p.yml", "steps:\n  - {id: hold, run: 'true'}\n")
    assert cli("run", "p.yml").code == 0


def test_twenty_concurrent_runs_on_one_database(
    cli: Cli, procs: list[subprocess.Popen[str]]
) -> None:
    for index in range(20):
        body = "\n".join(
            f"  - {{id: s{step}, run: 'for i in $(seq 20); do echo p{index}-s{step}-$i; done'}}"
            for step in range(5)
        )
        cli.write(f"p{index}.yml", f"steps:\n{body}\n")
    for index in range(20):
        procs.append(cli.popen("run", f"p{index}.yml", "-o", "json"))
    for proc in procs:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
        assert "locked" not in err
    runs = json.loads(cli("runs", "--json", "--limit", "100").out)
    assert len(runs) == 20 and {r["status"] for r in runs} == {"success"}
    with sqlite3.connect(cli.db) as db:
        assert db.execute("SELECT count(*) FROM logs").fetchone()[0] == 20 * 5 * 20
        assert (
            db.execute("SELECT count(*) FROM steps WHERE status = 'success'").fetchone()[0] == 100
        )


def test_database_that_is_a_folder(cli: Cli) -> None:
    cli.write("p.yml", "steps:\n  - {id: a, run: 'touch ran'}\n")
    folder = cli.cwd / "db-folder"
    folder.mkdir()
    result = cli("run", "p.yml", "--db", str(folder))
    assert result.code == 2
    assert str(folder) in result.err and "folder" in result.err
    assert not (cli.cwd / "ran").exists()
    assert cli("runs", "--db", str(folder)).code == 2


def test_corrupt_database_is_refused_and_never_touched(cli: Cli) -> None:
    cli.write("p.yml", "steps:\n  - {id: a, run: 'touch ran'}\n")
    bad = cli.cwd / "bad.db"
    junk = b"this is not a database\x00" * 100
    bad.write_bytes(junk)
    for args in (["run", "p.yml"], ["runs"], ["show", "last"], ["repair"], ["logs", "1"]):
        result = cli(*args, "--db", str(bad))
        assert result.code == 2, (args, result)
        assert str(bad) in result.err
    assert bad.read_bytes() == junk
    assert not (cli.cwd / "ran").exists()
    assert sorted(p.name for p in cli.cwd.iterdir() if p.name.startswith("bad")) == ["bad.db"]


def test_truncated_sqlite_file_is_refused(cli: Cli) -> None:
    cli.write("p.yml", "steps:\n  - {id: a, run: 'true'}\n")
    assert cli("run", "p.yml").code == 0
    with sqlite3.connect(cli.db) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = cli.db.read_bytes()
    broken = cli.cwd / "broken.db"
    broken.write_bytes(data[:100] + b"\xff" * (len(data) - 100))
    result = cli("runs", "--db", str(broken))
    assert result.code == 2 and str(broken) in result.err


def test_a_damaged_page_behind_a_valid_header_is_never_written(cli: Cli) -> None:
    cli.write("p.yml", "steps:\n  - {id: a, run: 'for i in $(seq 300); do echo line-$i; done'}\n")
    for _ in range(4):
        assert cli("run", "p.yml").code == 0
    with sqlite3.connect(cli.db) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
    data = bytearray(cli.db.read_bytes())
    assert len(data) > 8 * page_size
    data[7 * page_size : 8 * page_size] = b"\xa5" * page_size
    damaged = cli.cwd / "damaged.db"
    damaged.write_bytes(bytes(data))
    for args in (["run", "p.yml"], ["repair"]):
        result = cli(*args, "--db", str(damaged))
        assert result.code == 2, (args, result)
        assert str(damaged) in result.err and "corrupt" in result.err
        assert "Traceback" not in result.err
    assert damaged.read_bytes() == bytes(data)
    assert sorted(p.name for p in cli.cwd.iterdir() if p.name.startswith("damaged")) == [
        "damaged.db"
    ]


def _in_shell(cli: Cli, wrapper: list[str], script: str) -> subprocess.CompletedProcess[str]:
    """Run ansflow commands under `wrapper` (capsh, unshare), as a user would in a shell."""
    return subprocess.run(
        [*wrapper, "sh", "-c", script] if wrapper[0] != "capsh" else [*wrapper, "--", "-c", script],
        cwd=cli.cwd,
        env=cli.env,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
    )


def _ansflow(cli: Cli, *args: str) -> str:
    import shlex

    return shlex.join(cli.command(*args))


def test_read_only_database_file(cli: Cli) -> None:
    """chmod 444, and root's permission override dropped with capsh, as for a normal user."""
    import shutil

    if shutil.which("capsh") is None:
        pytest.skip("capsh is not installed")
    cli.write("p.yml", "steps:\n  - {id: a, run: 'echo hi'}\n")
    assert cli("run", "p.yml").code == 0
    cli.db.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    script = (
        f"{_ansflow(cli, 'show', 'last')}; echo show=$?; "
        f"{_ansflow(cli, 'runs')}; echo runs=$?; "
        f"{_ansflow(cli, 'run', 'p.yml')}; echo run=$?"
    )
    result = _in_shell(cli, ["capsh", "--drop=cap_dac_override,cap_dac_read_search"], script)
    assert "show=0" in result.stdout and "success" in result.stdout, result
    assert "runs=0" in result.stdout
    assert "run=2" in result.stdout
    assert str(cli.db) in result.stderr and "read-only" in result.stderr
    assert "Traceback" not in result.stderr


def test_read_only_file_system(cli: Cli) -> None:
    """A read-only bind mount in a private mount namespace (unshare), like a read-only medium."""
    import shutil

    probe = (
        subprocess.run(["unshare", "-rm", "true"], capture_output=True)
        if shutil.which("unshare")
        else None
    )
    if probe is None or probe.returncode != 0:
        pytest.skip("unprivileged mount namespaces are not available")
    cli.write("p.yml", "steps:\n  - {id: a, run: 'echo hi'}\n")
    assert cli("run", "p.yml").code == 0
    folder = cli.db.parent
    script = (
        f"mount --bind {folder} {folder} && mount -o remount,bind,ro {folder} && "
        f"{_ansflow(cli, 'show', 'last')}; echo show=$?; "
        f"{_ansflow(cli, 'logs', 'last')}; echo logs=$?; "
        f"{_ansflow(cli, 'run', 'p.yml')}; echo run=$?"
    )
    result = _in_shell(cli, ["unshare", "-rm"], script)
    assert "show=0" in result.stdout and "success" in result.stdout, result
    assert "logs=0" in result.stdout and "hi" in result.stdout
    assert "run=2" in result.stdout
    assert "read-only" in result.stderr and "Traceback" not in result.stderr


def test_database_below_a_file(cli: Cli) -> None:
    cli.write("p.yml", "steps:\n  - {id: a, run: 'touch ran'}\n")
    blocker = cli.cwd / "not-a-folder"
    blocker.write_text("x")
    result = cli("run", "p.yml", "--db", str(blocker / "state.db"))
    assert result.code == 2
    assert str(blocker / "state.db") in result.err
    assert not (cli.cwd / "ran").exists()


def test_resume_says_when_the_file_changed(cli: Cli) -> None:
    cli.write("p.yml", "steps:\n  - {id: a, run: 'exit 1'}\n")
    assert cli("run", "p.yml").code == 1
    cli.write("p.yml", "steps:\n  - {id: a, run: 'exit 0'}\n")
    resumed = cli("resume", "last")
    assert "has changed" in resumed.err
    assert resumed.code == 1  # the stored pipeline runs, not the edited file
    assert cli("resume", "99").code == 2
    cli.write("q.yml", "steps:\n  - {id: a, run: 'true'}\n")
    assert cli("run", "q.yml").code == 0
    done = cli("resume", "last")
    assert done.code == 2 and "success" in done.err


def test_a_run_id_too_big_for_sqlite_is_bad_input(cli: Cli) -> None:
    cli.write("p.yml", "steps:\n  - {id: a, run: 'true'}\n")
    assert cli("run", "p.yml").code == 0
    for command in ("show", "resume", "logs"):
        result = cli(command, "99999999999999999999")
        assert result.code == 2, (command, result)
        assert "Traceback" not in result.err and "internal error" not in result.err
