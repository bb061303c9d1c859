"""A tokenizer and parser for the declarative Jenkinsfile subset that ansflow exports.

Real Jenkins compiles the Jenkinsfile with Groovy and validates it with the declarative model
before running anything; a mistake fails the build at once with a `WorkflowScript: L: ... @ line L,
column C.` message and no stages. The emulator keeps that contract: everything is parsed up front
into the frozen AST below, and a `JenkinsfileSyntaxError` carries the line and column so the
console can show the same kind of message.

String rules follow Groovy, not a simplification of it, because the exporter has to get quoting
right against the real thing: escapes (newline, tab, backslash, quotes, dollar, unicode, a
backslash before a newline) are processed in every quoted form, `$` starts an interpolation only
in double-quoted strings, and a `$` there that is followed by neither `{` nor a name is a compile
error, as in Groovy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "AllOf",
    "AnyOf",
    "Args",
    "BranchIs",
    "Compare",
    "Condition",
    "EnvEquals",
    "JenkinsfileSyntaxError",
    "Literal",
    "NameRef",
    "Not",
    "ParamDef",
    "Pipeline",
    "Post",
    "Stage",
    "Step",
    "StrExpr",
    "Value",
    "VarRef",
    "parse_jenkinsfile",
]


class JenkinsfileSyntaxError(Exception):
    """A compile or validation error, reported as Groovy/declarative would report it."""

    def __init__(self, message: str, line: int, col: int) -> None:
        super().__init__(f"{message} @ line {line}, column {col}.")
        self.message = message
        self.line = line
        self.col = col

    def console_text(self, source: str) -> str:
        """The text Jenkins prints for a script that does not compile."""
        lines = source.splitlines()
        src_line = lines[self.line - 1] if 0 < self.line <= len(lines) else ""
        caret = " " * max(self.col - 1, 0) + "^"
        return (
            "org.codehaus.groovy.control.MultipleCompilationErrorsException: startup failed:\n"
            f"WorkflowScript: {self.line}: {self.message} @ line {self.line}, column {self.col}.\n"
            f"   {src_line}\n"
            f"   {caret}\n"
            "\n"
            "1 error\n"
            "\n"
            "\tat org.codehaus.groovy.control.ErrorCollector.failIfErrors"
            "(ErrorCollector.java:309)\n"
            "\tat org.codehaus.groovy.control.CompilationUnit.applyToPrimaryClassNodes"
            "(CompilationUnit.java:1107)\n"
        )


# --------------------------------------------------------------------------- AST


@dataclass(frozen=True)
class Literal:
    """A constant piece of a string."""

    text: str


@dataclass(frozen=True)
class VarRef:
    """An interpolated `${a.b}` / `$a.b` reference; `path[0]` is `env`, `params` or a bare name."""

    path: tuple[str, ...]
    line: int
    col: int


@dataclass(frozen=True)
class StrExpr:
    """A Groovy string literal: constant for single quotes, maybe interpolated for double."""

    parts: tuple[Literal | VarRef, ...]
    line: int
    col: int

    @property
    def constant(self) -> str | None:
        if all(isinstance(p, Literal) for p in self.parts):
            return "".join(p.text for p in self.parts if isinstance(p, Literal))
        return None


@dataclass(frozen=True)
class NameRef:
    """A bare (maybe dotted) name used as a value, e.g. `params.BRANCH` or `SECONDS`."""

    path: tuple[str, ...]
    line: int
    col: int


@dataclass(frozen=True)
class CallValue:
    """A call used as a value, e.g. `logRotator(numToKeepStr: '5')` inside `options`."""

    name: str
    args: Args
    line: int
    col: int


@dataclass(frozen=True)
class ListValue:
    """A list literal, e.g. the argument of `withEnv(['A=1'])`."""

    items: tuple[Value, ...]


Value = StrExpr | int | float | bool | None | NameRef | CallValue | ListValue


@dataclass(frozen=True)
class Args:
    """The arguments of a step or call: positional first, then `name: value` pairs."""

    positional: tuple[Value, ...] = ()
    named: tuple[tuple[str, Value], ...] = ()

    def get(self, name: str, index: int | None = None) -> Value:
        for key, val in self.named:
            if key == name:
                return val
        if index is not None and index < len(self.positional):
            return self.positional[index]
        return None

    def has(self, name: str) -> bool:
        return any(key == name for key, _ in self.named)


@dataclass(frozen=True)
class Step:
    """One step call, with the closure body for block steps (catchError, timeout, ...)."""

    name: str
    args: Args
    body: tuple[Step, ...] | None
    line: int
    col: int


@dataclass(frozen=True)
class Compare:
    """`left == right`, `left != right`, or a bare operand taken for its truth."""

    left: Value
    op: str | None
    right: Value


@dataclass(frozen=True)
class EnvEquals:
    """`environment name: 'X', value: 'v'`."""

    name: str
    value: str


@dataclass(frozen=True)
class BranchIs:
    """`branch 'main'`: matches BRANCH_NAME, which only multibranch jobs set."""

    pattern: str


@dataclass(frozen=True)
class Not:
    """`not { ... }`."""

    inner: Condition


@dataclass(frozen=True)
class AllOf:
    """`allOf { ... }`."""

    items: tuple[Condition, ...]


@dataclass(frozen=True)
class AnyOf:
    """`anyOf { ... }`."""

    items: tuple[Condition, ...]


Condition = Compare | EnvEquals | BranchIs | Not | AllOf | AnyOf


@dataclass(frozen=True)
class Post:
    """A `post` section: condition name -> steps, in the order Jenkins runs them."""

    blocks: tuple[tuple[str, tuple[Step, ...]], ...]


@dataclass(frozen=True)
class Stage:
    """A declarative stage: exactly one of `steps`, `parallel` or `stages` is set."""

    name: StrExpr
    line: int
    col: int
    environment: tuple[tuple[str, Value], ...] = ()
    when: Condition | None = None
    timeout_s: float | None = None
    steps: tuple[Step, ...] | None = None
    parallel: tuple[Stage, ...] | None = None
    stages: tuple[Stage, ...] | None = None
    post: Post | None = None
    fail_fast: bool = False
    agent: str | None = None


@dataclass(frozen=True)
class ParamDef:
    """A build parameter declared in the Jenkinsfile's `parameters` section."""

    kind: str
    name: str
    default: str | bool
    description: str = ""
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Pipeline:
    """A whole declarative pipeline."""

    agent: str
    stages: tuple[Stage, ...]
    environment: tuple[tuple[str, Value], ...] = ()
    parameters: tuple[ParamDef, ...] = ()
    timeout_s: float | None = None
    post: Post | None = None
    options: tuple[str, ...] = field(default=())


# --------------------------------------------------------------------------- tokenizer


@dataclass(frozen=True)
class Token:
    kind: str  # IDENT, STRING, NUMBER, OP, EOF
    value: object
    line: int
    col: int
    nl_before: bool
    text: str


_OPS = ("==", "!=", "&&", "||", "{", "}", "(", ")", "[", "]", ",", ":", ";", ".", "=", "!", "-")
_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "\\": "\\", "'": "'"}
_ESCAPES.update({'"': '"', "$": "$"})


class _Lexer:
    def __init__(self, src: str) -> None:
        self.src = src
        self.i = 0
        self.line = 1
        self.col = 1

    def error(self, message: str, line: int | None = None, col: int | None = None) -> None:
        raise JenkinsfileSyntaxError(message, line or self.line, col or self.col)

    def peek(self, k: int = 0) -> str:
        j = self.i + k
        return self.src[j] if j < len(self.src) else ""

    def advance(self, n: int = 1) -> str:
        out = self.src[self.i : self.i + n]
        for ch in out:
            if ch == "\n":
                self.line += 1
                self.col = 1
            else:
                self.col += 1
        self.i += n
        return out

    def tokens(self) -> list[Token]:
        toks: list[Token] = []
        nl = True
        while True:
            nl = self.skip_space() or nl
            line, col, start = self.line, self.col, self.i
            ch = self.peek()
            if not ch:
                toks.append(Token("EOF", None, line, col, True, "<EOF>"))
                return toks
            if ch.isalpha() or ch == "_":
                while self.peek().isalnum() or self.peek() == "_":
                    self.advance()
                word = self.src[start : self.i]
                toks.append(Token("IDENT", word, line, col, nl, word))
            elif ch.isdigit():
                while self.peek().isdigit():
                    self.advance()
                if self.peek() == "." and self.peek(1).isdigit():
                    self.advance()
                    while self.peek().isdigit():
                        self.advance()
                text = self.src[start : self.i]
                num: int | float = float(text) if "." in text else int(text)
                toks.append(Token("NUMBER", num, line, col, nl, text))
            elif ch in "'\"":
                value = self.string()
                toks.append(Token("STRING", value, line, col, nl, self.src[start : self.i]))
            else:
                for op in _OPS:
                    if self.src.startswith(op, self.i):
                        self.advance(len(op))
                        toks.append(Token("OP", op, line, col, nl, op))
                        break
                else:
                    self.error(f"unexpected char: '{ch}'")
            nl = False

    def skip_space(self) -> bool:
        """Skip blanks and comments; tell whether a newline was crossed (a statement end)."""
        saw_nl = False
        while True:
            ch = self.peek()
            if ch == "\n":
                saw_nl = True
                self.advance()
            elif ch and ch in " \t\r\f":
                self.advance()
            elif ch == "\\" and self.peek(1) == "\n":
                self.advance(2)  # explicit line continuation
            elif ch == "/" and self.peek(1) == "/":
                while self.peek() and self.peek() != "\n":
                    self.advance()
            elif ch == "/" and self.peek(1) == "*":
                line, col = self.line, self.col
                self.advance(2)
                while not (self.peek() == "*" and self.peek(1) == "/"):
                    if not self.peek():
                        self.error("unexpected end of file in a /* comment", line, col)
                    if self.peek() == "\n":
                        saw_nl = True
                    self.advance()
                self.advance(2)
            else:
                return saw_nl

    def string(self) -> StrExpr:
        line, col = self.line, self.col
        quote = self.peek()
        triple = self.src.startswith(quote * 3, self.i)
        self.advance(3 if triple else 1)
        interpolate = quote == '"'
        parts: list[Literal | VarRef] = []
        buf: list[str] = []
        while True:
            ch = self.peek()
            if not ch:
                self.error("unexpected end of file in a string literal", line, col)
            if triple and self.src.startswith(quote * 3, self.i):
                self.advance(3)
                break
            if not triple and ch == quote:
                self.advance()
                break
            if not triple and ch == "\n":
                self.error(f"expecting '{quote}', found '\\n'")
            if ch == "\\":
                buf.append(self.escape())
                continue
            if interpolate and ch == "$":
                if buf:
                    parts.append(Literal("".join(buf)))
                    buf = []
                parts.append(self.interpolation())
                continue
            buf.append(self.advance())
        if buf or not parts:
            parts.append(Literal("".join(buf)))
        return StrExpr(tuple(parts), line, col)

    def escape(self) -> str:
        nxt = self.peek(1)
        if nxt in _ESCAPES:
            self.advance(2)
            return _ESCAPES[nxt]
        if nxt == "\n":
            self.advance(2)
            return ""
        if nxt == "u":
            digits = self.src[self.i + 2 : self.i + 6]
            if len(digits) == 4 and all(c in "0123456789abcdefABCDEF" for c in digits):
                self.advance(6)
                return chr(int(digits, 16))
        self.error(f"unexpected char: '\\{nxt}'" if nxt else "unexpected end of file")
        return ""

    def interpolation(self) -> VarRef:
        line, col = self.line, self.col
        self.advance()  # $
        if self.peek() == "{":
            self.advance()
            end = self.src.find("}", self.i)
            if end < 0:
                self.error("unexpected end of file in ${...}", line, col)
            expr = self.src[self.i : end].strip()
            self.advance(end + 1 - self.i)
            path = tuple(p.strip() for p in expr.split("."))
            if not path or not all(p.isidentifier() for p in path):
                self.error(
                    f"emulator: unsupported expression in ${{{expr}}} "
                    "(only env.X, params.X and X are implemented)",
                    line,
                    col,
                )
            return VarRef(path, line, col)
        if self.peek().isalpha() or self.peek() == "_":
            names: list[str] = []
            while True:
                start = self.i
                while self.peek().isalnum() or self.peek() == "_":
                    self.advance()
                names.append(self.src[start : self.i])
                if self.peek() == "." and (self.peek(1).isalpha() or self.peek(1) == "_"):
                    self.advance()
                    continue
                break
            return VarRef(tuple(names), line, col)
        self.error(
            "illegal string body character after dollar sign;\n"
            '   solution: either escape a literal dollar sign "\\$5" or bracket the value '
            'expression "${5}"',
            line,
            col,
        )
        raise AssertionError("unreachable")


# --------------------------------------------------------------------------- parser

_POST_CONDITIONS = (
    "always",
    "changed",
    "fixed",
    "regression",
    "aborted",
    "failure",
    "success",
    "unstable",
    "unsuccessful",
    "notBuilt",
    "cleanup",
)
_TIME_UNITS = {
    "NANOSECONDS": 1e-9,
    "MICROSECONDS": 1e-6,
    "MILLISECONDS": 1e-3,
    "SECONDS": 1.0,
    "MINUTES": 60.0,
    "HOURS": 3600.0,
    "DAYS": 86400.0,
}


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.toks = tokens
        self.pos = 0

    # -- token helpers
    @property
    def tok(self) -> Token:
        return self.toks[self.pos]

    def next(self) -> Token:
        t = self.toks[self.pos]
        if t.kind != "EOF":
            self.pos += 1
        return t

    def at(self, kind: str, value: object = None) -> bool:
        t = self.tok
        return t.kind == kind and (value is None or t.value == value)

    def at_op(self, op: str) -> bool:
        return self.at("OP", op)

    def fail(self, message: str | None = None, tok: Token | None = None) -> None:
        t = tok or self.tok
        if message is None:
            # Groovy's wording for a block left open at the end of the script.
            message = (
                "expecting '}', found ''" if t.kind == "EOF" else f"unexpected token: {t.text}"
            )
        raise JenkinsfileSyntaxError(message, t.line, t.col)

    def expect_op(self, op: str) -> Token:
        if not self.at_op(op):
            found = "" if self.tok.kind == "EOF" else self.tok.text
            self.fail(f"expecting '{op}', found '{found}'")
        return self.next()

    def expect_ident(self) -> Token:
        if not self.at("IDENT"):
            self.fail()
        return self.next()

    def skip_semis(self) -> None:
        while self.at_op(";"):
            self.next()

    # -- values and arguments
    def value(self) -> Value:
        t = self.tok
        if t.kind == "STRING":
            self.next()
            assert isinstance(t.value, StrExpr)
            return t.value
        if t.kind == "NUMBER":
            self.next()
            assert isinstance(t.value, int | float)
            return t.value
        if self.at_op("-") and self.toks[self.pos + 1].kind == "NUMBER":
            self.next()
            num = self.next().value
            assert isinstance(num, int | float)
            return -num
        if self.at_op("["):
            self.next()
            items: list[Value] = []
            while not self.at_op("]"):
                items.append(self.value())
                if not self.at_op(","):
                    break
                self.next()
            self.expect_op("]")
            return ListValue(tuple(items))
        if t.kind == "IDENT":
            if t.value in ("true", "false"):
                self.next()
                return t.value == "true"
            if t.value == "null":
                self.next()
                return None
            self.next()
            if self.at_op("(") and not self.tok.nl_before:
                return CallValue(str(t.value), self.paren_args(), t.line, t.col)
            path = [str(t.value)]
            while self.at_op(".") and self.toks[self.pos + 1].kind == "IDENT":
                self.next()
                path.append(str(self.next().value))
            return NameRef(tuple(path), t.line, t.col)
        self.fail()
        raise AssertionError("unreachable")

    def is_named_arg(self) -> bool:
        nxt = self.toks[self.pos + 1]
        return self.tok.kind in ("IDENT", "STRING") and nxt.kind == "OP" and nxt.value == ":"

    def one_arg(self, positional: list[Value], named: list[tuple[str, Value]]) -> None:
        if self.is_named_arg():
            key_tok = self.next()
            key = key_tok.value.constant if isinstance(key_tok.value, StrExpr) else key_tok.value
            self.next()  # ':'
            named.append((str(key), self.value()))
        else:
            if named:
                # Groovy collects named args into a map wherever they are; the emulator keeps
                # the common order (positional first) and says so instead of guessing.
                self.fail("emulator: positional arguments must come before named ones")
            positional.append(self.value())

    def paren_args(self) -> Args:
        self.expect_op("(")
        positional: list[Value] = []
        named: list[tuple[str, Value]] = []
        while not self.at_op(")"):
            self.one_arg(positional, named)
            if not self.at_op(","):
                break
            self.next()
        self.expect_op(")")
        return Args(tuple(positional), tuple(named))

    def command_args(self) -> Args:
        """Arguments of a paren-less call (`sh 'x'`, `sh script: 'x', label: 'y'`)."""
        positional: list[Value] = []
        named: list[tuple[str, Value]] = []
        while True:
            self.one_arg(positional, named)
            if not self.at_op(","):
                break
            self.next()
        return Args(tuple(positional), tuple(named))

    def starts_value(self) -> bool:
        t = self.tok
        if t.nl_before or t.kind == "EOF":
            return False
        if t.kind in ("STRING", "NUMBER", "IDENT"):
            return True
        return t.kind == "OP" and t.value in ("[", "-")

    # -- steps
    def steps_block(self) -> tuple[Step, ...]:
        self.expect_op("{")
        steps: list[Step] = []
        self.skip_semis()
        while not self.at_op("}"):
            if self.at("EOF"):
                self.fail("expecting '}', found ''")
            steps.append(self.step())
            if not (self.at_op(";") or self.at_op("}") or self.tok.nl_before):
                self.fail()
            self.skip_semis()
        self.expect_op("}")
        return tuple(steps)

    def step(self) -> Step:
        name_tok = self.expect_ident()
        name = str(name_tok.value)
        if name in ("def", "if", "for", "while", "try", "return", "switch"):
            self.fail(
                f"emulator: Groovy statement '{name}' is not implemented "
                "(only step calls are, e.g. sh, echo, catchError)",
                name_tok,
            )
        args = Args()
        if self.at_op("(") and not self.tok.nl_before:
            args = self.paren_args()
        elif self.starts_value() and not self.at_op("{"):
            args = self.command_args()
        body: tuple[Step, ...] | None = None
        if self.at_op("{") and not self.tok.nl_before:
            body = self.steps_block()
        return Step(name, args, body, name_tok.line, name_tok.col)

    # -- conditions
    def when_block(self) -> Condition:
        open_tok = self.expect_op("{")
        conds = self.condition_list()
        self.expect_op("}")
        if len(conds) != 1:
            # Several conditions in one `when` are an implicit allOf in Jenkins.
            return AllOf(tuple(conds)) if conds else self._empty_when(open_tok)
        return conds[0]

    def _empty_when(self, tok: Token) -> Condition:
        self.fail("Empty when closure, remove the property or add some content.", tok)
        raise AssertionError("unreachable")

    def condition_list(self) -> list[Condition]:
        conds: list[Condition] = []
        self.skip_semis()
        while not self.at_op("}"):
            conds.append(self.condition())
            self.skip_semis()
        return conds

    def condition(self) -> Condition:
        t = self.expect_ident()
        name = t.value
        if name == "expression":
            self.expect_op("{")
            cond = self.expression_body(t)
            self.expect_op("}")
            return cond
        if name == "environment":
            args = self.paren_args() if self.at_op("(") else self.command_args()
            env_name, env_value = args.get("name"), args.get("value")
            if not (isinstance(env_name, StrExpr) and isinstance(env_value, StrExpr)):
                self.fail("environment condition needs name: '...' and value: '...'", t)
            assert isinstance(env_name, StrExpr) and isinstance(env_value, StrExpr)
            return EnvEquals(env_name.constant or "", env_value.constant or "")
        if name == "branch":
            args = self.paren_args() if self.at_op("(") else self.command_args()
            pattern = args.get("pattern", 0)
            if not isinstance(pattern, StrExpr):
                self.fail("branch condition needs a pattern string", t)
            assert isinstance(pattern, StrExpr)
            return BranchIs(pattern.constant or "")
        if name in ("not", "allOf", "anyOf"):
            self.expect_op("{")
            inner = self.condition_list()
            self.expect_op("}")
            if name == "not":
                if len(inner) != 1:
                    self.fail("Multiple conditions given for 'not'", t)
                return Not(inner[0])
            return AllOf(tuple(inner)) if name == "allOf" else AnyOf(tuple(inner))
        self.fail(
            f"emulator: when condition '{name}' is not implemented "
            "(expression, environment, branch, not, allOf, anyOf are)",
            t,
        )
        raise AssertionError("unreachable")

    def expression_body(self, where: Token) -> Condition:
        if self.at("IDENT", "return"):
            self.next()
        left = self.operand(where)
        op: str | None = None
        right: Value = None
        if self.at_op("==") or self.at_op("!="):
            op = str(self.next().value)
            right = self.operand(where)
        self.skip_semis()
        if not self.at_op("}"):
            self.fail(
                "emulator: when expression too complex; implemented forms: "
                "return params.X == 'v' / != 'v' / true / false",
                self.tok,
            )
        return Compare(left, op, right)

    def operand(self, where: Token) -> Value:
        if not (self.tok.kind in ("STRING", "NUMBER", "IDENT") or self.at_op("-")):
            self.fail(
                "emulator: when expression too complex; implemented forms: "
                "return params.X == 'v' / != 'v' / true / false",
                self.tok,
            )
        val = self.value()
        if isinstance(val, NameRef) and not (
            len(val.path) == 2 and val.path[0] in ("params", "env")
        ):
            self.fail(
                f"emulator: '{'.'.join(val.path)}' in a when expression is not implemented "
                "(params.X and env.X are)",
                where,
            )
        if isinstance(val, CallValue | ListValue):
            self.fail("emulator: calls and lists in a when expression are not implemented", where)
        return val

    # -- sections
    def environment(self) -> tuple[tuple[str, Value], ...]:
        self.expect_op("{")
        out: list[tuple[str, Value]] = []
        self.skip_semis()
        while not self.at_op("}"):
            name = self.expect_ident()
            self.expect_op("=")
            val = self.value()
            if isinstance(val, CallValue):
                self.fail(
                    f"emulator: {val.name}(...) in environment is not implemented "
                    "(credentials are not emulated)",
                    name,
                )
            out.append((str(name.value), val))
            self.skip_semis()
        self.expect_op("}")
        return tuple(out)

    def options(self) -> tuple[float | None, tuple[str, ...]]:
        self.expect_op("{")
        timeout: float | None = None
        names: list[str] = []
        self.skip_semis()
        while not self.at_op("}"):
            t = self.expect_ident()
            args = Args()
            if self.at_op("(") and not self.tok.nl_before:
                args = self.paren_args()
            elif self.starts_value():
                args = self.command_args()
            names.append(str(t.value))
            if t.value == "timeout":
                timeout = self.timeout_seconds(args, t)
            self.skip_semis()
        self.expect_op("}")
        return timeout, tuple(names)

    def timeout_seconds(self, args: Args, where: Token) -> float:
        amount = args.get("time", 0)
        unit_val = args.get("unit")
        if not isinstance(amount, int | float) or isinstance(amount, bool):
            self.fail("timeout needs a numeric time:", where)
        assert isinstance(amount, int | float)
        unit = "MINUTES"  # the timeout step's default unit
        if isinstance(unit_val, StrExpr):
            unit = unit_val.constant or ""
        elif isinstance(unit_val, NameRef):
            unit = unit_val.path[-1]
        if unit not in _TIME_UNITS:
            self.fail(f"Invalid unit '{unit}' for timeout", where)
        return float(amount) * _TIME_UNITS[unit]

    def agent(self) -> str:
        if self.at("IDENT", "any") or self.at("IDENT", "none"):
            return str(self.next().value)
        if self.at_op("{"):
            # `agent { label 'x' }`, `agent { docker ... }`: the emulator has one node, so the
            # content only has to be well formed.
            depth = 0
            while True:
                t = self.next()
                if t.kind == "EOF":
                    self.fail("unexpected end of file in agent")
                if t.kind == "OP" and t.value == "{":
                    depth += 1
                elif t.kind == "OP" and t.value == "}":
                    depth -= 1
                    if depth == 0:
                        return "label"
        self.fail("Invalid agent type specified. Must be one of [any, label, none, ...]")
        raise AssertionError("unreachable")

    def post(self) -> Post:
        self.expect_op("{")
        blocks: list[tuple[str, tuple[Step, ...]]] = []
        self.skip_semis()
        while not self.at_op("}"):
            t = self.expect_ident()
            if t.value not in _POST_CONDITIONS:
                self.fail(
                    f'Invalid condition "{t.value}" - valid conditions are '
                    f"[{', '.join(_POST_CONDITIONS)}]",
                    t,
                )
            blocks.append((str(t.value), self.steps_block()))
            self.skip_semis()
        self.expect_op("}")
        order = {name: i for i, name in enumerate(_POST_CONDITIONS)}
        return Post(tuple(sorted(blocks, key=lambda b: order[b[0]])))

    def parameters(self) -> tuple[ParamDef, ...]:
        self.expect_op("{")
        out: list[ParamDef] = []
        kinds = {"string", "text", "booleanParam", "password", "choice"}
        self.skip_semis()
        while not self.at_op("}"):
            t = self.expect_ident()
            if t.value not in kinds:
                self.fail(f"emulator: parameter type {t.value} is not implemented", t)
            args = self.paren_args() if self.at_op("(") else self.command_args()
            name = args.get("name")
            if not isinstance(name, StrExpr) or not name.constant:
                self.fail("a parameter needs name: '...'", t)
            assert isinstance(name, StrExpr)
            default = args.get("defaultValue")
            desc = args.get("description")
            choices = args.get("choices")
            choice_list: tuple[str, ...] = ()
            if isinstance(choices, ListValue):
                choice_list = tuple(
                    c.constant or "" for c in choices.items if isinstance(c, StrExpr)
                )
            elif isinstance(choices, StrExpr):
                choice_list = tuple((choices.constant or "").split("\n"))
            dflt: str | bool
            if t.value == "booleanParam":
                dflt = bool(default) if isinstance(default, bool) else False
            elif t.value == "choice":
                dflt = choice_list[0] if choice_list else ""
            else:
                dflt = default.constant or "" if isinstance(default, StrExpr) else ""
            out.append(
                ParamDef(
                    kind=str(t.value),
                    name=name.constant or "",
                    default=dflt,
                    description=desc.constant or "" if isinstance(desc, StrExpr) else "",
                    choices=choice_list,
                )
            )
            self.skip_semis()
        self.expect_op("}")
        return tuple(out)

    def stage(self, nested: str | None) -> Stage:
        t = self.expect_ident()
        if t.value != "stage":
            self.fail(f"Expected a stage @ {t.value}" if t.kind == "IDENT" else None, t)
        self.expect_op("(")
        if not self.at("STRING"):
            self.fail("Expected string literal for the stage name")
        name_tok = self.next()
        assert isinstance(name_tok.value, StrExpr)
        self.expect_op(")")
        self.expect_op("{")
        fields: dict[str, object] = {}
        self.skip_semis()
        while not self.at_op("}"):
            sec = self.expect_ident()
            key = str(sec.value)
            if key in fields:
                self.fail(f"Multiple occurrences of the {key} section", sec)
            if key == "steps":
                fields[key] = self.steps_block()
            elif key in ("parallel", "stages"):
                if nested == "parallel" and key == "parallel":
                    self.fail(
                        "Parallel stages or branches can only be included in a top-level stage.",
                        sec,
                    )
                if nested == "stages":
                    self.fail(f"emulator: {key} nested deeper than one level", sec)
                self.expect_op("{")
                subs: list[Stage] = []
                self.skip_semis()
                while not self.at_op("}"):
                    if self.at("IDENT", "failFast") and key == "parallel":
                        self.fail("failFast belongs in the parent stage, not in parallel")
                    subs.append(self.stage(key))
                    self.skip_semis()
                self.expect_op("}")
                if not subs:
                    self.fail(f"No stages specified in {key}", sec)
                fields[key] = tuple(subs)
            elif key == "environment":
                fields[key] = self.environment()
            elif key == "when":
                fields[key] = self.when_block()
            elif key == "options":
                fields["timeout_s"], _ = self.options()
            elif key == "post":
                fields[key] = self.post()
            elif key == "agent":
                fields[key] = self.agent()
            elif key == "failFast":
                val = self.value()
                if not isinstance(val, bool):
                    self.fail("failFast takes true or false", sec)
                fields["fail_fast"] = val
            elif key in ("tools", "input", "matrix"):
                self.fail(f"emulator: stage section '{key}' is not implemented", sec)
            else:
                self.fail(
                    f'Unknown stage section "{key}". Starting with version 0.5, steps in a stage '
                    "must be in a ‘steps’ block.",
                    sec,
                )
            self.skip_semis()
        self.expect_op("}")
        bodies = [k for k in ("steps", "parallel", "stages") if k in fields]
        if len(bodies) != 1:
            self.fail(
                f'Stage "{name_tok.value.constant}" must have one and only one of '
                '"stages", "steps", "parallel", or "matrix"',
                t,
            )
        if fields.get("fail_fast") and "parallel" not in fields:
            self.fail("failFast is only valid for a stage with parallel", t)
        return Stage(
            name=name_tok.value,
            line=t.line,
            col=t.col,
            environment=fields.get("environment", ()),  # type: ignore[arg-type]
            when=fields.get("when"),  # type: ignore[arg-type]
            timeout_s=fields.get("timeout_s"),  # type: ignore[arg-type]
            steps=fields.get("steps"),  # type: ignore[arg-type]
            parallel=fields.get("parallel"),  # type: ignore[arg-type]
            stages=fields.get("stages"),  # type: ignore[arg-type]
            post=fields.get("post"),  # type: ignore[arg-type]
            fail_fast=bool(fields.get("fail_fast", False)),
            agent=fields.get("agent"),  # type: ignore[arg-type]
        )

    def pipeline(self) -> Pipeline:
        self.skip_semis()
        t = self.tok
        if not self.at("IDENT", "pipeline"):
            self.fail(
                "emulator: only declarative pipelines (a top-level pipeline { ... }) "
                "are implemented",
                t,
            )
        self.next()
        self.expect_op("{")
        fields: dict[str, object] = {}
        self.skip_semis()
        while not self.at_op("}"):
            sec = self.expect_ident()
            key = str(sec.value)
            if key in fields:
                self.fail(f"Multiple occurrences of the {key} section", sec)
            if key == "agent":
                fields[key] = self.agent()
            elif key == "stages":
                self.expect_op("{")
                stages: list[Stage] = []
                self.skip_semis()
                while not self.at_op("}"):
                    stages.append(self.stage(None))
                    self.skip_semis()
                self.expect_op("}")
                if not stages:
                    self.fail("No stages specified", sec)
                fields[key] = tuple(stages)
            elif key == "environment":
                fields[key] = self.environment()
            elif key == "options":
                fields["timeout_s"], fields["options"] = self.options()
            elif key == "parameters":
                fields[key] = self.parameters()
            elif key == "post":
                fields[key] = self.post()
            elif key in ("triggers", "tools", "libraries"):
                self.fail(f"emulator: section '{key}' is not implemented", sec)
            else:
                self.fail(f'Undefined section "{key}"', sec)
            self.skip_semis()
        close = self.expect_op("}")
        self.skip_semis()
        if not self.at("EOF"):
            self.fail()
        if "stages" not in fields:
            self.fail('Missing required section "stages"', t)
        if "agent" not in fields:
            self.fail('Missing required section "agent"', t)
        del close
        return Pipeline(
            agent=str(fields["agent"]),
            stages=fields["stages"],  # type: ignore[arg-type]
            environment=fields.get("environment", ()),  # type: ignore[arg-type]
            parameters=fields.get("parameters", ()),  # type: ignore[arg-type]
            timeout_s=fields.get("timeout_s"),  # type: ignore[arg-type]
            post=fields.get("post"),  # type: ignore[arg-type]
            options=fields.get("options", ()),  # type: ignore[arg-type]
        )


def parse_jenkinsfile(source: str) -> Pipeline:
    """Parse a declarative Jenkinsfile; raise `JenkinsfileSyntaxError` like Jenkins would."""
    tokens = _Lexer(source).tokens()
    return _Parser(tokens).pipeline()
