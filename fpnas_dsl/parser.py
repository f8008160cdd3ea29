"""Text -> IR: the `.space` parser.

    text --Lark (grammar/fpnas.lark, LALR)--> parse tree --_Builder--> Space --validate--> Space

The grammar is loaded once (`parser()`); the transformer builds the frozen IR with a
`Span` on every node, checking each literal where it stands (an even kernel, an unknown
activation, a step that does not divide its range, ...), and `fpnas_dsl.validate` checks
the finished space. Whatever goes wrong surfaces as a `SpaceError` (file:line:column, the
line, a caret, what was found and what is allowed; `fpnas_dsl.syntax_errors` words the
syntax errors) or, for a file that cannot be found or read, an `FpnasError`: never a
lark, pydantic or Python exception.

Public API (mirrors `json`): `parse_space(text, file)`, `load_space(name_or_path, ...)`,
and the middle stages `parse_tree(text, file)` and `build_space(tree, text, file)`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedInput, VisitError
from pydantic import BaseModel, ValidationError

from fpnas_dsl import ir, resources
from fpnas_dsl import validate as V
from fpnas_dsl.errors import FpnasError, SpaceError
from fpnas_dsl.ir import Conv, Linear, Micro, Row, Space, Span, Value, Variable, VarName
from fpnas_dsl.syntax_errors import ROW_SYNTAX as _ROW
from fpnas_dsl.syntax_errors import describe_syntax_error

__all__ = ["build_space", "load_space", "parse_space", "parse_tree", "parser"]

#: A number token longer than this is refused before it is converted.
_MAX_NUMBER_CHARS = 64

_N = TypeVar("_N", bound=BaseModel)


@functools.lru_cache(maxsize=1)
def parser() -> Lark:
    """The Lark parser for the grammar shipped with the package (built once per process)."""
    return Lark.open(
        str(resources.grammar_path()),
        parser="lalr",
        lexer="contextual",
        propagate_positions=True,
        maybe_placeholders=True,
    )


# --------------------------------------------------------------------------------------
# Public API


def parse_space(text: str, file: str = "<string>") -> Space:
    """Parse and validate the text of a .space file."""
    text = _normalise(text)
    space = build_space(parse_tree(text, file), text, file)
    return _guarded(lambda: V.validate_space(space, text), file)


def load_space(
    name_or_path: str | Path,
    resolution: int | None = None,
    in_channels: int | None = None,
    classes: int | None = None,
) -> Space:
    """Read a space from a path or by the name of a bundled space; apply the overrides
    (another input size or number of classes), then validate the result."""
    path = resources.resolve_space_path(str(name_or_path))
    if path is None and Path(name_or_path).is_dir():
        raise FpnasError(f"{name_or_path}: is a directory, expected a .space file")
    if path is None:
        bundled = ", ".join(resources.bundled_spaces()) or "none"
        raise FpnasError(
            f"no space '{name_or_path}': it is neither a file nor a bundled space "
            f"(bundled: {bundled})"
        )
    file = str(name_or_path) if Path(name_or_path).is_file() else str(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise FpnasError(f"cannot read {file}: {err.strerror or err}") from None
    text = _normalise(_decode(data, file))
    space = build_space(parse_tree(text, file), text, file)
    update: dict[str, int] = {}
    for what, value in (
        ("resolution", resolution),
        ("in_channels", in_channels),
        ("classes", classes),
    ):
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= V.MAX_NUMBER:
            flag = "--" + what.replace("_", "-")
            raise FpnasError(f"{flag} must be a whole number from 1 to {V.MAX_NUMBER}, got {value}")
        update[what] = value
    if update:
        space = space.with_input(**update)
    return _guarded(lambda: V.validate_space(space, text), file)


def parse_tree(text: str, file: str = "<string>") -> Tree[Token]:
    """Text -> Lark parse tree; a syntax error becomes a SpaceError."""
    text = _normalise(text)
    try:
        return parser().parse(text)
    except UnexpectedInput as err:
        raise describe_syntax_error(err, text, file, parser()) from None
    except RecursionError:
        raise SpaceError(
            "the file is nested too deeply to parse", file=file, line=1, column=1
        ) from None


def build_space(tree: Tree[Token], text: str, file: str = "<string>") -> Space:
    """Parse tree -> IR (checked literal by literal, not yet validated as a whole)."""
    try:
        space: Space = _Builder(text, file).transform(tree)
    except VisitError as err:
        raise _unwrap(err, text, file) from None
    return space


# --------------------------------------------------------------------------------------
# Reading text


def _normalise(text: str) -> str:
    """Drop a byte-order mark; make sure the last statement ends with a line break."""
    text = text.removeprefix("\ufeff")
    return text if text.endswith("\n") else text + "\n"


def _decode(data: bytes, file: str) -> str:
    nul = data.find(b"\x00", 0, 8192)
    if nul >= 0:
        raise SpaceError(
            f"a binary file, not the text of a .space file (byte 0x00 at offset {nul})",
            file=file,
            line=1,
            column=1,
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise SpaceError(
            f"the file is not valid UTF-8: byte 0x{data[err.start]:02x} cannot be decoded",
            file=file,
            line=line,
            column=column,
            source=data.decode("utf-8", errors="replace"),
        ) from None


def _guarded(check: Callable[[], Space], file: str) -> Space:
    """Run a validation step; a Python error from it becomes a SpaceError, not a traceback."""
    try:
        result = check()
    except FpnasError:
        raise
    except (RecursionError, ArithmeticError, ValueError, KeyError, IndexError) as err:
        raise SpaceError(
            f"internal error while checking the space ({type(err).__name__}: {err})",
            file=file,
            line=1,
            column=1,
        ) from None
    return result


def _unwrap(err: VisitError, text: str, file: str) -> FpnasError:
    if isinstance(err.orig_exc, FpnasError):
        return err.orig_exc
    meta = getattr(err.obj, "meta", None)
    line = getattr(meta, "line", 1) if meta is not None and not meta.empty else 1
    column = getattr(meta, "column", 1) if meta is not None and not meta.empty else 1
    orig = err.orig_exc
    if isinstance(orig, RecursionError):
        message = "the file is nested too deeply to read"
    else:
        message = f"internal error while reading the space ({type(orig).__name__}: {orig})"
    return SpaceError(message, file=file, line=line, column=column, source=text)


# --------------------------------------------------------------------------------------
# Parse tree -> IR


@dataclass(frozen=True)
class _Lit:
    """One literal of a choice: a number or a word, with its token."""

    token: Token
    kind: Literal["number", "word"]


@dataclass(frozen=True)
class _Choices:
    form: Literal["single", "set", "range"]
    items: tuple[_Lit, ...]
    meta_span: Span


@dataclass(frozen=True)
class _Stmt:
    """A top-level statement: what it is, where it is, and its payload."""

    kind: str
    span: Span
    payload: Any = None
    token: Token | None = None


@dataclass
class _MicroDecl:
    name: Token
    span: Span
    variables: dict[str, tuple[Token, _Choices, Span]] = field(default_factory=dict)
    settings: dict[str, tuple[Token, Span]] = field(default_factory=dict)
    scopes: dict[str, tuple[str, Span]] = field(default_factory=dict)
    share: tuple[list[Token], Span] | None = None


@dataclass(frozen=True)
class _NoExpansion:
    """The `-` of a row whose operator takes no expansion."""

    span: Span


@dataclass(frozen=True)
class _RowDecl:
    op: Token
    micro: Token | None
    expansion: _Choices | _NoExpansion
    channels: _Choices
    repeat: int
    stride: int
    overrides: tuple[tuple[Token, _Choices, Span], ...]
    span: Span


@dataclass(frozen=True)
class _Pooled:
    """A conv with a maxpool, and where the pool is (a head conv may not have one)."""

    conv: Conv
    pool_span: Span


def _span(file: str, line: int, column: int, end_line: int, end_after: int) -> Span:
    """A Span from Lark's positions (whose end column is one past the last character)."""
    end_column = end_after - 1
    if end_line == line:
        end_column = max(end_column, column)
    return Span(file=file, line=line, column=column, end_line=end_line, end_column=end_column)


_SINGLE_STATEMENTS = {
    "space": "space NAME",
    "input": "input 224 x 224 x 3",
    "classes": "classes 1000",
    "expansion": "expansion relative to input",
    "skip": "skip where shapes differ: project",
    "table": "table { ... }",
    "pool": "pool avg",
    "batchnorm": "batchnorm eps 1e-5, momentum 0.1",
}


@v_args(meta=True)
class _Builder(Transformer[Token, Any]):
    """Builds the IR bottom-up; every literal is checked where it stands."""

    def __init__(self, text: str, file: str) -> None:
        super().__init__()
        self.text = text
        self.file = file

    # ---- helpers ---------------------------------------------------------------------

    def span(self, meta: Any) -> Span:
        if meta is None or getattr(meta, "empty", True):
            return Span(file=self.file, line=1, column=1, end_line=1, end_column=1)
        return _span(self.file, meta.line, meta.column, meta.end_line, meta.end_column)

    def tspan(self, token: Token) -> Span:
        line = token.line if isinstance(token.line, int) else 1
        column = token.column if isinstance(token.column, int) else 1
        end_line = token.end_line if isinstance(token.end_line, int) else line
        end_column = token.end_column if isinstance(token.end_column, int) else column + 1
        return _span(self.file, line, column, end_line, end_column)

    def fail(self, message: str, where: Span | Token, hint: str | None = None) -> SpaceError:
        span = where if isinstance(where, Span) else self.tspan(where)
        return V.error(message, span, self.text, hint)

    def node(self, cls: type[_N], span: Span, **fields: Any) -> _N:
        """Build an IR node; a pydantic refusal becomes a positioned SpaceError."""
        try:
            return cls(span=span, **fields)
        except ValidationError as err:
            first = err.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            raise self.fail(f"invalid {cls.__name__.lower()} {loc}: {first['msg']}", span) from None

    def fraction(self, token: Token) -> Fraction:
        raw = str(token)
        if len(raw) > _MAX_NUMBER_CHARS:
            raise self.fail(
                f"number too long ({len(raw)} characters; at most {_MAX_NUMBER_CHARS})", token
            )
        try:
            number = Decimal(raw)
        except InvalidOperation:
            raise self.fail(f"'{raw}' is not a number", token) from None
        if number.is_zero():
            return Fraction(0)
        if number.adjusted() > 9 or abs(number) > V.MAX_NUMBER:
            raise self.fail(f"number {raw} is too large; at most {V.MAX_NUMBER}", token)
        if number.adjusted() < -9:
            raise self.fail(f"number {raw} is too small; non-zero numbers are at least 1e-9", token)
        return Fraction(number)

    def integer(self, token: Token, what: str, minimum: int | None = 1) -> int:
        value = self.fraction(token)
        if value.denominator != 1:
            raise self.fail(f"{what} must be a whole number, found {token}", token)
        number = int(value)
        if minimum is not None and number < minimum:
            raise self.fail(f"{what} must be at least {minimum}, found {number}", token)
        return number

    def word(self, token: Token, allowed: Sequence[str], what: str) -> str:
        problem = V.check_word(str(token), allowed, what)
        if problem is not None:
            raise self.fail(problem[0], token, problem[1])
        return str(token)

    def layer_act(self, token: Token) -> str | None:
        act = self.activation(token, V.LAYER_ACTIVATIONS)
        return None if act == "none" else act

    def activation(
        self,
        token: Token,
        allowed: Sequence[str] = ir.ACTIVATIONS,
        aliases: dict[str, str] = ir.ACTIVATION_ALIASES,
        what: str = "activation",
    ) -> str:
        """An activation (or gate) name; PyTorch's names become the IR's spelling."""
        word = str(token)
        canonical = aliases.get(word, word)
        if canonical in allowed:
            return canonical
        problem = V.check_word(word, allowed, what, aliases)
        assert problem is not None
        raise self.fail(problem[0], token, problem[1])

    # ---- choices ---------------------------------------------------------------------

    def number_value(self, meta: Any, children: list[Token]) -> _Lit:
        return _Lit(children[0], "number")

    def word_value(self, meta: Any, children: list[Token]) -> _Lit:
        return _Lit(children[0], "word")

    def single(self, meta: Any, children: list[Token]) -> _Choices:
        return _Choices("single", (_Lit(children[0], "number"),), self.span(meta))

    def choice_set(self, meta: Any, children: list[_Lit | None]) -> _Choices:
        return _Choices("set", tuple(c for c in children if c is not None), self.span(meta))

    def choice_range(self, meta: Any, children: list[_Lit | None]) -> _Choices:
        return _Choices("range", tuple(c for c in children if c is not None), self.span(meta))

    def as_choices(self, value: _Lit | _Choices) -> _Choices:
        if isinstance(value, _Lit):
            return _Choices("single", (value,), self.tspan(value.token))
        return value

    def value_of(self, name: VarName, lit: _Lit) -> Value:
        """One literal as a choice of variable `name`, checked."""
        token = lit.token
        value: Value
        if name == "kernel":
            if lit.kind == "word":
                if str(token) != "skip":
                    raise self.fail(
                        f"kernel takes sizes (1, 3, 5, ...) or 0/skip, found '{token}'", token
                    )
                value = ir.SKIP_KERNEL
            else:
                value = self.integer(token, "kernel size", minimum=None)
        elif name in ("act", "attention") and lit.kind == "word":
            value = str(token)
            if name == "attention" and value not in ir.ATTENTIONS:
                problem = V.check_word(value, ir.ATTENTIONS, "attention")
                assert problem is not None
                raise self.fail(problem[0] + " (or the splits 0, 1, 2, 4)", token, problem[1])
            if name == "act":
                value = self.activation(token)
        elif name == "act":
            raise self.fail(
                f"act takes a name ({V.fmt_allowed(ir.ACTIVATIONS)}), found {token}", token
            )
        elif name == "attention":
            splits = self.fraction(token)
            if splits not in V.ATTENTION_BY_SPLITS:
                raise self.fail(
                    f"attention as splits is 0 (none), 1 (se), 2 (sa2) or 4 (sa4), found {token}",
                    token,
                )
            value = V.ATTENTION_BY_SPLITS[int(splits)]
        elif lit.kind == "word":
            raise self.fail(f"{name} takes numbers, found '{token}'", token)
        elif name == "expansion":
            value = float(self.fraction(token))
        else:
            value = self.integer(token, name, minimum=None)
        message = V.check_value(name, value)
        if message is not None:
            raise self.fail(message, token)
        return value

    def values_of(self, name: VarName, choices: _Choices) -> tuple[Value, ...]:
        if choices.form == "range":
            values = self.range_values(name, choices)
        else:
            if choices.form == "set" and not choices.items:
                raise self.fail(f"empty set: {name} needs at least one choice", choices.meta_span)
            values = []
            seen: dict[Value, Token] = {}
            for lit in choices.items:
                value = self.value_of(name, lit)
                if value in seen:
                    first = seen[value]
                    raise self.fail(
                        f"duplicate choice {V.fmt_value(value)} in {name} (already given as "
                        f"'{first}' at column {first.column})",
                        lit.token,
                    )
                seen[value] = lit.token
                values.append(value)
            if len(values) > V.MAX_CHOICES:
                raise self.fail(
                    f"{name} has {len(values)} choices; at most {V.MAX_CHOICES} are allowed",
                    choices.meta_span,
                )
        return tuple(values)

    def range_values(self, name: VarName, choices: _Choices) -> list[Value]:
        span = choices.meta_span
        if name in ("act", "attention"):
            raise self.fail(
                f"{name} takes names, not a range (min, max, step); write a set such as "
                + ("{relu, swish}" if name == "act" else "{none, se}"),
                span,
            )
        if len(choices.items) != 3:
            raise self.fail(
                f"a range is (min, max, step): found {len(choices.items)} "
                f"value{'s' if len(choices.items) != 1 else ''}",
                span,
                "for an explicit list of choices write a set {a, b, c}",
            )
        for lit in choices.items:
            if lit.kind == "word":
                raise self.fail(f"a range takes numbers, found '{lit.token}'", lit.token)
        lo_tok, hi_tok, step_tok = (lit.token for lit in choices.items)
        lo, hi, step = self.fraction(lo_tok), self.fraction(hi_tok), self.fraction(step_tok)
        if step <= 0:
            raise self.fail(f"the step of a range must be positive, found {step_tok}", step_tok)
        if hi < lo:
            raise self.fail(
                f"empty range: max {hi_tok} is below min {lo_tok}",
                span,
                "a range is (min, max, step) with min <= max",
            )
        count = (hi - lo) / step
        if count.denominator != 1:
            raise self.fail(
                f"step {step_tok} does not divide the range {lo_tok}..{hi_tok} "
                f"(max - min = {V.fmt_value(hi - lo)})",
                step_tok,
                "choose a step that divides max - min, or write the choices as a set",
            )
        if count + 1 > V.MAX_CHOICES:
            raise self.fail(
                f"the range has {int(count) + 1} choices; at most {V.MAX_CHOICES} are allowed",
                span,
            )
        values: list[Value] = []
        for i in range(int(count) + 1):
            exact = lo + i * step
            value: Value
            if name == "expansion":
                value = float(exact)
            elif exact.denominator != 1:
                raise self.fail(
                    f"{name} must be whole numbers; the range gives {V.fmt_value(exact)}", span
                )
            else:
                value = int(exact)
            message = V.check_value(name, value)
            if message is not None:
                raise self.fail(f"{message} (in the range {lo_tok}..{hi_tok})", span)
            values.append(value)
        return values

    def variable_node(
        self, name: VarName, choices: _Choices, span: Span, scope: ir.Scope = "row"
    ) -> Variable:
        return self.node(
            Variable, span, name=name, choices=self.values_of(name, choices), scope=scope
        )

    # ---- header statements -----------------------------------------------------------

    def space_stmt(self, meta: Any, children: list[Token]) -> _Stmt:
        return _Stmt("space", self.span(meta), str(children[0]), children[0])

    def input_stmt(self, meta: Any, children: list[Token]) -> _Stmt:
        height, width, channels = children
        h = self.integer(height, "input resolution")
        w = self.integer(width, "input resolution")
        c = self.integer(channels, "input channels")
        for token, value in ((height, h), (width, w)):
            if value > V.MAX_NUMBER:
                raise self.fail(f"input resolution must be at most {V.MAX_NUMBER}", token)
        if h != w:
            raise self.fail(
                f"the input must be square, found {h} x {w}",
                width,
                f"write `input {h} x {h} x {c}`",
            )
        return _Stmt("input", self.span(meta), (h, c))

    def classes_stmt(self, meta: Any, children: list[Token]) -> _Stmt:
        return _Stmt("classes", self.span(meta), self.integer(children[0], "number of classes"))

    def expansion_stmt(self, meta: Any, children: list[Token]) -> _Stmt:
        of = self.word(children[0], V.EXPANSION_OF, "expansion reference")
        return _Stmt("expansion", self.span(meta), of)

    def skip_stmt(self, meta: Any, children: list[Token]) -> _Stmt:
        mode = self.word(children[0], V.SKIP_MODES, "skip mode")
        return _Stmt("skip", self.span(meta), mode)

    def pool_stmt(self, meta: Any, children: list[Token]) -> _Stmt:
        return _Stmt("pool", self.span(meta), self.word(children[0], V.POOLS, "pooling"))

    def bn_part(self, meta: Any, children: list[Token]) -> tuple[str, Token]:
        return (self.word(children[0], V.BN_SETTINGS, "batchnorm setting"), children[1])

    def bn_stmt(self, meta: Any, children: list[tuple[str, Token]]) -> _Stmt:
        """`batchnorm eps E, momentum M`: every batch-norm of the networks."""
        opts = self.options(children)
        fields: dict[str, float] = {}
        if "eps" in opts:
            eps = self.fraction(opts["eps"])
            if not 0 < eps <= V.MAX_BN_EPS:
                raise self.fail(
                    f"batch-norm eps must be in (0, {V.MAX_BN_EPS:g}], found {opts['eps']}",
                    opts["eps"],
                    "PyTorch's default is 1e-5; torchvision's MobileNetV3 uses 1e-3",
                )
            fields["bn_eps"] = float(eps)
        if "momentum" in opts:
            momentum = self.fraction(opts["momentum"])
            if not 0 < momentum <= 1:
                raise self.fail(
                    f"batch-norm momentum must be in (0, 1], found {opts['momentum']}",
                    opts["momentum"],
                    "PyTorch's default is 0.1 (the weight of the new batch in the running "
                    "statistics); torchvision's MobileNetV3 uses 0.01",
                )
            fields["bn_momentum"] = float(momentum)
        return _Stmt("batchnorm", self.span(meta), fields)

    # ---- micros ----------------------------------------------------------------------

    def variable(self, meta: Any, children: list[Any]) -> tuple[str, Token, _Choices, Span]:
        name, value = children
        return ("variable", name, self.as_choices(value), self.span(meta))

    def se_stmt(self, meta: Any, children: list[Any]) -> list[Any]:
        return list(children)

    def sa_stmt(self, meta: Any, children: list[Any]) -> list[Any]:
        return list(children)

    def se_ratio(self, meta: Any, children: list[Token | None]) -> list[Any]:
        ratio, of = children
        assert ratio is not None
        out: list[Any] = [("se ratio", ratio, self.span(meta))]
        if of is not None:
            out.append(("se of", of, self.tspan(of)))
        return out

    def se_gate(self, meta: Any, children: list[Token]) -> tuple[str, Token, Span]:
        return ("gate", children[0], self.span(meta))

    def se_act(self, meta: Any, children: list[Token]) -> tuple[str, Token, Span]:
        return ("se act", children[0], self.span(meta))

    def se_width(self, meta: Any, children: list[Token]) -> tuple[str, Token, Span]:
        return ("se width", children[0], self.span(meta))

    def se_divisor(self, meta: Any, children: list[Token]) -> tuple[str, Token, Span]:
        return ("se divisor", children[0], self.span(meta))

    def sa_ratio(self, meta: Any, children: list[Token]) -> tuple[str, Token, Span]:
        return ("sa ratio", children[0], self.span(meta))

    def sa_min(self, meta: Any, children: list[Token]) -> tuple[str, Token, Span]:
        return ("sa min", children[0], self.span(meta))

    def divisor_stmt(self, meta: Any, children: list[Token]) -> tuple[str, Token, Span]:
        return ("divisor", children[0], self.span(meta))

    def scope_stmt(self, meta: Any, children: list[Token]) -> tuple[str, Token, list[Token]]:
        return ("scope", children[0], list(children[1:]))

    def share_stmt(self, meta: Any, children: list[Token]) -> tuple[str, list[Token], Span]:
        return ("share", list(children), self.span(meta))

    def micro_stmt(self, meta: Any, children: list[Any]) -> _Stmt:
        name = children[0]
        decl = _MicroDecl(name=name, span=self.span(meta))
        items: list[Any] = []
        for child in children[1:]:
            if child is None:
                continue
            if isinstance(child, list):  # se / sa statements: a list of settings
                for part in child:
                    items.extend(part if isinstance(part, list) else [part])
            else:
                items.append(child)
        for item in items:
            kind = item[0]
            if kind == "variable":
                _, var_tok, choices, span = item
                var = str(var_tok)
                if var not in ir.MICRO_VARIABLES:
                    hint = V.did_you_mean(var, ir.MICRO_VARIABLES)
                    if var in ("expansion", "channels"):
                        hint = f"{var} is a column of the table, not a micro variable"
                    raise self.fail(
                        f"unknown micro variable '{var}'; a micro declares "
                        f"{V.fmt_allowed(ir.MICRO_VARIABLES)}",
                        var_tok,
                        hint,
                    )
                if var in decl.variables:
                    first = decl.variables[var][2]
                    raise self.fail(
                        f"micro '{name}' declares {var} twice (first at line {first.line})", var_tok
                    )
                decl.variables[var] = (var_tok, choices, span)
            elif kind == "scope":
                _, scope_tok, names = item
                scope = self.word(scope_tok, V.SCOPES, "scope")
                for var_tok in names:
                    var = self.word(var_tok, ir.VARIABLE_ORDER, "variable")
                    if var in decl.scopes:
                        raise self.fail(
                            f"the scope of {var} is given twice in micro '{name}'", var_tok
                        )
                    decl.scopes[var] = (scope, self.tspan(var_tok))
            elif kind == "share":
                _, words, span = item
                if decl.share is not None:
                    first = decl.share[1]
                    raise self.fail(
                        f"micro '{name}' has two share statements (first at line {first.line})",
                        span,
                    )
                decl.share = (words, span)
            else:
                _, token, span = item
                if kind in decl.settings:
                    first = decl.settings[kind][1]
                    raise self.fail(
                        f"micro '{name}' sets {kind} twice (first at line {first.line})", span
                    )
                decl.settings[kind] = (token, span)
        return _Stmt("micro", decl.span, decl, name)

    def micro_node(self, decl: _MicroDecl) -> Micro:
        name = str(decl.name)
        variables: dict[str, Variable] = {}
        for var in ir.MICRO_VARIABLES:
            if var not in decl.variables:
                example = {
                    "kernel": "kernel {3, 5}",
                    "act": "act relu",
                    "attention": "attention none",
                }
                raise self.fail(
                    f"micro '{name}' does not declare {var}; every micro declares kernel, act "
                    "and attention",
                    decl.name,
                    f"add e.g. `{example[var]}`",
                )
            _, choices, span = decl.variables[var]
            scope = decl.scopes.get(var, ("row", span))[0]
            variables[var] = self.variable_node(var, choices, span, cast(ir.Scope, scope))
        details: dict[str, Any] = {}
        settings = decl.settings
        if "se ratio" in settings:
            details["se_ratio"] = self.positive(settings["se ratio"][0], "se ratio")
        if "se of" in settings:
            details["se_relative_to"] = self.word(
                settings["se of"][0], V.SE_RELATIVE_TO, "se reference"
            )
        if "gate" in settings:
            details["gate"] = self.activation(
                settings["gate"][0], ir.GATES, ir.GATE_ALIASES, "gate"
            )
        if "se act" in settings:
            details["se_act"] = self.activation(
                settings["se act"][0], ir.SE_ACTIVATIONS, ir.ACTIVATION_ALIASES, "se activation"
            )
        if "se width" in settings:
            details["se_width"] = self.word(
                settings["se width"][0], ir.SE_WIDTH_RULES, "se width rule"
            )
        if "se divisor" in settings:
            details["se_divisor"] = self.integer(settings["se divisor"][0], "se divisor")
        if "sa ratio" in settings:
            details["sa_ratio"] = self.positive(settings["sa ratio"][0], "sa ratio")
        if "sa min" in settings:
            details["sa_min_width"] = self.integer(settings["sa min"][0], "sa min width")
        if "divisor" in settings:
            details["divisor"] = self.integer(settings["divisor"][0], "divisor")
        if decl.share is not None:
            details["share"] = self.sharing(decl.share[0])
        return self.node(Micro, decl.span, name=name, **variables, **details)

    def sharing(self, words: list[Token]) -> tuple[str, ...]:
        """`share kernel, attention, residual` (any of them, in any order) or `share none`."""
        allowed = (*ir.SHARABLE, "none")
        seen: list[str] = []
        for token in words:
            word = self.word(token, allowed, "thing to share")
            if word in seen:
                raise self.fail(f"{word} is named twice in this share statement", token)
            if seen and "none" in (word, *seen):
                raise self.fail(
                    "`share none` (separate weights for every candidate) stands alone",
                    token,
                    f"write `share none` or name what is shared: {V.fmt_allowed(ir.SHARABLE)}",
                )
            seen.append(word)
        return tuple(w for w in ir.SHARABLE if w in seen)

    def positive(self, token: Token, what: str) -> float:
        value = self.fraction(token)
        if value <= 0:
            raise self.fail(f"{what} must be positive, found {token}", token)
        return float(value)

    # ---- the table -------------------------------------------------------------------

    def override(self, meta: Any, children: list[Any]) -> tuple[Token, _Choices, Span]:
        name, value = children
        return (name, self.as_choices(value), self.span(meta))

    def no_expansion(self, meta: Any, children: list[Token]) -> _NoExpansion:
        return _NoExpansion(self.span(meta))

    def row(self, meta: Any, children: list[Any]) -> _RowDecl:
        op, micro, expansion, channels, repeat, stride, *overrides = children
        op_name = str(op).lower()
        if op_name not in V.OPERATORS:
            raise self.fail(
                f"unknown operator '{op}'; allowed: {V.fmt_allowed(V.OPERATORS)}",
                op,
                V.did_you_mean(op_name, V.OPERATORS),
            )
        takes = ir.OPERATOR_VARIABLES[op_name]
        if isinstance(expansion, _NoExpansion) and "expansion" in takes:
            raise self.fail(
                f"{op_name} needs an expansion, found -",
                expansion.span,
                "write a number, a set {a, b} or a range (min, max, step)",
            )
        if isinstance(expansion, _Choices) and "expansion" not in takes:
            raise self.fail(
                f"{op_name} takes no expansion; write - in the expansion column",
                expansion.meta_span,
                f"{op_name} takes {V.fmt_allowed(takes)}",
            )
        repeat_n = self.integer(repeat, "repeat")
        if repeat_n > V.MAX_CHOICES:
            raise self.fail(f"repeat must be at most {V.MAX_CHOICES}, found {repeat_n}", repeat)
        stride_n = self.integer(stride, "stride", minimum=None)
        if stride_n not in V.STRIDES:
            raise self.fail(f"stride {stride} is not allowed; allowed: 1, 2", stride)
        seen: dict[str, Token] = {}
        for name, _, _ in overrides:
            var = str(name)
            if var not in ir.MICRO_VARIABLES:
                hint = V.did_you_mean(var, ir.MICRO_VARIABLES)
                if var in ("expansion", "channels"):
                    hint = f"{var} is a column of the table: write it in the {var} column"
                raise self.fail(
                    f"cannot override '{var}': a row can override the micro variables "
                    f"{V.fmt_allowed(ir.MICRO_VARIABLES)}",
                    name,
                    hint,
                )
            if var in seen:
                raise self.fail(f"{var} is overridden twice in this row", name)
            seen[var] = name
        return _RowDecl(
            op=op,
            micro=micro,
            expansion=expansion,
            channels=channels,
            repeat=repeat_n,
            stride=stride_n,
            overrides=tuple(overrides),
            span=self.span(meta),
        )

    def table_stmt(self, meta: Any, children: list[_RowDecl | None]) -> _Stmt:
        rows = [c for c in children if c is not None]
        return _Stmt("table", self.span(meta), rows)

    def row_node(
        self, decl: _RowDecl, micros: dict[str, tuple[Micro, _MicroDecl]], number: int
    ) -> Row:
        if decl.micro is None:
            if len(micros) != 1:
                raise self.fail(
                    f"row {number} names no micro, and the space declares {len(micros)}: "
                    f"{V.fmt_allowed(list(micros)) or 'none'}",
                    decl.op,
                    "write the micro's name after the operator",
                )
            micro_name = next(iter(micros))
        else:
            micro_name = str(decl.micro)
            if micro_name not in micros:
                raise self.fail(
                    f"undefined micro '{micro_name}'; defined: "
                    f"{V.fmt_allowed(list(micros)) or 'none'}",
                    decl.micro,
                    V.did_you_mean(micro_name, micros),
                )
        micro, micro_decl = micros[micro_name]
        scopes = {k: cast(ir.Scope, v[0]) for k, v in micro_decl.scopes.items()}
        overrides = []
        for name_tok, choices, span in decl.overrides:
            var = cast(VarName, str(name_tok))
            scope = micro.variable(var).scope
            overrides.append(self.variable_node(var, choices, span, scope))
        if isinstance(decl.expansion, _NoExpansion):
            expansion = self.node(Variable, decl.expansion.span, name="expansion", choices=(1.0,))
        else:
            expansion = self.variable_node(
                "expansion",
                decl.expansion,
                decl.expansion.meta_span,
                scopes.get("expansion", "row"),
            )
        return self.node(
            Row,
            decl.span,
            op=str(decl.op).lower(),
            micro=micro_name,
            expansion=expansion,
            channels=self.variable_node(
                "channels", decl.channels, decl.channels.meta_span, scopes.get("channels", "row")
            ),
            repeat=decl.repeat,
            stride=decl.stride,
            overrides=tuple(overrides),
        )

    # ---- fixed layers ----------------------------------------------------------------

    def stride_option(self, meta: Any, children: list[Token]) -> tuple[str, Token]:
        return ("stride", children[0])

    def act_option(self, meta: Any, children: list[Token]) -> tuple[str, Token]:
        return ("act", children[0])

    def dropout_option(self, meta: Any, children: list[Token]) -> tuple[str, Token]:
        return ("dropout", children[0])

    def options(self, pairs: list[tuple[str, Token]]) -> dict[str, Token]:
        out: dict[str, Token] = {}
        for key, token in pairs:
            if key in out:
                raise self.fail(f"{key} is given twice", token)
            out[key] = token
        return out

    def maxpool(self, meta: Any, children: list[Token]) -> tuple[str, Span, int, int]:
        k1, k2, stride = children
        kernel = self.integer(k1, "maxpool kernel size")
        if str(k2) != str(k1) and self.integer(k2, "maxpool kernel size") != kernel:
            raise self.fail(f"the maxpool kernel must be square, found {k1}x{k2}", k2)
        if kernel % 2 == 0:
            raise self.fail(
                f"maxpool kernel {kernel}x{kernel} is not allowed: a kernel is odd (1, 3, 5, ...)",
                k1,
            )
        stride_n = self.integer(stride, "stride", minimum=None)
        if stride_n not in V.STRIDES:
            raise self.fail(f"stride {stride} is not allowed; allowed: 1, 2", stride)
        return ("maxpool", self.span(meta), kernel, stride_n)

    def conv(self, meta: Any, children: list[Any]) -> Conv | _Pooled:
        k1, k2, out, *rest, pool = children
        kernel = self.integer(k1, "conv kernel size")
        if str(k2) != str(k1) and self.integer(k2, "conv kernel size") != kernel:
            raise self.fail(f"the conv kernel must be square, found {k1}x{k2}", k2)
        if kernel % 2 == 0:
            raise self.fail(
                f"conv kernel {kernel}x{kernel} is not allowed: a kernel is odd (1, 3, 5, 7, ...)",
                k1,
            )
        opts = self.options(rest)
        fields: dict[str, Any] = {
            "out_channels": self.integer(out, "conv output channels"),
            "kernel": kernel,
        }
        if "stride" in opts:
            stride = self.integer(opts["stride"], "stride", minimum=None)
            if stride not in V.STRIDES:
                raise self.fail(f"stride {stride} is not allowed; allowed: 1, 2", opts["stride"])
            fields["stride"] = stride
        if "act" in opts:
            fields["act"] = self.layer_act(opts["act"])
        if pool is not None:
            fields["maxpool"], fields["maxpool_stride"] = pool[2], pool[3]
        conv = self.node(Conv, self.span(meta), **fields)
        return conv if pool is None else _Pooled(conv, pool[1])

    def stem_stmt(self, meta: Any, children: list[Any]) -> _Stmt:
        conv = children[0]
        return _Stmt("stem", self.span(meta), conv.conv if isinstance(conv, _Pooled) else conv)

    def head_stmt(self, meta: Any, children: list[Any]) -> _Stmt:
        conv = children[0]
        if isinstance(conv, _Pooled):
            raise self.fail(
                "a maxpool follows a stem conv only",
                conv.pool_span,
                "e.g. `stem conv 7x7 64 stride 2 act relu maxpool 3x3 stride 2`",
            )
        return _Stmt("head", self.span(meta), conv)

    def head_none(self, meta: Any, children: list[Token]) -> _Stmt:
        return _Stmt("head", self.span(meta), None)

    def fc_width(self, meta: Any, children: list[Token]) -> Token:
        return children[0]

    def fc_classes(self, meta: Any, children: list[Token]) -> None:
        return None

    def fc_stmt(self, meta: Any, children: list[Any]) -> _Stmt:
        width, *rest = children
        opts = self.options(rest)
        fields: dict[str, Any] = {}
        if width is not None:
            fields["out_features"] = self.integer(width, "fc width")
        if "act" in opts:
            fields["act"] = self.layer_act(opts["act"])
        if "dropout" in opts:
            p = self.fraction(opts["dropout"])
            if not 0 <= p < 1:
                raise self.fail(
                    f"dropout must be in [0, 1), found {opts['dropout']}", opts["dropout"]
                )
            fields["dropout"] = float(p)
        span = self.span(meta)
        return _Stmt("fc", span, self.node(Linear, span, **fields))

    # ---- the file --------------------------------------------------------------------

    def start(self, meta: Any, children: list[_Stmt | None]) -> Space:
        statements = [c for c in children if c is not None]
        single: dict[str, _Stmt] = {}
        micros: dict[str, tuple[Micro, _MicroDecl]] = {}
        stem: list[Conv] = []
        heads: list[Conv | None] = []  # None: `head none`
        fcs: list[Linear] = []
        for stmt in statements:
            if stmt.kind in _SINGLE_STATEMENTS:
                if stmt.kind in single:
                    first = single[stmt.kind].span
                    what = "space name" if stmt.kind == "space" else f"`{stmt.kind}` statement"
                    raise self.fail(
                        f"duplicate {what} (the first is at line {first.line})", stmt.span
                    )
                single[stmt.kind] = stmt
            elif stmt.kind == "micro":
                decl = cast(_MicroDecl, stmt.payload)
                name = str(decl.name)
                if name in micros:
                    first = micros[name][1].span
                    raise self.fail(
                        f"duplicate micro '{name}' (first defined at line {first.line})", decl.name
                    )
                micros[name] = (self.micro_node(decl), decl)
            elif stmt.kind == "stem":
                stem.append(stmt.payload)
            elif stmt.kind == "head":
                if heads and (stmt.payload is None or heads[-1] is None):
                    raise self.fail(
                        "`head none` says the space has no head conv, so it is its only head",
                        stmt.span,
                    )
                heads.append(stmt.payload)
            elif stmt.kind == "fc":
                fcs.append(stmt.payload)
        if "space" not in single:
            raise self.fail(
                "missing `space NAME`: a space file names its space first",
                Span(file=self.file, line=1, column=1),
            )
        header = single["space"].span
        name = cast(str, single["space"].payload)
        for kind in ("input", "classes", "table"):
            if kind not in single:
                raise self.fail(
                    f"space '{name}' has no `{kind}` statement",
                    header,
                    f"add `{_SINGLE_STATEMENTS[kind]}`",
                )
        if not micros:
            raise self.fail(
                f"space '{name}' declares no micro-architecture",
                header,
                "add e.g. `micro fbnet { kernel {0, 3, 5}; act {relu, swish}; attention none }`",
            )
        for what, layers, example in (
            ("stem", stem, "stem conv 3x3 16 stride 2 act hswish"),
            ("head", heads, "head conv 1x1 1280 act hswish"),
            ("classifier (fc)", fcs, "fc classes"),
        ):
            if not layers:
                raise self.fail(f"space '{name}' has no {what}", header, f"add `{example}`")
        head = [conv for conv in heads if conv is not None]
        if fcs[-1].out_features is not None:
            raise self.fail(
                f"the last fc layer must output the classes, found fc {fcs[-1].out_features}",
                fcs[-1].span or header,
                "write `fc classes`, so that --classes can change it",
            )
        row_decls = cast(list[_RowDecl], single["table"].payload)
        if not row_decls:
            raise self.fail(
                f"space '{name}' has an empty table",
                single["table"].span,
                "add a row: " + _ROW,
            )
        rows = [self.row_node(d, micros, i) for i, d in enumerate(row_decls, start=1)]
        resolution, in_channels = cast(tuple[int, int], single["input"].payload)
        fields: dict[str, Any] = {
            "name": name,
            "resolution": resolution,
            "in_channels": in_channels,
            "classes": single["classes"].payload,
            "micros": tuple(m for m, _ in micros.values()),
            "stem": tuple(stem),
            "rows": tuple(rows),
            "head": tuple(head),
            "classifier": tuple(fcs),
            "source": self.file,
        }
        if "expansion" in single:
            fields["expansion_of"] = single["expansion"].payload
        if "skip" in single:
            fields["skip_mismatch"] = single["skip"].payload
        if "pool" in single:
            fields["pool"] = single["pool"].payload
        if "batchnorm" in single:
            fields.update(single["batchnorm"].payload)
        return self.node(Space, header, **fields)
