"""One OS file lock per pipeline file, so two runs of the same pipeline never overlap.

flock is released by the kernel when the process dies, so a crashed run never leaves a stale lock.
The file holds the holder's run id and pid only to name them in the message.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path

from ansflow.errors import LockedError, StorageError


def default_lock_dir() -> Path:
    """This user's lock folder: one for the machine, so the lock is the pipeline file's whatever
    `--db` says (`$ANSFLOW_LOCK_DIR` overrides it; `$XDG_RUNTIME_DIR` is preferred to /tmp)."""
    chosen = os.environ.get("ANSFLOW_LOCK_DIR")
    if chosen:
        return Path(chosen)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return Path(runtime) / "ansflow" / "locks"
    import tempfile

    return Path(tempfile.gettempdir()) / f"ansflow-{os.geteuid()}" / "locks"


class PipelineLock:
    """An exclusive lock on one pipeline file (by its real path: a symlink is the same file)."""

    def __init__(self, lock_dir: Path, pipeline_file: Path) -> None:
        real = pipeline_file.resolve()
        digest = hashlib.sha256(str(real).encode()).hexdigest()[:16]
        self.path = lock_dir / f"{real.stem}-{digest}.lock"
        self.pipeline_file = pipeline_file
        self._fd: int | None = None

    def acquire(self, wait: bool) -> None:
        """Take the lock; LockedError (exit 5) naming the holder when busy and not waiting."""
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if self.path.parent.stat().st_uid != os.geteuid():
                raise StorageError(f"lock folder {self.path.parent} belongs to another user")
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise StorageError(
                f"cannot create lock file {self.path}: {exc.strerror or exc}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            who = (
                f"run {holder.get('run_id')} (pid {holder.get('pid')})" if holder else "another run"
            )
            raise LockedError(
                f"pipeline {self.pipeline_file} is locked by {who}; use --wait-lock to wait for it"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def note_holder(self, run_id: int) -> None:
        if self._fd is None:
            return
        data = json.dumps({"run_id": run_id, "pid": os.getpid()}).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
            except OSError:
                pass
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> PipelineLock:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


def _read_holder(fd: int) -> dict[str, object]:
    try:
        data = os.pread(fd, 4096, 0)
        value = json.loads(data) if data else {}
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}
