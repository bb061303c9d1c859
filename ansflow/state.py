"""The state store: the only module that touches SQLite (through sqlite-utils).

Short transactions in WAL mode with a busy timeout, so many ansflow processes can share one file.
Every state change is committed here before a renderer sees it; log lines arrive in small batches.
Runs whose process died are closed as `interrupted` whenever a command opens the database.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ansflow import procinfo
from ansflow.errors import StorageError, UsageError
from ansflow.events import (
    Event,
    RunFinished,
    StepFinished,
    StepOutput,
    StepStarted,
    StepState,
    iso,
    now,
    parse_iso,
)

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 60.0
UNFINISHED = ("pending", "running", "retrying", "waiting")


def default_db_path(start: Path | None = None) -> Path:
    """`.ansflow/state.db` in the nearest folder that has `.ansflow/`, as git finds `.git`."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / ".ansflow"
        if candidate.is_dir():
            return candidate / "state.db"
    return here / ".ansflow" / "state.db"


def resolve_db_path(explicit: Path | None) -> Path:
    if explicit is not None:
        return explicit
    env = os.environ.get("ANSFLOW_DB")
    return Path(env) if env else default_db_path()


@dataclass(frozen=True)
class UnitRow:
    """A step instance on one host ('' when it has no host), as first written when a run starts."""

    step: str
    host: str
    base_id: str
    name: str
    type: str
    target: str
    position: int


def _migrate_v1(db: Any) -> None:
    db["runs"].create(
        {
            "id": int,
            "pipeline": str,
            "file": str,
            "status": str,
            "trigger": str,
            "started_at": str,
            "finished_at": str,
            "duration": float,
            "exit_code": int,
            "pid": int,
            "pid_start": str,
            "hostname": str,
            "user": str,
            "args": str,
            "pipeline_text": str,
            "pipeline_sha256": str,
            "error": str,
        },
        pk="id",
        not_null={"pipeline", "status", "started_at"},
    )
    db["runs"].create_index(["pipeline", "id"])
    db["runs"].create_index(["status"])
    db["steps"].create(
        {
            "id": int,
            "run_id": int,
            "step": str,
            "host": str,
            "base_id": str,
            "name": str,
            "type": str,
            "target": str,
            "position": int,
            "status": str,
            "attempts": int,
            "started_at": str,
            "finished_at": str,
            "duration": float,
            "exit_code": int,
            "error": str,
            "outputs": str,
            "details": str,
        },
        pk="id",
        foreign_keys=[("run_id", "runs", "id")],
        not_null={"run_id", "step", "host", "status"},
        defaults={"host": "", "attempts": 0},
    )
    db["steps"].create_index(["run_id", "step", "host"], unique=True)
    db["steps"].create_index(["base_id", "status"])
    db["attempts"].create(
        {
            "id": int,
            "run_id": int,
            "step": str,
            "host": str,
            "attempt": int,
            "status": str,
            "started_at": str,
            "finished_at": str,
            "duration": float,
            "exit_code": int,
            "error": str,
        },
        pk="id",
        foreign_keys=[("run_id", "runs", "id")],
    )
    db["attempts"].create_index(["run_id", "step", "host", "attempt"], unique=True)
    db["logs"].create(
        {
            "id": int,
            "run_id": int,
            "step": str,
            "host": str,
            "attempt": int,
            "ts": str,
            "stream": str,
            "line": str,
        },
        pk="id",
        foreign_keys=[("run_id", "runs", "id")],
    )
    db["logs"].create_index(["run_id", "step", "host", "id"])
    db["approvals"].create(
        {
            "id": int,
            "run_id": int,
            "step": str,
            "decision": str,
            "user": str,
            "comment": str,
            "decided_at": str,
        },
        pk="id",
        foreign_keys=[("run_id", "runs", "id")],
    )
    db["approvals"].create_index(["run_id", "step"])


MIGRATIONS = [_migrate_v1]


class StateStore:
    """One open database. Not shared between threads: the executor writes from one thread."""

    def __init__(self, path: Path, conn: sqlite3.Connection, readonly: bool) -> None:
        self.path = path
        self.conn = conn
        self.readonly = readonly

    @property
    def db(self) -> Any:
        """sqlite-utils' view of the connection, for schema work (imported only when needed)."""
        import sqlite_utils

        return sqlite_utils.Database(self.conn)

    # --- opening ---------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, readonly: bool = False, recover: bool = True) -> StateStore:
        """Open (creating when writable and missing); StorageError names the path and the reason."""
        path = Path(path)
        if path.is_dir():
            raise StorageError(f"state database {path} is a folder, not a file")
        if readonly and not path.exists():
            return cls._empty(path)
        if not readonly:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(
                    f"cannot create the folder of state database {path}: {exc.strerror or exc}"
                ) from None
        if path.exists() and not os.access(path, os.R_OK):
            raise StorageError(f"cannot read state database {path}: permission denied")
        if path.exists() and not readonly and not os.access(path, os.W_OK):
            raise StorageError(
                f"cannot write state database {path}: the file or its file system is read-only"
            )
        _check_header(path)
        try:
            if readonly:
                conn = _connect_readonly(path)
            else:
                conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
            existed = not readonly and path.exists() and path.stat().st_size > 0
            if existed:
                _check_pages(conn, path)
            store = cls(path, conn, readonly)
            store._prepare()
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"cannot use state database {path}: {_reason(exc)}") from None
        if recover and not readonly:
            store.recover()
        return store

    @classmethod
    def _empty(cls, path: Path) -> StateStore:
        conn = sqlite3.connect(":memory:", check_same_thread=False)
        store = cls(path, conn, readonly=False)
        store._prepare()
        store.readonly = True
        return store

    def _prepare(self) -> None:
        self.conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        if self.readonly:
            self._check_version(writable=False)
            return
        mode = self.conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() not in ("wal", "memory"):
            raise sqlite3.DatabaseError(f"cannot switch to WAL mode (journal_mode is {mode})")
        # NOTE: NORMAL in WAL mode never corrupts and keeps every commit across a process crash;
        # only a power loss can drop the last commits, which `repair` then closes as interrupted.
        self.conn.execute("PRAGMA synchronous = NORMAL")
        self.conn.execute("PRAGMA foreign_keys = ON")
        self._check_version(writable=True)

    def _check_version(self, writable: bool) -> None:
        version = int(self.conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"state database {self.path} has schema version {version}, newer than this "
                f"ansflow understands ({SCHEMA_VERSION}); upgrade ansflow"
            )
        if version == SCHEMA_VERSION or not writable:
            return
        # NOTE: BEGIN IMMEDIATE takes the write lock first, so two processes creating the same new
        # database cannot both run a migration.
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            version = int(self.conn.execute("PRAGMA user_version").fetchone()[0])
            for index in range(version, SCHEMA_VERSION):
                MIGRATIONS[index](self.db)
            self.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        try:
            self.conn.close()
        except sqlite3.Error:
            pass

    def _write(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        try:
            with self.conn:
                return self.conn.execute(sql, params)
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"cannot write state database {self.path}: {_reason(exc)}") from None

    def _many(self, statements: Iterable[tuple[str, Sequence[Any]]]) -> None:
        try:
            with self.conn:
                for sql, params in statements:
                    self.conn.execute(sql, params)
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"cannot write state database {self.path}: {_reason(exc)}") from None

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        try:
            cursor = self.conn.execute(sql, params)
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"cannot read state database {self.path}: {_reason(exc)}") from None
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    # --- writing a run ---------------------------------------------------------------------------

    def create_run(
        self,
        pipeline: str,
        file: str,
        text: str,
        args: dict[str, Any],
        units: Sequence[UnitRow],
        trigger: str,
    ) -> int:
        """Insert the run and all its units as `pending`, in one transaction."""
        import hashlib

        pid, started, hostname = procinfo.current()
        user = procinfo.os_user()
        stamp = iso(now())
        try:
            with self.conn:
                cursor = self.conn.execute(
                    "INSERT INTO runs (pipeline, file, status, trigger, started_at, pid, pid_start,"
                    " hostname, user, args, pipeline_text, pipeline_sha256)"
                    " VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        pipeline,
                        file,
                        trigger,
                        stamp,
                        pid,
                        started,
                        hostname,
                        user,
                        json.dumps(args, sort_keys=True),
                        text,
                        hashlib.sha256(text.encode()).hexdigest(),
                    ),
                )
                run_id = int(cursor.lastrowid or 0)
                self.conn.executemany(
                    "INSERT INTO steps (run_id, step, host, base_id, name, type, target, position,"
                    " status, attempts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', 0)",
                    [
                        (run_id, u.step, u.host, u.base_id, u.name, u.type, u.target, u.position)
                        for u in units
                    ],
                )
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"cannot write state database {self.path}: {_reason(exc)}") from None
        return run_id

    def adopt_run(self, run_id: int, units: Sequence[UnitRow]) -> None:
        """A resumed run: owned by this process again, `running`, with any new units added."""
        pid, started, hostname = procinfo.current()
        statements: list[tuple[str, Sequence[Any]]] = [
            (
                "UPDATE runs SET status = 'running', finished_at = NULL, duration = NULL,"
                " exit_code = NULL, error = NULL, pid = ?, pid_start = ?, hostname = ?"
                " WHERE id = ?",
                (pid, started, hostname, run_id),
            )
        ]
        for u in units:
            statements.append(
                (
                    "INSERT OR IGNORE INTO steps (run_id, step, host, base_id, name, type, target,"
                    " position, status, attempts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', 0)",
                    (run_id, u.step, u.host, u.base_id, u.name, u.type, u.target, u.position),
                )
            )
        self._many(statements)

    def reset_units(self, run_id: int, keys: Iterable[tuple[str, str]]) -> None:
        """Put units that will run again back to `pending` (their attempts stay counted).

        The start time goes too: a unit that then never starts must not keep the earlier run's
        start (and a duration spanning the pause); earlier attempts keep theirs in `attempts`.
        """
        self._many(
            (
                "UPDATE steps SET status = 'pending', started_at = NULL, finished_at = NULL,"
                " duration = NULL, exit_code = NULL, error = NULL"
                " WHERE run_id = ? AND step = ? AND host = ?",
                (run_id, step, host),
            )
            for step, host in keys
        )

    def record(self, event: Event) -> None:
        """Commit one state change (everything but log lines, which go through add_logs)."""
        ts = iso(event.ts)
        if isinstance(event, StepStarted):
            self._many(
                [
                    (
                        "UPDATE steps SET status = 'running', attempts = ?,"
                        " started_at = COALESCE(started_at, ?), finished_at = NULL, error = NULL"
                        " WHERE run_id = ? AND step = ? AND host = ?",
                        (event.attempt, ts, event.run_id, event.step, event.host),
                    ),
                    (
                        "INSERT OR REPLACE INTO attempts (run_id, step, host, attempt, status,"
                        " started_at) VALUES (?, ?, ?, ?, 'running', ?)",
                        (event.run_id, event.step, event.host, event.attempt, ts),
                    ),
                ]
            )
        elif isinstance(event, StepState):
            statements: list[tuple[str, Sequence[Any]]] = [
                (
                    "UPDATE steps SET status = ?, error = COALESCE(?, error),"
                    " attempts = MAX(attempts, ?), started_at = COALESCE(started_at, ?)"
                    " WHERE run_id = ? AND step = ? AND host = ?",
                    (
                        event.status,
                        event.error,
                        event.attempt,
                        ts,
                        event.run_id,
                        event.step,
                        event.host,
                    ),
                )
            ]
            if event.status == "retrying" and event.attempt:
                statements.append(
                    self._close_attempt(
                        event.run_id,
                        event.step,
                        event.host,
                        event.attempt,
                        event.attempt_status or "failed",
                        ts,
                        event.exit_code,
                        event.error,
                    )
                )
            self._many(statements)
        elif isinstance(event, StepFinished):
            # NOTE: attempt 0 means the unit never started (skipped, cancelled before it ran):
            # no start time and no duration, rather than a made-up 0 s.
            statements = [
                (
                    "UPDATE steps SET status = ?, finished_at = ?, exit_code = ?, error = ?,"
                    " outputs = ?, details = ?, attempts = MAX(attempts, ?),"
                    " started_at = COALESCE(started_at, CASE WHEN ? > 0 THEN ? END),"
                    " duration = (julianday(?) - julianday(COALESCE(started_at,"
                    " CASE WHEN ? > 0 THEN ? END))) * 86400.0"
                    " WHERE run_id = ? AND step = ? AND host = ?",
                    (
                        event.status,
                        ts,
                        event.exit_code,
                        event.error,
                        json.dumps(event.outputs) if event.outputs else None,
                        json.dumps(event.details) if event.details else None,
                        event.attempt,
                        event.attempt,
                        ts,
                        ts,
                        event.attempt,
                        ts,
                        event.run_id,
                        event.step,
                        event.host,
                    ),
                )
            ]
            if event.attempt:
                statements.append(
                    self._close_attempt(
                        event.run_id,
                        event.step,
                        event.host,
                        event.attempt,
                        event.status,
                        ts,
                        event.exit_code,
                        event.error,
                    )
                )
            self._many(statements)
        elif isinstance(event, RunFinished):
            # NOTE: a run left `waiting` has not ended (SPEC section 3): no end time, no duration.
            ended = event.status not in ("running", "waiting")
            self._write(
                "UPDATE runs SET status = ?, exit_code = ?,"
                " finished_at = CASE WHEN ? THEN ? END,"
                " duration = CASE WHEN ? THEN (julianday(?) - julianday(started_at)) * 86400.0 END"
                " WHERE id = ?",
                (event.status, event.exit_code, ended, ts, ended, ts, event.run_id),
            )

    @staticmethod
    def _close_attempt(
        run_id: int,
        step: str,
        host: str,
        attempt: int,
        status: str,
        ts: str | None,
        exit_code: int | None,
        error: str | None,
    ) -> tuple[str, Sequence[Any]]:
        # NOTE: only a running attempt is closed: one already closed by `retrying` keeps its own
        # outcome when the unit is later cancelled while waiting for the next attempt.
        return (
            "UPDATE attempts SET status = ?, finished_at = ?, exit_code = ?, error = ?,"
            " duration = (julianday(?) - julianday(started_at)) * 86400.0"
            " WHERE run_id = ? AND step = ? AND host = ? AND attempt = ? AND status = 'running'",
            (status, ts, exit_code, error, ts, run_id, step, host, attempt),
        )

    def add_logs(self, lines: Sequence[StepOutput]) -> None:
        """Append a batch of output lines in one short transaction."""
        if not lines:
            return
        try:
            with self.conn:
                self.conn.executemany(
                    "INSERT INTO logs (run_id, step, host, attempt, ts, stream, line)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [
                        (e.run_id, e.step, e.host, e.attempt, iso(e.ts), e.stream, e.text)
                        for e in lines
                    ],
                )
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"cannot write state database {self.path}: {_reason(exc)}") from None

    def close_unfinished(self, run_id: int, status: str, error: str | None = None) -> int:
        """Give every unit not yet ended the end state `status`; returns how many changed."""
        stamp = iso(now())
        marks = ",".join("?" for _ in UNFINISHED)
        cursor = self._write(
            f"UPDATE steps SET status = ?, finished_at = ?, error = COALESCE(error, ?),"
            " duration = CASE WHEN started_at IS NULL THEN NULL"
            " ELSE (julianday(?) - julianday(started_at)) * 86400.0 END"
            f" WHERE run_id = ? AND status IN ({marks})",
            (status, stamp, error, stamp, run_id, *UNFINISHED),
        )
        return cursor.rowcount

    def set_run_status(
        self, run_id: int, status: str, exit_code: int | None, error: str | None = None
    ) -> None:
        stamp = iso(now())
        ended = status not in ("running", "waiting")
        self._write(
            "UPDATE runs SET status = ?, exit_code = ?, error = COALESCE(?, error),"
            " finished_at = CASE WHEN ? THEN ? ELSE NULL END,"
            " duration = CASE WHEN ? THEN (julianday(?) - julianday(started_at)) * 86400.0 END"
            " WHERE id = ?",
            (status, exit_code, error, ended, stamp, ended, stamp, run_id),
        )

    # --- approvals -------------------------------------------------------------------------------

    def decide(self, run_id: int, step: str, decision: str, user: str, comment: str | None) -> None:
        self._write(
            "INSERT INTO approvals (run_id, step, decision, user, comment, decided_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (run_id, step, decision, user, comment, iso(now())),
        )

    def decision(self, run_id: int, step: str) -> dict[str, Any] | None:
        rows = self._query(
            "SELECT * FROM approvals WHERE run_id = ? AND step = ? ORDER BY id DESC LIMIT 1",
            (run_id, step),
        )
        return rows[0] if rows else None

    # --- crash recovery --------------------------------------------------------------------------

    def recover(self, only_run: int | None = None) -> list[dict[str, Any]]:
        """Close `running` runs of this machine whose process is gone, and stop the step processes
        that process left running; returns what was closed."""
        import socket

        hostname = socket.gethostname()
        sql = "SELECT id, pipeline, pid, pid_start, hostname FROM runs WHERE status = 'running'"
        params: list[Any] = []
        if only_run is not None:
            sql += " AND id = ?"
            params.append(only_run)
        closed: list[dict[str, Any]] = []
        for row in self._query(sql, params):
            if row["hostname"] != hostname or procinfo.is_alive(row["pid"], row["pid_start"]):
                continue
            message = f"the ansflow process (pid {row['pid']}) ended without closing the run"
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                still = self.conn.execute(
                    "SELECT status FROM runs WHERE id = ?", (row["id"],)
                ).fetchone()
                if still is None or still[0] != "running":
                    self.conn.execute("COMMIT")
                    continue
                stamp = iso(now())
                marks = ",".join("?" for _ in UNFINISHED)
                steps = self.conn.execute(
                    f"UPDATE steps SET status = 'interrupted', finished_at = ?,"
                    " error = COALESCE(error, ?),"
                    " duration = CASE WHEN started_at IS NULL THEN NULL"
                    " ELSE (julianday(?) - julianday(started_at)) * 86400.0 END"
                    f" WHERE run_id = ? AND status IN ({marks})",
                    (stamp, message, stamp, row["id"], *UNFINISHED),
                ).rowcount
                self.conn.execute(
                    "UPDATE attempts SET status = 'interrupted', finished_at = ?"
                    " WHERE run_id = ? AND status = 'running'",
                    (stamp, row["id"]),
                )
                self.conn.execute(
                    "UPDATE runs SET status = 'interrupted', finished_at = ?, exit_code = 3,"
                    " error = ?, duration = (julianday(?) - julianday(started_at)) * 86400.0"
                    " WHERE id = ?",
                    (stamp, message, stamp, row["id"]),
                )
                self.conn.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                try:
                    self.conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                raise StorageError(
                    f"cannot write state database {self.path}: {_reason(exc)}"
                ) from None
            # NOTE: after the commit: the run is closed even if stopping its leftovers fails.
            stopped = procinfo.stop_orphans(procinfo.owner_token(row["pid"], row["pid_start"]))
            closed.append(
                {
                    "id": row["id"],
                    "pipeline": row["pipeline"],
                    "pid": row["pid"],
                    "steps": steps,
                    "stopped": stopped,
                }
            )
        return closed

    # --- reading ---------------------------------------------------------------------------------

    def runs(
        self, pipeline: str | None = None, status: str | None = None, limit: int = 20
    ) -> list[dict[str, Any]]:
        sql = "SELECT * FROM runs"
        where: list[str] = []
        params: list[Any] = []
        if pipeline:
            where.append("pipeline = ?")
            params.append(pipeline)
        if status:
            where.append("status = ?")
            params.append(status)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        return [_run_row(r) for r in self._query(sql, params)]

    def run(self, ref: str | int) -> dict[str, Any]:
        """A run by id or `last`; UsageError (exit 2) when there is no such run."""
        text = str(ref).strip()
        if text == "last":
            rows = self._query("SELECT * FROM runs ORDER BY id DESC LIMIT 1")
            if not rows:
                raise UsageError(f"no runs recorded in {self.path}")
            return _run_row(rows[0])
        if not text.isascii() or not text.isdigit() or len(text) > 18:
            raise UsageError(f"run {text!r}: expected a run id (a number) or `last`")
        rows = self._query("SELECT * FROM runs WHERE id = ?", (int(text),))
        if not rows:
            raise UsageError(f"no run {text} in {self.path}")
        return _run_row(rows[0])

    def raw_run(self, run_id: int) -> dict[str, Any]:
        rows = self._query("SELECT * FROM runs WHERE id = ?", (run_id,))
        if not rows:
            raise UsageError(f"no run {run_id} in {self.path}")
        return rows[0]

    def steps(self, run_id: int) -> list[dict[str, Any]]:
        rows = self._query(
            "SELECT * FROM steps WHERE run_id = ? ORDER BY position, host", (run_id,)
        )
        for row in rows:
            row["outputs"] = json.loads(row["outputs"]) if row["outputs"] else {}
            row["details"] = json.loads(row["details"]) if row["details"] else {}
        return rows

    def attempts(self, run_id: int) -> list[dict[str, Any]]:
        return self._query(
            "SELECT * FROM attempts WHERE run_id = ? ORDER BY step, host, attempt", (run_id,)
        )

    def logs(
        self,
        run_id: int,
        step: str | None = None,
        host: str | None = None,
        after: int = 0,
        batch: int = 1000,
    ) -> Iterator[dict[str, Any]]:
        """Log lines in order, read in pages so a long log is never held whole in memory."""
        last = after
        while True:
            sql = (
                "SELECT id, step, host, attempt, ts, stream, line FROM logs"
                " WHERE run_id = ? AND id > ?"
            )
            params: list[Any] = [run_id, last]
            if step is not None:
                sql += " AND (step = ? OR step LIKE ? ESCAPE '\\')"
                escaped = step.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                params.extend([step, escaped + "[%"])
            if host is not None:
                sql += " AND host = ?"
                params.append(host)
            sql += " ORDER BY id LIMIT ?"
            params.append(batch)
            rows = self._query(sql, params)
            yield from rows
            if len(rows) < batch:
                return
            last = rows[-1]["id"]

    def step_history(self, pipeline: str | None, limit_runs: int = 200) -> list[dict[str, Any]]:
        """Finished units of recent runs, for `ansflow stats`."""
        sql = (
            "SELECT r.id AS run_id, r.pipeline, s.base_id, s.step, s.host, s.status, s.duration,"
            " s.started_at FROM steps s JOIN runs r ON r.id = s.run_id"
            " WHERE r.id IN (SELECT id FROM runs"
        )
        params: list[Any] = []
        if pipeline:
            sql += " WHERE pipeline = ?"
            params.append(pipeline)
        sql += " ORDER BY id DESC LIMIT ?) ORDER BY r.id"
        params.append(limit_runs)
        return self._query(sql, params)


def _run_row(row: dict[str, Any]) -> dict[str, Any]:
    """The public shape of a run (SPEC section 5: id, pipeline, status, times, duration)."""
    return {
        "id": row["id"],
        "pipeline": row["pipeline"],
        "file": row["file"],
        "status": row["status"],
        "trigger": row["trigger"],
        "started_at": row["started_at"],
        "finished_at": row["finished_at"],
        "duration": row["duration"],
        "exit_code": row["exit_code"],
        "user": row["user"],
        "hostname": row["hostname"],
        "error": row["error"],
    }


def elapsed(started_at: str | None, finished_at: str | None) -> float | None:
    start = parse_iso(started_at)
    if start is None:
        return None
    end = parse_iso(finished_at) or now()
    return max(0.0, (end - start).total_seconds())


def _connect_readonly(path: Path) -> sqlite3.Connection:
    uri = f"file:{path.resolve()}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.OperationalError:
        # NOTE: a WAL database on a read-only medium cannot create its -shm file; `immutable`
        # reads it without locking, which is right for a file nobody can be writing.
        uri = f"file:{path.resolve()}?mode=ro&immutable=1"
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn


SQLITE_HEADER = b"SQLite format 3\x00"


def _check_header(path: Path) -> None:
    """Refuse a file that is not SQLite before sqlite3 touches it (it must never be rewritten)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StorageError(f"cannot read state database {path}: {exc.strerror or exc}") from None
    if head and head != SQLITE_HEADER:
        raise StorageError(
            f"state database {path} is not an SQLite database (corrupt or another file); "
            "it was left untouched: move it away or pass --db"
        )


def _check_pages(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse a database with a damaged page before anything is written to it.

    A valid header says nothing about the pages behind it; writing into a damaged b-tree can
    spread the damage, so such a file is only ever read. quick_check skips the index-content
    cross-checks of integrity_check: it reads each page once, milliseconds for a typical store.
    """
    problems = [row[0] for row in conn.execute("PRAGMA quick_check(3)").fetchall()]
    if problems != ["ok"]:
        conn.close()
        raise StorageError(
            f"state database {path} is corrupt ({'; '.join(problems)}); it was left untouched: "
            "move it away or pass --db (read-only commands such as `runs` may still read it)"
        )


def _reason(exc: sqlite3.Error) -> str:
    text = str(exc)
    if "malformed" in text or "not a database" in text:
        return f"{text} (the file is corrupt: move it away or pass --db)"
    if "readonly" in text or "read-only" in text:
        return f"{text} (no permission to write)"
    if "unable to open" in text:
        return f"{text} (check that the folder exists and is writable)"
    return text
