"""The local machine: each command in its own process group, so a kill reaches its children too."""

from __future__ import annotations

import glob as globmod
import itertools
import os
import selectors
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from contextlib import suppress
from pathlib import Path
from typing import IO

from ansflow import procinfo
from ansflow.cancel import CancelScope
from ansflow.remote.base import (
    OUTPUT_ENV,
    Command,
    LineSink,
    Runner,
    RunnerError,
    Script,
    ScriptResult,
)
from ansflow.remote.direct import direct_argv
from ansflow.secrets import keep_back, pieces, safe_cut

MAX_LINE = 64 * 1024
#: How long output is still read after the command exited, if an escaped process holds the pipes.
DRAIN_S = 2.0
#: Time a process group gets between SIGTERM and SIGKILL.
KILL_GRACE_S = 2.0


class _Lines:
    """Splits a byte stream into lines; a line longer than MAX_LINE is passed on in pieces.

    Pieces are cut where `safe_cut` allows: never inside a UTF-8 character or a secret value.
    """

    def __init__(self, name: str, on_line: LineSink) -> None:
        self.name = name
        self.on_line = on_line
        self.partial = b""

    def feed(self, data: bytes) -> None:
        self.partial += data
        *lines, self.partial = self.partial.split(b"\n")
        for line in lines:
            self._emit_long(line)
        # NOTE: the end of a line still arriving may be the start of a secret: it is kept back.
        while len(self.partial) > MAX_LINE + keep_back():
            cut = safe_cut(self.partial, MAX_LINE)
            self._emit(self.partial[:cut])
            self.partial = self.partial[cut:]

    def close(self) -> None:
        if self.partial:
            self._emit_long(self.partial)
            self.partial = b""

    def _emit_long(self, line: bytes) -> None:
        for piece in pieces(line, MAX_LINE):
            self._emit(piece)

    def _emit(self, raw: bytes) -> None:
        self.on_line(self.name, raw.rstrip(b"\r").decode("utf-8", "replace"))


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> bool:
    """Signal a whole process group; False when it no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True


#: Groups sent SIGTERM whose SIGKILL is still to come. The timers are daemon threads, which die
#: with ansflow: a forced stop must kill these groups itself before it exits.
_doomed: set[int] = set()
_doomed_lock = threading.Lock()


def terminate_group(pgid: int, grace: float = KILL_GRACE_S) -> None:
    """SIGTERM now and SIGKILL after `grace`, without blocking the caller (a signal handler)."""
    if not kill_group(pgid, signal.SIGTERM):
        return
    with _doomed_lock:
        _doomed.add(pgid)
    timer = threading.Timer(grace, _kill_doomed, args=(pgid,))
    timer.daemon = True
    timer.start()


def _kill_doomed(pgid: int) -> None:
    with _doomed_lock:
        _doomed.discard(pgid)
    kill_group(pgid, signal.SIGKILL)


def kill_terminating_groups() -> None:
    """SIGKILL at once every group still in its grace period (a second interrupt: no waiting)."""
    with _doomed_lock:
        groups = list(_doomed)
        _doomed.clear()
    for pgid in groups:
        kill_group(pgid, signal.SIGKILL)


class LocalRunner(Runner):
    """Runs commands with subprocess (argument lists, never a shell string)."""

    host = None

    def run(self, command: Command, on_line: LineSink, scope: CancelScope) -> int:
        if scope.cancelled:
            return -1
        try:
            process = subprocess.Popen(
                command.argv,
                cwd=command.workdir or None,
                env=command.env or None,
                stdin=subprocess.PIPE if command.stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            missing = exc.filename or command.argv[0]
            if command.workdir and not Path(command.workdir).is_dir():
                raise RunnerError(f"working folder {command.workdir} does not exist") from None
            raise RunnerError(f"{missing}: command not found") from None
        except NotADirectoryError:
            raise RunnerError(f"working folder {command.workdir} is not a folder") from None
        except PermissionError as exc:
            raise RunnerError(f"{exc.filename or command.argv[0]}: permission denied") from None
        except OSError as exc:
            # NOTE: a file without a #! line that is not a program (ENOEXEC), among others.
            raise RunnerError(f"cannot run {command.argv[0]}: {exc.strerror or exc}") from None
        pgid = process.pid
        assert process.stdout is not None and process.stderr is not None
        if command.stdin is not None:
            threading.Thread(target=_feed, args=(process.stdin, command.stdin), daemon=True).start()
        with scope.on_cancel(lambda _reason: terminate_group(pgid)):
            _read_until_done(process, pgid, on_line)
            code = process.wait()
        return code

    def __init__(self) -> None:
        self._folder: str | None = None
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()

    def run_script(self, script: Script, on_line: LineSink, scope: CancelScope) -> ScriptResult:
        """The script and its `$ANSFLOW_OUTPUT` file are two files in the run's private folder,
        removed after the attempt: cheaper than a folder per attempt for runs of short steps."""
        number = next(self._numbers)
        folder = self._private_folder()
        output, path = f"{folder}/{number}.output", f"{folder}/{number}.script"
        try:
            self.write_file(output, b"", 0o600)
            env = {**script.env, OUTPUT_ENV: output}
            status = self.run_script_file(path, script, env, on_line, scope)
            return ScriptResult(status, None if scope.cancelled else self.read_file(output))
        finally:
            for name in (output, path):
                with suppress(OSError):
                    os.unlink(name)

    def run_script_file(
        self, path: str, script: Script, env: dict[str, str], on_line: LineSink, scope: CancelScope
    ) -> int:
        """A script that is one plain command runs without the shell around it (see `direct`);
        its status is then the one bash would give, 128 + N for a signal."""
        argv = direct_argv(script.text, script.shell, env, script.workdir)
        if argv is not None:
            try:
                status = self.run(
                    Command(argv=argv, env=env, workdir=script.workdir), on_line, scope
                )
            except RunnerError:
                pass  # it could not be started after all: the shell says why
            else:
                return 128 - status if status < 0 else status
        return super().run_script_file(path, script, env, on_line, scope)

    def _private_folder(self) -> str:
        """This ansflow's folder under the temporary folder, named after the process (see
        `procinfo.temp_prefix`) so that closing its run after a kill -9 can remove it."""
        with self._lock:
            if self._folder is None or not os.path.isdir(self._folder):
                owner = procinfo.owner_token(*procinfo.current()[:2])
                self._folder = tempfile.mkdtemp(prefix=procinfo.temp_prefix(owner))
            return self._folder

    def close(self) -> None:
        with self._lock:
            folder, self._folder = self._folder, None
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    def make_temp_dir(self) -> str:
        return tempfile.mkdtemp(prefix="step-", dir=self._private_folder())

    def remove_tree(self, path: str) -> None:
        # NOTE: a step's temp folder holds two or three plain files; unlinking them directly is
        # several times cheaper than rmtree, which matters for pipelines of many short steps.
        try:
            with os.scandir(path) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        raise IsADirectoryError(entry.path)
                    os.unlink(entry.path)
            os.rmdir(path)
        except FileNotFoundError:
            return
        except OSError:
            shutil.rmtree(path, ignore_errors=True)

    def write_file(self, path: str, data: bytes, mode: int = 0o600) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)

    def read_file(self, path: str) -> bytes | None:
        try:
            return Path(path).read_bytes()
        except FileNotFoundError:
            return None
        except IsADirectoryError:
            raise RunnerError(f"{path} is a folder, not a file") from None
        except OSError as exc:
            raise RunnerError(f"cannot read {path}: {exc.strerror or exc}") from None

    def put(self, local: Path, remote: str, mode: int | None = None) -> None:
        target = Path(remote)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_dir():
                raise RunnerError(f"cannot copy {local} to {remote}: a folder is in the way")
            shutil.copyfile(local, target)
            if mode is not None:
                target.chmod(mode)
            else:
                shutil.copymode(local, target)
        except shutil.SameFileError:
            raise RunnerError(f"cannot copy {local} onto itself") from None
        except OSError as exc:
            where = exc.filename or remote
            raise RunnerError(
                f"cannot copy {local} to {remote}: {exc.strerror or exc} ({where})"
            ) from None

    def get(self, remote: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(remote, local)

    def glob(self, pattern: str, workdir: str | None) -> list[str]:
        full = absolute_pattern(pattern, workdir or os.getcwd())
        return sorted(p for p in globmod.glob(full, recursive=True) if os.path.exists(p))


def absolute_pattern(pattern: str, base: str) -> str:
    """`pattern` made absolute: `~` expanded and a relative one put under `base`.

    The folder parts that did not come from the pattern (the home folder, `base`) are escaped,
    so a project living in `/srv/app[1]` does not turn its own path into a glob.
    """
    if pattern.startswith("~"):
        head, sep, rest = pattern.partition("/")
        home = os.path.expanduser(head)
        if home != head:
            return globmod.escape(home) + sep + rest
    if os.path.isabs(pattern):
        return pattern
    return os.path.join(globmod.escape(base), pattern)


def _read_until_done(process: subprocess.Popen[bytes], pgid: int, on_line: LineSink) -> None:
    """Forward both pipes line by line in this thread until the command is over.

    When the command exits, whatever it left running in its process group (`sleep 100 &`) is
    killed, like Jenkins' process tree killer does; a process that escaped the group and still
    holds the pipes gets DRAIN_S seconds before we stop reading.
    """
    assert process.stdout is not None and process.stderr is not None
    selector = selectors.DefaultSelector()
    splitters = {
        process.stdout.fileno(): _Lines("stdout", on_line),
        process.stderr.fileno(): _Lines("stderr", on_line),
    }
    for fd in splitters:
        os.set_blocking(fd, False)
        selector.register(fd, selectors.EVENT_READ)
    exited_at: float | None = None
    try:
        while selector.get_map():
            if exited_at is None:
                wait = 0.1
            else:
                wait = exited_at + DRAIN_S - time.monotonic()
                if wait <= 0:
                    break
            for key, _ in selector.select(wait):
                try:
                    data = os.read(key.fd, 65536)
                except BlockingIOError:
                    continue
                if data:
                    splitters[key.fd].feed(data)
                else:
                    selector.unregister(key.fd)
            if exited_at is None and process.poll() is not None:
                exited_at = time.monotonic()
                kill_group(pgid)
    finally:
        selector.close()
        for splitter in splitters.values():
            splitter.close()
        process.stdout.close()
        process.stderr.close()
    if exited_at is None:
        # NOTE: both pipes closed while the command still runs: it closed or redirected them
        # (coreutils close stdout before they exit; `exec >log 2>&1`). It is not over yet; a
        # cancel or timeout still reaches it through its group.
        process.wait()
        kill_group(pgid)


def _feed(stdin: IO[bytes] | None, data: bytes) -> None:
    if stdin is None:
        return
    try:
        stdin.write(data)
        stdin.close()
    except (BrokenPipeError, OSError):
        pass
