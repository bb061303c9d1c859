"""The `ansflow` command: typer commands that turn flags into calls to the core, and nothing else.

Every error the core raises is an AnsflowError with an exit code; `main` is the one place that turns
them (and click's usage errors) into a message and an exit status. Heavy modules are imported inside
the commands so that `ansflow --help` stays fast.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ansflow import __version__
from ansflow.errors import EXIT_BAD_INPUT, EXIT_CANCELLED, AnsflowError, UsageError

app = typer.Typer(
    name="ansflow",
    help="Run YAML pipelines of steps locally, on SSH hosts or as Jenkins builds; "
    "every state change is kept in SQLite.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
targets_app = typer.Typer(help="Check the pipeline's targets.", no_args_is_help=True)
app.add_typer(targets_app, name="targets")

DEFAULT_FILE = Path("ansflow.yml")
FileArg = Annotated[
    Path, typer.Argument(help="Pipeline file (default: ansflow.yml in the current folder).")
]
DbOption = Annotated[
    Path | None,
    typer.Option("--db", envvar="ANSFLOW_DB", help="State database (default: .ansflow/state.db)."),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _echo(text: str, err: bool = False) -> None:
    typer.echo(text, nl=False, err=err) if text.endswith("\n") else typer.echo(text, err=err)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ansflow {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Run YAML pipelines of steps locally, on SSH hosts or as Jenkins builds."""


# --- pipeline files ------------------------------------------------------------------------------


@app.command()
def validate(file: FileArg = DEFAULT_FILE) -> None:
    """Check YAML, schema, graph and templates; print every error with file:line:col."""
    from ansflow.loader import load_file

    loaded = load_file(file)
    loaded.check_hosts()
    instances = len(loaded.plan().nodes)
    _echo(f"{file}: ok ({loaded.name}: {len(loaded.graph.steps)} steps, {instances} instances)")


@app.command()
def plan(
    file: FileArg = DEFAULT_FILE,
    format: Annotated[
        str, typer.Option("--format", "-f", help="tree, mermaid, dot or json.")
    ] = "tree",
) -> None:
    """Print the dependency graph of a pipeline."""
    from ansflow.loader import load_file
    from ansflow.render.plan import FORMATS

    formatter = FORMATS.get(format)
    if formatter is None:
        raise UsageError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    _echo(formatter(load_file(file).plan()))


@app.command()
def schema() -> None:
    """Print the JSON Schema of the pipeline file (for editors' YAML completion)."""
    from ansflow.schema import schema_json

    _echo(schema_json())


@app.command()
def init(
    path: Annotated[Path, typer.Argument(help="Where to write the starter.")] = DEFAULT_FILE,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented starter ansflow.yml."""
    from ansflow.starter import write_starter

    write_starter(path, force=force)
    _echo(f"wrote {path}; try `ansflow validate {path}` then `ansflow run {path}`")


# --- running -------------------------------------------------------------------------------------

OutputOption = Annotated[
    str,
    typer.Option(
        "--output", "-o", help="auto (tty on a terminal, else plain), tty, plain or json."
    ),
]
QuietFlag = Annotated[
    bool, typer.Option("--quiet", "-q", help="Only failures and the final summary line.")
]
WaitLockFlag = Annotated[
    bool, typer.Option("--wait-lock", help="Wait for another run of this pipeline to end.")
]


def _approver_factory(output: str) -> Any:
    """Ask at the terminal only with the live view on an interactive stdin (SPEC section 4)."""
    from ansflow.render import resolve_output

    if resolve_output(output) != "tty" or not sys.stdin.isatty():
        return None
    return lambda renderer: renderer if hasattr(renderer, "ask") else None


def _renderer_factory(output: str, quiet: bool) -> Any:
    from ansflow.render import make_renderer, resolve_output

    resolve_output(output)  # NOTE: reject a bad name before anything runs
    return lambda: make_renderer(output, quiet)


@app.command()
def run(
    file: FileArg = DEFAULT_FILE,
    var: Annotated[
        list[str] | None, typer.Option("--var", help="Set a variable: key=value (repeatable).")
    ] = None,
    only: Annotated[
        list[str] | None, typer.Option("--only", help="Run only this step (repeatable).")
    ] = None,
    from_step: Annotated[
        str | None, typer.Option("--from", help="Start at this step; earlier entries are skipped.")
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", min=1, help="Most steps running at once.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan with rendered commands; run nothing.")
    ] = False,
    output: OutputOption = "auto",
    quiet: QuietFlag = False,
    fail_fast: Annotated[
        bool, typer.Option("--fail-fast", help="Cancel everything after the first failure.")
    ] = False,
    approve: Annotated[
        list[str] | None,
        typer.Option("--approve", help="Approve this gate without asking (a step id or `all`)."),
    ] = None,
    secrets_file: Annotated[
        Path | None, typer.Option("--secrets-file", help="A dotenv file with secret values.")
    ] = None,
    junit: Annotated[
        Path | None, typer.Option("--junit", help="Write a JUnit XML report of the steps.")
    ] = None,
    wait_lock: WaitLockFlag = False,
    remote: Annotated[
        str | None,
        typer.Option("--remote", help="Run the whole pipeline as one Jenkins Pipeline job."),
    ] = None,
    db: DbOption = None,
) -> int:
    """Run a pipeline."""
    from ansflow.options import RunOptions, parse_vars

    options = RunOptions(
        vars=parse_vars(var or []),
        only=tuple(_split(only)),
        from_step=from_step,
        concurrency=concurrency,
        fail_fast=fail_fast,
        approve=tuple(_split(approve)),
        secrets_file=str(secrets_file.resolve()) if secrets_file else None,
        junit=str(junit.resolve()) if junit else None,
        remote=remote,
    )
    if dry_run:
        from ansflow.dryrun import dry_run_text
        from ansflow.loader import load_file
        from ansflow.session import prepare

        _echo(dry_run_text(prepare(load_file(file), options)))
        return 0
    from ansflow.session import start_run

    outcome = start_run(
        file,
        options,
        db=db,
        renderer_factory=_renderer_factory(output, quiet),
        approver_factory=_approver_factory(output),
        wait_lock=wait_lock,
    )
    return outcome.exit_code


def _split(values: list[str] | None) -> list[str]:
    """`--only a,b --only c` -> [a, b, c]."""
    result: list[str] = []
    for value in values or []:
        result.extend(part.strip() for part in value.split(",") if part.strip())
    return result


@app.command()
def resume(
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="Run id or `last`.")],
    output: OutputOption = "auto",
    quiet: QuietFlag = False,
    wait_lock: WaitLockFlag = False,
    db: DbOption = None,
) -> int:
    """Continue an interrupted, failed, cancelled or waiting run: what succeeded is kept."""
    from ansflow.session import resume_run

    outcome = resume_run(
        run_ref,
        db=db,
        renderer_factory=_renderer_factory(output, quiet),
        approver_factory=_approver_factory(output),
        wait_lock=wait_lock,
        notes=lambda text: typer.echo(text, err=True),
    )
    return outcome.exit_code


# --- reading the state ---------------------------------------------------------------------------


def _reader(db: Path | None) -> Any:
    from ansflow.control import open_for_reading

    return open_for_reading(db)


@app.command()
def runs(
    pipeline: Annotated[str | None, typer.Option("--pipeline", help="Only this pipeline.")] = None,
    status: Annotated[str | None, typer.Option("--status", help="Only runs in this state.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="How many runs.")] = 20,
    json_out: JsonFlag = False,
    db: DbOption = None,
) -> None:
    """List recent runs: id, pipeline, status, start, duration, trigger."""
    from ansflow.control import check_run_status

    check_run_status(status)
    store = _reader(db)
    try:
        rows = store.runs(pipeline=pipeline, status=status, limit=limit)
    finally:
        store.close()
    if json_out:
        from ansflow.control import runs_json

        _echo(runs_json(rows))
    else:
        from ansflow.render.tables import runs_table

        _echo(runs_table(rows))


@app.command()
def show(
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="Run id or `last`.")],
    json_out: JsonFlag = False,
    db: DbOption = None,
) -> None:
    """One run: every step instance and host with status, attempts, times, exit code, error."""
    store = _reader(db)
    try:
        record = store.run(run_ref)
        steps = store.steps(record["id"])
    finally:
        store.close()
    if json_out:
        from ansflow.control import show_json

        _echo(show_json(record, steps))
    else:
        from ansflow.render.tables import show_text

        _echo(show_text(record, steps))


@app.command()
def logs(
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="Run id or `last`.")],
    step: Annotated[str | None, typer.Argument(help="Only this step.")] = None,
    host: Annotated[str | None, typer.Option("--host", help="Only this host.")] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing until the run ends.")
    ] = False,
    db: DbOption = None,
) -> None:
    """Print a run's stored output."""
    from ansflow.control import print_logs

    print_logs(_reader(db), run_ref, step, host, follow, lambda text: typer.echo(text))


# --- steering runs --------------------------------------------------------------------------------


@app.command()
def cancel(
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="Run id or `last`.")],
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait until the run has stopped.")
    ] = True,
    db: DbOption = None,
) -> None:
    """Stop a running run: its local and remote processes and its Jenkins builds."""
    from ansflow.control import cancel as cancel_run
    from ansflow.control import wait_for_end
    from ansflow.state import StateStore, resolve_db_path

    message = cancel_run(db, run_ref)
    typer.echo(message)
    if wait and "asked process" in message:
        store = StateStore.open(resolve_db_path(db), readonly=True)
        try:
            run_id = int(store.run(run_ref)["id"])
        finally:
            store.close()
        status = wait_for_end(db, run_id, timeout=60)
        typer.echo(f"run {run_id} is {status}")


CommentOption = Annotated[
    str | None, typer.Option("--comment", "-m", help="Why; stored with the decision.")
]


@app.command()
def approve(
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="Run id or `last`.")],
    step: Annotated[str, typer.Argument(help="The approval gate.")],
    comment: CommentOption = None,
    db: DbOption = None,
) -> None:
    """Approve a waiting gate (then `ansflow resume RUN` if the run is waiting)."""
    from ansflow.control import decide
    from ansflow.session import current_user

    typer.echo(decide(db, run_ref, step, "approved", comment, current_user()))


@app.command()
def reject(
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="Run id or `last`.")],
    step: Annotated[str, typer.Argument(help="The approval gate.")],
    comment: CommentOption = None,
    db: DbOption = None,
) -> None:
    """Reject a waiting gate: it fails, what depends on it is skipped, the run fails."""
    from ansflow.control import decide
    from ansflow.session import current_user

    typer.echo(decide(db, run_ref, step, "rejected", comment, current_user()))


@app.command()
def repair(db: DbOption = None) -> None:
    """Close runs whose ansflow process died: run and unfinished steps become interrupted."""
    from ansflow.control import repair as repair_runs

    closed = repair_runs(db)
    if not closed:
        typer.echo("nothing to repair: every running run has a live process")
    for item in closed:
        stopped = item.get("stopped") or 0
        leftovers = f"; stopped {stopped} step process group(s) it left running" if stopped else ""
        typer.echo(
            f"run {item['id']} ({item['pipeline']}): process {item['pid']} is gone; "
            f"closed as interrupted ({item['steps']} unfinished steps){leftovers}"
        )


@app.command()
def stats(
    pipeline: Annotated[str | None, typer.Argument(help="Only this pipeline.")] = None,
    runs_back: Annotated[
        int, typer.Option("--runs", min=1, help="How many recent runs to look at.")
    ] = 200,
    json_out: JsonFlag = False,
    db: DbOption = None,
) -> None:
    """Per step: runs, success rate, median and p95 duration, recent trend."""
    from ansflow.stats import stats_text, step_stats

    store = _reader(db)
    try:
        entries = step_stats(store.step_history(pipeline, runs_back))
    finally:
        store.close()
    if json_out:
        import json

        _echo(json.dumps(entries, indent=2) + "\n")
    else:
        _echo(stats_text(entries))


# --- other systems --------------------------------------------------------------------------------


@app.command()
def export(
    file: FileArg = DEFAULT_FILE,
    format: Annotated[
        str, typer.Option("--format", "-f", help="jenkinsfile, gitlab-ci or github-actions.")
    ] = "jenkinsfile",
    out: Annotated[
        Path | None, typer.Option("-o", "--out", help="Write to this file instead of stdout.")
    ] = None,
) -> None:
    """Translate the pipeline into a Jenkinsfile, .gitlab-ci.yml or a GitHub Actions workflow."""
    from ansflow.export import export as render_export
    from ansflow.loader import load_file

    text = render_export(load_file(file), format)
    if out is None:
        _echo(text)
        return
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {out}: {exc.strerror or exc}") from None
    typer.echo(f"wrote {out}", err=True)


@targets_app.command("check")
def targets_check(
    file: FileArg = DEFAULT_FILE,
    json_out: JsonFlag = False,
    secrets_file: Annotated[
        Path | None, typer.Option("--secrets-file", help="A dotenv file with secret values.")
    ] = None,
) -> int:
    """Reach every target: SSH login and host key per host, Jenkins version and credentials."""
    from ansflow.targetcheck import check_targets, checks_json, checks_text

    results = check_targets(file, secrets_file)
    _echo(checks_json(results) if json_out else checks_text(results))
    return 1 if any(not r.ok for r in results) else 0


def main() -> None:
    """Entry point: run the app and map every error to one message and an exit code."""
    # NOTE: typer vendors click in recent releases; find its exception base through a public name.
    click_error: type[Exception] = next(
        c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"
    )
    try:
        result = app(standalone_mode=False, prog_name="ansflow")
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(EXIT_CANCELLED)
    except click_error as exc:
        exc.show()  # type: ignore[attr-defined]
        code = getattr(exc, "exit_code", EXIT_BAD_INPUT)
        sys.exit(EXIT_BAD_INPUT if code == 2 else code)
    except AnsflowError as exc:
        typer.echo(_error_text(exc), err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(EXIT_CANCELLED)
    except BrokenPipeError:
        # NOTE: `ansflow runs | head` closes the pipe early; that is not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except Exception as exc:
        if os.environ.get("ANSFLOW_DEBUG"):
            raise
        typer.echo(
            f"ansflow: internal error: {type(exc).__name__}: {exc}\n"
            "Set ANSFLOW_DEBUG=1 to see the traceback, and please report it.",
            err=True,
        )
        sys.exit(70)
    if result == 130:
        # NOTE: typer turns Ctrl-C inside a command into exit status 130 before we can see the
        # KeyboardInterrupt; SPEC section 2 says an interrupted command exits 3.
        typer.echo("interrupted", err=True)
        sys.exit(EXIT_CANCELLED)
    _exit(result if isinstance(result, int) else 0)


def _exit(code: int) -> None:
    """Flush and leave without the interpreter's teardown, which costs ~0.1 s for nothing.

    Everything that must outlive us is already committed and closed by then; tests and other
    callers that import `main` get a normal SystemExit instead (ANSFLOW_NO_FAST_EXIT=1).
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    if os.environ.get("ANSFLOW_NO_FAST_EXIT"):
        sys.exit(code)
    os._exit(code)


def _error_text(exc: AnsflowError) -> str:
    text = str(exc)
    from ansflow.errors import LoadError

    if isinstance(exc, LoadError):
        count = len(exc.diagnostics)
        if count > 1:
            text += f"\n{count} errors"
        return text
    return f"ansflow: {text}"
