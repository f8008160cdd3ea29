"""Property: whatever the text, the parser returns a valid space or raises the project's
own error (SpaceError/FpnasError), never a lark, pydantic or Python exception.

Valid files are mutated: tokens deleted, duplicated, swapped or replaced, random text and
bytes inserted, huge and odd numbers, deep nesting. Fixed example counts keep it to a few
seconds.
"""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fpnas_dsl import ir, resources
from fpnas_dsl.errors import FpnasError
from fpnas_dsl.parser import parse_space
from fpnas_dsl.summary import summarize

SOURCES = [
    (resources.spaces_dir() / f"{name}.space").read_text(encoding="utf-8")
    for name in ("fbnetv2_f", "fbnetv2_f_fine", "mobilenet_v2")
]
TOKEN = re.compile(r"\s+|[^\s]+")

ODD_TOKENS = [
    "99999999999999999999999999999999",
    "1" * 5000,
    "1e999999999",
    "-1e-999999999",
    "1e9",
    "0.0000000001",
    "-0",
    "+5",
    ".5",
    "nan",
    "inf",
    "{" * 400,
    "(" * 400,
    "}" * 50,
    "{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{}}}}",
    "x",
    "×",
    ";",
    "#",
    ":",
    "=",
    ",",
    "\x00",
    "\r",
    "\f",
    "\u2028",
    "\ufeff",
    "é",
    "skip",
    "classes",
    "per block: kernel, act, attention, expansion, channels",
    "kernel=0",
    "attention={0, 1, 2, 4}",
    "stride 2",
    "micro",
    "table {",
    "}",
]


def check(text: str) -> None:
    try:
        space = parse_space(text, "fuzz.space")
    except FpnasError as err:
        message = str(err)
        assert "internal error" not in message, message
        assert message.startswith("fuzz.space:") or "fuzz.space" not in message
        return
    # A text that parses must be usable downstream.
    summary = summarize(space, cost=False)
    assert int(summary["architectures"]) == ir.count_architectures(space) >= 1
    assert ir.Space.model_validate_json(space.model_dump_json()).model_dump() == space.model_dump()


@st.composite
def mutated(draw: st.DrawFn) -> str:
    source = draw(st.sampled_from(SOURCES))
    tokens = TOKEN.findall(source)
    for _ in range(draw(st.integers(1, 4))):
        if not tokens:
            break
        op = draw(st.sampled_from(["delete", "duplicate", "swap", "replace", "insert", "odd"]))
        i = draw(st.integers(0, len(tokens) - 1))
        if op == "delete":
            del tokens[i]
        elif op == "duplicate":
            tokens.insert(i, tokens[i])
        elif op == "swap":
            j = draw(st.integers(0, len(tokens) - 1))
            tokens[i], tokens[j] = tokens[j], tokens[i]
        elif op == "replace":
            tokens[i] = draw(st.sampled_from(tokens))
        elif op == "insert":
            tokens.insert(i, draw(st.text(max_size=8)))
        else:
            tokens[i] = draw(st.sampled_from(ODD_TOKENS))
    return "".join(tokens)


FAST = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@FAST
@given(mutated())
def test_mutated_spaces_raise_only_space_errors(text: str) -> None:
    check(text)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    check(data.decode("utf-8", errors="replace"))
    check(SOURCES[2][:200] + data.decode("latin-1") + SOURCES[2][200:])


@settings(max_examples=25, deadline=None, derandomize=True)
@given(st.integers(min_value=1, max_value=20000), st.sampled_from(["{", "(", "[", "{(", "x"]))
def test_deep_nesting(depth: int, opener: str) -> None:
    check(SOURCES[2].replace("kernel    3", "kernel " + opener * depth + "3"))
    check(opener * depth)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    st.one_of(
        st.integers(min_value=-(10**40), max_value=10**40).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.decimals(allow_nan=False).map(str),
    ),
    st.sampled_from(["16", "320", "224", "1280", "0.2", "6", "3x3"]),
)
def test_odd_numbers(number: str, target: str) -> None:
    check(SOURCES[2].replace(target, number, 1))


def test_huge_and_empty_inputs() -> None:
    check("")
    check("\n" * 10000)
    check("# only a comment")
    check(SOURCES[0] * 3)
    check("space x\n" + "micro m { kernel 3; act relu; attention none }\n" * 2000)
