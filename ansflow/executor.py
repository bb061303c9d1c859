"""Runs a Plan: ordering, concurrency, `when`, retries, timeouts, cancels, gates -> events.

One scheduler (the calling thread) decides what starts and applies every event in order: it masks
secrets, commits state to the store, and only then shows it. Workers (one thread per running step
instance, plus `forks` threads on SSH fleets) run attempts and report back through a bounded
queue, so a chatty step slows down instead of filling memory.
"""

from __future__ import annotations

import heapq
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ansflow import procinfo, templates
from ansflow.cancel import CANCEL, TIMEOUT, CancelScope, StopSignals
from ansflow.durations import format_duration
from ansflow.errors import EXIT_CANCELLED, EXIT_FAILED, EXIT_OK, EXIT_WAITING, StorageError
from ansflow.events import (
    END_STATES,
    Event,
    RunFinished,
    RunStarted,
    StepFinished,
    StepOutput,
    StepStarted,
    StepState,
)
from ansflow.model import StepBase
from ansflow.options import RunOptions
from ansflow.planner import Plan, StepNode
from ansflow.remote.base import RunnerError
from ansflow.steps.base import StepContext, StepError, StepResult, get_step_type

BAD = frozenset({"failed", "timed_out"})
LOG_FLUSH_S = 0.05
LOG_BATCH = 500
DECISION_POLL_S = 0.5
OUTPUT_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
MAX_OUTPUT_BYTES = 1024 * 1024


class Sink(Protocol):
    """Where events go once the executor has decided on them (store first, then renderers)."""

    def emit(self, event: Event) -> None: ...

    def emit_logs(self, events: list[StepOutput]) -> None: ...


class Places(Protocol):
    """Where steps run: hosts per step instance and a Runner for each (see ansflow/targets.py)."""

    def hosts(self, node: StepNode) -> list[Any]: ...

    def runner(self, node: StepNode, host: Any) -> Any: ...

    def forks(self, node: StepNode) -> int: ...

    def services(self, node: StepNode) -> dict[str, Any]: ...

    def close(self) -> None: ...


class Approver(Protocol):
    """Asks a person at the terminal: returns approved, rejected or timeout."""

    def ask(self, step: str, message: str, timeout: float | None, scope: CancelScope) -> str: ...


class Decisions(Protocol):
    """Approval decisions recorded by `ansflow approve/reject` from another process."""

    def decision(self, run_id: int, step: str) -> dict[str, Any] | None: ...

    def decide(
        self, run_id: int, step: str, decision: str, user: str, comment: str | None
    ) -> None: ...


@dataclass
class Unit:
    """A step instance on one host (host '' when it has none): the thing that has a state."""

    node: StepNode
    host: Any
    status: str = "pending"
    attempts: int = 0
    outputs: dict[str, str] = field(default_factory=dict)
    exit_code: int | None = None
    error: str | None = None

    @property
    def host_name(self) -> str:
        return "" if self.host is None else str(self.host.name)

    @property
    def key(self) -> tuple[str, str]:
        return (self.node.id, self.host_name)


@dataclass(frozen=True)
class _NodeDone:
    node_id: str


@dataclass(frozen=True)
class _Decision:
    """An answer given at the terminal, recorded by the scheduler like `ansflow approve`."""

    step: str
    decision: str


@dataclass(frozen=True)
class Outcome:
    """How the run ended, for the CLI's exit code and summary."""

    run_id: int
    status: str
    exit_code: int
    duration: float
    counts: dict[str, int]


@dataclass
class Setup:
    """What the executor needs besides the plan; built by ansflow/session.py."""

    run_id: int
    options: RunOptions
    variables: dict[str, Any]
    secrets: dict[str, str]
    pipeline_dir: Path
    places: Places
    sink: Sink
    decisions: Decisions | None = None
    approver: Approver | None = None
    kept: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    previous_attempts: dict[tuple[str, str], int] = field(default_factory=dict)
    resumed: bool = False
    user: str = ""
    pipeline_env: dict[str, str] = field(default_factory=dict)


def parse_outputs(data: bytes | None) -> dict[str, str]:
    """`key=value` lines, and `key<<DELIM` ... `DELIM` blocks for multi-line values."""
    if not data:
        return {}
    text = data[:MAX_OUTPUT_BYTES].decode("utf-8", "replace")
    outputs: dict[str, str] = {}
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            key, _, delimiter = line.partition("<<")
            key, delimiter = key.strip(), delimiter.strip()
            body: list[str] = []
            while index < len(lines) and lines[index] != delimiter:
                body.append(lines[index])
                index += 1
            index += 1
            if OUTPUT_KEY.match(key):
                outputs[key] = "\n".join(body)
            continue
        key, sep, value = line.partition("=")
        if sep and OUTPUT_KEY.match(key.strip()):
            outputs[key.strip()] = value
    return outputs


def aggregate(statuses: Iterable[str]) -> str | None:
    """One status for several units (hosts or matrix instances); None while any is unfinished."""
    values = list(statuses)
    if not values:
        return "skipped"
    if any(v not in END_STATES for v in values):
        return "waiting" if "waiting" in values else None
    for status in ("failed", "timed_out", "cancelled", "interrupted"):
        if status in values:
            return status
    return "success" if "success" in values else "skipped"


class Executor:
    """Runs one plan once (a new run, or the rest of a resumed one)."""

    def __init__(self, plan: Plan, setup: Setup) -> None:
        self.plan = plan
        self.setup = setup
        self.run_id = setup.run_id
        self.options = setup.options
        self.pipeline = plan.pipeline
        self.defaults = plan.pipeline.defaults
        self.scope = CancelScope()
        #: Marks this process's local steps, so a crash's leftovers can be found (procinfo).
        self.owner = procinfo.owner_token(*procinfo.current()[:2])
        #: Parent of the steps started after a cancel (`always()`, `cancelled()`): the first cancel
        #: must not stop them, only a forced one (a second SIGINT) does.
        self.cleanup_scope = CancelScope()
        self.events: queue.Queue[Event | _NodeDone | _Decision] = queue.Queue(maxsize=10_000)
        self.units: dict[str, list[Unit]] = {}
        self.running: dict[str, Any] = {}
        self.ready: list[tuple[int, str]] = []
        self.bad_nodes: set[str] = set()
        self.cancelled_nodes: set[str] = set()
        #: Units that failed while their node is still running (other hosts): run.status sees them.
        self.bad_units: set[tuple[str, str]] = set()
        self.upstream_cache: dict[str, frozenset[str]] = {}
        self.unmet: dict[str, int] = {}
        self.dependants: dict[str, list[str]] = {}
        self.pool: ThreadPoolExecutor
        self.done_nodes: set[str] = set()
        self.deselected: set[str] = set()
        self.decided: dict[str, list[Unit]] = {}
        self.steps_context: dict[str, Any] = {}
        self.stopping: str | None = None  # "cancel" or "fail-fast"
        self.forced = False
        self.stop_signals = StopSignals()
        self.signals_seen = 0
        self.log_buffer: list[StepOutput] = []
        self.log_since = 0.0
        self.last_poll = 0.0
        self.gate_lock = threading.Lock()
        self.started = time.monotonic()
        self.pipeline_env: dict[str, str] = {}
        limit = self.options.concurrency or self.pipeline.concurrency or os.cpu_count() or 2
        self.concurrency = max(1, limit)

    # --- public ----------------------------------------------------------------------------------

    def request_cancel(self, reason: str = "cancel") -> None:
        """Stop the run: running steps are killed, nothing new starts. Safe from signal handlers."""
        if self.stopping == "cancel":
            self.forced = True
            self.cleanup_scope.cancel(CANCEL)
        self.stopping = "cancel"
        self.scope.cancel(CANCEL)

    def run(self) -> Outcome:
        self.stop_signals.install()
        try:
            return self._run()
        finally:
            self.stop_signals.restore()
            self.setup.places.close()

    # --- the scheduler ---------------------------------------------------------------------------

    def _run(self) -> Outcome:
        self._prepare_units()
        self._emit(
            RunStarted(
                self.run_id,
                pipeline=self.plan.name,
                file=self.plan.file,
                steps=tuple(n.id for n in self.plan.nodes),
                resumed=self.setup.resumed,
                units=tuple(
                    (u.node.id, u.host_name, u.status)
                    for n in self.plan.nodes
                    for u in self.units[n.id]
                ),
            )
        )
        self.pipeline_env = dict(self.setup.pipeline_env)
        for node in self.plan.nodes:
            self.unmet[node.id] = len(node.needs)
            for need in node.needs:
                self.dependants.setdefault(need, []).append(node.id)
        for node in self.plan.nodes:
            if not node.needs:
                heapq.heappush(self.ready, (node.position, node.id))
        for node in self.plan.nodes:
            if node.id in self.deselected:
                for unit in self.units[node.id]:
                    self._finish(unit, "skipped", error=self._deselected_reason(), started=False)
                self._node_finished(node.id)
            elif all(u.status in END_STATES for u in self.units[node.id]):
                self._node_finished(node.id)
        self.pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="step")
        try:
            while True:
                self._check_signals()
                if self.forced:
                    break
                self._poll_decisions()
                self._start_ready()
                if not self.running and not self.ready:
                    break
                self._pump(LOG_FLUSH_S if self.log_buffer else 0.2)
            self._drain_running()
        except StorageError:
            self.request_cancel()
            self._drain_running(record=False)
            raise
        finally:
            self.pool.shutdown(wait=not self.forced, cancel_futures=True)
        self._flush_logs()
        return self._finish_run()

    def _prepare_units(self) -> None:
        selected = self._selection()
        for node in self.plan.nodes:
            hosts = self.setup.places.hosts(node)
            units = [Unit(node, host) for host in hosts]
            for unit in units:
                kept = self.setup.kept.get(unit.key)
                unit.attempts = self.setup.previous_attempts.get(unit.key, 0)
                if kept is not None:
                    unit.status = "success"
                    unit.outputs = dict(kept.get("outputs") or {})
            self.units[node.id] = units
            if selected is not None and node.id not in selected:
                self.deselected.add(node.id)

    def _selection(self) -> set[str] | None:
        if self.options.only:
            chosen: set[str] = set()
            for name in self.options.only:
                chosen.update(self.plan.resolve(name))
            return chosen
        if self.options.from_step:
            ids = self.plan.resolve(self.options.from_step)
            first = min(self.plan.by_id[i].entry for i in ids)
            return {n.id for n in self.plan.nodes if n.entry > first or n.id in ids}
        return None

    def _deselected_reason(self) -> str:
        if self.options.only:
            return "not selected (--only " + ",".join(self.options.only) + ")"
        return f"not selected (--from {self.options.from_step})"

    def _start_ready(self) -> None:
        """Start ready nodes in plan order while there is room; skips and gates need none."""
        deferred: list[tuple[int, str]] = []
        while self.ready:
            position, node_id = heapq.heappop(self.ready)
            if node_id in self.done_nodes or node_id in self.running:
                continue
            node = self.plan.by_id[node_id]
            if any(u.status == "waiting" for u in self.units[node_id]):
                continue
            pending = [u for u in self.units[node_id] if u.status not in END_STATES]
            if self.stopping and not self._runs_after_cancel(node):
                for unit in pending:
                    self._finish(
                        unit, "cancelled", error="not started: the run was stopped", started=False
                    )
                self._node_finished(node_id)
                continue
            to_run = self.decided.get(node_id)
            if to_run is None:
                to_run = self._decide(node, pending)
                self.decided[node_id] = to_run
            if not to_run:
                self._node_finished(node_id)
                continue
            if get_step_type(node.kind).is_gate:
                if not self._gate(node, to_run):
                    deferred.append((position, node_id))
                continue
            if len(self.running) >= self.concurrency:
                deferred.append((position, node_id))
                break
            snapshot = self._context_for(node)
            parent = self.cleanup_scope if self.stopping else self.scope
            self.running[node_id] = self.pool.submit(self._work, node, to_run, snapshot, parent)
        for item in deferred:
            heapq.heappush(self.ready, item)

    def _runs_after_cancel(self, node: StepNode) -> bool:
        """Whether a step not yet started still gets its `when` decided after a cancel.

        As in GitHub Actions, a `when` that calls `always()` or `cancelled()` asks to run after a
        cancel (cleanup, notifications); every other step is cancelled. A forced stop (a second
        SIGINT) and `--fail-fast` (which cancels everything after the first failure, and whose run
        ends `failed`, so `cancelled()` stays false there) run nothing more. Approval gates are
        never asked for during a cancel.
        """
        if self.stopping != "cancel" or self.forced or get_step_type(node.kind).is_gate:
            return False
        try:
            source = templates.condition_source(node.step.when)
            if source is None:
                return False
            refs = templates.references(source)
        except templates.TemplateError:
            return False
        return any(ref.chain in (("always",), ("cancelled",)) for ref in refs)

    def _pump(self, timeout: float) -> None:
        try:
            item: Event | _NodeDone | _Decision | None = self.events.get(timeout=timeout)
        except queue.Empty:
            item = None
        batch: list[Event | _NodeDone | _Decision] = [] if item is None else [item]
        while len(batch) < LOG_BATCH:
            try:
                batch.append(self.events.get_nowait())
            except queue.Empty:
                break
        for entry in batch:
            if isinstance(entry, StepOutput):
                if not self.log_buffer:
                    self.log_since = time.monotonic()
                self.log_buffer.append(entry)
                if len(self.log_buffer) >= LOG_BATCH:
                    self._flush_logs()
            elif isinstance(entry, _NodeDone):
                self.running.pop(entry.node_id, None)
                self._node_finished(entry.node_id)
            elif isinstance(entry, _Decision):
                if self.setup.decisions is not None:
                    self.setup.decisions.decide(
                        self.run_id, entry.step, entry.decision, self.setup.user, "at the terminal"
                    )
            else:
                self._apply(entry)
        if self.log_buffer and time.monotonic() - self.log_since >= LOG_FLUSH_S:
            self._flush_logs()

    def _check_signals(self) -> None:
        while self.signals_seen < self.stop_signals.count:
            self.signals_seen += 1
            self.request_cancel()

    def _drain_running(self, record: bool = True) -> None:
        """Wait for workers to report after a cancel; a forced stop records them at once."""
        while self.running and not self.forced:
            self._check_signals()
            self._pump(LOG_FLUSH_S)
        if self.forced:
            from ansflow.remote.local import kill_terminating_groups

            kill_terminating_groups()
            self._flush_logs()
            for units in self.units.values():
                for unit in units:
                    if unit.status not in END_STATES and record:
                        self._finish(
                            unit,
                            "cancelled",
                            error="stopped by a second interrupt",
                            started=unit.status != "pending",
                        )

    def _flush_logs(self) -> None:
        if self.log_buffer:
            batch, self.log_buffer = self.log_buffer, []
            self.setup.sink.emit_logs(batch)

    def _log(self, step: str, text: str, host: str = "") -> None:
        """A line from ansflow itself about a step, stored and shown like output."""
        if not self.log_buffer:
            self.log_since = time.monotonic()
        self.log_buffer.append(
            StepOutput(self.run_id, step=step, host=host, stream="ansflow", text=text)
        )

    def _emit(self, event: Event) -> None:
        self._flush_logs()
        self.setup.sink.emit(event)

    def _apply(self, event: Event) -> None:
        """An event from a worker: update our view, then store and show it."""
        if isinstance(event, StepStarted | StepState | StepFinished):
            unit = self._unit(event.step, event.host)
            if isinstance(event, StepStarted):
                unit.status = "running"
                unit.attempts = max(unit.attempts, event.attempt)
            elif isinstance(event, StepState):
                unit.status = event.status
            else:
                unit.status = event.status
                unit.outputs = dict(event.outputs)
                unit.exit_code = event.exit_code
                unit.error = event.error
                if event.status in BAD and not unit.node.step.continue_on_error:
                    self.bad_units.add(unit.key)
                if (
                    self.options.fail_fast
                    and event.status in BAD
                    and not unit.node.step.continue_on_error
                    and not self.stopping
                ):
                    self.stopping = "fail-fast"
                    self.scope.cancel(CANCEL)
        self._emit(event)

    def _unit(self, step: str, host: str) -> Unit:
        for unit in self.units[step]:
            if unit.host_name == host:
                return unit
        raise KeyError((step, host))

    def _finish(
        self, unit: Unit, status: str, error: str | None = None, *, started: bool = True
    ) -> None:
        """Record a final state decided by the scheduler (skips, cancels, gates).

        `started=False` for a unit that never ran in this run: attempt 0 tells the store so, and
        it keeps no start time or duration (a resumed unit keeps its attempt count all the same).
        """
        unit.status = status
        unit.error = error
        self._emit(
            StepFinished(
                self.run_id,
                step=unit.node.id,
                host=unit.host_name,
                status=status,
                attempt=unit.attempts if started else 0,
                error=error,
            )
        )

    def _node_finished(self, node_id: str) -> None:
        units = self.units[node_id]
        if node_id in self.done_nodes or any(u.status not in END_STATES for u in units):
            return
        self.done_nodes.add(node_id)
        status = self._node_status(node_id)
        if status in BAD and not self.plan.by_id[node_id].step.continue_on_error:
            self.bad_nodes.add(node_id)
        elif status == "cancelled":
            self.cancelled_nodes.add(node_id)
        for dependant in self.dependants.get(node_id, ()):
            self.unmet[dependant] -= 1
            if self.unmet[dependant] == 0:
                heapq.heappush(self.ready, (self.plan.by_id[dependant].position, dependant))
        node = self.plan.by_id[node_id]
        entry: dict[str, Any] = {
            "status": aggregate(u.status for u in units),
            "outputs": {},
            "hosts": {},
        }
        if len(units) == 1 and units[0].host is None:
            entry["outputs"] = dict(units[0].outputs)
        else:
            sources = {u.host_name: u.outputs for u in units}
            entry["outputs"] = templates.CommonValues(f"steps.{node_id}", sources)
            entry["hosts"] = {
                u.host_name: {"status": u.status, "outputs": dict(u.outputs)} for u in units
            }
        self.steps_context[node_id] = entry
        instances = self.plan.instances[node.base_id]
        if len(instances) > 1 and all(i in self.done_nodes for i in instances):
            statuses = [self.steps_context[i]["status"] for i in instances]
            self.steps_context[node.base_id] = {
                "status": aggregate(statuses),
                "outputs": templates.CommonValues(
                    f"steps.{node.base_id}",
                    {i: self.steps_context[i]["outputs"] for i in instances},
                ),
                "hosts": {},
            }

    # --- conditions ------------------------------------------------------------------------------

    def _node_status(self, node_id: str) -> str | None:
        if node_id in self.deselected:
            return "deselected"
        return aggregate(u.status for u in self.units[node_id])

    def _is_bad(self, node_id: str) -> bool:
        return node_id in self.bad_nodes

    def _upstream(self, node: StepNode) -> frozenset[str]:
        found = self.upstream_cache.get(node.id)
        if found is None:
            found = self.plan.upstream(node.id)
            self.upstream_cache[node.id] = found
        return found

    def _needs_succeeded(self, node: StepNode) -> tuple[bool, str | None]:
        """success(): every need succeeded (or may fail), and nothing upstream failed."""
        for need in node.needs:
            status = self._node_status(need)
            allowed = status in BAD and self.plan.by_id[need].step.continue_on_error
            if status not in ("success", "deselected") and not allowed:
                return False, f"needs {need}, which is {status}"
        upstream = self._upstream(node)
        # NOTE: set operations, not a loop: a long chain of steps has every earlier step upstream.
        for broken in (self.bad_nodes & upstream) or (self.cancelled_nodes & upstream):
            return False, f"upstream step {broken} is {self._node_status(broken)}"
        return True, None

    def _condition_functions(self, node: StepNode) -> dict[str, Callable[[], bool]]:
        upstream = self._upstream(node)
        return {
            "success": lambda: self._needs_succeeded(node)[0],
            "always": lambda: True,
            "failure": lambda: not self.bad_nodes.isdisjoint(upstream),
            "cancelled": lambda: self.stopping == "cancel",
        }

    def _decide(self, node: StepNode, pending: list[Unit]) -> list[Unit]:
        """Evaluate `when` for each unit; finish the skipped ones; return those that run."""
        when = node.step.when
        ok, reason = self._needs_succeeded(node)
        source: str | None = None
        try:
            source = templates.condition_source(when)
        except templates.TemplateError as exc:
            for unit in pending:
                self._finish(unit, "failed", error=f"`when`: {exc.message}", started=False)
            return []
        decides_itself = source is not None and templates.calls_condition_function(source)
        if isinstance(when, bool) and not when:
            ok, reason = False, "`when` is false"
        if not decides_itself and not ok:
            for unit in pending:
                self._finish(unit, "skipped", error=reason, started=False)
            return []
        if source is None:
            return pending
        chosen: list[Unit] = []
        for unit in pending:
            context = self._context_for(node, unit.host)
            context.update(self._condition_functions(node))
            try:
                value = templates.evaluate(source, context)
            except templates.TemplateError as exc:
                self._finish(
                    unit,
                    "failed",
                    error=f"step {node.id!r}, field `when`: {exc.message}",
                    started=False,
                )
                continue
            if value:
                chosen.append(unit)
            else:
                self._finish(
                    unit, "skipped", error=f"`when` is false ({source.strip()})", started=False
                )
        return chosen

    # --- template contexts -----------------------------------------------------------------------

    def run_status(self) -> str:
        if self.stopping == "cancel":
            return "cancelled"
        if self.stopping == "fail-fast":
            return "failed"
        if self.bad_nodes or self.bad_units:
            return "failed"
        if self._cancelled_elsewhere():
            return "cancelled"
        return "success"

    def _cancelled_elsewhere(self) -> bool:
        """A step cancelled outside ansflow (a Jenkins build aborted in its UI): not a success."""
        return any(
            not self.plan.by_id[node_id].step.continue_on_error for node_id in self.cancelled_nodes
        )

    def _base_context(self) -> dict[str, Any]:
        return {
            "vars": self.setup.variables,
            "secrets": self.setup.secrets,
            "env": {**os.environ, **self.pipeline_env},
            "pipeline": {"name": self.plan.name, "file": self.plan.file},
            "run": {"id": self.run_id, "status": self.run_status()},
        }

    def _context_for(self, node: StepNode, host: Any = None) -> dict[str, Any]:
        context = self._base_context()
        context["steps"] = dict(self.steps_context)
        context["matrix"] = dict(node.matrix)
        if host is not None:
            context["host"] = host_context(host)
        return context

    # --- workers ---------------------------------------------------------------------------------

    def _work(
        self, node: StepNode, units: list[Unit], context: dict[str, Any], parent: CancelScope
    ) -> None:
        """Run a node's units (hosts in batches) under `parent`: the run's scope, or the cleanup
        scope for a step started after a cancel."""
        try:
            serial = node.step.serial
            forks = max(1, self.setup.places.forks(node))
            batches = (
                [units[i : i + serial] for i in range(0, len(units), serial)] if serial else [units]
            )
            failed_before = False
            for batch in batches:
                if failed_before:
                    for unit in batch:
                        self._send_finished(
                            unit, "skipped", error="an earlier batch of hosts failed"
                        )
                    continue
                if len(batch) == 1:
                    results = [self._run_unit(node, batch[0], context, parent)]
                else:
                    with ThreadPoolExecutor(min(forks, len(batch))) as pool:
                        results = list(
                            pool.map(lambda u: self._run_unit(node, u, context, parent), batch)
                        )
                failed_before = bool(serial) and any(r in BAD for r in results)
        except BaseException as exc:
            for unit in units:
                if unit.status not in END_STATES:
                    self._send_finished(unit, "failed", error=f"internal error: {exc!r}")
        finally:
            self.events.put(_NodeDone(node.id))

    def _send_finished(self, unit: Unit, status: str, **fields: Any) -> None:
        self.events.put(
            StepFinished(
                self.run_id,
                step=unit.node.id,
                host=unit.host_name,
                status=status,
                attempt=fields.pop("attempt", unit.attempts),
                **fields,
            )
        )

    def _settings(self, step: StepBase) -> tuple[int, float, float | None]:
        retries = step.retries if step.retries is not None else self.defaults.retries
        delay = step.retry_delay if step.retry_delay is not None else self.defaults.retry_delay
        timeout = step.timeout if step.timeout is not None else self.defaults.timeout
        return retries, delay, timeout

    def _run_unit(
        self, node: StepNode, unit: Unit, context: dict[str, Any], parent: CancelScope
    ) -> str:
        """All attempts of one unit; returns its final status."""
        retries, delay, timeout = self._settings(node.step)
        first = unit.attempts + 1
        total = retries + 1
        for index in range(total):
            attempt = first + index
            if parent.cancelled:
                # NOTE: attempt 0 when nothing ran in this run, so no start time is recorded.
                self._send_finished(
                    unit,
                    "cancelled",
                    attempt=attempt - 1 if index else 0,
                    error="not started: the run was stopped",
                )
                return "cancelled"
            self.events.put(
                StepStarted(self.run_id, step=node.id, host=unit.host_name, attempt=attempt)
            )
            scope = CancelScope(parent)
            timer = scope.start_timer(timeout)
            started = time.monotonic()
            retryable = True
            outputs: dict[str, str] = {}
            try:
                result, outputs = self._attempt(node, unit, attempt, scope, context)
            except templates.TemplateError as exc:
                result, retryable = StepResult("failed", None, exc.message), False
            except StepError as exc:
                result = StepResult("failed", None, str(exc))
            except RunnerError as exc:
                result = StepResult("failed", None, str(exc))
            except Exception as exc:
                result = StepResult("failed", None, f"internal error in {node.kind} step: {exc!r}")
            finally:
                if timer is not None:
                    timer.cancel()
                scope.close()
            status, error = result.status, result.error
            if scope.reason == TIMEOUT:
                status, error = "timed_out", f"timed out after {format_duration(timeout)}"
            elif scope.cancelled:
                status, error = "cancelled", "cancelled while running"
            duration = time.monotonic() - started
            last = index == total - 1
            if status in BAD and not last and retryable and not parent.cancelled:
                wait = delay * (2**index)
                self.events.put(
                    StepState(
                        self.run_id,
                        step=node.id,
                        host=unit.host_name,
                        status="retrying",
                        attempt=attempt,
                        error=f"{error}; attempt {attempt + 1} in {format_duration(wait)}",
                        attempt_status=status,
                        exit_code=result.exit_code,
                    )
                )
                if parent.wait(wait):
                    self._send_finished(
                        unit, "cancelled", attempt=attempt, error="cancelled while waiting to retry"
                    )
                    return "cancelled"
                continue
            self._send_finished(
                unit,
                status,
                attempt=attempt,
                exit_code=result.exit_code,
                error=error,
                duration=duration,
                outputs=outputs,
                details=result.details,
            )
            return status
        return "failed"  # pragma: no cover - the loop always returns

    def _attempt(
        self, node: StepNode, unit: Unit, attempt: int, scope: CancelScope, context: dict[str, Any]
    ) -> tuple[StepResult, dict[str, str]]:
        host = unit.host
        if host is not None:
            context = {**context, "host": host_context(host)}
        step = self._render_step(node, context)
        runner = self.setup.places.runner(node, host)
        local = host is None
        workdir = self._workdir(step, local)
        env = self._environment(node, step, context, unit, attempt, local)

        def emit(stream: str, text: str) -> None:
            self.events.put(
                StepOutput(
                    self.run_id,
                    step=node.id,
                    host=unit.host_name,
                    stream=stream,
                    text=text,
                    attempt=attempt,
                )
            )

        services = dict(self.setup.places.services(node))
        services["run_status"] = self.run_status()
        ctx = StepContext(
            run_id=self.run_id,
            pipeline=self.plan.name,
            step=step,
            step_id=node.id,
            host=unit.host_name,
            attempt=attempt,
            runner=runner,
            workdir=workdir,
            env=env,
            scope=scope,
            pipeline_dir=self.setup.pipeline_dir,
            emit=emit,
            services=services,
        )
        try:
            result = get_step_type(node.kind).execute(ctx)
            outputs: dict[str, str] = dict(result.outputs)
            if not scope.cancelled:
                for data in ctx.written_outputs():
                    outputs.update(parse_outputs(data))
            return result, outputs
        finally:
            ctx.release()

    def _render_step(self, node: StepNode, context: dict[str, Any]) -> StepBase:
        """The step with every templated field rendered to text (`when` was decided already)."""
        from ansflow.checks import STATIC_FIELDS

        step = node.step
        updates: dict[str, Any] = {}
        for name in step.model_fields:
            if name in STATIC_FIELDS or name == "when":
                continue
            if not isinstance(getattr(step, name), str | list | dict):
                continue
            raw = step.model_dump(include={name})[name]
            if not _has_template(raw):
                continue
            try:
                updates[name] = templates.render_value(raw, context, as_text=True)
            except templates.TemplateError as exc:
                raise templates.TemplateError(
                    f"step {node.id!r}, field `{name}`: {exc.message}"
                ) from None
        if getattr(step, "shell", "absent") is None and self.defaults.shell:
            updates["shell"] = self.defaults.shell
        if not updates:
            return step
        # NOTE: validate again so nested models (deploy `files`) come back as models; a value that
        # only a template produced (`job: ${{ vars.j }}` giving `../x`) is checked here too.
        from pydantic import ValidationError

        try:
            return type(step).model_validate({**step.model_dump(), **updates})
        except ValidationError as exc:
            problems = "; ".join(
                f"`{'.'.join(map(str, e['loc'])) or 'step'}`: {e['msg']}" for e in exc.errors()
            )
            raise templates.TemplateError(
                f"step {node.id!r}: a rendered value is not valid: {problems}"
            ) from None

    def _workdir(self, step: StepBase, local: bool) -> str | None:
        if not local:
            return step.workdir
        base = self.setup.pipeline_dir
        chosen = step.workdir or self.defaults.workdir
        if chosen is None:
            return str(base)
        path = Path(chosen).expanduser()
        return str(path if path.is_absolute() else base / path)

    def _environment(
        self,
        node: StepNode,
        step: StepBase,
        context: dict[str, Any],
        unit: Unit,
        attempt: int,
        local: bool,
    ) -> dict[str, str]:
        """The step's environment; `ANSFLOW_OUTPUT` is added where its file is made (StepContext
        or the runner's `run_script`)."""
        env: dict[str, str] = dict(os.environ) if local else {}
        if not local and "CI" in os.environ:
            env["CI"] = os.environ["CI"]
        env.update(self.pipeline_env)
        env.update({k: str(v) for k, v in step.env.items()})
        env.update(self.setup.secrets)
        env.update(
            {
                "ANSFLOW": "1",
                "ANSFLOW_RUN_ID": str(self.run_id),
                "ANSFLOW_PIPELINE": self.plan.name,
                "ANSFLOW_STEP_ID": node.id,
                "ANSFLOW_STEP_TYPE": node.kind,
                "ANSFLOW_ATTEMPT": str(attempt),
            }
        )
        if unit.host is not None:
            env["ANSFLOW_HOST"] = unit.host_name
        if local and node.kind != "jenkins":
            env[procinfo.OWNER_ENV] = self.owner
        return env

    # --- approval gates --------------------------------------------------------------------------

    def _gate(self, node: StepNode, units: list[Unit]) -> bool:
        """Decide, ask or wait; False when there is no room to ask yet."""
        unit = units[0]
        if unit.status == "waiting":
            return True
        step = node.step
        message = getattr(step, "message", None) or f"Approve {node.id}?"
        try:
            message = templates.render_text(message, self._context_for(node))
        except templates.TemplateError as exc:
            unit.attempts = max(unit.attempts, 1)
            self._finish(unit, "failed", error=f"step {node.id!r}, field `message`: {exc.message}")
            self._node_finished(node.id)
            return True
        approvers = list(getattr(step, "approvers", []) or [])
        recorded = (
            self.setup.decisions.decision(self.run_id, node.id) if self.setup.decisions else None
        )
        if recorded is not None:
            self._apply_decision(unit, recorded)
            return True
        allowed = not approvers or self.setup.user in approvers
        if self.options.approves(node.id, node.base_id) and allowed:
            if self.setup.decisions is not None:
                self.setup.decisions.decide(
                    self.run_id, node.id, "approved", self.setup.user, "--approve"
                )
            unit.attempts = max(unit.attempts, 1)
            self._emit(StepStarted(self.run_id, step=node.id, host="", attempt=unit.attempts))
            self._log(node.id, f"approved by {self.setup.user} (--approve)")
            self._finish(unit, "success")
            self._node_finished(node.id)
            return True
        if self.setup.approver is not None and allowed:
            if len(self.running) >= self.concurrency:
                return False
            unit.attempts = max(unit.attempts, 1)
            self._emit(StepStarted(self.run_id, step=node.id, host="", attempt=unit.attempts))
            worker = threading.Thread(
                target=self._ask, args=(node, unit, message), name=f"gate-{node.id}", daemon=True
            )
            self.running[node.id] = worker
            worker.start()
            return True
        unit.attempts = max(unit.attempts, 1)
        unit.status = "waiting"
        who = f" (approvers: {', '.join(approvers)})" if approvers else ""
        self._emit(
            StepState(
                self.run_id,
                step=node.id,
                host="",
                status="waiting",
                attempt=unit.attempts,
                error=f"waiting for approval: {message}{who}",
            )
        )
        self._log(node.id, f"{message} -> ansflow approve {self.run_id} {node.id}")
        return True

    def _ask(self, node: StepNode, unit: Unit, message: str) -> None:
        _, _, timeout = self._settings(node.step)
        try:
            with self.gate_lock:
                assert self.setup.approver is not None
                answer = self.setup.approver.ask(node.id, message, timeout, self.scope)
            if answer in ("approved", "rejected"):
                self.events.put(_Decision(node.id, answer))
                self.events.put(
                    StepOutput(
                        self.run_id,
                        step=node.id,
                        host="",
                        stream="ansflow",
                        text=f"{answer} by {self.setup.user} at the terminal",
                    )
                )
            if self.scope.cancelled:
                self._send_finished(unit, "cancelled", error="cancelled while waiting for approval")
            elif answer == "approved":
                self._send_finished(unit, "success")
            elif answer == "rejected":
                self._send_finished(unit, "failed", error="rejected at the terminal")
            else:
                limit = format_duration(timeout) if timeout else "the time limit"
                self._send_finished(unit, "timed_out", error=f"no answer within {limit}")
        except BaseException as exc:
            self._send_finished(unit, "failed", error=f"approval prompt failed: {exc!r}")
        finally:
            self.events.put(_NodeDone(node.id))

    def _apply_decision(self, unit: Unit, recorded: Mapping[str, Any]) -> None:
        who = recorded.get("user") or "someone"
        comment = f": {recorded['comment']}" if recorded.get("comment") else ""
        unit.attempts = max(unit.attempts, 1)
        if recorded.get("decision") == "approved":
            self._log(unit.node.id, f"approved by {who}{comment}")
            self._finish(unit, "success")
        else:
            self._finish(unit, "failed", error=f"rejected by {who}{comment}")
        self._node_finished(unit.node.id)

    def _poll_decisions(self) -> None:
        if self.setup.decisions is None:
            return
        waiting = [
            units[0] for units in self.units.values() if units and units[0].status == "waiting"
        ]
        if not waiting:
            return
        moment = time.monotonic()
        if moment - self.last_poll < DECISION_POLL_S:
            return
        self.last_poll = moment
        for unit in waiting:
            recorded = self.setup.decisions.decision(self.run_id, unit.node.id)
            if recorded is not None:
                self._apply_decision(unit, recorded)

    # --- the end ---------------------------------------------------------------------------------

    def _finish_run(self) -> Outcome:
        waiting = any(u.status == "waiting" for units in self.units.values() for u in units)
        if self.stopping == "cancel":
            status, code = "cancelled", EXIT_CANCELLED
        elif self.run_status() == "failed":
            status, code = "failed", EXIT_FAILED
        elif self._cancelled_elsewhere():
            status, code = "cancelled", EXIT_CANCELLED
        elif waiting:
            status, code = "waiting", EXIT_WAITING
        else:
            status, code = "success", EXIT_OK
        if status != "waiting":
            # NOTE: the invariant of SPEC section 3: an ended run has no unfinished step. Anything
            # still open here (behind a gate that was never decided) is closed explicitly.
            for units in self.units.values():
                for unit in units:
                    if unit.status not in END_STATES:
                        end = "cancelled" if status == "cancelled" else "skipped"
                        self._finish(
                            unit,
                            end,
                            error="not run: the run ended before it",
                            started=unit.status != "pending",
                        )
        counts: dict[str, int] = {}
        for units in self.units.values():
            for unit in units:
                counts[unit.status] = counts.get(unit.status, 0) + 1
        duration = time.monotonic() - self.started
        self._emit(
            RunFinished(
                self.run_id, status=status, duration=duration, counts=counts, exit_code=code
            )
        )
        return Outcome(self.run_id, status, code, duration, counts)


def host_context(host: Any) -> dict[str, Any]:
    """`${{ host.* }}`: name, address, port, user and inventory vars."""
    return {
        "name": host.name,
        "address": getattr(host, "address", host.name),
        "port": getattr(host, "port", None),
        "user": getattr(host, "user", None),
        "vars": dict(getattr(host, "vars", {}) or {}),
    }


def _has_template(value: Any) -> bool:
    return any(templates.OPEN in text for _, text in templates.iter_strings(value))
