"""A script step on an SSH host is one exec: folder, script, outputs file, run, clean-up.

Against fresh real sshd servers (tests/ssh_fixtures.py), whose VERBOSE logs show every session
(`Starting session: command ...`) and SFTP subsystem start; each server has its own TMPDIR, so a
test can see what ansflow left there.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.clihelp import Cli, alive, marker_procs, wait_for
from tests.ssh_fixtures import SSHFixture, SSHServer, target_block

pytestmark = pytest.mark.ssh


def sessions(server: SSHServer) -> int:
    return server.log_text().count("Starting session: command")


def sftp_sessions(server: SSHServer) -> int:
    return server.log_text().count("Starting session: subsystem 'sftp'")


def leftovers(server: SSHServer) -> list[str]:
    return sorted(p.name for p in server.remote_tmp.iterdir())


def logs(cli: Cli, step: str) -> str:
    result = cli("logs", "last", step)
    assert result.code == 0, str(result)
    return result.out


def test_script_steps_without_outputs_need_one_exec_each_and_no_sftp(
    cli: Cli, sshd_hosts: SSHFixture
) -> None:
    [server] = sshd_hosts(1)
    cli.write(
        "p.yml",
        target_block(sshd_hosts, ["host0"])
        + """
steps:
  - {id: one, on: fleet, run: 'echo first'}
  - {id: two, on: fleet, run: "printf 'no newline at the end'"}
  - {id: three, on: fleet, shell: sh, run: 'echo "in $(pwd)"; echo to stderr >&2'}
""",
    )
    before = sessions(server)
    result = cli("run", "p.yml", "--output", "plain")
    assert result.code == 0, str(result)
    assert sessions(server) - before == 3
    assert sftp_sessions(server) == 0
    assert leftovers(server) == []
    assert logs(cli, "one").strip().endswith("first")
    two = logs(cli, "two")
    assert "no newline at the end" in two and "ansflow-done" not in two
    three = logs(cli, "three")
    assert "to stderr" in three and "ansflow-done" not in three


def test_outputs_come_back_and_their_folder_goes_at_the_end(
    cli: Cli, sshd_hosts: SSHFixture
) -> None:
    [server] = sshd_hosts(1)
    cli.write(
        "p.yml",
        target_block(sshd_hosts, ["host0"])
        + """
steps:
  - id: make
    on: fleet
    run: |
      echo "version=1.2.3" >> "$ANSFLOW_OUTPUT"
      printf 'notes<<EOF\\nline one\\nline two\\nEOF\\n' >> "$ANSFLOW_OUTPUT"
      stat -c %a "$(dirname "$ANSFLOW_OUTPUT")" > /dev/stderr
  - id: use
    run: 'echo "got ${{ steps.make.outputs.version }} / ${{ steps.make.outputs.notes }}"'
""",
    )
    result = cli("run", "p.yml", "--output", "plain")
    assert result.code == 0, str(result)
    assert "got 1.2.3 / line one" in logs(cli, "use")
    assert "700" in logs(cli, "make")  # the step's folder is private
    outputs = {s["step"]: s["outputs"] for s in cli.show()["steps"]}
    assert outputs["make"] == {"version": "1.2.3", "notes": "line one\nline two"}
    assert sftp_sessions(server) == 1
    assert leftovers(server) == []


def test_a_timed_out_script_leaves_no_process_and_no_folder(
    cli: Cli, sshd_hosts: SSHFixture
) -> None:
    [server] = sshd_hosts(1)
    marker = f"ansflow-script-{os.urandom(4).hex()}"
    cli.write(
        "p.yml",
        target_block(sshd_hosts, ["host0"])
        + f"""
steps:
  - id: slow
    on: fleet
    timeout: 1s
    run: 'echo started; exec -a {marker} sleep 60'
""",
    )
    result = cli("run", "p.yml", "--output", "plain")
    assert result.code == 1, str(result)
    [step] = cli.show()["steps"]
    assert step["status"] == "timed_out"
    assert not marker_procs(marker)
    assert leftovers(server) == []


def test_a_big_script_a_secret_in_it_and_a_missing_workdir(
    cli: Cli, sshd_hosts: SSHFixture, tmp_path: Path
) -> None:
    [server] = sshd_hosts(1)
    seen = tmp_path / "seen"
    # More than a pipe holds (64 KiB): the host reads the script while ansflow still sends it.
    filler = "".join(f"      # filler line {i:06d} {'x' * 60}\n" for i in range(2000))
    cli.write(
        "p.yml",
        target_block(sshd_hosts, ["host0"])
        + "secrets: [TOKEN]\n"
        + "steps:\n"
        + "  - id: big\n"
        + "    on: fleet\n"
        + "    run: |\n"
        + '      echo "token ${{ secrets.TOKEN }}" > /dev/null\n'
        + filler
        + f"      ps -eo args > {seen}\n"
        + "      echo big done\n"
        + "  - {id: nowhere, on: fleet, needs: [], workdir: /no/such/folder/here, run: 'echo never'}\n",
    )
    token = "tok-" + os.urandom(6).hex()
    result = cli("run", "p.yml", "--output", "plain", env={"TOKEN": token})
    assert result.code == 1, str(result)
    steps = {s["step"]: s for s in cli.show()["steps"]}
    assert steps["big"]["status"] == "success", steps["big"]
    assert "big done" in logs(cli, "big")
    assert "ps -eo args" in seen.read_text()
    assert token not in seen.read_text()  # on no command line while the script ran
    assert steps["nowhere"]["status"] == "failed"
    assert steps["nowhere"]["exit_code"] == 1
    assert "/no/such/folder/here" in logs(cli, "nowhere")
    assert leftovers(server) == []


def test_a_host_without_its_temporary_folder_is_named_with_the_reason(
    cli: Cli, sshd_hosts: SSHFixture
) -> None:
    [server] = sshd_hosts(1)
    cli.write(
        "p.yml",
        target_block(sshd_hosts, ["host0"]) + "steps:\n  - {id: s, on: fleet, run: 'echo hi'}\n",
    )
    hidden = server.remote_tmp.with_name("tmp-hidden")
    server.remote_tmp.rename(hidden)
    try:
        result = cli("run", "p.yml", "--output", "plain")
    finally:
        hidden.rename(server.remote_tmp)
    assert result.code == 1, str(result)
    [step] = cli.show()["steps"]
    assert step["status"] == "failed"
    assert step["error"].startswith(
        f"cannot create a temporary folder on host host0 (127.0.0.1:{server.port}): "
    )
    assert "mktemp" in step["error"], step["error"]


# -- when ansflow goes away -----------------------------------------------------------------------


@pytest.mark.parametrize("how", ["script", "command"])
def test_steps_on_a_host_stop_when_ansflow_is_killed(
    cli: Cli, sshd_hosts: SSHFixture, tmp_path: Path, how: str
) -> None:
    sshd_hosts(1)
    marker = f"ansflow-orphan-{os.urandom(4).hex()}"
    started = tmp_path / "started"
    # A script step, and notify's `command`, which runs through the plain command wrapper.
    step = (
        f"{{id: s, on: fleet, run: 'touch {started}; exec -a {marker} sleep 300'}}"
        if how == "script"
        else f"{{id: s, type: notify, on: fleet, command: 'touch {started}; "
        f"exec -a {marker} sleep 300'}}"
    )
    cli.write("p.yml", target_block(sshd_hosts, ["host0"]) + f"steps:\n  - {step}\n")
    proc = cli.popen("run", "p.yml", "-o", "plain")
    try:
        wait_for(started.exists, "the step to start on host0")
        wait_for(lambda: marker_procs(marker), "its sleep")
        proc.kill()
        proc.wait(timeout=30)
        # sshd sees the connection close; the step's process group on the host goes with it.
        wait_for(lambda: not marker_procs(marker), "the host's processes to stop", timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in marker_procs(marker):
            os.kill(pid, 9)


def test_what_a_finished_step_started_in_the_background_keeps_running(
    cli: Cli, sshd_hosts: SSHFixture
) -> None:
    sshd_hosts(1)
    marker = f"ansflow-daemon-{os.urandom(4).hex()}"
    cli.write(
        "p.yml",
        target_block(sshd_hosts, ["host0"])
        + f'steps:\n  - {{id: s, on: fleet, run: \'nohup bash -c "exec -a {marker} sleep 300"'
        " >/dev/null 2>&1 &'}\n",
    )
    try:
        result = cli("run", "p.yml", "-o", "plain")
        assert result.code == 0, str(result)
        # A deploy's `nohup server &` outlives the step, as with ssh or Ansible.
        assert marker_procs(marker)
    finally:
        for pid in marker_procs(marker):
            os.kill(pid, 9)


def _parent(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    return 0


def test_a_lost_connection_stops_the_attempt_before_its_retry(
    cli: Cli, sshd_hosts: SSHFixture, tmp_path: Path
) -> None:
    sshd_hosts(1)
    marker = f"ansflow-lost-{os.urandom(4).hex()}"
    first = tmp_path / "first"
    cli.write(
        "p.yml",
        target_block(sshd_hosts, ["host0"])
        + f"""
steps:
  - id: s
    on: fleet
    retries: 1
    retry_delay: 0.5s
    run: |
      if [ ! -e {first} ]; then touch {first}; exec -a {marker} sleep 300; fi
      ps -eo pid,args > {tmp_path}/seen-by-the-retry
      echo second attempt
""",
    )
    proc = cli.popen("run", "p.yml", "-o", "plain")
    try:
        wait_for(lambda: marker_procs(marker), "the first attempt's sleep")
        [pid] = marker_procs(marker)
        session = pid
        while session > 1 and Path(f"/proc/{session}/comm").read_text().strip() != "sshd":
            session = _parent(session)
        assert session > 1, "no sshd above the step"
        os.kill(session, 9)  # the host side of the connection dies; the host itself lives
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for left in marker_procs(marker):
            os.kill(left, 9)
    assert proc.returncode == 0, out
    assert "second attempt" in logs(cli, "s")
    # The first attempt was stopped before the retry started, not merely at some point.
    assert marker not in (tmp_path / "seen-by-the-retry").read_text()
    assert not alive(pid)
