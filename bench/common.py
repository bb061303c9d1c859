"""Shared benchmark helpers: timing commands, describing the machine, printing ratios.

Benchmarks are plain scripts (`python bench/local.py`), not tests: they always exit 0 and print
whether each target was met. Everything here uses the standard library only, so a benchmark runs
with nothing but the project's venv.

Typical use::

    cases = [Case("ansflow", ["ansflow", "run", ...]), Case("go-task", ["task", ...])]
    results = run_cases(cases, repeat=3)
    print_table(results, baseline="go-task")
    check_target("ansflow <= go-task", results["ansflow"], results["go-task"], limit=1.0)
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
#: Scratch space for generated files; git-ignored and excluded from ruff.
WORK_DIR = BENCH_DIR / ".work"


# --- the machine ---------------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (Linux), else whatever `platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Hardware", "cpu model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def core_count() -> tuple[int, int]:
    """(logical CPUs in the machine, CPUs this process may run on)."""
    total = os.cpu_count() or 1
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = total
    return total, usable


def command_version(argv: Sequence[str]) -> str:
    """First non-empty line a `--version`-style command prints, or why it could not be run."""
    try:
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unavailable ({exc.__class__.__name__}: {exc})"
    for line in (proc.stdout + proc.stderr).splitlines():
        if line.strip():
            return line.strip()
    return f"unknown (exit {proc.returncode})"


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: a busy machine makes every figure noisier."""
    try:
        return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    except OSError:
        return "n/a"


def machine_lines(extra: Mapping[str, str] | None = None) -> list[str]:
    """Lines describing when and where a benchmark ran, for the report header."""
    total, usable = core_count()
    cores = f"{total}" if total == usable else f"{total} ({usable} usable by this process)"
    load = load_average()
    lines = [
        f"date:     {_dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"machine:  {cpu_model()}, {cores} cores, {platform.system()} {platform.release()}",
        f"python:   {platform.python_implementation()} {platform.python_version()} "
        f"({sys.executable})",
        f"load avg: {load} (at start)",
    ]
    for key, value in (extra or {}).items():
        lines.append(f"{key + ':':<9} {value}")
    return lines


def print_header(title: str, extra: Mapping[str, str] | None = None) -> None:
    print(title)
    print("=" * len(title))
    for line in machine_lines(extra):
        print(line)
    print()


def compile_bytecode(ansflow: str) -> str:
    """Compile ansflow's modules with the interpreter that runs it, as `pip install` does.

    With PYTHONDONTWRITEBYTECODE set (as on these machines) an editable install never writes its
    .pyc files, so every timed run would compile each changed module from source again, about
    40 ms that an installed ansflow never pays. Returns the line for the report header.
    """
    python = Path(ansflow).with_name("python")
    interpreter = str(python) if python.exists() else sys.executable
    done = subprocess.run(
        [interpreter, "-m", "compileall", "-q", str(REPO_DIR / "ansflow")],
        stdout=subprocess.DEVNULL,
        check=False,
    )
    if done.returncode != 0:
        return f"compileall failed (exit {done.returncode}): timings include compiling"
    return "ansflow's modules compiled before timing (as pip install does)"


# --- timing --------------------------------------------------------------------------------------


@dataclass
class Case:
    """One command to time. `prepare`, if given, runs before every timed run (not timed)."""

    name: str
    argv: Sequence[str]
    cwd: Path | None = None
    stdin: bytes | None = None
    env: Mapping[str, str] | None = None
    prepare: Callable[[int], None] | None = None
    note: str = ""


@dataclass
class Result:
    name: str
    times: list[float] = field(default_factory=list)
    error: str | None = None
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.times)

    @property
    def median(self) -> float:
        return statistics.median(self.times) if self.times else float("nan")

    @property
    def best(self) -> float:
        return min(self.times) if self.times else float("nan")

    @property
    def spread(self) -> float:
        return (max(self.times) - min(self.times)) if self.times else float("nan")


def time_once(case: Case, run_index: int) -> float:
    """Wall-clock seconds of one run of `case`; raises RuntimeError when it does not exit 0."""
    if case.prepare is not None:
        case.prepare(run_index)
    env = None
    if case.env is not None:
        env = dict(os.environ)
        env.update(case.env)
    start = time.perf_counter()
    proc = subprocess.run(
        list(case.argv),
        cwd=case.cwd,
        env=env,
        input=case.stdin if case.stdin is not None else b"",
        capture_output=True,
        check=False,
    )
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).decode(errors="replace").strip().splitlines()[-10:]
        raise RuntimeError(
            f"{shlex.join(case.argv)} exited {proc.returncode}"
            + "".join(f"\n    {t}" for t in tail)
        )
    return elapsed


def run_cases(
    cases: Sequence[Case], *, repeat: int, warmup: bool = True, progress: bool = True
) -> dict[str, Result]:
    """Time every case `repeat` times, interleaved round-robin so drift hits all cases alike.

    With `warmup`, each case first runs once untimed (page cache, .pyc files, dynamic loader).
    A case that fails is recorded with its error and not run again.
    """
    results = {c.name: Result(c.name, note=c.note) for c in cases}
    if warmup:
        for case in cases:
            try:
                time_once(case, -1)
            except (OSError, RuntimeError) as exc:
                results[case.name].error = str(exc)
    for i in range(repeat):
        for case in cases:
            res = results[case.name]
            if res.error:
                continue
            try:
                res.times.append(time_once(case, i))
            except (OSError, RuntimeError) as exc:
                res.error = str(exc)
        if progress:
            print(f"  round {i + 1}/{repeat} done", file=sys.stderr, flush=True)
    return results


# --- reporting -----------------------------------------------------------------------------------


def ratio(value: Result, baseline: Result) -> float:
    if not (value.ok and baseline.ok) or baseline.median <= 0:
        return float("nan")
    return value.median / baseline.median


def fmt_seconds(seconds: float) -> str:
    if seconds != seconds:  # NaN
        return "n/a"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.3f} s"


def print_table(results: Mapping[str, Result], *, baseline: str | None = None) -> None:
    """Median, min, max and (with `baseline`) the median ratio to that row's median."""
    base = results.get(baseline) if baseline else None
    name_w = max(len("command"), *(len(n) for n in results))
    head = f"  {'command':<{name_w}}  {'median':>10}  {'min':>10}  {'max':>10}"
    if base is not None:
        head += f"  {'x ' + baseline:>14}"
    print(head)
    print("  " + "-" * (len(head) - 2))
    for name, res in results.items():
        if not res.ok:
            print(f"  {name:<{name_w}}  FAILED: {res.error}")
            continue
        row = (
            f"  {name:<{name_w}}  {fmt_seconds(res.median):>10}  {fmt_seconds(res.best):>10}"
            f"  {fmt_seconds(max(res.times)):>10}"
        )
        if base is not None:
            r = ratio(res, base)
            row += f"  {('n/a' if r != r else f'{r:.2f}x'):>14}"
        if res.note:
            row += f"  ({res.note})"
        print(row)
    print()


@dataclass
class Verdict:
    label: str
    ratio: float
    limit: float

    @property
    def met(self) -> bool:
        return self.ratio == self.ratio and self.ratio <= self.limit

    def line(self) -> str:
        shown = "n/a" if self.ratio != self.ratio else f"{self.ratio:.2f}x"
        state = "MET" if self.met else "NOT MET"
        return f"TARGET {state:<7}  {self.label}: ratio {shown} (limit {self.limit:.2f}x)"


def check_target(label: str, value: Result, baseline: Result, *, limit: float) -> Verdict:
    """Compare medians; print and return the verdict."""
    verdict = Verdict(label, ratio(value, baseline), limit)
    print(verdict.line())
    return verdict


# --- scratch files -------------------------------------------------------------------------------


def scratch_dir(prefix: str = "ansflow-bench-") -> Path:
    """A new, empty folder under the system temp dir (never in the repository)."""
    return Path(tempfile.mkdtemp(prefix=prefix))


def remove_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def which(name: str, *, prefer: Path | None = None) -> str | None:
    """`name` from the `prefer` folder (e.g. the venv's bin/) if present there, else from PATH."""
    if prefer is not None:
        candidate = prefer / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which(name)


# --- timing with a check of what each run printed ------------------------------------------------

#: Called (untimed) with a finished run's output; raises RuntimeError when the run did not really do
#: its work (a host missing from the output, a database row not `success`...).
OutputCheck = Callable[[subprocess.CompletedProcess[bytes]], None]


def time_once_checked(case: Case, run_index: int, check: OutputCheck | None) -> float:
    """Like `time_once`, then `check` the run's output (after the clock stops).

    A run that exits 0 but fails its check raises RuntimeError, so it is never timed as a success.
    """
    if case.prepare is not None:
        case.prepare(run_index)
    env = None
    if case.env is not None:
        env = dict(os.environ)
        env.update(case.env)
    start = time.perf_counter()
    proc = subprocess.run(
        list(case.argv),
        cwd=case.cwd,
        env=env,
        input=case.stdin if case.stdin is not None else b"",
        capture_output=True,
        check=False,
    )
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).decode(errors="replace").strip().splitlines()[-10:]
        raise RuntimeError(
            f"{shlex.join(case.argv)} exited {proc.returncode}"
            + "".join(f"\n    {t}" for t in tail)
        )
    if check is not None:
        check(proc)
    return elapsed


def run_checked_cases(
    cases: Sequence[Case],
    checks: Mapping[str, OutputCheck],
    *,
    repeat: int,
    warmup: bool = True,
    progress: bool = True,
) -> dict[str, Result]:
    """`run_cases`, with `checks[case.name]` (when present) applied to every run, warm-up included.

    A case whose run fails or fails its check is recorded with the error and not run again.
    """
    results = {c.name: Result(c.name, note=c.note) for c in cases}

    def attempt(case: Case, index: int) -> None:
        res = results[case.name]
        try:
            elapsed = time_once_checked(case, index, checks.get(case.name))
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            res.error = str(exc)
            return
        if index >= 0:
            res.times.append(elapsed)

    if warmup:
        for case in cases:
            attempt(case, -1)
    for i in range(repeat):
        for case in cases:
            if not results[case.name].error:
                attempt(case, i)
        if progress:
            print(f"  round {i + 1}/{repeat} done", file=sys.stderr, flush=True)
    return results
