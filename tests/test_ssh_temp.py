"""Step folders on SSH hosts: one private folder per connection, a subfolder per attempt.

Against real sshd servers (tests/ssh_fixtures.py); each server has its own TMPDIR, so a test can
count what ansflow leaves there. Also: paramiko is imported without invoke, which is imported
only for an ssh_config with `Match exec`.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ansflow.cancel import CancelScope
from ansflow.inventory import Host
from ansflow.remote import ssh
from ansflow.remote.base import Command
from ansflow.remote.ssh import SSHPool, SSHSettings
from tests.ssh_fixtures import SSHFixture, SSHServer

pytestmark = pytest.mark.ssh

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _no_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


@pytest.fixture
def pool_factory() -> Iterator[Callable[[SSHFixture], SSHPool]]:
    pools: list[SSHPool] = []

    def make(fixture: SSHFixture) -> SSHPool:
        pool = SSHPool(SSHSettings(ssh_config=str(fixture.ssh_config_path)))
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.close()


def host(server: SSHServer) -> Host:
    return Host(name=server.name, address=server.name)


def run(runner: ssh.SSHRunner, script: str) -> int:
    return runner.run(Command(argv=["sh", "-c", script]), lambda *_: None, CancelScope())


def test_attempts_share_one_private_folder_per_connection(
    sshd_hosts_session: SSHFixture, pool_factory: Callable[[SSHFixture], SSHPool]
) -> None:
    [server] = sshd_hosts_session(1)
    pool = pool_factory(sshd_hosts_session)
    runner = pool.runner(host(server))
    before = set(server.temp_folders())
    folders = [runner.make_temp_dir() for _ in range(3)]
    [base] = set(server.temp_folders()) - before
    assert base.stat().st_mode & 0o777 == 0o700
    assert {Path(folder).parent for folder in folders} == {base}
    assert len(set(folders)) == 3
    for folder in folders:
        assert Path(folder).stat().st_mode & 0o777 == 0o700
    runner.write_file(f"{folders[0]}/output", b"", 0o600)
    runner.write_file(f"{folders[0]}/script", b"echo ok\n", 0o700)
    assert Path(f"{folders[0]}/output").stat().st_mode & 0o777 == 0o600
    assert Path(f"{folders[0]}/script").stat().st_mode & 0o777 == 0o700
    # What the step itself put there (more than ansflow wrote) goes too.
    assert run(runner, f"mkdir -p {folders[1]}/a/b && touch {folders[1]}/a/b/c {folders[1]}/x") == 0
    for folder in folders[:2]:
        runner.remove_tree(folder)
        assert not Path(folder).exists()
    runner.remove_tree(folders[0])  # already gone: fine
    # The end of the run removes the private folder, with what was not removed before.
    pool.close()
    assert not base.exists()


def test_a_private_folder_that_vanished_is_made_again(
    sshd_hosts_session: SSHFixture, pool_factory: Callable[[SSHFixture], SSHPool]
) -> None:
    [server] = sshd_hosts_session(1)
    pool = pool_factory(sshd_hosts_session)
    runner = pool.runner(host(server))
    first = runner.make_temp_dir()
    runner.remove_tree(first)
    base = Path(first).parent
    base.rmdir()  # what a cleaner of old files in /tmp may do between two steps
    second = runner.make_temp_dir()
    assert Path(second).is_dir() and Path(second).parent != base
    runner.remove_tree(second)
    pool.close()
    assert not Path(second).parent.exists()


def test_a_frozen_host_delays_the_end_of_the_run_by_at_most_the_give_up_time(
    sshd_hosts: SSHFixture, pool_factory: Callable[[SSHFixture], SSHPool]
) -> None:
    frozen, live = sshd_hosts(2)
    pool = pool_factory(sshd_hosts)
    folders = {server.name: pool.runner(host(server)).make_temp_dir() for server in (frozen, live)}
    frozen.freeze()
    try:
        started = time.monotonic()
        pool.close()
        took = time.monotonic() - started
    finally:
        frozen.thaw()
    assert took < ssh.CLOSE_GIVE_UP + 1.5
    # The live host was cleaned meanwhile; the frozen one keeps its folder.
    assert live.temp_folders() == []
    assert Path(folders[frozen.name]).parent in frozen.temp_folders()


def test_paramiko_is_imported_without_invoke_and_match_exec_still_works(
    sshd_hosts_session: SSHFixture, tmp_path: Path
) -> None:
    pytest.importorskip("invoke")
    [server] = sshd_hosts_session(1)
    marker = tmp_path / "exec-ran"
    config = tmp_path / "ssh_config"
    config.write_text(
        f'Match originalhost viaexec exec "touch {marker}"\n'
        "    HostName 127.0.0.1\n"
        f"    Port {server.port}\n"
        f"    User {sshd_hosts_session.user}\n"
        f"    IdentityFile {sshd_hosts_session.client_key_path}\n"
        "    IdentitiesOnly yes\n"
        f"    UserKnownHostsFile {sshd_hosts_session.known_hosts_path}\n"
    )
    script = """
import sys
from ansflow.remote import ssh
from ansflow.inventory import Host
assert "invoke" not in sys.modules, "imported with paramiko"
assert "asyncio" not in sys.modules, "imported with paramiko"
settings = ssh.SSHSettings(ssh_config=sys.argv[1])
check = ssh.check_host(Host(name="viaexec", address="viaexec"), settings)
assert check.ok, check.error
assert "invoke" in sys.modules
"""
    result = subprocess.run(
        [sys.executable, "-c", script, str(config)],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert marker.exists()


@pytest.mark.parametrize("size", [0, 1, 32767, 32768, 32769, 200_001])
def test_read_file_around_the_first_chunk(
    sshd_hosts_session: SSHFixture,
    pool_factory: Callable[[SSHFixture], SSHPool],
    tmp_path: Path,
    size: int,
) -> None:
    [server] = sshd_hosts_session(1)
    runner = pool_factory(sshd_hosts_session).runner(host(server))
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    (tmp_path / "f").write_bytes(data)
    assert runner.read_file(str(tmp_path / "f")) == data
