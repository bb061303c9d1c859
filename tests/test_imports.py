"""Start-up stays light: commands import only what they use (STYLE: heavy modules imported lazily).

Each check runs the real entry point, `ansflow.cli.main`, in a fresh interpreter and reports
`sys.modules` when it exits. Positive controls (what each command must have imported to do its
job) make sure the command really ran, so that "not imported" cannot pass by accident.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers_files import EXAMPLES, ROOT, cli_env

HARNESS = """
import json, sys
preload, report, *args = sys.argv[1:]
for name in filter(None, preload.split(",")):
    __import__(name)
sys.argv = ["ansflow", *args]
code = None
try:
    from ansflow.cli import main
    main()
except SystemExit as exc:
    code = exc.code
with open(report, "w") as handle:
    json.dump({"code": code, "modules": sorted(sys.modules)}, handle)
"""


def modules_after(tmp_path: Path, *args: str, preload: str = "") -> tuple[int, set[str], str]:
    report = tmp_path / "modules.json"
    result = subprocess.run(
        [sys.executable, "-c", HARNESS, preload, str(report), *args],
        cwd=ROOT,
        # NOTE: main() may leave with os._exit for speed; the harness needs it to return.
        env=cli_env(ANSFLOW_NO_FAST_EXIT="1"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Traceback" not in result.stderr, result.stderr
    data = json.loads(report.read_text(encoding="utf-8"))
    return data["code"], set(data["modules"]), result.stdout


def top_level(modules: set[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


def test_help_imports_no_backend_no_templates_no_database(tmp_path: Path) -> None:
    code, modules, stdout = modules_after(tmp_path, "--help")
    assert code == 0
    assert "Usage: ansflow" in stdout
    assert "ansflow.cli" in modules  # control: the CLI did load
    roots = top_level(modules)
    for heavy in ("paramiko", "jenkins", "jinja2", "sqlite_utils"):
        assert heavy not in roots, f"`ansflow --help` imports {heavy}"


def test_validate_imports_no_ssh_or_jenkins_client(tmp_path: Path) -> None:
    release = EXAMPLES / "release.yml"
    assert "type: ssh" in release.read_text(encoding="utf-8")
    assert "type: jenkins" in release.read_text(encoding="utf-8")
    code, modules, stdout = modules_after(tmp_path, "validate", str(release))
    assert code == 0, stdout
    assert "ok" in stdout
    # Controls: validating really parsed YAML, built the model and checked the templates.
    assert {"ansflow.loader", "ansflow.model", "ansflow.checks", "jinja2", "yaml"} <= modules
    roots = top_level(modules)
    assert "paramiko" not in roots
    assert "jenkins" not in roots


@pytest.mark.parametrize("name", ["paramiko", "jinja2"])
def test_the_harness_sees_imports(tmp_path: Path, name: str) -> None:
    """The detection itself works: a module imported before the command is reported."""
    _, modules, _ = modules_after(tmp_path, "--help", preload=name)
    assert name in modules
