"""The SSH runner against real sshd servers on 127.0.0.1 (see tests/ssh_fixtures.py).

The servers run on this machine, so a test can look at the "remote" side directly: files, the
process list, /proc. Synchronisation is by events (a line arrived, a file exists), never by sleeps.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from ansflow.cancel import TIMEOUT, CancelScope
from ansflow.inventory import Host
from ansflow.remote import ssh
from ansflow.remote.base import Command
from ansflow.remote.ssh import SSHError, SSHPool, SSHSettings, check_host
from tests.clihelp import alive
from tests.ssh_fixtures import SSHFixture, SSHServer, free_port

pytestmark = pytest.mark.ssh

WAIT = 15.0  # generous upper bound for events that normally take milliseconds


@pytest.fixture(autouse=True)
def _no_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's ssh-agent must not log the tests in by accident."""
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


class Lines:
    """Collects on_line calls; tests wait for a line and can act the moment it arrives."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []
        self._cond = threading.Condition()
        self._hooks: list[tuple[str, Callable[[], None]]] = []

    def __call__(self, stream: str, line: str) -> None:
        with self._cond:
            self.items.append((stream, line))
            hooks = [hook for text, hook in self._hooks if text == line]
            self._cond.notify_all()
        for hook in hooks:
            hook()

    def on(self, text: str, hook: Callable[[], None]) -> None:
        self._hooks.append((text, hook))

    def wait_for(self, text: str, timeout: float = WAIT) -> None:
        with self._cond:
            if not self._cond.wait_for(
                lambda: any(line == text for _, line in self.items), timeout
            ):
                raise AssertionError(f"no line {text!r} within {timeout}s: {self.items}")

    def of(self, stream: str) -> list[str]:
        with self._cond:
            return [line for s, line in self.items if s == stream]


def settings(fixture: SSHFixture, **overrides: object) -> SSHSettings:
    options: dict[str, object] = {"ssh_config": str(fixture.ssh_config_path)}
    options.update(overrides)
    return SSHSettings(**options)  # type: ignore[arg-type]  # test helper forwards keywords


def host(server: SSHServer) -> Host:
    return Host(name=server.name, address=server.name)


def literal(server: SSHServer, name: str | None = None) -> Host:
    """The server by address only, so no ssh_config entry applies."""
    return Host(name=name or server.name, address="127.0.0.1", port=server.port)


def sh(script: str, *args: str, **fields: object) -> Command:
    return Command(argv=["sh", "-c", script, "sh", *args], **fields)  # type: ignore[arg-type]


@pytest.fixture
def pool_factory() -> Iterator[Callable[[SSHSettings], SSHPool]]:
    pools: list[SSHPool] = []

    def make(options: SSHSettings) -> SSHPool:
        pool = SSHPool(options)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.close()


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=8) as pool:
        yield pool


# -- running commands ----------------------------------------------------------------------------


def test_three_hosts_run_a_command_each(
    sshd_hosts_session: SSHFixture, pool_factory: Callable[[SSHSettings], SSHPool]
) -> None:
    servers = sshd_hosts_session(3)
    pool = pool_factory(settings(sshd_hosts_session))
    results: dict[str, tuple[int, Lines]] = {}

    def work(server: SSHServer) -> None:
        lines = Lines()
        command = sh(
            'echo "$ANSFLOW_HOST on $SSH_CLIENT"; exit 7', env={"ANSFLOW_HOST": server.name}
        )
        results[server.name] = (pool.runner(host(server)).run(command, lines, CancelScope()), lines)

    threads = [threading.Thread(target=work, args=(s,)) for s in servers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    for server in servers:
        status, lines = results[server.name]
        assert status == 7
        [line] = lines.of("stdout")
        assert line.startswith(f"{server.name} on 127.0.0.1 ") and line.endswith(f" {server.port}")
    assert pool.connections_opened() == 3


def test_lines_stream_as_they_are_written(
    sshd_hosts_session: SSHFixture,
    pool_factory: Callable[[SSHSettings], SSHPool],
    tmp_path: Path,
) -> None:
    [server] = sshd_hosts_session(1)
    runner = pool_factory(settings(sshd_hosts_session)).runner(host(server))
    gate = tmp_path / "gate"
    lines = Lines()
    # The command cannot end before the test creates the gate file, and the test creates it only
    # when the first line has arrived: so that line was streamed, not collected at the end.
    lines.on("ready", gate.touch)
    script = (
        'echo ready; echo "err 1" >&2; '
        'while [ ! -e "$1" ]; do sleep 0.01; done; '
        'echo after; echo "err 2" >&2; printf "no newline"'
    )
    scope = CancelScope()
    timer = scope.start_timer(WAIT)
    try:
        status = runner.run(sh(script, str(gate)), lines, scope)
    finally:
        assert timer is not None
        timer.cancel()
    assert not scope.cancelled and status == 0
    assert lines.of("stdout") == ["ready", "after", "no newline"]
    assert lines.of("stderr") == ["err 1", "err 2"]


def test_exit_codes(
    sshd_hosts_session: SSHFixture, pool_factory: Callable[[SSHSettings], SSHPool]
) -> None:
    [server] = sshd_hosts_session(1)
    runner = pool_factory(settings(sshd_hosts_session)).runner(host(server))
    for script, expected in [("exit 0", 0), ("exit 1", 1), ("exit 42", 42), ("kill -9 $$", 137)]:
        assert runner.run(sh(script), Lines(), CancelScope()) == expected, script
    lines = Lines()
    assert runner.run(Command(argv=["no-such-program-here"]), lines, CancelScope()) == 127
    assert any("no-such-program-here" in line for line in lines.of("stderr"))


def test_environment_reaches_the_program_but_not_the_process_list(
    sshd_hosts_session: SSHFixture,
    pool_factory: Callable[[SSHSettings], SSHPool],
    tmp_path: Path,
) -> None:
    [server] = sshd_hosts_session(1)
    runner = pool_factory(settings(sshd_hosts_session)).runner(host(server))
    secret = "s3cr3t-" + os.urandom(6).hex()
    tricky = "a b\n'q' \"dq\" $HOME `id` \\ ; & | * é"
    gate = tmp_path / "gate"
    seen: list[str] = []

    def look_at_processes() -> None:
        seen.append(
            subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True).stdout
        )
        gate.touch()

    lines = Lines()
    lines.on("waiting", look_at_processes)
    script = (
        'printf "%s\\n" "$SECRET"; printf "%s" "$TRICKY" > "$2"; '
        'echo waiting; while [ ! -e "$1" ]; do sleep 0.01; done'
    )
    status = runner.run(
        sh(script, str(gate), str(tmp_path / "tricky"), env={"SECRET": secret, "TRICKY": tricky}),
        lines,
        CancelScope(),
    )
    assert status == 0
    assert lines.of("stdout")[0] == secret
    assert (tmp_path / "tricky").read_text() == tricky
    assert seen
    assert secret not in seen[0]
    assert "sh -c" in seen[0]  # the listing did include the remote processes


def test_bad_environment_names_are_refused(
    sshd_hosts_session: SSHFixture, pool_factory: Callable[[SSHSettings], SSHPool]
) -> None:
    [server] = sshd_hosts_session(1)
    runner = pool_factory(settings(sshd_hosts_session)).runner(host(server))
    with pytest.raises(SSHError, match="'A-B'"):
        runner.run(Command(argv=["true"], env={"A-B": "x"}), Lines(), CancelScope())


def test_workdir_and_stdin(
    sshd_hosts_session: SSHFixture,
    pool_factory: Callable[[SSHSettings], SSHPool],
    tmp_path: Path,
) -> None:
    [server] = sshd_hosts_session(1)
    runner = pool_factory(settings(sshd_hosts_session)).runner(host(server))
    folder = tmp_path / "a dir; $(touch x)"
    folder.mkdir()
    lines = Lines()
    assert runner.run(Command(argv=["pwd"], workdir=str(folder)), lines, CancelScope()) == 0
    assert lines.of("stdout") == [str(folder)]

    lines = Lines()
    assert runner.run(Command(argv=["pwd"], workdir="~"), lines, CancelScope()) == 0
    assert lines.of("stdout") == [str(Path.home())]

    lines = Lines()
    status = runner.run(
        Command(argv=["pwd"], workdir=str(tmp_path / "missing")), lines, CancelScope()
    )
    assert status != 0 and lines.of("stderr")

    lines = Lines()
    data = b"line 1\nline 2\n\xff binary-ish\n"
    assert runner.run(Command(argv=["cat"], stdin=data), lines, CancelScope()) == 0
    assert lines.of("stdout") == ["line 1", "line 2", "\ufffd binary-ish"]

    lines = Lines()
    assert runner.run(Command(argv=["cat"]), lines, CancelScope()) == 0
    assert lines.items == []

    big = os.urandom(3 * 1024 * 1024)
    lines = Lines()
    assert runner.run(Command(argv=["wc", "-c"], stdin=big), lines, CancelScope()) == 0
    assert lines.of("stdout") == [str(len(big))]
    # A program that ignores its input must not upset the connection.
    assert runner.run(Command(argv=["true"], stdin=big), Lines(), CancelScope()) == 0
    assert runner.run(Command(argv=["true"]), Lines(), CancelScope()) == 0


def test_long_lines_are_split(
    sshd_hosts_session: SSHFixture, pool_factory: Callable[[SSHSettings], SSHPool]
) -> None:
    [server] = sshd_hosts_session(1)
    runner = pool_factory(settings(sshd_hosts_session)).runner(host(server))
    lines = Lines()
    status = runner.run(
        sh("head -c 150000 /dev/zero | tr '\\0' a; echo; echo end"), lines, CancelScope()
    )
    assert status == 0
    out = lines.of("stdout")
    assert [len(line) for line in out] == [65536, 65536, 150000 - 2 * 65536, 3]


def test_one_connection_serves_many_commands(
    sshd_hosts: SSHFixture,
    pool_factory: Callable[[SSHSettings], SSHPool],
    executor: ThreadPoolExecutor,
) -> None:
    [server] = sshd_hosts(1)
    pool = pool_factory(settings(sshd_hosts))
    runner = pool.runner(host(server))

    def one(i: int) -> int:
        lines = Lines()
        status = runner.run(Command(argv=["echo", str(i)]), lines, CancelScope())
        assert lines.of("stdout") == [str(i)]
        return status

    # 100 commands, 12 at a time: more than sshd's MaxSessions (10) allows at once.
    assert list(executor.map(one, range(100))) == [0] * 100
    assert pool.connections_opened() == 1
    assert server.connection_count() == 1


def test_a_new_connection_after_the_host_came_back(
    sshd_hosts: SSHFixture, pool_factory: Callable[[SSHSettings], SSHPool]
) -> None:
    [server] = sshd_hosts(1)
    pool = pool_factory(settings(sshd_hosts))
    runner = pool.runner(host(server))
    assert runner.run(Command(argv=["true"]), Lines(), CancelScope()) == 0
    server.kill()
    with pytest.raises(SSHError, match=rf"host0 \(127\.0\.0\.1:{server.port}\).*refused"):
        runner.run(Command(argv=["true"]), Lines(), CancelScope())
    server.restart()
    assert runner.run(Command(argv=["true"]), Lines(), CancelScope()) == 0
    assert pool.connections_opened() == 2
    assert server.connection_count() == 2


def test_host_dying_mid_command_names_the_host(
    sshd_hosts: SSHFixture,
    pool_factory: Callable[[SSHSettings], SSHPool],
    executor: ThreadPoolExecutor,
) -> None:
    [server] = sshd_hosts(1)
    runner = pool_factory(settings(sshd_hosts)).runner(host(server))
    lines = Lines()
    started = threading.Event()
    lines.on("started", started.set)
    future = executor.submit(runner.run, sh("echo started; sleep 1000"), lines, CancelScope())
    assert started.wait(WAIT)
    server.kill()
    with pytest.raises(SSHError) as caught:
        future.result(WAIT)
    assert str(caught.value) == (
        f"connection to host host0 (127.0.0.1:{server.port}) lost while running the step"
    )
    assert caught.value.host == "host0"


def test_proxy_jump(sshd_hosts: SSHFixture, pool_factory: Callable[[SSHSettings], SSHPool]) -> None:
    [jump] = sshd_hosts(1)
    [target] = sshd_hosts(1, proxy_jump="host0")
    pool = pool_factory(settings(sshd_hosts))
    lines = Lines()
    assert pool.runner(host(target)).run(sh('echo "$SSH_CLIENT"'), lines, CancelScope()) == 0
    client_port = int(lines.of("stdout")[0].split()[1])
    # The target's client socket belongs to the jump host's sshd: the hop really was used.
    assert client_port in jump.local_ports()
    assert jump.connection_count() == 1 and target.connection_count() == 1
    assert pool.connections_opened() == 2
    assert re.search(rf"port {client_port} ssh2", target.log_text())


# -- host keys -----------------------------------------------------------------------------------


def test_strict_refuses_an_unknown_host_key(
    sshd_hosts_session: SSHFixture,
    pool_factory: Callable[[SSHSettings], SSHPool],
    tmp_path: Path,
) -> None:
    [server] = sshd_hosts_session(1)
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    pool = pool_factory(settings(sshd_hosts_session, known_hosts_file=str(empty)))
    with pytest.raises(SSHError) as caught:
        pool.runner(host(server)).run(Command(argv=["true"]), Lines(), CancelScope())
    message = str(caught.value)
    assert f"host key for [127.0.0.1]:{server.port} is not known" in message
    assert f"ssh-ed25519 {server.host_key_fingerprint}" in message
    assert "accept-new" in message and "host0" in message
    assert caught.value.kind == "host_key_unknown"


def test_strict_and_accept_new_refuse_a_changed_host_key(
    sshd_hosts_session: SSHFixture,
    pool_factory: Callable[[SSHSettings], SSHPool],
    tmp_path: Path,
) -> None:
    server, other = sshd_hosts_session(2)
    forged = tmp_path / "known_hosts"
    forged.write_text(other.known_hosts_line.replace(f":{other.port}", f":{server.port}") + "\n")
    for policy in ("strict", "accept-new"):
        pool = pool_factory(
            settings(sshd_hosts_session, known_hosts=policy, known_hosts_file=str(forged))
        )
        with pytest.raises(SSHError) as caught:
            pool.runner(host(server)).run(Command(argv=["true"]), Lines(), CancelScope())
        message = str(caught.value)
        assert "HAS CHANGED" in message
        assert server.host_key_fingerprint in message and other.host_key_fingerprint in message
        assert f"{forged}:1" in message
    assert forged.read_text().count("\n") == 1


def test_accept_new_records_the_key(
    sshd_hosts_session: SSHFixture,
    pool_factory: Callable[[SSHSettings], SSHPool],
    tmp_path: Path,
) -> None:
    [server] = sshd_hosts_session(1)
    known = tmp_path / "new" / "known_hosts"
    pool = pool_factory(
        settings(sshd_hosts_session, known_hosts="accept-new", known_hosts_file=str(known))
    )
    assert pool.runner(host(server)).run(Command(argv=["true"]), Lines(), CancelScope()) == 0
    assert known.read_text() == server.known_hosts_line + "\n"
    assert known.stat().st_mode & 0o777 == 0o600
    strict = pool_factory(settings(sshd_hosts_session, known_hosts_file=str(known)))
    assert strict.runner(host(server)).run(Command(argv=["true"]), Lines(), CancelScope()) == 0


def test_off_accepts_any_key(
    sshd_hosts_session: SSHFixture,
    pool_factory: Callable[[SSHSettings], SSHPool],
    tmp_path: Path,
) -> None:
    server, other = sshd_hosts_session(2)
    forged = tmp_path / "known_hosts"
    forged.write_text(other.known_hosts_line.replace(f":{other.port}", f":{server.port}") + "\n")
    pool = pool_factory(
        settings(sshd_hosts_session, known_hosts="off", known_hosts_file=str(forged))
    )
    assert pool.runner(host(server)).run(Command(argv=["true"]), Lines(), CancelScope()) == 0
    assert forged.read_text().count("\n") == 1


# -- cancel and timeout --------------------------------------------------------------------------

SLEEPERS = "sleep 1000 & echo $!; sleep 1000 & echo $!; echo $$; echo started; wait"


def _run_and_stop(
    runner: ssh.SSHRunner, executor: ThreadPoolExecutor, stop: Callable[[CancelScope], None]
) -> tuple[list[int], float, CancelScope, Future[int]]:
    lines = Lines()
    scope = CancelScope()
    started = threading.Event()
    lines.on("started", started.set)
    future = executor.submit(runner.run, sh(SLEEPERS), lines, scope)
    assert started.wait(WAIT)
    pids = [int(line) for line in lines.of("stdout")[:3]]
    assert all(alive(pid) for pid in pids)
    began = time.monotonic()
    stop(scope)
    future.result(WAIT)
    return pids, time.monotonic() - began, scope, future


def test_cancel_kills_the_remote_process_group(
    sshd_hosts_session: SSHFixture,
    pool_factory: Callable[[SSHSettings], SSHPool],
    executor: ThreadPoolExecutor,
) -> None:
    [server] = sshd_hosts_session(1)
    pool = pool_factory(settings(sshd_hosts_session))
    runner = pool.runner(host(server))
    pids, elapsed, scope, _ = _run_and_stop(runner, executor, lambda s: s.cancel())
    assert not any(alive(pid) for pid in pids)
    assert elapsed < ssh.KILL_GRACE + 3
    assert scope.reason == "cancel"
    # The connection survived the cancel and serves the next step.
    assert runner.run(Command(argv=["true"]), Lines(), CancelScope()) == 0
    assert pool.connections_opened() == 1


def test_timeout_kills_the_remote_process_group(
    sshd_hosts_session: SSHFixture,
    pool_factory: Callable[[SSHSettings], SSHPool],
    executor: ThreadPoolExecutor,
) -> None:
    [server] = sshd_hosts_session(1)
    runner = pool_factory(settings(sshd_hosts_session)).runner(host(server))
    pids, _, scope, _ = _run_and_stop(runner, executor, lambda s: s.start_timer(0.05))
    assert scope.reason == TIMEOUT
    assert not any(alive(pid) for pid in pids)


def test_cancel_gives_up_on_a_host_that_does_not_answer(
    sshd_hosts: SSHFixture,
    pool_factory: Callable[[SSHSettings], SSHPool],
    executor: ThreadPoolExecutor,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ssh, "CANCEL_GIVE_UP", 1.0)
    [server] = sshd_hosts(1)
    pool = pool_factory(settings(sshd_hosts))
    runner = pool.runner(host(server))
    lines = Lines()
    scope = CancelScope()
    started = threading.Event()
    lines.on("started", started.set)
    future = executor.submit(runner.run, sh("echo started; sleep 1000"), lines, scope)
    assert started.wait(WAIT)
    server.freeze()
    try:
        began = time.monotonic()
        scope.cancel()
        future.result(WAIT)
        assert time.monotonic() - began < 3
        # The silent connection was dropped: the next step opens a new one.
        server.thaw()
        assert runner.run(Command(argv=["true"]), Lines(), CancelScope()) == 0
        assert pool.connections_opened() == 2
    finally:
        server.thaw()


# -- connection errors ---------------------------------------------------------------------------


def test_connection_refused(pool_factory: Callable[[SSHSettings], SSHPool]) -> None:
    port = free_port()
    pool = pool_factory(SSHSettings(ssh_config=""))
    with pytest.raises(SSHError) as caught:
        pool.runner(Host(name="web1", address="127.0.0.1", port=port)).run(
            Command(argv=["true"]), Lines(), CancelScope()
        )
    assert str(caught.value) == (
        f"cannot connect to host web1 (127.0.0.1:{port}): "
        "connection refused (is sshd running on that port?)"
    )


def test_name_that_does_not_resolve(pool_factory: Callable[[SSHSettings], SSHPool]) -> None:
    pool = pool_factory(SSHSettings(ssh_config=""))
    with pytest.raises(SSHError) as caught:
        pool.runner(Host(name="ghost", address="nonexistent.invalid")).run(
            Command(argv=["true"]), Lines(), CancelScope()
        )
    assert "host ghost (nonexistent.invalid:22)" in str(caught.value)
    assert "does not resolve" in str(caught.value)
    assert caught.value.kind == "resolve"


def test_wrong_key_is_an_auth_failure(
    sshd_hosts_session: SSHFixture, pool_factory: Callable[[SSHSettings], SSHPool]
) -> None:
    [server] = sshd_hosts_session(1)
    pool = pool_factory(
        SSHSettings(
            ssh_config="",
            identity_file=str(sshd_hosts_session.other_key_path),
            known_hosts_file=str(sshd_hosts_session.known_hosts_path),
        )
    )
    with pytest.raises(SSHError) as caught:
        pool.runner(literal(server, "web1")).run(Command(argv=["true"]), Lines(), CancelScope())
    message = str(caught.value)
    assert message.startswith(f"cannot log in to host web1 (127.0.0.1:{server.port}) as ")
    assert str(sshd_hosts_session.other_key_path) in message
    assert caught.value.kind == "auth"


def test_a_wrong_password_is_an_auth_failure(
    sshd_hosts: SSHFixture, pool_factory: Callable[[SSHSettings], SSHPool]
) -> None:
    # Only refusal can be tested: a password that works would need a change to system accounts.
    [server] = sshd_hosts(1, password_auth=True)
    pool = pool_factory(
        SSHSettings(
            ssh_config="",
            identity_file=str(sshd_hosts.other_key_path),
            password="not-the-password",
            known_hosts_file=str(sshd_hosts.known_hosts_path),
        )
    )
    with pytest.raises(SSHError, match=r"refused .*the password") as caught:
        pool.runner(literal(server)).run(Command(argv=["true"]), Lines(), CancelScope())
    assert "password" in str(caught.value).rsplit("accepts:", 1)[1]


def test_encrypted_key_is_unlocked_with_the_password(
    sshd_hosts: SSHFixture, pool_factory: Callable[[SSHSettings], SSHPool], tmp_path: Path
) -> None:
    [server] = sshd_hosts(1)
    key = tmp_path / "locked_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "open sesame", "-f", str(key)], check=True
    )
    with sshd_hosts.authorized_keys_path.open("a") as keys:
        keys.write(Path(f"{key}.pub").read_text())
    known = str(sshd_hosts.known_hosts_path)

    def attempt(password: str | None) -> int:
        options = SSHSettings(
            ssh_config="", identity_file=str(key), password=password, known_hosts_file=known
        )
        runner = pool_factory(options).runner(literal(server))
        return runner.run(Command(argv=["true"]), Lines(), CancelScope())

    assert attempt("open sesame") == 0
    with pytest.raises(SSHError, match="encrypted, and no passphrase was given"):
        attempt(None)


def test_proxy_jump_loop_is_refused_before_connecting(
    pool_factory: Callable[[SSHSettings], SSHPool], tmp_path: Path
) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(
        "Host a\n  HostName 127.0.0.1\n  ProxyJump b\n\nHost b\n  HostName 127.0.0.1\n"
        "  ProxyJump a\n"
    )
    pool = pool_factory(SSHSettings(ssh_config=str(config)))
    with pytest.raises(SSHError, match="loops") as caught:
        pool.runner(Host(name="a", address="a")).run(Command(argv=["true"]), Lines(), CancelScope())
    assert "a -> b -> a" in str(caught.value)
    assert pool.connections_opened() == 0


def test_inventory_port_wins_over_ssh_config(
    sshd_hosts_session: SSHFixture, pool_factory: Callable[[SSHSettings], SSHPool]
) -> None:
    [server] = sshd_hosts_session(1)
    pool = pool_factory(settings(sshd_hosts_session))
    port = free_port()
    with pytest.raises(SSHError, match=f"127.0.0.1:{port}"):
        pool.runner(Host(name="h", address=server.name, port=port)).run(
            Command(argv=["true"]), Lines(), CancelScope()
        )


# -- files ---------------------------------------------------------------------------------------


def test_files_over_sftp(
    sshd_hosts_session: SSHFixture,
    pool_factory: Callable[[SSHSettings], SSHPool],
    tmp_path: Path,
) -> None:
    [server] = sshd_hosts_session(1)
    runner = pool_factory(settings(sshd_hosts_session)).runner(host(server))
    remote = tmp_path / "remote"
    local = tmp_path / "install.sh"
    local.write_bytes(b"#!/bin/sh\necho hi\n" * 10000)
    local.chmod(0o754)

    runner.put(local, str(remote / "a" / "b" / "install.sh"), mode=0o700)
    assert (remote / "a" / "b" / "install.sh").read_bytes() == local.read_bytes()
    assert (remote / "a" / "b" / "install.sh").stat().st_mode & 0o777 == 0o700
    runner.put(local, str(remote / "keep.sh"))
    assert (remote / "keep.sh").stat().st_mode & 0o777 == 0o754

    runner.get(str(remote / "a" / "b" / "install.sh"), tmp_path / "back" / "copy.sh")
    assert (tmp_path / "back" / "copy.sh").read_bytes() == local.read_bytes()
    with pytest.raises(SSHError, match="no such file"):
        runner.get(str(remote / "missing"), tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()

    runner.write_file(str(remote / "secret.env"), b"TOKEN=1\n")
    assert (remote / "secret.env").stat().st_mode & 0o777 == 0o600
    assert runner.read_file(str(remote / "secret.env")) == b"TOKEN=1\n"
    assert runner.read_file(str(remote / "missing")) is None

    (remote / "file").write_text("x")
    with pytest.raises(SSHError, match="host0"):
        runner.put(local, str(remote / "file" / "under-a-file"))


def test_temp_dir_and_remove_tree(
    sshd_hosts_session: SSHFixture, pool_factory: Callable[[SSHSettings], SSHPool]
) -> None:
    [server] = sshd_hosts_session(1)
    runner = pool_factory(settings(sshd_hosts_session)).runner(host(server))
    folder = runner.make_temp_dir()
    assert Path(folder).is_dir() and Path(folder).stat().st_mode & 0o777 == 0o700
    runner.write_file(f"{folder}/x", b"1")
    runner.remove_tree(folder)
    assert not Path(folder).exists()
    runner.remove_tree(folder)  # already gone: fine
    with pytest.raises(ValueError, match="refusing"):
        runner.remove_tree("/")


def test_glob(
    sshd_hosts_session: SSHFixture,
    pool_factory: Callable[[SSHSettings], SSHPool],
    tmp_path: Path,
) -> None:
    [server] = sshd_hosts_session(1)
    runner = pool_factory(settings(sshd_hosts_session)).runner(host(server))
    for name in [
        "a.txt",
        "b.txt",
        "we ird $(x) 'q'.txt",
        ".hidden.txt",
        "sub/c.txt",
        "sub/d/e.txt",
    ]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    root = str(tmp_path)
    assert runner.glob("*.txt", root) == ["a.txt", "b.txt", "we ird $(x) 'q'.txt"]
    assert runner.glob("sub/*.txt", root) == ["sub/c.txt"]
    assert runner.glob(f"{root}/[ab].txt", None) == [f"{root}/a.txt", f"{root}/b.txt"]
    assert runner.glob(".*.txt", root) == [".hidden.txt"]
    assert runner.glob("**/*.txt", root) == [
        "a.txt",
        "b.txt",
        "sub/c.txt",
        "sub/d/e.txt",
        "we ird $(x) 'q'.txt",
    ]
    assert runner.glob("nothing-*", root) == []
    assert runner.glob("*", str(tmp_path / "missing")) == []
    marker = tmp_path / "pwned"
    for hostile in [f"*; touch {marker}", f"$(touch {marker})", f"`touch {marker}`"]:
        assert runner.glob(hostile, root) == []
    assert not marker.exists()


# -- targets check -------------------------------------------------------------------------------


def test_check_host(sshd_hosts_session: SSHFixture, tmp_path: Path) -> None:
    [server] = sshd_hosts_session(1)
    good = check_host(host(server), settings(sshd_hosts_session))
    assert good.ok and good.reachable and good.host_key_known and good.login
    assert good.address == f"127.0.0.1:{server.port}"
    assert good.host_key == f"ssh-ed25519 {server.host_key_fingerprint}"
    assert good.round_trip_ms is not None and good.round_trip_ms > 0

    empty = tmp_path / "known_hosts"
    empty.write_text("")
    unknown = check_host(host(server), settings(sshd_hosts_session, known_hosts_file=str(empty)))
    assert unknown.reachable and not unknown.host_key_known and not unknown.login
    assert unknown.error is not None and "not known" in unknown.error

    closed = check_host(
        Host(name="gone", address="127.0.0.1", port=free_port()), SSHSettings(ssh_config="")
    )
    assert not closed.reachable and not closed.ok
    assert closed.error is not None and "refused" in closed.error
