"""Putting a run together: pipeline, secrets, places, store, lock, executor, renderer.

`start_run` and `resume_run` are what `ansflow run` and `ansflow resume` call. Everything that can
be wrong with the input is found here before the run is created, so bad input never leaves a run
behind (exit 2, nothing run, nothing stored).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ansflow import procinfo, templates
from ansflow.errors import LoadError, UsageError
from ansflow.events import Event, StepOutput
from ansflow.executor import Approver, Executor, Outcome, Setup
from ansflow.loader import LoadedPipeline, load_file, load_text
from ansflow.locks import PipelineLock, default_lock_dir
from ansflow.options import RunOptions
from ansflow.planner import Plan
from ansflow.secrets import Masker, read_secrets
from ansflow.state import StateStore, UnitRow, resolve_db_path
from ansflow.targets import Places

RESUMABLE = ("interrupted", "failed", "cancelled", "waiting")


class Dispatcher:
    """Masks secrets, commits to the store, then shows: the one-way flow of events.

    Showing cannot stop a run: when the output goes away (`ansflow run | head`, a closed
    terminal), the run goes on unseen to its end and its real exit status, and is stored as usual.
    """

    def __init__(self, store: StateStore, renderer: Any, masker: Masker) -> None:
        self.store = store
        #: None once the output is gone.
        self.renderer: Any | None = renderer
        self.masker = masker

    def _mask(self, event: Event) -> Event:
        return event.masked(self.masker) if self.masker else event

    def emit(self, event: Event) -> None:
        event = self._mask(event)
        self.store.record(event)
        self._show(event)

    def emit_logs(self, events: list[StepOutput]) -> None:
        masked = [self._mask(e) for e in events]
        self.store.add_logs(masked)  # type: ignore[arg-type]
        for event in masked:
            self._show(event)

    def _show(self, event: Event) -> None:
        if self.renderer is None:
            return
        try:
            self.renderer.handle(event)
        except OSError as exc:
            self.renderer = None
            self._output_lost(exc, event.run_id)

    @staticmethod
    def _output_lost(exc: OSError, run_id: int) -> None:
        """Send what is still written to stdout (the renderer's close, Python's flush at exit) to
        /dev/null instead of failing again, and say once on stderr that the run goes on."""
        streams = [sys.stdout]
        try:
            if os.path.sameopenfile(sys.stdout.fileno(), sys.stderr.fileno()):
                streams.append(sys.stderr)
        except (OSError, ValueError, AttributeError):
            pass
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            for stream in streams:
                try:
                    os.dup2(devnull, stream.fileno())
                except (OSError, ValueError, AttributeError):
                    pass
        finally:
            os.close(devnull)
        try:
            sys.stderr.write(
                f"ansflow: output lost ({exc.strerror or exc}); run {run_id} goes on, "
                f"see `ansflow show {run_id}`\n"
            )
            sys.stderr.flush()
        except (OSError, ValueError):
            pass


@dataclass
class Prepared:
    """A checked pipeline, ready to run: nothing here has touched the database yet."""

    loaded: LoadedPipeline
    plan: Plan
    options: RunOptions
    variables: dict[str, Any]
    secrets: dict[str, str]
    masker: Masker
    places: Places
    pipeline_env: dict[str, str]
    units: list[UnitRow]


def current_user() -> str:
    return procinfo.os_user()


def trigger() -> str:
    """How the run was started, for `ansflow runs`: terminal, ci, or script (cron and the like)."""
    if os.environ.get("CI"):
        return "ci"
    if sys.stdin.isatty() and sys.stdout.isatty():
        return "terminal"
    return "script"


def prepare(loaded: LoadedPipeline, options: RunOptions) -> Prepared:
    """Everything that can be checked before running: names, vars, secrets, env, hosts."""
    plan = loaded.plan()
    for name in options.only:
        if not plan.resolve(name):
            raise UsageError(f"--only {name}: no step {name!r} in {loaded.path}{_hint(name, plan)}")
    if options.from_step and not plan.resolve(options.from_step):
        raise UsageError(
            f"--from {options.from_step}: no step {options.from_step!r} in {loaded.path}"
            + _hint(options.from_step, plan)
        )
    if options.junit:
        check_report_path(Path(options.junit))
    pipeline = loaded.pipeline
    for target in [options.remote] if options.remote else []:
        if target not in pipeline.targets or pipeline.targets[target].type != "jenkins":
            raise UsageError(f"--remote {target}: not a jenkins target of {loaded.path}")
    variables: dict[str, Any] = {**pipeline.vars, **options.vars}
    secrets_file = Path(options.secrets_file) if options.secrets_file else None
    secrets = read_secrets(pipeline.secrets, secrets_file)
    masker = Masker(secrets.values())
    context = {
        "vars": variables,
        "secrets": secrets,
        "env": dict(os.environ),
        "pipeline": {"name": loaded.name, "file": str(loaded.path)},
        "run": {"id": 0, "status": "running"},
    }
    pipeline_env: dict[str, str] = {}
    for key, value in pipeline.env.items():
        try:
            pipeline_env[key] = templates.render_text(value, context)
        except templates.TemplateError as exc:
            raise UsageError(masker(f"{loaded.path}: env.{key}: {exc.message}")) from None
    places = Places(
        pipeline,
        loaded.path.parent.resolve(),
        secrets,
        {**context, "env": {**os.environ, **pipeline_env}},
    )
    units: list[UnitRow] = []
    for node in plan.nodes:
        for host in places.hosts(node):
            units.append(
                UnitRow(
                    step=node.id,
                    host="" if host is None else str(host.name),
                    base_id=node.base_id,
                    name=node.name,
                    type=node.kind,
                    target=node.target,
                    position=node.position,
                )
            )
    prepared = Prepared(
        loaded, plan, options, variables, secrets, masker, places, pipeline_env, units
    )
    if options.remote:
        from ansflow.remote_mode import preflight

        preflight(prepared)
    return prepared


def check_report_path(path: Path) -> None:
    """`--junit FILE` must be writable before anything runs: the report is written at the end,
    and finding out then would turn the run's own exit status into 2 after all its work.

    Nothing is created here; missing folders are made when the report is written, so what is
    checked is the nearest folder that exists.
    """
    if path.is_dir():
        raise UsageError(f"--junit {path}: is a folder, not a file")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise UsageError(f"--junit {path}: cannot write it (permission denied)")
        return
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise UsageError(f"--junit {path}: cannot create it ({folder} is not a folder)")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"--junit {path}: cannot create it (no permission to write in {folder})")


def _hint(name: str, plan: Plan) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(plan.instances), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def open_store(db: Path | None, readonly: bool = False) -> StateStore:
    return StateStore.open(resolve_db_path(db), readonly=readonly)


def start_run(
    file: Path,
    options: RunOptions,
    *,
    db: Path | None,
    renderer_factory: Callable[[], Any],
    approver_factory: Callable[[Any], Approver | None] | None = None,
    wait_lock: bool = False,
) -> Outcome:
    """`ansflow run`: check everything, take the lock, record the run, run it."""
    loaded = load_file(file)
    prepared = prepare(loaded, options)
    store = open_store(db)
    lock = PipelineLock(default_lock_dir(), loaded.path)
    try:
        lock.acquire(wait=wait_lock)
        run_id = store.create_run(
            pipeline=loaded.name,
            file=str(loaded.path.resolve()),
            text=prepared.masker(loaded.text),
            args=_masked_args(options, prepared.masker),
            units=prepared.units,
            trigger=trigger(),
        )
        lock.note_holder(run_id)
        renderer = renderer_factory()
        return _execute(prepared, store, renderer, run_id, approver_factory, resumed=False)
    finally:
        lock.release()
        store.close()


def _masked_args(options: RunOptions, masker: Masker) -> dict[str, Any]:
    data = options.to_json()
    return json.loads(masker(json.dumps(data))) if masker else data


def _execute(
    prepared: Prepared,
    store: StateStore,
    renderer: Any,
    run_id: int,
    approver_factory: Callable[[Any], Approver | None] | None,
    resumed: bool,
    kept: dict[tuple[str, str], dict[str, Any]] | None = None,
    attempts: dict[tuple[str, str], int] | None = None,
) -> Outcome:
    setup = Setup(
        run_id=run_id,
        options=prepared.options,
        variables=prepared.variables,
        secrets=prepared.secrets,
        pipeline_dir=prepared.loaded.path.parent.resolve(),
        places=prepared.places,
        sink=Dispatcher(store, renderer, prepared.masker),
        decisions=store,
        approver=approver_factory(renderer) if approver_factory else None,
        kept=kept or {},
        previous_attempts=attempts or {},
        resumed=resumed,
        user=current_user(),
        pipeline_env=prepared.pipeline_env,
    )
    if prepared.options.remote:
        from ansflow.remote_mode import run_remote

        runner: Any = run_remote
        outcome: Outcome = runner(prepared, setup)
    else:
        executor = Executor(prepared.plan, setup)
        try:
            outcome = executor.run()
        finally:
            renderer.close()
    if prepared.options.junit:
        from ansflow.report import write_junit

        write_junit(Path(prepared.options.junit), store, run_id, prepared.loaded.name)
    return outcome


def resume_run(
    ref: str,
    *,
    db: Path | None,
    renderer_factory: Callable[[], Any],
    approver_factory: Callable[[Any], Approver | None] | None = None,
    wait_lock: bool = False,
    notes: Callable[[str], None] = lambda _text: None,
) -> Outcome:
    """`ansflow resume`: run again what did not succeed, from the stored pipeline and arguments."""
    store = open_store(db)
    try:
        run = store.run(ref)
        run_id = int(run["id"])
        if run["status"] == "running":
            raise UsageError(f"run {run_id} is still running; cancel it first or wait for it")
        if run["status"] not in RESUMABLE:
            raise UsageError(
                f"run {run_id} is {run['status']}; only {', '.join(RESUMABLE)} runs resume"
            )
        raw = store.raw_run(run_id)
        file = Path(raw["file"])
        text = raw["pipeline_text"] or ""
        try:
            on_disk = file.read_bytes()
            if hashlib.sha256(on_disk).hexdigest() != raw["pipeline_sha256"]:
                notes(
                    f"note: {file} has changed since run {run_id} started; "
                    "resuming with the pipeline as it was then"
                )
        except OSError:
            notes(
                f"note: {file} is gone; "
                f"resuming with the pipeline as it was when run {run_id} started"
            )
        try:
            loaded = load_text(text, file)
        except LoadError as exc:
            raise UsageError(
                f"the stored pipeline of run {run_id} no longer loads:\n{exc}"
            ) from None
        options = RunOptions.from_json(json.loads(raw["args"] or "{}"))
        prepared = prepare(loaded, options)
        previous = store.steps(run_id)
        kept: dict[tuple[str, str], dict[str, Any]] = {}
        attempts: dict[tuple[str, str], int] = {}
        rerun: list[tuple[str, str]] = []
        for row in previous:
            key = (row["step"], row["host"])
            attempts[key] = int(row["attempts"] or 0)
            if row["status"] == "success":
                kept[key] = row
            else:
                rerun.append(key)
        lock = PipelineLock(default_lock_dir(), loaded.path)
        try:
            lock.acquire(wait=wait_lock)
            store.adopt_run(run_id, prepared.units)
            store.reset_units(run_id, rerun)
            lock.note_holder(run_id)
            renderer = renderer_factory()
            return _execute(
                prepared, store, renderer, run_id, approver_factory, True, kept, attempts
            )
        finally:
            lock.release()
    finally:
        store.close()
