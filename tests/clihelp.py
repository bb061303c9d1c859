"""Running ansflow the way a user does: as a separate process, with its own database."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Result:
    """A finished `ansflow` process."""

    code: int
    out: str
    err: str

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.splitlines() if line.strip()]

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


class Cli:
    """`cli("run", "x.yml")` runs `python -m ansflow` in a folder with a private database."""

    def __init__(self, cwd: Path, env: dict[str, str] | None = None) -> None:
        self.cwd = cwd
        self.db = cwd / ".ansflow" / "state.db"
        self.env = {**os.environ, "ANSFLOW_DB": str(self.db), "NO_COLOR": "1", **(env or {})}
        self.env.pop("CI", None)

    def write(self, name: str, text: str) -> Path:
        path = self.cwd / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "ansflow", *args]

    def __call__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        timeout: float = 120,
        stdin: str | None = None,
    ) -> Result:
        proc = subprocess.run(
            self.command(*args),
            cwd=self.cwd,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
        )
        assert "Traceback" not in proc.stderr, proc.stderr
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def popen(
        self, *args: str, env: dict[str, str] | None = None, **kwargs: Any
    ) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.command(*args),
            cwd=self.cwd,
            env={**self.env, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            **kwargs,
        )

    def show(self, run: str = "last") -> dict[str, Any]:
        result = self("show", run, "--json")
        assert result.code == 0, str(result)
        return json.loads(result.out)

    def statuses(self, run: str = "last") -> dict[str, str]:
        """{"step" or "step@host": status} of a run."""
        data = self.show(run)
        return {
            (f"{s['step']}@{s['host']}" if s["host"] else s["step"]): s["status"]
            for s in data["steps"]
        }


def marker_procs(marker: str) -> list[int]:
    """Live pids whose command line holds `marker` (what a step left running, locally or on the
    test's 'remote' sshd hosts, which are this machine)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """A pid that exists and is not a zombie waiting to be reaped (a killed child may linger)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return False
    return state != "Z"


def wait_for(condition: Any, what: str, timeout: float = 60.0) -> None:
    """Poll a condition that an event makes true (a file appears, a state is committed)."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def run_in_pty(
    cli: Cli,
    args: list[str],
    answer: str | None = None,
    colour: bool = False,
    timeout: float = 60.0,
) -> tuple[int, str]:
    """Run ansflow on a pseudo-terminal (stdin, stdout and stderr), as at a real terminal.

    With `answer`, it is typed once the approval prompt (`[y/N]`) shows. Returns the exit status
    and everything the terminal received.
    """
    import pty
    import select
    import subprocess
    import time

    leader, follower = pty.openpty()
    env = {**cli.env, "COLUMNS": "120", "LINES": "40", "TERM": "xterm"}
    if colour:
        env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        cli.command(*args),
        cwd=cli.cwd,
        env=env,
        stdin=follower,
        stdout=follower,
        stderr=follower,
        close_fds=True,
    )
    os.close(follower)
    seen = b""
    answered = False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    data = os.read(leader, 65536)
                except OSError:
                    break
                if not data:
                    break
                seen += data
                if answer is not None and not answered and b"[y/N]" in seen:
                    os.write(leader, answer.encode())
                    answered = True
            elif proc.poll() is not None:
                break
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(leader)
    return proc.returncode, seen.decode("utf-8", "replace")


class Events:
    """The JSON event stream of a running `ansflow run -o json`, read in a thread."""

    def __init__(self, proc: subprocess.Popen[str], deadline: float = 60.0) -> None:
        self.proc = proc
        self.deadline = deadline
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def until(self, predicate: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.deadline
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"timed out waiting for {what}") from None
            if line is None:
                raise AssertionError(f"ansflow ended before {what}: {self.seen[-5:]}")
            if line.strip():
                event = json.loads(line)
                self.seen.append(event)
                if predicate(event):
                    return event

    def log(self, text: str) -> dict[str, Any]:
        return self.until(
            lambda e: e["event"] == "log" and text in e["text"], f"a log line with {text!r}"
        )

    def finish(self) -> int:
        code = self.proc.wait(timeout=self.deadline)
        while (line := self.lines.get(timeout=self.deadline)) is not None:
            if line.strip():
                self.seen.append(json.loads(line))
        assert self.proc.stderr is not None
        err = self.proc.stderr.read()
        assert "Traceback" not in err, err
        return code
