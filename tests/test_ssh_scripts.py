"""A script step on an SSH host is one exec: folder, script, outputs file, run, clean-up.

Against fresh real sshd servers (tests/ssh_fixtures.py), whose VERBOSE logs show every session
(`Starting session: command ...`) and SFTP subsystem start; each server has its own TMPDIR, so a
test can see what ansflow left there.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.clihelp import Cli
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
    assert not [p for p in Path("/proc").iterdir() if p.name.isdigit() and _cmdline_has(p, marker)]
    assert leftovers(server) == []


def _cmdline_has(proc: Path, text: str) -> bool:
    try:
        return text in (proc / "cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


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
