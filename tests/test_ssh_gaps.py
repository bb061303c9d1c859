"""SSH faults found after the first release (issue 5), each proven against real sshd servers.

A frozen host (SIGSTOP on its sshd processes) keeps its TCP connection open but never answers,
which is what a hung machine or a stalled VM looks like to ansflow; a killed sshd is a host that
rebooted. Every test thaws what it froze, and the fixture stops every server it started.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from ansflow.remote import ssh
from tests.clihelp import Cli, Events, wait_for
from tests.ssh_fixtures import SSHFixture, free_port, target_block

pytestmark = pytest.mark.ssh

#: Upper bound for what normally takes milliseconds (process start, a login on 127.0.0.1).
SLACK = 4.0


# -- 1. a host that freezes mid-step -------------------------------------------------------------


def test_a_host_that_freezes_mid_step_times_out_within_the_give_up_window(
    cli: Cli, sshd_hosts: SSHFixture, tmp_path: Path
) -> None:
    (server,) = sshd_hosts(1)
    started = tmp_path / "started"
    cli.write(
        "p.yml",
        target_block(sshd_hosts, ["host0"])
        + f"steps:\n  - {{id: a, on: fleet, timeout: 3s, run: 'touch {started}; sleep 1000'}}\n",
    )
    proc = cli.popen("run", "p.yml", "-o", "json")
    try:
        wait_for(started.exists, "the step to start on host0")
        server.freeze()
        code = proc.wait(timeout=60)
    finally:
        server.thaw()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 1
    [step] = cli.show()["steps"]
    assert step["status"] == "timed_out", step
    # The timeout, then at most the give-up window for the kill: no reconnect to the frozen host
    # for the cleanup, and no waiting out connect and banner timeouts.
    assert step["duration"] < 3 + ssh.CANCEL_GIVE_UP + SLACK, step
    logs = cli("logs", "last").out
    assert f"host host0 (127.0.0.1:{server.port}) did not answer within 10s" in logs


# -- 2. the temporary folder of an attempt whose connection was lost -----------------------------


def test_the_retry_removes_the_folder_its_lost_attempt_left_on_the_host(
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
    retries: 3
    retry_delay: 0.5s
    run: |
      echo "attempt=$ANSFLOW_ATTEMPT" >> "$ANSFLOW_OUTPUT"
      if [ ! -e {started} ]; then touch {started}; sleep 300; fi
      echo second attempt
""",
    )
    proc = cli.popen("run", "p.yml", "-o", "json")
    try:
        events = Events(proc, 120.0)
        wait_for(started.exists, "the first attempt")
        assert len(server.temp_folders()) == 1
        server.kill()
        # The first attempt is over (its cleanup found the host gone) before the host is back.
        events.until(
            lambda e: e["event"] == "step_state" and e.get("status") == "retrying", "the retry"
        )
        assert len(server.temp_folders()) == 1
        server.restart()
        code = events.finish()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0, events.seen
    assert "second attempt" in cli("logs", "last").out
    assert server.temp_folders() == []


# -- 3. targets check --json ---------------------------------------------------------------------


def test_targets_check_json_has_fields_per_host(
    cli: Cli, sshd_hosts: SSHFixture, tmp_path: Path
) -> None:
    (server,) = sshd_hosts(1)
    closed = free_port()
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    # Another key recorded for the server's name: what a reinstalled host (or an attacker) shows.
    other = (sshd_hosts.other_key_path.with_suffix(".pub")).read_text().split()
    changed = tmp_path / "changed_known_hosts"
    changed.write_text(f"[127.0.0.1]:{server.port} {other[0]} {other[1]}\n")
    user = sshd_hosts.user

    def literal(name: str, port: int, known: Path) -> str:
        return (
            f"  {name}:\n    type: ssh\n    hosts: [{json.dumps(f'{user}@127.0.0.1:{port}')}]\n"
            f"    identity_file: {sshd_hosts.client_key_path}\n"
            f"    known_hosts_file: {known}\n    ssh_config: ''\n    connect_timeout: 5\n"
        )

    cli.write(
        "p.yml",
        target_block(sshd_hosts, ["host0"])
        + literal("refused", closed, sshd_hosts.known_hosts_path)
        + literal("newkey", server.port, empty)
        + literal("rekeyed", server.port, changed)
        + "steps:\n  - {id: a, on: fleet, run: 'true'}\n",
    )
    result = cli("targets", "check", "p.yml", "--json", env={"SSH_AUTH_SOCK": ""})
    assert result.code == 1, result
    rows = {row["target"]: row for row in json.loads(result.out)}
    fingerprint = f"ssh-ed25519 {server.host_key_fingerprint}"
    good = rows["fleet"]
    assert good["rtt_ms"] is not None and good["rtt_ms"] > 0
    assert good["round_trip_ms"] == good["rtt_ms"]
    assert {k: v for k, v in good.items() if k not in ("rtt_ms", "round_trip_ms", "detail")} == {
        "target": "fleet",
        "kind": "ssh",
        "what": "host host0",
        "host": "host0",
        "address": "127.0.0.1",
        "port": server.port,
        "user": user,
        "reachable": True,
        "host_key": "known",
        "host_key_fingerprint": fingerprint,
        "login": True,
        "ok": True,
        "error": None,
        "skipped": False,
    }
    refused = rows["refused"]
    assert (refused["address"], refused["port"], refused["user"]) == ("127.0.0.1", closed, user)
    assert refused["reachable"] is False and refused["login"] is False and not refused["ok"]
    assert refused["host_key"] is None and refused["rtt_ms"] is None
    assert f"127.0.0.1:{closed}" in refused["error"] and "refused" in refused["error"]
    newkey = rows["newkey"]
    assert newkey["reachable"] is True and newkey["login"] is False and not newkey["ok"]
    assert newkey["host_key"] == "unknown" and newkey["host_key_fingerprint"] == fingerprint
    assert "not known" in newkey["error"] and f"127.0.0.1:{server.port}" in newkey["error"]
    rekeyed = rows["rekeyed"]
    assert rekeyed["host_key"] == "changed" and rekeyed["login"] is False
    assert "HAS CHANGED" in rekeyed["error"] and "HOST KEY CHANGED" in rekeyed["detail"]
    table = cli("targets", "check", "p.yml", env={"SSH_AUTH_SOCK": ""})
    assert "HAS CHANGED" in table.out and "1 ok, 3 failed" in table.out


# -- 4. a literal password -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "accepted"),
    [
        ("hunter2", False),
        ("'${{ secrets.SSH_PASSWORD }} and more'", False),
        ("'${{ vars.password }}'", False),
        ("'${{ secrets.SSH_PASSWORD }}'", True),
        ("'${{secrets.SSH_PASSWORD}}'", True),
    ],
)
def test_a_password_must_be_a_secret_reference(cli: Cli, written: str, accepted: bool) -> None:
    cli.write(
        "p.yml",
        "version: 1\nsecrets: [SSH_PASSWORD]\nvars: {password: x}\ntargets:\n  web:\n"
        f"    type: ssh\n    hosts: [web1]\n    password: {written}\n"
        "steps:\n  - {id: a, on: web, run: 'true'}\n",
    )
    result = cli("validate", "p.yml")
    if accepted:
        assert result.code == 0, result
        return
    assert result.code == 2, result
    text = result.out + result.err
    assert "p.yml:8:15: target 'web': `password`: must be a ${{ secrets.NAME }} reference" in text
    assert "declare a secret" in text
    # Neither the message nor the quoted source line repeats the value: it may be real.
    assert "hunter2" not in text and "(got" not in text
    assert "    password: ***" in text


# -- 5. `user@host` naming a host the inventory or ssh_config knows ------------------------------


def test_a_user_written_in_the_entry_wins_over_the_inventory_and_ssh_config(
    cli: Cli, sshd_hosts: SSHFixture
) -> None:
    sshd_hosts(1)
    user = sshd_hosts.user
    cli.write("hosts.ini", "[app]\nhost0 ansible_user=ansflow-nobody\n")
    step = "steps:\n  - {id: a, on: fleet, run: 'echo \"as $(id -un)\"'}\n"
    # The inventory's user is wrong; the entry's (listed after the group) is right.
    cli.write(
        "right.yml",
        "inventory: hosts.ini\n" + target_block(sshd_hosts, ["app", f"{user}@host0"]) + step,
    )
    result = cli("run", "right.yml", env={"SSH_AUTH_SOCK": ""})
    assert result.code == 0, cli("show", "last").out
    assert cli.statuses() == {"a@host0": "success"}
    assert f"as {user}" in cli("logs", "last").out
    # ssh_config's user is right; the entry's is wrong, and the failure names it.
    cli.write("wrong.yml", target_block(sshd_hosts, ["host0", "ansflow-nobody@host0"]) + step)
    assert cli("run", "wrong.yml", env={"SSH_AUTH_SOCK": ""}).code == 1
    [row] = cli.show()["steps"]
    assert row["host"] == "host0"
    assert "cannot log in to host host0" in row["error"] and "as ansflow-nobody" in row["error"]


def test_two_users_for_one_host_are_refused(cli: Cli) -> None:
    cli.write(
        "p.yml",
        "targets:\n  fleet:\n    type: ssh\n    hosts: [a@web1.example, b@web1.example]\n"
        "steps:\n  - {id: s, on: fleet, run: 'true'}\n",
    )
    result = cli("run", "p.yml")
    assert result.code == 2, result
    assert "host 'web1.example' is listed with two users, 'a' and 'b'" in result.err


# -- 6. keepalive --------------------------------------------------------------------------------


def test_a_short_keepalive_notices_a_frozen_host_in_seconds(
    cli: Cli, sshd_hosts: SSHFixture, tmp_path: Path
) -> None:
    (server,) = sshd_hosts(1)
    started = tmp_path / "started"
    cli.write(
        "p.yml",
        target_block(sshd_hosts, ["host0"], keepalive="1s")
        # The first 4 s prove a live host answers (it is not dropped after 3 s of keepalives).
        + "steps:\n  - {id: a, on: fleet, timeout: 60s, "
        + f"run: 'sleep 4; touch {started}; sleep 1000'}}\n",
    )
    proc = cli.popen("run", "p.yml", "-o", "json")
    try:
        wait_for(started.exists, "the step to start on host0")
        server.freeze()
        began = time.monotonic()
        code = proc.wait(timeout=60)
        noticed = time.monotonic() - began
    finally:
        server.thaw()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 1
    [step] = cli.show()["steps"]
    # Lost after 3 unanswered keepalives, long before the step's own 60 s timeout.
    assert step["status"] == "failed", step
    assert step["error"] == (
        f"connection to host host0 (127.0.0.1:{server.port}) lost while running the step: "
        "no answer to keepalives for 3s"
    )
    assert noticed < 1 + ssh.KEEPALIVE_COUNT + SLACK
    # Its folder waits for the host to come back instead of holding the step's end.
    assert len(server.temp_folders()) == 1


@pytest.mark.parametrize(
    ("written", "problem"),
    [
        ("0", None),
        ("30s", None),
        ("1m", None),
        ("0.5", "must be 0 (off) or at least 1s"),
        ("-1", "a duration must be a finite number of seconds >= 0"),
        ("often", "expected a duration like 90, 30s, 5m or 1h30m"),
    ],
)
def test_keepalive_values(cli: Cli, written: str, problem: str | None) -> None:
    cli.write(
        "p.yml",
        "targets:\n  web:\n    type: ssh\n    hosts: [web1]\n"
        f"    keepalive: {written}\nsteps:\n  - {{id: a, on: web, run: 'true'}}\n",
    )
    result = cli("validate", "p.yml")
    if problem is None:
        assert result.code == 0, result
    else:
        assert result.code == 2, result
        assert "p.yml:5:16: target 'web': `keepalive`: " + problem in result.out + result.err
