"""Jenkins through python-jenkins: the only module that imports `jenkins`.

Everything ansflow asks of a Jenkins server goes through `JenkinsClient`. python-jenkins hides the
HTTP status of a failure in prose (or drops it: a 502 on `get_job_info` reads "job does not
exist"), so every request goes through its `jenkins_request`, which keeps authentication and
crumbs, and the failure is turned here into one `JenkinsError` line that names the server URL and
the job, and says whether it is worth retrying (connection refused, timeouts, 502/503/504).

`Patience` is the retry policy of SPEC section 7 (losing Jenkins in the middle of a build: retry
with backoff for up to 60 s, then fail naming the URL); `ConsoleReader` follows a build's console
through `logText/progressiveText`, which is how Jenkins' own UI streams it.
"""

from __future__ import annotations

import html
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote
from xml.sax.saxutils import escape

from ansflow.remote.base import RunnerError

if TYPE_CHECKING:
    import requests

    from ansflow.model import JenkinsTarget

T = TypeVar("T")

#: Seconds ansflow keeps retrying when Jenkins stops answering mid-build (SPEC section 7: 60 s).
#: `ANSFLOW_JENKINS_RETRY_WINDOW` overrides it, which tests use to lose Jenkins for seconds only.
RETRY_WINDOW_ENV = "ANSFLOW_JENKINS_RETRY_WINDOW"
DEFAULT_RETRY_WINDOW_S = 60.0
#: Backoff between retries, doubling from the first to the last value.
RETRY_FIRST_S = 0.25
RETRY_MAX_S = 8.0
#: Polling while a build runs: quick after output arrived, slower when idle, never over 1 s
#: apart (SPEC section 7: Jenkins output reaches the screen within about a second).
POLL_MIN_S = 0.1
POLL_MAX_S = 1.0
#: Fallback names for the credentials when the target does not give `user` / `token`.
USER_ENV = "JENKINS_USER"
TOKEN_ENV = "JENKINS_TOKEN"
#: Written into the description of every job ansflow creates, so it never overwrites a job that a
#: person made by hand just because the names collide.
MANAGED_MARK = "Managed by ansflow"
TRANSIENT_STATUSES = frozenset({502, 503, 504})


class JenkinsError(RunnerError):
    """A Jenkins request that failed, said in one line naming the server URL (and the job)."""

    def __init__(self, message: str, *, status: int | None = None, transient: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.transient = transient

    def __str__(self) -> str:
        return self.message


class JenkinsLost(JenkinsError):
    """Jenkins stopped answering for longer than the retry window."""


@dataclass(frozen=True)
class JenkinsCheck:
    """One line of `ansflow targets check` for a Jenkins target: the server, or one job."""

    target: str
    what: str
    ok: bool
    detail: str
    error: str | None = None


def retry_window() -> float:
    """The retry window in seconds: SPEC's 60 s unless `ANSFLOW_JENKINS_RETRY_WINDOW` says."""
    raw = os.environ.get(RETRY_WINDOW_ENV, "").strip()
    if not raw:
        return DEFAULT_RETRY_WINDOW_S
    try:
        value = float(raw)
    except ValueError:
        return DEFAULT_RETRY_WINDOW_S
    return value if value >= 0 else DEFAULT_RETRY_WINDOW_S


def job_path(job: str) -> str:
    """`job/A/job/B/`: where a (foldered) job lives below the Jenkins root URL."""
    return "".join(f"job/{quote(part, safe='')}/" for part in job.strip("/").split("/"))


def _connection_reason(exc: BaseException) -> str:
    """A few words for a connection failure; requests' own text is a paragraph of wrappers."""
    text = str(exc)
    for needle, words in (
        ("Connection refused", "connection refused"),
        ("Name or service not known", "host name not found"),
        ("nodename nor servname", "host name not found"),
        ("Temporary failure in name resolution", "host name not found"),
        ("No route to host", "no route to host"),
        ("Network is unreachable", "network unreachable"),
        ("timed out", "connection timed out"),
        ("RemoteDisconnected", "the server closed the connection"),
        ("Connection aborted", "the server closed the connection"),
        ("Connection reset", "connection reset"),
        ("Connection broken", "connection broken"),
        ("CERTIFICATE_VERIFY_FAILED", "certificate verify failed"),
    ):
        if needle in text:
            return words
    match = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    return match.group(1).strip() if match else "connection failed"


def _first_line(text: str, limit: int = 200) -> str:
    """The first non-blank line: error bodies are HTML pages and tracebacks."""
    line = next((s.strip() for s in text.splitlines() if s.strip()), "")
    return line[:limit]


class JenkinsClient:
    """One Jenkins server, as one user: every REST call ansflow makes, with readable failures."""

    def __init__(
        self,
        target: str,
        url: str,
        user: str | None,
        token: str | None,
        *,
        verify: bool = True,
        timeout: float = 30.0,
        window: float | None = None,
        job_prefix: str = "ansflow-",
        secret_names: frozenset[str] = frozenset(),
    ) -> None:
        import jenkins

        self.target = target
        self.job_prefix = job_prefix
        #: Which environment variables are secrets: a managed job gets them as password parameters.
        self.secret_names = secret_names
        self.url = url if url.endswith("/") else url + "/"
        self.user = user
        self.verify = verify
        self.timeout = timeout
        self.window = retry_window() if window is None else window
        self._jenkins = jenkins
        self._server = jenkins.Jenkins(self.url, username=user, password=token, timeout=timeout)
        # NOTE: python-jenkins turns verification off by itself when PYTHONHTTPSVERIFY=0; SPEC
        # section 7 wants it off only when `verify: false` is written on the target.
        self._server._session.verify = verify
        if not verify:
            import urllib3

            # NOTE: the user asked for it in writing; one warning per request would drown output.
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

    # --- requests --------------------------------------------------------------------------------

    def job_url(self, job: str) -> str:
        """From the configured URL, not Jenkins' idea of its root (often wrong behind proxies)."""
        return self.url + job_path(job)

    def build_url(self, job: str, number: int) -> str:
        """The build's page, recorded in the step's details and shown."""
        return f"{self.job_url(job)}{number}/"

    def request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        job: str | None = None,
        params: Mapping[str, Any] | None = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """One call through python-jenkins (auth, crumb); failures become JenkinsError."""
        import requests

        url = self.url + path
        for attempt in (1, 2):
            req = requests.Request(
                method, url, params=dict(params or {}), data=data, headers=dict(headers or {})
            )
            try:
                response: requests.Response = self._server.jenkins_request(
                    req, add_crumb=method == "POST"
                )
                return response
            except Exception as exc:
                error = self._translate(exc, what, job)
                if error.status == 403 and "crumb" in str(exc).lower() and attempt == 1:
                    # NOTE: a restarted Jenkins issues new crumbs; fetch one and try once more.
                    self._server.crumb = None
                    continue
                raise error from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _translate(self, exc: BaseException, what: str, job: str | None) -> JenkinsError:
        """A python-jenkins or requests failure as one line naming the URL and the job."""
        import requests

        jenkins = self._jenkins
        where = f"Jenkins {self.url}"
        prefix = f"{where}: job {job!r}: " if job else f"{where}: "
        who = f"user {self.user!r}" if self.user else "anonymous access"
        if isinstance(exc, requests.exceptions.SSLError):
            return JenkinsError(
                f"{prefix}TLS check failed while {what} ({_connection_reason(exc)}); fix the "
                f"server's certificate, or write `verify: false` on target {self.target!r} if "
                "you trust this server"
            )
        if isinstance(exc, requests.exceptions.Timeout | jenkins.TimeoutException):
            return JenkinsError(
                f"{prefix}no answer within {self.timeout:g} s while {what}", transient=True
            )
        if isinstance(
            exc, requests.exceptions.ConnectionError | requests.exceptions.ChunkedEncodingError
        ):
            return JenkinsError(
                f"{prefix}cannot reach Jenkins while {what} ({_connection_reason(exc)})",
                transient=True,
            )
        if isinstance(exc, jenkins.NotFoundException):
            if job:
                return JenkinsError(f"{where}: job {job!r} not found (HTTP 404)", status=404)
            return JenkinsError(f"{where}: not found (HTTP 404) while {what}", status=404)
        if isinstance(exc, requests.exceptions.HTTPError) and exc.response is not None:
            status = exc.response.status_code
            reason = exc.response.reason or ""
            return JenkinsError(
                f"{prefix}HTTP {status} {reason} while {what}".rstrip(),
                status=status,
                transient=status in TRANSIENT_STATUSES,
            )
        if isinstance(exc, jenkins.JenkinsException):
            text = str(exc)
            match = re.search(r"\[(\d{3})\]: ?([^\n]*)", text)
            if match:
                status = int(match.group(1))
                reason = match.group(2).strip()
                detail = f"HTTP {status}" + (f": {reason}" if reason else "")
                if status == 401:
                    return JenkinsError(
                        f"{prefix}{who} was refused ({detail}); check the user and API token "
                        f"of target {self.target!r}",
                        status=401,
                    )
                if status == 403:
                    return JenkinsError(
                        f"{prefix}{who} may not do this: {what} ({detail})", status=403
                    )
                return JenkinsError(
                    f"{prefix}Jenkins failed while {what} ({detail})", status=status
                )
            return JenkinsError(f"{prefix}{_first_line(text)} (while {what})")
        if isinstance(exc, requests.exceptions.RequestException):
            return JenkinsError(
                f"{prefix}request failed while {what} ({_first_line(str(exc))})", transient=True
            )
        return JenkinsError(f"{prefix}{type(exc).__name__}: {_first_line(str(exc))} ({what})")

    def get_json(self, path: str, *, what: str, job: str | None = None) -> Any:
        """A JSON document; an HTML answer (a login page, a proxy) is an error, not a crash."""
        response = self.request("GET", path, what=what, job=job)
        try:
            return response.json()
        except ValueError:
            raise JenkinsError(
                f"Jenkins {self.url}: the answer to {what} is not JSON (is this a Jenkins URL?)"
            ) from None

    # --- the server ------------------------------------------------------------------------------

    def whoami(self) -> tuple[str, str]:
        """(version, user) as the server sees this client; the first call checks credentials.

        NOTE: python-jenkins' `get_version` sends no credentials until another call has resolved
        them, so the version is read from the headers of the `me` answer instead.
        """
        response = self.request("GET", "me/api/json", what="checking the credentials")
        try:
            data = response.json()
        except ValueError:
            raise JenkinsError(
                f"Jenkins {self.url}: not a Jenkins server (its answer to me/api/json is not JSON)"
            ) from None
        version = response.headers.get("X-Jenkins", "")
        if not version:
            raise JenkinsError(f"Jenkins {self.url}: not a Jenkins server (no X-Jenkins header)")
        user = str(data.get("id") or data.get("fullName") or "anonymous")
        return version, user

    # --- jobs ------------------------------------------------------------------------------------

    def job(self, job: str) -> dict[str, Any]:
        """The job's `api/json`: whether it exists, is buildable, and its parameters."""
        data: dict[str, Any] = self.get_json(
            job_path(job) + "api/json", what="reading the job", job=job
        )
        return data

    def job_config(self, job: str) -> str | None:
        """The job's config.xml, or None when there is no such job."""
        try:
            response = self.request(
                "GET", job_path(job) + "config.xml", what="reading config.xml", job=job
            )
        except JenkinsError as exc:
            if exc.status == 404:
                return None
            raise
        return response.text

    def create_job(self, job: str, config_xml: str) -> None:
        """POST createItem in the job's folder (python-jenkins' `create_job` hides the status)."""
        folder, _, short = job.strip("/").rpartition("/")
        try:
            self.request(
                "POST",
                (job_path(folder) if folder else "") + "createItem",
                what="creating the job",
                job=job,
                params={"name": short},
                data=config_xml.encode("utf-8"),
                headers={"Content-Type": "text/xml; charset=utf-8"},
            )
        except JenkinsError as exc:
            # NOTE: Jenkins answers 404 for createItem in a folder that does not exist; "job not
            # found" would send the user looking for the job ansflow was about to create.
            if exc.status != 404 or not folder:
                raise
            raise JenkinsError(
                f"Jenkins {self.url}: folder {folder!r} not found (HTTP 404) while creating job "
                f"{job!r}; create the folder on Jenkins, or change `job_prefix` on target "
                f"{self.target!r}",
                status=404,
            ) from None

    def update_job(self, job: str, config_xml: str) -> None:
        """POST config.xml: the job keeps its builds and history."""
        self.request(
            "POST",
            job_path(job) + "config.xml",
            what="updating config.xml",
            job=job,
            data=config_xml.encode("utf-8"),
            headers={"Content-Type": "text/xml; charset=utf-8"},
        )

    def ensure_job(self, job: str, config_xml: str) -> str:
        """Create the job, or update it when its config differs: "created", "updated", "unchanged".

        A job of that name that ansflow did not create is left alone: overwriting someone's job
        because a pipeline happens to produce its name would be a nasty surprise.
        """
        current = self.job_config(job)
        if current is None:
            self.create_job(job, config_xml)
            return "created"
        if MANAGED_MARK not in current:
            raise JenkinsError(
                f"Jenkins {self.url}: job {job!r} exists and was not created by ansflow; "
                "ansflow will not overwrite it (rename or delete it, or change `job_prefix` on "
                f"target {self.target!r})"
            )
        if _same_config(current, config_xml):
            return "unchanged"
        self.update_job(job, config_xml)
        return "updated"

    # --- builds ----------------------------------------------------------------------------------

    def trigger(self, job: str, parameters: Mapping[str, str] | None) -> int:
        """Queue a build; returns the queue item's id.

        Parameters go in the form body, not the query string: secrets passed as password
        parameters must not end up in access logs. `None` means the job takes no parameters.
        """
        action = "build" if parameters is None else "buildWithParameters"
        response = self.request(
            "POST",
            job_path(job) + action,
            what="starting a build",
            job=job,
            data=dict(parameters) if parameters else None,
        )
        location = response.headers.get("Location", "")
        match = re.search(r"/queue/item/(\d+)/?$", location)
        if not match:
            raise JenkinsError(
                f"Jenkins {self.url}: job {job!r}: no queue item in the answer to the build "
                f"request (Location: {location or 'missing'})"
            )
        return int(match.group(1))

    def queue_item(self, item: int, job: str | None = None) -> dict[str, Any]:
        """A queue item: `why` while waiting, `executable` once a build, `cancelled` if so."""
        data: dict[str, Any] = self.get_json(
            f"queue/item/{item}/api/json", what=f"reading queue item {item}", job=job
        )
        return data

    def cancel_queue(self, item: int, job: str | None = None) -> None:
        """Cancel a waiting item (a cancel or timeout before the build started)."""
        try:
            self.request(
                "POST",
                "queue/cancelItem",
                what=f"cancelling queue item {item}",
                job=job,
                params={"id": item},
            )
        except JenkinsError as exc:
            # NOTE: Jenkins answers 404 once the item has left the queue (JENKINS-21311).
            if exc.status != 404:
                raise

    def build(self, job: str, number: int) -> dict[str, Any]:
        """The few build fields ansflow reads; `result` counts only once `building` is false."""
        data: dict[str, Any] = self.get_json(
            f"{job_path(job)}{number}/api/json?tree=number,url,building,result,timestamp,duration",
            what=f"reading build #{number}",
            job=job,
        )
        return data

    def progressive(self, job: str, number: int, start: int) -> tuple[bytes, int, bool]:
        """Console bytes from offset `start`, the next offset, and whether more will come."""
        response = self.request(
            "GET",
            f"{job_path(job)}{number}/logText/progressiveText",
            what=f"reading the console of build #{number}",
            job=job,
            params={"start": start},
        )
        size_text = response.headers.get("X-Text-Size", "")
        body = response.content
        size = int(size_text) if size_text.isdigit() else start + len(body)
        more = response.headers.get("X-More-Data", "").lower() == "true"
        return body, size, more

    def stop(self, job: str, number: int) -> None:
        """The build's stop button: Jenkins aborts it and kills its processes."""
        self.request(
            "POST", f"{job_path(job)}{number}/stop", what=f"stopping build #{number}", job=job
        )

    def describe(self, job: str, number: int) -> dict[str, Any]:
        """The Pipeline REST API's view of a run: its stages with status, start and duration."""
        data: dict[str, Any] = self.get_json(
            f"{job_path(job)}{number}/wfapi/describe",
            what=f"reading the stages of build #{number}",
            job=job,
        )
        return data

    def node_log(self, job: str, number: int, node_id: str) -> str:
        """A flow node's own log (`wfapi/log`), unescaped: for a stage node, its skip message."""
        data = self.get_json(
            f"{job_path(job)}{number}/execution/node/{quote(node_id, safe='')}/wfapi/log",
            what=f"reading the log of node {node_id} of build #{number}",
            job=job,
        )
        text = data.get("text") if isinstance(data, dict) else None
        return html.unescape(text) if isinstance(text, str) else ""


def _same_config(current: str, wanted: str) -> bool:
    """Jenkins rewrites config.xml (declaration, plugin versions); compare what we set."""

    def core(text: str) -> str:
        """The XML without its declaration and with whitespace runs collapsed."""
        text = re.sub(r"^\s*<\?xml[^>]*\?>", "", text.strip())
        return re.sub(r"\s+", " ", text).strip()

    return core(current) == core(wanted)


# --- connecting ----------------------------------------------------------------------------------


def connect(
    target_name: str, spec: JenkinsTarget, secrets: Mapping[str, str], context: Mapping[str, Any]
) -> JenkinsClient:
    """A client for a target, with `${{ }}` rendered in url/user/token; no request is made yet.

    Credentials come from the target (`token: ${{ secrets.JENKINS_TOKEN }}` reads a declared
    secret, `${{ env.X }}` the environment), else from $JENKINS_USER and $JENKINS_TOKEN.
    """
    from ansflow import templates

    def text(field: str, value: str | None) -> str | None:
        """A target field rendered; a template error names the target and the field."""
        if value is None:
            return None
        try:
            return templates.render_text(value, context)
        except templates.TemplateError as exc:
            raise JenkinsError(f"target {target_name!r}, field `{field}`: {exc.message}") from None

    env = context.get("env") or os.environ
    url = text("url", spec.url) or ""
    if not url.startswith(("http://", "https://")):
        raise JenkinsError(f"target {target_name!r}: url {url!r} must start with http(s)://")
    user = text("user", spec.user) or env.get(USER_ENV) or None
    token = text("token", spec.token) or env.get(TOKEN_ENV) or None
    if user and not token:
        raise JenkinsError(
            f"target {target_name!r}: user {user!r} has no API token; set `token: "
            f"${{{{ secrets.JENKINS_TOKEN }}}}` on the target (declaring the secret), or export "
            f"{TOKEN_ENV}"
        )
    if token and not user:
        raise JenkinsError(
            f"target {target_name!r}: an API token needs a user; set `user:` on the target or "
            f"export {USER_ENV}"
        )
    return JenkinsClient(
        target_name,
        url,
        user,
        token,
        verify=spec.verify,
        timeout=float(spec.timeout),
        job_prefix=spec.job_prefix,
        secret_names=frozenset(secrets),
    )


def check_jenkins(
    target_name: str,
    spec: JenkinsTarget,
    secrets: dict[str, str],
    context: dict[str, Any],
    jobs: list[str],
) -> list[JenkinsCheck]:
    """`ansflow targets check`: the server's version, the token's user, and each named job."""
    try:
        client = connect(target_name, spec, secrets, context)
        version, user = client.whoami()
    except JenkinsError as exc:
        return [JenkinsCheck(target_name, "server", False, spec.url, str(exc))]
    tls = "" if client.url.startswith("http://") or client.verify else ", TLS NOT verified"
    results = [
        JenkinsCheck(
            target_name, "server", True, f"Jenkins {version} at {client.url}, as {user}{tls}"
        )
    ]
    for name in jobs:
        try:
            info = client.job(name)
        except JenkinsError as exc:
            results.append(JenkinsCheck(target_name, f"job {name}", False, "", str(exc)))
            continue
        kind = str(info.get("_class", "")).rsplit(".", 1)[-1] or "job"
        parameters = job_parameters(info)
        detail = f"{kind}, " + (
            f"parameters: {', '.join(parameters)}" if parameters else "no parameters"
        )
        if not info.get("buildable", True):
            results.append(
                JenkinsCheck(target_name, f"job {name}", False, detail, f"job {name!r} is disabled")
            )
            continue
        results.append(JenkinsCheck(target_name, f"job {name}", True, detail))
    return results


def job_parameters(info: Mapping[str, Any]) -> list[str]:
    """Names of the parameters a job (its `api/json`) defines, in order."""
    names: list[str] = []
    for holder in [*(info.get("property") or []), *(info.get("actions") or [])]:
        if not isinstance(holder, dict):
            continue
        for definition in holder.get("parameterDefinitions") or []:
            name = definition.get("name") if isinstance(definition, dict) else None
            if isinstance(name, str) and name not in names:
                names.append(name)
    return names


# --- following a build ---------------------------------------------------------------------------

#: Waits `seconds` unless interrupted; returns True when interrupted (a cancel).
Waiter = Callable[[float], bool]


class Patience:
    """Retries transient faults with doubling delays for up to `window` seconds, then gives up.

    Used while following a build, where losing Jenkins for a moment (a restart, a network blip)
    must not fail a step whose build is fine. Requests that would do something twice (starting a
    build) are never retried.
    """

    def __init__(
        self,
        window: float,
        wait: Waiter,
        note: Callable[[str], None],
        giving_up: str = "gave up",
    ) -> None:
        self.window = window
        self.wait = wait
        self.note = note
        self.giving_up = giving_up
        self.since: float | None = None
        self.delay = RETRY_FIRST_S

    def call(self, fn: Callable[[], T]) -> T:
        """`fn()`, retried on transient faults; JenkinsLost once the window has passed."""
        while True:
            try:
                value = fn()
            except JenkinsError as exc:
                if not exc.transient:
                    raise
                moment = time.monotonic()
                if self.since is None:
                    self.since = moment
                    self.delay = RETRY_FIRST_S
                    self.note(f"{exc}; retrying for up to {self.window:g} s")
                left = self.window - (moment - self.since)
                if left <= 0:
                    raise JenkinsLost(
                        f"{exc}; no answer for {self.window:g} s, {self.giving_up}",
                        status=exc.status,
                    ) from None
                delay = min(self.delay, left)
                self.delay = min(self.delay * 2, RETRY_MAX_S)
                if self.wait(delay):
                    raise
                continue
            if self.since is not None:
                self.note(f"Jenkins answers again after {time.monotonic() - self.since:.1f} s")
                self.since = None
            return value


class ConsoleReader:
    """Follows a build's console through progressiveText, returning whole lines as they come."""

    def __init__(self, client: JenkinsClient, job: str, number: int) -> None:
        self.client = client
        self.job = job
        self.number = number
        self.offset = 0
        self._partial = b""
        self.more = True

    def read(self) -> list[str]:
        """New complete lines (the last partial line too once the build has ended)."""
        data, size, more = self.client.progressive(self.job, self.number, self.offset)
        if size < self.offset:
            # NOTE: Jenkins restarts a log that "rolled over" at 0; keep what we have.
            data, self._partial = b"", b""
        self.offset = max(size, self.offset)
        self.more = more
        chunks = (self._partial + data).split(b"\n")
        self._partial = chunks.pop()
        if not more and self._partial:
            chunks.append(self._partial)
            self._partial = b""
        return [c.decode("utf-8", "replace").rstrip("\r") for c in chunks]


def poll_delay(idle_rounds: int) -> float:
    """Quick right after output or a change, then slower, never over POLL_MAX_S."""
    return min(POLL_MAX_S, POLL_MIN_S * (1.6**idle_rounds))


def queue_reason(why: str) -> str:
    """A queue item's `why` without its numbers, to tell a new reason from the same one.

    NOTE: Jenkins counts down in the text ("In the quiet period. Expires in 4.9 sec"), so the
    raw text changes on every poll while the reason stays the same.
    """
    return re.sub(r"\d+(?:\.\d+)?", "#", why)


# --- config.xml ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParameterSpec:
    """A build parameter a managed job defines: string, text (multi-line) or password."""

    name: str
    kind: str = "string"
    default: str = ""
    description: str = ""


_PARAMETER_CLASSES = {
    "string": "hudson.model.StringParameterDefinition",
    "text": "hudson.model.TextParameterDefinition",
    "password": "hudson.model.PasswordParameterDefinition",
}


def _parameters_xml(parameters: list[ParameterSpec]) -> str:
    """The job's parameter definitions; defaults stay empty so a value never lands in config."""
    if not parameters:
        return "  <properties/>\n"
    items = []
    for p in parameters:
        cls = _PARAMETER_CLASSES[p.kind]
        items.append(
            f"        <{cls}>\n"
            f"          <name>{escape(p.name)}</name>\n"
            f"          <description>{escape(p.description)}</description>\n"
            f"          <defaultValue>{escape(p.default)}</defaultValue>\n"
            f"        </{cls}>\n"
        )
    return (
        "  <properties>\n"
        "    <hudson.model.ParametersDefinitionProperty>\n"
        "      <parameterDefinitions>\n" + "".join(items) + "      </parameterDefinitions>\n"
        "    </hudson.model.ParametersDefinitionProperty>\n"
        "  </properties>\n"
    )


def freestyle_config(description: str, script: str, parameters: list[ParameterSpec]) -> str:
    """config.xml of a managed freestyle job: one `Execute shell` build step running `script`."""
    return (
        "<?xml version='1.1' encoding='UTF-8'?>\n"
        "<project>\n"
        f"  <description>{escape(f'{MANAGED_MARK}: {description}')}</description>\n"
        "  <keepDependencies>false</keepDependencies>\n"
        + _parameters_xml(parameters)
        + '  <scm class="hudson.scm.NullSCM"/>\n'
        "  <canRoam>true</canRoam>\n"
        "  <disabled>false</disabled>\n"
        "  <triggers/>\n"
        "  <concurrentBuild>false</concurrentBuild>\n"
        "  <builders>\n"
        "    <hudson.tasks.Shell>\n"
        f"      <command>{escape(script)}</command>\n"
        "    </hudson.tasks.Shell>\n"
        "  </builders>\n"
        "  <publishers/>\n"
        "  <buildWrappers/>\n"
        "</project>\n"
    )


def pipeline_config(description: str, jenkinsfile: str, parameters: list[ParameterSpec]) -> str:
    """config.xml of a Pipeline job whose script is inline (a CpsFlowDefinition)."""
    return (
        "<?xml version='1.1' encoding='UTF-8'?>\n"
        '<flow-definition plugin="workflow-job">\n'
        f"  <description>{escape(f'{MANAGED_MARK}: {description}')}</description>\n"
        "  <keepDependencies>false</keepDependencies>\n"
        + _parameters_xml(parameters)
        + '  <definition class="org.jenkinsci.plugins.workflow.cps.CpsFlowDefinition"'
        ' plugin="workflow-cps">\n'
        f"    <script>{escape(jenkinsfile)}</script>\n"
        "    <sandbox>true</sandbox>\n"
        "  </definition>\n"
        "  <triggers/>\n"
        "  <disabled>false</disabled>\n"
        "</flow-definition>\n"
    )


def safe_job_name(text: str) -> str:
    """A Jenkins item name from pipeline and step ids (matrix ids hold `[`, `]`, `=`, `,`)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")
    return cleaned or "ansflow"


def managed_job_name(prefix: str, *parts: str) -> str:
    """`ansflow-<pipeline>-<step>`: a job ansflow keeps; a `/` in the prefix names a folder."""
    folder, _, stem = prefix.rpartition("/")
    name = safe_job_name(stem + "-".join(parts))
    return f"{folder}/{name}" if folder else name
