"""Commands that read or steer runs from outside: runs, show, logs, cancel, approve, reject, repair.

Opening the database closes runs whose process died (SPEC section 3), unless the database cannot
be written, in which case the commands read it as it is.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ansflow import procinfo
from ansflow.errors import StorageError, UsageError
from ansflow.events import parse_iso
from ansflow.state import StateStore, elapsed, resolve_db_path

FOLLOW_POLL_S = 0.2
#: Run states of SPEC section 3, for `ansflow runs --status`.
RUN_STATES = ("running", "success", "failed", "cancelled", "interrupted", "waiting")


def open_for_reading(db: Path | None) -> StateStore:
    """Writable when possible (so dead runs get closed), read-only otherwise."""
    path = resolve_db_path(db)
    if not path.exists():
        return StateStore.open(path, readonly=True)
    writable = os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)
    if writable:
        try:
            return StateStore.open(path)
        except StorageError:
            if _is_corrupt(path):
                raise
    return StateStore.open(path, readonly=True)


def _is_corrupt(path: Path) -> bool:
    from ansflow.state import SQLITE_HEADER

    try:
        with path.open("rb") as handle:
            return handle.read(len(SQLITE_HEADER)) != SQLITE_HEADER
    except OSError:
        return False


def open_for_writing(db: Path | None, recover: bool = True) -> StateStore:
    """For commands that change existing runs (cancel, approve, reject, repair).

    They never create anything: with no database there is no run to change, so a missing file is
    read as an empty store and a missing folder is bad input (a mistyped `--db`), unlike
    `ansflow run`, which creates both.
    """
    path = resolve_db_path(db)
    if not path.parent.is_dir():
        what = "is not a folder" if path.parent.exists() else "does not exist"
        raise StorageError(f"cannot use state database {path}: the folder {path.parent} {what}")
    if not path.exists():
        return StateStore.open(path, readonly=True)
    return StateStore.open(path, recover=recover)


def _public_run(run: dict[str, Any]) -> dict[str, Any]:
    duration = run["duration"]
    if duration is None and run["status"] in ("running", "waiting"):
        duration = elapsed(run["started_at"], None)
    return {
        "id": run["id"],
        "pipeline": run["pipeline"],
        "status": run["status"],
        "started_at": run["started_at"],
        "finished_at": run["finished_at"],
        "duration": duration,
        "trigger": run["trigger"],
        "file": run["file"],
        "exit_code": run["exit_code"],
    }


def check_run_status(status: str | None) -> None:
    """`--status` must name a run state: a typo would otherwise list nothing and exit 0."""
    if status is not None and status not in RUN_STATES:
        raise UsageError(
            f"--status {status!r}: not a run state; choose one of {', '.join(RUN_STATES)}"
        )


def runs_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps([_public_run(r) for r in rows], indent=2) + "\n"


def show_json(run: dict[str, Any], steps: list[dict[str, Any]]) -> str:
    data = {
        "run": {**_public_run(run), "error": run.get("error")},
        "steps": [
            {
                "step": s["step"],
                "host": s["host"] or None,
                "status": s["status"],
                "attempts": s["attempts"],
                "started_at": s["started_at"],
                "finished_at": s["finished_at"],
                "duration": s["duration"],
                "exit_code": s["exit_code"],
                "error": s["error"],
                "type": s["type"],
                "target": s["target"],
                "outputs": s["outputs"],
                "details": s["details"],
            }
            for s in steps
        ],
    }
    return json.dumps(data, indent=2) + "\n"


def _log_line(row: dict[str, Any]) -> str:
    moment = parse_iso(row["ts"])
    clock = moment.astimezone().strftime("%H:%M:%S") if moment else "--:--:--"
    who = f"{row['step']}@{row['host']}" if row["host"] else row["step"]
    prefix = "ansflow: " if row["stream"] == "ansflow" else ""
    return f"{clock} {who} | {prefix}{row['line']}"


def print_logs(
    store: StateStore,
    ref: str,
    step: str | None,
    host: str | None,
    follow: bool,
    out: Callable[[str], None],
) -> None:
    """Stored lines in order; with `follow`, new ones too until the run is no longer running."""
    try:
        run = store.run(ref)
        run_id = int(run["id"])
        if step is not None:
            known = {s["step"] for s in store.steps(run_id)} | {
                s["base_id"] for s in store.steps(run_id)
            }
            if step not in known:
                raise UsageError(f"run {run_id} has no step {step!r}")
        last = 0
        while True:
            for row in store.logs(run_id, step, host, after=last):
                out(_log_line(row))
                last = row["id"]
            if not follow:
                return
            if not store.readonly:
                store.recover(only_run=run_id)
            status = store.raw_run(run_id)["status"]
            if status != "running":
                for row in store.logs(run_id, step, host, after=last):
                    out(_log_line(row))
                    last = row["id"]
                return
            time.sleep(FOLLOW_POLL_S)
    finally:
        store.close()


# --- steering runs -------------------------------------------------------------------------------


def cancel(db: Path | None, ref: str) -> str:
    """Signal the process that owns a running run (SIGTERM: the same path as Ctrl-C)."""
    store = open_for_writing(db)
    try:
        run = store.run(ref)
        raw = store.raw_run(run["id"])
        if run["status"] == "waiting":
            store.close_unfinished(run["id"], "cancelled", "cancelled by `ansflow cancel`")
            store.set_run_status(run["id"], "cancelled", 3, "cancelled by `ansflow cancel`")
            return f"run {run['id']} was waiting; it is now cancelled"
        if run["status"] != "running":
            raise UsageError(f"run {run['id']} is {run['status']}, not running")
        import socket

        if raw["hostname"] != socket.gethostname():
            raise UsageError(f"run {run['id']} runs on {raw['hostname']}; cancel it there")
        if not procinfo.is_alive(raw["pid"], raw["pid_start"]):
            store.recover(only_run=run["id"])
            return f"run {run['id']}: its process was gone; it is now interrupted"
        try:
            os.kill(int(raw["pid"]), signal.SIGTERM)
        except ProcessLookupError:
            store.recover(only_run=run["id"])
            return f"run {run['id']}: its process was gone; it is now interrupted"
        except PermissionError:
            raise UsageError(
                f"run {run['id']} belongs to another user (pid {raw['pid']}); "
                "no permission to stop it"
            ) from None
        return f"run {run['id']}: asked process {raw['pid']} to cancel it"
    finally:
        store.close()


def wait_for_end(db: Path | None, run_id: int, timeout: float) -> str:
    """The run's status once it is no longer running (or after `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        store = open_for_reading(db)
        try:
            status = str(store.raw_run(run_id)["status"])
        finally:
            store.close()
        if status != "running" or time.monotonic() >= deadline:
            return status
        time.sleep(FOLLOW_POLL_S)


def decide(
    db: Path | None, ref: str, step: str, decision: str, comment: str | None, user: str
) -> str:
    """Record an approval or rejection; a rejected waiting run fails at once (SPEC section 4)."""
    store = open_for_writing(db)
    try:
        run = store.run(ref)
        run_id = int(run["id"])
        rows = [s for s in store.steps(run_id) if s["step"] == step]
        if not rows:
            raise UsageError(f"run {run_id} has no step {step!r}")
        row = rows[0]
        if row["type"] != "approval":
            raise UsageError(
                f"step {step!r} of run {run_id} is a {row['type']} step, not an approval gate"
            )
        if row["status"] not in ("waiting", "pending"):
            raise UsageError(f"gate {step!r} of run {run_id} is {row['status']}; nothing to decide")
        if run["status"] not in ("running", "waiting"):
            raise UsageError(
                f"run {run_id} is {run['status']}; only running or waiting runs take decisions"
            )
        approvers = _approvers(store, run_id, step)
        if approvers and user not in approvers:
            raise UsageError(
                f"{user} may not decide gate {step!r}; approvers: {', '.join(approvers)}"
            )
        store.decide(run_id, step, decision, user, comment)
        if decision == "rejected" and run["status"] == "waiting":
            _reject_waiting(store, run_id, step, user, comment)
            return f"run {run_id}: gate {step} rejected by {user}; the run has failed"
        if decision == "approved":
            follow = (
                "the run goes on"
                if run["status"] == "running"
                else f"continue with `ansflow resume {run_id}`"
            )
            return f"run {run_id}: gate {step} approved by {user}; {follow}"
        return f"run {run_id}: gate {step} rejected by {user}"
    finally:
        store.close()


def _approvers(store: StateStore, run_id: int, step: str) -> list[str]:
    from ansflow.loader import load_text
    from ansflow.model import ApprovalStep

    raw = store.raw_run(run_id)
    try:
        loaded = load_text(raw["pipeline_text"] or "", Path(raw["file"]))
    except Exception:
        return []
    plan = loaded.plan()
    node = plan.by_id.get(step)
    if node is None or not isinstance(node.step, ApprovalStep):
        return []
    return list(node.step.approvers)


def _reject_waiting(
    store: StateStore, run_id: int, step: str, user: str, comment: str | None
) -> None:
    """Gate failed, what waits behind it skipped, run failed: without resuming."""
    reason = f"rejected by {user}" + (f": {comment}" if comment else "")
    from ansflow.events import StepFinished

    store.record(StepFinished(run_id, step=step, host="", status="failed", attempt=0, error=reason))
    store.close_unfinished(run_id, "skipped", f"gate {step} was rejected")
    store.set_run_status(run_id, "failed", 1, f"gate {step} {reason}")


def repair(db: Path | None) -> list[dict[str, Any]]:
    """Close every run whose process is gone; returns what was closed."""
    store = open_for_writing(db, recover=False)
    try:
        return store.recover()
    finally:
        store.close()
