"""Real `sshd` servers on 127.0.0.1 for the SSH tests: nothing about SSH is mocked.

Each server is its own `sshd -D` child with its own port, host key, config and log, so a test can
kill one host, count the connections another accepted, or put a third behind a jump host. Every
process a server spawns (the listener, its pre-auth children, the login sessions and whatever those
start) carries a per-server token in its environment, which is how teardown finds and stops the
session processes that outlive the listener.

Password logins: without PAM, sshd checks passwords against /etc/shadow, which only works when the
tests run as root and the user has a real password hash. Setting one would change the machine's
accounts, so `password_auth=True` only turns password authentication on; tests can check that a
password is tried and refused, not that one succeeds.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import getpass
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd")
START_TIMEOUT = 10.0
STOP_TIMEOUT = 3.0
TOKEN_VAR = "ANSFLOW_TEST_SSHD"


def find_sshd() -> str | None:
    """sshd must be started by absolute path (it re-executes itself for every connection)."""
    for candidate in SSHD_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("sshd")
    return str(Path(found).resolve()) if found else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fingerprint_of_public_key(line: str) -> str:
    """OpenSSH's `SHA256:...` form, computed here so tests can compare with error messages."""
    blob = base64.b64decode(line.split()[1])
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii")
    return "SHA256:" + digest.rstrip("=")


def generate_key(path: Path, comment: str = "ansflow-test") -> subprocess.Popen[bytes]:
    """Start ssh-keygen; the caller waits, so several keys are made at once."""
    return subprocess.Popen(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def wait_keygen(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        _, err = proc.communicate(timeout=30)
        if proc.returncode != 0:
            raise RuntimeError(f"ssh-keygen failed: {err.decode(errors='replace')}")


def _die_with_parent() -> None:
    """Runs in the sshd child before exec: if pytest itself is killed, its servers go too."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def _proc_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _parent_pid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # NOTE: the command name may hold spaces and parentheses; the fields after the last ")" do not.
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[1])


def _command_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks ("" when gone): a reused pid has another one."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _has_token(pid: int, token: bytes) -> bool:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return token in environ.split(b"\0")


def processes_of(listener: int | None, token: str) -> set[int]:
    """The listener's descendants plus every process tagged with the server's token."""
    if not Path("/proc").is_dir():
        return {listener} if listener else set()
    tag = f"{TOKEN_VAR}={token}".encode()
    children: dict[int, list[int]] = {}
    found: set[int] = set()
    for pid in _proc_pids():
        if pid == os.getpid():
            continue
        parent = _parent_pid(pid)
        if parent is not None:
            children.setdefault(parent, []).append(pid)
        if _has_token(pid, tag):
            found.add(pid)
    if listener is not None:
        stack = [listener]
        while stack:
            pid = stack.pop()
            found.add(pid)
            stack.extend(children.get(pid, []))
    found.discard(os.getpid())
    return found


def _signal_all(pids: set[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


@dataclass
class SSHServer:
    """One sshd: its port, keys and log; `kill()` simulates the machine dying."""

    fixture: SSHFixture
    name: str
    port: int
    directory: Path
    password_auth: bool = False
    proxy_jump: str | None = None
    log_level: str = "VERBOSE"
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def host_key_path(self) -> Path:
        return self.directory / "host_key"

    @property
    def host_public_key(self) -> str:
        return (self.directory / "host_key.pub").read_text().strip()

    @property
    def host_key_fingerprint(self) -> str:
        return fingerprint_of_public_key(self.host_public_key)

    @property
    def known_hosts_line(self) -> str:
        key_type, blob = self.host_public_key.split()[:2]
        return f"[127.0.0.1]:{self.port} {key_type} {blob}"

    @property
    def log_path(self) -> Path:
        return self.directory / "sshd.log"

    @property
    def config_path(self) -> Path:
        return self.directory / "sshd_config"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def remote_tmp(self) -> Path:
        """The sessions' TMPDIR: what remote commands leave in temporary folders is this
        server's alone, so a test can count it while other tests use /tmp."""
        return self.directory / "tmp"

    def temp_folders(self) -> list[Path]:
        """ansflow's temporary folders on this host (`ansflow.*` under its TMPDIR)."""
        return sorted(self.remote_tmp.glob("ansflow.*"))

    def write_config(self) -> None:
        lines = [
            f"ListenAddress 127.0.0.1:{self.port}",
            f"HostKey {self.host_key_path}",
            f"PidFile {self.directory / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.fixture.authorized_keys_path}",
            "UsePAM no",
            f"PasswordAuthentication {'yes' if self.password_auth else 'no'}",
            "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes",
            "PermitRootLogin yes",
            "StrictModes no",
            f"LogLevel {self.log_level}",
            "MaxStartups 100:30:200",
            "AllowTcpForwarding yes",
            "UseDNS no",
            "PrintMotd no",
            # NOTE: bash sources ~/.bashrc for sshd sessions only at shell level 1; a slow
            # .bashrc (pyenv init, nvm...) would otherwise add 100+ ms to every test command.
            f"SetEnv {TOKEN_VAR}={self.token} SHLVL=1 TMPDIR={self.remote_tmp}",
            "Subsystem sftp internal-sftp",
        ]
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        """Launch without waiting; `wait_ready` waits, so several servers start at once."""
        self.write_config()
        self.remote_tmp.mkdir(mode=0o700, exist_ok=True)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), TOKEN_VAR: self.token}
        stderr = (self.directory / "sshd.stderr").open("ab")
        try:
            self.proc = subprocess.Popen(
                [self.fixture.sshd, "-D", "-f", str(self.config_path), "-E", str(self.log_path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env=env,
                cwd=self.directory,
                # NOTE: the parent-death signal follows the forking *thread*; fixtures run in
                # pytest's main thread, which lives as long as the session.
                preexec_fn=_die_with_parent if os.uname().sysname == "Linux" else None,
            )
        finally:
            stderr.close()

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Poll the port until sshd accepts; fail with its log when it died instead."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd for {self.name} exited early:\n{self.startup_log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"sshd for {self.name} did not listen:\n{self.startup_log()}")
            time.sleep(0.01)

    def startup_log(self) -> str:
        texts = []
        for path in (self.log_path, self.directory / "sshd.stderr"):
            with contextlib.suppress(OSError):
                texts.append(path.read_text(errors="replace"))
        return "\n".join(texts)

    def processes(self) -> set[int]:
        """Pids that belong to this server right now (listener, connections, sessions)."""
        listener = self.proc.pid if self.proc and self.proc.poll() is None else None
        return processes_of(listener, self.token)

    def session_processes(self) -> set[int]:
        return self.processes() - ({self.proc.pid} if self.proc else set())

    def kill(self) -> None:
        """SIGKILL the listener and every session: the host vanishes mid-step."""
        pids = self.processes()
        # sshd's own processes first: a session shell killed before them would let sshd report
        # a clean exit to the client instead of the connection just vanishing.
        daemons = {pid for pid in pids if _command_name(pid) == "sshd"}
        _signal_all(daemons, signal.SIGKILL)
        _signal_all(pids - daemons, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=STOP_TIMEOUT)
        self._wait_gone(pids, STOP_TIMEOUT)

    def freeze(self) -> None:
        """SIGSTOP the server and its sessions: a host that stops answering but keeps its TCP."""
        _signal_all(self.processes(), signal.SIGSTOP)

    def thaw(self) -> None:
        _signal_all(self.processes(), signal.SIGCONT)

    def local_ports(self) -> set[int]:
        """Local ports of the TCP sockets this server's processes hold (its outgoing
        connections included), e.g. to prove a forwarded connection came from this jump host."""
        inodes = set()
        for pid in self.processes():
            with contextlib.suppress(OSError):
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    with contextlib.suppress(OSError):
                        target = os.readlink(f"/proc/{pid}/fd/{fd}")
                        if target.startswith("socket:["):
                            inodes.add(target[8:-1])
        ports = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(OSError):
                for row in Path(table).read_text().splitlines()[1:]:
                    fields = row.split()
                    if len(fields) > 9 and fields[9] in inodes:
                        ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        return ports

    def restart(self) -> None:
        """Start again on the same port with the same host key (after `kill` or `stop`)."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"{self.name} is still running")
        self.start()
        self.wait_ready()

    def stop(self) -> None:
        """SIGTERM the listener (SIGKILL after a deadline), then end its leftover sessions."""
        # NOTE: sessions still open outlive the listener and are re-parented to init, where they
        # are no longer its descendants: note them now, so they are killed too.
        sessions = {pid: _start_time(pid) for pid in self.session_processes()}
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT)
        leftovers = processes_of(None, self.token) | {
            pid for pid, started in sessions.items() if started and _start_time(pid) == started
        }
        _signal_all(leftovers, signal.SIGKILL)
        self._wait_gone(leftovers, STOP_TIMEOUT)

    @staticmethod
    def _wait_gone(pids: set[int], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for pid in pids:
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                # NOTE: zombies keep their /proc entry until reaped by their parent; a killed
                # session's parent is killed too, so init reaps it almost at once.
                try:
                    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                except OSError:
                    break
                if state == "Z":
                    break
                time.sleep(0.005)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def connection_count(self) -> int:
        """Logins this server accepted, counted from its log."""
        return self.log_text().count("Accepted publickey")


class SSHFixture:
    """A set of sshd servers sharing a client key, a known_hosts file and an ssh_config file.

    Call it with a count to start that many more servers: `sshd_hosts(3)`.
    """

    def __init__(self, root: Path, sshd: str) -> None:
        self.root = root
        self.sshd = sshd
        self.user = getpass.getuser()
        self.servers: list[SSHServer] = []
        self._lock = threading.Lock()
        root.mkdir(parents=True, exist_ok=True)
        self.client_key_path = root / "client_key"
        self.other_key_path = root / "other_key"
        self.authorized_keys_path = root / "authorized_keys"
        self.known_hosts_path = root / "known_hosts"
        self.ssh_config_path = root / "ssh_config"
        wait_keygen([generate_key(self.client_key_path), generate_key(self.other_key_path)])
        self.authorized_keys_path.write_text((root / "client_key.pub").read_text().strip() + "\n")
        if os.geteuid() == 0:
            # NOTE: a root sshd checks its privilege separation folder exists before listening.
            Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)

    def __call__(
        self,
        n: int,
        *,
        password_auth: bool = False,
        proxy_jump: str | None = None,
        log_level: str = "VERBOSE",
    ) -> list[SSHServer]:
        return self.start(
            n, password_auth=password_auth, proxy_jump=proxy_jump, log_level=log_level
        )

    def start(
        self,
        n: int,
        *,
        password_auth: bool = False,
        proxy_jump: str | None = None,
        log_level: str = "VERBOSE",
    ) -> list[SSHServer]:
        with self._lock:
            first = len(self.servers)
            new = []
            for index in range(first, first + n):
                directory = self.root / f"host{index}"
                directory.mkdir()
                new.append(
                    SSHServer(
                        fixture=self,
                        name=f"host{index}",
                        port=0,
                        directory=directory,
                        password_auth=password_auth,
                        proxy_jump=proxy_jump,
                        log_level=log_level,
                    )
                )
            self.servers.extend(new)
        wait_keygen([generate_key(server.host_key_path, server.name) for server in new])
        for attempt in range(3):
            pending = [server for server in new if server.proc is None]
            for server in pending:
                server.port = free_port()
                server.start()
            failed = []
            for server in pending:
                try:
                    server.wait_ready()
                except RuntimeError:
                    # NOTE: another process may take the port between free_port() and bind();
                    # pick a new one and try again rather than fail the test.
                    if attempt == 2 or "Address already in use" not in server.startup_log():
                        self.stop_all()
                        raise
                    failed.append(server)
            for server in failed:
                server.proc = None
        self.write_client_files()
        return new

    def write_client_files(self) -> None:
        """known_hosts and ssh_config for every server started so far."""
        with self._lock:
            servers = list(self.servers)
        self.known_hosts_path.write_text("".join(s.known_hosts_line + "\n" for s in servers))
        blocks = []
        for server in servers:
            block = [
                f"Host {server.name}",
                "    HostName 127.0.0.1",
                f"    Port {server.port}",
                f"    User {self.user}",
                f"    IdentityFile {self.client_key_path}",
                "    IdentitiesOnly yes",
                f"    UserKnownHostsFile {self.known_hosts_path}",
                "    StrictHostKeyChecking yes",
            ]
            if server.proxy_jump:
                block.append(f"    ProxyJump {server.proxy_jump}")
            blocks.append("\n".join(block))
        self.ssh_config_path.write_text("\n\n".join(blocks) + "\n")

    def stop_all(self) -> None:
        with self._lock:
            servers = list(self.servers)
        for server in servers:
            if server.proc is not None and server.proc.poll() is None:
                server.proc.send_signal(signal.SIGTERM)
        for server in servers:
            server.stop()


def _require_sshd() -> str:
    sshd = find_sshd()
    if sshd is None:
        pytest.skip("sshd is not installed (install openssh-server to run the SSH tests)")
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen is not installed (install openssh-client to run the SSH tests)")
    return sshd


class SharedSSHFixture(SSHFixture):
    """Session-wide servers: `sshd_hosts_session(n)` gives the first n, starting more if needed."""

    def __call__(
        self,
        n: int,
        *,
        password_auth: bool = False,
        proxy_jump: str | None = None,
        log_level: str = "VERBOSE",
    ) -> list[SSHServer]:
        if password_auth or proxy_jump or log_level != "VERBOSE":
            raise ValueError("shared servers use the defaults; use sshd_hosts to configure some")
        missing = n - len(self.servers)
        if missing > 0:
            self.start(missing)
        return self.servers[:n]


@contextlib.contextmanager
def _fixture(root: Path, kind: type[SSHFixture] = SSHFixture) -> Iterator[SSHFixture]:
    fixture = kind(root, _require_sshd())
    try:
        yield fixture
    finally:
        fixture.stop_all()


@pytest.fixture
def sshd_hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHFixture]:
    """Fresh servers for tests that kill, restart or reconfigure them: `sshd_hosts(3)`."""
    with _fixture(tmp_path_factory.mktemp("sshd")) as fixture:
        yield fixture


@pytest.fixture(scope="session")
def sshd_hosts_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHFixture]:
    """Servers shared by the whole session (start-up cost paid once); never kill these."""
    with _fixture(tmp_path_factory.mktemp("sshd-session"), SharedSSHFixture) as fixture:
        yield fixture


def target_block(fixture: SSHFixture, hosts: list[str], **extra: object) -> str:
    """A pipeline's `targets:` with one ssh target `fleet` on the fixture's hosts."""
    lines = [
        "targets:",
        "  fleet:",
        "    type: ssh",
        f"    hosts: {json.dumps(hosts)}",
        f"    ssh_config: {fixture.ssh_config_path}",
        f"    known_hosts_file: {fixture.known_hosts_path}",
    ]
    lines += [f"    {key}: {json.dumps(value)}" for key, value in extra.items()]
    return "\n".join(lines) + "\n"
