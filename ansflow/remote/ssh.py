"""SSH hosts as `Runner`s, over paramiko; the only module that imports paramiko.

One `SSHPool` per run and target keeps ONE connection per host, opened on first use and shared by
every step and thread on that host: each command is a new channel on it, files go through one SFTP
session per connection. A connection that died is replaced on the next use.

How a command runs on the host. The exec request carries a fixed wrapper and the arguments:

    exec sh -c WRAPPER ansflow WORKDIR STDIN_LENGTH ARGV...      (every word quoted with shlex)

so the user's values reach the host only as quoted words, never as shell code. The wrapper

1. prints `ansflow-pgid $$` as the first stdout line. sshd starts every session's command with
   setsid(), so the shell is the leader of a fresh process group whose id is its pid: a cancel
   kills that group (`kill -TERM -PGID`, `-KILL` after KILL_GRACE) from a second channel on the
   same connection, which stops the step and everything it started (except what moved itself to
   another group, e.g. with setsid or a daemon's double fork);
2. reads ONE line from stdin and evals it: `export NAME='value' ...`, built here with shlex.quote
   (a newline in a value travels as `$_ansflow_nl`, made on the host). Values therefore never
   appear in the remote process list (`ps`), in sshd's logs or in a file, and this needs no
   `AcceptEnv` on the server. `read` takes its input byte by byte from the pipe, so the bytes
   after that line are left for the next step;
3. gives the program its stdin: /dev/null when `Command.stdin` is empty, else exactly
   STDIN_LENGTH bytes read with `head -c` into a 0600 `mktemp` file that is opened and deleted
   before the program starts. The client never sends end-of-file and never writes after the
   program may have ended: paramiko can put such a message behind its CLOSE, and sshd answers a
   message for a closed channel by dropping the whole connection (every step on that host);
4. starts a watcher of the channel's stdin (_WATCH), which the wrapper kills when the program
   ends. Seeing the channel close first means ansflow is gone (killed with -9, or the
   connection lost): the watcher stops the step's process group, so the step does not run on
   unseen, and a retry never runs beside the attempt it replaces. What the step started in the
   background and left running when it ended normally (`nohup server &`) is not touched;
5. changes to WORKDIR (empty: the login folder; `~` and `~/...` mean the home folder) and runs
   the program as a child, so a program killed by a signal still yields a status (128 + signal).

The login shell parses the exec line, so it must understand single quotes the POSIX way (sh, bash,
dash, zsh, ksh; csh and fish work unless an argument holds a backslash). The host needs `sh`,
`head -c`, `mktemp`, `wc`, `rm` and `kill`, which every Linux, BSD and macOS has.

Script steps. A step's script (`run_script`: shell, build, test, deploy, security_scan) is one
exec of _SCRIPT_WRAPPER, which does steps 1-5 above and, in between, makes the attempt's own
folder (`mktemp -d` under the host's $TMPDIR, named on the pgid line), writes the script into it
from stdin and creates the empty $ANSFLOW_OUTPUT file. After the shell ends it prints an end line
with a random token and the size of the outputs file. No outputs: the folder is removed there and
then, and the step took no SFTP and no other exec. Outputs: they are read over SFTP and the folder
is removed when the pool closes. A step that did not end normally (cancel, timeout, lost
connection) leaves its folder to the pool's close or to the host's next connection.

Other step folders. A step type that needs a folder for more than its script (notify's command,
fetch_code) gets a subfolder of the connection's private folder, which is made on first such use
(`mktemp -d`); the subfolder is made and removed over SFTP (`rm -rf` only when the step left more
than ansflow wrote there). The private folder goes when the pool closes, hosts in parallel,
waiting at most CLOSE_GIVE_UP for each; that of a connection that was lost is removed by the
host's next connection, before anything else runs there.
"""

from __future__ import annotations

import base64
import errno
import getpass
import hashlib
import hmac
import logging
import os
import posixpath
import re
import shlex
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import partial
from pathlib import Path
from typing import Any

from ansflow.cancel import CancelScope
from ansflow.inventory import Host
from ansflow.remote.base import (
    Command,
    LineSink,
    Runner,
    RunnerError,
    Script,
    ScriptResult,
    shell_prefix,
)
from ansflow.secrets import keep_back, pieces, safe_cut

# NOTE: paramiko.config imports invoke (and with it unittest.mock and asyncio, 40-70 ms) only for
# ssh_config's `Match exec`: it is kept out here, and `_enable_match_exec` imports it when a
# config needs it.
_BLOCK_INVOKE = "invoke" not in sys.modules and "paramiko" not in sys.modules
if _BLOCK_INVOKE:
    sys.modules["invoke"] = None  # type: ignore[assignment]
try:
    import paramiko
finally:
    if _BLOCK_INVOKE and "invoke" in sys.modules and sys.modules["invoke"] is None:
        del sys.modules["invoke"]

# NOTE: paramiko logs transport failures at ERROR level; without a handler Python's last-resort
# handler would print them (with tracebacks) over ansflow's own output. Errors reach users as
# SSHError instead.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

KNOWN_HOSTS_POLICIES = ("strict", "accept-new", "off")
#: Longest line passed to `on_line`; longer ones are split so a binary blob cannot exhaust memory.
MAX_LINE = 64 * 1024
#: sshd's default MaxSessions is 10 per connection: leave room for SFTP and a kill channel.
MAX_CHANNELS = 8
#: A cancelled step's processes get this long after SIGTERM before SIGKILL.
KILL_GRACE = 2.0
#: A cancel gives up on a host that does not answer within this long and drops the connection.
CANCEL_GIVE_UP = 10.0
#: How long the end of a run waits for hosts to remove ansflow's folders.
CLOSE_GIVE_UP = 2.0
#: Limit for small helper commands (mktemp, rm, glob) and SFTP calls.
HELPER_TIMEOUT = 120.0
#: A host that answers none of this many keepalives in a row is given up, as OpenSSH's
#: ServerAliveCountMax: a frozen machine keeps its TCP connection, so only a reply proves it lives.
KEEPALIVE_COUNT = 3
GLOBAL_KNOWN_HOSTS = Path("/etc/ssh/ssh_known_hosts")
DEFAULT_IDENTITIES = ("id_ed25519", "id_ecdsa", "id_rsa")

_PGID_LINE = re.compile(rb"^ansflow-pgid ([0-9]+)(?: (/.+))?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

#: Started once the wrapper has read what the client sends: a watcher of the channel's stdin
#: (fd 3), which ends only when the channel goes. The wrapper kills it when the program ended;
#: if it sees the end first, ansflow is gone (killed, or the connection lost): it stops the
#: step's process group (TERM, KILL 2 s later), so no step runs on with nobody to report to.
_WATCH = (
    "exec 3<&0; { while IFS= read -r _ansflow_x; do :; done; trap '' TERM; "
    "kill -TERM -$$ 2>/dev/null; sleep 2; kill -KILL -$$ 2>/dev/null; } <&3 >/dev/null 2>&1 & "
    "_ansflow_w=$!; exec 3<&-; "
)
_UNWATCH = 'kill -KILL "$_ansflow_w" 2>/dev/null; '

_WRAPPER = (
    "printf 'ansflow-pgid %s\\n' \"$$\"; "
    'IFS= read -r _ansflow_env || exit 125; eval "$_ansflow_env" || exit 125; '
    "unset _ansflow_env _ansflow_nl; "
    "_ansflow_dir=$1; _ansflow_in=$2; shift 2; "
    'if [ "$_ansflow_in" != 0 ]; then _ansflow_f=$(mktemp) || exit 125; '
    'head -c "$_ansflow_in" >"$_ansflow_f" || { rm -f "$_ansflow_f"; exit 125; }; fi; '
    + _WATCH
    + 'if [ "$_ansflow_in" = 0 ]; then exec </dev/null; '
    'else exec <"$_ansflow_f"; rm -f "$_ansflow_f"; fi; '
    "unset _ansflow_in _ansflow_f; "
    'case $_ansflow_dir in "~") _ansflow_dir=$HOME;; '
    '"~/"*) _ansflow_dir=$HOME/${_ansflow_dir#"~/"};; esac; '
    'if [ -n "$_ansflow_dir" ]; then cd -- "$_ansflow_dir" || { ' + _UNWATCH + "exit 1; }; fi; "
    'unset _ansflow_dir; "$@"; _ansflow_s=$?; ' + _UNWATCH + 'exit "$_ansflow_s"'
)

#: A step's script in one exec (`SSHRunner.run_script`), after the same first steps as _WRAPPER:
#: its own folder (`mktemp -d`, named on the pgid line so a lost step's folder can be removed
#: later), the script from stdin (exactly SCRIPT_LENGTH bytes) and an empty $ANSFLOW_OUTPUT file
#: there; then the shell with the script's path; then the END line with the size of the outputs.
#: A folder with no outputs is removed at once; one with outputs stays until they are read.
#:     exec sh -c SCRIPT_WRAPPER ansflow WORKDIR SCRIPT_LENGTH END SHELL...
_SCRIPT_WRAPPER = (
    '_ansflow_t=$(mktemp -d "${TMPDIR:-/tmp}/ansflow.XXXXXXXXXX") || exit 125; '
    'printf \'ansflow-pgid %s %s\\n\' "$$" "$_ansflow_t"; '
    'IFS= read -r _ansflow_env || exit 125; eval "$_ansflow_env" || exit 125; '
    "unset _ansflow_env _ansflow_nl; "
    'head -c "$2" >"$_ansflow_t/script" && : >"$_ansflow_t/output" || exit 125; '
    + _WATCH
    + "exec </dev/null; ANSFLOW_OUTPUT=$_ansflow_t/output; export ANSFLOW_OUTPUT; "
    "_ansflow_dir=$1; _ansflow_end=$3; shift 3; "
    'case $_ansflow_dir in "~") _ansflow_dir=$HOME;; '
    '"~/"*) _ansflow_dir=$HOME/${_ansflow_dir#"~/"};; esac; '
    'if [ -n "$_ansflow_dir" ]; then '
    'cd -- "$_ansflow_dir" || { ' + _UNWATCH + 'rm -rf -- "$_ansflow_t"; exit 1; }; fi; '
    'unset _ansflow_dir; "$@" "$_ansflow_t/script"; _ansflow_s=$?; '
    + _UNWATCH
    + 'if [ -s "$_ansflow_t/output" ]; then _ansflow_n=$(wc -c <"$_ansflow_t/output"); '
    'else _ansflow_n=0; rm -rf -- "$_ansflow_t"; fi; '
    'printf "%s %s\\n" "$_ansflow_end" "$_ansflow_n"; exit "$_ansflow_s"'
)

_KILL = (
    'kill -TERM -"$1" 2>/dev/null || exit 0; _i=0; '
    'while kill -0 -"$1" 2>/dev/null && [ "$_i" -lt "$2" ]; do _i=$((_i+1)); sleep 0.1; done; '
    'kill -KILL -"$1" 2>/dev/null; exit 0'
)

_GLOB = (
    'if [ -n "$1" ]; then '
    'case $1 in "~") cd || exit 3;; "~/"*) cd -- "$HOME/${1#"~/"}" || exit 3;; '
    '*) cd -- "$1" || exit 3;; esac; fi; '
    'p=$2; case $p in "~/"*) p=$HOME/${p#"~/"};; esac; '
    'IFS=; for f in $p; do if [ -e "$f" ] || [ -L "$f" ]; then printf \'%s\\0\' "$f"; fi; done'
)


class SSHError(RunnerError):
    """An SSH host could not be reached, logged into or kept; the message names the host."""

    def __init__(self, message: str, host: str | None = None, kind: str = "error") -> None:
        super().__init__(message)
        self.host = host
        #: resolve | connect | handshake | host_key_unknown | host_key_changed | auth | lost |
        #: channel | config | file | error: lets `check_host` tell how far a connection got.
        self.kind = kind


def _no_answer(endpoint: _Endpoint, timeout: float) -> str:
    return f"host {endpoint.label} did not answer the SSH handshake within {timeout:g}s"


@dataclass(frozen=True)
class SSHSettings:
    """A pipeline's ssh target options (see SPEC section 1, `targets`)."""

    user: str | None = None
    identity_file: str | None = None
    password: str | None = None
    #: None: ~/.ssh/config when present; "": no ssh_config at all.
    ssh_config: str | None = None
    known_hosts: str = "strict"
    known_hosts_file: str | None = None
    connect_timeout: float = 10.0
    keepalive: float = 15.0

    def __post_init__(self) -> None:
        if self.known_hosts not in KNOWN_HOSTS_POLICIES:
            raise ValueError(
                f"known_hosts must be one of {', '.join(KNOWN_HOSTS_POLICIES)}, "
                f"not {self.known_hosts!r}"
            )


@dataclass(frozen=True)
class HostCheck:
    """What `ansflow targets check` reports for one host."""

    host: str
    address: str
    user: str | None
    reachable: bool
    host_key_known: bool
    host_key: str | None
    login: bool
    round_trip_ms: float | None
    error: str | None
    #: The address connected to, without the port (`address` is `hostname:port`, for messages).
    hostname: str | None = None
    port: int | None = None
    #: "known", "unknown" or "changed" against known_hosts; None when no key was seen.
    host_key_status: str | None = None

    @property
    def ok(self) -> bool:
        return self.login and self.error is None


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's `SHA256:base64` form (no padding), as `ssh-keygen -l` prints it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def describe_key(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {fingerprint(key)}"


# -- where and how to connect --------------------------------------------------------------------


@dataclass(frozen=True)
class _Endpoint:
    """A host after ssh_config and inventory are applied: everything needed to connect."""

    label: str  # "web1 (10.0.0.1:22)", used in every message
    name: str
    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...]
    explicit_identities: frozenset[str]
    use_agent: bool
    known_hosts_files: tuple[str, ...]
    host_key_alias: str | None
    proxy_jump: str | None
    proxy_command: str | None

    @property
    def host_key_name(self) -> str:
        if self.host_key_alias:
            return self.host_key_alias
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"


def _address(hostname: str, port: int) -> str:
    return f"[{hostname}]:{port}" if ":" in hostname else f"{hostname}:{port}"


def _label(name: str, hostname: str, port: int) -> str:
    return f"{name} ({_address(hostname, port)})"


def _load_ssh_config(settings: SSHSettings) -> paramiko.SSHConfig | None:
    if settings.ssh_config == "":
        return None
    explicit = settings.ssh_config is not None
    path = Path(os.path.expanduser(settings.ssh_config or "~/.ssh/config"))
    if not explicit and not path.is_file():
        return None
    try:
        text = path.read_text()
    except OSError as error:
        raise SSHError(f"cannot read ssh_config {path}: {error.strerror}", kind="config") from None
    except UnicodeDecodeError as error:
        raise SSHError(f"cannot parse ssh_config {path}: {error}", kind="config") from None
    if _MATCH_EXEC.search(text):
        _enable_match_exec()
    try:
        return paramiko.SSHConfig.from_text(text)
    except Exception as error:  # NOTE: paramiko's parse errors have no common base
        raise SSHError(f"cannot parse ssh_config {path}: {error}", kind="config") from None


#: A `Match` line that may use `exec` (a false match only costs importing invoke).
_MATCH_EXEC = re.compile(r"^[ \t]*match\b.*exec", re.IGNORECASE | re.MULTILINE)


def _enable_match_exec() -> None:
    """Give paramiko the invoke it was kept from importing (see the imports above)."""
    config = paramiko.config
    if getattr(config, "invoke", None) is not None:
        return
    try:
        import invoke
    except ImportError as error:
        # paramiko raises this when a `Match exec` is looked up: say what is really missing.
        config.invoke_import_error = error  # type: ignore[attr-defined]
        return
    config.invoke = invoke  # type: ignore[attr-defined]


def _lookup(config: paramiko.SSHConfig | None, name: str) -> dict[str, Any]:
    if config is None:
        return {"hostname": name}
    try:
        return dict(config.lookup(name))
    except Exception as error:  # NOTE: e.g. `Match exec` needing an absent library
        raise SSHError(
            f"ssh_config could not be applied to host {name}: {error}", name, "config"
        ) from None


def _split_hop(spec: str) -> tuple[str | None, str, int | None]:
    """`[user@]host[:port]` of a ProxyJump hop (also `[v6]:port` and `ssh://` URIs)."""
    spec = spec.strip()
    spec = spec.removeprefix("ssh://")
    user = None
    if "@" in spec:
        user, spec = spec.rsplit("@", 1)
    port = None
    match = re.match(r"^\[(.+)\](?::([0-9]+))?$", spec) or re.match(
        r"^([^:]+)(?::([0-9]+))?$", spec
    )
    if match:
        spec = match.group(1)
        port = int(match.group(2)) if match.group(2) else None
    return user, spec, port


# -- known_hosts ---------------------------------------------------------------------------------


class _KnownHosts:
    """known_hosts files read as OpenSSH does (plain and hashed names), appended to for accept-new.

    Lines paramiko cannot read (unknown key types, markers such as @cert-authority, wildcards)
    are skipped, as OpenSSH skips lines it does not understand.
    """

    _write_lock = threading.Lock()

    def __init__(self, user_files: tuple[str, ...]) -> None:
        self.user_files = tuple(Path(os.path.expanduser(f)) for f in user_files)
        files = [*self.user_files]
        if GLOBAL_KNOWN_HOSTS not in files:
            files.append(GLOBAL_KNOWN_HOSTS)
        self.files = tuple(files)
        self._lock = threading.Lock()
        self._cache: dict[
            Path, tuple[tuple[int, int], list[tuple[list[str], paramiko.PKey, str]]]
        ] = {}

    def _entries(self, path: Path) -> list[tuple[list[str], paramiko.PKey, str]]:
        try:
            info = path.stat()
        except OSError:
            return []
        mtime = (info.st_mtime_ns, info.st_size)
        cached = self._cache.get(path)
        if cached and cached[0] == mtime:
            return cached[1]
        entries = []
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            return []
        for number, line in enumerate(lines, start=1):
            text = line.strip()
            if not text or text.startswith(("#", "@")):
                continue
            try:
                entry = paramiko.hostkeys.HostKeyEntry.from_line(text, number)
            except Exception:  # NOTE: a line OpenSSH would also skip
                continue
            if entry is not None and entry.key is not None:
                entries.append((list(entry.hostnames), entry.key, f"{path}:{number}"))
        self._cache[path] = (mtime, entries)
        return entries

    def lookup(self, name: str) -> list[tuple[paramiko.PKey, str]]:
        """Every key recorded for `name`, with `file:line` for messages."""
        found = []
        with self._lock:
            for path in self.files:
                for names, key, where in self._entries(path):
                    if any(_name_matches(name, pattern) for pattern in names):
                        found.append((key, where))
        return found

    def add(self, name: str, key: paramiko.PKey) -> None:
        if not self.user_files:
            return
        path = self.user_files[0]
        line = f"{name} {key.get_name()} {key.get_base64()}\n"
        with self._write_lock:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            needs_newline = path.exists() and path.stat().st_size > 0
            if needs_newline:
                with path.open("rb") as handle:
                    handle.seek(-1, os.SEEK_END)
                    needs_newline = handle.read(1) != b"\n"
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a") as handle:
                handle.write(("\n" if needs_newline else "") + line)


def _name_matches(name: str, pattern: str) -> bool:
    if pattern.startswith("|1|"):
        hashed = paramiko.HostKeys.hash_host(name, pattern)
        return hmac.compare_digest(hashed.encode(), pattern.encode())
    return pattern == name


# -- connections ---------------------------------------------------------------------------------


@dataclass
class _Progress:
    """How far a connection attempt got, for `check_host`."""

    reachable: bool = False
    host_key: str | None = None
    host_key_known: bool = False


class _Connection:
    """One authenticated transport to one host, plus its lazily opened SFTP session."""

    def __init__(
        self,
        endpoint: _Endpoint,
        transport: paramiko.Transport,
        jump: _Connection | None,
    ) -> None:
        self.endpoint = endpoint
        self.transport = transport
        self.jump = jump
        self.channels = threading.BoundedSemaphore(MAX_CHANNELS)
        self._sftp: paramiko.SFTPClient | None = None
        self.sftp_lock = threading.Lock()
        self._closing = threading.Event()
        #: Set when the host stopped answering keepalives: why the connection was closed.
        self.silence: str | None = None
        #: The connection's private folder on the host (`mktemp -d`, made on first use); each
        #: step attempt's folder is a subfolder of it. `bases` also holds earlier ones, if the
        #: current one vanished. `retired`: the pool left them to the next connection.
        self.base: str | None = None
        self.bases: list[str] = []
        self.base_lock = threading.Lock()
        self.retired = False
        #: Subfolders of `base` not removed yet -> the names ansflow wrote into each.
        self.temp_dirs: dict[str, set[str]] = {}
        self._temp_lock = threading.Lock()
        self._temp_count = 0

    @property
    def label(self) -> str:
        return self.endpoint.label

    def alive(self) -> bool:
        return self.transport.is_active()

    def open_channel(self, timeout: float) -> paramiko.Channel:
        """A new session channel. sshd frees a closed session's slot a moment after the close,
        so a refusal on a live connection (usually "no more sessions", MaxSessions) is retried
        until `timeout`."""
        deadline = time.monotonic() + timeout
        pause = 0.01
        while True:
            try:
                return self.transport.open_session(timeout=max(0.1, deadline - time.monotonic()))
            except paramiko.SSHException as error:
                # NOTE: paramiko keeps one "last error" per transport, so a thread whose open
                # failed may get a generic "Unable to open channel" instead of the refusal.
                if self.alive() and time.monotonic() + pause < deadline:
                    time.sleep(pause)
                    pause = min(pause * 2, 0.5)
                    continue
                failure: BaseException = error
            except (EOFError, OSError) as error:
                failure = error
            if not self.alive():
                raise self.lost() from None
            raise SSHError(
                f"host {self.label} refused a new session: {_reason(failure)}",
                self.endpoint.name,
                "channel",
            ) from None

    def lost(self, doing: str = "") -> SSHError:
        why = f": {self.silence}" if self.silence else ""
        return SSHError(
            f"connection to host {self.label} lost{doing}{why}", self.endpoint.name, "lost"
        )

    def start_keepalive(
        self, interval: float, on_silence: Callable[[_Connection], None] | None = None
    ) -> None:
        """Ask the host for a reply every `interval` seconds; close the connection (and call
        `on_silence`) when KEEPALIVE_COUNT intervals pass without one.

        paramiko's own keepalive wants no reply, and the kernel of a frozen host still
        acknowledges TCP data, so without a reply a step on such a host would wait forever.
        """
        if interval <= 0:
            return
        threading.Thread(
            target=self._keepalive,
            args=(interval, on_silence),
            name=f"ansflow-ssh-keepalive-{self.endpoint.name}",
            daemon=True,
        ).start()

    def _keepalive(self, interval: float, on_silence: Callable[[_Connection], None] | None) -> None:
        limit = interval * KEEPALIVE_COUNT
        while not self._closing.wait(interval):
            if not self.alive():
                return
            answered = threading.Event()
            threading.Thread(
                target=self._ask, args=(answered,), name="ansflow-ssh-keepalive-probe", daemon=True
            ).start()
            if answered.wait(limit) or self._closing.is_set():
                continue
            self.silence = f"no answer to keepalives for {limit:g}s"
            if on_silence is not None:
                on_silence(self)
            self.close()
            return

    def _ask(self, answered: threading.Event) -> None:
        """One keepalive; returns when the host replied or the connection closed."""
        # NOTE: OpenSSH answers an unknown global request that wants a reply with
        # REQUEST_FAILURE, which is all this needs: any reply proves the host still runs. The
        # call waits without a limit, but returns once the transport is closed.
        with suppress(Exception):
            self.transport.global_request("keepalive@openssh.com", wait=True)
        answered.set()

    def sftp(self) -> paramiko.SFTPClient:
        """The connection's SFTP session; the caller holds `sftp_lock`."""
        if self._sftp is None:
            try:
                self._sftp = paramiko.SFTPClient.from_transport(self.transport)
            except (paramiko.SSHException, EOFError, OSError) as error:
                if not self.alive():
                    raise self.lost(" while opening SFTP") from None
                raise SSHError(
                    f"host {self.label} refused SFTP: {_reason(error)}",
                    self.endpoint.name,
                    "channel",
                ) from None
            if self._sftp is None:
                raise SSHError(f"host {self.label} refused SFTP", self.endpoint.name, "channel")
            channel = self._sftp.get_channel()
            if channel is not None:
                channel.settimeout(HELPER_TIMEOUT)
        return self._sftp

    # -- temporary folders -------------------------------------------------------------------

    def next_temp(self, base: str) -> str:
        with self._temp_lock:
            self._temp_count += 1
            return f"{base}/{self._temp_count}"

    def add_temp(self, path: str) -> None:
        with self._temp_lock:
            self.temp_dirs[path] = set()

    def take_temp(self, path: str) -> set[str] | None:
        """Forget a subfolder made by this connection: the names written into it, or None when
        it is not one."""
        with self._temp_lock:
            return self.temp_dirs.pop(path, None)

    def note_file(self, path: str) -> None:
        """Remember a file written into one of the subfolders, so removing it needs no listing."""
        folder, name = posixpath.split(path)
        with self._temp_lock:
            names = self.temp_dirs.get(folder)
            if names is not None:
                names.add(name)

    def capture(
        self, channel: paramiko.Channel, argv: list[str], what: str
    ) -> tuple[int, bytes, bytes]:
        """Run a small helper command on `channel` and collect its output."""
        try:
            channel.settimeout(HELPER_TIMEOUT)
            channel.exec_command("exec " + shlex.join(argv))
            out = _read_all(channel.recv)
            err = _read_all(channel.recv_stderr)
            status = channel.recv_exit_status()
        except (paramiko.SSHException, OSError, EOFError) as error:
            if not self.alive():
                raise self.lost(f" while {what}") from None
            raise SSHError(
                f"{what} on host {self.label} failed: {_reason(error)}",
                self.endpoint.name,
                "channel",
            ) from None
        if status == -1 and not _still_alive(self):
            raise self.lost(f" while {what}")
        return status, out, err

    def remove_bases(self, timeout: float, leftovers: list[str]) -> None:
        """Remove the private folders (and `leftovers` of earlier connections) at the end of the
        run: one SFTP rmdir when every step's subfolder is gone already, else `rm -rf`."""
        bases = list(self.bases)
        if self.retired or not self.alive():
            return
        with self._temp_lock:
            clean = not self.temp_dirs and len(bases) == 1 and not leftovers
        if clean:
            try:
                with self.sftp_lock:
                    self.sftp().rmdir(bases[0])
            except FileNotFoundError:
                pass
            except (SSHError, paramiko.SSHException, OSError, EOFError):
                clean = False
        paths = [*bases, *leftovers]
        if not clean and paths:
            if not self.channels.acquire(timeout=timeout):
                return
            try:
                with closing(self.open_channel(timeout)) as channel:
                    self.capture(channel, ["rm", "-rf", "--", *paths], "removing its folders")
            except SSHError:
                return
            finally:
                self.channels.release()
        self.bases.clear()
        self.base = None

    def open_sftp(self) -> None:
        """Open the SFTP session ahead of its first use; a failure shows at that use."""
        with self.sftp_lock, suppress(SSHError):
            self.sftp()

    def close(self) -> None:
        self._closing.set()
        with suppress(Exception):
            if self._sftp is not None:
                self._sftp.close()
        with suppress(Exception):
            self.transport.close()


def _remove_bases(connections: list[tuple[_Connection, list[str]]]) -> None:
    """Remove the connections' private folders (and the given leftovers), hosts in parallel. A
    host that does not answer within CLOSE_GIVE_UP keeps them: the end of a run must not wait."""
    deadline = time.monotonic() + CLOSE_GIVE_UP
    threads = []
    for conn, leftovers in connections:
        if (conn.bases or leftovers) and not conn.retired and conn.alive():
            thread = threading.Thread(
                target=conn.remove_bases,
                args=(CLOSE_GIVE_UP, leftovers),
                name=f"ansflow-ssh-cleanup-{conn.endpoint.name}",
                daemon=True,
            )
            thread.start()
            threads.append(thread)
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))


def _reason(error: BaseException) -> str:
    """A paramiko or socket error in plain words."""
    if isinstance(error, socket.gaierror):
        return "the name does not resolve"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(error, paramiko.ChannelException):
        return error.text or f"channel error {error.code}"
    if isinstance(error, EOFError):
        return "the connection was closed"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror[0].lower() + error.strerror[1:]
    text = str(error).strip().rstrip(".")
    return text or type(error).__name__


class SSHPool:
    """One connection per host for one run (and one target's settings)."""

    def __init__(self, settings: SSHSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._host_locks: dict[str, threading.Lock] = {}
        self._connections: dict[str, _Connection] = {}
        self._known_hosts: dict[tuple[str, ...], _KnownHosts] = {}
        self._opened = 0
        self._config_loaded = False
        self._config: paramiko.SSHConfig | None = None
        self._closed = False
        #: Hosts whose last connection was dropped because they stopped answering.
        self._silent: set[str] = set()
        #: Temporary folders per host that could not be removed when their step ended; the next
        #: connection to the host removes them.
        self._leftovers: dict[str, list[str]] = {}
        #: (host, private folder) of connections that are gone.
        self._retired_bases: set[tuple[str, str]] = set()

    def __enter__(self) -> SSHPool:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def runner(self, host: Host) -> SSHRunner:
        return SSHRunner(self, host)

    def connections_opened(self) -> int:
        """Transports opened so far, jump hosts included."""
        with self._lock:
            return self._opened

    def close(self) -> None:
        with self._lock:
            connections = list(self._connections.values())
            cleanups = [
                (conn, self._leftovers.pop(name, [])) for name, conn in self._connections.items()
            ]
            self._connections.clear()
            self._closed = True
        _remove_bases(cleanups)
        # Targets first: closing a jump host first would cut them off mid-goodbye.
        for conn in sorted(connections, key=lambda c: c.jump is None):
            conn.close()

    def drop(self, host: Host) -> None:
        """Close one host's connection; the next use opens a new one."""
        with self._lock:
            conn = self._connections.pop(host.name, None)
        if conn is not None:
            _remove_bases([(conn, [])])
            conn.close()

    def discard(self, host: Host, conn: _Connection) -> None:
        """Close a connection found broken, unless another thread already replaced it."""
        with self._lock:
            if self._connections.get(host.name) is conn:
                del self._connections[host.name]
            self._retire(host.name, conn)
        conn.close()

    def _retire(self, name: str, conn: _Connection) -> None:
        """Leave a connection's private folders to the host's next connection (the caller holds
        `_lock`): a connection that is gone cannot remove them."""
        conn.retired = True
        for base in list(conn.bases):
            self._leave_for_later(name, base)
            self._retired_bases.add((name, base))

    def retired_base(self, host: Host, path: str) -> bool:
        """Whether `path` is in a private folder left to a later connection."""
        with self._lock:
            return (host.name, posixpath.dirname(path)) in self._retired_bases

    def temp_owner(self, host: Host, path: str) -> tuple[_Connection, set[str]] | None:
        """The connection whose subfolder `path` is, and the names written into it; None when
        `path` is not the subfolder of a live connection."""
        with self._lock:
            conn = self._connections.get(host.name)
        if conn is None:
            return None
        names = conn.take_temp(path)
        return None if names is None else (conn, names)

    def give_up(self, host: Host, conn: _Connection) -> None:
        """Drop the connection of a host that stopped answering: until a new connection
        succeeds, cleanups on it are left for later instead of waiting on it again."""
        with self._lock:
            self._silent.add(host.name)
        self.discard(host, conn)

    def silent(self, host: Host) -> bool:
        """Whether the host was given up on and has no live connection since."""
        with self._lock:
            conn = self._connections.get(host.name)
            return host.name in self._silent and (conn is None or not conn.alive())

    def leave_for_later(self, host: Host, path: str) -> None:
        """Remember a temporary folder to remove when the host is next connected to."""
        with self._lock:
            self._leave_for_later(host.name, path)

    def _leave_for_later(self, name: str, path: str) -> None:
        paths = self._leftovers.setdefault(name, [])
        if path not in paths:
            paths.append(path)

    # -- resolving ---------------------------------------------------------------------------

    def _ssh_config(self) -> paramiko.SSHConfig | None:
        with self._lock:
            if not self._config_loaded:
                self._config = _load_ssh_config(self.settings)
                self._config_loaded = True
            return self._config

    def endpoint(self, host: Host) -> _Endpoint:
        """Apply ssh_config and settings to an inventory host.

        Precedence: the inventory (`ansible_*`, or `user@host:port` as written) over ssh_config,
        over the target's `user`, over the local user name.
        """
        options = _lookup(self._ssh_config(), host.address)
        return self._endpoint(host.name, options, host.port, host.user)

    def _endpoint(
        self, name: str, options: dict[str, Any], port: int | None, user: str | None
    ) -> _Endpoint:
        settings = self.settings
        hostname = str(options.get("hostname") or name)
        try:
            final_port = port or int(options.get("port", 22))
        except ValueError:
            final_port = 0
        if not 0 < final_port < 65536:
            raise SSHError(
                f"ssh_config gives host {name} the port {options.get('port')!r}, "
                "not a number from 1 to 65535",
                name,
                "config",
            )
        final_user = user or options.get("user") or settings.user or getpass.getuser()
        explicit: list[str] = []
        if settings.identity_file:
            explicit.append(os.path.expanduser(settings.identity_file))
        explicit += [os.path.expanduser(p) for p in options.get("identityfile", [])]
        identities = list(dict.fromkeys(explicit))
        if not identities:
            identities = [os.path.expanduser(f"~/.ssh/{n}") for n in DEFAULT_IDENTITIES]
        identities_only = str(options.get("identitiesonly", "no")).lower() == "yes"
        known: tuple[str, ...]
        if settings.known_hosts_file:
            known = (settings.known_hosts_file,)
        elif options.get("userknownhostsfile"):
            known = tuple(str(options["userknownhostsfile"]).split())
        else:
            known = ("~/.ssh/known_hosts",)
        jump = options.get("proxyjump")
        command = options.get("proxycommand")
        return _Endpoint(
            label=_label(name, hostname, final_port),
            name=name,
            hostname=hostname,
            port=final_port,
            user=str(final_user),
            identity_files=tuple(identities),
            explicit_identities=frozenset(explicit),
            use_agent=not identities_only,
            known_hosts_files=known,
            host_key_alias=options.get("hostkeyalias"),
            proxy_jump=None if not jump or jump.lower() == "none" else jump,
            proxy_command=None if not command or command.lower() == "none" else command,
        )

    def _known(self, endpoint: _Endpoint) -> _KnownHosts:
        with self._lock:
            known = self._known_hosts.get(endpoint.known_hosts_files)
            if known is None:
                known = _KnownHosts(endpoint.known_hosts_files)
                self._known_hosts[endpoint.known_hosts_files] = known
            return known

    # -- connecting --------------------------------------------------------------------------

    def connection(self, host: Host, progress: _Progress | None = None) -> tuple[_Connection, bool]:
        """The host's live connection, and whether it was just opened."""
        with self._lock:
            if self._closed:
                raise SSHError(f"the SSH pool is closed (host {host.name})", host.name)
            lock = self._host_locks.setdefault(host.name, threading.Lock())
        with lock:
            with self._lock:
                conn = self._connections.get(host.name)
            if conn is not None and conn.alive():
                return conn, False
            if conn is not None:
                conn.close()
                with self._lock:
                    self._retire(host.name, conn)
            endpoint = self.endpoint(host)
            self._check_hops(endpoint)
            conn = self._open(endpoint, progress or _Progress(), depth=0, host=host)
            with self._lock:
                self._connections[host.name] = conn
                self._silent.discard(host.name)
                leftovers = self._leftovers.pop(host.name, [])
        if leftovers:
            self._remove_leftovers(host, leftovers)
        return conn, True

    def _remove_leftovers(self, host: Host, paths: list[str]) -> None:
        """Remove what earlier attempts on this host left when their connection went (their
        `$ANSFLOW_OUTPUT` and scripts, which may hold secrets), before anything else runs."""
        try:
            status, _, _ = self.runner(host)._capture(
                ["rm", "-rf", "--", *paths], "removing folders of an earlier attempt"
            )
        except SSHError:
            status = -1
        if status != 0:
            for path in paths:
                self.leave_for_later(host, path)

    def _check_hops(self, endpoint: _Endpoint) -> None:
        """Refuse a ProxyJump loop before connecting: two targets whose jump hosts lead to each
        other would otherwise wait on each other's connection forever."""
        seen = [endpoint.name]
        spec = endpoint.proxy_jump
        while spec:
            hops = [hop for hop in spec.split(",") if hop.strip()]
            if not hops:
                return
            name = _split_hop(hops[-1])[1]
            if name in seen or len(seen) > 8:
                chain = " -> ".join([*seen, name])
                raise SSHError(
                    f"ProxyJump for host {endpoint.label} loops or is too long: {chain}",
                    endpoint.name,
                    "config",
                )
            seen.append(name)
            if len(hops) > 1:
                spec = ",".join(hops[:-1])
            else:
                jump = _lookup(self._ssh_config(), name).get("proxyjump")
                spec = None if not jump or jump.lower() == "none" else jump

    def _jump(self, spec: str, target: _Endpoint, depth: int) -> _Connection:
        """The jump host for `target`, shared with other targets behind the same hop."""
        if depth > 8:
            raise SSHError(
                f"ProxyJump for host {target.label} goes through more than 8 hops (a loop?)",
                target.name,
                "config",
            )
        hops = [hop for hop in spec.split(",") if hop.strip()]
        user, name, port = _split_hop(hops[-1])
        options = _lookup(self._ssh_config(), name)
        if len(hops) > 1:
            options["proxyjump"] = ",".join(hops[:-1])
        endpoint = self._endpoint(name, options, port, user)
        key = f"jump {','.join(hops)}"
        with self._lock:
            lock = self._host_locks.setdefault(key, threading.Lock())
        with lock:
            with self._lock:
                conn = self._connections.get(key)
            if conn is not None and conn.alive():
                return conn
            try:
                conn = self._open(endpoint, _Progress(), depth + 1)
            except SSHError as error:
                raise SSHError(
                    f"cannot reach host {target.label} through jump host: {error}",
                    target.name,
                    error.kind if error.kind in ("resolve", "connect") else "connect",
                ) from None
            with self._lock:
                self._connections[key] = conn
            return conn

    def _open(
        self, endpoint: _Endpoint, progress: _Progress, depth: int, host: Host | None = None
    ) -> _Connection:
        timeout = self.settings.connect_timeout
        jump = None
        sock: Any
        if endpoint.proxy_jump:
            jump = self._jump(endpoint.proxy_jump, endpoint, depth)
            try:
                sock = jump.transport.open_channel(
                    "direct-tcpip",
                    (endpoint.hostname, endpoint.port),
                    ("127.0.0.1", 0),
                    timeout=timeout,
                )
            except (paramiko.SSHException, EOFError, OSError) as error:
                raise SSHError(
                    f"cannot connect to host {endpoint.label} through jump host "
                    f"{jump.label}: {_reason(error)}",
                    endpoint.name,
                    "connect",
                ) from None
        elif endpoint.proxy_command:
            try:
                sock = paramiko.ProxyCommand(endpoint.proxy_command)
            except Exception as error:  # NOTE: ProxyCommand raises its own types
                raise SSHError(
                    f"ProxyCommand for host {endpoint.label} failed: {_reason(error)}",
                    endpoint.name,
                    "connect",
                ) from None
        else:
            sock = self._socket(endpoint)
        progress.reachable = True
        try:
            transport = self._handshake(endpoint, sock, progress)
        except BaseException:
            with suppress(Exception):
                sock.close()
            raise
        with self._lock:
            self._opened += 1
        conn = _Connection(endpoint, transport, jump)
        # A jump host going silent cuts off its targets, whose own keepalives then say so.
        conn.start_keepalive(
            self.settings.keepalive, None if host is None else partial(self._went_silent, host)
        )
        return conn

    def _went_silent(self, host: Host, conn: _Connection) -> None:
        """A host's keepalives went unanswered: its cleanups wait for the next connection."""
        with self._lock:
            if self._connections.get(host.name) is conn:
                self._silent.add(host.name)

    def _socket(self, endpoint: _Endpoint) -> socket.socket:
        timeout = self.settings.connect_timeout
        try:
            addresses = socket.getaddrinfo(
                endpoint.hostname, endpoint.port, type=socket.SOCK_STREAM
            )
        except socket.gaierror as error:
            raise SSHError(
                f"cannot connect to host {endpoint.label}: the name {endpoint.hostname!r} "
                f"does not resolve ({error.strerror})",
                endpoint.name,
                "resolve",
            ) from None
        last: OSError | None = None
        for family, kind, proto, _, address in addresses:
            sock = socket.socket(family, kind, proto)
            sock.settimeout(timeout)
            try:
                sock.connect(address)
            except OSError as error:
                sock.close()
                last = error
                continue
            _tune_socket(sock, self.settings.keepalive)
            return sock
        if isinstance(last, (socket.timeout, TimeoutError)):
            reason = f"no answer within {timeout:g}s"
        elif isinstance(last, ConnectionRefusedError):
            reason = "connection refused (is sshd running on that port?)"
        else:
            reason = _reason(last) if last else "no address to connect to"
        raise SSHError(
            f"cannot connect to host {endpoint.label}: {reason}", endpoint.name, "connect"
        )

    def _handshake(self, endpoint: _Endpoint, sock: Any, progress: _Progress) -> paramiko.Transport:
        timeout = self.settings.connect_timeout
        known = self._known(endpoint)
        recorded = known.lookup(endpoint.host_key_name)
        try:
            transport = paramiko.Transport(sock)
        except (paramiko.SSHException, OSError, EOFError) as error:
            raise SSHError(
                f"cannot start SSH with host {endpoint.label}: {_reason(error)}",
                endpoint.name,
                "handshake",
            ) from None
        try:
            transport.banner_timeout = timeout
            transport.handshake_timeout = timeout
            transport.auth_timeout = timeout
            _prefer_known_key_types(transport, [key for key, _ in recorded])
            try:
                transport.start_client(timeout=timeout)
            except (paramiko.SSHException, OSError, EOFError) as error:
                message = f"SSH handshake with host {endpoint.label} failed: {_reason(error)}"
                if "protocol banner" in str(error):
                    message = _no_answer(endpoint, timeout)
                raise SSHError(message, endpoint.name, "handshake") from None
            done = transport.completion_event
            if not transport.is_active() or done is None or not done.is_set():
                # NOTE: paramiko's start_client returns quietly when its wait times out.
                raise SSHError(_no_answer(endpoint, timeout), endpoint.name, "handshake")
            key = transport.get_remote_server_key()
            progress.host_key = describe_key(key)
            self._check_host_key(endpoint, key, recorded, known, progress)
            _authenticate(transport, endpoint, self.settings)
        except SSHError:
            transport.close()
            raise
        except (paramiko.SSHException, OSError, EOFError) as error:
            transport.close()
            raise SSHError(
                f"connection to host {endpoint.label} failed during login: {_reason(error)}",
                endpoint.name,
                "handshake",
            ) from None
        return transport

    def _check_host_key(
        self,
        endpoint: _Endpoint,
        key: paramiko.PKey,
        recorded: list[tuple[paramiko.PKey, str]],
        known: _KnownHosts,
        progress: _Progress,
    ) -> None:
        policy = self.settings.known_hosts
        name = endpoint.host_key_name
        if any(_same_key(key, old) for old, _ in recorded):
            progress.host_key_known = True
            return
        if policy == "off":
            return
        if recorded:
            old = "; ".join(f"{describe_key(k)} ({where})" for k, where in recorded)
            raise SSHError(
                f"HOST KEY FOR {name} HAS CHANGED (host {endpoint.label}): it presented "
                f"{describe_key(key)}, but known_hosts has {old}. Someone may be intercepting "
                "the connection, or the host was reinstalled; if you trust the new key, remove "
                "the old line from known_hosts.",
                endpoint.name,
                "host_key_changed",
            )
        if policy == "accept-new":
            try:
                known.add(name, key)
            except OSError as error:
                raise SSHError(
                    f"cannot record the host key of {endpoint.label} in "
                    f"{known.user_files[0]}: {error.strerror}",
                    endpoint.name,
                    "host_key_unknown",
                ) from None
            progress.host_key_known = True
            return
        files = ", ".join(str(f) for f in known.user_files) or "known_hosts"
        raise SSHError(
            f"host key for {name} is not known ({describe_key(key)}; host {endpoint.label}); "
            f"add it to known_hosts ({files}) or set known_hosts: accept-new",
            endpoint.name,
            "host_key_unknown",
        )


def _tune_socket(sock: socket.socket, keepalive: float) -> None:
    """No Nagle delay for output lines; a dead peer noticed in seconds, not TCP's 15 minutes."""
    with suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if keepalive <= 0:
        return
    with suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, max(1, int(keepalive)))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(1, int(keepalive)))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
    with suppress(OSError, AttributeError):
        # NOTE: unacknowledged data (our SSH keepalives included) fails the socket after this.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(keepalive * 4 * 1000))


def _same_key(a: paramiko.PKey, b: paramiko.PKey) -> bool:
    return a.get_name() == b.get_name() and a.asbytes() == b.asbytes()


def _prefer_known_key_types(transport: paramiko.Transport, keys: list[paramiko.PKey]) -> None:
    """Ask for a host key type known_hosts has, as OpenSSH does, so a second key type the server
    also holds is not mistaken for a changed key."""
    if not keys:
        return
    options = transport.get_security_options()
    available = list(options.key_types)
    wanted: list[str] = []
    for key in keys:
        name = key.get_name()
        names = ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"] if name == "ssh-rsa" else [name]
        wanted += [n for n in names if n in available and n not in wanted]
    if wanted:
        options.key_types = wanted + [n for n in available if n not in wanted]


# -- authentication ------------------------------------------------------------------------------


def _authenticate(
    transport: paramiko.Transport, endpoint: _Endpoint, settings: SSHSettings
) -> None:
    """Identity files, then agent keys, then the password: what OpenSSH's client tries."""
    user = endpoint.user
    tried: list[str] = []
    try:
        transport.auth_none(user)
        return
    except paramiko.BadAuthenticationType as error:
        allowed = set(error.allowed_types)
    except paramiko.AuthenticationException:
        allowed = {"publickey", "password", "keyboard-interactive"}
    if "publickey" in allowed:
        for path in endpoint.identity_files:
            key = _load_key(path, settings.password, path in endpoint.explicit_identities, tried)
            if key is not None and _try_key(transport, user, key):
                return
            if key is not None:
                tried.append(f"key {path}")
        if endpoint.use_agent:
            agent_keys = 0
            with _agent() as agent:
                for key in agent:
                    agent_keys += 1
                    if _try_key(transport, user, key):
                        return
            if agent_keys:
                tried.append(f"{agent_keys} agent key(s)")
    if settings.password is not None and allowed & {"password", "keyboard-interactive"}:
        if "password" in allowed:
            with suppress(paramiko.AuthenticationException):
                transport.auth_password(user, settings.password)
        if not transport.is_authenticated() and "keyboard-interactive" in allowed:
            password = settings.password
            with suppress(paramiko.AuthenticationException):
                transport.auth_interactive(user, lambda _t, _i, prompts: [password] * len(prompts))
        if transport.is_authenticated():
            return
        tried.append("the password")
    detail = ", ".join(tried) if tried else "no key, agent key or password to offer"
    raise SSHError(
        f"cannot log in to host {endpoint.label} as {user}: the server refused {detail} "
        f"(it accepts: {', '.join(sorted(allowed)) or 'nothing'})",
        endpoint.name,
        "auth",
    )


def _try_key(transport: paramiko.Transport, user: str, key: paramiko.PKey) -> bool:
    try:
        transport.auth_publickey(user, key)
    except paramiko.AuthenticationException:
        return False
    # A partial success (two-factor) leaves is_authenticated() False: go on with the password.
    return transport.is_authenticated()


def _load_key(
    path: str, passphrase: str | None, explicit: bool, problems: list[str]
) -> paramiko.PKey | None:
    if not os.path.exists(path):
        if explicit:
            problems.append(f"no identity file {path}")
        return None
    try:
        key = _read_key(path, passphrase)
    except _Encrypted:
        problems.append(f"key {path} (encrypted, and no passphrase was given)")
        return None
    except (paramiko.SSHException, OSError, ValueError, TypeError) as error:
        problems.append(f"key {path} (unreadable: {_reason(error)})")
        return None
    cert = f"{path}-cert.pub"
    if os.path.exists(cert):
        with suppress(Exception):
            key.load_certificate(cert)
    return key


class _Encrypted(Exception):
    """A private key needs a passphrase that was not given."""


def _read_key(path: str, passphrase: str | None) -> paramiko.PKey:
    try:
        return paramiko.PKey.from_path(path)
    except (paramiko.PasswordRequiredException, TypeError) as error:
        # NOTE: cryptography says "password-protected" with a TypeError for OpenSSH-format keys.
        if not isinstance(error, paramiko.PasswordRequiredException) and "password" not in str(
            error
        ):
            raise
        if passphrase is None:
            raise _Encrypted from None
    # As OpenSSH's client does, the password also unlocks an encrypted key. The stubs say str,
    # but paramiko hands it to cryptography, which wants bytes.
    secret: Any = passphrase.encode()
    return paramiko.PKey.from_path(path, secret)


@contextmanager
def _agent() -> Iterator[list[paramiko.PKey]]:
    try:
        agent = paramiko.Agent()
    except (paramiko.SSHException, OSError):
        yield []
        return
    try:
        yield list(agent.get_keys())
    finally:
        with suppress(Exception):
            agent.close()


# -- running commands ----------------------------------------------------------------------------


def remote_command_line(command: Command) -> str:
    """The exec request for a command; every value is a quoted word (see the module docstring)."""
    if not command.argv:
        raise ValueError("a command needs at least a program name")
    stdin = str(len(command.stdin or b""))
    return "exec " + shlex.join(
        ["sh", "-c", _WRAPPER, "ansflow", command.workdir or "", stdin, *command.argv]
    )


def environment_line(env: dict[str, str]) -> bytes:
    """The one stdin line the wrapper evals: `export NAME='value' ...` or an empty line."""
    words = []
    for name, value in env.items():
        if not _ENV_NAME.match(name):
            raise ValueError(f"environment variable name {name!r} cannot be set by a POSIX shell")
        if "\0" in value:
            raise ValueError(f"environment variable {name} holds a NUL character")
        quoted = shlex.quote(value).replace("\n", "'\"$_ansflow_nl\"'")
        words.append(f"{name}={quoted}")
    line = ("export " + " ".join(words)) if words else ""
    if "$_ansflow_nl" in line:
        # The line must stay one line: the newline is made on the host.
        line = "_ansflow_nl=$(printf '\\n.'); _ansflow_nl=${_ansflow_nl%.}; " + line
    return line.encode("utf-8", errors="surrogateescape") + b"\n"


class _LineSplitter:
    """Bytes in, whole lines out; a line longer than MAX_LINE goes out in pieces.

    Pieces are cut where `safe_cut` allows: never inside a UTF-8 character or a secret value.
    """

    def __init__(self, emit: Callable[[bytes], None]) -> None:
        self._emit = emit
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self._buffer += data
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                break
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            self._emit_long(line)
        # NOTE: the end of a line still arriving may be the start of a secret: it is kept back.
        while len(self._buffer) > MAX_LINE + keep_back():
            cut = safe_cut(self._buffer, MAX_LINE)
            self._emit(bytes(self._buffer[:cut]))
            del self._buffer[:cut]

    def _emit_long(self, line: bytes) -> None:
        for piece in pieces(line, MAX_LINE):
            self._emit(piece)

    def close(self) -> None:
        if self._buffer:
            self._emit_long(bytes(self._buffer))
            self._buffer.clear()


def _decode(line: bytes) -> str:
    if line.endswith(b"\r"):
        line = line[:-1]
    return line.decode("utf-8", errors="replace")


class _Execution:
    """One command on one channel: reader threads, the stdin writer and the process group id."""

    def __init__(self, channel: paramiko.Channel, on_line: LineSink) -> None:
        self.channel = channel
        self.on_line = on_line
        self.pgid: int | None = None
        #: The step's own folder, when its wrapper made one (run_script).
        self.folder: str | None = None
        self.pgid_known = threading.Event()
        self.wake = threading.Event()
        self.stdout_done = threading.Event()
        self.stderr_done = threading.Event()
        self.error: BaseException | None = None
        self.writer: threading.Thread | None = None
        self.stop_writing = threading.Event()

    def start(self, stdin: bytes | None) -> None:
        for target, name in ((self._read_stdout, "stdout"), (self._read_stderr, "stderr")):
            threading.Thread(target=target, name=f"ansflow-ssh-{name}", daemon=True).start()
        if stdin:
            self.writer = threading.Thread(
                target=self._write, args=(stdin,), name="ansflow-ssh-stdin", daemon=True
            )
            self.writer.start()

    @property
    def output_done(self) -> bool:
        return self.stdout_done.is_set() and self.stderr_done.is_set()

    def _stdout_line(self, line: bytes) -> None:
        if self.pgid is None:
            match = _PGID_LINE.match(line)
            if match:
                self.pgid = int(match.group(1))
                if match.group(2):
                    self.folder = _decode(match.group(2))
                self.pgid_known.set()
                return
        self.on_line("stdout", _decode(line))

    def _read_stdout(self) -> None:
        self._pump(self.channel.recv, self._stdout_line, self.stdout_done)

    def _read_stderr(self) -> None:
        self._pump(
            self.channel.recv_stderr,
            lambda line: self.on_line("stderr", _decode(line)),
            self.stderr_done,
        )

    def _pump(
        self, recv: Callable[[int], bytes], emit: Callable[[bytes], None], done: threading.Event
    ) -> None:
        splitter = _LineSplitter(emit)
        try:
            while True:
                data = recv(32768)
                if not data:
                    break
                splitter.feed(data)
            splitter.close()
        except Exception as error:  # NOTE: surfaced by run() on the caller's thread
            self.error = self.error or error
        finally:
            done.set()
            self.pgid_known.set()
            self.wake.set()

    def _write(self, stdin: bytes) -> None:
        try:
            for start in range(0, len(stdin), 32768):
                if self.stop_writing.is_set():
                    break
                self.channel.sendall(stdin[start : start + 32768])
        except Exception as error:  # NOTE: surfaced by run() on the caller's thread
            self.error = self.error or error
            self.wake.set()

    def stop_writer(self) -> None:
        """Let a send in progress finish: data sent after the channel's close makes sshd drop
        the whole connection."""
        self.stop_writing.set()
        if self.writer is not None:
            self.writer.join(2.0)


class _Cancelled(Exception):
    """The scope was cancelled before the command started."""


#: What `run` returns for a cancelled command (callers look at the scope's reason instead).
CANCELLED_STATUS = -15
#: What `run` returns when the program ended without an exit status (sshd's exit-signal).
NO_STATUS = 255


#: paramiko's largest SFTP read request (SFTPFile.MAX_REQUEST_SIZE).
_READ_CHUNK = 32768


def _read_all(recv: Callable[[int], bytes]) -> bytes:
    chunks = []
    while data := recv(32768):
        chunks.append(data)
    return b"".join(chunks)


class SSHRunner(Runner):
    """Runs commands and moves files on one SSH host, through its pool's shared connection."""

    def __init__(self, pool: SSHPool, host: Host) -> None:
        self.pool = pool
        self.target = host
        self.host = host.name

    def close(self) -> None:
        self.pool.drop(self.target)

    # -- plumbing ----------------------------------------------------------------------------

    @contextmanager
    def _channel(
        self, scope: CancelScope | None = None, conn: _Connection | None = None
    ) -> Iterator[tuple[_Connection, Any]]:
        """A fresh session channel; a pooled connection found dead is replaced once (unless the
        channel must be on `conn`)."""
        if conn is None:
            conn, fresh = self.pool.connection(self.target)
        else:
            fresh = True
        while True:
            self._acquire(conn, scope)
            try:
                channel = conn.open_channel(self.pool.settings.connect_timeout)
            except SSHError as error:
                conn.channels.release()
                if fresh or error.kind != "lost":
                    raise
                self.pool.discard(self.target, conn)
                conn, fresh = self.pool.connection(self.target)
                continue
            break
        try:
            yield conn, channel
        finally:
            with suppress(Exception):
                channel.close()
            conn.channels.release()

    def _acquire(self, conn: _Connection, scope: CancelScope | None) -> None:
        while not conn.channels.acquire(timeout=0.2):
            if scope is not None and scope.cancelled:
                raise _Cancelled
            if not conn.alive():
                raise conn.lost()

    def _capture(
        self, argv: list[str], what: str, conn: _Connection | None = None
    ) -> tuple[int, bytes, bytes]:
        """Run a small helper command (on `conn`, if given) and collect its output."""
        with self._channel(conn=conn) as (used, channel):
            return used.capture(channel, argv, what)

    # -- commands ----------------------------------------------------------------------------

    def run(self, command: Command, on_line: LineSink, scope: CancelScope) -> int:
        try:
            cmdline = remote_command_line(command)
            env = environment_line(command.env)
        except ValueError as error:
            raise SSHError(f"cannot run the step on host {self.host}: {error}", self.host) from None
        if scope.cancelled:
            return CANCELLED_STATUS
        try:
            with self._channel(scope) as (conn, channel):
                execution = _Execution(channel, on_line)
                return self._execute(conn, cmdline, env, command.stdin, execution, scope)
        except _Cancelled:
            return CANCELLED_STATUS

    def run_script(self, script: Script, on_line: LineSink, scope: CancelScope) -> ScriptResult:
        """The whole attempt in one exec (see _SCRIPT_WRAPPER): no SFTP unless the script wrote
        outputs, and no helper commands. The folder of a step that did not end normally, or that
        left outputs, is removed when the pool closes (or by the host's next connection)."""
        data = script.text.encode("utf-8")
        end = f"ansflow-done-{os.urandom(8).hex()}"
        try:
            cmdline = "exec " + shlex.join(
                [
                    "sh",
                    "-c",
                    _SCRIPT_WRAPPER,
                    "ansflow",
                    script.workdir or "",
                    str(len(data)),
                    end,
                    *shell_prefix(script.shell),
                ]
            )
            env = environment_line(script.env)
        except ValueError as error:
            raise SSHError(f"cannot run the step on host {self.host}: {error}", self.host) from None
        if scope.cancelled:
            return ScriptResult(CANCELLED_STATUS, None)
        end_line = re.compile(rf"^(.*){end} *([0-9]+)$", re.DOTALL)
        sizes: list[int] = []
        #: What the wrapper said before its first line: why it could not make the folder.
        early: list[str] = []

        def sink(stream: str, text: str) -> None:
            if stream == "stderr" and execution is not None and execution.pgid is None:
                early.append(text)
            if stream == "stdout" and end in text:
                match = end_line.match(text)
                if match:
                    if match.group(1):
                        on_line(stream, match.group(1))
                    sizes.append(int(match.group(2)))
                    return
            on_line(stream, text)

        execution: _Execution | None = None
        try:
            with self._channel(scope) as (conn, channel):
                execution = _Execution(channel, sink)
                status = self._execute(conn, cmdline, env, data, execution, scope)
        except _Cancelled:
            return ScriptResult(CANCELLED_STATUS, None)
        except SSHError:
            self._leave(execution)
            raise
        if status == 125 and execution.pgid is None and not scope.cancelled:
            reason = early[-1].strip() if early else "mktemp exited with status 125"
            raise SSHError(
                f"cannot create a temporary folder on host {conn.label}: {reason}",
                self.host,
                "file",
            )
        if sizes and sizes[-1] == 0:
            return ScriptResult(status, None)
        folder = self._leave(execution)
        if folder is None or scope.cancelled or status == CANCELLED_STATUS:
            return ScriptResult(status, None)
        return ScriptResult(status, self.read_file(f"{folder}/output"))

    def _leave(self, execution: _Execution | None) -> str | None:
        """Leave the folder a script's wrapper made to the pool's cleanup; returns it."""
        folder = execution.folder if execution is not None else None
        if folder is None or posixpath.normpath(folder) in ("/", "") or not folder.startswith("/"):
            return None
        self.pool.leave_for_later(self.target, folder)
        return folder

    def _execute(
        self,
        conn: _Connection,
        cmdline: str,
        env: bytes,
        stdin: bytes | None,
        execution: _Execution,
        scope: CancelScope,
    ) -> int:
        channel = execution.channel
        try:
            channel.exec_command(cmdline)
            # The environment line is small (it fits the channel's window), so it goes out
            # here and a failure shows at once; only `stdin` needs a writer thread.
            channel.sendall(env)
        except (paramiko.SSHException, OSError, EOFError) as error:
            if not conn.alive():
                raise conn.lost(" while starting the step") from None
            raise SSHError(
                f"host {conn.label} refused to run the step: {_reason(error)}",
                self.host,
                "channel",
            ) from None
        execution.start(stdin)
        cancelled = threading.Event()

        def stop(_reason: str) -> None:
            cancelled.set()
            execution.wake.set()

        with scope.on_cancel(stop):
            while not (execution.output_done or cancelled.is_set() or execution.error):
                execution.wake.wait()
                execution.wake.clear()
            while not (cancelled.is_set() or execution.error):
                if channel.status_event.wait(0.1) or not conn.alive():
                    break
        if cancelled.is_set():
            self._kill(conn, channel, execution)
            return CANCELLED_STATUS
        if execution.error is not None:
            if not _still_alive(conn):
                raise conn.lost(" while running the step")
            # Nobody reads the output any more: stop the program rather than leave it blocked.
            self._kill(conn, channel, execution)
            if isinstance(execution.error, (paramiko.SSHException, OSError, EOFError)):
                raise SSHError(
                    f"the step's input or output on host {conn.label} failed: "
                    f"{_reason(execution.error)}",
                    self.host,
                    "channel",
                )
            # A failing on_line is the caller's bug: let it be seen as it is.
            raise execution.error
        status = channel.exit_status if channel.exit_status_ready() else -1
        if status == -1 and not _still_alive(conn):
            raise conn.lost(" while running the step")
        return NO_STATUS if status == -1 else status

    def _kill(self, conn: _Connection, channel: paramiko.Channel, execution: _Execution) -> None:
        """Kill the remote process group; give up on (and drop) a host that does not answer."""
        deadline = time.monotonic() + CANCEL_GIVE_UP
        execution.stop_writer()
        execution.pgid_known.wait(min(2.0, CANCEL_GIVE_UP))
        answered = execution.pgid is None or self._kill_group(conn, execution.pgid, deadline)
        if not answered:
            if conn.alive() or conn.silence:
                # Connected but silent (a frozen machine): the step's cleanup must not wait on it.
                self.pool.give_up(self.target, conn)
                with suppress(Exception):
                    execution.on_line(
                        "ansflow",
                        f"host {conn.label} did not answer within {CANCEL_GIVE_UP:g}s: its "
                        "connection was closed; the step's processes there may still run",
                    )
            else:
                self.pool.discard(self.target, conn)
        # Let the last lines the processes wrote reach on_line before the channel goes.
        flush_until = min(deadline, time.monotonic() + 0.5)
        while not execution.output_done and time.monotonic() < flush_until:
            execution.wake.wait(0.05)
            execution.wake.clear()
        with suppress(Exception):
            channel.close()

    def _kill_group(self, conn: _Connection, pgid: int, deadline: float) -> bool:
        if not conn.alive():
            return False
        grace = str(max(1, round(KILL_GRACE * 10)))
        try:
            # NOTE: not counted against MAX_CHANNELS: a cancel must not wait for a free slot.
            channel = conn.open_channel(max(0.1, deadline - time.monotonic()))
            try:
                channel.exec_command(
                    "exec " + shlex.join(["sh", "-c", _KILL, "ansflow-kill", str(pgid), grace])
                )
                return channel.status_event.wait(max(0.1, deadline - time.monotonic()))
            finally:
                channel.close()
        except (SSHError, paramiko.SSHException, OSError, EOFError):
            return False

    # -- files -------------------------------------------------------------------------------

    def make_temp_dir(self) -> str:
        """A new subfolder of the connection's private folder: one SFTP mkdir per step attempt;
        the `mktemp -d` exec runs once per connection."""
        conn, fresh = self.pool.connection(self.target)
        for attempt in range(3):
            try:
                base = self._base(conn)
            except SSHError as error:
                if error.kind != "lost" or fresh or attempt:
                    raise
                self.pool.discard(self.target, conn)
                conn, fresh = self.pool.connection(self.target)
                continue
            path = conn.next_temp(base)
            try:
                self._sftp("create", path, partial(_mkdir, path=path), conn)
            except SSHError as error:
                if error.kind != "file" or attempt:
                    raise
                # The folder went (a cleaner of old temporary files?): make another.
                with conn.base_lock:
                    if conn.base == base:
                        conn.base = None
                continue
            conn.add_temp(path)
            return path
        raise SSHError(f"cannot create a temporary folder on host {self.host}", self.host, "file")

    def _base(self, conn: _Connection) -> str:
        with conn.base_lock:
            if conn.base is not None:
                return conn.base
            # The step's files go by SFTP next: start its session while mktemp runs.
            threading.Thread(
                target=conn.open_sftp, name="ansflow-ssh-sftp-open", daemon=True
            ).start()
            status, out, err = self._capture(
                ["sh", "-c", 'mktemp -d "${TMPDIR:-/tmp}/ansflow.XXXXXXXXXX"'],
                "creating a temporary folder",
                conn,
            )
            path = out.decode("utf-8", errors="surrogateescape").strip()
            if status != 0 or not path.startswith("/"):
                raise SSHError(
                    f"cannot create a temporary folder on host {self.host}: "
                    f"{err.decode(errors='replace').strip() or f'mktemp exited with {status}'}",
                    self.host,
                    "file",
                )
            conn.base = path
            conn.bases.append(path)
            if conn.retired:
                # Retired while mktemp ran: the pool did not see this folder.
                self.pool.leave_for_later(self.target, path)
            return path

    def remove_tree(self, path: str) -> None:
        """Delete a temporary folder. A step's subfolder on a live connection goes by SFTP (its
        known files, then rmdir), with `rm -rf` when it holds more. On a host that cannot be
        reached now (connection lost, or given up as silent) the folder is removed by the next
        connection to the host instead: waiting here for a frozen host would hold the step's
        end for connect and banner timeouts, and giving up would leave the step's output file
        (and script) behind."""
        if not path.startswith("/") or posixpath.normpath(path) == "/":
            raise ValueError(f"refusing to remove {path!r}: not a folder made by make_temp_dir")
        owner = self.pool.temp_owner(self.target, path)
        if owner is not None:
            conn, names = owner
            if conn.retired or not conn.alive():
                return  # the whole private folder is left to the next connection
            if self._remove_known(conn, path, names):
                return
        elif self.pool.retired_base(self.target, path):
            return  # made by a connection that is gone: its private folder goes as a whole
        elif self.pool.silent(self.target):
            self.pool.leave_for_later(self.target, path)
            return
        try:
            status, _, err = self._capture(["rm", "-rf", "--", path], f"removing {path}")
        except SSHError as error:
            if error.kind not in ("lost", "connect", "resolve", "handshake"):
                raise
            if owner is None:
                self.pool.leave_for_later(self.target, path)
            return
        if status != 0:
            raise SSHError(
                f"cannot remove {path} on host {self.host}: {err.decode(errors='replace').strip()}",
                self.host,
                "file",
            )

    def _remove_known(self, conn: _Connection, path: str, names: set[str]) -> bool:
        """Remove a subfolder holding only `names` by SFTP; False when it holds more (or SFTP
        failed), which `rm -rf` then removes."""

        def remove(sftp: paramiko.SFTPClient) -> None:
            for name in sorted(names):
                with suppress(FileNotFoundError):
                    sftp.remove(f"{path}/{name}")
            with suppress(FileNotFoundError):
                sftp.rmdir(path)

        try:
            self._sftp("remove", path, remove, conn)
        except SSHError as error:
            # A lost connection leaves the whole private folder to the next one.
            return error.kind == "lost"
        return True

    def _sftp(
        self,
        what: str,
        path: str,
        operation: Callable[[paramiko.SFTPClient], Any],
        conn: _Connection | None = None,
        creates: str | None = None,
    ) -> Any:
        if conn is None:
            conn, _ = self.pool.connection(self.target)
        if creates is not None:
            conn.note_file(creates)
        with conn.sftp_lock:
            try:
                return operation(conn.sftp())
            except SSHError:
                raise
            except (paramiko.SSHException, OSError, EOFError) as error:
                if not conn.alive():
                    raise conn.lost(f" while {what} {path}") from None
                raise SSHError(
                    f"cannot {what} {path} on host {conn.label}: {_reason(error)}",
                    self.host,
                    "file",
                ) from None

    def write_file(self, path: str, data: bytes, mode: int = 0o600) -> None:
        def write(sftp: paramiko.SFTPClient) -> None:
            with sftp.open(_sftp_path(path), "wb") as handle:
                # Restrict first, then write: a secret never sits in a readable file.
                handle.chmod(mode)
                handle.set_pipelined(True)
                handle.write(data)

        self._sftp("write", path, write, creates=path)

    def read_file(self, path: str) -> bytes | None:
        def read(sftp: paramiko.SFTPClient) -> bytes | None:
            try:
                with sftp.open(_sftp_path(path), "rb") as handle:
                    # Most files read here (a step's outputs) are small: one READ, no FSTAT.
                    # Past the first chunk, prefetch pipelines the reads of the rest.
                    first = bytes(handle.read(_READ_CHUNK))
                    if len(first) < _READ_CHUNK:
                        return first
                    handle.prefetch()
                    return first + bytes(handle.read())
            except FileNotFoundError:
                return None

        result: bytes | None = self._sftp("read", path, read)
        return result

    def put(self, local: Path, remote: str, mode: int | None = None) -> None:
        """Upload; without `mode` the local file's permission bits are kept, as scp does, so an
        uploaded script stays executable."""
        with Path(local).open("rb") as source:
            if mode is None:
                mode = stat.S_IMODE(os.fstat(source.fileno()).st_mode)
            target = _sftp_path(remote)

            def upload(sftp: paramiko.SFTPClient) -> None:
                _makedirs(sftp, posixpath.dirname(target))
                with sftp.open(target, "wb") as handle:
                    handle.chmod(mode)
                    handle.set_pipelined(True)
                    while chunk := source.read(32768):
                        handle.write(chunk)

            self._sftp("upload to", remote, upload, creates=target)

    def get(self, remote: str, local: Path) -> None:
        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        partial = local.with_name(f".{local.name}.ansflow-part")
        try:
            self._sftp("download", remote, lambda sftp: sftp.get(_sftp_path(remote), str(partial)))
            os.replace(partial, local)
        finally:
            with suppress(FileNotFoundError):
                partial.unlink()

    def glob(self, pattern: str, workdir: str | None) -> list[str]:
        """Matches of a shell pattern on the host, as written (relative to `workdir` when the
        pattern is), sorted.

        The pattern travels as an argument and is expanded by `for f in $p` with IFS empty: the
        shell only globs it (`*`, `?`, `[...]`), never parses it as code. Hidden files match only
        a pattern that spells the dot, as in Python's glob. `**` (any depth of folders) is not a
        POSIX shell feature: such patterns are matched here over SFTP instead.
        """
        if "**" in pattern:
            return self._glob_recursive(pattern, workdir)
        status, out, _ = self._capture(
            ["sh", "-c", _GLOB, "ansflow-glob", workdir or "", pattern], "listing files"
        )
        if status == 3:
            return []
        return sorted(p.decode("utf-8", errors="surrogateescape") for p in out.split(b"\0") if p)

    def _glob_recursive(self, pattern: str, workdir: str | None) -> list[str]:
        absolute = pattern.startswith("/")
        segments = [s for s in pattern.split("/") if s not in ("", ".")]
        static: list[str] = []
        while segments and not _has_magic(segments[0]):
            static.append(segments.pop(0))
        if absolute:
            base = "/" + "/".join(static)
        else:
            base = posixpath.join(_sftp_path(workdir or "."), *static)
        shown = ("/" if absolute else "") + "/".join(static)

        def walk(sftp: paramiko.SFTPClient) -> list[str]:
            found = []
            for parts in _walk(sftp, base):
                if _match_parts(parts, segments):
                    found.append(posixpath.join(shown, *parts) if parts else shown)
            return found

        try:
            return sorted(self._sftp("list", base, walk))
        except SSHError as error:
            if error.kind == "file":
                return []
            raise


def _mkdir(sftp: paramiko.SFTPClient, path: str) -> None:
    sftp.mkdir(path, 0o700)


def _has_magic(segment: str) -> bool:
    return any(char in segment for char in "*?[")


def _walk(sftp: paramiko.SFTPClient, base: str) -> Iterator[list[str]]:
    """Every path under `base` (itself first) as a list of parts; symlinked folders are not
    entered, so a link loop cannot make the walk endless."""
    yield []
    stack: list[tuple[str, list[str]]] = [(base, [])]
    seen = 0
    while stack:
        folder, parts = stack.pop()
        try:
            entries = sftp.listdir_attr(folder)
        except OSError:
            continue
        for entry in entries:
            seen += 1
            if seen > 200_000:
                raise SSHError(f"more than 200000 files under {base}; narrow the pattern")
            child = [*parts, entry.filename]
            yield child
            if entry.st_mode is not None and stat.S_ISDIR(entry.st_mode):
                stack.append((posixpath.join(folder, entry.filename), child))


def _match_parts(parts: list[str], segments: list[str]) -> bool:
    if not segments:
        return not parts
    head, rest = segments[0], segments[1:]
    if head == "**":
        for skip in range(len(parts) + 1):
            if skip and parts[skip - 1].startswith("."):
                break
            if _match_parts(parts[skip:], rest):
                return True
        return False
    if not parts:
        return False
    name = parts[0]
    if name.startswith(".") and not head.startswith("."):
        return False
    return fnmatchcase(name, head) and _match_parts(parts[1:], rest)


def _sftp_path(path: str) -> str:
    """SFTP starts in the home folder and does not expand `~`: make such paths relative."""
    if path == "~":
        return "."
    if path.startswith("~/"):
        return path[2:] or "."
    return path


def _makedirs(sftp: paramiko.SFTPClient, folder: str) -> None:
    if folder in ("", ".", "/"):
        return
    try:
        attributes = sftp.stat(folder)
    except FileNotFoundError:
        _makedirs(sftp, posixpath.dirname(folder))
        try:
            sftp.mkdir(folder)
        except OSError:
            # Created meanwhile by another process? Then all is well.
            attributes = sftp.stat(folder)
        else:
            return
    if attributes.st_mode is not None and not stat.S_ISDIR(attributes.st_mode):
        raise OSError(errno.ENOTDIR, f"{folder} exists and is not a folder")


def _still_alive(conn: _Connection) -> bool:
    """A channel closes a moment before its dead transport says so: wait for the verdict."""
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        if not conn.alive():
            return False
        time.sleep(0.01)
    return conn.alive()


def check_host(host: Host, settings: SSHSettings) -> HostCheck:
    """Reach one host as `run` would and report how far it got: for `ansflow targets check`."""
    pool = SSHPool(settings)
    progress = _Progress()
    hostname, port, user = host.address, host.port or 22, host.user
    try:
        endpoint = pool.endpoint(host)
        hostname, port, user = endpoint.hostname, endpoint.port, endpoint.user
        pool.connection(host, progress)
        started = time.monotonic()
        status, _, err = pool.runner(host)._capture(["true"], "running a test command")
        elapsed = (time.monotonic() - started) * 1000
        error = None
        if status != 0:
            error = f"host {endpoint.label}: a test command failed: {err.decode(errors='replace')}"
        login, kind, rtt = True, None, round(elapsed, 1)
    except SSHError as failure:
        login, kind, rtt, error = False, failure.kind, None, str(failure)
    finally:
        pool.close()
    if kind == "host_key_changed":
        key_status: str | None = "changed"
    elif progress.host_key_known:
        key_status = "known"
    else:
        # NOTE: with `known_hosts: off` an unrecorded key is accepted, and still not known.
        key_status = "unknown" if progress.host_key else None
    return HostCheck(
        host=host.name,
        address=_address(hostname, port),
        user=user,
        reachable=progress.reachable,
        host_key_known=progress.host_key_known,
        host_key=progress.host_key,
        login=login,
        round_trip_ms=rtt,
        error=error,
        hostname=hostname,
        port=port,
        host_key_status=key_status,
    )
