"""Where each step instance runs: its hosts, a Runner per host, and target services.

Hosts of SSH targets come from `hosts:` entries resolved against the inventory; the connections are
opened lazily, one per host per run, and closed when the run ends.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from ansflow.errors import UsageError
from ansflow.model import JenkinsTarget, Pipeline, SSHTarget
from ansflow.planner import StepNode
from ansflow.remote.base import Runner
from ansflow.remote.local import LocalRunner


class Places:
    """Resolves targets for one run; owns the runners so they are closed exactly once."""

    def __init__(
        self,
        pipeline: Pipeline,
        pipeline_dir: Path,
        secrets: dict[str, str],
        context: dict[str, Any],
    ) -> None:
        self.pipeline = pipeline
        self.pipeline_dir = pipeline_dir
        self.secrets = secrets
        self.context = context
        self.local = LocalRunner()
        self._hosts: dict[str, list[Any]] = {}
        self._pools: dict[str, Any] = {}
        self._pools_by_settings: dict[Any, Any] = {}
        self._jenkins: dict[str, Any] = {}
        self._inventory: Any = None
        self._lock = threading.RLock()

    def kind(self, target: str) -> str:
        spec = self.pipeline.targets.get(target)
        return "local" if spec is None else spec.type

    def hosts(self, node: StepNode) -> list[Any]:
        """[None] for local and Jenkins steps; the target's hosts for SSH steps."""
        target = node.target
        spec = self.pipeline.targets.get(target)
        if not isinstance(spec, SSHTarget) or node.kind == "ansible":
            return [None]
        with self._lock:
            if target not in self._hosts:
                self._hosts[target] = self._resolve_hosts(target, spec)
            return list(self._hosts[target])

    def _resolve_hosts(self, target: str, spec: SSHTarget) -> list[Any]:
        from ansflow.inventory import Inventory, InventoryError, load_pipeline_inventory

        if self._inventory is None:
            if self.pipeline.inventory:
                try:
                    self._inventory = load_pipeline_inventory(
                        self.pipeline.inventory, self.pipeline_dir
                    )
                except InventoryError as exc:
                    raise UsageError(str(exc)) from None
            else:
                self._inventory = Inventory()
        try:
            hosts = list(self._inventory.resolve(spec.hosts))
        except InventoryError as exc:
            raise UsageError(f"target {target!r}: {exc}") from None
        if spec.port is not None:
            import dataclasses

            hosts = [
                h if h.port is not None else dataclasses.replace(h, port=spec.port) for h in hosts
            ]
        return hosts

    def runner(self, node: StepNode, host: Any) -> Runner:
        if host is None:
            return self.local
        return self._pool(node.target).runner(host)

    def _pool(self, target: str) -> Any:
        # NOTE: the hosts of a fleet start in parallel; without the lock two threads could each
        # make a pool and the run would open two connections to one host.
        with self._lock:
            pool = self._pools.get(target)
            if pool is None:
                from ansflow.remote.ssh import SSHPool

                spec = self.pipeline.targets[target]
                assert isinstance(spec, SSHTarget)
                settings = ssh_settings(spec, self.secrets, self.context, self.pipeline_dir)
                # NOTE: targets with the same settings (two views of one fleet) share a pool, so
                # a host they have in common still gets one connection per run.
                pool = self._pools_by_settings.get(settings)
                if pool is None:
                    pool = SSHPool(settings)
                    self._pools_by_settings[settings] = pool
                self._pools[target] = pool
            return pool

    def forks(self, node: StepNode) -> int:
        spec = self.pipeline.targets.get(node.target)
        return spec.forks if isinstance(spec, SSHTarget) else 1

    def services(self, node: StepNode) -> dict[str, Any]:
        spec = self.pipeline.targets.get(node.target)
        if isinstance(spec, JenkinsTarget):
            return {"jenkins": self.jenkins(node.target)}
        if isinstance(spec, SSHTarget):
            return {
                "ssh_target": spec,
                "ssh_settings": ssh_settings(spec, self.secrets, self.context, self.pipeline_dir),
                "hosts": self.hosts_of(node.target),
            }
        return {}

    def hosts_of(self, target: str) -> list[Any]:
        spec = self.pipeline.targets.get(target)
        if not isinstance(spec, SSHTarget):
            return []
        with self._lock:
            if target not in self._hosts:
                self._hosts[target] = self._resolve_hosts(target, spec)
            return list(self._hosts[target])

    def jenkins(self, target: str) -> Any:
        with self._lock:
            client = self._jenkins.get(target)
            if client is None:
                from ansflow.remote.jenkins import connect

                spec = self.pipeline.targets[target]
                assert isinstance(spec, JenkinsTarget)
                client = connect(target, spec, self.secrets, self.context)
                self._jenkins[target] = client
            return client

    def close(self) -> None:
        for pool in self._pools_by_settings.values():
            try:
                pool.close()
            except Exception:
                pass
        self._pools.clear()
        self._pools_by_settings.clear()
        self.local.close()


def ssh_settings(
    spec: SSHTarget, secrets: dict[str, str], context: dict[str, Any], pipeline_dir: Path
) -> Any:
    """SSHSettings from a target, with `${{ secrets.X }}` rendered in `password`."""
    from ansflow import templates
    from ansflow.remote.ssh import SSHSettings

    def text(value: str | None) -> str | None:
        if value is None:
            return None
        return templates.render_text(value, context)

    def path(value: str | None) -> str | None:
        """Relative paths are the pipeline's, like `inventory:` (not the current folder's)."""
        rendered = text(value)
        if not rendered:
            return rendered
        expanded = Path(rendered).expanduser()
        return str(expanded if expanded.is_absolute() else pipeline_dir / expanded)

    return SSHSettings(
        user=text(spec.user),
        identity_file=path(spec.identity_file),
        password=text(spec.password),
        ssh_config=path(spec.ssh_config),
        known_hosts=spec.known_hosts,
        known_hosts_file=path(spec.known_hosts_file),
        connect_timeout=spec.connect_timeout,
        keepalive=spec.keepalive,
    )
