"""The local step types, run the way a user runs them: `ansflow run`, then `show --json` and `logs`.

Each test writes a pipeline into a temporary folder, runs the real CLI in a subprocess, and checks
what the step left behind (files, git state, HTTP requests) against what `show` recorded.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.clihelp import Cli, Result

DATA = Path(__file__).parent / "data" / "steps"

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="needs the git CLI")


def steps_by_id(cli: Cli) -> dict[str, dict[str, Any]]:
    """`show last --json` as {step id: step object} (local steps: one object per step)."""
    return {s["step"]: s for s in cli.show()["steps"]}


def logs(cli: Cli, step: str) -> str:
    result = cli("logs", "last", step)
    assert result.code == 0, str(result)
    return result.out


def run(cli: Cli, text: str, *flags: str, name: str = "p.yml") -> Result:
    cli.write(name, text)
    return cli("run", name, "--output", "plain", "--concurrency", "4", *flags)


# --- git ------------------------------------------------------------------------------------------


@pytest.fixture
def git_env(tmp_path: Path) -> dict[str, str]:
    """A git environment that ignores the machine's and the user's configuration."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text(
        "[user]\n\tname = Ansflow Test\n\temail = test@ansflow.invalid\n"
        "[init]\n\tdefaultBranch = main\n"
    )
    return {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "GIT_CONFIG_NOSYSTEM": "1",
        # NOTE: submodules from plain paths are refused since git 2.38.1 unless allowed.
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "protocol.file.allow",
        "GIT_CONFIG_VALUE_0": "always",
        "GIT_TERMINAL_PROMPT": "0",
    }


@dataclass
class Repos:
    """An `app` repository (tag v1.0, branch feature, submodule libs/lib) and its `lib`."""

    root: Path
    env: dict[str, str]
    app: Path = field(init=False)
    lib: Path = field(init=False)

    def __post_init__(self) -> None:
        self.app = self.root / "app"
        self.lib = self.root / "lib"

    def git(self, repo: Path, *args: str) -> str:
        proc = subprocess.run(
            ["git", "-C", str(repo), *args],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        assert proc.returncode == 0, f"git {' '.join(args)}: {proc.stderr}"
        return proc.stdout.strip()

    def commit(self, repo: Path, name: str, text: str, message: str) -> str:
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
        self.git(repo, "add", "--", name)
        self.git(repo, "commit", "-q", "-m", message)
        return self.git(repo, "rev-parse", "HEAD")

    def rev(self, repo: Path, ref: str) -> str:
        return self.git(repo, "rev-parse", f"{ref}^{{commit}}")


@pytest.fixture
def repos(tmp_path: Path, git_env: dict[str, str], cli: Cli) -> Repos:
    cli.env.update(git_env)
    r = Repos(tmp_path / "repos", git_env)
    for repo in (r.app, r.lib):
        repo.mkdir(parents=True)
        r.git(repo, "init", "-q")
    r.commit(r.lib, "lib.txt", "library\n", "lib: first")
    r.commit(r.app, "README", "v1\n", "app: v1")
    r.git(r.app, "tag", "-a", "v1.0", "-m", "release 1.0")
    r.git(r.app, "checkout", "-q", "-b", "feature")
    r.commit(r.app, "feature.txt", "feature\n", "app: feature")
    r.git(r.app, "checkout", "-q", "main")
    r.git(r.app, "submodule", "-q", "add", str(r.lib), "libs/lib")
    r.commit(r.app, "README", "v2\n", "app: v2 with a submodule")
    return r


@needs_git
def test_fetch_code_refs_depth_submodules_and_commit_output(cli: Cli, repos: Repos) -> None:
    app, work = repos.app, cli.cwd
    v1 = repos.rev(app, "v1.0")
    main = repos.rev(app, "main")
    feature = repos.rev(app, "feature")
    assert repos.git(app, "rev-parse", "v1.0") != v1, "the tag should be annotated"
    result = run(
        cli,
        f"""
        version: 1
        steps:
          - {{id: checkout, type: fetch_code, repo: "{app}", ref: main, dest: w/main}}
          - id: use
            run: echo "${{{{ steps.checkout.outputs.commit }}}}" > used.txt
          - {{id: tag, type: fetch_code, repo: "{app}", ref: v1.0, dest: w/tag, needs: []}}
          - {{id: branch, type: fetch_code, repo: "{app}", ref: feature, dest: w/branch, needs: []}}
          - {{id: sha, type: fetch_code, repo: "{app}", ref: "{v1}", dest: w/sha, needs: []}}
          - {{id: short, type: fetch_code, repo: "{app}", ref: "{v1[:10]}", dest: w/short,
              needs: []}}
          - id: shallow
            type: fetch_code
            repo: "file://{app}"
            ref: main
            dest: w/shallow
            depth: 1
            needs: []
          - {{id: subs, type: fetch_code, repo: "file://{app}", dest: w/subs, submodules: true,
              needs: []}}
        """,
    )
    assert result.code == 0, str(result)
    steps = steps_by_id(cli)
    assert {k: s["status"] for k, s in steps.items()} == dict.fromkeys(steps, "success")
    expected = {
        "checkout": main,
        "tag": v1,
        "branch": feature,
        "sha": v1,
        "short": v1,
        "shallow": main,
        "subs": main,
    }
    dests = {
        "checkout": "main",
        "tag": "tag",
        "branch": "branch",
        "sha": "sha",
        "short": "short",
        "shallow": "shallow",
        "subs": "subs",
    }
    for step_id, commit in expected.items():
        assert steps[step_id]["outputs"]["commit"] == commit, step_id
        clone = work / "w" / dests[step_id]
        assert repos.git(clone, "rev-parse", "HEAD") == commit, step_id
    # The output reaches a later step's template.
    assert (work / "used.txt").read_text().strip() == main
    # The checked-out trees are the refs' trees.
    assert (work / "w/tag/README").read_text() == "v1\n"
    assert (work / "w/branch/feature.txt").is_file()
    assert not (work / "w/main/feature.txt").exists()
    assert (work / "w/main/README").read_text() == "v2\n"
    # depth: 1 leaves a shallow clone with one commit.
    assert (work / "w/shallow/.git/shallow").is_file()
    assert repos.git(work / "w/shallow", "rev-list", "--count", "HEAD") == "1"
    # Submodules only when asked for.
    assert (work / "w/subs/libs/lib/lib.txt").read_text() == "library\n"
    assert not (work / "w/main/libs/lib/lib.txt").exists()
    assert f"checked out v1.0 at {v1}" in logs(cli, "tag")


@needs_git
def test_fetch_code_second_run_updates_the_existing_clone(cli: Cli, repos: Repos) -> None:
    # A relative repository path, as a pipeline kept next to its repositories would use.
    relative = os.path.relpath(repos.app, cli.cwd)
    pipeline = f"""
        version: 1
        steps:
          - {{id: checkout, type: fetch_code, repo: "{relative}", ref: main, dest: src,
              submodules: true}}
          - id: record
            run: echo "${{{{ steps.checkout.outputs.commit }}}}" >> commits.txt
        """
    first = run(cli, pipeline)
    assert first.code == 0, str(first)
    before = repos.rev(repos.app, "main")
    after = repos.commit(repos.app, "README", "v3\n", "app: v3")
    assert after != before
    second = run(cli, pipeline)
    assert second.code == 0, str(second)
    steps = steps_by_id(cli)
    assert steps["checkout"]["outputs"]["commit"] == after
    assert "updating the clone in src" in logs(cli, "checkout")
    assert (cli.cwd / "src/README").read_text() == "v3\n"
    assert (cli.cwd / "src/libs/lib/lib.txt").is_file()
    assert repos.git(cli.cwd / "src", "rev-parse", "HEAD") == after
    assert (cli.cwd / "commits.txt").read_text().split() == [before, after]


@needs_git
def test_fetch_code_bad_ref_and_missing_repository_fail_clearly(cli: Cli, repos: Repos) -> None:
    missing = repos.root / "no-such-repo"
    result = run(
        cli,
        f"""
        version: 1
        steps:
          - {{id: badref, type: fetch_code, repo: "{repos.app}", ref: no-such-branch, dest: a,
              needs: []}}
          - {{id: norepo, type: fetch_code, repo: "{missing}", dest: b, needs: []}}
          - {{id: nourl, type: fetch_code, repo: "file://{missing}", dest: c, needs: []}}
        """,
    )
    assert result.code == 1, str(result)
    steps = steps_by_id(cli)
    assert {k: s["status"] for k, s in steps.items()} == dict.fromkeys(steps, "failed")
    bad = steps["badref"]["error"]
    assert "no-such-branch" in bad and "couldn't find remote ref" in bad, bad
    for step_id in ("norepo", "nourl"):
        error = steps[step_id]["error"]
        assert str(missing) in error and "clone" in error, error
    assert not (cli.cwd / "b").exists()


# --- build ----------------------------------------------------------------------------------------


def test_build_artifacts_are_fingerprinted_and_checked(cli: Cli) -> None:
    result = run(
        cli,
        """
        version: 1
        steps:
          - id: ok
            type: build
            run: |
              mkdir -p dist pkg/sub
              printf 'application' > dist/app.bin
              head -c 70000 /dev/zero > dist/big.bin
              printf 'ignored' > dist/notes.txt
              printf 'a' > pkg/a.txt
              printf 'bb' > pkg/sub/b.txt
            artifacts: ["dist/*.bin", pkg, dist/app.bin]
          - id: nomatch
            type: build
            needs: []
            run: mkdir -p other && touch other/x.txt
            artifacts: [other/x.txt, "other/*.zip"]
          - id: broken
            type: build
            needs: []
            run: |
              echo compiling
              exit 3
            artifacts: ["nothing/*"]
        """,
    )
    assert result.code == 1, str(result)
    steps = steps_by_id(cli)
    assert steps["ok"]["status"] == "success"
    artifacts = steps["ok"]["details"]["artifacts"]
    names = [os.path.relpath(a["path"], cli.cwd) for a in artifacts]
    assert names == ["dist/app.bin", "dist/big.bin", "pkg/a.txt", "pkg/sub/b.txt"]
    for artifact in artifacts:
        data = Path(artifact["path"]).read_bytes()
        assert artifact["size"] == len(data)
        assert artifact["sha256"] == hashlib.sha256(data).hexdigest()
    assert steps["nomatch"]["status"] == "failed"
    assert "other/*.zip" in steps["nomatch"]["error"]
    assert steps["broken"]["status"] == "failed"
    assert steps["broken"]["exit_code"] == 3
    assert "status 3" in steps["broken"]["error"]
    assert "artifacts" not in steps["broken"]["details"]
    assert "compiling" in logs(cli, "broken")


# --- test -----------------------------------------------------------------------------------------

PASSING_XML = """\
<?xml version="1.0" encoding="utf-8"?>
<testsuites>
  <testsuite name="unit" tests="4" failures="0" errors="0" skipped="1">
    <testcase classname="shop.tests" name="test_a" time="0.1"/>
    <testcase classname="shop.tests" name="test_b" time="0.1"/>
    <testcase classname="shop.tests" name="test_c" time="0.1"/>
    <testcase classname="shop.tests" name="test_skip"><skipped message="later"/></testcase>
  </testsuite>
</testsuites>
"""

FAILING_XML = """\
<testsuite name="unit" tests="2" failures="1">
  <testcase classname="shop.tests" name="test_ok"/>
  <testcase classname="shop.tests" name="test_boom">
    <failure message="boom">assert 1 == 2</failure>
  </testcase>
</testsuite>
"""

ERROR_XML = """\
<testsuite name="integration" tests="2">
  <testcase classname="shop.it" name="test_db"><error message="no database"/></testcase>
  <testcase classname="shop.it" name="test_web"/>
</testsuite>
"""


def heredoc(path: str, text: str, indent: int = 14) -> str:
    """Shell lines writing `text` to `path` with a heredoc, indented for the YAML block below."""
    pad = " " * indent
    body = text.replace("\n", "\n" + pad)
    return f"mkdir -p $(dirname {path})\n{pad}cat > {path} <<'XML'\n{pad}{body}XML"


def test_test_step_reads_junit_reports(cli: Cli) -> None:
    result = run(
        cli,
        f"""
        version: 1
        steps:
          - id: passing
            type: test
            needs: []
            run: |
              {heredoc("r1/unit.xml", PASSING_XML)}
            junit: [r1/unit.xml]
          - id: failing
            type: test
            needs: []
            run: |
              {heredoc("r2/unit.xml", FAILING_XML)}
              echo "the runner said all is fine"
            junit: [r2/unit.xml]
          - id: several
            type: test
            needs: []
            run: |
              {heredoc("r3/a.xml", PASSING_XML)}
              {heredoc("r3/b.xml", ERROR_XML)}
            junit: ["r3/*.xml", r3/a.xml]
          - id: invalid
            type: test
            needs: []
            run: |
              mkdir -p r4 && printf '<testsuite><testcase name="x">' > r4/bad.xml
            junit: [r4/bad.xml]
          - id: missing
            type: test
            needs: []
            run: "true"
            junit: ["r5/*.xml"]
          - id: folder
            type: test
            needs: []
            run: mkdir -p r6/unit.xml
            junit: ["r6/*.xml"]
        """,
    )
    assert result.code == 1, str(result)
    steps = steps_by_id(cli)

    passing = steps["passing"]
    assert passing["status"] == "success", passing
    tests = passing["details"]["tests"]
    assert (tests["tests"], tests["failures"], tests["errors"], tests["skipped"]) == (4, 0, 0, 1)

    failing = steps["failing"]
    assert failing["status"] == "failed"
    assert failing["exit_code"] == 0
    assert "test_boom" in failing["error"]
    tests = failing["details"]["tests"]
    assert (tests["tests"], tests["failures"], tests["errors"]) == (2, 1, 0)
    assert tests["failed_tests"] == ["shop.tests.test_boom"]

    several = steps["several"]
    assert several["status"] == "failed"
    tests = several["details"]["tests"]
    assert (tests["tests"], tests["failures"], tests["errors"], tests["skipped"]) == (6, 0, 1, 1)
    assert [os.path.relpath(f, cli.cwd) for f in tests["files"]] == ["r3/a.xml", "r3/b.xml"]
    assert "shop.it.test_db" in several["error"]

    assert steps["invalid"]["status"] == "failed"
    assert "r4/bad.xml" in steps["invalid"]["error"]
    assert "XML" in steps["invalid"]["error"]

    assert steps["missing"]["status"] == "failed"
    assert "r5/*.xml" in steps["missing"]["error"]

    assert steps["folder"]["status"] == "failed"
    assert "r6/unit.xml is a folder" in steps["folder"]["error"]


# --- security_scan --------------------------------------------------------------------------------


def scan_step(step_id: str, source: str, fail_on: str | None = None, exit_code: int = 0) -> str:
    lines = [
        f"  - id: {step_id}",
        "    type: security_scan",
        "    needs: []",
        f'    run: mkdir -p {step_id} && cp "$DATA/{source}" {step_id}/report.json'
        + (f" && exit {exit_code}" if exit_code else ""),
        f"    report: {step_id}/report.json",
    ]
    if fail_on:
        lines.append(f"    fail_on: {fail_on}")
    return "\n".join(lines)


def findings(step: dict[str, Any]) -> dict[str, int]:
    return {k: v for k, v in step["details"]["scan"]["findings"].items() if v}


def test_security_scan_reports_and_threshold(cli: Cli) -> None:
    entries = [
        scan_step("levels", "levels.sarif"),
        scan_step("scores", "scores.sarif"),
        # bandit exits 1 when it finds something: the report decides, not the exit status.
        scan_step("bandit", "bandit.json", exit_code=1),
        scan_step("semgrep", "semgrep.json"),
        scan_step("trivy", "trivy.json"),
        scan_step("clean", "bandit_clean.json", fail_on="low"),
        scan_step("gate_high", "bandit.json", fail_on="high"),
        scan_step("gate_medium", "bandit_medium.json", fail_on="high"),
        "  - id: several\n    type: security_scan\n    needs: []\n"
        '    run: mkdir -p sev && cp "$DATA/bandit.json" "$DATA/trivy.json" sev/\n'
        '    report: "sev/*.json"',
        "  - {id: missing, type: security_scan, needs: [], run: 'true', report: nope/r.json}",
        "  - id: notjson\n    type: security_scan\n    needs: []\n"
        "    run: mkdir -p nj && echo 'scanner crashed, no report' > nj/r.json\n"
        "    report: nj/r.json",
    ]
    text = f"version: 1\nenv: {{DATA: '{DATA}'}}\nsteps:\n" + "\n".join(entries) + "\n"
    cli.write("p.yml", text)
    result = cli("run", "p.yml", "--output", "plain", "--concurrency", "4")
    assert result.code == 1, str(result)
    steps = steps_by_id(cli)

    assert findings(steps["levels"]) == {"high": 2, "medium": 2, "low": 1, "info": 1}
    assert steps["levels"]["details"]["scan"]["format"] == "sarif"
    assert findings(steps["scores"]) == {"critical": 2, "high": 2, "medium": 1, "low": 1}
    assert findings(steps["bandit"]) == {"high": 1, "medium": 2, "low": 1}
    assert steps["bandit"]["details"]["scan"]["format"] == "bandit"
    assert steps["bandit"]["status"] == "success"
    assert findings(steps["semgrep"]) == {"high": 1, "medium": 2, "info": 1}
    assert steps["semgrep"]["details"]["scan"]["format"] == "semgrep"
    assert findings(steps["trivy"]) == {"critical": 1, "high": 1, "medium": 2, "low": 1, "info": 1}
    assert steps["trivy"]["details"]["scan"]["format"] == "trivy"
    assert steps["trivy"]["details"]["scan"]["total"] == 6
    for step_id in ("levels", "scores", "semgrep", "trivy", "clean", "gate_medium"):
        assert steps[step_id]["status"] == "success", steps[step_id]
    # An empty bandit report (no findings yet "errors" and "metrics") is still read as bandit.
    clean = steps["clean"]["details"]["scan"]
    assert (clean["total"], clean["format"]) == (0, "bandit")

    several = steps["several"]["details"]["scan"]
    assert findings(steps["several"]) == {
        "critical": 1,
        "high": 2,
        "medium": 4,
        "low": 2,
        "info": 1,
    }
    assert several["format"] == "bandit, trivy"
    assert [os.path.relpath(r, cli.cwd) for r in several["reports"]] == [
        "sev/bandit.json",
        "sev/trivy.json",
    ]

    assert steps["gate_high"]["status"] == "failed"
    assert "1 findings at or above high" in steps["gate_high"]["error"]
    assert findings(steps["gate_medium"]) == {"medium": 1, "low": 1}

    assert steps["missing"]["status"] == "failed"
    assert "nope/r.json" in steps["missing"]["error"]
    assert "not found" in steps["missing"]["error"]
    assert steps["notjson"]["status"] == "failed"
    assert "nj/r.json" in steps["notjson"]["error"]
    assert "not JSON" in steps["notjson"]["error"]


# --- deploy ---------------------------------------------------------------------------------------


def test_deploy_copies_files_then_runs(cli: Cli) -> None:
    cli.write("build/app.txt", "app v1\n")
    cli.write("build/a.cfg", "a=1\n")
    cli.write("build/b.cfg", "b=2\n")
    cli.write("blocker", "a file where a folder should be\n")
    (cli.cwd / "out/existing").mkdir(parents=True)
    result = run(
        cli,
        """
        version: 1
        steps:
          - id: ship
            type: deploy
            files:
              - {src: build/app.txt, dest: out/app.txt}
              - {src: build/app.txt, dest: out/new/folder/}
              - {src: build/app.txt, dest: out/secret.txt, mode: "0640"}
              - {src: build/app.txt, dest: out/private.txt, mode: 0600}
              - {src: "build/*.cfg", dest: out/cfg/}
              - {src: build/app.txt, dest: out/existing}
            run: |
              test -f out/app.txt
              cat out/cfg/a.cfg out/cfg/b.cfg > out/ran.txt
          - id: toomany
            type: deploy
            needs: []
            files: [{src: "build/*.cfg", dest: out/one.cfg}]
          - id: nosource
            type: deploy
            needs: []
            files: [{src: build/missing.tar.gz, dest: out/}]
          - id: blocked
            type: deploy
            needs: []
            files: [{src: build/app.txt, dest: blocker/app.txt}]
          - id: install_fails
            type: deploy
            needs: []
            files: [{src: build/app.txt, dest: out2/}]
            run: exit 4
        """,
    )
    assert result.code == 1, str(result)
    steps = steps_by_id(cli)
    out = cli.cwd / "out"
    assert steps["ship"]["status"] == "success", steps["ship"]
    assert (out / "app.txt").read_text() == "app v1\n"
    assert (out / "new/folder/app.txt").read_text() == "app v1\n"
    assert stat.S_IMODE((out / "secret.txt").stat().st_mode) == 0o640
    assert stat.S_IMODE((out / "private.txt").stat().st_mode) == 0o600
    assert sorted(p.name for p in (out / "cfg").iterdir()) == ["a.cfg", "b.cfg"]
    assert (out / "existing/app.txt").read_text() == "app v1\n"
    assert (out / "ran.txt").read_text() == "a=1\nb=2\n"
    uploaded = steps["ship"]["details"]["files"]
    assert len(uploaded) == 7
    assert all(f["size"] == Path(f["src"]).stat().st_size for f in uploaded)

    assert steps["toomany"]["status"] == "failed"
    assert "matched 2 files" in steps["toomany"]["error"]
    assert not (out / "one.cfg").exists()
    assert steps["nosource"]["status"] == "failed"
    assert "build/missing.tar.gz" in steps["nosource"]["error"]
    blocked = steps["blocked"]
    assert blocked["status"] == "failed"
    assert "cannot copy" in blocked["error"] and "blocker" in blocked["error"], blocked["error"]
    assert "internal error" not in blocked["error"]
    assert steps["install_fails"]["status"] == "failed"
    assert steps["install_fails"]["exit_code"] == 4
    assert (cli.cwd / "out2/app.txt").is_file()


# --- notify ---------------------------------------------------------------------------------------


@dataclass
class Hook:
    """A webhook receiver on 127.0.0.1: paths starting with /fail answer HTTP 500."""

    url: str
    received: list[dict[str, Any]]


@pytest.fixture
def hook() -> Iterator[Hook]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            received.append(
                {
                    "path": self.path,
                    "content_type": self.headers.get("Content-Type"),
                    "body": json.loads(body),
                }
            )
            code = 500 if self.path.startswith("/fail") else 200
            self.send_response(code)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Hook(f"http://127.0.0.1:{server.server_address[1]}", received)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_notify_webhook_and_command(cli: Cli, hook: Hook) -> None:
    dead = f"http://127.0.0.1:{free_port()}/hook"
    result = run(
        cli,
        f"""
        version: 1
        name: shop
        vars: {{who: ops}}
        steps:
          - id: hook
            type: notify
            webhook: {hook.url}/hook
            message: >-
              ${{{{ pipeline.name }}}} run ${{{{ run.id }}}}
              is ${{{{ run.status }}}} for ${{{{ vars.who }}}}
          - id: cmd
            type: notify
            command: |
              printf '%s\\n' "$ANSFLOW_MESSAGE" > env.txt
              cat > stdin.txt
            message: "hello ${{{{ vars.who }}}}"
          - {{id: err500, type: notify, webhook: "{hook.url}/fail", needs: [cmd]}}
          - {{id: down, type: notify, webhook: "{dead}", needs: [err500],
              when: "${{{{ always() }}}}"}}
        """,
    )
    assert result.code == 1, str(result)
    steps = steps_by_id(cli)
    run_id = cli.show()["run"]["id"]
    assert steps["hook"]["status"] == "success"
    first = hook.received[0]
    assert first["path"] == "/hook"
    assert first["content_type"] == "application/json"
    assert first["body"] == {
        "pipeline": "shop",
        "run_id": run_id,
        "status": "success",
        "message": f"shop run {run_id} is success for ops",
    }
    assert steps["cmd"]["status"] == "success"
    assert (cli.cwd / "env.txt").read_text() == "hello ops\n"
    assert (cli.cwd / "stdin.txt").read_text() == "hello ops\n"

    assert steps["err500"]["status"] == "failed"
    assert f"{hook.url}/fail" in steps["err500"]["error"]
    assert "500" in steps["err500"]["error"]
    assert [r["path"] for r in hook.received] == ["/hook", "/fail"]
    assert hook.received[1]["body"]["message"] == "shop success"  # the default message
    assert steps["down"]["status"] == "failed"
    assert dead in steps["down"]["error"]
    assert "unreachable" in steps["down"]["error"]


def test_notify_webhook_that_never_answers_obeys_the_step_timeout(cli: Cli) -> None:
    # A listening socket that never accepts: the kernel completes the TCP handshake and takes
    # the request, and no answer ever comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        started = time.monotonic()
        result = run(
            cli,
            f"""
            version: 1
            steps:
              - {{id: hook, type: notify, webhook: "http://127.0.0.1:{port}/x", timeout: 1s}}
            """,
        )
        elapsed = time.monotonic() - started
    assert result.code == 1, str(result)
    step = steps_by_id(cli)["hook"]
    assert step["status"] == "timed_out", step
    # The webhook client's own timeout is 15 s; the step's 1 s must win.
    assert step["duration"] < 5, step
    assert elapsed < 10


def test_notify_always_reports_a_failed_run(cli: Cli, hook: Hook) -> None:
    result = run(
        cli,
        f"""
        version: 1
        name: nightly
        steps:
          - {{id: build, run: "exit 2"}}
          - {{id: after, run: "echo never"}}
          - id: announce
            type: notify
            when: ${{{{ always() }}}}
            webhook: {hook.url}/chat
            message: "${{{{ pipeline.name }}}}: ${{{{ run.status }}}}"
        """,
    )
    assert result.code == 1, str(result)
    assert cli.statuses() == {"build": "failed", "after": "skipped", "announce": "success"}
    assert len(hook.received) == 1
    body = hook.received[0]["body"]
    assert body["status"] == "failed"
    assert body["message"] == "nightly: failed"
    assert body["pipeline"] == "nightly"


# --- shell ----------------------------------------------------------------------------------------


def test_shell_interpreters_and_strict_mode(cli: Cli) -> None:
    sh_path = shutil.which("sh")
    assert sh_path is not None
    result = run(
        cli,
        """
        version: 1
        steps:
          - id: sh
            shell: sh
            needs: []
            run: |
              readlink /proc/$$/exe > sh.txt
              false
              echo "sh went on" > sh_after.txt
          - id: python
            shell: python3
            needs: []
            run: |
              import os, sys
              with open("py.txt", "w") as f:
                  f.write(f"{sys.version_info[0]} {os.environ['ANSFLOW_STEP_ID']}")
          - id: middle
            needs: []
            run: |
              echo one
              false
              echo three
          - id: pipe
            needs: []
            run: |
              false | cat
              echo after-pipe
          - id: bash
            needs: []
            run: |
              echo "$BASH_VERSION" > bash.txt
          - id: alias
            type: custom
            needs: []
            run: echo custom-ok
          - id: nointerp
            shell: no-such-interpreter --flag
            needs: []
            run: echo never
        """,
    )
    assert result.code == 1, str(result)
    steps = steps_by_id(cli)
    assert steps["sh"]["status"] == "failed"
    assert Path((cli.cwd / "sh.txt").read_text().strip()) == Path(os.path.realpath(sh_path))
    assert not (cli.cwd / "sh_after.txt").exists()
    assert steps["python"]["status"] == "success"
    assert (cli.cwd / "py.txt").read_text() == "3 python"
    assert steps["middle"]["status"] == "failed"
    assert steps["middle"]["exit_code"] == 1
    middle = logs(cli, "middle")
    assert "one" in middle and "three" not in middle
    assert steps["pipe"]["status"] == "failed"
    assert "after-pipe" not in logs(cli, "pipe")
    assert steps["bash"]["status"] == "success"
    assert (cli.cwd / "bash.txt").read_text().strip()
    assert steps["alias"]["status"] == "success"
    assert steps["alias"]["type"] in ("shell", "custom")
    assert "custom-ok" in logs(cli, "alias")
    assert steps["nointerp"]["status"] == "failed"
    assert "no-such-interpreter" in steps["nointerp"]["error"]
    assert "not found" in steps["nointerp"]["error"]


# --- paths --------------------------------------------------------------------------------------


def test_globs_work_in_a_project_folder_whose_name_has_glob_characters(cli: Cli) -> None:
    """Only the pattern is a glob: the pipeline's own folder `proj[1]` must be taken literally."""
    cli.write(
        "proj[1]/p.yml",
        f"""
        version: 1
        steps:
          - id: build
            type: build
            run: mkdir -p dist && printf 'x' > dist/a.bin
            artifacts: ["dist/*.bin"]
          - id: unit
            type: test
            run: |
              {heredoc("reports/unit.xml", PASSING_XML)}
            junit: ["reports/*.xml"]
          - id: scan
            type: security_scan
            run: cp "{DATA}/bandit_medium.json" bandit.json
            report: "*.json"
          - id: ship
            type: deploy
            files: [{{src: "dist/*.bin", dest: out/}}]
        """,
    )
    result = cli("run", "proj[1]/p.yml", "--output", "plain")
    assert result.code == 0, str(result)
    steps = steps_by_id(cli)
    assert steps["build"]["details"]["artifacts"][0]["path"] == str(cli.cwd / "proj[1]/dist/a.bin")
    assert steps["unit"]["details"]["tests"]["tests"] == 4
    assert steps["scan"]["details"]["scan"]["total"] == 2
    assert (cli.cwd / "proj[1]/out/a.bin").read_text() == "x"
