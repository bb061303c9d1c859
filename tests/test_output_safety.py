"""What a step prints reaches the user and the database only as text: secrets masked even where a
long line is cut, no markup or escape codes taking effect, and a closed stdout never stops a run."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.clihelp import Cli, run_in_pty
from tests.ssh_fixtures import SSHFixture
from tests.test_ssh_pipeline import target_block

SECRET = "TOPSECRETVALUE123"
LIMIT = 64 * 1024

#: Lines whose secret crosses the 64 KiB cut at different places, one of them arriving in two
#: writes with the secret's first half at the end of the first.
LONG_LINES = (
    "import os, sys, time\n"
    "s = os.environ['S1']\n"
    "for k in (1, 6, 16):\n"
    f"    sys.stdout.write('x' * ({LIMIT} - k) + s + '\\n')\n"
    "sys.stdout.flush()\n"
    f"sys.stdout.write('x' * {LIMIT - 6} + s[:10])\n"
    "sys.stdout.flush()\n"
    "time.sleep(0.3)\n"
    "sys.stdout.write(s[10:] + '\\n')\n"
)


def _long_line_pipeline(cli: Cli, on: str = "") -> None:
    cli.write("long.py", LONG_LINES)
    step = f"    on: {on}\n" if on else ""
    cli.write(
        "p.yml",
        "secrets: [S1]\n"
        + "steps:\n"
        + "  - id: long\n"
        + step
        + f"    run: python3 {cli.cwd / 'long.py'}\n",
    )


def _assert_masked_pieces(cli: Cli) -> None:
    result = cli("run", "p.yml", "-o", "json", env={"S1": SECRET})
    assert result.code == 0, result
    texts = [e["text"] for e in result.json_lines() if e["event"] == "log"]
    assert "".join(texts).count("***") == 4, [t[-30:] for t in texts]
    for text in texts:
        assert set(text) <= {"x", "*"}, text[-30:]
        assert len(text.encode()) <= LIMIT
    logs = cli("logs", "last")
    assert "TOPSEC" not in logs.out and "E123" not in logs.out
    raw = b"".join(p.read_bytes() for p in cli.db.parent.glob("state.db*"))
    assert b"TOPSEC" not in raw and b"VALUE123" not in raw


def test_a_secret_is_masked_where_a_long_line_is_cut(cli: Cli) -> None:
    _long_line_pipeline(cli)
    _assert_masked_pieces(cli)


@pytest.mark.ssh
def test_a_secret_is_masked_where_a_long_line_is_cut_on_ssh(
    cli: Cli, sshd_hosts_session: SSHFixture
) -> None:
    sshd_hosts_session(1)
    _long_line_pipeline(cli, on="fleet")
    text = (cli.cwd / "p.yml").read_text()
    (cli.cwd / "p.yml").write_text(target_block(sshd_hosts_session, ["host0"]) + text)
    _assert_masked_pieces(cli)


def test_a_long_line_is_never_cut_inside_a_utf8_character(cli: Cli) -> None:
    cli.write(
        "p.yml",
        f"""
        steps:
          - id: wide
            run: python3 -c 'import sys; sys.stdout.write("x" * {LIMIT - 1} + "é" * 3 + "\\n")'
        """,
    )
    result = cli("run", "p.yml", "-o", "json")
    assert result.code == 0, result
    texts = [e["text"] for e in result.json_lines() if e["event"] == "log"]
    assert len(texts) == 2
    assert "".join(texts) == "x" * (LIMIT - 1) + "ééé"
    assert "\ufffd" not in "".join(texts)


def test_output_names_holding_a_secret_are_masked(cli: Cli) -> None:
    cli.write(
        "p.yml",
        """
        secrets: [S1]
        steps:
          - id: key
            run: 'echo "${S1}=x" >> "$ANSFLOW_OUTPUT"'
        """,
    )
    result = cli("run", "p.yml", "-o", "json", env={"S1": SECRET})
    assert result.code == 0, result
    assert SECRET not in result.out + result.err
    finished = [e for e in result.json_lines() if e["event"] == "step_finished"]
    assert finished[0]["outputs"] == {"***": "x"}
    shown = cli("show", "last")
    assert "***=x" in shown.out and SECRET not in shown.out
    assert SECRET not in cli("show", "last", "--json").out
    raw = b"".join(p.read_bytes() for p in cli.db.parent.glob("state.db*"))
    assert SECRET.encode() not in raw


ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")


@pytest.mark.parametrize("quiet", [False, True])
def test_tty_shows_markup_like_text_as_it_is(cli: Cli, quiet: bool) -> None:
    cli.write(
        "p.yml",
        """
        vars:
          x: "[/b]"
        steps:
          - id: test
            matrix:
              py: ["3.11", "a[/i]"]
            run: 'echo "[bold]hi[/bold] [/x]"'
          - id: cond
            when: "${{ vars.x == '[/b]' }}"
            run: 'printf "\\033]0;pwned\\007"; echo "[/red] boom"; exit 1'
        """,
    )
    args = ["run", "p.yml", "-o", "tty"] + (["--quiet"] if quiet else [])
    code, screen = run_in_pty(cli, args, colour=True)
    assert code == 1, screen
    assert "MarkupError" not in screen and "internal error" not in screen
    assert "\x1b]0;" not in screen  # a step cannot set the terminal's title
    text = ANSI.sub("", screen)
    assert "[/red] boom" in text  # the failure's last lines
    assert "cond" in text
    if not quiet:
        assert "test[py=3.11]" in text and "test[py=a[/i]]" in text


@pytest.mark.parametrize(
    ("output", "env"),
    [("plain", {}), ("json", {}), ("plain", {"ANSFLOW_NO_FAST_EXIT": "1"})],
)
def test_a_closed_stdout_does_not_stop_the_run(
    cli: Cli, procs: list[subprocess.Popen[str]], output: str, env: dict[str, str]
) -> None:
    cli.write(
        "p.yml",
        """
        steps:
          - id: a
            run: echo one; echo two; sleep 1; echo three
          - id: b
            run: echo bee; exit 4
        """,
    )
    proc = cli.popen("run", "p.yml", "-o", output, env=env)
    procs.append(proc)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline()  # like `| head -1`: one line, then the pipe is closed
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 1, err  # the run's own status: b failed
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert len(err.splitlines()) <= 1, err
    assert cli.statuses() == {"a": "success", "b": "failed"}
    assert cli.show()["run"]["status"] == "failed"
    assert "bee" in cli("logs", "last", "b").out


def test_plain_output_leaves_out_a_steps_escape_codes(cli: Cli) -> None:
    cli.write(
        "p.yml",
        """
        steps:
          - id: colours
            run: 'printf "\\033[31mred\\033[0m\\tx\\033]0;title\\007 \\007bell\\n"; exit 1'
        """,
    )
    for args in (["-o", "plain"], ["-o", "plain", "--quiet"]):
        result = cli("run", "p.yml", *args)
        assert result.code == 1, result
        assert "\x1b" not in result.out and "\x07" not in result.out, repr(result.out)
        assert "red\tx bell" in result.out
