"""The JSON documents Jenkins serves under `.../api/json` and the Pipeline REST API (`wfapi`).

Field names, `_class` values and what is absent (rather than null) follow what Jenkins exports,
because clients break on exactly those details: a waiting queue item has no `executable` key at
all, a PasswordParameterValue has no `value`, a Pipeline run's `result` can be set while
`building` is still true.

All functions must be called with the model's lock held.
"""

from __future__ import annotations

import html
import time
from typing import Any

from .builds import Build, FlowNode
from .config import FOLDER, PARAM_DEF_CLASS, PARAM_VALUE_CLASS, PIPELINE
from .jobs import Folder, Item, JenkinsModel, Job, QueueItem
from .pipeline import node_duration_ms, stage_status

BUILD_CLASS = {
    "freestyle": "hudson.model.FreeStyleBuild",
    PIPELINE: "org.jenkinsci.plugins.workflow.job.WorkflowRun",
}
_COLORS = {
    None: "notbuilt",
    "SUCCESS": "blue",
    "UNSTABLE": "yellow",
    "FAILURE": "red",
    "NOT_BUILT": "notbuilt",
    "ABORTED": "aborted",
}
# FlowNodeLogExt.maxReturnChars: the node log endpoint only returns the last 10 KiB.
NODE_LOG_MAX = 10 * 1024


def _build_ref(build: Build | None) -> dict[str, Any] | None:
    if build is None:
        return None
    return {"_class": BUILD_CLASS[build.kind], "number": build.number, "url": build.url}


def job_color(job: Job) -> str:
    if job.disabled:
        return "disabled"
    last = job.last("lastCompletedBuild")
    color = _COLORS[last.result if last else None]
    return color + "_anime" if job.running() else color


def item_summary(item: Item, base: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "_class": item.java_class,
        "name": item.name,
        "url": base + item.url_path,
    }
    if isinstance(item, Job):
        out["color"] = job_color(item)
    if isinstance(item, Folder):
        out["jobs"] = [item_summary(child, base) for child in item.items.values()]
    return out


def root_json(model: JenkinsModel, base: str) -> dict[str, Any]:
    return {
        "_class": "hudson.model.Hudson",
        "assignedLabels": [{"name": "built-in"}],
        "mode": "NORMAL",
        "nodeDescription": "the Jenkins controller's built-in node",
        "nodeName": "",
        "numExecutors": 2,
        "description": None,
        "jobs": [item_summary(i, base) for i in model.root.items.values()],
        "overallLoad": {},
        "primaryView": {"_class": "hudson.model.AllView", "name": "all", "url": base},
        "quietDownReason": None,
        "quietingDown": False,
        "slaveAgentPort": -1,
        "unlabeledLoad": {"_class": "jenkins.model.UnlabeledLoadStatistics"},
        "url": base,
        "useCrumbs": True,
        "useSecurity": True,
        "views": [{"_class": "hudson.model.AllView", "name": "all", "url": base}],
    }


def folder_json(folder: Folder, base: str) -> dict[str, Any]:
    return {
        "_class": folder.java_class,
        "actions": [],
        "description": folder.config.description or None,
        "displayName": folder.name,
        "fullDisplayName": folder.full_name.replace("/", " » "),
        "fullName": folder.full_name,
        "name": folder.name,
        "url": base + folder.url_path,
        "jobs": [item_summary(i, base) for i in folder.items.values()],
        "primaryView": {"_class": "hudson.model.AllView", "name": "All", "url": base},
        "views": [],
    }


def _param_definitions(job: Job) -> list[dict[str, Any]]:
    out = []
    for p in job.parameters:
        value_cls = PARAM_VALUE_CLASS[p.kind]
        default: dict[str, Any] = {"_class": value_cls, "name": p.name}
        if p.kind != "password":
            default["value"] = p.default
        entry: dict[str, Any] = {
            "_class": PARAM_DEF_CLASS[p.kind],
            "defaultParameterValue": default,
            "description": p.description,
            "name": p.name,
            "type": PARAM_DEF_CLASS[p.kind].rsplit(".", 1)[-1],
        }
        if p.kind == "choice":
            entry["choices"] = list(p.choices)
        out.append(entry)
    return out


def job_json(model: JenkinsModel, job: Job, base: str, *, all_builds: bool) -> dict[str, Any]:
    numbers = sorted(job.builds, reverse=True)
    refs = [_build_ref(job.builds[n]) for n in numbers]
    waiting = [q for q in model.queue.values() if q.job is job and q.state == "waiting"]
    props: list[dict[str, Any]] = []
    if job.parameters:
        props.append(
            {
                "_class": "hudson.model.ParametersDefinitionProperty",
                "parameterDefinitions": _param_definitions(job),
            }
        )
    actions: list[dict[str, Any]] = [dict(p) for p in props]  # Jenkins lists it under both
    first = job.builds[numbers[-1]] if numbers else None
    out: dict[str, Any] = {
        "_class": job.java_class,
        "actions": actions,
        "description": job.config.description or None,
        "displayName": job.name,
        "displayNameOrNull": None,
        "fullDisplayName": job.full_name.replace("/", " » "),
        "fullName": job.full_name,
        "name": job.name,
        "url": base + job.url_path,
        "buildable": not job.disabled,
        "builds": refs[:100],
        "color": job_color(job),
        "firstBuild": _build_ref(first),
        "healthReport": [],
        "inQueue": bool(waiting),
        "keepDependencies": False,
        "lastBuild": _build_ref(job.last("lastBuild")),
        "lastCompletedBuild": _build_ref(job.last("lastCompletedBuild")),
        "lastFailedBuild": _build_ref(job.last("lastFailedBuild")),
        "lastStableBuild": _build_ref(job.last("lastStableBuild")),
        "lastSuccessfulBuild": _build_ref(job.last("lastSuccessfulBuild")),
        "lastUnstableBuild": _build_ref(job.last("lastUnstableBuild")),
        "lastUnsuccessfulBuild": _build_ref(job.last("lastUnsuccessfulBuild")),
        "nextBuildNumber": job.next_build_number,
        "property": props,
        "queueItem": queue_item_json(model, waiting[0], base) if waiting else None,
        "concurrentBuild": job.config.concurrent,
        "disabled": job.disabled,
        "resumeBlocked": False,
    }
    if job.kind != PIPELINE:
        out["downstreamProjects"] = []
        out["upstreamProjects"] = []
        out["scm"] = {"_class": "hudson.scm.NullSCM"}
    if all_builds:
        out["allBuilds"] = refs
    return out


def _parameter_values(params: list[tuple[str, str, str | bool]]) -> list[dict[str, Any]]:
    out = []
    for kind, name, value in params:
        entry: dict[str, Any] = {"_class": PARAM_VALUE_CLASS[kind], "name": name}
        if kind != "password":  # PasswordParameterValue does not export its value
            entry["value"] = value
        out.append(entry)
    return out


def _actions(params: list[tuple[str, str, str | bool]], user: str) -> list[dict[str, Any]]:
    actions: list[dict[str, Any]] = []
    if params:
        actions.append(
            {"_class": "hudson.model.ParametersAction", "parameters": _parameter_values(params)}
        )
    actions.append(
        {
            "_class": "hudson.model.CauseAction",
            "causes": [
                {
                    "_class": "hudson.model.Cause$UserIdCause",
                    "shortDescription": f"Started by user {user}",
                    "userId": user,
                    "userName": user,
                }
            ],
        }
    )
    return actions


def build_json(job: Job, build: Build) -> dict[str, Any]:
    duration = 0 if build.building else (build.end_ms or 0) - build.timestamp_ms
    numbers = sorted(job.builds)
    idx = numbers.index(build.number)
    prev = job.builds[numbers[idx - 1]] if idx > 0 else None
    nxt = job.builds[numbers[idx + 1]] if idx + 1 < len(numbers) else None
    out: dict[str, Any] = {
        "_class": BUILD_CLASS[build.kind],
        "actions": _actions(build.parameters, build.user),
        "artifacts": [],
        "building": build.building,
        "description": None,
        "displayName": build.display_name,
        "duration": duration,
        "estimatedDuration": build.estimated_ms,
        "executor": {"_class": "hudson.model.OneOffExecutor"} if build.building else None,
        "fullDisplayName": f"{job.full_name.replace('/', ' » ')} {build.display_name}",
        "id": str(build.number),
        "keepLog": False,
        "number": build.number,
        "queueId": build.queue_id,
        "result": build.result if (build.kind == PIPELINE or not build.building) else None,
        "timestamp": build.timestamp_ms,
        "url": build.url,
        "changeSets": [],
        "culprits": [],
        "nextBuild": _build_ref(nxt),
        "previousBuild": _build_ref(prev),
    }
    if build.kind == PIPELINE:
        out["inProgress"] = build.building
    else:
        out["builtOn"] = ""
        out["changeSet"] = {"_class": "hudson.scm.EmptyChangeLogSet", "items": [], "kind": None}
    return out


def queue_item_json(model: JenkinsModel, qi: QueueItem, base: str) -> dict[str, Any]:
    cls, why = model.queue_why(qi)
    out: dict[str, Any] = {
        "_class": cls,
        "actions": _actions(qi.parameters, qi.user),
        "blocked": cls == "hudson.model.Queue$BlockedItem",
        "buildable": cls == "hudson.model.Queue$BuildableItem",
        "id": qi.id,
        "inQueueSince": qi.since_ms,
        "params": "".join(f"\n{n}={'****' if k == 'password' else v}" for k, n, v in qi.parameters),
        "stuck": False,
        "task": {
            "_class": qi.job.java_class,
            "name": qi.job.name,
            "url": base + qi.job.url_path,
            "color": job_color(qi.job),
        },
        "url": f"queue/item/{qi.id}/",
        "why": why,
    }
    if cls == "hudson.model.Queue$BuildableItem":
        out["pending"] = False
    if cls == "hudson.model.Queue$WaitingItem":
        out["timestamp"] = qi.since_ms + int(model.queue_delay * 1000)
    if qi.state != "waiting":
        # Only a LeftItem has these two; a waiting item has neither key.
        out["cancelled"] = qi.state == "cancelled"
        out["executable"] = (
            {
                "_class": BUILD_CLASS[qi.build.kind],
                "number": qi.build.number,
                "url": qi.build.url,
            }
            if qi.build is not None
            else None
        )
    return out


def queue_json(model: JenkinsModel, base: str) -> dict[str, Any]:
    items = [queue_item_json(model, q, base) for q in model.queue.values() if q.state == "waiting"]
    return {"_class": "hudson.model.Queue", "discoverableItems": [], "items": items}


# ---------------------------------------------------------------------- Pipeline REST API


def _node_links(build: Build, node: FlowNode, with_log: bool) -> dict[str, Any]:
    path = _rel(build) + f"execution/node/{node.id}/"
    links: dict[str, Any] = {"self": {"href": path + "wfapi/describe"}}
    if with_log:
        links["log"] = {"href": path + "wfapi/log"}
    return links


def _rel(build: Build) -> str:
    """Stage view links are root-relative paths, not absolute URLs."""
    return "/" + build.url.split("/", 3)[3]


def _flow_node_json(
    build: Build, node: FlowNode, skip_status: str, *, atom: bool
) -> dict[str, Any]:
    status = stage_status(node, skip_status)
    out: dict[str, Any] = {
        "_links": _node_links(build, node, atom),
        "id": node.id,
        "name": node.name,
        "execNode": "",
        "status": status,
        "startTimeMillis": node.start_ms,
        "durationMillis": node_duration_ms(node),
        "pauseDurationMillis": 0,
    }
    if node.error is not None and status in ("FAILED", "ABORTED"):
        message, java_type = node.error
        out["error"] = {"message": message, "type": java_type}
    if atom:
        if node.param_desc is not None:
            out["parameterDescription"] = node.param_desc
        out["parentNodes"] = [node.parent] if node.parent else []
    return out


def run_status(build: Build) -> str:
    if build.building:
        return "IN_PROGRESS"
    return {
        "SUCCESS": "SUCCESS",
        "UNSTABLE": "UNSTABLE",
        "FAILURE": "FAILED",
        "ABORTED": "ABORTED",
        "NOT_BUILT": "NOT_EXECUTED",
    }.get(build.result or "", "FAILED")


def stages_in_order(build: Build) -> list[FlowNode]:
    nodes = [build.nodes[i] for i in build.stage_order]
    return sorted(nodes, key=lambda n: (n.start_ms, int(n.id)))


def run_describe(build: Build, skip_status: str) -> dict[str, Any]:
    stages = stages_in_order(build)
    now = int(time.time() * 1000)
    end = now if build.building else (build.end_ms or now)
    queue = (stages[0].start_ms - build.timestamp_ms) if stages else 0
    return {
        "_links": {"self": {"href": _rel(build) + "wfapi/describe"}},
        "id": str(build.number),
        "name": build.display_name,
        "status": run_status(build),
        "startTimeMillis": build.timestamp_ms,
        "endTimeMillis": end,
        "durationMillis": max(0, end - build.timestamp_ms - max(queue, 0)),
        "queueDurationMillis": max(queue, 0),
        "pauseDurationMillis": 0,
        "stages": [_flow_node_json(build, s, skip_status, atom=False) for s in stages],
    }


def job_wfapi(job: Job, base: str) -> dict[str, Any]:
    path = "/" + job.url_path
    return {
        "_links": {
            "self": {"href": path + "wfapi/describe"},
            "runs": {"href": path + "wfapi/runs"},
        },
        "name": job.name,
        "runCount": len(job.builds),
    }


def node_describe(build: Build, node: FlowNode, skip_status: str) -> dict[str, Any]:
    if node.kind == "atom":
        return _flow_node_json(build, node, skip_status, atom=True)
    out = _flow_node_json(build, node, skip_status, atom=False)
    out["stageFlowNodes"] = [
        _flow_node_json(build, build.nodes[c], skip_status, atom=True) for c in node.children
    ]
    return out


def node_log(build: Build, node: FlowNode, skip_status: str) -> dict[str, Any]:
    text = bytes(node.log).decode("utf-8", "replace")
    length = min(NODE_LOG_MAX, len(text))
    out: dict[str, Any] = {
        "nodeId": node.id,
        "nodeStatus": stage_status(node, skip_status),
        "length": length,
        "hasMore": len(text) > NODE_LOG_MAX,
        "consoleUrl": _rel(build) + f"execution/node/{node.id}/log",
    }
    if text:
        # writeHtmlTo: the tail of the log, HTML-escaped.
        out["text"] = html.escape(text[len(text) - length :], quote=False)
    return out


def wfapi_runs(job: Job, skip_status: str) -> list[dict[str, Any]]:
    return [run_describe(job.builds[n], skip_status) for n in sorted(job.builds, reverse=True)]


# ---------------------------------------------------------------------- ?tree=


def parse_tree(spec: str) -> dict[str, Any]:
    """`a,b[c,d]{0,5}` -> {"a": None, "b": ({"c": None, "d": None}, (0, 5))}."""
    pos = 0

    def parse_list() -> dict[str, Any]:
        nonlocal pos
        out: dict[str, Any] = {}
        while pos < len(spec):
            start = pos
            while pos < len(spec) and spec[pos] not in ",[]{}":
                pos += 1
            name = spec[start:pos].strip()
            sub: dict[str, Any] | None = None
            rng: tuple[int | None, int | None] | None = None
            if pos < len(spec) and spec[pos] == "[":
                pos += 1
                sub = parse_list()
                if pos < len(spec) and spec[pos] == "]":
                    pos += 1
            if pos < len(spec) and spec[pos] == "{":
                end = spec.index("}", pos)
                lo, _, hi = spec[pos + 1 : end].partition(",")
                rng = (int(lo) if lo.strip() else None, int(hi) if hi.strip() else None)
                pos = end + 1
            if name:
                out[name] = (sub, rng)
            if pos < len(spec) and spec[pos] == ",":
                pos += 1
                continue
            break
        return out

    return parse_list()


def apply_tree(value: Any, tree: dict[str, Any]) -> Any:
    """Keep only the requested properties, as Jenkins' `tree` does (`_class` always stays)."""
    if isinstance(value, list):
        return [apply_tree(v, tree) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    if "_class" in value:
        out["_class"] = value["_class"]
    for key, (sub, rng) in tree.items():
        if key not in value:
            continue
        v = value[key]
        if isinstance(v, list) and rng is not None:
            lo, hi = rng
            v = v[lo or 0 : hi]
        if sub is not None:
            out[key] = apply_tree(v, sub)
        else:
            out[key] = _leaf(v)
    return out


def _leaf(v: Any) -> Any:
    """A property named without sub-properties: exported objects collapse to their `_class`."""
    if isinstance(v, list):
        return [_leaf(x) for x in v]
    if isinstance(v, dict):
        return {"_class": v["_class"]} if "_class" in v else {}
    return v


def is_folder(item: Item) -> bool:
    return item.config.kind == FOLDER
