"""`JenkinsEmulator`: the object tests hold.

Tests drive the emulator two ways: as a Jenkins (over HTTP, with python-jenkins or any client)
and as the person in front of Jenkins (cancel a queue item in the UI, pull the network cable,
look at what the builds did). This class is the second way; the HTTP side is `server.py`.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar

from . import api
from .builds import Build
from .config import ParamSpec, folder_xml, freestyle_xml, pipeline_xml
from .jobs import Folder, JenkinsModel, Job
from .pipeline import stage_status
from .server import JenkinsHttp

T = TypeVar("T")


@dataclass(frozen=True)
class StageRecord:
    """A stage as the Pipeline REST API would list it, plus its own log."""

    id: str
    name: str
    status: str
    start_ms: int
    duration_ms: int
    log: str


@dataclass(frozen=True)
class BuildRecord:
    """A snapshot of one build, for assertions."""

    job: str
    number: int
    result: str | None
    building: bool
    parameters: dict[str, str | bool]
    console: str
    queue_id: int
    timestamp_ms: int
    duration_ms: int
    stages: tuple[StageRecord, ...]


def _parameter_specs(
    parameters: Sequence[str] | Mapping[str, str] | None, secret_parameters: Sequence[str]
) -> tuple[ParamSpec, ...]:
    specs: list[ParamSpec] = []
    if isinstance(parameters, Mapping):
        specs.extend(ParamSpec("string", n, d) for n, d in parameters.items())
    elif parameters:
        specs.extend(ParamSpec("string", n, "") for n in parameters)
    specs.extend(ParamSpec("password", n, "") for n in secret_parameters)
    return tuple(specs)


class JenkinsEmulator:
    """A small, honest Jenkins on 127.0.0.1 for tests; see README.md beside this file."""

    def __init__(
        self,
        users: Mapping[str, str] | None = None,
        version: str = "2.462.3",
        queue_delay: float = 0.0,
        *,
        crumb_exempt_api_tokens: bool = False,
        conditional_skip_status: str = "SUCCESS",
        read_only_users: Sequence[str] = (),
    ) -> None:
        self._root_dir = tempfile.mkdtemp(prefix="jenkins-emu-")
        self._model = JenkinsModel(
            self._root_dir,
            queue_delay=queue_delay,
            conditional_skip_status=conditional_skip_status,
        )
        self._http = JenkinsHttp(
            self._model,
            users=users if users is not None else {"robot": "token123"},
            version=version,
            crumb_exempt_api_tokens=crumb_exempt_api_tokens,
            read_only_users=frozenset(read_only_users),
        )
        self._started = False
        self._stopped = False

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> JenkinsEmulator:
        """Bind 127.0.0.1 on a free port and serve in a background thread."""
        if self._started:
            return self
        self._http.start(0)
        with self._model.cond:
            self._model.base_url = self._http.base_url
        self._started = True
        return self

    def stop(self) -> None:
        """Close the server and kill every process any build started."""
        if self._stopped:
            return
        self._stopped = True
        self._http.close()
        self._model.shutdown()

    def __enter__(self) -> JenkinsEmulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The root URL, with its trailing slash, as Jenkins' own `url` field has it."""
        return self._http.base_url

    @property
    def port(self) -> int:
        return self._http.port

    def crumb(self, user: str) -> str:
        """The crumb `user` would get from /crumbIssuer (for raw-HTTP tests)."""
        return self._http.crumb_for(user)

    # ------------------------------------------------------------------ network trouble
    def go_away(self) -> None:
        """Become unreachable (connection refused); builds keep running meanwhile."""
        self._http.close()

    def come_back(self) -> None:
        """Listen again on the same port."""
        if not self._http.listening:
            self._http.start(self._http.port)

    # ------------------------------------------------------------------ setup helpers
    def add_folder(self, name: str) -> None:
        parent, short = self._parent_of(name)
        self._model.create_item(parent, short, folder_xml())

    def add_freestyle_job(
        self,
        name: str,
        script: str = "echo hi",
        parameters: Sequence[str] | Mapping[str, str] | None = None,
        *,
        secret_parameters: Sequence[str] = (),
        concurrent: bool = False,
        unstable_return: int | None = None,
    ) -> None:
        """Create a freestyle job through the same config.xml path as POST /createItem."""
        xml = freestyle_xml(
            script,
            _parameter_specs(parameters, secret_parameters),
            concurrent=concurrent,
            unstable_return=unstable_return,
        )
        parent, short = self._parent_of(name)
        self._model.create_item(parent, short, xml)

    def add_pipeline_job(
        self,
        name: str,
        jenkinsfile: str,
        parameters: Sequence[str] | Mapping[str, str] | None = None,
    ) -> None:
        """Create a Pipeline job whose config.xml holds `jenkinsfile` (CpsFlowDefinition)."""
        xml = pipeline_xml(jenkinsfile, _parameter_specs(parameters, ()))
        parent, short = self._parent_of(name)
        self._model.create_item(parent, short, xml)

    def _parent_of(self, name: str) -> tuple[Folder, str]:
        *folders, short = name.split("/")
        with self._model.cond:
            parent = self._model.resolve(folders) if folders else self._model.root
        if not isinstance(parent, Folder):
            raise ValueError(f"{'/'.join(folders)} is not a folder")
        return parent, short

    # ------------------------------------------------------------------ the UI's buttons
    def hold_queue(self, held: bool = True) -> None:
        """Keep queue items waiting ("Waiting for next available executor") until released."""
        self._model.hold(held)

    def cancel_queue_item(self, item_id: int) -> bool:
        """Cancel a waiting queue item as a user would in the UI."""
        return self._model.cancel(item_id)

    def abort_build(self, job: str, number: int, user: str = "admin") -> None:
        """Press the build's stop button."""
        with self._model.cond:
            build = self._model.find_job(job).builds[number]
            self._model.stop_build(build, user)

    # ------------------------------------------------------------------ inspection
    @property
    def requests(self) -> list[tuple[str, str]]:
        """(method, path with query) of every HTTP request seen, in order."""
        with self._http._log_lock:
            return list(self._http.requests)

    def builds(self, job: str) -> list[BuildRecord]:
        with self._model.cond:
            j = self._model.find_job(job)
            return [self._record(j, j.builds[n]) for n in sorted(j.builds)]

    def build(self, job: str, number: int) -> BuildRecord:
        with self._model.cond:
            j = self._model.find_job(job)
            return self._record(j, j.builds[number])

    def live_pids(self) -> list[int]:
        """Process groups started by builds that still exist."""
        with self._model.cond:
            builds = [b for j in self._jobs() for b in j.builds.values()]
        return [p for b in builds for p in b.live_pids()]

    def _jobs(self) -> list[Job]:
        from .server import _all_jobs

        return _all_jobs(self._model.root)

    def _record(self, job: Job, b: Build) -> BuildRecord:
        skip = self._model.conditional_skip_status
        stages = tuple(
            StageRecord(
                id=n.id,
                name=n.name,
                status=stage_status(n, skip),
                start_ms=n.start_ms,
                duration_ms=(n.end_ms or int(time.time() * 1000)) - n.start_ms,
                log=bytes(n.log).decode("utf-8", "replace"),
            )
            for n in api.stages_in_order(b)
        )
        end = b.end_ms if b.end_ms is not None else int(time.time() * 1000)
        return BuildRecord(
            job=job.full_name,
            number=b.number,
            result=b.result,
            building=b.building,
            parameters={name: value for _kind, name, value in b.parameters},
            console=bytes(b.console).decode("utf-8", "replace"),
            queue_id=b.queue_id,
            timestamp_ms=b.timestamp_ms,
            duration_ms=end - b.timestamp_ms,
            stages=stages,
        )

    # ------------------------------------------------------------------ waiting without sleeps
    def wait_until(self, predicate: Callable[[], T | None], timeout: float = 10.0) -> T:
        """Wait on the emulator's state-change condition until `predicate()` is truthy."""
        deadline = time.monotonic() + timeout
        with self._model.cond:
            while True:
                value = predicate()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"condition not met within {timeout} s")
                self._model.cond.wait(min(left, 0.1))

    def wait_for_build(self, job: str, number: int, timeout: float = 10.0) -> BuildRecord:
        """Wait until build `number` of `job` exists and has finished."""

        def done() -> BuildRecord | None:
            j = self._model.find_job(job)
            b = j.builds.get(number)
            return self._record(j, b) if b is not None and not b.building else None

        return self.wait_until(done, timeout)

    def wait_for_console(
        self, job: str, number: int, text: str, timeout: float = 10.0
    ) -> BuildRecord:
        """Wait until build `number` of `job` has printed `text`."""

        def seen() -> BuildRecord | None:
            j = self._model.find_job(job)
            b = j.builds.get(number)
            if b is not None and text.encode() in b.console:
                return self._record(j, b)
            return None

        return self.wait_until(seen, timeout)


@contextmanager
def running_emulator(**kwargs: object) -> Iterator[JenkinsEmulator]:
    """`with running_emulator(users=...) as emu:` - started, and stopped whatever happens."""
    emu = JenkinsEmulator(**kwargs)  # type: ignore[arg-type]
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()
