"""`${{ ... }}` expressions, evaluated by jinja2's sandbox (no Python evaluation of user text).

We find the `${{ }}` spans ourselves and compile only the expressions inside them, so that shell
scripts full of `{#`, `{%` and `${#array[@]}` are never read as jinja syntax. A value that is a
single expression keeps its type (`when: ${{ vars.n > 3 }}` is a boolean); mixed text renders to a
string.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jinja2.environment import TemplateExpression
    from jinja2.nodes import Node

OPEN, CLOSE = "${{", "}}"
_SPAN = re.compile(r"\$\{\{(.*?)\}\}", re.S)
CONDITION_FUNCTIONS = ("success", "always", "failure", "cancelled")
CONTEXT_NAMES = ("vars", "env", "secrets", "pipeline", "run", "steps", "matrix", "host")


class TemplateError(Exception):
    """A template that cannot be read or evaluated; `offset` is where in the string, if known."""

    def __init__(self, message: str, offset: int | None = None, span: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset
        self.span = span


@dataclass(frozen=True)
class Span:
    """One `${{ expr }}` in a string: its character range and the expression inside."""

    start: int
    end: int
    source: str

    @property
    def text(self) -> str:
        return OPEN + self.source + CLOSE


@dataclass(frozen=True)
class Reference:
    """A dotted name an expression reads, e.g. ("steps", "build", "outputs", "sha")."""

    chain: tuple[str, ...]
    #: True when wrapped in `| default(...)`: a missing value is then not an error.
    guarded: bool = False

    def __str__(self) -> str:
        return ".".join(self.chain)


def spans(text: str) -> list[Span]:
    """Every `${{ }}` in `text`; an unclosed `${{` is a TemplateError at its offset."""
    found = [Span(m.start(), m.end(), m.group(1)) for m in _SPAN.finditer(text)]
    last = found[-1].end if found else 0
    dangling = text.find(OPEN, last)
    if dangling >= 0:
        raise TemplateError("`${{` is never closed with `}}`", dangling, text[dangling:])
    return found


def has_template(value: object) -> bool:
    return isinstance(value, str) and OPEN in value


@lru_cache(maxsize=1)
def _environment() -> Any:
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Environment(ImmutableSandboxedEnvironment):
        """Jinja's sandbox, where `a.b` on a mapping reads the key `b` before any attribute, and
        `*` and `**` refuse results too large to be a real value (`"a" * 400000000`)."""

        intercepted_binops = frozenset({"*", "**"})

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            problem = _binop_too_large(operator, left, right)
            if problem is not None:
                raise TemplateError(problem)
            return super().call_binop(context, operator, left, right)

        def getattr(self, obj: Any, attribute: str) -> Any:
            # NOTE: jinja tries attributes first, so `vars.items` or `outputs.keys` would be dict
            # methods instead of the user's values.
            if isinstance(obj, Mapping):
                try:
                    return obj[attribute]
                except (KeyError, TypeError):
                    pass
            return super().getattr(obj, attribute)

    # NOTE: optimized=False: jinja's optimizer folds constants while compiling, so `validate`
    # itself would evaluate `${{ "a" * 400000000 }}` (gigabytes) or `${{ 10 ** 5000 }}` (a crash).
    environment = Environment(undefined=StrictUndefined, autoescape=False, optimized=False)
    for name in ("center", "indent"):
        environment.filters[name] = _width_checked(environment.filters[name], name)
    return environment


def _width_checked(original: Any, name: str) -> Any:
    """A filter whose width argument is refused when it would pad past MAX_PRODUCT_LENGTH."""

    def checked(value: Any, *args: Any, **kwargs: Any) -> Any:
        width = args[0] if args else kwargs.get("width")
        if isinstance(width, int) and width > MAX_PRODUCT_LENGTH:
            limit = MAX_PRODUCT_LENGTH
            raise TemplateError(f"`{name}` width {width} is too large (at most {limit})")
        return original(value, *args, **kwargs)

    return checked


#: The most characters (or items) `*` may produce, and the most bits `**` may produce.
MAX_PRODUCT_LENGTH = 10_000_000
MAX_POWER_BITS = 100_000


def _binop_too_large(operator: str, left: Any, right: Any) -> str | None:
    """Why `left operator right` would be too large to compute, or None; checked before computing
    because the allocation (or the big-number arithmetic) itself is the harm."""
    if operator == "*":
        for seq, count in ((left, right), (right, left)):
            sized = isinstance(seq, str | list | tuple) and isinstance(count, int)
            if sized and len(seq) * count > MAX_PRODUCT_LENGTH:
                return (
                    f"`*` would make a value of {len(seq) * count} items "
                    f"(at most {MAX_PRODUCT_LENGTH})"
                )
        return None
    if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
        bits = right * (abs(left).bit_length() - 1)
        if bits > MAX_POWER_BITS:
            return f"`**` would make a number of at least {bits} bits (at most {MAX_POWER_BITS})"
    return None


#: Said when jinja's recursive parser or Python's compiler gives up on a deeply nested expression.
_TOO_DEEP = "expression is nested too deeply (or too long) to evaluate"
#: Deeper syntax trees are refused before compiling: jinja's code generation takes time quadratic
#: in the depth (seconds for `a.b.b.b...` 200 deep), and real expressions are a few levels deep.
MAX_EXPRESSION_DEPTH = 100


def _deeper_than(node: Node, limit: int) -> bool:
    stack = [(node, 1)]
    while stack:
        current, depth = stack.pop()
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in current.iter_child_nodes())
    return False


@lru_cache(maxsize=4096)
def _compile(source: str) -> TemplateExpression:
    from jinja2 import TemplateSyntaxError

    try:
        tree = _parse(source)
    except TemplateError:
        tree = None  # NOTE: compiling below gives the syntax error its usual wording
    if tree is not None and _deeper_than(tree, MAX_EXPRESSION_DEPTH):
        raise TemplateError(_TOO_DEEP)
    try:
        return _environment().compile_expression(source, undefined_to_none=False)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"template syntax error: {exc.message}") from None
    # NOTE: jinja parses and generates code recursively, and Python's compiler refuses more than
    # 200 nested parentheses; `${{ ((((...1)))) }}` must be a message, not a crash.
    except (RecursionError, SyntaxError, MemoryError):
        raise TemplateError(_TOO_DEEP) from None
    except (ValueError, OverflowError) as exc:
        raise TemplateError(f"template cannot be compiled: {exc}") from None


@lru_cache(maxsize=4096)
def _parse(source: str) -> Node:
    from jinja2 import TemplateSyntaxError

    try:
        return _environment().parse("{{ (" + source + "\n) }}")
    except TemplateSyntaxError as exc:
        raise TemplateError(f"template syntax error: {exc.message}") from None
    except (RecursionError, MemoryError):
        raise TemplateError(_TOO_DEEP) from None


def expression_problem(source: str) -> TemplateError | None:
    """Why one expression (the text inside `${{ }}`) cannot be used, or None when it compiles."""
    if not source.strip():
        return TemplateError("empty expression `${{ }}`")
    from jinja2 import nodes

    try:
        _compile(source)
        tree = _parse(source)
        # NOTE: the sandbox refuses `__` attributes (`().__class__.__mro__`) when evaluating;
        # saying so at validate time beats failing halfway through a run.
        hidden = {n.attr for n in tree.find_all(nodes.Getattr) if n.attr.startswith("__")}
        if hidden:
            first = min(hidden, key=lambda name: (source.find("." + name), name))
            return TemplateError(f"`{first}` cannot be used in an expression (sandboxed)")
    except TemplateError as exc:
        return exc
    except RecursionError:
        return TemplateError(_TOO_DEEP)
    return None


def check_syntax(text: str) -> list[TemplateError]:
    """Syntax problems of every expression in `text` (empty list when all compile)."""
    problems: list[TemplateError] = []
    try:
        found = spans(text)
    except TemplateError as exc:
        return [exc]
    for span in found:
        problem = expression_problem(span.source)
        if problem is not None:
            problems.append(TemplateError(problem.message, span.start, span.text))
    return problems


def references(source: str) -> list[Reference]:
    """Dotted names read by one expression (its syntax must be valid)."""
    from jinja2 import nodes

    found: list[Reference] = []

    def chain_of(node: Node) -> tuple[str, ...] | None:
        if isinstance(node, nodes.Name):
            return (node.name,)
        if isinstance(node, nodes.Getattr):
            base = chain_of(node.node)
            return None if base is None else (*base, node.attr)
        if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            base = chain_of(node.node)
            return None if base is None else (*base, str(node.arg.value))
        return None

    def walk(node: Node, guarded: bool) -> None:
        chain = chain_of(node)
        if chain is not None:
            found.append(Reference(chain, guarded))
            return
        if isinstance(node, nodes.Filter) and node.name == "default":
            if node.node is not None:
                walk(node.node, True)
            for child in [*node.args, *node.kwargs]:
                walk(child, guarded)
            return
        if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Name):
            found.append(Reference((node.node.name,), guarded))
            for child in [*node.args, *node.kwargs]:
                walk(child, guarded)
            return
        for child in node.iter_child_nodes():
            walk(child, guarded)

    try:
        walk(_parse(source), False)
    except RecursionError:
        raise TemplateError(_TOO_DEEP) from None
    return found


def calls_condition_function(source: str) -> bool:
    """Whether a `when` expression decides for itself (uses success/always/failure/cancelled)."""
    return any(
        len(ref.chain) == 1 and ref.chain[0] in CONDITION_FUNCTIONS for ref in references(source)
    )


def _to_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(_plain(value), sort_keys=False)
    return str(value)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _describe_undefined(source: str, context: Mapping[str, Any]) -> str:
    """Name the first dotted name that does not resolve, and what is available there."""
    for ref in references(source):
        if ref.guarded:
            continue
        current: Any = context
        for depth, part in enumerate(ref.chain):
            if isinstance(current, Mapping) and part in current:
                try:
                    current = current[part]
                except TemplateError as exc:
                    return exc.message
                continue
            where = ".".join(ref.chain[: depth + 1])
            if isinstance(current, Mapping):
                known = sorted(str(k) for k in current)
                hint = f" (known: {', '.join(known)})" if known and len(known) <= 20 else ""
                return f"`{where}` is not defined{hint}"
            break
    return "an undefined value was used"


def evaluate(source: str, context: Mapping[str, Any]) -> Any:
    """Evaluate one expression (the text inside `${{ }}`)."""
    from jinja2 import TemplateError as JinjaError
    from jinja2 import Undefined, UndefinedError

    expression = _compile(source)
    try:
        value = expression(**context)
        if isinstance(value, Undefined):
            # NOTE: StrictUndefined raises its own exception when printed: UndefinedError for a
            # missing name, the sandbox's SecurityError for `vars.__class__` and the like.
            str(value)
            raise UndefinedError("undefined")
    except UndefinedError:
        raise TemplateError(_describe_undefined(source, context)) from None
    except TemplateError:
        raise
    except JinjaError as exc:
        raise TemplateError(f"cannot evaluate `{source.strip()}`: {exc}") from None
    except Exception as exc:  # NOTE: user expressions can raise anything (1/0, int('x'))
        raise TemplateError(f"cannot evaluate `{source.strip()}`: {exc}") from None
    return value


def render(text: str, context: Mapping[str, Any]) -> Any:
    """Render a string: a lone expression keeps its type, anything else becomes text."""
    found = spans(text)
    if not found:
        return text
    if len(found) == 1 and found[0].start == 0 and found[0].end == len(text):
        try:
            return evaluate(found[0].source, context)
        except TemplateError as exc:
            raise TemplateError(exc.message, 0, found[0].text) from None
    out: list[str] = []
    position = 0
    for span in found:
        out.append(text[position : span.start])
        try:
            out.append(_to_text(evaluate(span.source, context)))
        except TemplateError as exc:
            raise TemplateError(exc.message, span.start, span.text) from None
        position = span.end
    out.append(text[position:])
    return "".join(out)


def render_text(text: str, context: Mapping[str, Any]) -> str:
    """Render where a string is required (commands, env values)."""
    return _to_text(render(text, context))


def render_value(value: Any, context: Mapping[str, Any], as_text: bool = False) -> Any:
    """Render every string inside lists and mappings (each to text when `as_text`)."""
    if isinstance(value, str):
        return render_text(value, context) if as_text else render(value, context)
    if isinstance(value, list):
        return [render_value(v, context, as_text) for v in value]
    if isinstance(value, dict):
        return {k: render_value(v, context, as_text) for k, v in value.items()}
    return value


def condition_source(when: str | bool | None) -> str | None:
    """The expression of a `when` (with or without `${{ }}`), or None for the default."""
    if when is None or isinstance(when, bool):
        return None
    found = spans(when)
    if not found:
        return when
    if len(found) == 1 and not when[: found[0].start].strip() and not when[found[0].end :].strip():
        return found[0].source
    raise TemplateError("`when` must be one expression, e.g. ${{ vars.branch == 'main' }}")


def iter_strings(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], str]]:
    """Every string inside a nested value, with its path."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from iter_strings(item, (*path, index))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from iter_strings(item, (*path, key))


class CommonValues(Mapping[str, Any]):
    """Outputs shared by several hosts or matrix instances; a key they disagree on is an error."""

    def __init__(self, owner: str, sources: Mapping[str, Mapping[str, Any]]) -> None:
        self._owner = owner
        self._sources = sources

    def _keys(self) -> list[str]:
        keys: dict[str, None] = {}
        for values in self._sources.values():
            keys.update(dict.fromkeys(values))
        return list(keys)

    def __getitem__(self, key: str) -> Any:
        seen = {name: values[key] for name, values in self._sources.items() if key in values}
        if not seen:
            raise KeyError(key)
        distinct = set(map(str, seen.values()))
        if len(distinct) > 1:
            detail = ", ".join(f"{name}={value!r}" for name, value in seen.items())
            raise TemplateError(
                f"`{self._owner}.outputs.{key}` differs between hosts or instances ({detail}); "
                f"use `{self._owner}.hosts.<name>.outputs.{key}`"
            )
        return next(iter(seen.values()))

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())
