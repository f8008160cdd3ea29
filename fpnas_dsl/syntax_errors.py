"""Syntax errors of the `.space` language: a Lark error -> one positioned `SpaceError`.

What the parser reports (a token or character it could not take, the terminals it would
have taken) becomes a message in the language's words: "unexpected 'x' in a set;
expected a number or '}'", with the line, a caret and a hint. Where the error stands
("in a set", "in a table row", ...) is learnt once from the parser itself: every broken
prefix of a sample statement (`_CONTEXTS`) teaches the LALR state in which an error
means "inside" it. A misspelt keyword gets a did-you-mean; a block whose `}` is missing
is named with the line that opened it.

The parser (`fpnas_dsl.parser`) hands its Lark instance in; this module holds no
grammar of its own.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from lark import Lark, Token
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from fpnas_dsl import validate as V
from fpnas_dsl.errors import SpaceError

__all__ = ["ROW_SYNTAX", "describe_syntax_error"]

_TERMINAL_NAMES = {
    "NAME": "a name",
    "NUMBER": "a number",
    "_X": "'x'",
    "_NL": "end of line",
    "$END": "end of file",
}

#: How a table row is written (also the parser's hint for an empty table).
ROW_SYNTAX = "op [micro] expansion channels repeat stride [name=choices ...]"

#: A line that starts with one of these inside braces means the braces were not closed.
_TOP_KEYWORDS = frozenset(
    {"space", "input", "classes", "expansion", "skip", "micro", "stem", "table", "head"}
    | {"pool", "fc", "batchnorm"}
)
_SET = ("a set", "a set is written {a, b, c}")
_RANGE = ("a range", "a range is written (min, max, step)")
_ROW_CTX = ("a table row", f"a row is: {ROW_SYNTAX}")
_CONV = ("a conv layer", "e.g. `stem conv 3x3 16 stride 2 act hswish`")
_FC = ("an fc layer", "e.g. `fc 1280 act hswish dropout 0.2` or `fc classes`")
_INNER = frozenset({_SET[0], _RANGE[0]})
_MICRO_BODY = ("micro m {\n", "\n}\n")

#: ((where, help), prefix, statement split into tokens, suffix): every prefix of the
#: statement that cannot be completed teaches the parser state in which an error means
#: "inside <where>". Earlier entries win where states are shared.
_CONTEXTS: tuple[tuple[tuple[str, str], str, str, str], ...] = (
    (_SET, "micro m {\nkernel ", "{ 3 , 5 }", "\n}\n"),
    (_SET, "table {\nmbconv m 1 16 1 1 kernel = ", "{ 3 , 5 }", "\n}\n"),
    (_SET, "table {\nmbconv m ", "{ 1 , 2 }", " 16 1 1\n}\n"),
    (_SET, "table {\nmbconv m 1 ", "{ 16 , 24 }", " 1 1\n}\n"),
    (_RANGE, "micro m {\nkernel ", "( 3 , 7 , 2 )", "\n}\n"),
    (_RANGE, "table {\nmbconv m ", "( 1 , 2 , 1 )", " 16 1 1\n}\n"),
    (_RANGE, "table {\nmbconv m 1 ", "( 16 , 24 , 4 )", " 1 1\n}\n"),
    (_ROW_CTX, "table {\n", "mbconv m ( 1 , 2 , 1 ) ( 16 , 24 , 8 ) 1 2 kernel = 3", "\n}\n"),
    (_ROW_CTX, "table {\n", "mbconv 1 16 1 2 act = relu", "\n}\n"),
    (_ROW_CTX, "table {\n", "conv m - ( 16 , 24 , 8 ) 1 2 kernel = 3", "\n}\n"),
    (_ROW_CTX, "table {\n", "conv - 16 1 2", "\n}\n"),
    (
        ("the table", "write `table {`, then one row per line, then `}`"),
        "",
        "table {",
        "\nmbconv m 1 16 1 1\n}\n",
    ),
    (
        ("a micro", "write `micro NAME {`, then one variable or setting per line, then `}`"),
        "",
        "micro m {",
        "\nkernel 3\n}\n",
    ),
    (
        ("a micro variable", "a variable is written `kernel {0, 3, 5}` or `act relu`"),
        _MICRO_BODY[0],
        "kernel { 3 , 5 }",
        _MICRO_BODY[1],
    ),
    (
        ("a micro variable", "a variable is written `kernel {0, 3, 5}` or `act relu`"),
        _MICRO_BODY[0],
        "act relu",
        _MICRO_BODY[1],
    ),
    (
        ("a micro variable", "a variable is written `kernel {0, 3, 5}` or `act relu`"),
        _MICRO_BODY[0],
        "kernel 3",
        _MICRO_BODY[1],
    ),
    (
        ("an se setting", "e.g. `se ratio 0.25 of expanded, gate hsigmoid`"),
        _MICRO_BODY[0],
        "se ratio 0.25 of expanded , gate sigmoid",
        _MICRO_BODY[1],
    ),
    (
        ("an se setting", "e.g. `se ratio 0.25 of input, act block, width floor, divisor 1`"),
        _MICRO_BODY[0],
        "se act swish , width floor , divisor 1",
        _MICRO_BODY[1],
    ),
    (
        ("the batchnorm statement", "e.g. `batchnorm eps 1e-3, momentum 0.01`"),
        "",
        "batchnorm eps 0.001 , momentum 0.01",
        "\n",
    ),
    (
        ("an sa setting", "e.g. `sa ratio 0.25, min 32`"),
        _MICRO_BODY[0],
        "sa ratio 0.25 , min 32",
        _MICRO_BODY[1],
    ),
    (("the divisor setting", "e.g. `divisor 8`"), _MICRO_BODY[0], "divisor 8", _MICRO_BODY[1]),
    (
        ("a per statement", "e.g. `per block: kernel, act`"),
        _MICRO_BODY[0],
        "per block : kernel , act",
        _MICRO_BODY[1],
    ),
    (
        ("a share statement", "e.g. `share kernel, attention, residual` or `share none`"),
        _MICRO_BODY[0],
        "share kernel , attention",
        _MICRO_BODY[1],
    ),
    (
        ("the input statement", "e.g. `input 224 x 224 x 3` (resolution x resolution x channels)"),
        "",
        "input 224 x 224 x 3",
        "\n",
    ),
    (_CONV, "", "stem conv 3 x 3 16 stride 2 act relu", "\n"),
    (_CONV, "", "head conv 1 x 1 16", "\n"),
    (_FC, "", "fc 10 act relu dropout 0.2", "\n"),
    (_FC, "", "fc classes", "\n"),
    (
        ("the expansion statement", "write `expansion relative to input` (or `output`)"),
        "",
        "expansion relative to input",
        "\n",
    ),
    (
        ("the skip statement", "write `skip where shapes differ: project` (or `forbid`)"),
        "",
        "skip where shapes differ : project",
        "\n",
    ),
    (("the space statement", "write `space NAME`"), "", "space x", "\n"),
    (("the classes statement", "write `classes 1000`"), "", "classes 10", "\n"),
    (("the pool statement", "write `pool avg`"), "", "pool avg", "\n"),
)


@functools.lru_cache(maxsize=1)
def _state_contexts(lark: Lark) -> dict[int, tuple[str, str]]:
    """Parser state -> (where, help), learnt once from the broken prefixes of _CONTEXTS."""
    table: dict[int, tuple[str, str]] = {}
    ambiguous: set[int] = set()
    for context, prefix, statement, suffix in _CONTEXTS:
        tokens = statement.split()
        for k in range(1, len(tokens) + 1):
            cut = " ".join(tokens[:k])
            for sample in (prefix + cut + suffix, prefix + cut + " @" + suffix):
                try:
                    lark.parse(sample)
                except UnexpectedInput as err:
                    state = _state_number(err)
                    if state is None:
                        continue
                    known = table.setdefault(state, context)
                    if known[0] in _INNER or known[0] == context[0]:
                        continue  # inside a set or range, whatever holds it
                    ambiguous.add(state)  # LALR merged states of two contexts: say neither
    for state in ambiguous:
        del table[state]
    return table


def _unclosed_brace(text: str, line: int) -> tuple[str, int] | None:
    """The block (`micro` or `table`) still open before `line`, and the line it opened on.

    Sets `{a, b}` never span lines, so counting braces line by line (comments dropped)
    finds the open block without parsing."""
    stack: list[tuple[str, int]] = []
    for number, raw in enumerate(text.split("\n")[: max(line - 1, 0)], start=1):
        code = raw.split("#", 1)[0]
        for index, char in enumerate(code):
            if char == "{":
                words = code[:index].split()
                stack.append((words[0] if words else "block", number))
            elif char == "}" and stack:
                stack.pop()
    return stack[-1] if stack else None


def _state_number(err: UnexpectedInput) -> int | None:
    state = getattr(err, "state", None)
    position = getattr(state, "position", state)
    return position if isinstance(position, int) else None


def _describe_terminal(name: str, lark: Lark) -> str:
    if name in _TERMINAL_NAMES:
        return _TERMINAL_NAMES[name]
    try:
        pattern = lark.get_terminal(name).pattern
    except KeyError:
        return name
    if pattern.type == "str":
        return f"'{pattern.value}'"
    return name.lower()


def _join_or(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " or " + items[-1]


def _describe_expected(names: set[str], lark: Lark) -> tuple[str, list[str]]:
    """('a number or ...', keywords) for a set of terminal names."""
    names = {n for n in names if not n.startswith("__")}
    if len(names) > 1:
        names.discard("$END")  # "end of file" is noise next to real alternatives
    keywords = sorted(
        v for n in names if (v := _describe_terminal(n, lark)).startswith("'") and n not in ("_X",)
    )
    others = sorted(
        _describe_terminal(n, lark)
        for n in names
        if not _describe_terminal(n, lark).startswith("'")
    )
    quoted = keywords + [_describe_terminal(n, lark) for n in names if n == "_X"]
    items = others + quoted
    if len(items) > 12:
        items = [*items[:11], "..."]
    return _join_or(items), [k.strip("'") for k in keywords]


def _describe_token(token: Token) -> str:
    if token.type == "$END":
        return "end of file"
    if token.type == "_NL":
        return "';'" if str(token).startswith(";") else "end of line"
    value = str(token)
    if token.type == "NUMBER":
        return f"number {value}"
    if len(value) > 40:
        value = value[:37] + "..."
    return f"'{value}'"


def describe_syntax_error(err: UnexpectedInput, text: str, file: str, lark: Lark) -> SpaceError:
    """A Lark error from `lark` (the grammar's LALR parser) on `text` as a SpaceError:
    where it is, what was found, what the parser expected there, and a hint."""
    state = _state_number(err)
    context = _state_contexts(lark).get(state) if state is not None else None
    accepts = set(getattr(err, "accepts", None) or getattr(err, "allowed", None) or ())
    if context and context[0] in ("a set", "a range"):
        # Sets and ranges share the parser states of their value lists.
        context = _SET if "RBRACE" in accepts else _RANGE
    where = f" in {context[0]}" if context else ""
    hint = context[1] if context else None
    if isinstance(err, UnexpectedToken):
        token = err.token
        found = _describe_token(token)
        expected, keywords = _describe_expected(set(err.accepts or err.expected), lark)
        if token.type == "NAME" and keywords:
            suggestion = V.did_you_mean(str(token), keywords)
            hint = suggestion if suggestion else hint
        line = token.line if isinstance(token.line, int) else 1
        column = token.column if isinstance(token.column, int) else 1
    elif isinstance(err, UnexpectedCharacters):
        pos = err.pos_in_stream if isinstance(err.pos_in_stream, int) else -1
        char = text[pos] if 0 <= pos < len(text) else ""
        found = f"character '{char}'" if char.isprintable() else f"character {char!r}"
        expected, _ = _describe_expected(set(err.allowed or ()), lark)
        line, column = err.line, err.column
    else:  # UnexpectedEOF: the LALR parser reports end of input as a token, kept for safety
        found, expected = "end of file", "more input"
        line = max(text.count("\n"), 1)
        column = 1
    unclosed = _unclosed_brace(text, line)
    if unclosed is not None:
        lines = text.split("\n")
        words = lines[line - 1].split() if 0 < line <= len(lines) else []
        if found == "end of file" or (words and words[0] in _TOP_KEYWORDS):
            what, opened = unclosed
            hint = f"the {what} opened at line {opened} is not closed: is its `}}` missing?"
    message = f"unexpected {found}{where}"
    if expected:
        message += f"; expected {expected}"
    return SpaceError(message, file=file, line=line, column=column, source=text, hint=hint)
