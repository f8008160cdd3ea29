"""The .space parser: what the language expresses, and how text becomes IR."""

from __future__ import annotations

from pathlib import Path

import pytest
from dsl_samples import TINY, with_lines

from fpnas_dsl import ir
from fpnas_dsl.errors import FpnasError, SpaceError
from fpnas_dsl.parser import build_space, load_space, parse_space, parse_tree


def test_tiny_space_ir() -> None:
    space = parse_space(TINY, "tiny.space")
    assert space.name == "tiny"
    assert (space.resolution, space.in_channels, space.classes) == (32, 3, 10)
    assert space.expansion_of == "input"
    assert space.skip_mismatch == "project"
    assert space.source == "tiny.space"
    (micro,) = space.micros
    assert micro.kernel.choices == (0, 3, 5)
    assert micro.act.choices == ("relu", "swish")
    assert micro.attention.choices == ("none", "se")
    assert [r.channels.choices for r in space.rows] == [(8, 16), (16, 24)]
    assert space.rows[1].expansion.choices == (1.0, 2.0, 3.0, 4.0)
    assert all(isinstance(v, float) for v in space.rows[0].expansion.choices)
    assert all(type(v) is int for v in space.rows[0].channels.choices)
    assert space.stem == (
        ir.Conv(out_channels=16, kernel=3, stride=2, act="relu", span=space.stem[0].span),
    )
    assert space.head[0].out_channels == 64 and space.head[0].stride == 1
    assert space.classifier[0].out_features is None
    assert [b.stride for b in space.blocks] == [1, 2, 1]


def test_spans_point_at_the_source() -> None:
    space = parse_space(TINY, "tiny.space")
    assert space.span is not None and (space.span.line, space.span.column) == (2, 1)
    row = space.rows[1]
    assert row.span is not None and (row.span.line, row.span.column) == (17, 5)
    assert row.expansion.span is not None
    assert (row.expansion.span.line, row.expansion.span.column) == (17, 14)
    assert row.expansion.span.end_column == 22  # the closing parenthesis
    assert space.micros[0].kernel.span is not None
    assert space.micros[0].kernel.span.line == 9
    assert all(s.file == "tiny.space" for s in [space.span, row.span])


def test_paper_notation_for_attention_and_skip() -> None:
    text = with_lines(TINY, {9: "    kernel {skip, 3}", 11: "    attention {0, 1, 2, 4}"})
    space = parse_space(text)
    assert space.micros[0].kernel.choices == (0, 3)
    assert space.micros[0].attention.choices == ("none", "se", "sa2", "sa4")


def test_micro_details() -> None:
    text = with_lines(
        TINY,
        {
            12: "    se ratio 0.125 of input, gate hsigmoid\n    sa min 16, ratio 0.5\n"
            "    divisor 4\n}",
        },
    )
    micro = parse_space(text).micros[0]
    assert micro.se_ratio == 0.125
    assert micro.se_relative_to == "input"
    assert micro.gate == "hsigmoid"
    assert (micro.sa_ratio, micro.sa_min_width, micro.divisor) == (0.5, 16, 4)


def test_micro_defaults() -> None:
    micro = parse_space(TINY).micros[0]
    assert (micro.se_ratio, micro.se_relative_to, micro.gate) == (0.25, "expanded", "sigmoid")
    assert (micro.sa_ratio, micro.sa_min_width, micro.divisor) == (0.25, 32, 8)


@pytest.mark.parametrize(
    ("line", "share"),
    [
        (None, ("kernel", "attention", "residual")),  # the default: the sharing that trains
        ("    share none", ()),  # the paper's separate weights, one line away
        ("    share residual, kernel", ("kernel", "residual")),
        ("    share attention", ("attention",)),
    ],
)
def test_share_statement(line: str | None, share: tuple[str, ...]) -> None:
    text = TINY if line is None else with_lines(TINY, {12: f"{line}\n}}"})
    micro = parse_space(text).micros[0]
    assert micro.share == share
    assert (
        ir.Space.model_validate_json(parse_space(text).model_dump_json()).micros[0].share == share
    )


def test_per_block_scope() -> None:
    text = with_lines(TINY, {12: "    per block: kernel, act, channels\n}"})
    space = parse_space(text)
    micro = space.micros[0]
    assert micro.kernel.scope == "block" and micro.act.scope == "block"
    assert micro.attention.scope == "row"
    assert all(r.channels.scope == "block" for r in space.rows)
    assert all(r.expansion.scope == "row" for r in space.rows)
    decisions = [(d.name, d.variables) for d in space.layout.decisions]
    per_block = ("kernel", "act", "channels")
    assert decisions == [
        ("row1.block1", per_block),
        ("row1", ("attention",)),
        ("row2.block1", per_block),
        ("row2", ("attention", "expansion")),
        ("row2.block2", per_block),
    ]


def test_row_overrides() -> None:
    text = with_lines(
        TINY,
        {17: "    mbconv m (1, 4, 1) (16, 24, 8) 2 2 kernel=5 attention={none, se} act = relu"},
    )
    row = parse_space(text).rows[1]
    assert [(o.name, o.choices) for o in row.overrides] == [
        ("kernel", (5,)),
        ("attention", ("none", "se")),
        ("act", ("relu",)),
    ]
    span = row.overrides[0].span
    assert span is not None and (span.line, span.column) == (17, 40)


def test_override_keeps_the_micro_scope() -> None:
    text = with_lines(
        TINY,
        {
            12: "    per block: kernel\n}",
            17: "    mbconv m (1, 4, 1) (16, 24, 8) 2 2 kernel={3, 5}",
        },
    )
    row = parse_space(text).rows[1]
    assert row.overrides[0].scope == "block"


def test_micro_column_may_be_omitted_with_one_micro() -> None:
    text = with_lines(TINY, {16: "    MBConv 1 (8, 16, 8) 1 1"})
    assert parse_space(text).rows[0].micro == "m"


def test_several_micros() -> None:
    text = with_lines(
        TINY,
        {
            12: "}\nmicro fixed { kernel 3; act relu6; attention none }",
            17: "    mbconv fixed (1, 4, 1) (16, 24, 8) 2 2",
        },
    )
    space = parse_space(text)
    assert [m.name for m in space.micros] == ["m", "fixed"]
    assert space.rows[1].micro == "fixed"
    assert space.micro("fixed").kernel.choices == (3,)


def test_fixed_layers() -> None:
    text = with_lines(
        TINY,
        {
            14: "stem conv 3x3 16 stride 2 act relu\nstem conv 3×3 16 act none",
            21: "fc 1280 act hswish dropout 0.2\nfc 640 act relu\nfc classes dropout 0.1",
        },
    )
    space = parse_space(text)
    assert [c.act for c in space.stem] == ["relu", None]
    assert [(f.out_features, f.act, f.dropout) for f in space.classifier] == [
        (1280, "hswish", 0.2),
        (640, "relu", 0.0),
        (None, None, 0.1),
    ]


def test_expansion_relative_to_output_and_skip_forbid() -> None:
    text = with_lines(
        TINY,
        {
            5: "expansion relative to output",
            6: "skip where shapes differ: forbid",
            9: "    kernel {3, 5}",
        },
    )
    space = parse_space(text)
    assert (space.expansion_of, space.skip_mismatch) == ("output", "forbid")


def test_layout_of_the_tiny_space() -> None:
    space = parse_space(TINY)
    lay = space.layout
    assert [d.variables for d in lay.decisions] == [
        ("kernel", "act", "attention", "channels"),
        ("kernel", "act", "attention", "expansion", "channels"),
    ]
    assert lay.cardinalities == [[3, 2, 2, 2], [3, 2, 2, 4, 2]]
    assert ir.count_architectures(space) == 24 * 96


@pytest.mark.parametrize(
    "variant",
    [
        pytest.param(TINY.replace("\n", "\r\n"), id="crlf"),
        pytest.param("\ufeff" + TINY, id="bom"),
        pytest.param(TINY.rstrip("\n"), id="no-final-newline"),
        pytest.param(TINY.replace("\n\n", "\n  # a comment line\n\n\n"), id="comments"),
        pytest.param(
            TINY.replace("    act       {relu, swish}\n", "    act {relu, swish};;\n"),
            id="semicolons",
        ),
        pytest.param(TINY.replace("input 32 x 32 x 3", "input 32x32x3"), id="no-spaces"),
        pytest.param(TINY.replace("\t", " ").replace("    ", "\t"), id="tabs"),
    ],
)
def test_layout_variants_parse_the_same(variant: str) -> None:
    assert _same_without_spans(parse_space(variant), parse_space(TINY))


def _same_without_spans(a: ir.Space, b: ir.Space) -> bool:
    return _strip(a.model_dump()) == _strip(b.model_dump())


def _strip(value: object) -> object:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k != "span"}
    if isinstance(value, (list, tuple)):
        return [_strip(v) for v in value]
    return value


def test_one_line_micro() -> None:
    text = with_lines(
        TINY,
        {
            8: "micro m { kernel {0, 3, 5}; act {relu, swish}; attention {none, se} }",
            9: "",
            10: "",
            11: "",
            12: "",
        },
    )
    assert _same_without_spans(parse_space(text), parse_space(TINY))


def test_middle_stages() -> None:
    tree = parse_tree(TINY, "t.space")
    assert tree.data == "start"
    space = build_space(tree, TINY, "t.space")
    assert space.name == "tiny"


def test_syntax_error_is_positioned_with_context_and_help() -> None:
    text = with_lines(TINY, {17: "    mbconv m (1, 4, 1) (16, 24, 8) 2"})
    with pytest.raises(SpaceError) as info:
        parse_space(text, "t.space")
    err = info.value
    assert (err.file, err.line, err.column) == ("t.space", 17, 37)
    assert err.message == "unexpected end of line in a table row; expected a number"
    assert err.hint is not None and "op [micro] expansion channels repeat stride" in err.hint
    rendered = str(err)
    assert rendered.splitlines()[0].startswith("t.space:17:37: error: ")
    assert "   17 |     mbconv m (1, 4, 1) (16, 24, 8) 2" in rendered
    assert rendered.splitlines()[2] == " " * (len("   17 | ") + 36) + "^"


def test_keyword_typo_suggests_the_keyword() -> None:
    with pytest.raises(SpaceError) as info:
        parse_space(TINY.replace("classes 10", "clases 10"))
    assert info.value.hint == "did you mean 'classes'?"
    assert "expected 'batchnorm', 'classes', 'expansion'" in info.value.message


def test_keywords_are_names_elsewhere() -> None:
    # "act", "se" and "skip" are keywords in some places and plain words in others.
    text = with_lines(
        TINY, {11: "    attention se", 17: "    mbconv m (1, 4, 1) (16, 24, 8) 2 2 act=relu"}
    )
    space = parse_space(text)
    assert space.micros[0].attention.choices == ("se",)


# ---- load_space --------------------------------------------------------------------------


def test_load_bundled_by_name_and_path() -> None:
    by_name = load_space("fbnetv2_f")
    assert by_name.name == "fbnetv2_f"
    path = Path(by_name.source)
    assert path.is_file()
    by_path = load_space(path)
    assert _same_without_spans(by_name, by_path)
    assert load_space("fbnetv2_f.space").name == "fbnetv2_f"


def test_overrides_are_applied_and_validated() -> None:
    space = load_space("fbnetv2_f", resolution=28, in_channels=1, classes=10)
    assert (space.resolution, space.in_channels, space.classes) == (28, 1, 10)
    with pytest.raises(SpaceError) as info:
        load_space("fbnetv2_f", resolution=16)
    err = info.value
    assert "the strides reduce the 16x16 input below 1x1: row 9 has stride 2" in err.message
    assert err.hint == "this space needs an input of at least 17x17"
    assert err.line == 36 and err.column == 5


@pytest.mark.parametrize("value", [0, -3, True, 10**12])
def test_bad_override_values(value: int) -> None:
    with pytest.raises(FpnasError, match="--classes must be a whole number"):
        load_space("fbnetv2_f", classes=value)


def test_missing_space() -> None:
    bundled = r"bundled: efficientnet_b0, efficientnet_v2_s, efficientnetv2_search, fbnetv2_f"
    with pytest.raises(FpnasError, match=rf"no space 'nope'.*{bundled}"):
        load_space("nope")


def test_unreadable_and_undecodable(tmp_path: Path) -> None:
    bad = tmp_path / "bad.space"
    bad.write_bytes(TINY.encode().replace(b"tiny\n", b"ti\xffny\n", 1))
    with pytest.raises(SpaceError) as info:
        load_space(bad)
    assert "not valid UTF-8: byte 0xff" in info.value.message
    assert (info.value.line, info.value.column) == (2, 9)
    folder = tmp_path / "dir.space"
    folder.mkdir()
    with pytest.raises(FpnasError):
        load_space(folder)


def test_error_render_without_source_and_past_the_end() -> None:
    assert str(SpaceError("boom", file="f", line=3, column=2)) == "f:3:2: error: boom"
    err = SpaceError("boom", file="f", line=9, column=1, source="one line\n", hint="try")
    assert str(err) == "f:9:1: error: boom\n  help: try"


def test_the_documented_example() -> None:
    import re

    from fpnas_dsl.summary import summarize

    doc = (Path(__file__).resolve().parent.parent / "docs" / "dsl.md").read_text()
    blocks = re.findall(r"```space\n(.*?)```", doc, re.S)
    example = blocks[0]
    micro = next(b for b in blocks if "micro fbnet" in b)
    summary = summarize(parse_space(example, "docs/dsl.md"), cost=False)
    assert (summary["blocks"], summary["decisions"], summary["architectures"]) == (
        8,
        10,
        "322486272",
    )
    assert summary["initial_k"] == 4
    assert (summary["alpha_params_factorized"], summary["alpha_params_joint"]) == (57, 155)
    assert "micro fbnet {" in micro


def test_every_space_example_in_the_reference_parses() -> None:
    """Every ```space block of docs/dsl.md is valid: whole files as they are, fragments
    (a statement or a micro's `se` line) completed by a minimal space around them."""
    import re

    doc = (Path(__file__).resolve().parent.parent / "docs" / "dsl.md").read_text()
    blocks = re.findall(r"```space\n(.*?)```", doc, re.S)
    assert len(blocks) >= 5
    body = "input 32 x 32 x 3\nclasses 10\ntable {\n mbconv 1 16 1 1\n}\n"
    body += "head conv 1x1 32\nfc classes\n"
    for block in blocks:
        text = block.replace("\n  ", "\n")
        if re.search(r"^space ", text, re.M):
            parse_space(text, "docs/dsl.md")
            continue
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if all(line.startswith("se ") for line in lines):
            for line in lines:  # each an alternative for the same micro
                micro = "micro m {\n kernel 3\n act relu\n attention se\n " + line + "\n}\n"
                parse_space(f"space s\n{micro}stem conv 3x3 16\n{body}", "docs/dsl.md")
            continue
        text = f"space s\n{text}\n{body}"
        if "micro " not in text:
            text += "micro m { kernel 3; act relu; attention none }\n"
        if "stem " not in text:
            text += "stem conv 3x3 16\n"
        parse_space(text, "docs/dsl.md")
    for word in ("batchnorm eps", "momentum", "width floor", "act block", "silu", "hardswish"):
        assert word in doc
    assert "hardsigmoid" in doc and "divisor 1" in doc
