"""Items, the queue and build execution: the part of Jenkins behind the REST API.

The HTTP layer only translates requests into calls on `JenkinsModel` and its answers (or
`ApiError`s) into responses, so the rules Jenkins applies - which requests are refused with which
status, how a queue item becomes a build, which builds may run at once - live here in one place.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import traceback
from dataclasses import dataclass, field

from .builds import Build, Interrupted, now_ms, run_script
from .config import (
    FOLDER,
    FREESTYLE,
    JAVA_CLASS,
    PIPELINE,
    ConfigError,
    JobConfig,
    ParamSpec,
    parse_config,
)
from .jenkinsfile import ParamDef
from .pipeline import PipelineRunner

# Characters Jenkins.checkGoodName refuses in item names.
_UNSAFE = set("?*/\\%!@#$^&|<>[]:;")
UNSTABLE_MARKER = b"##emulator:UNSTABLE##"
NOT_BUILT_MARKER = b"##emulator:NOT_BUILT##"


class ApiError(Exception):
    """A request Jenkins refuses: the HTTP status and the message it answers with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(eq=False)
class Item:
    """A top-level or foldered item: a folder or a job."""

    name: str
    parent: Folder | None
    config_xml: str
    config: JobConfig

    @property
    def full_name(self) -> str:
        if self.parent is None or (self.parent.parent is None and self.parent.name == ""):
            return self.name
        return f"{self.parent.full_name}/{self.name}"

    @property
    def url_path(self) -> str:
        """`job/A/job/B/`: the path of the item below the Jenkins root URL."""
        return "".join(f"job/{_quote(part)}/" for part in self.full_name.split("/"))

    @property
    def java_class(self) -> str:
        return JAVA_CLASS[self.config.kind]


@dataclass(eq=False)
class Folder(Item):
    """A cloudbees-folder Folder, or the Jenkins root itself (name '')."""

    items: dict[str, Item] = field(default_factory=dict)


@dataclass(eq=False)
class Job(Item):
    """A freestyle or Pipeline job."""

    builds: dict[int, Build] = field(default_factory=dict)
    next_build_number: int = 1
    declared_params: tuple[ParamSpec, ...] | None = None
    disabled: bool = False

    @property
    def kind(self) -> str:
        return self.config.kind

    @property
    def parameters(self) -> tuple[ParamSpec, ...]:
        # A declarative `parameters` section replaces the job's parameter definitions after the
        # first build that declares it, exactly as Jenkins rewrites the job's properties.
        if self.declared_params is not None:
            return self.declared_params
        return self.config.parameters

    def running(self) -> list[Build]:
        return [b for b in self.builds.values() if b.building]

    def last(self, predicate: str) -> Build | None:
        """lastBuild, lastCompletedBuild, ... by Jenkins' definitions of each."""
        tests = {
            "lastBuild": lambda b: True,
            "lastCompletedBuild": lambda b: not b.building,
            "lastSuccessfulBuild": lambda b: b.result in ("SUCCESS", "UNSTABLE") and not b.building,
            "lastStableBuild": lambda b: b.result == "SUCCESS" and not b.building,
            "lastFailedBuild": lambda b: b.result == "FAILURE" and not b.building,
            "lastUnstableBuild": lambda b: b.result == "UNSTABLE" and not b.building,
            "lastUnsuccessfulBuild": lambda b: b.result not in (None, "SUCCESS") and not b.building,
        }
        test = tests[predicate]
        for number in sorted(self.builds, reverse=True):
            if test(self.builds[number]):
                return self.builds[number]
        return None


@dataclass(eq=False)
class QueueItem:
    """A build request waiting in (or gone from) the queue."""

    id: int
    job: Job
    parameters: list[tuple[str, str, str | bool]]
    user: str
    since_ms: int
    buildable_at: float
    state: str = "waiting"  # waiting, left, cancelled
    build: Build | None = None


def _quote(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")


def check_name(name: str) -> None:
    """Jenkins.checkGoodName: the 400s createItem answers for bad names."""
    if not name:
        raise ApiError(400, "Query parameter 'name' is required")
    for ch in name:
        if ch in _UNSAFE:
            raise ApiError(400, f"‘{ch}’ is an unsafe character")
    if name in (".", ".."):
        raise ApiError(400, f"“{name}” is not an allowed name")


class JenkinsModel:
    """The whole emulated controller: items, queue, builds, and the thread that dispatches."""

    def __init__(
        self,
        root_dir: str,
        *,
        queue_delay: float = 0.0,
        conditional_skip_status: str = "SUCCESS",
    ) -> None:
        self.cond = threading.Condition(threading.RLock())
        self.root_dir = root_dir
        self.queue_delay = queue_delay
        self.conditional_skip_status = conditional_skip_status
        self.root = Folder("", None, "", JobConfig(kind=FOLDER))
        self.queue: dict[int, QueueItem] = {}
        self._next_queue_id = 1
        self.held = False
        self.base_url = "http://127.0.0.1/"
        self._stopping = False
        self._dispatcher = threading.Thread(target=self._dispatch_loop, name="queue", daemon=True)
        self._dispatcher.start()

    # ------------------------------------------------------------------ items
    def resolve(self, names: list[str]) -> Item:
        """Walk `job/A/job/B`; 404 for anything missing, as Stapler answers."""
        item: Item = self.root
        for name in names:
            if not isinstance(item, Folder) or name not in item.items:
                raise ApiError(404, "Not Found")
            item = item.items[name]
        return item

    def find_job(self, full_name: str) -> Job:
        with self.cond:
            item = self.resolve(full_name.split("/"))
        if not isinstance(item, Job):
            raise KeyError(full_name)
        return item

    def create_item(self, parent: Folder, name: str, xml: str | bytes) -> Item:
        with self.cond:
            check_name(name)
            if name in parent.items:
                raise ApiError(400, f"A job already exists with the name ‘{name}’")
            try:
                cfg = parse_config(xml)
            except ConfigError as exc:
                raise ApiError(exc.status, exc.message) from exc
            text = xml.decode() if isinstance(xml, bytes) else xml
            item: Item
            if cfg.kind == FOLDER:
                item = Folder(name, parent, text, cfg)
            else:
                item = Job(name, parent, text, cfg, disabled=cfg.disabled)
            parent.items[name] = item
            self.cond.notify_all()
            return item

    def copy_item(self, parent: Folder, name: str, source: str) -> Item:
        with self.cond:
            if source.startswith("/"):
                src = self.resolve(source.strip("/").split("/"))
            else:
                try:
                    src = self.resolve([*self._path_of(parent), *source.split("/")])
                except ApiError:
                    raise ApiError(400, f"No such job: {source}") from None
            return self.create_item(parent, name, src.config_xml)

    def _path_of(self, folder: Folder) -> list[str]:
        return [] if folder is self.root else folder.full_name.split("/")

    def update_config(self, item: Item, xml: str | bytes) -> None:
        with self.cond:
            try:
                cfg = parse_config(xml)
            except ConfigError as exc:
                raise ApiError(exc.status, exc.message) from exc
            if cfg.kind != item.config.kind:
                raise ApiError(
                    400,
                    f"Expecting class {JAVA_CLASS[item.config.kind]} but got class "
                    f"{JAVA_CLASS[cfg.kind]} instead",
                )
            item.config_xml = xml.decode() if isinstance(xml, bytes) else xml
            item.config = cfg
            if isinstance(item, Job):
                item.disabled = cfg.disabled
                item.declared_params = None
            self.cond.notify_all()

    def delete_item(self, item: Item, user: str) -> None:
        with self.cond:
            for job in _jobs_under(item):
                for qi in self.queue.values():
                    if qi.job is job and qi.state == "waiting":
                        qi.state = "cancelled"
                for build in job.running():
                    self.stop_build(build, user)
            assert item.parent is not None
            item.parent.items.pop(item.name, None)
            self.cond.notify_all()

    def set_disabled(self, job: Job, disabled: bool) -> None:
        with self.cond:
            job.disabled = disabled
            self.cond.notify_all()

    # ------------------------------------------------------------------ queue
    def schedule(
        self, job: Job, submitted: dict[str, str] | None, user: str, *, with_params: bool
    ) -> QueueItem:
        """POST build / buildWithParameters: validate like Jenkins, then queue (or merge)."""
        with self.cond:
            if job.disabled:
                raise ApiError(409, f"{job.full_name} is not buildable")
            specs = job.parameters
            if with_params and not specs:
                raise ApiError(400, f"{job.full_name} is not parameterized")
            if not with_params and specs:
                # `build` on a parameterized job needs the form's `json` field; without it
                # Jenkins answers "Nothing is submitted".
                if submitted is None or "json" not in submitted:
                    raise ApiError(400, "Nothing is submitted")
                submitted = _params_from_json(submitted["json"])
            values = _resolve_params(specs, submitted or {})
            for qi in self.queue.values():
                # Queue.schedule2 folds a request into an identical waiting one.
                if qi.job is job and qi.state == "waiting" and qi.parameters == values:
                    return qi
            qi = QueueItem(
                id=self._next_queue_id,
                job=job,
                parameters=values,
                user=user,
                since_ms=now_ms(),
                buildable_at=time.monotonic() + self.queue_delay,
            )
            self._next_queue_id += 1
            self.queue[qi.id] = qi
            self.cond.notify_all()
            return qi

    def cancel(self, item_id: int) -> bool:
        with self.cond:
            qi = self.queue.get(item_id)
            if qi is None or qi.state != "waiting":
                return False
            qi.state = "cancelled"
            self.cond.notify_all()
            return True

    def hold(self, held: bool) -> None:
        with self.cond:
            self.held = held
            self.cond.notify_all()

    def queue_why(self, qi: QueueItem) -> tuple[str, str | None]:
        """The queue item's class and `why`, as Queue's item types report them."""
        if qi.state != "waiting":
            return "hudson.model.Queue$LeftItem", None
        left = qi.buildable_at - time.monotonic()
        if left > 0:
            return (
                "hudson.model.Queue$WaitingItem",
                f"In the quiet period. Expires in {left:.2g} sec",
            )
        running = qi.job.running()
        if running and not qi.job.config.concurrent:
            return (
                "hudson.model.Queue$BlockedItem",
                f"Build #{running[0].number} is already in progress (ETA: N/A)",
            )
        return "hudson.model.Queue$BuildableItem", "Waiting for next available executor"

    def _dispatch_loop(self) -> None:
        with self.cond:
            while not self._stopping:
                if not self.held:
                    for qi in list(self.queue.values()):
                        if qi.state != "waiting" or time.monotonic() < qi.buildable_at:
                            continue
                        if qi.job.running() and not qi.job.config.concurrent:
                            continue
                        self._start(qi)
                self.cond.wait(0.05)

    # ------------------------------------------------------------------ builds
    def _start(self, qi: QueueItem) -> None:
        job = qi.job
        number = job.next_build_number
        job.next_build_number += 1
        ws = os.path.join(self.root_dir, "workspace", *job.full_name.split("/"))
        busy = len(job.running())
        if busy:
            ws = f"{ws}@{busy + 1}"
        tmp = os.path.join(self.root_dir, "tmp")
        os.makedirs(tmp, exist_ok=True)
        build = Build(
            cond=self.cond,
            job_full_name=job.full_name,
            job_url=self.base_url + job.url_path,
            job_kind=job.kind,
            number=number,
            queue_id=qi.id,
            parameters=qi.parameters,
            user=qi.user,
            workspace=ws,
            tmpdir=tmp,
            base_url=self.base_url,
        )
        last_ok = job.last("lastSuccessfulBuild")
        if last_ok is not None and last_ok.end_ms is not None:
            build.estimated_ms = last_ok.end_ms - last_ok.timestamp_ms
        previous = job.last("lastCompletedBuild")
        job.builds[number] = build
        qi.state = "left"
        qi.build = build
        config = job.config
        build.thread = threading.Thread(
            target=self._execute,
            args=(job, build, config, previous.result if previous else None),
            name=f"build-{job.full_name}-{number}",
            daemon=True,
        )
        build.thread.start()
        self.cond.notify_all()

    def _execute(self, job: Job, build: Build, config: JobConfig, previous: str | None) -> None:
        build.log(f"Started by user {build.user}\n")
        try:
            if config.kind == FREESTYLE:
                self._run_freestyle(build, config)
            else:

                def declare(defs: tuple[ParamDef, ...]) -> None:
                    with self.cond:
                        job.declared_params = tuple(
                            ParamSpec(
                                kind="boolean" if d.kind == "booleanParam" else d.kind,
                                name=d.name,
                                default=d.default,
                                description=d.description,
                                choices=d.choices,
                            )
                            for d in defs
                        )

                PipelineRunner(
                    build,
                    config.script,
                    conditional_skip_status=self.conditional_skip_status,
                    previous_result=previous,
                    on_parameters=declare,
                ).run()
        except Exception:  # the emulator's own bug: show it in the build like Jenkins would
            build.log(traceback.format_exc())
            if build.building:
                build.finish("FAILURE")
        finally:
            build.kill_leftovers()

    def _run_freestyle(self, build: Build, config: JobConfig) -> None:
        build.log("Running as SYSTEM\n")
        build.log(f"Building in workspace {build.workspace}\n")
        os.makedirs(build.workspace, exist_ok=True)
        result = "SUCCESS"
        marker: str | None = None
        base = build.job_full_name.rsplit("/", 1)[-1]

        def sink(line: bytes) -> None:
            nonlocal marker
            stripped = line.strip()
            if stripped == UNSTABLE_MARKER and marker is None:
                marker = "UNSTABLE"
            elif stripped == NOT_BUILT_MARKER:
                marker = "NOT_BUILT"
            build.log(line)

        for command in config.shell_commands:
            handle = build.begin_step()
            try:
                rc = run_script(
                    build,
                    handle,
                    command,
                    env=build.env(),
                    cwd=build.workspace,
                    sink=sink,
                    on_start=lambda path: build.log(f"[{base}] $ /bin/bash -xe {path}\n"),
                )
            except Interrupted:
                result = "ABORTED"
                break
            finally:
                build.end_step(handle)
            if rc != 0 and rc == config.unstable_return:
                result = "UNSTABLE"
            elif rc != 0:
                build.log("Build step 'Execute shell' marked build as failure\n")
                result = "FAILURE"
                break
        trailer = ""
        if result == "ABORTED":
            trailer = f"Build was aborted\nAborted by {build.aborted_by or build.user}\n"
        elif marker is not None and result in ("SUCCESS", "UNSTABLE"):
            result = marker if marker == "NOT_BUILT" or result == "SUCCESS" else result
        build.finish(result, trailer)

    def stop_build(self, build: Build, user: str) -> None:
        with self.cond:
            if not build.building:
                return
            if build.kind == PIPELINE:
                build.log(f"Aborted by {user}\n")
            build.interrupt("user", user)

    # ------------------------------------------------------------------ shutdown
    def shutdown(self, timeout: float = 5.0) -> None:
        with self.cond:
            self._stopping = True
            builds = [b for job in _jobs_under(self.root) for b in job.builds.values()]
            for b in builds:
                if b.building:
                    b.interrupt("user", "SYSTEM")
            self.cond.notify_all()
        deadline = time.monotonic() + timeout
        for b in builds:
            b.kill_leftovers()
            if b.thread is not None:
                b.thread.join(max(0.0, deadline - time.monotonic()))
        self._dispatcher.join(1.0)
        shutil.rmtree(self.root_dir, ignore_errors=True)


def _jobs_under(item: Item) -> list[Job]:
    if isinstance(item, Job):
        return [item]
    if isinstance(item, Folder):
        return [j for child in item.items.values() for j in _jobs_under(child)]
    return []


def _params_from_json(raw: str) -> dict[str, str]:
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, f"Failed to parse JSON: {exc}") from exc
    entries = data.get("parameter", []) if isinstance(data, dict) else []
    if isinstance(entries, dict):
        entries = [entries]
    out: dict[str, str] = {}
    for entry in entries:
        if isinstance(entry, dict) and "name" in entry:
            value = entry.get("value", "")
            out[str(entry["name"])] = str(value).lower() if isinstance(value, bool) else str(value)
    return out


def _resolve_params(
    specs: tuple[ParamSpec, ...], submitted: dict[str, str]
) -> list[tuple[str, str, str | bool]]:
    """Definition order; submitted values win, the rest take defaults; unknown names dropped."""
    values: list[tuple[str, str, str | bool]] = []
    for spec in specs:
        if spec.name in submitted:
            raw = submitted[spec.name]
            value: str | bool = raw.strip().lower() == "true" if spec.kind == "boolean" else raw
        else:
            value = spec.default
        values.append((spec.kind, spec.name, value))
    return values
