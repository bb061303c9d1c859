"""A script that is one plain command runs without bash around it, and nothing else changes.

The unit tests pin down which scripts qualify; the CLI tests check that a user sees the same
statuses, messages and output either way, and that the shell is still used wherever it matters.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ansflow.remote.direct import direct_argv
from tests.clihelp import Cli

ENV = {"PATH": "/usr/bin:/bin"}


@pytest.mark.parametrize(
    "script",
    [
        "/bin/true",
        "sleep 0.2",
        "  env  \n",
        "env --ignore-environment A=1 /bin/true",
        "ls -la /tmp/a,b/c:d@e%f+g",
    ],
)
def test_plain_commands_run_directly(script: str) -> None:
    assert direct_argv(script, None, ENV, None) == script.split()


@pytest.mark.parametrize(
    "script",
    [
        "echo hi",  # builtin
        "true",  # builtin, although /bin/true exists
        "exit 3",
        "cd /tmp",
        "if true",  # keyword
        "A=1 env",  # assignment
        "env $HOME",
        "env 'a b'",
        'env "a"',
        "env a\\ b",
        "ls *.txt",
        "ls a?",
        "ls [ab]",
        "ls a{b,c}",
        "ls ~",
        "env > out",
        "env < in",
        "env | cat",
        "env; env",
        "env && env",
        "env &",
        "env # comment",
        "env `id`",
        "env\nenv",
        "no-such-program-here",
        "",
        "   ",
        "env é",
    ],
)
def test_anything_the_shell_reads_goes_to_the_shell(script: str) -> None:
    assert direct_argv(script, None, ENV, None) is None


def test_other_shells_and_a_shell_changing_environment_go_to_the_shell() -> None:
    assert direct_argv("env", "sh", ENV, None) == ["env"]
    assert direct_argv("env", "bash", ENV, None) == ["env"]
    assert direct_argv("env", "python3", ENV, None) is None
    for name in ("BASH_ENV", "ENV", "SHELLOPTS", "BASHOPTS", "BASH_FUNC_env%%"):
        assert direct_argv("env", None, {**ENV, name: "x"}, None) is None, name
    assert direct_argv("env", None, {}, None) is None
    assert direct_argv("env", None, {"PATH": "bin:/usr/bin"}, None) is None
    assert direct_argv("env", None, {"PATH": ":/usr/bin"}, None) is None


def test_a_relative_program_is_looked_up_in_the_working_folder(tmp_path: Path) -> None:
    tool = tmp_path / "tool"
    tool.write_text("#!/bin/sh\n")
    assert direct_argv("./tool", None, ENV, str(tmp_path)) is None  # not executable
    tool.chmod(0o755)
    assert direct_argv("./tool -v", None, ENV, str(tmp_path)) == ["./tool", "-v"]
    assert direct_argv("./tool", None, ENV, str(tmp_path / "elsewhere")) is None


# --- through the CLI ------------------------------------------------------------------------------


def executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_a_plain_command_is_started_without_a_shell(cli: Cli) -> None:
    executable(cli.cwd / "parent", "#!/bin/sh\ntr '\\0' ' ' < /proc/$PPID/cmdline\necho\n")
    cli.write(
        "p.yml",
        """
        steps:
          - id: direct
            run: ./parent
          - id: shell
            run: ./parent && true
        """,
    )
    result = cli("run", "p.yml", "--output", "plain")
    assert result.code == 0, str(result)
    direct = cli("logs", "last", "direct").out
    shell = cli("logs", "last", "shell").out
    assert "ansflow" in direct and "bash" not in direct, direct
    assert "bash" in shell, shell


def test_statuses_and_messages_are_the_ones_bash_gives(cli: Cli) -> None:
    executable(cli.cwd / "killed", "#!/bin/sh\nkill -9 $$\n")
    executable(cli.cwd / "status", "#!/bin/sh\nexit 7\n")
    # NOTE: no #! line: execve refuses it (ENOEXEC) and bash runs it as a script itself.
    executable(cli.cwd / "noshebang", "echo ran as a script\n")
    cli.write(
        "p.yml",
        """
        steps:
          - {id: killed, run: ./killed, continue_on_error: true}
          - {id: status, run: ./status, continue_on_error: true}
          - {id: missing, run: no-such-program-anywhere, continue_on_error: true}
          - {id: noshebang, run: ./noshebang}
        """,
    )
    result = cli("run", "p.yml", "--output", "plain")
    assert result.code == 0, str(result)
    steps = {s["step"]: s for s in cli.show()["steps"]}
    assert steps["killed"]["exit_code"] == 137
    assert steps["killed"]["error"] == "script exited with status 137"
    assert steps["status"]["exit_code"] == 7
    assert steps["missing"]["exit_code"] == 127
    assert "command not found" in cli("logs", "last", "missing").out
    assert steps["noshebang"]["status"] == "success"
    assert "ran as a script" in cli("logs", "last", "noshebang").out


def test_outputs_workdir_and_environment_reach_a_direct_command(cli: Cli) -> None:
    work = cli.cwd / "work"
    work.mkdir()
    executable(
        work / "emit",
        '#!/bin/sh\necho "where=$(pwd)" >> "$ANSFLOW_OUTPUT"\necho "step=$ANSFLOW_STEP_ID"\n',
    )
    cli.write(
        "p.yml",
        """
        steps:
          - id: emit
            workdir: work
            run: ./emit
          - id: use
            run: echo "got ${{ steps.emit.outputs.where }}"
        """,
    )
    result = cli("run", "p.yml", "--output", "plain")
    assert result.code == 0, str(result)
    assert "step=emit" in cli("logs", "last", "emit").out
    assert f"got {work.resolve()}" in cli("logs", "last", "use").out


def test_bash_env_still_applies(cli: Cli, tmp_path: Path) -> None:
    rc = tmp_path / "bashenv"
    rc.write_text("echo from-bash-env\n")
    cli.write("p.yml", "steps:\n  - {id: s, run: /bin/true}\n")
    result = cli("run", "p.yml", "--output", "plain", env={"BASH_ENV": str(rc)})
    assert result.code == 0, str(result)
    assert "from-bash-env" in cli("logs", "last", "s").out


def test_a_command_that_closes_its_output_early_is_not_killed(cli: Cli) -> None:
    cli.write(
        "p.yml",
        """
        steps:
          - id: quiet
            run: |
              echo before
              exec >/dev/null 2>&1
              sleep 0.5
              touch finished
        """,
    )
    result = cli("run", "p.yml", "--output", "plain")
    assert result.code == 0, str(result)
    assert (cli.cwd / "finished").exists()
    assert "before" in cli("logs", "last", "quiet").out


def test_local_scripts_share_one_private_folder_that_comes_back_if_removed(tmp_path: Path) -> None:
    import shutil

    from ansflow.cancel import CancelScope
    from ansflow.remote.base import Script
    from ansflow.remote.local import LocalRunner

    runner = LocalRunner()
    lines: list[str] = []
    script = Script(
        text='echo "n=$ANSFLOW_OUTPUT" >> "$ANSFLOW_OUTPUT"; echo "$(dirname "$0")"',
        shell=None,
        env={"PATH": os.environ["PATH"]},
        workdir=str(tmp_path),
    )
    first = runner.run_script(script, lambda _stream, text: lines.append(text), CancelScope())
    folder = Path(lines[-1])
    assert first.status == 0 and first.outputs is not None
    assert first.outputs.decode().startswith(f"n={folder}/")
    assert folder.stat().st_mode & 0o777 == 0o700
    assert list(folder.iterdir()) == []  # the attempt's files went with it
    shutil.rmtree(folder)  # what a cleaner of /tmp may do during a long run
    second = runner.run_script(script, lambda _stream, text: lines.append(text), CancelScope())
    assert second.status == 0 and Path(lines[-1]) != folder and Path(lines[-1]).is_dir()
    runner.close()
    assert not Path(lines[-1]).exists()
