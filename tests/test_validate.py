"""Semantic and syntax errors: each bad input names file:line:column and says what is
wrong and what is allowed. The inputs are one-line edits of a small valid space."""

from __future__ import annotations

import json
from typing import Any

import pytest
from dsl_samples import TINY, with_lines

from fpnas_dsl import ir
from fpnas_dsl.errors import SpaceError
from fpnas_dsl.parser import load_space, parse_space
from fpnas_dsl.validate import min_resolution, validate_space


def case(name: str, edits: dict[int, str], line: int, column: int, message: str) -> Any:
    return pytest.param(edits, line, column, message, id=name)


# (edits to TINY by line number, expected line, column, message)
CASES = [
    case(
        "unknown operator",
        {16: "    mbconf m 1 (8, 16, 8) 1 1"},
        16,
        5,
        "unknown operator 'mbconf'; allowed: mbconv, fused, ds, conv, basic, bottleneck",
    ),
    # Each operator takes only its variables (ir.OPERATOR_VARIABLES).
    case(
        "expansion on conv",
        {16: "    conv m 1 (8, 16, 8) 1 1"},
        16,
        12,
        "conv takes no expansion; write - in the expansion column",
    ),
    case(
        "expansion on ds",
        {16: "    ds m {1, 2} (8, 16, 8) 1 1"},
        16,
        10,
        "ds takes no expansion; write - in the expansion column",
    ),
    case(
        "no expansion on mbconv",
        {16: "    mbconv m - (8, 16, 8) 1 1"},
        16,
        14,
        "mbconv needs an expansion, found -",
    ),
    case(
        "no expansion on bottleneck",
        {16: "    bottleneck m - (8, 16, 8) 1 1"},
        16,
        18,
        "bottleneck needs an expansion, found -",
    ),
    case(
        "attention on basic",
        {16: "    basic m - (8, 16, 8) 1 1"},
        16,
        5,
        "row 1: basic takes no attention, found attention {none, se} (micro 'm' offers them)",
    ),
    case(
        "attention override on bottleneck",
        {
            11: "    attention none",
            16: "    conv m - (8, 16, 8) 1 1 attention=none",
            17: "    bottleneck m 0.25 16 1 1 attention=se",
        },
        17,
        30,
        "row 2: bottleneck takes no attention, found attention {se}",
    ),
    case(
        "split-attention on fused",
        {11: "    attention {none, sa2}", 16: "    fused m 1 (8, 16, 8) 1 1"},
        16,
        5,
        "row 1: fused cannot have attention {sa2} (micro 'm' offers them); allowed: none, se",
    ),
    case(
        "row without expansion cut short",
        {16: "    conv m - (8, 16, 8) 1"},
        16,
        26,
        "unexpected end of line in a table row; expected a number",
    ),
    case(
        "maxpool on head",
        {19: "head conv 1x1 64 act relu maxpool 3x3 stride 2"},
        19,
        27,
        "a maxpool follows a stem conv only",
    ),
    case(
        "maxpool kernel",
        {14: "stem conv 3x3 16 stride 2 act relu maxpool 2x2 stride 2"},
        14,
        44,
        "maxpool kernel 2x2 is not allowed: a kernel is odd (1, 3, 5, ...)",
    ),
    case(
        "maxpool stride",
        {14: "stem conv 3x3 16 stride 2 act relu maxpool 3x3 stride 3"},
        14,
        55,
        "stride 3 is not allowed; allowed: 1, 2",
    ),
    case(
        "maxpool below 1x1",
        {3: "input 2 x 2 x 3", 14: "stem conv 3x3 16 stride 2 act relu maxpool 3x3 stride 2"},
        14,
        6,
        "the strides reduce the 2x2 input below 1x1: stem conv 1's maxpool has stride 2 but "
        "receives a 1x1 feature map",
    ),
    case(
        "unknown activation",
        {10: "    act {relu, gelu}"},
        10,
        16,
        "unknown activation 'gelu'; allowed: relu, relu6, swish, hswish "
        "(or PyTorch's silu, hardswish)",
    ),
    case(
        "unknown attention",
        {11: "    attention {none, sa3}"},
        11,
        22,
        "unknown attention 'sa3'; allowed: none, se, sa2, sa4 (or the splits 0, 1, 2, 4)",
    ),
    case(
        "attention splits",
        {11: "    attention {0, 3}"},
        11,
        19,
        "attention as splits is 0 (none), 1 (se), 2 (sa2) or 4 (sa4), found 3",
    ),
    case(
        "step not dividing",
        {17: "    mbconv m (1, 4, 1) (16, 24, 5) 2 2"},
        17,
        33,
        "step 5 does not divide the range 16..24 (max - min = 8)",
    ),
    case(
        "float step not dividing",
        {17: "    mbconv m (0.75, 4.5, 0.7) (16, 24, 8) 2 2"},
        17,
        26,
        "step 0.7 does not divide the range 0.75..4.5 (max - min = 3.75)",
    ),
    case(
        "empty range",
        {17: "    mbconv m (1, 4, 1) (24, 16, 8) 2 2"},
        17,
        24,
        "empty range: max 16 is below min 24",
    ),
    case(
        "negative channels",
        {17: "    mbconv m (1, 4, 1) (-8, 24, 8) 2 2"},
        17,
        24,
        "channels must be at least 1, found -8 (in the range -8..24)",
    ),
    case(
        "zero step",
        {17: "    mbconv m (1, 4, 1) (16, 24, 0) 2 2"},
        17,
        33,
        "the step of a range must be positive, found 0",
    ),
    case(
        "range arity",
        {17: "    mbconv m (1, 4, 1) (16, 24) 2 2"},
        17,
        24,
        "a range is (min, max, step): found 2 values",
    ),
    case("empty set", {9: "    kernel {}"}, 9, 12, "empty set: kernel needs at least one choice"),
    case(
        "stride 3",
        {17: "    mbconv m (1, 4, 1) (16, 24, 8) 2 3"},
        17,
        38,
        "stride 3 is not allowed; allowed: 1, 2",
    ),
    case(
        "stem stride 4",
        {14: "stem conv 3x3 16 stride 4 act relu"},
        14,
        25,
        "stride 4 is not allowed; allowed: 1, 2",
    ),
    case(
        "resolution below 1",
        {3: "input 2 x 2 x 3"},
        17,
        5,
        "the strides reduce the 2x2 input below 1x1: row 2 has stride 2 but receives a 1x1"
        " feature map",
    ),
    case(
        "undefined micro",
        {17: "    mbconv n (1, 4, 1) (16, 24, 8) 2 2"},
        17,
        12,
        "undefined micro 'n'; defined: m",
    ),
    case(
        "duplicate micro",
        {12: "}\nmicro m { kernel 3; act relu; attention none }"},
        13,
        7,
        "duplicate micro 'm' (first defined at line 8)",
    ),
    case(
        "duplicate space",
        {3: "space again\ninput 32 x 32 x 3"},
        3,
        1,
        "duplicate space name (the first is at line 2)",
    ),
    case(
        "override undeclared variable",
        {17: "    mbconv m (1, 4, 1) (16, 24, 8) 2 2 expansion=2"},
        17,
        40,
        "cannot override 'expansion': a row can override the micro variables kernel, act,"
        " attention",
    ),
    case(
        "override unknown",
        {17: "    mbconv m (1, 4, 1) (16, 24, 8) 2 2 kernal=3"},
        17,
        40,
        "cannot override 'kernal': a row can override the micro variables kernel, act, attention",
    ),
    case(
        "duplicate choice",
        {9: "    kernel {0, 3, 3}"},
        9,
        19,
        "duplicate choice 3 in kernel (already given as '3' at column 16)",
    ),
    case(
        "duplicate choice mapped",
        {11: "    attention {se, 1}"},
        11,
        20,
        "duplicate choice se in attention (already given as 'se' at column 16)",
    ),
    case("missing stem", {14: ""}, 2, 1, "space 'tiny' has no stem"),
    case("missing head", {19: ""}, 2, 1, "space 'tiny' has no head"),
    case("missing classifier", {21: ""}, 2, 1, "space 'tiny' has no classifier (fc)"),
    case(
        "fixed override outside",
        {17: "    mbconv m (1, 4, 1) (16, 24, 8) 2 2 kernel=7"},
        17,
        40,
        "row 2: kernel {7} is outside the choices of micro 'm': kernel {0, 3, 5}",
    ),
    case(
        "set override outside",
        {17: "    mbconv m (1, 4, 1) (16, 24, 8) 2 2 attention={se, sa2}"},
        17,
        40,
        "row 2: attention {sa2} is outside the choices of micro 'm': attention {none, se}",
    ),
    case(
        "skip forbid",
        {6: "skip where shapes differ: forbid"},
        16,
        5,
        "row 1 offers skip (kernel 0 in {0, 3, 5}) but its block 1 changes shape (16 channels"
        " in, {8, 16} out), and the space declares `skip where shapes differ: forbid`",
    ),
    case(
        "skip only",
        {
            6: "skip where shapes differ: forbid",
            9: "    kernel {0, 3}\n    per block: kernel",
            17: "    mbconv m (1, 4, 1) (16, 24, 8) 2 2 kernel=0",
        },
        18,
        40,
        "row 2 offers only skip (kernel 0), but its block 1 changes shape (stride 2) and cannot"
        " be an identity",
    ),
    case(
        "repeat 0",
        {17: "    mbconv m (1, 4, 1) (16, 24, 8) 0 2"},
        17,
        36,
        "repeat must be at least 1, found 0",
    ),
    case(
        "nonpositive channels",
        {16: "    mbconv m 1 0 1 1"},
        16,
        16,
        "channels must be at least 1, found 0",
    ),
    case(
        "even kernel",
        {9: "    kernel {0, 3, 4}"},
        9,
        19,
        "kernel size 4 is not allowed: a kernel is odd (1, 3, 5, 7, ...) or 0 for skip",
    ),
    case(
        "even conv kernel",
        {14: "stem conv 2x2 16 stride 2 act relu"},
        14,
        11,
        "conv kernel 2x2 is not allowed: a kernel is odd (1, 3, 5, 7, ...)",
    ),
    case(
        "nonsquare input",
        {3: "input 32 x 16 x 3"},
        3,
        12,
        "the input must be square, found 32 x 16",
    ),
    case("missing input", {3: ""}, 2, 1, "space 'tiny' has no `input` statement"),
    case(
        "missing space", {2: ""}, 1, 1, "missing `space NAME`: a space file names its space first"
    ),
    case(
        "duplicate input",
        {4: "input 32 x 32 x 3\nclasses 10"},
        4,
        1,
        "duplicate `input` statement (the first is at line 3)",
    ),
    case(
        "expansion of",
        {5: "expansion relative to outptu"},
        5,
        23,
        "unknown expansion reference 'outptu'; allowed: input, output",
    ),
    case(
        "skip mode",
        {6: "skip where shapes differ: projection"},
        6,
        27,
        "unknown skip mode 'projection'; allowed: project, shortcut, forbid",
    ),
    case(
        "gate",
        {12: "    se ratio 0.25, gate tanh\n}"},
        12,
        25,
        "unknown gate 'tanh'; allowed: sigmoid, hsigmoid (or PyTorch's hardsigmoid)",
    ),
    case(
        "se act",
        {12: "    se ratio 0.25, act gelu\n}"},
        12,
        24,
        "unknown se activation 'gelu'; allowed: relu, relu6, swish, hswish, block "
        "(or PyTorch's silu, hardswish)",
    ),
    case(
        "se width rule",
        {12: "    se ratio 0.25, width ceil\n}"},
        12,
        26,
        "unknown se width rule 'ceil'; allowed: round, floor",
    ),
    case(
        "se divisor zero",
        {12: "    se ratio 0.25, divisor 0\n}"},
        12,
        28,
        "se divisor must be at least 1, found 0",
    ),
    case(
        "se divisor fraction",
        {12: "    se width floor, divisor 2.5\n}"},
        12,
        29,
        "se divisor must be a whole number, found 2.5",
    ),
    case(
        "se act twice",
        {12: "    se act relu, act swish\n}"},
        12,
        18,
        "micro 'm' sets se act twice (first at line 12)",
    ),
    case(
        "batchnorm eps",
        {6: "batchnorm eps 0"},
        6,
        15,
        "batch-norm eps must be in (0, 0.1], found 0",
    ),
    case(
        "batchnorm momentum",
        {6: "batchnorm momentum 1.5"},
        6,
        20,
        "batch-norm momentum must be in (0, 1], found 1.5",
    ),
    case(
        "batchnorm setting",
        {6: "batchnorm epsilon 1e-3"},
        6,
        11,
        "unknown batchnorm setting 'epsilon'; allowed: eps, momentum",
    ),
    case(
        "batchnorm setting twice",
        {6: "batchnorm eps 1e-3, eps 1e-4"},
        6,
        25,
        "eps is given twice",
    ),
    case(
        "batchnorm twice",
        {6: "batchnorm eps 1e-3\nbatchnorm momentum 0.01"},
        7,
        1,
        "duplicate `batchnorm` statement (the first is at line 6)",
    ),
    case(
        "batchnorm without a number",
        {6: "batchnorm eps"},
        6,
        14,
        "unexpected end of line in the batchnorm statement; expected a number",
    ),
    case(
        "activation alias typo",
        {10: "    act {relu, sliu}"},
        10,
        16,
        "unknown activation 'sliu'; allowed: relu, relu6, swish, hswish "
        "(or PyTorch's silu, hardswish)",
    ),
    case(
        "layer activation alias typo",
        {14: "stem conv 3x3 16 stride 2 act hardswich"},
        14,
        31,
        "unknown activation 'hardswich'; allowed: relu, relu6, swish, hswish, none "
        "(or PyTorch's silu, hardswish)",
    ),
    case(
        "fractional channels",
        {16: "    mbconv m 1 (8, 16, 8.5) 1 1"},
        16,
        24,
        "step 8.5 does not divide the range 8..16 (max - min = 8)",
    ),
    case(
        "huge number",
        {16: "    mbconv m 1 (8, 16, 8) 99999999999999999999 1"},
        16,
        27,
        "number 99999999999999999999 is too large; at most 1000000000",
    ),
    case(
        "too many choices",
        {16: "    mbconv m 1 (1, 100000, 1) 1 1"},
        16,
        16,
        "the range has 100000 choices; at most 1024 are allowed",
    ),
    case(
        "word in numbers",
        {16: "    mbconv m 1 {8, wide} 1 1"},
        16,
        20,
        "channels takes numbers, found 'wide'",
    ),
    case(
        "missing micro variable",
        {11: ""},
        8,
        7,
        "micro 'm' does not declare attention; every micro declares kernel, act and attention",
    ),
    case(
        "micro unknown variable",
        {11: "    attn none"},
        11,
        5,
        "unknown micro variable 'attn'; a micro declares kernel, act, attention",
    ),
    case(
        "last fc fixed",
        {21: "fc 10"},
        21,
        1,
        "the last fc layer must output the classes, found fc 10",
    ),
    case("dropout", {21: "fc classes dropout 1.5"}, 21, 20, "dropout must be in [0, 1), found 1.5"),
    case("pool", {20: "pool max"}, 20, 6, "unknown pooling 'max'; allowed: avg"),
    case(
        "unexpected char",
        {16: "    mbconv m 1 (8, 16, 8) 1 1 $"},
        16,
        31,
        "unexpected character '$' in a table row; expected a name, end of line or '}'",
    ),
    case(
        "unclosed table",
        {18: ""},
        19,
        12,
        "unexpected 'x1' in a table row; expected a number, '(' or '{'",
    ),
    case(
        "act range",
        {10: "    act (1, 2, 1)"},
        10,
        9,
        "act takes names, not a range (min, max, step); write a set such as {relu, swish}",
    ),
    case(
        "kernel word",
        {9: "    kernel {3, big}"},
        9,
        16,
        "kernel takes sizes (1, 3, 5, ...) or 0/skip, found 'big'",
    ),
    case(
        "duplicate override",
        {17: "    mbconv m (1, 4, 1) (16, 24, 8) 2 2 kernel=3 kernel=5"},
        17,
        49,
        "kernel is overridden twice in this row",
    ),
    case(
        "no micro column with two micros",
        {
            12: "}\nmicro n { kernel 3; act relu; attention none }",
            16: "    mbconv 1 (8, 16, 8) 1 1",
        },
        17,
        5,
        "row 1 names no micro, and the space declares 2: m, n",
    ),
    case(
        "scope word",
        {12: "    per layer: kernel\n}"},
        12,
        9,
        "unknown scope 'layer'; allowed: row, block",
    ),
    case(
        "duplicate setting",
        {12: "    divisor 8\n    divisor 4\n}"},
        13,
        5,
        "micro 'm' sets divisor twice (first at line 12)",
    ),
    case(
        "unknown thing to share",
        {12: "    share kernal, attention\n}"},
        12,
        11,
        "unknown thing to share 'kernal'; allowed: kernel, attention, residual, none",
    ),
    case(
        "shared twice",
        {12: "    share kernel, attention, kernel\n}"},
        12,
        30,
        "kernel is named twice in this share statement",
    ),
    case(
        "share none with others",
        {12: "    share none, kernel\n}"},
        12,
        17,
        "`share none` (separate weights for every candidate) stands alone",
    ),
    case(
        "two share statements",
        {12: "    share kernel\n    share none\n}"},
        13,
        5,
        "micro 'm' has two share statements (first at line 12)",
    ),
    case(
        "share without names",
        {12: "    share\n}"},
        12,
        10,
        "unexpected end of line in a share statement; expected a name",
    ),
]


def test_tiny_is_valid() -> None:
    parse_space(TINY)


@pytest.mark.parametrize(("edits", "line", "column", "message"), CASES)
def test_bad_input(edits: dict[int, str], line: int, column: int, message: str) -> None:
    text = with_lines(TINY, edits)
    with pytest.raises(SpaceError) as info:
        parse_space(text, "t.space")
    err = info.value
    assert err.message == message
    assert (err.file, err.line, err.column) == ("t.space", line, column)
    rendered = str(err).splitlines()
    assert rendered[0] == f"t.space:{line}:{column}: error: {message}"
    # The offending line is shown, with the caret under the column.
    shown = text.split("\n")[line - 1].expandtabs(1)
    assert rendered[1] == f"{line:>5} | {shown}"
    assert rendered[2] == " " * (len(f"{line:>5} | ") + column - 1) + "^"


@pytest.mark.parametrize(
    ("edits", "hint"),
    [
        ({10: "    act {relu, sliu}"}, "did you mean 'silu'?"),
        ({12: "    se act hardswsh\n}"}, "did you mean 'hardswish'?"),
        ({12: "    se gate hardsigmod\n}"}, "did you mean 'hardsigmoid'?"),
        ({6: "batchnorm epsilon 1e-3"}, "did you mean 'eps'?"),
        (
            {6: "batchnorm eps 0.5"},
            "PyTorch's default is 1e-5; torchvision's MobileNetV3 uses 1e-3",
        ),
    ],
)
def test_new_statements_suggest(edits: dict[int, str], hint: str) -> None:
    with pytest.raises(SpaceError) as info:
        parse_space(with_lines(TINY, edits), "t.space")
    assert info.value.hint == hint


def test_pytorch_names_are_aliases() -> None:
    """silu, hardswish and hardsigmoid are stored under the IR's names."""
    text = with_lines(
        TINY,
        {
            10: "    act {relu, silu, hardswish}",
            12: "    se act silu, gate hardsigmoid\n}",
            14: "stem conv 3x3 16 stride 2 act hardswish",
            16: "    mbconv m 1 (8, 16, 8) 1 1 act=silu",
        },
    )
    space = parse_space(text)
    micro = space.micros[0]
    assert micro.act.choices == ("relu", "swish", "hswish")
    assert (micro.se_act, micro.gate) == ("swish", "hsigmoid")
    assert space.stem[0].act == "hswish"
    assert space.rows[0].overrides[0].choices == ("swish",)


def test_se_and_batchnorm_settings() -> None:
    text = with_lines(
        TINY,
        {
            6: "batchnorm eps 1e-3, momentum 0.01",
            12: "    se ratio 0.25 of input, width floor, divisor 1, act block\n}",
        },
    )
    space = parse_space(text)
    micro = space.micros[0]
    assert (space.bn_eps, space.bn_momentum) == (1e-3, 0.01)
    assert (micro.se_width, micro.se_divisor, micro.se_act, micro.se_relative_to) == (
        "floor",
        1,
        "block",
        "input",
    )
    # floor: a quarter of 18 input channels is 4 (round to 8 would give 8).
    assert micro.se_channels(18, 108) == 4
    assert micro.se_act_for("hswish") == "hswish"
    defaults = parse_space(TINY)
    assert (defaults.bn_eps, defaults.bn_momentum) == (1e-5, 0.1)
    assert defaults.micros[0].se_channels(16, 96) == 24  # round 24 to 8: 24
    assert defaults.micros[0].se_channels(16, 16) == 8  # 4 rounds up to the divisor


def test_there_are_at_least_thirty_bad_inputs() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize(
    ("edits", "hint"),
    [
        ({16: "    mbconf m 1 (8, 16, 8) 1 1"}, "did you mean 'mbconv'?"),
        ({10: "    act {relu, swihs}"}, "did you mean 'swish'?"),
        ({5: "expansion relative to outptu"}, "did you mean 'output'?"),
        ({3: "imput 32 x 32 x 3"}, "did you mean 'input'?"),
        (
            {6: "skip where shapes differ: forbid"},
            "drop 0 in this row (kernel={3, 5}), decide kernel per block (`per block: kernel`),"
            " or declare `skip where shapes differ: project`",
        ),
        ({18: ""}, "the table opened at line 15 is not closed: is its `}` missing?"),
        ({3: "input 2 x 2 x 3"}, "this space needs an input of at least 3x3"),
        (
            {17: "    mbconv m (1, 4, 1) (16, 24, 8) 2"},
            "a row is: op [micro] expansion channels repeat stride [name=choices ...]",
        ),
    ],
)
def test_hints(edits: dict[int, str], hint: str) -> None:
    with pytest.raises(SpaceError) as info:
        parse_space(with_lines(TINY, edits))
    assert info.value.hint == hint
    assert str(info.value).endswith(f"\n  help: {hint}")


def test_skip_per_block_is_dropped_where_shape_changes() -> None:
    # Under `forbid`, a per-block kernel keeps skip only on blocks that can be identities.
    text = with_lines(TINY, {6: "skip where shapes differ: forbid", 12: "    per block: kernel\n}"})
    space = parse_space(text)
    kernels = [b.var("kernel").choices for b in space.blocks]
    assert kernels == [(3, 5), (3, 5), (0, 3, 5)]


def test_skip_forbid_is_fine_where_shapes_match() -> None:
    text = with_lines(
        TINY,
        {
            6: "skip where shapes differ: forbid",
            16: "    mbconv m 1 16 1 1",
            17: "    mbconv m (1, 4, 1) 16 2 1",
        },
    )
    assert ir.count_architectures(parse_space(text)) == 12 * 12 * 4


def test_resolution_lower_bound() -> None:
    space = load_space("fbnetv2_f")
    assert min_resolution(space) == 17
    load_space("fbnetv2_f", resolution=17)
    with pytest.raises(SpaceError, match="row 9 has stride 2"):
        load_space("fbnetv2_f", resolution=16)


# ---- the IR validator on its own (IR read back from JSON, edited) -----------------------


def _edited(change: Any) -> tuple[ir.Space, str]:
    space = parse_space(TINY, "t.space")
    data = json.loads(space.model_dump_json())
    change(data)
    return ir.Space.model_validate(data), TINY


def _fails(change: Any, message: str, line: int, column: int) -> None:
    space, text = _edited(change)
    with pytest.raises(SpaceError) as info:
        validate_space(space, text)
    assert info.value.message == message
    assert (info.value.line, info.value.column) == (line, column)


def test_ir_duplicate_micro() -> None:
    _fails(
        lambda d: d["micros"].append(d["micros"][0]),
        "duplicate micro 'm' (first defined at line 8)",
        8,
        1,
    )


def test_ir_undefined_micro() -> None:
    def change(d: dict[str, Any]) -> None:
        d["rows"][1]["micro"] = "other"

    _fails(change, "row 2 uses undefined micro 'other'; defined: m", 17, 5)


def test_ir_bad_choice_values() -> None:
    def change(d: dict[str, Any]) -> None:
        d["micros"][0]["act"]["choices"] = ["relu", "gelu"]

    _fails(change, "unknown activation 'gelu'; allowed: relu, relu6, swish, hswish", 10, 5)


def test_ir_duplicate_choice() -> None:
    def change(d: dict[str, Any]) -> None:
        d["rows"][0]["channels"]["choices"] = [8, 8]

    _fails(change, "duplicate choice 8 in channels {8, 8}", 16, 16)


def test_ir_empty_stem_and_stride() -> None:
    def no_stem(d: dict[str, Any]) -> None:
        d["stem"] = []

    _fails(no_stem, "space 'tiny' has no stem layer", 2, 1)

    def stride(d: dict[str, Any]) -> None:
        d["rows"][0]["stride"] = 3

    _fails(stride, "row 1: stride 3 is not allowed; allowed: 1, 2", 16, 5)


def test_ir_override_outside_choices() -> None:
    def change(d: dict[str, Any]) -> None:
        override = dict(d["micros"][0]["kernel"])
        override["choices"] = [7]
        d["rows"][0]["overrides"] = [override]

    _fails(
        change,
        "row 1: kernel {7} is outside the choices of micro 'm': kernel {0, 3, 5}",
        9,
        5,
    )


def test_ir_last_fc_must_be_classes() -> None:
    def change(d: dict[str, Any]) -> None:
        d["classifier"][0]["out_features"] = 10

    _fails(change, "the last fc layer must output the classes, found fc 10", 21, 1)


def test_ir_spaceless_node_still_reports() -> None:
    space = parse_space(TINY)
    bad = space.model_copy(
        update={"rows": (space.rows[0].model_copy(update={"repeat": 0, "span": None}),)}
    )
    with pytest.raises(SpaceError, match="row 1: repeat must be at least 1, found 0"):
        validate_space(bad)


def test_an_ir_row_gives_its_operator_only_what_it_takes() -> None:
    """The validator refuses an expansion on an operator that takes none in an IR read
    back from JSON too (the parser refuses it in a file)."""
    space = parse_space(with_lines(TINY, {11: "    attention none", 16: "    conv m - 16 1 1"}))
    row = space.rows[0]
    wrong = row.model_copy(
        update={"expansion": row.expansion.model_copy(update={"choices": (4.0,)})}
    )
    bad = space.model_copy(update={"rows": (wrong, *space.rows[1:])})
    with pytest.raises(
        SpaceError, match=r"row 1: conv takes no expansion, found expansion \{4.0\}"
    ):
        validate_space(bad)
