"""The local machine: each command in its own process group, so a kill reaches its children too."""

from __future__ import annotations

import glob as globmod
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import IO

from ansflow.cancel import CancelScope
from ansflow.remote.base import Command, LineSink, Runner, RunnerError

MAX_LINE = 64 * 1024
#: Time a process group gets between SIGTERM and SIGKILL.
KILL_GRACE_S = 2.0


def _pump(stream: IO[bytes], name: str, on_line: LineSink) -> None:
    """Forward one pipe line by line; long lines are cut so memory stays bounded."""
    try:
        while True:
            raw = stream.readline(MAX_LINE)
            if not raw:
                return
            on_line(name, raw.rstrip(b"\n").rstrip(b"\r").decode("utf-8", "replace"))
    except (OSError, ValueError):
        return
    finally:
        stream.close()


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> bool:
    """Signal a whole process group; False when it no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True


def terminate_group(pgid: int, grace: float = KILL_GRACE_S) -> None:
    """SIGTERM now and SIGKILL after `grace`, without blocking the caller (a signal handler)."""
    if not kill_group(pgid, signal.SIGTERM):
        return
    timer = threading.Timer(grace, kill_group, args=(pgid, signal.SIGKILL))
    timer.daemon = True
    timer.start()


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
        pgid = process.pid
        assert process.stdout is not None and process.stderr is not None
        pumps = [
            threading.Thread(target=_pump, args=(process.stdout, "stdout", on_line), daemon=True),
            threading.Thread(target=_pump, args=(process.stderr, "stderr", on_line), daemon=True),
        ]
        for pump in pumps:
            pump.start()
        if command.stdin is not None:
            threading.Thread(target=_feed, args=(process.stdin, command.stdin), daemon=True).start()
        with scope.on_cancel(lambda _reason: terminate_group(pgid)):
            code = process.wait()
        # NOTE: like Jenkins' process tree killer, what the step left running in its group
        # (`sleep 100 &`) is stopped now; otherwise it would hold our pipes open forever.
        kill_group(pgid)
        for pump in pumps:
            pump.join()
        return code

    def make_temp_dir(self) -> str:
        return tempfile.mkdtemp(prefix="ansflow-")

    def remove_tree(self, path: str) -> None:
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
        expanded = os.path.expanduser(pattern)
        base = workdir or os.getcwd()
        full = expanded if os.path.isabs(expanded) else os.path.join(base, expanded)
        return sorted(p for p in globmod.glob(full, recursive=True) if os.path.exists(p))


def _feed(stdin: IO[bytes] | None, data: bytes) -> None:
    if stdin is None:
        return
    try:
        stdin.write(data)
        stdin.close()
    except (BrokenPipeError, OSError):
        pass
