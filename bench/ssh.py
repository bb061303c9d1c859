"""SSH benchmark: ansflow on a fleet of real sshd servers, against Fabric and Ansible.

    python bench/ssh.py               # full run: 1 warm-up, 3 interleaved rounds, medians
    python bench/ssh.py --repeat 7    # more rounds
    python bench/ssh.py --quick       # smoke run: 4 hosts, 3 steps, 1 round, no warm-up
    python bench/ssh.py --keep        # keep the generated files (servers are stopped anyway)

The hosts are real `sshd -D` servers on 127.0.0.1, started with the test suite's own fixture
(`tests.ssh_fixtures.SSHFixture`): its keys, known_hosts and ssh_config (`Host host0..hostN`) are
what every tool uses, with strict host key checking everywhere.

A. `echo ok` once on 20 hosts.
   * ansflow: one step on an ssh target of the 20 hosts, `forks: 20`,
     `ansflow run a.yml --output plain --quiet --db <tmp>`.
   * Fabric: a script (run as its own `python` process, as a user would) with one
     `ThreadingGroup` of the 20 hosts built from the fixture's ssh_config; `group.run("echo ok")`.
     Fabric's default policy accepts any host key, so the script loads the fixture's known_hosts
     and sets paramiko's `RejectPolicy` (strict, like the others).
   * `ansible all -m command -a 'echo ok' -f 20` (ad-hoc) and `ansible-playbook -f 20 -v` with a
     one-task play (`command: echo ok`, `gather_facts` left at its default, so facts are
     gathered). Settings are Ansible's defaults (`ANSIBLE_HOST_KEY_CHECKING=True`, no pipelining,
     the default `ControlMaster=auto ControlPersist=60s`); the inventory passes the fixture's
     ssh_config with `ansible_ssh_common_args=-F ...`. `-v` only makes the playbook print each
     task's stdout, so the check below can see `ok`.
B. 10 steps of `echo ok` one after the other on 10 hosts.
   * ansflow: one pipeline of 10 sequential steps on a 10-host target (one connection per host,
     reused by every step).
   * Fabric: one `ThreadingGroup`, 10 sequential `group.run` calls (connections reused).
   * `ansible-playbook` with 10 tasks; and, as a context row, 10 `ansible` ad-hoc runs in a row.

Targets: ansflow no slower than Fabric; at least 6x faster than `ansible` ad-hoc; at least 25x
faster than `ansible-playbook` (checked on case A; case B is reported against the same limits).

Ansible's default ControlPersist keeps each host's master connection open for 60 s after a run,
so a run that follows another within a minute (every timed round here) reuses the connections.
The main Ansible rows are these "warm" runs, which is what the targets are checked against (the
stricter choice). The "cold" rows give each run a new, empty ControlPath folder, as the first run
of the day would see.

Every run's result is checked after the clock stops, so a failure is never timed as a success:
exit status 0, and `ok` from every host (every step and host for ansflow, read back from the
run's rows in its database: the run is new, `success`, and each step instance logged `ok`).

Everything is generated in a fresh temporary folder, removed at the end. The servers are always
stopped (by pid) in a `finally`, and Ansible's leftover ControlPersist masters are told to exit.
Exit status is always 0: this is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, MutableMapping, Sequence
from pathlib import Path
from typing import Any

from common import (  # bench/ is sys.path[0] when run as `python bench/ssh.py`
    REPO_DIR,
    Case,
    OutputCheck,
    Result,
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
    run_checked_cases,
    scratch_dir,
    which,
)

VENV_BIN = Path(sys.executable).parent
FABRIC_LIMIT = 1.0  # ansflow / Fabric
ADHOC_SPEEDUP = 6.0  # ansible ad-hoc / ansflow
PLAYBOOK_SPEEDUP = 25.0  # ansible-playbook / ansflow
ADHOC_ARGS = ("-m", "command", "-a", "echo ok")

FABRIC_SCRIPT = '''\
"""Fabric baseline: `echo ok` STEPS times on every host, one ThreadingGroup, connections reused."""

import sys

from fabric import Config, ThreadingGroup
from paramiko import RejectPolicy

ssh_config, known_hosts, steps, *hosts = sys.argv[1:]
group = ThreadingGroup(*hosts, config=Config(runtime_ssh_path=ssh_config))
for conn in group:
    # Fabric's default is paramiko's AutoAddPolicy; be as strict as the other tools.
    conn.client.load_host_keys(known_hosts)
    conn.client.set_missing_host_key_policy(RejectPolicy())
try:
    for step in range(int(steps)):
        results = group.run("echo ok", hide=True)  # raises GroupException if any host fails
        for conn, result in results.items():
            print(f"{step} {conn.original_host}: {result.stdout.strip()}")
finally:
    group.close()
'''


# --- generated files -----------------------------------------------------------------------------


def write_ansflow_pipeline(
    path: Path, ssh_config: Path, known_hosts: Path, hosts: Sequence[str], steps: int
) -> list[str]:
    """A pipeline of `steps` sequential `echo ok` steps on one ssh target; returns the step ids."""
    ids = ["echo"] if steps == 1 else [f"s{i}" for i in range(1, steps + 1)]
    lines = [
        "version: 1",
        f"name: bench-ssh-{len(hosts)}x{steps}",
        "targets:",
        "  fleet:",
        "    type: ssh",
        f"    hosts: {json.dumps(list(hosts))}",
        f"    ssh_config: {json.dumps(str(ssh_config))}",
        f"    known_hosts_file: {json.dumps(str(known_hosts))}",
        "    known_hosts: strict",
        f"    forks: {len(hosts)}",
        "steps:",
    ]
    for step_id in ids:
        lines += [f"  - id: {step_id}", "    on: fleet", "    run: echo ok"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return ids


def write_inventory(path: Path, ssh_config: Path, hosts: Sequence[str]) -> None:
    lines = ["[bench]", *hosts, "", "[bench:vars]"]
    lines.append(f"ansible_ssh_common_args='-F {ssh_config}'")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_playbook(path: Path, tasks: int) -> None:
    lines = ["- name: bench", "  hosts: all", "  tasks:"]
    for i in range(1, tasks + 1):
        lines += [f"    - name: echo {i}", "      ansible.builtin.command: echo ok"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# --- checks: did every host really answer? -------------------------------------------------------


def _text(proc: subprocess.CompletedProcess[bytes]) -> str:
    return proc.stdout.decode(errors="replace")


def _fail(what: str, proc: subprocess.CompletedProcess[bytes], problems: list[str]) -> None:
    tail = (_text(proc) + proc.stderr.decode(errors="replace")).strip().splitlines()[-8:]
    raise RuntimeError(
        f"{what}: exit 0 but {'; '.join(problems[:5])}" + "".join(f"\n    {t}" for t in tail)
    )


def check_ansflow(db: Path, steps: Sequence[str], hosts: Sequence[str]) -> OutputCheck:
    """The newest run in `db` is new, `success`, and every (step, host) succeeded and logged ok."""
    seen = {"run": 0}

    def check(proc: subprocess.CompletedProcess[bytes]) -> None:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            run_id, status = con.execute(
                "select id, status from runs order by id desc limit 1"
            ).fetchone()
            rows = con.execute(
                "select step, host, status, exit_code from steps where run_id = ?", (run_id,)
            ).fetchall()
            oks = con.execute(
                "select distinct step, host from logs"
                " where run_id = ? and stream = 'stdout' and line = 'ok'",
                (run_id,),
            ).fetchall()
        finally:
            con.close()
        problems = []
        if run_id <= seen["run"]:
            problems.append(f"no new run in {db} (newest is {run_id})")
        seen["run"] = run_id
        if status != "success":
            problems.append(f"run {run_id} is {status}")
        want = {(s, h) for s in steps for h in hosts}
        good = {(s, h) for s, h, st, code in rows if st == "success" and code == 0}
        if good != want:
            problems.append(f"steps not success: {sorted(want - good)[:5]}")
        if set(oks) != want:
            problems.append(f"no 'ok' logged by: {sorted(want - set(oks))[:5]}")
        if problems:
            _fail("ansflow", proc, problems)

    return check


def check_fabric(steps: int, hosts: Sequence[str]) -> OutputCheck:
    def check(proc: subprocess.CompletedProcess[bytes]) -> None:
        lines = set(_text(proc).splitlines())
        missing = [f"{s} {h}" for s in range(steps) for h in hosts if f"{s} {h}: ok" not in lines]
        if missing:
            _fail("fabric", proc, [f"no ok from {missing[:5]}"])

    return check


def check_adhoc(times: int, hosts: Sequence[str]) -> OutputCheck:
    """`hostN | CHANGED | rc=0 >>` followed by `ok`, `times` times per host."""

    def check(proc: subprocess.CompletedProcess[bytes]) -> None:
        text = _text(proc)
        short = [
            h
            for h in hosts
            if len(re.findall(rf"^{re.escape(h)} \| CHANGED \| rc=0 >>\nok$", text, re.M)) != times
        ]
        if short:
            _fail("ansible", proc, [f"not {times} x ok from {short[:5]}"])

    return check


def check_playbook(tasks: int, hosts: Sequence[str]) -> OutputCheck:
    """With -v each task prints `changed: [hostN] => {... "stdout": "ok" ...}`; the recap agrees."""

    def check(proc: subprocess.CompletedProcess[bytes]) -> None:
        text = _text(proc)
        problems = []
        for h in hosts:
            results = re.findall(rf"^changed: \[{re.escape(h)}\] => (.*)$", text, re.M)
            if sum('"stdout": "ok"' in r for r in results) != tasks:
                problems.append(f"not {tasks} x ok from {h}")
            recap = re.search(rf"^{re.escape(h)}\s+: (.*)$", text, re.M)
            if not recap or not re.search(rf"changed={tasks}\b.*unreachable=0 +failed=0", recap[1]):
                problems.append(f"recap of {h}: {recap[1] if recap else 'missing'}")
        if problems:
            _fail("ansible-playbook", proc, problems)

    return check


# --- the servers and Ansible's control masters ---------------------------------------------------


def stop_control_masters(root: Path, ssh: str | None) -> None:
    """Ask every ControlPersist master whose socket is under `root` to exit (`ssh -O exit`)."""
    if ssh is None or not root.exists():
        return
    for path in root.rglob("*"):
        with contextlib.suppress(OSError):
            if stat.S_ISSOCK(path.lstat().st_mode):
                subprocess.run(
                    [ssh, "-o", f"ControlPath={path}", "-O", "exit", "bench-host"],
                    capture_output=True,
                    timeout=10,
                    check=False,
                )


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat: tells a process from a later one that reused its pid."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def server_processes(servers: Sequence[Any]) -> dict[int, str]:
    """Every process of the running servers (listeners, connections, sessions), by pid."""
    found: dict[int, str] = {}
    for server in servers:
        for pid in server.processes():
            started = _start_time(pid)
            if started is not None:
                found[pid] = started
    return found


def kill_leftovers(snapshot: dict[int, str]) -> list[int]:
    """SIGKILL the processes of `snapshot` still alive (and still the same process).

    The fixture finds a server's sessions by a token in their environment, but once the listener
    is gone a `sshd: user@notty` process whose environment was overwritten by its process title
    escapes it (it stays while Ansible's ControlPersist master keeps the connection open).
    """
    killed = []
    for pid, started in snapshot.items():
        if _start_time(pid) == started:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
    return killed


def new_control_dir(env: MutableMapping[str, str], root: Path) -> Callable[[int], None]:
    """A prepare hook giving every run an empty ControlPath folder: a cold Ansible."""

    def prepare(_run_index: int) -> None:
        root.mkdir(parents=True, exist_ok=True)
        env["ANSIBLE_SSH_CONTROL_PATH_DIR"] = tempfile.mkdtemp(prefix="cold-", dir=root)

    return prepare


def _sigterm(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # so the `finally` stops the servers


# --- reporting -----------------------------------------------------------------------------------


def speedup_target(label: str, ansflow: Result, other: Result, speedup: float) -> Verdict:
    """ansflow at least `speedup` times faster than `other` (ratio ansflow/other <= 1/speedup)."""
    verdict = check_target(label, ansflow, other, limit=1.0 / speedup)
    if ansflow.ok and other.ok:
        print(
            f"               {other.name} takes {other.median / ansflow.median:.1f}x as long as "
            f"ansflow (target: at least {speedup:g}x)"
        )
    return verdict


# --- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds (median is reported)")
    parser.add_argument("--quick", action="store_true", help="smoke run: small sizes, 1 round")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined,union-attr]
    signal.signal(signal.SIGTERM, _sigterm)

    hosts_a, hosts_b, steps_b = (4, 3, 3) if args.quick else (20, 10, 10)
    repeat = 1 if args.quick else max(1, args.repeat)
    warmup = not args.quick

    sys.path.insert(0, str(REPO_DIR))
    from tests.ssh_fixtures import SSHFixture, find_sshd

    ansflow = which("ansflow", prefer=VENV_BIN)
    ansible = which("ansible", prefer=VENV_BIN)
    playbook = which("ansible-playbook", prefer=VENV_BIN)
    sshd, ssh = find_sshd(), which("ssh")
    python = sys.executable
    if ansflow is None or sshd is None:
        print("ansflow or sshd is missing; nothing to measure")
        return 0
    fabric_version = command_version(
        [python, "-c", "import fabric, paramiko; print(fabric.__version__, paramiko.__version__)"]
    )

    print_header(
        "ansflow SSH benchmark"
        + (" (QUICK smoke run: sizes reduced, 1 round)" if args.quick else ""),
        {
            "ansflow": f"{command_version([ansflow, '--version'])} ({ansflow})",
            "fabric": f"fabric, paramiko {fabric_version}",
            "ansible": command_version([ansible, "--version"]) if ansible else "not found",
            "sshd": command_version([sshd, "-V"]) + f" ({sshd})",
            "command": shlex.join([sys.executable, *sys.argv]),
            "bytecode": compile_bytecode(ansflow),
            "rounds": f"{repeat} timed (median reported)" + (", after 1 warm-up" if warmup else ""),
        },
    )

    work = scratch_dir("ansflow-bench-ssh-")
    verdicts: list[Verdict] = []
    fixture = None
    try:
        print(f"starting {hosts_a} sshd servers on 127.0.0.1 ...", flush=True)
        fixture = SSHFixture(work / "sshd", sshd)
        servers = fixture.start(hosts_a)
        names = [s.name for s in servers]
        print(f"  {', '.join(f'{s.name}={s.port}' for s in servers)}")
        print()
        ssh_config, known_hosts = fixture.ssh_config_path, fixture.known_hosts_path

        fab_script = work / "fab_echo.py"
        fab_script.write_text(FABRIC_SCRIPT, encoding="utf-8")
        ansible_home = work / "ansible-home"
        ansible_env = {
            "ANSIBLE_HOST_KEY_CHECKING": "True",
            # only where Ansible keeps its files: out of ~/.ansible, into the temp folder
            "ANSIBLE_HOME": str(ansible_home),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(work / "cp" / "warm"),
            "ANSIBLE_REMOTE_TMP": str(work / "ansible-remote-tmp"),
            "ANSIBLE_NOCOLOR": "1",
        }

        def ansflow_case(name: str, pipeline: Path, note: str = "") -> Case:
            db = work / f"db-{pipeline.stem}" / "state.db"
            db.parent.mkdir()
            argv = [ansflow, "run", str(pipeline), "--output", "plain", "--quiet", "--db", str(db)]
            return Case(name, argv, cwd=work, note=note)

        def ansible_cases(
            name: str, argv: list[str], check: OutputCheck, checks: dict[str, OutputCheck]
        ) -> list[Case]:
            cases = [Case(name, argv, cwd=work, env=dict(ansible_env))]
            checks[name] = check
            if not args.quick:
                cold_env = dict(ansible_env)
                cold = f"{name}, cold"
                cases.append(
                    Case(
                        cold,
                        argv,
                        cwd=work,
                        env=cold_env,
                        prepare=new_control_dir(cold_env, work / "cp"),
                        note="new ControlPath folder each run",
                    )
                )
                checks[cold] = check
            return cases

        # A. one command on every host ---------------------------------------------------------
        print(f"[A] echo ok once on {hosts_a} hosts")
        a_yml = work / "a.yml"
        a_steps = write_ansflow_pipeline(a_yml, ssh_config, known_hosts, names, 1)
        inv_a, play_a = work / "inventory-a.ini", work / "play-a.yml"
        write_inventory(inv_a, ssh_config, names)
        write_playbook(play_a, 1)
        a_ansflow = ansflow_case("ansflow", a_yml)
        a_checks: dict[str, OutputCheck] = {
            "ansflow": check_ansflow(Path(a_ansflow.argv[-1]), a_steps, names),
            "fabric ThreadingGroup": check_fabric(1, names),
        }
        a_cases = [
            a_ansflow,
            Case(
                "fabric ThreadingGroup",
                [python, str(fab_script), str(ssh_config), str(known_hosts), "1", *names],
                cwd=work,
            ),
        ]
        if ansible:
            a_cases += ansible_cases(
                "ansible ad-hoc",
                [ansible, "all", "-i", str(inv_a), "-f", str(hosts_a), *ADHOC_ARGS],
                check_adhoc(1, names),
                a_checks,
            )
        if playbook:
            a_cases += ansible_cases(
                "ansible-playbook",
                [playbook, "-i", str(inv_a), "-f", str(hosts_a), "-v", str(play_a)],
                check_playbook(1, names),
                a_checks,
            )
        a_cases += [
            Case("ansflow --version", [ansflow, "--version"], cwd=work, note="start-up only"),
            Case(
                "python -c 'import fabric'",
                [python, "-c", "import fabric"],
                cwd=work,
                note="Fabric's start-up only",
            ),
        ]
        res_a = run_checked_cases(a_cases, a_checks, repeat=repeat, warmup=warmup)
        print_table(res_a, baseline="ansflow")
        verdicts += report_targets("A", res_a)
        print()

        # B. a sequence of steps on every host -------------------------------------------------
        names_b = names[:hosts_b]
        print(f"[B] {steps_b} steps of echo ok, one after the other, on {hosts_b} hosts")
        b_yml = work / "b.yml"
        b_steps = write_ansflow_pipeline(b_yml, ssh_config, known_hosts, names_b, steps_b)
        inv_b, play_b = work / "inventory-b.ini", work / "play-b.yml"
        write_inventory(inv_b, ssh_config, names_b)
        write_playbook(play_b, steps_b)
        b1_yml = work / "b1.yml"
        b1_steps = write_ansflow_pipeline(b1_yml, ssh_config, known_hosts, names_b, 1)
        b_ansflow = ansflow_case("ansflow", b_yml)
        b1_ansflow = ansflow_case("ansflow, 1 step", b1_yml, note="to split off the per-step cost")
        fab_argv = [python, str(fab_script), str(ssh_config), str(known_hosts)]
        b_checks: dict[str, OutputCheck] = {
            "ansflow": check_ansflow(Path(b_ansflow.argv[-1]), b_steps, names_b),
            "fabric ThreadingGroup": check_fabric(steps_b, names_b),
            "ansflow, 1 step": check_ansflow(Path(b1_ansflow.argv[-1]), b1_steps, names_b),
            "fabric, 1 step": check_fabric(1, names_b),
        }
        b_cases = [
            b_ansflow,
            Case("fabric ThreadingGroup", [*fab_argv, str(steps_b), *names_b], cwd=work),
        ]
        if playbook:
            b_cases += ansible_cases(
                "ansible-playbook",
                [playbook, "-i", str(inv_b), "-f", str(hosts_b), "-v", str(play_b)],
                check_playbook(steps_b, names_b),
                b_checks,
            )
        if ansible:
            one = [ansible, "all", "-i", str(inv_b), "-f", str(hosts_b), *ADHOC_ARGS]
            b_cases.append(
                Case(
                    f"ansible ad-hoc x{steps_b}",
                    ["bash", "-ec", f"for i in $(seq {steps_b}); do {shlex.join(one)}; done"],
                    cwd=work,
                    env=dict(ansible_env),
                    note=f"{steps_b} runs in a row",
                )
            )
            b_checks[f"ansible ad-hoc x{steps_b}"] = check_adhoc(steps_b, names_b)
        b_cases += [
            b1_ansflow,
            Case(
                "fabric, 1 step",
                [*fab_argv, "1", *names_b],
                cwd=work,
                note="to split off the per-step cost",
            ),
        ]
        res_b = run_checked_cases(b_cases, b_checks, repeat=repeat, warmup=warmup)
        print_table(res_b, baseline="ansflow")
        verdicts += report_targets("B", res_b, adhoc=f"ansible ad-hoc x{steps_b}")
        for tool, full, single in (
            ("ansflow", "ansflow", "ansflow, 1 step"),
            ("fabric ", "fabric ThreadingGroup", "fabric, 1 step"),
        ):
            many, first = res_b[full], res_b[single]
            if many.ok and first.ok and steps_b > 1:
                per_step = (many.median - first.median) / (steps_b - 1)
                print(
                    f"  {tool}: {fmt_seconds(first.median)} for 1 step on {hosts_b} hosts, then "
                    f"{fmt_seconds(per_step)} per further step"
                )
        print()
    finally:
        stop_control_masters(work, ssh)
        if fixture is not None:
            snapshot = server_processes(fixture.servers)
            fixture.stop_all()
            leftovers = kill_leftovers(snapshot)
            if leftovers:
                print(f"killed {len(leftovers)} server processes the fixture missed: {leftovers}")
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


def report_targets(
    case: str, results: dict[str, Result], *, adhoc: str = "ansible ad-hoc"
) -> list[Verdict]:
    ansflow = results["ansflow"]
    verdicts = []
    fabric = results.get("fabric ThreadingGroup")
    if fabric is not None:
        verdicts.append(
            check_target(f"{case}: ansflow no slower than Fabric", ansflow, fabric, limit=1.0)
        )
    for name, speedup in ((adhoc, ADHOC_SPEEDUP), ("ansible-playbook", PLAYBOOK_SPEEDUP)):
        for row in (name, f"{name}, cold"):
            other = results.get(row)
            if other is None:
                continue
            label = f"{case}: ansflow at least {speedup:g}x faster than {row}"
            if row.endswith("cold"):
                label += " (context)"
            verdict = speedup_target(label, ansflow, other, speedup)
            if not row.endswith("cold"):
                verdicts.append(verdict)
    return verdicts


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
