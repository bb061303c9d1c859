"""YAML text -> plain Python data plus the position of every node.

PyYAML's SafeLoader forgets positions, keeps the last of duplicate keys and speaks YAML 1.1 (`on`,
`yes` and `no` are booleans there). We compose nodes with PyYAML (safe: no object construction),
resolve scalars with YAML 1.2 core-schema rules, and build the data ourselves so that every value
keeps its mark and alias bombs are stopped after a fixed budget of nodes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import BaseResolver
from yaml.scanner import Scanner

MAX_DEPTH = 64
MAX_NODES = 100_000
MAX_BYTES = 5 * 1024 * 1024

Path = tuple[Any, ...]


@dataclass(frozen=True)
class Mark:
    """Where a node sits: 1-based line and column, and character offsets of its span."""

    line: int
    col: int
    start: int
    end: int


@dataclass
class Problem:
    """A problem found while reading YAML: message and 1-based position."""

    line: int
    col: int
    message: str


@dataclass
class Document:
    """Data read from YAML with a mark for every value and every mapping key."""

    data: Any
    marks: dict[Path, Mark] = field(default_factory=dict)
    key_marks: dict[Path, Mark] = field(default_factory=dict)
    #: Scalar styles ('|', '>', '"', "'", or None for plain), to find positions inside strings.
    styles: dict[Path, str | None] = field(default_factory=dict)
    #: Problems that left the data readable (a duplicate key keeps its first value), kept when
    #: `parse(..., keep_going=True)` so that later checks can report theirs at the same time.
    problems: list[Problem] = field(default_factory=list)


#: What YAML counts as a line break (so our line numbers agree with the parser's marks).
_LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")


def split_lines(text: str) -> list[str]:
    """The lines of `text` as YAML numbers them (str.splitlines also splits at \\f and others)."""
    lines = _LINE_BREAK.split(text)
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def line_col(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of a character offset, counting line breaks as YAML does."""
    breaks = list(_LINE_BREAK.finditer(text, 0, offset))
    start = breaks[-1].end() if breaks else 0
    return len(breaks) + 1, offset - start + 1


class _Resolver(BaseResolver):
    """YAML 1.2 core schema: only true/false are booleans; no sexagesimal numbers, no dates."""


_Resolver.yaml_implicit_resolvers = {}
_Resolver.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Resolver.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
    list("-+0123456789"),
)
_Resolver.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)
_Resolver.add_implicit_resolver("tag:yaml.org,2002:merge", re.compile(r"^<<$"), ["<"])
_Resolver.add_implicit_resolver(
    "tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]
)


class _DepthError(yaml.MarkedYAMLError):
    pass


class _Loader(Reader, Scanner, Parser, Composer, _Resolver):
    """Composes nodes only; refuses nesting deeper than MAX_DEPTH before Python's stack would."""

    def __init__(self, text: str) -> None:
        Reader.__init__(self, text)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        _Resolver.__init__(self)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                event = self.peek_event()
                raise _DepthError(
                    None, None, f"nesting deeper than {MAX_DEPTH} levels", event.start_mark
                )
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        finally:
            self._depth -= 1


class YamlError(Exception):
    """The text is not YAML we accept; carries every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(p.message for p in problems))
        self.problems = problems


def decode(raw: bytes) -> str:
    """UTF-8 text, or YamlError at the line of the first byte that is not UTF-8."""
    if len(raw) > MAX_BYTES:
        raise YamlError([Problem(1, 1, f"file is larger than {MAX_BYTES // (1024 * 1024)} MiB")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        # NOTE: in characters, not bytes: the bytes before the bad one are valid UTF-8.
        before = raw[: exc.start].decode("utf-8")
        line, col = line_col(before, len(before))
        raise YamlError(
            [Problem(line, col, f"file is not UTF-8 text (byte 0x{raw[exc.start]:02x})")]
        ) from None
    return text.removeprefix("\ufeff")


def _mark(node: Node) -> Mark:
    return Mark(
        node.start_mark.line + 1,
        node.start_mark.column + 1,
        node.start_mark.index,
        node.end_mark.index,
    )


def _problem_from(exc: yaml.MarkedYAMLError) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    message = exc.problem or exc.context or "invalid YAML"
    if exc.context == "expected a single document in the stream":
        message = "a pipeline file holds one YAML document; a second one starts here"
    elif exc.context and exc.problem and exc.context_mark is not None:
        message = f"{exc.problem} ({exc.context} at line {exc.context_mark.line + 1})"
    if "'\\t'" in str(exc) or "tab" in message.lower():
        message = "tab characters are not allowed for indentation in YAML; use spaces"
    if mark is None:
        return Problem(1, 1, message)
    return Problem(mark.line + 1, mark.column + 1, message)


def parse(text: str, keep_going: bool = False) -> Document:
    """Compose and build one YAML document; raises YamlError with located problems.

    With `keep_going`, problems after which the data is still whole (duplicate keys, tags, a
    recursive alias) are returned in `Document.problems` instead of raised.
    """
    loader: _Loader | None = None
    try:
        loader = _Loader(text)
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        raise YamlError([_problem_from(exc)]) from None
    except yaml.YAMLError as exc:  # a ReaderError has no mark object but a position
        position = getattr(exc, "position", 0) or 0
        line, col = line_col(text, position)
        reason = getattr(exc, "reason", None) or str(exc)
        raise YamlError([Problem(line, col, f"unacceptable character: {reason}")]) from None
    except RecursionError:
        raise YamlError([Problem(1, 1, "nesting too deep to read")]) from None
    finally:
        if loader is not None:
            loader.dispose()
    doc = Document(data=None)
    if node is None:
        return doc
    builder = _Builder(doc)
    doc.data = builder.build(node, ())
    if builder.problems and not keep_going:
        raise YamlError(builder.problems)
    doc.problems = builder.problems
    return doc


class _Builder:
    """Turns composed nodes into dicts, lists and scalars, recording marks on the way."""

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.problems: list[Problem] = []
        self.count = 0
        self.active: set[int] = set()

    def _fail(self, node: Node, message: str) -> None:
        mark = _mark(node)
        self.problems.append(Problem(mark.line, mark.col, message))

    def build(self, node: Node, path: Path, depth: int = 0) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise YamlError(
                [
                    Problem(
                        *_line_col(node),
                        f"document expands to more than {MAX_NODES} values "
                        "(aliases that multiply?); refusing to read it",
                    )
                ]
            )
        if depth > MAX_DEPTH:
            raise YamlError([Problem(*_line_col(node), f"nesting deeper than {MAX_DEPTH} levels")])
        self.doc.marks.setdefault(path, _mark(node))
        if isinstance(node, ScalarNode):
            self.doc.styles.setdefault(path, node.style)
            return self._scalar(node)
        if id(node) in self.active:
            self._fail(node, "an alias refers to a node that contains it (recursive alias)")
            return None
        self.active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                if node.tag not in ("tag:yaml.org,2002:seq",):
                    self._fail(node, f"unsupported tag {node.tag!r}")
                return [
                    self.build(item, (*path, i), depth + 1) for i, item in enumerate(node.value)
                ]
            if isinstance(node, MappingNode):
                if node.tag not in ("tag:yaml.org,2002:map",):
                    self._fail(node, f"unsupported tag {node.tag!r}")
                return self._mapping(node, path, depth)
        finally:
            self.active.discard(id(node))
        self._fail(node, "unsupported YAML node")
        return None

    def _mapping(self, node: MappingNode, path: Path, depth: int) -> dict[Any, Any]:
        """A dict; explicit keys win over `<<` merged ones; an explicit key twice is an error."""
        explicit: list[tuple[Node, Node]] = []
        merged: list[tuple[Node, Node]] = []
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode) and key_node.tag == "tag:yaml.org,2002:merge":
                sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                for source in sources:
                    if isinstance(source, MappingNode):
                        merged.extend(source.value)
                    else:
                        self._fail(source, "`<<` merges only mappings")
            else:
                explicit.append((key_node, value_node))
        result: dict[Any, Any] = {}
        first_line: dict[Any, int] = {}
        for is_merged, pairs in ((False, explicit), (True, merged)):
            for key_node, value_node in pairs:
                if not isinstance(key_node, ScalarNode):
                    self._fail(
                        key_node, "a mapping key must be a plain value, not a list or mapping"
                    )
                    continue
                key = self._scalar(key_node)
                if isinstance(key, float | bool) or key is None:
                    key = key_node.value
                if key in result:
                    if not is_merged:
                        self._fail(
                            key_node, f"duplicate key {key!r} (first at line {first_line[key]})"
                        )
                    continue
                first_line[key] = key_node.start_mark.line + 1
                child = (*path, key)
                self.doc.key_marks[child] = _mark(key_node)
                result[key] = self.build(value_node, child, depth + 1)
        return result

    def _scalar(self, node: ScalarNode) -> Any:
        tag, value = node.tag, node.value
        if tag == "tag:yaml.org,2002:str":
            return value
        if tag == "tag:yaml.org,2002:bool":
            return value.lower() == "true"
        if tag == "tag:yaml.org,2002:null":
            return None
        if tag == "tag:yaml.org,2002:int":
            try:
                if value.startswith("0o"):
                    return int(value[2:], 8)
                if value.startswith("0x"):
                    return int(value[2:], 16)
                return int(value)
            except ValueError:
                self._fail(node, f"{value!r} is not an integer")
                return None
        if tag == "tag:yaml.org,2002:float":
            if value.lower().lstrip("+-") in (".inf", ".nan"):
                self._fail(node, f"numbers must be finite, got {value}")
                return None
            try:
                number = float(value)
            except ValueError:
                self._fail(node, f"{value!r} is not a number")
                return None
            if not math.isfinite(number):
                self._fail(node, f"numbers must be finite, got {value}")
                return None
            return number
        self._fail(node, f"unsupported tag {tag!r}")
        return value


def _line_col(node: Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def load_plain(text: str) -> Any:
    """Data only, for the YAML files that are not pipelines (YAML inventories use safe_load)."""
    return parse(text).data
