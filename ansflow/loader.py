"""Pipeline file -> checked model and graph, or a LoadError listing every problem at file:line:col.

The stages run in order (YAML, schema, targets and graph, templates) and every problem of the file
is reported at once. A step or target the schema refuses is replaced by a stub that keeps only its
id, `needs` and `matrix` (or its type), so the graph checks still see the rest of the file; when
what was refused is something later checks depend on (a step's id, `vars`, the shape of `steps`),
the later checks are skipped rather than report follow-on errors of the first one.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ansflow import checks
from ansflow.errors import Diagnostic, LoadError
from ansflow.model import ID_PATTERN, SECRET_PATTERN, STEP_TYPE_NAMES, Pipeline, field_names_at
from ansflow.planner import Graph, GraphError, GraphProblem, Plan, build_graph, expand
from ansflow.yamlsrc import Document, Mark, YamlError, decode, line_col, parse, split_lines


@dataclass(frozen=True)
class LoadedPipeline:
    """A pipeline that passed every check, with what is needed to point back into its file."""

    path: Path
    text: str
    pipeline: Pipeline
    graph: Graph
    document: Document

    @property
    def name(self) -> str:
        return self.pipeline.name or self.path.stem

    def plan(self) -> Plan:
        return expand(self.pipeline, self.graph, self.name, str(self.path))

    def check_hosts(self) -> None:
        """Raise a located LoadError when an ssh target's hosts cannot be resolved."""
        problems = checks.host_problems(self.pipeline, self.path.parent)
        if problems:
            locator = _Locator(str(self.path), self.text, self.document)
            raise LoadError([locator.locate(p.path, p.message, p.at_key) for p in problems])


#: A source line longer than this is cut in messages (after the column pointed at).
SNIPPET_WIDTH = 120
#: Names of the tagged unions' members, which pydantic puts into error locations.
_UNION_TAGS = frozenset({*STEP_TYPE_NAMES, "parallel", "local", "ssh", "jenkins"})
_PATTERN_TEXT = {
    ID_PATTERN: "must be made of letters, digits, `_` and `-`",
    SECRET_PATTERN: "must be made of letters, digits and `_`, and not start with a digit",
}


def _printable(line: str) -> str:
    """The line with control characters (NUL, escape...) shown as U+FFFD; tabs are kept."""
    return "".join(c if c == "\t" or c.isprintable() else "\ufffd" for c in line)


def _without_tags(loc: Iterable[Any]) -> tuple[Any, ...]:
    """A pydantic location without the union tags it inserts after `steps[i]`, `targets[name]`
    and `steps[i].parallel[j]` (a tag `parallel` would otherwise be read as the key)."""
    out: list[Any] = []
    tag_next = False
    for part in loc:
        if tag_next:
            tag_next = False
            if isinstance(part, str) and part in _UNION_TAGS:
                continue
        out.append(part)
        tag_next = (len(out) == 2 and out[0] in ("steps", "targets")) or (
            len(out) == 4 and out[0] == "steps" and out[2] == "parallel" and isinstance(out[3], int)
        )
    return tuple(out)


class _Locator:
    """Maps a path in the document (or a pydantic error location) to a Diagnostic."""

    def __init__(self, file: str, text: str, document: Document | None) -> None:
        self.file = file
        self.lines = split_lines(text)
        self.text = text
        self.document = document

    def snippet(self, line: int | None, col: int | None = None) -> str | None:
        if line is None or not 1 <= line <= len(self.lines):
            return None
        text = self.lines[line - 1].rstrip("\r")
        # NOTE: only the tail is cut, so that the caret under the snippet stays in place.
        width = max(SNIPPET_WIDTH, (col or 0) + 40)
        if len(text) > width:
            text = text[:width] + " ..."
        return _printable(text)

    def at(self, line: int | None, col: int | None, message: str) -> Diagnostic:
        return Diagnostic(self.file, line, col, message, self.snippet(line, col))

    def at_end_if_past(self, line: int, col: int) -> tuple[int, int]:
        """A position after the last line (YAML's "got <stream end>") moved to the end of the
        last line that has text, so that the message can show it."""
        last = len(self.lines)
        while last > 0 and not self.lines[last - 1].strip():
            last -= 1
        if last == 0 or line <= last:
            return line, col
        return last, len(self.lines[last - 1].rstrip()) + 1

    def data_path(self, loc: Iterable[Any]) -> tuple[Any, ...]:
        """The part of a pydantic location that exists in the data (tags and wrappers dropped)."""
        if self.document is None:
            return ()
        current = self.document.data
        path: list[Any] = []
        for part in _without_tags(loc):
            in_dict = isinstance(current, dict) and part in current
            in_list = (
                isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current)
            )
            if in_dict or in_list:
                current = current[part]
                path.append(part)
        return tuple(path)

    def mark(self, path: tuple[Any, ...], at_key: bool = False) -> Mark | None:
        if self.document is None:
            return None
        probe = path
        while True:
            table = self.document.key_marks if at_key else self.document.marks
            if probe in table:
                return table[probe]
            if at_key and probe in self.document.marks:
                return self.document.marks[probe]
            if not probe:
                return None
            probe = probe[:-1]
            at_key = False

    def locate(
        self, path: tuple[Any, ...], message: str, at_key: bool = False, span: str | None = None
    ) -> Diagnostic:
        mark = self.mark(path, at_key)
        if mark is None:
            return (
                self.at(1, 1, message) if self.lines else Diagnostic(self.file, None, None, message)
            )
        line, col = mark.line, mark.col
        if span:
            found = self.text.find(span, mark.start, max(mark.end, mark.start + len(span)))
            if found < 0:
                found = self.text.find(span, mark.start)
            if found >= 0:
                line, col = line_col(self.text, found)
        return self.at(line, col, message)

    def step_label(self, path: tuple[Any, ...]) -> str | None:
        """`step 'build'` (or `target 'web'`) for a location inside one, to name it in messages."""
        if self.document is None or len(path) < 2:
            return None
        if path[0] == "targets":
            return f"target {path[1]!r}"
        if path[0] != "steps":
            return None
        steps = self.document.data.get("steps") if isinstance(self.document.data, dict) else None
        member = len(path) >= 4 and path[2] == "parallel" and isinstance(path[3], int)
        try:
            item = steps[path[1]]  # type: ignore[index]
            if member:
                item = item["parallel"][path[3]]
        except (KeyError, IndexError, TypeError):
            return None
        if isinstance(item, dict) and "parallel" in item and not member:
            return f"parallel block (entry {path[1] + 1})"
        if isinstance(item, dict) and isinstance(item.get("id"), str):
            return f"step {item['id']!r}"
        if member:
            return f"step #{path[1] + 1}, parallel member {path[3] + 1}"
        return f"step #{path[1] + 1}"


def read_source(path: Path) -> bytes:
    """The file's bytes, or a LoadError naming the file and why it cannot be read."""
    from ansflow.yamlsrc import MAX_BYTES

    try:
        # NOTE: read one byte past the limit, never the whole of /dev/zero or a FIFO's stream.
        with path.open("rb") as handle:
            return handle.read(MAX_BYTES + 1)
    except FileNotFoundError:
        hint = " (create one with `ansflow init`)" if path.name == "ansflow.yml" else ""
        message = f"no such file{hint}"
    except IsADirectoryError:
        message = "is a folder, not a pipeline file"
    except PermissionError:
        message = "permission denied"
    except OSError as exc:
        message = exc.strerror or str(exc)
    raise LoadError([Diagnostic(str(path), None, None, message)])


def load_file(path: str | Path) -> LoadedPipeline:
    """Read, parse and check a pipeline file."""
    file_path = Path(path)
    return load_text(read_source(file_path), file_path)


def load_text(raw: bytes | str, path: Path) -> LoadedPipeline:
    """Parse and check pipeline text; `path` names it in messages and anchors relative paths."""
    file = str(path)
    text = ""
    try:
        text = raw if isinstance(raw, str) else decode(raw)
        document = parse(text, keep_going=True)
    except YamlError as exc:
        if not text and isinstance(raw, bytes):
            # NOTE: not UTF-8; decode leniently only to show the offending line.
            text = raw.decode("utf-8", errors="replace")
        locator = _Locator(file, text, None)
        raise LoadError(
            [locator.at(*locator.at_end_if_past(p.line, p.col), p.message) for p in exc.problems]
        ) from None
    locator = _Locator(file, text, document)
    found = [locator.at(p.line, p.col, p.message) for p in document.problems]
    data = document.data
    if data is None:
        found.append(
            Diagnostic(file, 1, 1, "the file is empty; a pipeline is a mapping with `steps:`")
        )
        raise LoadError(_in_file_order(found))
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else f"a single value ({type(data).__name__})"
        found.append(
            locator.locate((), f"the top level must be a mapping with `steps:`, not {kind}")
        )
        raise LoadError(_in_file_order(found))
    pipeline: Pipeline | None = None
    with_templates = True
    try:
        pipeline = Pipeline.model_validate(data)
    except ValidationError as exc:
        found.extend(_schema_diagnostics(exc, locator, data))
        pipeline, with_templates = _salvage(data, exc, locator)
    graph: Graph | None = None
    if pipeline is not None:
        problems, graph = _graph_problems(pipeline, with_templates)
        found.extend(locator.locate(p.path, p.message, p.at_key, p.span) for p in problems)
    if found or graph is None or pipeline is None:
        raise LoadError(_in_file_order(found))
    return LoadedPipeline(path=path, text=text, pipeline=pipeline, graph=graph, document=document)


def _in_file_order(found: list[Diagnostic]) -> list[Diagnostic]:
    # NOTE: `${{ vars.x }}` written twice in one string is one mistake, reported once.
    unique = list(dict.fromkeys(found))
    unique.sort(key=lambda d: (d.line or 0, d.col or 0))
    return unique


def _graph_problems(
    pipeline: Pipeline, with_templates: bool
) -> tuple[list[GraphProblem], Graph | None]:
    """Target, graph and template problems of a schema-valid (or salvaged) pipeline."""
    problems: list[GraphProblem] = checks.target_problems(pipeline)
    targets_sound = not problems
    graph: Graph | None = None
    try:
        graph = build_graph(pipeline)
    except GraphError as exc:
        problems.extend(exc.problems)
    if with_templates:
        problems.extend(checks.template_problems(pipeline, graph, targets_sound))
    return problems, graph


#: Stand-ins for a target the schema refused, by its type, so steps `on:` it still check.
_TARGET_STUBS: dict[str, dict[str, Any]] = {
    "local": {"type": "local"},
    "ssh": {"type": "ssh", "hosts": ["stub"]},
    "jenkins": {"type": "jenkins", "url": "http://stub"},
}
#: Top-level fields the graph and template checks read; refused, they end the checks there.
_NEEDED_BY_TEMPLATES = frozenset({"vars", "secrets"})


def _salvage(
    data: dict[str, Any], exc: ValidationError, locator: _Locator
) -> tuple[Pipeline | None, bool]:
    """The pipeline with every part the schema refused stubbed out or dropped, and whether its
    templates can still be checked; None when what was refused shapes the graph itself."""
    steps = data.get("steps")
    if not isinstance(steps, list):
        return None, False
    #: (entry, member or None) -> the step's own fields the schema refused (None: the step itself)
    broken_steps: dict[tuple[int, int | None], set[Any]] = {}
    broken_targets: set[Any] = set()
    dropped: set[Any] = set()
    for error in exc.errors(include_url=False):
        path = locator.data_path(error["loc"])
        if not path:
            return None, False
        if path[0] == "steps":
            if len(path) < 2:
                return None, False
            entry = steps[path[1]]
            if isinstance(entry, dict) and "parallel" in entry:
                member = len(path) >= 4 and path[2] == "parallel" and isinstance(path[3], int)
                if not member or not isinstance(entry["parallel"], list):
                    return None, False
                key: tuple[int, int | None] = (path[1], path[3])
                field = path[4] if len(path) > 4 else None
            else:
                key, field = (path[1], None), path[2] if len(path) > 2 else None
            broken_steps.setdefault(key, set()).add(field)
        elif path[0] == "targets":
            if len(path) < 2:
                return None, False
            broken_targets.add(path[1])
        else:
            dropped.add(path[0])
    kept = {key: value for key, value in data.items() if key not in dropped}
    if broken_targets:
        targets = dict(kept.get("targets") or {})
        for name in broken_targets:
            raw = targets.get(name)
            kind = raw.get("type") if isinstance(raw, dict) else None
            stub = _TARGET_STUBS.get(kind) if isinstance(kind, str) else None
            if stub is None:
                return None, False
            targets[name] = stub
        kept["targets"] = targets
    # NOTE: first try each refused step without its refused fields, so the templates in the rest
    # of it are still checked; a step that is still refused then becomes a bare stub.
    for minimal in (False, True):
        candidate = {**kept, "steps": _patched_steps(steps, broken_steps, minimal)}
        if None in candidate["steps"]:
            return None, False
        try:
            pipeline = Pipeline.model_validate(candidate)
        except ValidationError as again:
            if minimal:
                return None, False
            still = {locator.data_path(e["loc"])[:4] for e in again.errors(include_url=False)}
            broken_steps = {
                key: fields
                for key, fields in broken_steps.items()
                if not any(_is_step_path(p, key) for p in still)
            } | {key: {None} for key in _step_keys(still, steps)}
            continue
        return pipeline, not (dropped & _NEEDED_BY_TEMPLATES)
    return None, False


def _is_step_path(path: tuple[Any, ...], key: tuple[int, int | None]) -> bool:
    entry, member = key
    if member is None:
        return path[:2] == ("steps", entry)
    return path[:4] == ("steps", entry, "parallel", member)


def _step_keys(paths: set[tuple[Any, ...]], steps: list[Any]) -> set[tuple[int, int | None]]:
    keys: set[tuple[int, int | None]] = set()
    for path in paths:
        if len(path) >= 2 and path[0] == "steps" and isinstance(path[1], int):
            is_member = len(path) >= 4 and path[2] == "parallel" and isinstance(path[3], int)
            keys.add((path[1], path[3] if is_member else None))
    return keys


def _patched_steps(
    steps: list[Any], broken: dict[tuple[int, int | None], set[Any]], minimal: bool
) -> list[Any]:
    """The entries with each refused step (or its refused fields) replaced."""

    def patched(raw: Any, fields: set[Any]) -> Any:
        # NOTE: without its `on` a step would run locally, and be blamed for not suiting it.
        if minimal or None in fields or "on" in fields or not isinstance(raw, dict):
            return _step_stub(raw)
        return {key: value for key, value in raw.items() if key not in fields}

    out: list[Any] = []
    for index, entry in enumerate(steps):
        if (index, None) in broken:
            entry = patched(entry, broken[(index, None)])
        elif isinstance(entry, dict) and isinstance(entry.get("parallel"), list):
            members = [
                patched(member, broken[(index, number)]) if (index, number) in broken else member
                for number, member in enumerate(entry["parallel"])
            ]
            entry = {**entry, "parallel": members}
        out.append(entry)
    return out


def _step_stub(raw: Any) -> dict[str, Any] | None:
    """A do-nothing step with the refused step's id, `needs` and `matrix`, or None without an id."""
    if not isinstance(raw, dict):
        return None
    step_id = raw.get("id")
    if not isinstance(step_id, str) or not re.fullmatch(ID_PATTERN, step_id):
        return None
    stub: dict[str, Any] = {"id": step_id, "type": "shell", "run": "true"}
    for key in ("needs", "matrix"):
        if key in raw:
            stub[key] = raw[key]
    return stub


def _schema_diagnostics(
    exc: ValidationError, locator: _Locator, data: Mapping[str, Any]
) -> list[Diagnostic]:
    diagnostics: list[Diagnostic] = []
    seen: set[tuple[Any, ...]] = set()
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        path = locator.data_path(loc)
        kind = error["type"]
        label = locator.step_label(path)
        prefix = f"{label}: " if label else ""
        at_key = False
        if kind == "extra_forbidden":
            key = loc[-1]
            names = field_names_at(loc)
            close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            where = (
                "" if label else (f" in `{'.'.join(map(str, path[:-1]))}`" if len(path) > 1 else "")
            )
            message = f"{prefix}unknown field {key!r}{where}{hint}"
            at_key = True
        elif kind == "missing":
            field = loc[-1]
            message = f"{prefix}missing required field {field!r}"
        elif kind in ("union_tag_invalid", "union_tag_not_found"):
            message, path = _tag_message(error, path, prefix)
        else:
            message = _field_message(error, path, prefix)
        if (path, message) in seen:
            continue
        seen.add((path, message))
        found = locator.locate(path, message, at_key)
        if len(path) >= 3 and path[0] == "targets" and path[2] in _CREDENTIAL_FIELDS:
            found = _without_value(found)
        diagnostics.append(found)
    diagnostics.sort(key=lambda d: (d.line or 0, d.col or 0))
    return diagnostics


#: Target fields whose refused value may be a real credential: never quoted back.
_CREDENTIAL_FIELDS = frozenset({"password", "token"})


def _without_value(found: Diagnostic) -> Diagnostic:
    """The diagnostic with the source line cut at the value, which shows as `***`."""
    if found.snippet is None or found.col is None:
        return found
    return dataclasses.replace(found, snippet=found.snippet[: found.col - 1] + "***")


def _tag_message(error: Any, path: tuple[Any, ...], prefix: str) -> tuple[str, tuple[Any, ...]]:
    value = error.get("input")
    kind = value.get("type") if isinstance(value, dict) else None
    is_target = len(path) >= 2 and path[0] == "targets"
    if is_target:
        known = ["local", "ssh", "jenkins"]
        if kind is None:
            return f"target {path[1]!r} needs a `type`: one of {', '.join(known)}", path
        hint = difflib.get_close_matches(str(kind), known, n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        return f"target {path[1]!r}: unknown type {kind!r}{extra}; known: {', '.join(known)}", (
            *path,
            "type",
        )
    if not isinstance(value, dict):
        found = "a list" if isinstance(value, list) else repr(value)
        return (
            f"{prefix}each entry of `steps` must be a mapping "
            f"(a step or a `parallel:` block), not {found}",
            path,
        )
    if not isinstance(kind, str):
        return f"{prefix}`type` must be a step type name, not {kind!r}", (*path, "type")
    hint = difflib.get_close_matches(kind, STEP_TYPE_NAMES, n=1)
    extra = f" (did you mean {hint[0]!r}?)" if hint else ""
    return (
        f"{prefix}unknown step type {kind!r}{extra}; known: {', '.join(STEP_TYPE_NAMES)}",
        (*path, "type"),
    )


def _field_name(path: tuple[Any, ...]) -> str:
    """`timeout` for a step's field, `hosts` for a target's, `defaults.retries` elsewhere."""
    rest = path
    if len(path) >= 2 and path[0] == "steps":
        rest = path[2:]
        if len(rest) >= 2 and rest[0] == "parallel" and isinstance(rest[1], int):
            rest = rest[2:]
    elif len(path) >= 3 and path[0] == "targets":
        rest = path[2:]
    return ".".join(str(p) for p in rest if not isinstance(p, int))


def _field_message(error: Any, path: tuple[Any, ...], prefix: str) -> str:
    text = str(error["msg"])
    for noise in ("Value error, ", "Assertion failed, "):
        text = text.removeprefix(noise)
    if error["type"] == "string_pattern_mismatch":
        text = _PATTERN_TEXT.get(str(error.get("ctx", {}).get("pattern")), text)
    elif error["type"] == "too_short" and error.get("ctx", {}).get("min_length") == 1:
        text = "must not be empty"
    field = _field_name(path)
    shown = repr(error.get("input"))
    if len(shown) > 60:
        shown = shown[:57] + "..."
    if error["type"] == "list_type" and field == "steps":
        return "`steps` must be a list of steps"
    subject = f"`{field}`" if field else "value"
    # NOTE: a mapping is shown by the source line already, and would only be cut short here.
    quiet = "got" in text or error["type"] == "missing" or isinstance(error.get("input"), dict)
    detail = "" if quiet else f" (got {shown})"
    return f"{prefix}{subject}: {text}{detail}"
