"""Local benchmark: ansflow's own overhead on the local target, against bash, go-task and xargs.

    python bench/local.py               # full run: 3 interleaved rounds, medians
    python bench/local.py --repeat 7    # more rounds
    python bench/local.py --quick       # smoke run: smaller sizes, 1 round, no warm-up

1. Sequence: N trivial steps (`run: /bin/true`) one after the other,
   `ansflow run FILE --output plain --quiet --db <tmp>`, against
   (a) a bash loop running /bin/true N times and
   (b) go-task: a `default` task whose `cmds` are N task calls `{task: tI}` (run in order, as the
       go-task docs say, "Task waits for each command or task call to succeed before starting the
       next"), each task `cmds: [/bin/true]`, `silent: true`. `deps:` would run them in parallel,
       so it is not an equivalent. The other sequential form, `task t1 ... tN` on the command line,
       is timed too; the target is checked against the faster of the two.
   Target: ansflow no slower than go-task (ratio <= 1.00).
2. Fan-out: M x `sleep 0.2`, every step `needs: []`, `--concurrency 10`, against
   `xargs -P 10 -n 1 sleep` fed M lines of `0.2`. Target: ansflow within 1.05 x xargs.

Context rows (no target) split ansflow's time into start-up (`ansflow --version`), the fixed cost
of a run (a 1-step pipeline), the extra cost of a brand-new database, and the per-step cost.

Every file is generated in a fresh temporary folder, removed at the end (`--keep` keeps it). Each
ansflow case has its own database under that folder, created by the untimed warm-up run and reused
by the timed rounds, as a user's `.ansflow/state.db` is (the "new db" row deletes it before every
run instead). Each command runs once untimed first, then the rounds are interleaved (A B C, A B C,
...) so drift in machine load hits every command alike. Exit status is always 0: this is a
measurement, not a test.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

from common import (  # bench/ is sys.path[0] when run as `python bench/local.py`
    Case,
    Verdict,
    check_target,
    command_version,
    compile_bytecode,
    core_count,
    fmt_seconds,
    load_average,
    print_header,
    print_table,
    remove_dir,
    run_cases,
    scratch_dir,
    which,
)

VENV_BIN = Path(sys.executable).parent
SEQ_LIMIT = 1.00
FANOUT_LIMIT = 1.05
SLEEP = "0.2"
CONCURRENCY = 10


# --- generated files -----------------------------------------------------------------------------


def write_sequence_pipeline(path: Path, n: int) -> None:
    lines = ["version: 1", f"name: bench-seq-{n}", "steps:"]
    for i in range(1, n + 1):
        lines += [f"  - id: s{i}", "    run: /bin/true"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_fanout_pipeline(path: Path, m: int) -> None:
    lines = ["version: 1", f"name: bench-fanout-{m}", "steps:"]
    for i in range(1, m + 1):
        lines += [f"  - id: p{i}", "    needs: []", f"    run: sleep {SLEEP}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_taskfile(path: Path, n: int) -> None:
    lines = ["version: '3'", "silent: true", "tasks:", "  default:", "    cmds:"]
    lines += [f"      - task: t{i}" for i in range(1, n + 1)]
    for i in range(1, n + 1):
        lines += [f"  t{i}:", "    cmds: [/bin/true]"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def fresh_db(db: Path) -> Callable[[int], None]:
    """A prepare hook that deletes the database (and its WAL, SHM and locks) before each run."""

    def prepare(_run_index: int) -> None:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(str(db) + suffix).unlink(missing_ok=True)
        remove_dir(db.parent / "locks")

    return prepare


# --- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds (median is reported)")
    parser.add_argument("--quick", action="store_true", help="smoke run: small sizes, 1 round")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]

    n_seq, n_fan = (20, 10) if args.quick else (200, 40)
    repeat = 1 if args.quick else max(1, args.repeat)
    warmup = not args.quick

    ansflow = which("ansflow", prefer=VENV_BIN)
    task = which("task", prefer=VENV_BIN)
    bash = which("bash") or "/bin/bash"
    xargs = which("xargs")
    if ansflow is None:
        print("ansflow is not installed (pip install -e .); nothing to measure")
        return 0

    print_header(
        "ansflow local benchmark"
        + (" (QUICK smoke run: sizes reduced, 1 round)" if args.quick else ""),
        {
            "ansflow": f"{command_version([ansflow, '--version'])} ({ansflow})",
            "go-task": command_version([task, "--version"]) if task else "not found",
            "bash": command_version([bash, "--version"]),
            "xargs": command_version([xargs, "--version"]) if xargs else "not found",
            "command": shlex.join([sys.executable, *sys.argv]),
            "bytecode": compile_bytecode(ansflow),
            "rounds": f"{repeat} timed (median reported)" + (", after 1 warm-up" if warmup else ""),
        },
    )

    work = scratch_dir()
    verdicts: list[Verdict] = []
    try:
        seq_yml, one_yml, fan_yml = work / "seq.yml", work / "one.yml", work / "fanout.yml"
        taskfile = work / "Taskfile.yml"
        write_sequence_pipeline(seq_yml, n_seq)
        write_sequence_pipeline(one_yml, 1)
        write_fanout_pipeline(fan_yml, n_fan)
        write_taskfile(taskfile, n_seq)

        def ansflow_run(
            name: str, pipeline: Path, *extra: str, note: str = "", new_db: bool = False
        ) -> Case:
            db = work / f"db-{len(list(work.glob('db-*')))}" / "state.db"
            db.parent.mkdir()
            return Case(
                name,
                [
                    ansflow,
                    "run",
                    str(pipeline),
                    "--output",
                    "plain",
                    "--quiet",
                    "--db",
                    str(db),
                    *extra,
                ],
                cwd=work,
                prepare=fresh_db(db) if new_db else None,
                note=note,
            )

        # 1. sequence --------------------------------------------------------------------------
        print(f"[1] {n_seq} trivial steps in sequence (/bin/true)")
        seq_cases = [
            ansflow_run("ansflow", seq_yml),
            Case(
                "bash loop",
                [bash, "-c", f"for i in $(seq {n_seq}); do /bin/true; done"],
                cwd=work,
            ),
        ]
        if task:
            seq_cases += [
                Case(
                    "go-task default",
                    [task, "--taskfile", str(taskfile), "default"],
                    cwd=work,
                    note="cmds: [{task: tI}...]",
                ),
                Case(
                    "go-task t1..tN",
                    [task, "--taskfile", str(taskfile), *(f"t{i}" for i in range(1, n_seq + 1))],
                    cwd=work,
                    note="tasks listed on the command line",
                ),
            ]
        seq_cases += [
            Case("ansflow --version", [ansflow, "--version"], cwd=work, note="start-up only"),
            ansflow_run("ansflow 1 step", one_yml, note="fixed cost of a run"),
            ansflow_run(
                "ansflow 1 step, new db", one_yml, note="database created each run", new_db=True
            ),
        ]
        seq = run_cases(seq_cases, repeat=repeat, warmup=warmup)
        print_table(seq, baseline="go-task default" if task else "bash loop")
        one, full = seq["ansflow 1 step"], seq["ansflow"]
        if one.ok and full.ok and n_seq > 1:
            per_step = (full.median - one.median) / (n_seq - 1)
            startup = seq["ansflow --version"]
            print(
                f"  ansflow breakdown: start-up {fmt_seconds(startup.median)}, fixed cost of a run "
                f"{fmt_seconds(one.median)}, then {per_step * 1000:.1f} ms per step"
            )
            bash_loop = seq["bash loop"]
            if bash_loop.ok:
                print(
                    f"  (bash: {bash_loop.median / n_seq * 1000:.2f} ms per /bin/true, "
                    f"ansflow {per_step / (bash_loop.median / n_seq):.0f}x that per step)"
                )
            print()
        go_rows = [r for k, r in seq.items() if k.startswith("go-task") and r.ok]
        if go_rows:
            fastest_go = min(go_rows, key=lambda r: r.median)
            verdicts.append(
                check_target(
                    f"{n_seq} sequential steps, ansflow vs {fastest_go.name} "
                    "(the faster go-task form)",
                    full,
                    fastest_go,
                    limit=SEQ_LIMIT,
                )
            )
        else:
            print("TARGET SKIPPED  go-task not available")
        if seq["bash loop"].ok and full.ok:
            print(
                f"               (vs bash loop: {full.median / seq['bash loop'].median:.1f}x; "
                "no target)"
            )
        print()

        # 2. fan-out ---------------------------------------------------------------------------
        print(f"[2] {n_fan} x sleep {SLEEP} at concurrency {CONCURRENCY}")
        fan_cases = [
            ansflow_run("ansflow", fan_yml, "--concurrency", str(CONCURRENCY)),
        ]
        if xargs:
            fan_cases.append(
                Case(
                    f"xargs -P {CONCURRENCY}",
                    [xargs, "-P", str(CONCURRENCY), "-n", "1", "sleep"],
                    cwd=work,
                    stdin=(SLEEP + "\n").encode() * n_fan,
                )
            )
        fan = run_cases(fan_cases, repeat=repeat, warmup=warmup)
        print_table(fan, baseline=f"xargs -P {CONCURRENCY}" if xargs else None)
        waves = -(-n_fan // CONCURRENCY)
        ideal = waves * float(SLEEP)
        print(f"  ideal (no overhead): {waves} waves x {SLEEP} s = {fmt_seconds(ideal)}")
        if fan["ansflow"].ok:
            print(f"  ansflow overhead over ideal: {fmt_seconds(fan['ansflow'].median - ideal)}")
        print()
        if xargs:
            verdicts.append(
                check_target(
                    f"{n_fan} x sleep {SLEEP} at concurrency {CONCURRENCY}, ansflow vs xargs",
                    fan["ansflow"],
                    fan[f"xargs -P {CONCURRENCY}"],
                    limit=FANOUT_LIMIT,
                )
            )
        else:
            print("TARGET SKIPPED  xargs not available")
        print()
    finally:
        if args.keep:
            print(f"generated files kept in {work}")
        else:
            remove_dir(work)

    print("Summary")
    print("-------")
    print(f"load avg at the end: {load_average()} (1/5/15 min; {core_count()[0]} cores)")
    for v in verdicts:
        print(v.line())
    if args.quick:
        print("(quick run: reduced sizes and a single round; use the full run for the figures)")
    return 0


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("\ninterrupted")
    except Exception:  # a benchmark reports its own breakage but still exits 0
        import traceback

        traceback.print_exc()
        print("benchmark aborted by the error above")
    sys.exit(0)
