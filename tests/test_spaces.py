"""The bundled spaces: golden summaries, hand-computed counts, lossless IR round trips.

Regenerate the golden files after an intended change with

    FPNAS_REGEN_GOLDEN=1 python -m pytest tests/test_spaces.py
    # or: python tests/test_spaces.py --regen

and review the diff of tests/golden/*.json before committing it.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from dsl_samples import REQUIRED_KEYS

from fpnas_dsl import ir, resources
from fpnas_dsl.parser import load_space
from fpnas_dsl.summary import render, summarize

GOLDEN = Path(__file__).parent / "golden"
SPACES = resources.bundled_spaces()
EXPECTED = [
    "efficientnet_b0",
    "efficientnet_v2_s",
    "efficientnetv2_search",
    "fbnetv2_f",
    "fbnetv2_f_fine",
    "fbnetv2_f_pp",
    "fpnas_28px",
    "fpnas_l0",
    "fpnas_l1",
    "fpnas_l2",
    "mobilenet_v2",
    "mobilenet_v2_035",
    "mobilenet_v3_large",
    "resnet18",
    "resnet50",
    "resnet_search",
]


def golden_summary(name: str) -> dict[str, Any]:
    # The golden files pin the space, not the cost model (which has tests of its own).
    return summarize(load_space(name), cost=False)


def regenerate() -> None:
    GOLDEN.mkdir(exist_ok=True)
    for name in SPACES:
        text = json.dumps(golden_summary(name), indent=2, sort_keys=True) + "\n"
        (GOLDEN / f"{name}.json").write_text(text, encoding="utf-8")
        print(f"wrote {GOLDEN / name}.json")


def test_the_bundled_spaces() -> None:
    assert SPACES == EXPECTED


@pytest.mark.parametrize("name", SPACES)
def test_golden_summary(name: str) -> None:
    if os.environ.get("FPNAS_REGEN_GOLDEN"):
        regenerate()
    summary = golden_summary(name)
    assert set(summary) >= REQUIRED_KEYS
    path = GOLDEN / f"{name}.json"
    assert path.is_file(), f"no golden file {path}: run FPNAS_REGEN_GOLDEN=1 pytest {__file__}"
    expected = json.loads(path.read_text(encoding="utf-8"))
    assert _approx(json.loads(json.dumps(summary))) == expected


def _approx(value: Any) -> Any:
    """Floats compared to 1e-12 relative, everything else exactly."""
    if isinstance(value, float):
        return pytest.approx(value, rel=1e-12, abs=1e-12)
    if isinstance(value, dict):
        return {k: _approx(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_approx(v) for v in value]
    return value


@pytest.mark.parametrize("name", SPACES)
def test_ir_json_round_trip_is_identity(name: str) -> None:
    space = load_space(name)
    again = ir.Space.model_validate_json(space.model_dump_json())
    assert again.model_dump() == space.model_dump()
    assert again == space
    assert ir.count_architectures(again) == ir.count_architectures(space)
    assert again.layout == space.layout


@pytest.mark.parametrize("name", SPACES)
def test_summary_renders(name: str) -> None:
    space = load_space(name)
    text = render(summarize(space, cost=False), space)
    assert f"space {name}" in text
    assert str(ir.count_architectures(space)) in text


# ---- FBNetV2-F by hand ----------------------------------------------------------------

#: Table 1: (channels choices, repeat, stride); row 1 has expansion 1, the rest 6 choices.
TABLE_1 = [
    ((12, 16), 1, 1),
    ((16, 20, 24), 1, 2),
    ((16, 20, 24), 2, 1),
    ((16, 24, 32, 40), 1, 2),
    ((16, 24, 32, 40), 2, 1),
    ((48, 56, 64, 72, 80), 1, 2),
    ((48, 56, 64, 72, 80), 2, 1),
    ((72, 80, 88, 96, 104, 112), 3, 1),
    (tuple(range(112, 185, 8)), 1, 2),
    (tuple(range(112, 185, 8)), 3, 1),
]


def test_fbnetv2_f_layout_by_hand() -> None:
    space = load_space("fbnetv2_f")
    micro = ("kernel", "act", "attention")
    expected: list[tuple[str, tuple[str, ...], tuple[int, ...], tuple[int, ...]]] = [
        ("row1", (*micro, "channels"), (3, 2, 2, 2), (0,))
    ]
    block = 1
    for r, (channels, repeat, _) in enumerate(TABLE_1[1:], start=2):
        blocks = tuple(range(block, block + repeat))
        expected.append(
            (f"row{r}", (*micro, "expansion", "channels"), (3, 2, 2, 6, len(channels)), blocks)
        )
        block += repeat
    got = [(d.name, d.variables, d.cardinalities, d.blocks) for d in space.layout.decisions]
    assert got == expected
    assert [b.stride for b in space.blocks] == [
        stride if i == 0 else 1 for _, repeat, stride in TABLE_1 for i in range(repeat)
    ]
    assert len(space.blocks) == 17
    for (channels, _, _), row in zip(TABLE_1, space.rows, strict=True):
        assert row.channels.choices == channels
    assert space.rows[1].expansion.choices == (0.75, 1.5, 2.25, 3.0, 3.75, 4.5)


def test_fbnetv2_f_count_by_hand() -> None:
    space = load_space("fbnetv2_f")
    # Row 1: kernel 3 x act 2 x SE 2 x channels 2; rows 2-10: 3 x 2 x 2 x expansion 6 x channels.
    count = 3 * 2 * 2 * 2
    for channels, _, _ in TABLE_1[1:]:
        count *= 3 * 2 * 2 * 6 * len(channels)
    assert count == 2695612494689630945280000
    assert ir.count_architectures(space) == count
    summary = summarize(space, cost=False)
    assert summary["architectures"] == "2695612494689630945280000"
    assert summary["log10_architectures"] == pytest.approx(24.4306, abs=1e-4)
    assert summary["uniform_entropy_nats"] == pytest.approx(math.log(count), rel=1e-12)
    assert summary["uniform_entropy_nats"] == pytest.approx(56.2537, abs=1e-4)
    assert summary["initial_k"] == 14
    assert summary["alpha_params_factorized"] == 9 + sum(13 + len(c) for c, _, _ in TABLE_1[1:])
    assert summary["alpha_params_joint"] == 24 + sum(72 * len(c) for c, _, _ in TABLE_1[1:])
    assert (summary["alpha_params_factorized"], summary["alpha_params_joint"]) == (176, 3624)
    assert summary["blocks"] == 17 and summary["decisions"] == 10


def test_relations_between_the_paper_spaces() -> None:
    count = {name: ir.count_architectures(load_space(name)) for name in SPACES}
    # F++ replaces SE {0, 1} by splits {0, 1, 2, 4} in each of the 10 rows: 2^10 x F.
    assert count["fbnetv2_f_pp"] == count["fbnetv2_f"] * 2**10
    # F-Fine: kernel x act x SE (12 choices) per block instead of per row.
    per_row_micro = 12**10
    assert count["fbnetv2_f_fine"] * per_row_micro == count["fbnetv2_f"] * 12**17
    # Tables D.14 and D.15 have the same rows; only the input differs.
    assert count["fpnas_l1"] == count["fpnas_l2"]
    assert count["mobilenet_v2"] == count["mobilenet_v2_035"] == 1


def test_fp_nas_spaces_by_hand() -> None:
    def product(channel_counts: list[int]) -> int:
        # Every FP-NAS row: kernel 3 x act 2 x splits 4 x expansion 7 x channels.
        return math.prod(3 * 2 * 4 * 7 * c for c in channel_counts)

    l0 = [4, 3, 3, 6, 6, 4, 4, 4, 4, 5, 8, 8, 8]
    l1 = [4, 3, 3, 7, 7, 5, 5, 6, 6, 10, 10, 9, 9]
    assert ir.count_architectures(load_space("fpnas_l0")) == product(l0)
    assert ir.count_architectures(load_space("fpnas_l1")) == product(l1)
    assert [len(load_space(n).blocks) for n in ("fpnas_l0", "fpnas_l1", "fpnas_l2")] == [25, 30, 30]
    assert [load_space(n).resolution for n in ("fpnas_l0", "fpnas_l1", "fpnas_l2")] == [
        224,
        240,
        256,
    ]


def test_mobilenet_v2_is_torchvisions() -> None:
    space = load_space("mobilenet_v2")
    settings = [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ]
    got = [
        (int(r.expansion.choices[0]), r.channels.choices[0], r.repeat, r.stride) for r in space.rows
    ]
    assert got == settings
    assert space.stem[0].model_dump(exclude={"span"}) == {
        "out_channels": 32,
        "kernel": 3,
        "stride": 2,
        "act": "relu6",
    }
    assert space.head[0].model_dump(exclude={"span"}) == {
        "out_channels": 1280,
        "kernel": 1,
        "stride": 1,
        "act": "relu6",
    }
    assert [(f.out_features, f.act, f.dropout) for f in space.classifier] == [(None, None, 0.2)]
    micro = space.micros[0]
    assert (micro.kernel.choices, micro.act.choices, micro.attention.choices) == (
        (3,),
        ("relu6",),
        ("none",),
    )
    assert space.expansion_of == "input"
    assert space.layout.decisions == ()


if __name__ == "__main__":
    if "--regen" in sys.argv:
        regenerate()
    else:
        print(__doc__)


def test_fpnas_28px_count_by_hand() -> None:
    """Row 1: act 2 x attention 4 x channels 2 x kernel {3, 5} (its block changes shape);
    rows 2-4: act 2 x attention 4 x expansion 3 x channels 3, a kernel {3, 5} for the
    first block and {0, 3, 5} for each later one (skip only where it is an identity)."""
    space = load_space("fpnas_28px")
    row = 2 * 4 * 3 * 3
    assert ir.count_architectures(space) == (2 * 4 * 2 * 2) * (row * 2 * 3 * 3) ** 2 * (row * 2 * 3)
    assert space.skip_mismatch == "forbid" and space.micros[0].share == ir.SHARABLE


# ---- distinct networks ----------------------------------------------------------------

_NETWORKS_SPACE = """\
space t
input 16 x 16 x 1
classes 4
skip where shapes differ: {skip}
micro m {{
    kernel {{0, 3}}
    act {{relu, swish}}
    attention {{none, se}}
    {per}
}}
stem conv 3x3 8 stride 2
table {{
    mbconv m {{1, 2}} {{8, 16}} 2 1
    mbconv m {{2, 3}} 16 3 1 act=relu
    mbconv m 2 {{16, 24}} 1 2 kernel=3
}}
head conv 1x1 16
fc classes
"""


def _brute_networks(space: ir.Space) -> int:
    """Distinct networks by enumeration: a skipped block is its kernel and channels only."""
    import itertools

    import numpy as np

    lay = space.layout
    slots = [(d, v) for d, dec in enumerate(lay.decisions) for v in range(len(dec.cardinalities))]
    cards = [lay.decisions[d].cardinalities[v] for d, v in slots]
    seen = set()
    for combo in itertools.product(*(range(c) for c in cards)):
        idx = np.zeros((len(lay.decisions), lay.max_variables), dtype=np.int64)
        for (d, v), c in zip(slots, combo, strict=True):
            idx[d, v] = c
        arch = ir.decode(space, idx)
        seen.add(
            tuple(
                (b.kernel, b.channels)
                if b.kernel == ir.SKIP_KERNEL
                else (b.kernel, b.channels, b.act, b.attention, b.expansion)
                for b in arch.blocks
            )
        )
    return len(seen)


@pytest.mark.parametrize(
    ("skip", "per", "networks", "architectures"),
    [
        ("project", "", 720, 2048),
        ("project", "per block: kernel", 11600, 16384),
        ("project", "per block: act", 1360, 4096),
        ("project", "per block: kernel, attention", 27984, 131072),
        ("project", "per block: kernel, channels", 23200, 32768),
        ("forbid", "per block: kernel", 4096, 4096),
        ("forbid", "per block: kernel, attention", 13824, 32768),
    ],
)
def test_count_networks_by_brute_force(
    skip: str, per: str, networks: int, architectures: int
) -> None:
    from fpnas_dsl.parser import parse_space

    space = parse_space(_NETWORKS_SPACE.format(skip=skip, per=per))
    assert ir.count_architectures(space) == architectures
    assert ir.count_networks(space) == networks == _brute_networks(space)


def test_skipped_rows_leave_a_fixed_network() -> None:
    """The issue's case: a fixed network whose skipped row leaves act and attention open
    is 4 index tuples but 1 network, and counts as fixed."""
    from fpnas_dsl.parser import parse_space

    text = """\
space skipped
input 16 x 16 x 1
classes 4
micro m { kernel {0, 3}; act {relu, swish}; attention {none, se} }
stem conv 3x3 8 stride 2
table {
    mbconv m 2 16 1 1 kernel=3 act=relu attention=se
    mbconv m 2 16 3 1 kernel=0
    mbconv m 2 24 1 2 kernel=3 act=relu attention=none
}
head conv 1x1 16
fc classes
"""
    space = parse_space(text)
    assert (len(space.layout.decisions), ir.count_architectures(space)) == (1, 4)
    assert ir.count_networks(space) == 1
    arch = ir.fixed_architecture(space)
    assert arch is not None and [b.kernel for b in arch.blocks] == [3, 0, 0, 0, 3]
    summary = summarize(space, cost=False)
    assert (summary["architectures"], summary["networks"]) == ("4", "1")
    text_out = render(summarize(space), space)
    assert "networks             1  distinct" in text_out
    assert "FLOPS (MACs)         " in text_out and "exact)" in text_out


# ---- the published networks -----------------------------------------------------------


def test_efficientnet_b0_is_torchvisions() -> None:
    space = load_space("efficientnet_b0")
    # torchvision's MBConvConfig (expand_ratio, kernel, stride, out_channels, num_layers).
    settings = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3)]
    settings += [(6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]
    got = [
        (
            int(r.expansion.choices[0]),
            space.row_variable(r, "kernel").choices[0],
            r.stride,
            r.channels.choices[0],
            r.repeat,
        )
        for r in space.rows
    ]
    assert got == settings
    micro = space.micros[0]
    assert (micro.se_ratio, micro.se_relative_to, micro.se_width, micro.se_divisor) == (
        0.25,
        "input",
        "floor",
        1,
    )
    assert (micro.se_act, micro.gate, micro.act.choices) == ("swish", "sigmoid", ("swish",))
    assert (space.stem[0].act, space.head[0].out_channels, space.head[0].act) == (
        "swish",
        1280,
        "swish",
    )
    assert (space.bn_eps, space.bn_momentum) == (1e-5, 0.1)
    assert summarize(space, cost=False)["notes"] == []


def test_mobilenet_v3_large_is_torchvisions() -> None:
    space = load_space("mobilenet_v3_large")
    # torchvision's bneck_conf, one entry per block: (kernel, expanded, out, SE, act, stride)
    conf = [(3, 16, 16, False, "relu", 1), (3, 64, 24, False, "relu", 2)]
    conf += [(3, 72, 24, False, "relu", 1), (5, 72, 40, True, "relu", 2)]
    conf += [(5, 120, 40, True, "relu", 1)] * 2
    conf += [(3, 240, 80, False, "hswish", 2), (3, 200, 80, False, "hswish", 1)]
    conf += [(3, 184, 80, False, "hswish", 1)] * 2
    conf += [(3, 480, 112, True, "hswish", 1), (3, 672, 112, True, "hswish", 1)]
    conf += [(5, 672, 160, True, "hswish", 2)] + [(5, 960, 160, True, "hswish", 1)] * 2
    arch = ir.fixed_architecture(space)
    assert arch is not None
    got = [
        (b.kernel, b.mid_channels, b.out_channels, b.attention == "se", b.act, b.stride)
        for b in ir.concrete_blocks(space, arch)
    ]
    assert got == conf
    se_widths = [b.se_channels for b in ir.concrete_blocks(space, arch) if b.attention == "se"]
    # torchvision's _make_divisible(expanded // 4, 8)
    assert se_widths == [24, 32, 32, 120, 168, 168, 240, 240]
    assert (space.bn_eps, space.bn_momentum) == (1e-3, 0.01)
    assert [(f.out_features, f.act, f.dropout) for f in space.classifier] == [
        (1280, "hswish", 0.0),
        (None, None, 0.2),
    ]
    assert summarize(space, cost=False)["notes"] == []


def test_a_divisor_that_rounds_se_widths_is_noted() -> None:
    """EfficientNet's SE under the default divisor: 0.25 x 16 = 4 becomes 8, said with
    the micro's position and the two ways out; not an error."""
    from fpnas_dsl.parser import parse_space
    from fpnas_dsl.resources import resolve_space_path

    path = resolve_space_path("efficientnet_b0")
    assert path is not None
    text = path.read_text().replace("width floor, divisor 1, ", "")
    space = parse_space(text, "b0.space")
    [note] = summarize(space, cost=False)["notes"]
    assert note["line"] == text.split("\n").index("micro mb {") + 1 and note["column"] == 1
    assert (
        "divisor 8 rounds SE widths (block 2: 0.25 x 16 input channels = 4.0 becomes 8)"
        in (note["message"])
    )
    assert "`se ..., divisor 1`" in note["help"]
    rendered = render(summarize(space, cost=False), space)
    assert f"b0.space:{note['line']}:1: note: micro 'mb'" in rendered
