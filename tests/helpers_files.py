"""Small helpers shared by the tests of pipeline files (loading, checking, planning, the CLI)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ansflow.errors import Diagnostic, LoadError
from ansflow.loader import LoadedPipeline, load_text

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.yml"))
STARTER = ROOT / "ansflow" / "data" / "starter.yml"
GOLDEN = Path(__file__).resolve().parent / "golden"
#: Set UPDATE_GOLDEN=1 to rewrite the golden files from the current output (then review the diff).
UPDATE_GOLDEN = bool(os.environ.get("UPDATE_GOLDEN"))


def dedent(text: str) -> str:
    """YAML written indented inside a test, without its common indentation and first newline."""
    return textwrap.dedent(text).lstrip("\n")


def load(text: str, name: str = "x.yml") -> LoadedPipeline:
    """Load pipeline text (dedented) as if it were the file `name`."""
    return load_text(dedent(text), Path(name))


def errors(text: str | bytes, name: str = "x.yml") -> list[Diagnostic]:
    """The diagnostics of pipeline text that must not load (fails the test if it loads)."""
    raw = text if isinstance(text, bytes) else dedent(text)
    with pytest.raises(LoadError) as info:
        load_text(raw, Path(name))
    assert info.value.diagnostics, "a LoadError must carry at least one diagnostic"
    return info.value.diagnostics


def one_error(text: str | bytes, name: str = "x.yml") -> Diagnostic:
    """The only diagnostic of pipeline text that must not load."""
    found = errors(text, name)
    assert len(found) == 1, "\n".join(d.format() for d in found)
    return found[0]


def cli_env(**extra: str) -> dict[str, str]:
    """A predictable environment for the CLI: no colour, no debug tracebacks, wide terminal."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSFLOW_")}
    env.update({"NO_COLOR": "1", "COLUMNS": "100", "TERM": "dumb", "PYTHONIOENCODING": "utf-8"})
    env.update(extra)
    return env


def run_cli(
    *args: str | Path, cwd: Path | None = None, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    """`python -m ansflow ARGS` as a real subprocess; never a traceback on stderr."""
    result = subprocess.run(
        [sys.executable, "-m", "ansflow", *map(str, args)],
        cwd=cwd or ROOT,
        env=cli_env(**env),
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=timeout,
        check=False,
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert "Traceback" not in result.stdout, result.stdout
    return result


def run_cli_many(
    calls: Sequence[tuple[Sequence[str | Path], Path | None]],
) -> list[subprocess.CompletedProcess[str]]:
    """Several `run_cli(*args, cwd=cwd)` at once (start-up dominates; the CPUs can share it)."""
    workers = max(2, min(8, (os.cpu_count() or 2) * 2))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(run_cli, *args, cwd=cwd) for args, cwd in calls]
        return [future.result() for future in futures]


def check_golden(path: Path, actual: str) -> None:
    """Compare with a golden file (or write it when UPDATE_GOLDEN is set)."""
    if UPDATE_GOLDEN:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual, encoding="utf-8")
        return
    assert path.exists(), f"missing golden file {path}; run with UPDATE_GOLDEN=1 to create it"
    expected = path.read_text(encoding="utf-8")
    assert actual == expected, f"output differs from {path.relative_to(ROOT)}"
