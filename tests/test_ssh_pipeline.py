"""Pipelines on SSH fleets, end to end: `ansflow run` against real sshd servers on 127.0.0.1.

The servers run on this machine as this user, so what a remote command writes to an absolute path
is visible to the test directly; that is how order and overlap are proven.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from tests.clihelp import Cli, marker_procs, wait_for
from tests.ssh_fixtures import SSHFixture, target_block

pytestmark = pytest.mark.ssh


def test_a_step_on_three_hosts_has_a_row_output_and_outputs_per_host(
    cli: Cli, sshd_hosts_session: SSHFixture
) -> None:
    sshd_hosts_session(3)
    cli.write(
        "p.yml",
        target_block(sshd_hosts_session, ["host0", "host1", "host2"])
        + """
steps:
  - id: hello
    on: fleet
    run: |
      echo "hello from $ANSFLOW_HOST as ${{ host.name }}"
      echo "who=$ANSFLOW_HOST" >> "$ANSFLOW_OUTPUT"
      echo "same=yes" >> "$ANSFLOW_OUTPUT"
      echo oops >&2
  - id: after
    run: |
      echo "${{ steps.hello.hosts.host1.outputs.who }} ${{ steps.hello.outputs.same }}" > after.txt
""",
    )
    result = cli("run", "p.yml", "-o", "json")
    assert result.code == 0, result
    shown = cli.show()
    rows = {(s["step"], s["host"]): s for s in shown["steps"]}
    assert set(rows) == {
        ("hello", "host0"),
        ("hello", "host1"),
        ("hello", "host2"),
        ("after", None),
    }
    for host in ("host0", "host1", "host2"):
        row = rows[("hello", host)]
        assert row["status"] == "success" and row["exit_code"] == 0
        assert row["outputs"]["who"] == host
        logs = cli("logs", "last", "hello", "--host", host).out
        assert f"hello from {host} as {host}" in logs
        assert "oops" in logs
        assert all(f"hello@{host}" in line for line in logs.splitlines())
    assert (cli.cwd / "after.txt").read_text().strip() == "host1 yes"
    events = result.json_lines()
    assert {e["host"] for e in events if e["event"] == "log" and e["step"] == "hello"} == {
        "host0",
        "host1",
        "host2",
    }


def test_outputs_that_differ_between_hosts_are_an_error_when_read_as_one(
    cli: Cli, sshd_hosts_session: SSHFixture
) -> None:
    sshd_hosts_session(2)
    cli.write(
        "p.yml",
        target_block(sshd_hosts_session, ["host0", "host1"])
        + """
steps:
  - {id: who, on: fleet, run: 'echo "name=$ANSFLOW_HOST" >> "$ANSFLOW_OUTPUT"'}
  - {id: read, run: 'echo ${{ steps.who.outputs.name }}'}
""",
    )
    result = cli("run", "p.yml")
    assert result.code == 1
    error = {s["step"]: s for s in cli.show()["steps"] if s["step"] == "read"}["read"]["error"]
    assert "differs between hosts" in error and "steps.who.hosts.<name>.outputs.name" in error


def test_serial_one_runs_hosts_one_batch_at_a_time(
    cli: Cli, sshd_hosts_session: SSHFixture, tmp_path: Path
) -> None:
    sshd_hosts_session(3)
    stamps = tmp_path / "stamps"
    stamps.mkdir()
    cli.write(
        "p.yml",
        target_block(sshd_hosts_session, ["host0", "host1", "host2"])
        + f"""
steps:
  - id: rolling
    on: fleet
    serial: 1
    run: |
      date +%s.%N > {stamps}/$ANSFLOW_HOST.start
      sleep 0.2
      date +%s.%N > {stamps}/$ANSFLOW_HOST.end
""",
    )
    assert cli("run", "p.yml").code == 0
    spans = sorted(
        (
            float((stamps / f"host{i}.start").read_text()),
            float((stamps / f"host{i}.end").read_text()),
        )
        for i in range(3)
    )
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start, spans


def test_serial_stops_at_the_first_failing_batch(cli: Cli, sshd_hosts_session: SSHFixture) -> None:
    sshd_hosts_session(3)
    cli.write(
        "p.yml",
        target_block(sshd_hosts_session, ["host0", "host1", "host2"])
        + """
steps:
  - id: rolling
    on: fleet
    serial: 1
    run: '[ "$ANSFLOW_HOST" != host1 ]'
""",
    )
    assert cli("run", "p.yml").code == 1
    assert cli.statuses() == {
        "rolling@host0": "success",
        "rolling@host1": "failed",
        "rolling@host2": "skipped",
    }


def test_forks_bound_hosts_at_once(
    cli: Cli, sshd_hosts_session: SSHFixture, tmp_path: Path
) -> None:
    sshd_hosts_session(4)
    probe = tmp_path / "probe"
    probe.mkdir()
    cli.write(
        "p.yml",
        target_block(sshd_hosts_session, ["host0", "host1", "host2", "host3"], forks=2)
        + f"""
steps:
  - id: fan
    on: fleet
    run: |
      cd {probe}
      ( flock 9; n=$(( $(cat count 2>/dev/null || echo 0) + 1 )); echo $n > count; echo $n >> seen ) 9>lock
      sleep 0.3
      ( flock 9; n=$(( $(cat count) - 1 )); echo $n > count ) 9>lock
""",
    )
    assert cli("run", "p.yml").code == 0
    seen = [int(x) for x in (probe / "seen").read_text().split()]
    assert len(seen) == 4 and max(seen) == 2


def test_one_connection_per_host_per_run(cli: Cli, sshd_hosts: SSHFixture) -> None:
    servers = sshd_hosts(2)
    steps = "\n".join(f"  - {{id: s{i}, on: fleet, run: 'echo {i}'}}" for i in range(5))
    cli.write("p.yml", target_block(sshd_hosts, ["host0", "host1"]) + "steps:\n" + steps + "\n")
    assert cli("run", "p.yml").code == 0
    assert [server.connection_count() for server in servers] == [1, 1]
    assert cli("run", "p.yml").code == 0
    assert [server.connection_count() for server in servers] == [2, 2]


def test_two_targets_over_the_same_hosts_share_one_connection_per_host(
    cli: Cli, sshd_hosts: SSHFixture
) -> None:
    servers = sshd_hosts(2)
    both = target_block(sshd_hosts, ["host0", "host1"])
    first = target_block(sshd_hosts, ["host0"]).replace("targets:\n  fleet:", "  first:")
    cli.write(
        "p.yml",
        both
        + first
        + "steps:\n  - {id: a, on: fleet, run: 'echo a'}\n  - {id: b, on: first, run: 'echo b'}\n",
    )
    assert cli("run", "p.yml").code == 0
    assert [server.connection_count() for server in servers] == [1, 1]


def test_relative_ssh_files_are_the_pipelines_not_the_current_folders(
    cli: Cli, sshd_hosts: SSHFixture
) -> None:
    sshd_hosts(1)
    (cli.cwd / "sub").mkdir()
    for source in (sshd_hosts.ssh_config_path, sshd_hosts.known_hosts_path):
        (cli.cwd / "sub" / Path(source).name).write_bytes(Path(source).read_bytes())
    block = target_block(sshd_hosts, ["host0"])
    block = block.replace(str(sshd_hosts.ssh_config_path), Path(sshd_hosts.ssh_config_path).name)
    block = block.replace(str(sshd_hosts.known_hosts_path), Path(sshd_hosts.known_hosts_path).name)
    cli.write("sub/p.yml", block + "steps:\n  - {id: a, on: fleet, run: 'echo ok'}\n")
    result = cli("run", "sub/p.yml")
    assert result.code == 0, result


def test_proxy_jump_through_a_fixture_host(cli: Cli, sshd_hosts: SSHFixture) -> None:
    (jump,) = sshd_hosts(1)
    (target,) = sshd_hosts(1, proxy_jump="host0")
    cli.write(
        "p.yml",
        target_block(sshd_hosts, ["host1"])
        + "steps:\n  - {id: via, on: fleet, run: 'echo through the jump host'}\n",
    )
    result = cli("run", "p.yml")
    assert result.code == 0, result
    assert "through the jump host" in cli("logs", "last").out
    assert jump.connection_count() == 1
    assert target.connection_count() == 1
    assert "127.0.0.1" in target.log_text()


def test_known_hosts_policies(cli: Cli, sshd_hosts: SSHFixture, tmp_path: Path) -> None:
    (server,) = sshd_hosts(1)
    empty = tmp_path / "known_hosts_empty"
    empty.write_text("")
    address = f"{sshd_hosts.user}@127.0.0.1:{server.port}"

    def pipeline(policy: str) -> str:
        return (
            "targets:\n  fleet:\n    type: ssh\n"
            f"    hosts: [{json.dumps(address)}]\n"
            f"    identity_file: {sshd_hosts.client_key_path}\n"
            f"    known_hosts_file: {empty}\n"
            f"    known_hosts: {policy}\n"
            "    ssh_config: ''\n"
            "steps:\n  - {id: a, on: fleet, run: 'true'}\n"
        )

    cli.write("strict.yml", pipeline("strict"))
    assert cli("run", "strict.yml").code == 1
    error = cli.show()["steps"][0]["error"]
    assert server.host_key_fingerprint in error and "not known" in error
    assert empty.read_text() == ""

    cli.write("off.yml", pipeline("off"))
    assert cli("run", "off.yml").code == 0
    assert empty.read_text() == ""

    cli.write("new.yml", pipeline("accept-new"))
    assert cli("run", "new.yml").code == 0
    assert f"[127.0.0.1]:{server.port}" in empty.read_text()
    assert cli("run", "strict.yml").code == 0  # now known

    other_key = sshd_hosts.other_key_path.with_suffix(".pub").read_text().split()
    empty.write_text(f"[127.0.0.1]:{server.port} {other_key[0]} {other_key[1]}\n")
    for name in ("strict.yml", "new.yml"):
        assert cli("run", name).code == 1
        changed = cli.show()["steps"][0]["error"]
        assert "changed" in changed.lower() or "does not match" in changed.lower(), changed


def test_timeout_kills_the_remote_process_group(
    cli: Cli, sshd_hosts_session: SSHFixture, tmp_path: Path
) -> None:
    sshd_hosts_session(1)
    marker = f"sleep {1000 + os.getpid() % 1000}.{os.getpid()}"
    cli.write(
        "p.yml",
        target_block(sshd_hosts_session, ["host0"])
        + f"""
steps:
  - id: hang
    on: fleet
    timeout: 1
    run: |
      {marker} &
      {marker}
""",
    )
    assert cli("run", "p.yml").code == 1
    assert cli.statuses() == {"hang@host0": "timed_out"}
    wait_for(lambda: not marker_procs(marker), "the remote sleeps to be gone", timeout=15)


def test_sigint_cancels_remote_steps(
    cli: Cli, sshd_hosts_session: SSHFixture, tmp_path: Path
) -> None:
    sshd_hosts_session(2)
    marker = f"sleep 2{os.getpid()}"
    flag = tmp_path / "started"
    cli.write(
        "p.yml",
        target_block(sshd_hosts_session, ["host0", "host1"])
        + f"""
steps:
  - id: hang
    on: fleet
    run: |
      touch {flag}.$ANSFLOW_HOST
      {marker}
""",
    )
    proc = cli.popen("run", "p.yml")
    try:
        wait_for(
            lambda: Path(f"{flag}.host0").exists() and Path(f"{flag}.host1").exists(),
            "both hosts to start",
        )
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 3
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert cli.statuses() == {"hang@host0": "cancelled", "hang@host1": "cancelled"}
    wait_for(lambda: not marker_procs(marker), "the remote sleeps to be gone", timeout=15)


def test_deploy_uploads_files_with_mode_over_sftp(
    cli: Cli, sshd_hosts_session: SSHFixture, tmp_path: Path
) -> None:
    sshd_hosts_session(2)
    (cli.cwd / "dist").mkdir()
    (cli.cwd / "dist" / "app.tar").write_bytes(b"\x00binary\xffpayload" * 100)
    (cli.cwd / "dist" / "notes.txt").write_text("notes\n")
    dest = tmp_path / "remote"
    cli.write(
        "p.yml",
        target_block(sshd_hosts_session, ["host0", "host1"])
        + f"""
steps:
  - id: ship
    type: deploy
    on: fleet
    files:
      - {{src: "dist/*", dest: "{dest}/$HOST_PLACEHOLDER/", mode: "0640"}}
    run: ls {dest}/$HOST_PLACEHOLDER > {dest}/listing-$ANSFLOW_HOST
""".replace("$HOST_PLACEHOLDER", "${{ host.name }}"),
    )
    result = cli("run", "p.yml")
    assert result.code == 0, result
    for host in ("host0", "host1"):
        folder = dest / host
        assert (folder / "app.tar").read_bytes() == b"\x00binary\xffpayload" * 100
        assert (folder / "notes.txt").read_text() == "notes\n"
        assert oct((folder / "app.tar").stat().st_mode & 0o777) == oct(0o640)
        assert (dest / f"listing-{host}").read_text().split() == ["app.tar", "notes.txt"]
    details = {s["host"]: s["details"] for s in cli.show()["steps"]}
    assert len(details["host0"]["files"]) == 2


def test_build_and_test_steps_on_a_host(
    cli: Cli, sshd_hosts_session: SSHFixture, tmp_path: Path
) -> None:
    sshd_hosts_session(1)
    work = tmp_path / "work"
    work.mkdir()
    cli.write(
        "p.yml",
        target_block(sshd_hosts_session, ["host0"])
        + f"""
steps:
  - id: build
    type: build
    on: fleet
    workdir: {work}
    run: mkdir -p out && printf 'artifact' > out/app.bin
    artifacts: [out/*.bin]
  - id: test
    type: test
    on: fleet
    workdir: {work}
    run: |
      cat > junit.xml <<'EOF'
      <testsuite name="s"><testcase name="a"/><testcase name="b"><failure message="no"/></testcase></testsuite>
      EOF
    junit: junit.xml
""",
    )
    assert cli("run", "p.yml").code == 1
    steps = {s["step"]: s for s in cli.show()["steps"]}
    artifact = steps["build"]["details"]["artifacts"][0]
    import hashlib

    assert artifact["size"] == 8
    assert artifact["sha256"] == hashlib.sha256(b"artifact").hexdigest()
    assert steps["test"]["details"]["tests"]["failures"] == 1
    assert steps["test"]["status"] == "failed"


def _inventory_pipeline(fixture: SSHFixture, inventory: str) -> str:
    return (
        f"inventory: {inventory}\n"
        "targets:\n  fleet:\n    type: ssh\n    hosts: [web]\n"
        f"    identity_file: {fixture.client_key_path}\n"
        f"    known_hosts_file: {fixture.known_hosts_path}\n"
        "    ssh_config: ''\n"
        "steps:\n  - {id: a, on: fleet, run: 'echo ${{ host.vars.role }} $ANSFLOW_HOST'}\n"
    )


@pytest.mark.parametrize("kind", ["ini", "yaml"])
def test_inventories(cli: Cli, sshd_hosts_session: SSHFixture, kind: str) -> None:
    servers = sshd_hosts_session(2)
    user = sshd_hosts_session.user
    if kind == "ini":
        lines = ["[web]"]
        lines += [
            f"w{i} ansible_host=127.0.0.1 ansible_port={s.port} ansible_user={user}"
            for i, s in enumerate(servers)
        ]
        lines += ["[web:vars]", "role=frontend"]
        cli.write("hosts.ini", "\n".join(lines) + "\n")
        name = "hosts.ini"
    else:
        hosts = {
            f"w{i}": {"ansible_host": "127.0.0.1", "ansible_port": s.port, "ansible_user": user}
            for i, s in enumerate(servers)
        }
        cli.write(
            "hosts.yml",
            json.dumps(
                {"all": {"children": {"web": {"hosts": hosts, "vars": {"role": "frontend"}}}}}
            ),
        )
        name = "hosts.yml"
    cli.write("p.yml", _inventory_pipeline(sshd_hosts_session, name))
    result = cli("run", "p.yml")
    assert result.code == 0, result
    assert cli.statuses() == {"a@w0": "success", "a@w1": "success"}
    logs = cli("logs", "last").out
    assert "frontend w0" in logs and "frontend w1" in logs


def test_targets_check(cli: Cli, sshd_hosts: SSHFixture) -> None:
    servers = sshd_hosts(2)
    cli.write(
        "p.yml",
        target_block(sshd_hosts, ["host0", "host1"])
        + "steps:\n  - {id: a, on: fleet, run: 'true'}\n",
    )
    ok = cli("targets", "check", "p.yml", "--json")
    assert ok.code == 0, ok
    checks = json.loads(ok.out)
    assert [c["what"] for c in checks] == ["host host0", "host host1"]
    assert all(c["ok"] and c["round_trip_ms"] is not None for c in checks)
    table = cli("targets", "check", "p.yml")
    assert table.code == 0 and "host0" in table.out and "2 ok, 0 failed" in table.out
    servers[1].kill()
    failed = cli("targets", "check", "p.yml")
    assert failed.code == 1
    assert "host1" in failed.out and "FAILED" in failed.out


FAULTS = {
    "refused": "{user}@127.0.0.1:{closed}",
    "dns": "{user}@nonexistent-host.invalid:22",
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_unreachable_hosts_fail_with_a_clear_message(
    cli: Cli, sshd_hosts: SSHFixture, fault: str
) -> None:
    import socket

    sshd_hosts(1)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    address = FAULTS[fault].format(user=sshd_hosts.user, closed=closed)
    cli.write(
        "p.yml",
        "targets:\n  fleet:\n    type: ssh\n"
        f"    hosts: [{json.dumps(address)}]\n"
        f"    identity_file: {sshd_hosts.client_key_path}\n"
        f"    known_hosts_file: {sshd_hosts.known_hosts_path}\n"
        "    connect_timeout: 5\n"
        "    ssh_config: ''\n"
        "steps:\n  - {id: a, on: fleet, run: 'true'}\n  - {id: b, needs: [], run: 'true'}\n",
    )
    result = cli("run", "p.yml")
    assert result.code == 1, result
    step = next(s for s in cli.show()["steps"] if s["step"] == "a")
    assert step["status"] == "failed"
    host = "nonexistent-host.invalid" if fault == "dns" else "127.0.0.1"
    assert host in step["error"]
    assert cli.statuses()["b"] == "success"


def test_auth_failure_names_the_host(cli: Cli, sshd_hosts: SSHFixture) -> None:
    (server,) = sshd_hosts(1)
    cli.write(
        "p.yml",
        "targets:\n  fleet:\n    type: ssh\n"
        f"    hosts: [{json.dumps(f'{sshd_hosts.user}@127.0.0.1:{server.port}')}]\n"
        f"    identity_file: {sshd_hosts.other_key_path}\n"
        f"    known_hosts_file: {sshd_hosts.known_hosts_path}\n"
        "    ssh_config: ''\n"
        "steps:\n  - {id: a, on: fleet, run: 'true'}\n",
    )
    assert cli("run", "p.yml", env={"SSH_AUTH_SOCK": ""}).code == 1
    error = cli.show()["steps"][0]["error"]
    assert f"127.0.0.1:{server.port}" in error
    assert "cannot log in" in error and "refused key" in error


def test_sshd_killed_mid_step_fails_and_retries_reconnect(
    cli: Cli, sshd_hosts: SSHFixture, tmp_path: Path
) -> None:
    (server,) = sshd_hosts(1)
    started = tmp_path / "started"
    cli.write(
        "p.yml",
        target_block(sshd_hosts, ["host0"])
        + f"""
steps:
  - id: flaky
    on: fleet
    retries: 1
    retry_delay: 0.2
    run: |
      if [ ! -e {started} ]; then touch {started}; sleep 300; fi
      echo second attempt
""",
    )
    proc = cli.popen("run", "p.yml", "-o", "json")
    try:
        wait_for(started.exists, "the first attempt")
        server.kill()
        server.restart()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    retrying = [e for e in events if e["event"] == "step_state" and e["status"] == "retrying"]
    assert retrying and "host0" in retrying[0]["error"]
    assert "second attempt" in cli("logs", "last").out
    assert cli.show()["steps"][0]["attempts"] == 2


def test_a_host_that_hangs_times_out(cli: Cli, sshd_hosts: SSHFixture) -> None:
    (server,) = sshd_hosts(1)
    cli.write(
        "p.yml",
        target_block(sshd_hosts, ["host0"], connect_timeout=2)
        + "steps:\n  - {id: a, on: fleet, timeout: 3, run: 'true'}\n",
    )
    server.freeze()
    try:
        result = cli("run", "p.yml", timeout=90)
    finally:
        server.thaw()
    assert result.code == 1
    step = cli.show()["steps"][0]
    assert step["status"] == "failed"
    assert "host host0" in step["error"] and "did not answer the SSH handshake" in step["error"]


def test_ansible_step_runs_a_playbook_against_the_target(
    cli: Cli, sshd_hosts_session: SSHFixture, tmp_path: Path
) -> None:
    if not (Path(sys.executable).parent / "ansible-playbook").exists():
        pytest.skip("ansible-core is not installed in this environment")
    sshd_hosts_session(2)
    out = tmp_path / "ansible-out"
    out.mkdir()
    cli.write(
        "site.yml",
        f"""
- hosts: all
  gather_facts: false
  tasks:
    - name: write a file per host
      ansible.builtin.shell: echo "{{{{ greeting }}}} {{{{ inventory_hostname }}}}" > {out}/{{{{ inventory_hostname }}}}
      tags: [config]
    - name: never with --tags config
      ansible.builtin.shell: touch {out}/untagged
""",
    )
    cli.write(
        "p.yml",
        target_block(sshd_hosts_session, ["host0", "host1"])
        + """
steps:
  - id: play
    type: ansible
    on: fleet
    playbook: site.yml
    extra_vars: {greeting: hi}
    tags: [config]
""",
    )
    result = cli("run", "p.yml", timeout=300)
    assert result.code == 0, cli("logs", "last").out
    # Ansible's ControlPersist masters are closed with the step, not left for 60 s.
    assert not marker_procs("[mux]"), "ssh ControlPersist masters were left behind"
    assert (out / "host0").read_text().strip() == "hi host0"
    assert (out / "host1").read_text().strip() == "hi host1"
    assert not (out / "untagged").exists()


def test_ansible_step_without_ansible_is_a_clear_failure(
    cli: Cli, sshd_hosts_session: SSHFixture, tmp_path: Path
) -> None:
    sshd_hosts_session(1)
    cli.write(
        "p.yml",
        target_block(sshd_hosts_session, ["host0"])
        + "steps:\n  - {id: play, type: ansible, on: fleet, playbook: site.yml}\n",
    )
    missing = str(tmp_path / "no-such-ansible-playbook")
    proc = cli("run", "p.yml", env={"ANSFLOW_ANSIBLE_PLAYBOOK": missing})
    assert proc.code == 1, proc
    assert "ansible-playbook is not installed" in cli.show()["steps"][0]["error"]
