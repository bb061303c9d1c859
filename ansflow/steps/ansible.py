"""`ansible`: run `ansible-playbook` on this machine against the step's SSH target.

The inventory is generated from the target (its hosts, inventory variables and connection
settings), so a playbook reaches exactly the hosts an `ssh` step on the same target would, with the
same host key policy.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from ansflow.model import AnsibleStep, SSHTarget
from ansflow.steps.base import StepContext, StepError, StepResult, StepType, register

#: Inventory variables ansflow sets itself; a host's own value for them is replaced.
CONNECTION_VARS = ("ansible_host", "ansible_port", "ansible_user")


def find_playbook_command() -> str | None:
    """$ANSFLOW_ANSIBLE_PLAYBOOK, ansible-playbook on PATH, or next to this Python (a virtualenv
    that is not on PATH)."""
    chosen = os.environ.get("ANSFLOW_ANSIBLE_PLAYBOOK")
    if chosen:
        return chosen if shutil.which(chosen) else None
    found = shutil.which("ansible-playbook")
    if found:
        return found
    sibling = Path(sys.executable).parent / "ansible-playbook"
    return str(sibling) if sibling.exists() else None


def _ssh_args(spec: SSHTarget, settings: Any) -> str:
    """Options for ansible's ssh connection that mirror the target's host key policy."""
    options: list[str] = []
    if settings.ssh_config:
        options += ["-F", os.path.expanduser(settings.ssh_config)]
    if spec.known_hosts == "off":
        options += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
    else:
        policy = "yes" if spec.known_hosts == "strict" else "accept-new"
        options += ["-o", f"StrictHostKeyChecking={policy}"]
        if settings.known_hosts_file:
            options += ["-o", f"UserKnownHostsFile={os.path.expanduser(settings.known_hosts_file)}"]
    return " ".join(options)


def inventory_for(hosts: list[Any], spec: SSHTarget, settings: Any) -> dict[str, Any]:
    """An Ansible YAML inventory (written as JSON, which YAML reads) for the target's hosts."""
    entries: dict[str, Any] = {}
    for host in hosts:
        values = {k: v for k, v in dict(host.vars or {}).items() if k not in CONNECTION_VARS}
        values["ansible_host"] = host.address
        if host.port or spec.port:
            values["ansible_port"] = host.port or spec.port
        user = host.user or settings.user
        if user:
            values["ansible_user"] = user
        entries[host.name] = values
    group_vars: dict[str, Any] = {"ansible_ssh_common_args": _ssh_args(spec, settings)}
    if settings.identity_file:
        group_vars["ansible_ssh_private_key_file"] = os.path.expanduser(settings.identity_file)
    return {"all": {"hosts": entries, "vars": group_vars}}


@register
class Ansible(StepType):
    """Fails with a clear message when ansible-playbook is missing."""

    name = "ansible"
    targets = frozenset({"ssh"})

    def execute(self, ctx: StepContext) -> StepResult:
        step = ctx.step
        assert isinstance(step, AnsibleStep)
        command = find_playbook_command()
        if command is None:
            raise StepError(
                "ansible-playbook is not installed on this machine "
                "(install it with `pip install ansible-core`)"
            )
        spec = ctx.services.get("ssh_target")
        settings = ctx.services.get("ssh_settings")
        hosts = ctx.services.get("hosts") or []
        if not isinstance(spec, SSHTarget) or settings is None:
            raise StepError("an ansible step needs `on:` a target of type ssh")
        if not hosts:
            raise StepError("the step's target has no hosts")
        if settings.password:
            ctx.log("note: password logins are not passed to ansible; use keys or an agent")
        inventory = f"{ctx.temp_dir}/inventory.json"
        ctx.runner.write_file(inventory, json.dumps(inventory_for(hosts, spec, settings)).encode())
        argv = [command, "-i", inventory]
        if step.extra_vars:
            extra = f"{ctx.temp_dir}/extra_vars.json"
            ctx.runner.write_file(extra, json.dumps(step.extra_vars).encode())
            argv += ["--extra-vars", f"@{extra}"]
        if step.tags:
            argv += ["--tags", ",".join(step.tags)]
        argv.append(step.playbook)
        ctx.env.setdefault("ANSIBLE_NOCOLOR", "1")
        ctx.env.setdefault("ANSIBLE_RETRY_FILES_ENABLED", "0")
        if spec.known_hosts == "off":
            ctx.env["ANSIBLE_HOST_KEY_CHECKING"] = "False"
        # NOTE: Ansible's ControlPersist keeps a master ssh per host for 60 s after the play; put
        # the sockets in the step's folder and close them after, so the step leaves nothing behind.
        control_dir = f"{ctx.temp_dir}/cp"
        os.makedirs(control_dir, mode=0o700, exist_ok=True)
        ctx.env["ANSIBLE_SSH_CONTROL_PATH_DIR"] = control_dir
        ctx.log(f"ansible-playbook {step.playbook} on {len(hosts)} hosts")
        try:
            code = ctx.run_command(argv)
        finally:
            _close_masters(control_dir)
        return StepResult.from_exit(code, "ansible-playbook")


def _close_masters(control_dir: str) -> None:
    """`ssh -O exit` each ControlPersist master Ansible left in `control_dir`."""
    import stat
    import subprocess

    try:
        entries = list(os.scandir(control_dir))
    except OSError:
        return
    sockets = [e.path for e in entries if stat.S_ISSOCK(e.stat(follow_symlinks=False).st_mode)]
    for socket in sockets:
        subprocess.run(
            ["ssh", "-o", f"ControlPath={socket}", "-O", "exit", "ansflow-control"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=10,
            check=False,
        )
