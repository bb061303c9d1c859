"""Builds: their console, their flow graph, their processes and how they are interrupted.

Everything here is guarded by the emulator's one condition variable (`cond`): HTTP handler
threads read builds while build threads write them, and a single lock keeps "the console ends
with Finished:" and "building is false" atomic, which is what a client polling
progressiveText relies on (no X-More-Data means the text is complete).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

RESULT_ORDER = {"SUCCESS": 0, "UNSTABLE": 1, "FAILURE": 2, "NOT_BUILT": 3, "ABORTED": 4}

# How long a process group gets between SIGTERM and SIGKILL.
KILL_GRACE_S = 1.0


def now_ms() -> int:
    return int(time.time() * 1000)


def worse(current: str | None, new: str) -> str:
    """Jenkins' Run.setResult only ever makes a result worse."""
    if current is None or RESULT_ORDER[new] > RESULT_ORDER[current]:
        return new
    return current


class Interrupted(Exception):
    """FlowInterruptedException: a user abort or an expired timeout."""

    java_type = "org.jenkinsci.plugins.workflow.steps.FlowInterruptedException"

    def __init__(self, cause: str, user: str = "", result: str = "ABORTED") -> None:
        super().__init__(cause)
        self.cause = cause  # "user" or "timeout"
        self.user = user
        self.result = result


@dataclass
class StepHandle:
    """A running step that an abort has to reach (one per concurrently running step)."""

    interrupted: Interrupted | None = None
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)


@dataclass
class FlowNode:
    """A node of the Pipeline flow graph, as far as the Pipeline REST API shows it."""

    id: str
    name: str
    kind: str  # "stage" or "atom"
    start_ms: int
    parent: str | None = None  # enclosing stage id
    end_ms: int | None = None
    error: tuple[str, str] | None = None  # (message, java type)
    warning: str | None = None  # worst result set by catchError/unstable inside
    skipped: str | None = None  # "conditional" or "failure"
    log: bytearray = field(default_factory=bytearray)
    children: list[str] = field(default_factory=list)
    param_desc: str | None = None


class Build:
    """One run of a job: freestyle or Pipeline."""

    def __init__(
        self,
        *,
        cond: threading.Condition,
        job_full_name: str,
        job_url: str,
        job_kind: str,
        number: int,
        queue_id: int,
        parameters: list[tuple[str, str, str | bool]],
        user: str,
        workspace: str,
        tmpdir: str,
        base_url: str,
    ) -> None:
        self.cond = cond
        self.job_full_name = job_full_name
        self.job_url = job_url  # absolute
        self.kind = job_kind
        self.number = number
        self.queue_id = queue_id
        self.parameters = parameters  # (kind, name, value)
        self.user = user
        self.workspace = workspace
        self.tmpdir = tmpdir
        self.base_url = base_url
        self.timestamp_ms = now_ms()
        self.end_ms: int | None = None
        self.result: str | None = None
        self.building = True
        self.console = bytearray()
        self.nodes: dict[str, FlowNode] = {}
        self.stage_order: list[str] = []
        self._next_node = 3  # ids 1-2 are the flow start nodes in Jenkins
        self._steps: list[StepHandle] = []
        self._pending: Interrupted | None = None
        self._all_pgids: set[int] = set()
        self.aborted_by: str | None = None
        self.thread: threading.Thread | None = None
        self.estimated_ms = -1

    # -- identity
    @property
    def url(self) -> str:
        return f"{self.job_url}{self.number}/"

    @property
    def display_name(self) -> str:
        return f"#{self.number}"

    def env(self) -> dict[str, str]:
        """The variables Jenkins puts in every build step's environment."""
        base = os.environ.copy()
        job_base = self.job_full_name.rsplit("/", 1)[-1]
        base.update(
            {
                "BUILD_NUMBER": str(self.number),
                "BUILD_ID": str(self.number),
                "BUILD_DISPLAY_NAME": self.display_name,
                "JOB_NAME": self.job_full_name,
                "JOB_BASE_NAME": job_base,
                "BUILD_TAG": f"jenkins-{self.job_full_name.replace('/', '-')}-{self.number}",
                "EXECUTOR_NUMBER": "0",
                "NODE_NAME": "built-in",
                "NODE_LABELS": "built-in",
                "WORKSPACE": self.workspace,
                "JENKINS_URL": self.base_url,
                "BUILD_URL": self.url,
                "JOB_URL": self.job_url,
                "CI": "true",
            }
        )
        for _kind, name, value in self.parameters:
            base[name] = str(value).lower() if isinstance(value, bool) else str(value)
        return base

    # -- console
    def log(self, text: str | bytes, node: FlowNode | None = None, prefix: str = "") -> None:
        """Append to the console (with a parallel-branch prefix) and to a node's own log."""
        data = text.encode() if isinstance(text, str) else text
        with self.cond:
            if prefix:
                lines = data.splitlines(keepends=True)
                self.console.extend(b"".join(prefix.encode() + ln for ln in lines))
            else:
                self.console.extend(data)
            if node is not None:
                node.log.extend(data)
            self.cond.notify_all()

    def console_from(self, start: int) -> tuple[bytes, int, bool]:
        """progressiveText: bytes from `start`, the new offset, and whether more will come."""
        with self.cond:
            size = len(self.console)
            if start > size:
                start = 0  # Jenkins' LargeText treats a start past the end as "log rolled over"
            return bytes(self.console[start:]), size, self.building

    # -- flow graph
    def new_node(
        self, name: str, kind: str, parent: str | None, param_desc: str | None = None
    ) -> FlowNode:
        with self.cond:
            node = FlowNode(
                id=str(self._next_node),
                name=name,
                kind=kind,
                start_ms=now_ms(),
                parent=parent,
                param_desc=param_desc,
            )
            self._next_node += 1
            self.nodes[node.id] = node
            if kind == "stage":
                self.stage_order.append(node.id)
            elif parent is not None and parent in self.nodes:
                self.nodes[parent].children.append(node.id)
            self.cond.notify_all()
            return node

    def end_node(self, node: FlowNode, error: tuple[str, str] | None = None) -> None:
        with self.cond:
            node.end_ms = now_ms()
            if error is not None:
                node.error = error
            self.cond.notify_all()

    def set_result(self, result: str) -> None:
        with self.cond:
            self.result = worse(self.result, result)
            self.cond.notify_all()

    # -- steps, processes and interruption
    def begin_step(self) -> StepHandle:
        with self.cond:
            handle = StepHandle(interrupted=self._pending)
            self._pending = None
            self._steps.append(handle)
            return handle

    def end_step(self, handle: StepHandle) -> None:
        with self.cond:
            if handle in self._steps:
                self._steps.remove(handle)

    def interrupt(self, cause: str, user: str = "", *, deliver_later: bool = True) -> None:
        """Deliver an abort to every running step (or the next one) and kill their processes."""
        with self.cond:
            if not self.building:
                return
            exc = Interrupted(cause, user)
            if cause == "user":
                # Executor.interrupt(Result.ABORTED): the run ends ABORTED even if the
                # Pipeline catches the interruption and carries on.
                self.result = worse(self.result, "ABORTED")
                self.aborted_by = user
            if self._steps:
                for handle in self._steps:
                    if handle.interrupted is None:
                        handle.interrupted = exc
                    for proc in handle.procs:
                        kill_group(proc.pid)  # run_script escalates to SIGKILL if need be
            elif deliver_later:
                self._pending = exc
            self.cond.notify_all()

    def track(self, handle: StepHandle, proc: subprocess.Popen[bytes]) -> None:
        with self.cond:
            handle.procs.append(proc)
            self._all_pgids.add(proc.pid)

    def untrack(self, handle: StepHandle, proc: subprocess.Popen[bytes]) -> None:
        with self.cond:
            if proc in handle.procs:
                handle.procs.remove(proc)

    def kill_leftovers(self) -> None:
        """Kill what build steps left behind, as Jenkins' ProcessTreeKiller does at build end.

        A group is forgotten once it has no live member, so a pgid number the kernel hands out
        again later can never be signalled by mistake.
        """
        with self.cond:
            pgids = list(self._all_pgids)
        for pgid in pgids:
            kill_group(pgid, signal.SIGKILL)
        gone = {p for p in pgids if not _group_alive(p)}
        with self.cond:
            self._all_pgids -= gone

    def live_pids(self) -> list[int]:
        with self.cond:
            pgids = list(self._all_pgids)
        return [p for p in pgids if _group_alive(p)]

    def finish(self, result: str, trailer: str = "") -> None:
        """Write the last console lines and flip `building`, atomically."""
        with self.cond:
            self.result = worse(self.result, result)
            self.console.extend(f"{trailer}Finished: {self.result}\n".encode())
            self.end_ms = now_ms()
            self.building = False
            self.cond.notify_all()


def _group_alive(pgid: int) -> bool:
    """Whether a process group has a member that is not a zombie.

    killpg(pgid, 0) alone is not enough: orphans of a killed build are re-parented to PID 1,
    which in a container may never reap them, and a zombie still counts as a group member.
    """
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # fields: state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def kill_group(pgid: int, sig: int = signal.SIGTERM) -> None:
    """Signal a whole process group; a group that is already gone is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def run_script(
    build: Build,
    handle: StepHandle,
    script: str,
    *,
    env: dict[str, str],
    cwd: str,
    sink: Callable[[bytes], None],
    deadline: Callable[[], bool] | None = None,
    on_start: Callable[[str], None] | None = None,
) -> int:
    """Run `script` with `bash -xe` in its own session, streaming output line by line.

    Returns the exit status in shell convention (128+N when killed by signal N). Raises
    Interrupted when an abort reached this step or `deadline()` said the time is up; the
    process group is killed first in both cases.
    """
    fd, path = tempfile.mkstemp(prefix="jenkins", suffix=".sh", dir=build.tmpdir)
    with os.fdopen(fd, "w") as fh:
        fh.write(script)
    os.makedirs(cwd, exist_ok=True)
    if on_start is not None:
        on_start(path)
    if handle.interrupted is not None:
        raise handle.interrupted
    proc = subprocess.Popen(
        ["bash", "-xe", path],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    build.track(handle, proc)
    assert proc.stdout is not None
    stdout = proc.stdout

    def _pump() -> None:
        for line in iter(stdout.readline, b""):
            sink(line)

    reader = threading.Thread(target=_pump, name=f"console-{proc.pid}", daemon=True)
    reader.start()
    timed_out = False
    term_sent: float | None = None
    try:
        while True:
            try:
                proc.wait(timeout=0.05)
                break
            except subprocess.TimeoutExpired:
                pass
            if not timed_out and handle.interrupted is None and deadline is not None:
                timed_out = deadline()
            if term_sent is None and (timed_out or handle.interrupted is not None):
                # SIGTERM first so `trap` handlers run, as Jenkins' ProcessTree.killAll does;
                # the leader is not reaped yet, so its pgid cannot belong to anyone else.
                kill_group(proc.pid)
                term_sent = time.monotonic()
            elif term_sent is not None and time.monotonic() - term_sent > KILL_GRACE_S:
                kill_group(proc.pid, signal.SIGKILL)
    finally:
        # A background child may keep the pipe open after the script exits; Jenkins' sh step
        # returns on the script's exit all the same, so don't wait for the pipe forever.
        reader.join(timeout=1.0)
        build.untrack(handle, proc)
        with contextlib.suppress(OSError):
            os.unlink(path)
    if handle.interrupted is not None:
        raise handle.interrupted
    if timed_out:
        raise Interrupted("timeout")
    rc = proc.returncode
    return 128 - rc if rc < 0 else rc


def wait_interruptible(
    build: Build, handle: StepHandle, seconds: float, deadline: Callable[[], bool] | None
) -> None:
    """The `sleep` step: a wait that an abort or a timeout cuts short."""
    end = time.monotonic() + seconds
    with build.cond:
        while True:
            if handle.interrupted is not None:
                raise handle.interrupted
            if deadline is not None and deadline():
                raise Interrupted("timeout")
            left = end - time.monotonic()
            if left <= 0:
                return
            build.cond.wait(min(left, 0.05))
