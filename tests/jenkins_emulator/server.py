"""The HTTP layer: a ThreadingHTTPServer on 127.0.0.1 speaking Jenkins' REST dialect.

Order of checks per request mirrors Jenkins' filter chain, so misuse is refused the way Jenkins
refuses it: authentication first (401), then the CSRF crumb on every POST (403, before the URL is
even looked at), then URL resolution (404), then the method (405 for a GET on a POST-only action).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import html
import json
import secrets
import socket
import threading
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeAlias
from urllib.parse import parse_qs, unquote, urlsplit

from . import api
from .builds import Build
from .config import PIPELINE
from .jenkinsfile import JenkinsfileSyntaxError, parse_jenkinsfile
from .jobs import ApiError, Folder, Item, JenkinsModel, Job

CRUMB_FIELD = "Jenkins-Crumb"
Headers: TypeAlias = "Mapping[str, str] | Message[str, str]"
_BUILD_ALIASES = (
    "lastBuild",
    "lastCompletedBuild",
    "lastSuccessfulBuild",
    "lastStableBuild",
    "lastFailedBuild",
    "lastUnstableBuild",
    "lastUnsuccessfulBuild",
)
PLUGINS = (
    ("workflow-aggregator", "600.vb_57cdd26fdd7", "Pipeline"),
    ("workflow-job", "1400.v7fd111b_ec82f", "Pipeline: Job"),
    ("workflow-cps", "3908.vd6b_b_5a_a_54010", "Pipeline: Groovy"),
    ("pipeline-model-definition", "2.2214.vb_b_34b_2ea_9b_83", "Pipeline: Declarative"),
    ("pipeline-stage-view", "2.34", "Pipeline: Stage View"),
    ("pipeline-rest-api", "2.34", "Pipeline: REST API"),
    ("cloudbees-folder", "6.928.v7c780211d66e", "Folders"),
)


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    reason: str | None = None


def _json(data: Any, status: int = 200) -> Response:
    body = json.dumps(data).encode()
    return Response(status, body, [("Content-Type", "application/json;charset=utf-8")])


def _text(text: str | bytes, status: int = 200, ctype: str = "text/plain") -> Response:
    body = text.encode() if isinstance(text, str) else text
    return Response(status, body, [("Content-Type", f"{ctype};charset=utf-8")])


def _page(title: str) -> Response:
    return _text(
        f"<!DOCTYPE html><html><head><title>{html.escape(title)} [Jenkins]</title></head>"
        f"<body><h1>{html.escape(title)}</h1></body></html>",
        ctype="text/html",
    )


def _error(status: int, message: str) -> Response:
    resp = _text(
        f"<html><head><title>Error {status} {html.escape(message)}</title></head>"
        f"<body><h2>HTTP ERROR {status} {html.escape(message)}</h2>"
        f"<p>{html.escape(message)}</p></body></html>",
        status,
        "text/html",
    )
    # Jetty puts the message in the status line; python-jenkins quotes `reason` in its errors.
    reason = message.splitlines()[0][:200] if message else ""
    reason = reason.replace("‘", "'").replace("’", "'").replace("“", '"').replace("”", '"')
    resp.reason = reason.encode("latin-1", "replace").decode("latin-1") or None
    return resp


def _redirect(location: str) -> Response:
    return Response(302, b"", [("Location", location)])


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], app: JenkinsHttp) -> None:
        self.app = app
        self.conns: set[socket.socket] = set()
        self.conns_lock = threading.Lock()
        super().__init__(addr, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.conns_lock:
            self.conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.conns_lock:
            self.conns.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """Cut kept-alive client connections too: an unreachable Jenkins answers nothing."""
        with self.conns_lock:
            conns = list(self.conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like Jetty
    server_version = "Jetty(10.0.20)"
    sys_version = ""
    server: _Server

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self, method: str) -> None:
        body = self._read_body()
        resp = self.server.app.handle(method, self.path, self.headers, body)
        self.send_response(resp.status, resp.reason)
        for key, value in resp.headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(resp.body)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(resp.body)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request stderr lines; `JenkinsEmulator.requests` records them."""


class JenkinsHttp:
    """Request handling plus the listening socket's lifecycle (start, go away, come back)."""

    def __init__(
        self,
        model: JenkinsModel,
        *,
        users: Mapping[str, str],
        version: str,
        crumb_exempt_api_tokens: bool = False,
        read_only_users: frozenset[str] = frozenset(),
    ) -> None:
        self.model = model
        self.users = dict(users)
        self.read_only_users = read_only_users
        self.version = version
        self.crumb_exempt_api_tokens = crumb_exempt_api_tokens
        self.session = secrets.token_hex(4)
        self._salt = secrets.token_bytes(16)
        self.requests: list[tuple[str, str]] = []
        self._log_lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self, port: int = 0) -> None:
        server = None
        deadline = time.monotonic() + 5.0
        while server is None:
            try:
                server = _Server(("127.0.0.1", port), self)
            except OSError:
                # Rebinding the same port right after closing it can race a lingering socket.
                if port == 0 or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="jenkins-http"
        )
        self._thread.daemon = True
        self._thread.start()

    def close(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        server.drop_connections()
        if thread is not None:
            thread.join(2.0)

    @property
    def listening(self) -> bool:
        return self._server is not None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    # ------------------------------------------------------------------ helpers
    def crumb_for(self, user: str) -> str:
        """Tied to the user (real Jenkins also ties it to the web session)."""
        return hmac.new(self._salt, user.encode(), hashlib.sha256).hexdigest()

    def _authenticate(self, headers: Headers) -> tuple[str | None, Response | None]:
        auth = headers.get("Authorization") or ""
        if not auth.lower().startswith("basic "):
            return None, self._unauthorized("Authentication required")
        try:
            decoded = base64.b64decode(auth[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None, self._unauthorized("Authentication required")
        user, _, token = decoded.partition(":")
        expected = self.users.get(user)
        if expected is None or not hmac.compare_digest(expected.encode(), token.encode()):
            return None, self._unauthorized(f"Invalid password/token for user: {user}")
        return user, None

    def _unauthorized(self, message: str) -> Response:
        resp = _error(401, message)
        resp.headers.append(("WWW-Authenticate", 'Basic realm="Jenkins"'))
        return resp

    def _crumb_ok(self, user: str, headers: Headers, form: dict[str, str]) -> bool:
        if self.crumb_exempt_api_tokens:
            return True
        sent = headers.get(CRUMB_FIELD) or form.get(CRUMB_FIELD) or form.get(".crumb") or ""
        return hmac.compare_digest(sent.encode(), self.crumb_for(user).encode())

    # ------------------------------------------------------------------ dispatch
    def handle(self, method: str, raw_path: str, headers: Headers, body: bytes) -> Response:
        with self._log_lock:
            self.requests.append((method, raw_path))
        if method not in ("GET", "POST", "HEAD"):
            resp = _error(405, f"HTTP method {method} not supported")
        else:
            try:
                resp = self._handle(method, raw_path, headers, body)
            except Exception:  # an emulator bug: answer like Jenkins' "Oops!" page, keep serving
                resp = _error(500, traceback.format_exc())
        resp.headers.extend(
            [
                ("X-Jenkins", self.version),
                ("X-Jenkins-Session", self.session),
                ("X-Hudson", "1.395"),
            ]
        )
        return resp

    def _handle(self, method: str, raw_path: str, headers: Headers, body: bytes) -> Response:
        url = urlsplit(raw_path)
        query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        segs = [unquote(s) for s in url.path.split("/") if s]
        if segs[:1] == ["login"]:
            return _page("Sign in")
        user, denied = self._authenticate(headers)
        if denied is not None or user is None:
            return denied or self._unauthorized("Authentication required")
        form: dict[str, str] = {}
        ctype = headers.get("Content-Type") or ""
        if method == "POST" and ctype.startswith("application/x-www-form-urlencoded"):
            parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
            form = {k: v[0] for k, v in parsed.items()}
        if method == "POST" and not self._crumb_ok(user, headers, {**query, **form}):
            resp = _error(403, "No valid crumb was included in the request")
            return resp
        req = _Request(method, segs, query, form, body, user, ctype, user in self.read_only_users)
        try:
            with self.model.cond:
                return self._route(req)
        except ApiError as exc:
            return _error(exc.status, exc.message)

    def _route(self, req: _Request) -> Response:
        segs = req.segs
        names: list[str] = []
        i = 0
        while i + 1 < len(segs) and segs[i] == "job":
            names.append(segs[i + 1])
            i += 2
        if i < len(segs) and segs[i] == "job":
            raise ApiError(404, "Not Found")
        rest = segs[i:]
        item = self.model.resolve(names) if names else self.model.root
        if isinstance(item, Folder):
            return self._folder(req, item, rest, is_root=not names)
        assert isinstance(item, Job)
        return self._job(req, item, rest)

    # ------------------------------------------------------------------ root and folders
    def _folder(self, req: _Request, folder: Folder, rest: list[str], *, is_root: bool) -> Response:
        base = self.base_url
        if not rest:
            return _page("Dashboard" if is_root else folder.name)
        if rest == ["api", "json"]:
            data = api.root_json(self.model, base) if is_root else api.folder_json(folder, base)
            return self._api(req, data)
        if rest == ["createItem"]:
            req.require_post()
            req.require("Job/Create")
            return self._create_item(req, folder)
        if rest == ["configure"] and not is_root:
            return _page(f"{folder.name} Config")
        if not is_root:
            if rest == ["config.xml"]:
                return self._config_xml(req, folder)
            if rest == ["doDelete"]:
                req.require_post()
                req.require("Job/Delete")
                self.model.delete_item(folder, req.user)
                return _redirect(base + (folder.parent.url_path if folder.parent else ""))
            raise ApiError(404, "Not Found")
        return self._root_only(req, rest)

    def _root_only(self, req: _Request, rest: list[str]) -> Response:
        base = self.base_url
        if rest == ["crumbIssuer", "api", "json"]:
            return self._api(
                req,
                {
                    "_class": "hudson.security.csrf.DefaultCrumbIssuer",
                    "crumb": self.crumb_for(req.user),
                    "crumbRequestField": CRUMB_FIELD,
                },
            )
        if rest in (["me", "api", "json"], ["user", req.user, "api", "json"]):
            return self._api(
                req,
                {
                    "_class": "hudson.model.User",
                    "absoluteUrl": f"{base}user/{req.user}",
                    "description": None,
                    "fullName": req.user,
                    "id": req.user,
                    "property": [],
                },
            )
        if rest == ["whoAmI", "api", "json"]:
            return self._api(
                req,
                {
                    "_class": "hudson.security.WhoAmI",
                    "anonymous": False,
                    "authenticated": True,
                    "authorities": ["authenticated"],
                    "details": None,
                    "name": req.user,
                    "toString": f"Username: {req.user}",
                },
            )
        if rest[:1] == ["queue"]:
            return self._queue(req, rest[1:])
        if rest == ["computer", "api", "json"]:
            return self._api(req, self._computers())
        if rest in (
            ["computer", "(master)", "api", "json"],
            ["computer", "(built-in)", "api", "json"],
        ):
            return self._api(req, self._computers()["computer"][0])
        if rest == ["pipeline-model-converter", "validateJenkinsfile"]:
            req.require_post()
            return _json(_validate(req.form.get("jenkinsfile", "")))
        if rest == ["pluginManager", "api", "json"]:
            plugins = [
                {"active": True, "enabled": True, "shortName": s, "version": v, "longName": n}
                for s, v, n in PLUGINS
            ]
            return self._api(req, {"_class": "hudson.LocalPluginManager", "plugins": plugins})
        raise ApiError(404, "Not Found")

    def _computers(self) -> dict[str, Any]:
        running = [
            b for job in _all_jobs(self.model.root) for b in job.builds.values() if b.building
        ]
        executors = [
            {
                "currentExecutable": {
                    "_class": api.BUILD_CLASS[b.kind],
                    "number": b.number,
                    "url": b.url,
                },
                "idle": False,
                "number": n,
            }
            for n, b in enumerate(running)
        ]
        comp = {
            "_class": "hudson.model.Hudson$MasterComputer",
            "displayName": "Built-In Node",
            "executors": executors,
            "idle": not running,
            "numExecutors": max(2, len(running)),
            "offline": False,
            "temporarilyOffline": False,
        }
        return {
            "_class": "hudson.model.ComputerSet",
            "busyExecutors": len(running),
            "computer": [comp],
            "displayName": "Nodes",
            "totalExecutors": comp["numExecutors"],
        }

    def _queue(self, req: _Request, rest: list[str]) -> Response:
        if rest == ["api", "json"]:
            return self._api(req, api.queue_json(self.model, self.base_url))
        if len(rest) == 4 and rest[0] == "item" and rest[2:] == ["api", "json"]:
            qi = self.model.queue.get(_int(rest[1]))
            if qi is None:
                raise ApiError(404, "Not Found")
            return self._api(req, api.queue_item_json(self.model, qi, self.base_url))
        if rest == ["cancelItem"]:
            req.require_post()
            req.require("Job/Cancel")
            item_id = _int(req.query.get("id", req.form.get("id", "")))
            if not self.model.cancel(item_id):
                raise ApiError(404, f"Provided id parameter {item_id} is not in the queue")
            return Response(204)
        raise ApiError(404, "Not Found")

    def _create_item(self, req: _Request, folder: Folder) -> Response:
        name = req.query.get("name") or req.form.get("name") or ""
        mode = req.query.get("mode") or req.form.get("mode")
        if mode == "copy":
            src = req.query.get("from") or req.form.get("from") or ""
            self.model.copy_item(folder, name, src)
            return _text("")
        if mode == "com.cloudbees.hudson.plugins.folder.Folder":
            from .config import folder_xml

            created = self.model.create_item(folder, name, folder_xml())
            return _redirect(self.base_url + created.url_path + "configure")
        if mode:
            raise ApiError(400, f"emulator: item type {mode} is not implemented")
        if not req.body.strip():
            raise ApiError(400, "No mode given")
        self.model.create_item(folder, name, req.body)
        return _text("")

    def _config_xml(self, req: _Request, item: Item) -> Response:
        if req.method == "POST":
            req.require("Job/Configure")
            self.model.update_config(item, req.body)
            return _text("")
        return _text(item.config_xml, ctype="application/xml")

    # ------------------------------------------------------------------ jobs
    def _job(self, req: _Request, job: Job, rest: list[str]) -> Response:
        base = self.base_url
        if not rest:
            return _page(job.name)
        head = rest[0]
        if rest == ["api", "json"]:
            tree = req.query.get("tree", "")
            return self._api(
                req, api.job_json(self.model, job, base, all_builds="allBuilds" in tree)
            )
        if rest == ["config.xml"]:
            return self._config_xml(req, job)
        if rest == ["configure"]:
            return _page(f"{job.name} Config")
        if rest in (["build"], ["buildWithParameters"]):
            req.require_post()
            req.require("Job/Build")
            submitted = {**req.query, **req.form}
            submitted.pop("delay", None)
            submitted.pop("token", None)
            submitted.pop(CRUMB_FIELD, None)
            with_params = head == "buildWithParameters"
            qi = self.model.schedule(
                job,
                submitted if (with_params or "json" in req.form) else None,
                req.user,
                with_params=with_params,
            )
            return Response(201, b"", [("Location", f"{base}queue/item/{qi.id}/")])
        if rest in (["doDelete"], ["enable"], ["disable"]):
            req.require_post()
            req.require("Job/Delete" if head == "doDelete" else "Job/Configure")
            if head == "doDelete":
                self.model.delete_item(job, req.user)
                parent = job.parent
                return _redirect(base + (parent.url_path if parent and parent.parent else ""))
            self.model.set_disabled(job, head == "disable")
            return _redirect(base + job.url_path)
        if head == "wfapi" and rest in (["wfapi"], ["wfapi", "describe"], ["wfapi", "runs"]):
            if job.kind != PIPELINE:
                raise ApiError(404, "Not Found")
            if rest[-1] == "runs":
                return _json(api.wfapi_runs(job, self.model.conditional_skip_status))
            return _json(api.job_wfapi(job, base))
        build: Build | None
        if head in _BUILD_ALIASES:
            build = job.last(head)
        elif head.isdigit():
            build = job.builds.get(int(head))
        else:
            raise ApiError(404, "Not Found")
        if build is None:
            raise ApiError(404, "Not Found")
        return self._build(req, job, build, rest[1:])

    def _build(self, req: _Request, job: Job, build: Build, rest: list[str]) -> Response:
        skip = self.model.conditional_skip_status
        if not rest:
            return _page(f"{job.name} {build.display_name}")
        if rest == ["api", "json"]:
            return self._api(req, api.build_json(job, build))
        if rest == ["consoleText"]:
            return _text(bytes(build.console))
        if rest in (["console"], ["consoleFull"]):
            return _text(
                html.escape(bytes(build.console).decode("utf-8", "replace")), ctype="text/html"
            )
        if rest == ["logText", "progressiveText"]:
            try:
                start = max(0, int(req.query.get("start") or 0))
            except ValueError:
                raise ApiError(500, "java.lang.NumberFormatException") from None
            chunk, size, more = build.console_from(start)
            resp = _text(chunk)
            resp.headers.append(("X-Text-Size", str(size)))
            if more:
                resp.headers.append(("X-More-Data", "true"))
            return resp
        if rest in (["stop"], ["term"], ["kill"]):
            req.require_post()
            req.require("Job/Cancel")
            self.model.stop_build(build, req.user)
            # Run.doStop answers forwardToPreviousPage: a redirect back to the build.
            return _redirect(build.url)
        if rest == ["doDelete"]:
            req.require_post()
            req.require("Run/Delete")
            if build.building:
                raise ApiError(
                    400, f"Unable to delete {job.full_name} {build.display_name}: build in progress"
                )
            del job.builds[build.number]
            return _redirect(self.base_url + job.url_path)
        if build.kind != PIPELINE:
            raise ApiError(404, "Not Found")
        if rest in (["wfapi"], ["wfapi", "describe"]):
            return _json(api.run_describe(build, skip))
        if len(rest) >= 3 and rest[0] == "execution" and rest[1] == "node":
            node = build.nodes.get(rest[2])
            if node is None:
                raise ApiError(404, "Not Found")
            tail = rest[3:]
            if tail in (["wfapi"], ["wfapi", "describe"]):
                return _json(api.node_describe(build, node, skip))
            if tail == ["wfapi", "log"]:
                return _json(api.node_log(build, node, skip))
            if tail == ["log"]:
                return _text(
                    html.escape(bytes(node.log).decode("utf-8", "replace")), ctype="text/html"
                )
        raise ApiError(404, "Not Found")

    def _api(self, req: _Request, data: Any) -> Response:
        tree = req.query.get("tree")
        if tree:
            data = api.apply_tree(data, api.parse_tree(tree))
        return _json(data)


@dataclass
class _Request:
    method: str
    segs: list[str]
    query: dict[str, str]
    form: dict[str, str]
    body: bytes
    user: str
    content_type: str
    read_only: bool = False

    def require_post(self) -> None:
        """@RequirePOST: anything but POST gets 405."""
        if self.method != "POST":
            raise ApiError(405, "This URL requires POST")

    def require(self, permission: str) -> None:
        """checkPermission: a read-only user gets Jenkins' AccessDeniedException3 (403)."""
        if self.read_only:
            raise ApiError(403, f"{self.user} is missing the {permission} permission")


def _validate(source: str) -> dict[str, Any]:
    """ModelConverterAction.doValidateJenkinsfile: errors carry line, column and message."""
    try:
        parse_jenkinsfile(source)
    except JenkinsfileSyntaxError as exc:
        error = {"line": exc.line, "column": exc.col, "message": exc.message}
        return {"status": "ok", "data": {"result": "failure", "errors": [error]}}
    return {"status": "ok", "data": {"result": "success"}}


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ApiError(404, "Not Found") from None


def _all_jobs(folder: Folder) -> list[Job]:
    out: list[Job] = []
    for item in folder.items.values():
        if isinstance(item, Job):
            out.append(item)
        elif isinstance(item, Folder):
            out.extend(_all_jobs(item))
    return out
