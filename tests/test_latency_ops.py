"""Latency tables of every row operator (fused, ds, conv, basic, bottleneck), stem maxpools
and `head none`: each block's parts by operator, the parts against the layers the network
runs, the vectorised model against a block-by-block sum and against hand-listed parts, and
`fpnas latency` end to end on a space that mixes them all and on ResNet-18."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_latency import FAST, by_blocks, fake_table
from torch.utils.flop_counter import FlopCounterMode

from fpnas_dsl.archfile import save_arch
from fpnas_dsl.cli import main
from fpnas_dsl.cost import conv_out_size
from fpnas_dsl.ir import (
    Architecture,
    BlockChoice,
    ConcreteBlock,
    OpName,
    Space,
    concrete_blocks,
    decode,
    encode,
    fixed_architecture,
    mid_channels,
    uniform_samples,
)
from fpnas_dsl.latency import (
    LatencyModel,
    LatencyTable,
    Part,
    block_parts,
    head_part,
    space_parts,
    stem_part,
)
from fpnas_dsl.measure import build_part
from fpnas_dsl.nn import build_network
from fpnas_dsl.parser import load_space

MIXED = str(Path(__file__).parent / "data" / "mixed_ops_latency.space")
STEM = "stem 32px 3ch 3x3/2:16/relu maxpool3/2"
HEAD = "head 2px 32 - pool fc10"


pytestmark = pytest.mark.usefixtures("one_thread")


def mixed(**update: Any) -> Space:
    space = load_space(MIXED)
    return space.model_copy(update=update) if update else space


def block(op: OpName, cin: int, cout: int, stride: int = 1, **choice: Any) -> ConcreteBlock:
    """A concrete block of the mixed space's `mb` micro (SE: a quarter of the input)."""
    space = mixed()
    fields: dict[str, Any] = {"kernel": 3, "act": "relu", "attention": "none", "expansion": 1.0}
    fields.update(choice)
    micro = space.micro("mb")
    return ConcreteBlock(
        in_channels=cin,
        out_channels=cout,
        mid_channels=mid_channels(space, micro, cin, cout, fields["expansion"], op),
        stride=stride,
        micro=micro,
        skip_mismatch=space.skip_mismatch,
        op=op,
        **fields,
    )


def signatures(parts: list[Part]) -> list[str]:
    return [p.signature for p in parts]


def test_each_operators_parts() -> None:
    # conv: one conv-bn-act, never a residual.
    assert signatures(block_parts(block("conv", 16, 16), 8)) == ["conv 8px s1 k3 16>16 relu"]
    # basic: the strided conv, the projection shortcut where the shape changes, the tail.
    assert signatures(block_parts(block("basic", 16, 32, 2), 8)) == [
        "conv 8px s2 k3 16>32 relu",
        "proj 8px s2 16>32",
        "tail 4px k3 32>32 relu +res",
    ]
    assert signatures(block_parts(block("basic", 32, 32), 4)) == [
        "conv 4px s1 k3 32>32 relu",
        "tail 4px k3 32>32 relu +res",
    ]
    # bottleneck: 1x1 (as MBConv's expand), the kxk at the stride, [proj], 1x1 tail.
    assert signatures(block_parts(block("bottleneck", 32, 64, 2, expansion=0.5), 8)) == [
        "expand 8px 32>16 relu",
        "conv 8px s2 k3 16>16 relu",
        "proj 8px s2 32>64",
        "tail 4px k1 16>64 relu +res",
    ]
    # fused: the kxk expansion, SE, the projection; expansion 1: the one conv (+res), SE.
    assert signatures(block_parts(block("fused", 16, 16, expansion=4.0, attention="se"), 8)) == [
        "conv 8px s1 k3 16>64 relu",
        "se 8px 64>4 swish/sigmoid",
        "project 8px 64>16 +res",
    ]
    assert signatures(block_parts(block("fused", 24, 24, kernel=5, attention="se"), 8)) == [
        "conv 8px s1 k5 24>24 relu +res",
        "se 8px 24>6 swish/sigmoid",
    ]
    # ds: the depthwise conv at the input's width, attention, the pointwise projection.
    assert signatures(block_parts(block("ds", 24, 24, attention="sa2", act="swish"), 8)) == [
        "dw 8px s1 k3 24x2 swish",
        "sa2 8px 24>32",
        "project 8px 24>24 +res",
    ]
    # `skip where shapes differ: shortcut` adds a projection to MBConv only, as cost.py.
    assert signatures(block_parts(block("ds", 16, 24, 2), 8)) == [
        "dw 8px s2 k3 16x1 relu",
        "project 4px 16>24",
    ]
    assert signatures(block_parts(block("mbconv", 16, 24, 2), 8)) == [
        "dw 8px s2 k3 16x1 relu",
        "proj 8px s2 16>24",
        "project 4px 16>24 +res",
    ]
    # A skip: nothing, or the projection where the shape changes, whatever the operator.
    others: tuple[OpName, ...] = ("fused", "ds", "conv", "basic", "bottleneck")
    for op in others:
        assert block_parts(block(op, 24, 24, kernel=0), 8) == []
        assert signatures(block_parts(block(op, 16, 24, 2, kernel=0), 8)) == ["proj 8px s2 16>24"]


def test_the_space_covers_every_operator_and_the_stem_maxpool() -> None:
    parts = space_parts(mixed())
    kinds = {p.kind for p in parts.catalogue.values()}
    assert kinds == {"stem", "conv", "dw", "sa", "se", "project", "proj", "expand", "tail", "head"}
    assert parts.constant == (STEM,)  # 32 px -> 16 (stride 2) -> 8 (maxpool)
    assert HEAD in parts.catalogue  # head none: the last block feeds the pool


def counted(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[int, int]:
    """(FlopCounterMode total, parameters) of one call."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(*inputs)
    return counter.get_total_flops(), sum(p.numel() for p in module.parameters())


def network_parts(space: Space, idx: np.ndarray) -> list[Part]:
    stem, size = stem_part(space)
    parts = [stem] if stem is not None else []
    last = space.stem[-1].out_channels if space.stem else space.in_channels
    for b in concrete_blocks(space, decode(space, idx)):
        parts += block_parts(b, size)
        size = conv_out_size(size, 1, b.stride)
        last = b.out_channels
    return [*parts, head_part(space, last, size)]


@pytest.mark.parametrize("name", ["mixed", "resnet18", "resnet50", "efficientnet_v2_s"])
def test_parts_are_the_layers_the_network_runs(name: str) -> None:
    """The measured parts, summed, hold exactly the network's convolutions and linear
    layers (multiply-accumulates) and its parameters: no layer left out or counted twice."""
    space = mixed() if name == "mixed" else load_space(name, 32)
    fixed = fixed_architecture(space)
    archs = uniform_samples(space, 12, seed=5) if fixed is None else encode(space, fixed)[None]
    seen: dict[str, tuple[int, int]] = {}
    for idx in archs:
        flops = params = 0
        for part in network_parts(space, idx):
            if part.signature not in seen:
                seen[part.signature] = counted(*build_part(space, part, 1))
            flops += seen[part.signature][0]
            params += seen[part.signature][1]
        x = torch.randn(1, space.in_channels, space.resolution, space.resolution)
        assert (flops, params) == counted(build_network(space, idx).eval(), (x,))


@pytest.mark.parametrize("skip_mismatch", ["project", "shortcut", "forbid"])
def test_vectorised_latency_is_the_sum_of_each_blocks_parts(skip_mismatch: str) -> None:
    space = mixed(skip_mismatch=skip_mismatch)
    table = fake_table(space)
    archs = uniform_samples(space, 300, seed=7)
    want = np.array([by_blocks(space, table, a) for a in archs])
    np.testing.assert_allclose(LatencyModel(space, table).price(archs), want, rtol=1e-12)


def choose(*blocks: tuple[int, str, str, float, int]) -> list[BlockChoice]:
    return [
        BlockChoice(kernel=k, act=a, attention=att, expansion=e, channels=c)
        for k, a, att, e, c in blocks
    ]


#: Two architectures of the mixed space and their parts, listed by hand (stride 2 on the
#: fused and basic rows: 8 px, then 4, then 2).
BY_HAND: list[tuple[list[BlockChoice], list[str]]] = [
    (
        choose(
            (3, "relu", "none", 1, 24),  # conv
            (5, "swish", "sa2", 1, 16),  # ds
            (3, "relu", "se", 4, 24),  # fused
            (5, "swish", "se", 1, 32),  # mbconv, with its projection shortcut
            (3, "relu", "none", 1, 32),  # basic
            (3, "relu", "none", 0.5, 32),  # bottleneck
        ),
        [
            STEM,
            "conv 8px s1 k3 16>24 relu",
            "dw 8px s1 k5 24x2 swish",
            "sa2 8px 24>32",
            "project 8px 24>16",
            "conv 8px s2 k3 16>64 relu",
            "se 4px 64>4 swish/sigmoid",
            "project 4px 64>24",
            "dw 4px s1 k5 24x1 swish",
            "se 4px 24>6 swish/sigmoid",
            "proj 4px s1 24>32",
            "project 4px 24>32 +res",
            "conv 4px s2 k3 32>32 relu",
            "proj 4px s2 32>32",
            "tail 2px k3 32>32 relu +res",
            "expand 2px 32>16 relu",
            "conv 2px s1 k3 16>16 relu",
            "tail 2px k1 16>32 relu +res",
            HEAD,
        ],
    ),
    (
        choose(
            (3, "relu", "none", 1, 16),  # conv
            (0, "relu", "none", 1, 16),  # ds skipped: identity
            (5, "swish", "none", 1, 24),  # fused, expansion 1: one conv
            (0, "relu", "none", 1, 24),  # mbconv skipped: identity
            (0, "relu", "none", 1, 24),  # basic skipped at stride 2: the projection
            (3, "relu", "none", 0.25, 32),  # bottleneck, its shortcut projected
        ),
        [
            STEM,
            "conv 8px s1 k3 16>16 relu",
            "conv 8px s2 k5 16>24 swish",
            "proj 4px s2 24>24",
            "expand 2px 24>8 relu",
            "conv 2px s1 k3 8>8 relu",
            "proj 2px s1 24>32",
            "tail 2px k1 8>32 relu +res",
            HEAD,
        ],
    ),
]


@pytest.mark.parametrize("case", range(len(BY_HAND)))
def test_predicted_latency_is_the_sum_of_the_right_parts(case: int) -> None:
    space = mixed()
    chosen, want = BY_HAND[case]
    arch = Architecture(
        space=space.name,
        resolution=space.resolution,
        in_channels=space.in_channels,
        classes=space.classes,
        blocks=tuple(chosen),
    )
    idx = encode(space, arch)[None]
    table = fake_table(space)
    model = LatencyModel(space, table)
    per_part = table.part_overhead_s or 0.0
    expected = sum(table.seconds(s) + per_part for s in want) + (table.network_overhead_s or 0.0)
    assert model.price(idx)[0] == pytest.approx(expected, rel=1e-12)
    assert model.part_counts(idx)[0] == len(want)


def test_fpnas_latency_on_the_mixed_space(tmp_path: Path, capsys: Any) -> None:
    out = tmp_path / "mixed.json"
    assert main(["latency", MIXED, "-o", str(out), "--calibrate", "3", *FAST]) == 0
    doc = json.loads(out.read_text())
    space = mixed()
    catalogue = space_parts(space).catalogue
    assert set(doc["entries"]) == set(catalogue)
    assert all(e["seconds"] > 0 for e in doc["entries"].values())
    kinds = {e["kind"] for e in doc["entries"].values()}
    assert {"conv", "tail", "dw", "se", "sa", "project", "proj", "expand"} <= kinds
    assert doc["calibration"]["networks"] == 3
    assert "latency min" in capsys.readouterr().out
    # The table prices the space's architectures from the CLI.
    assert main(["compile", MIXED, "--latency-table", str(out)]) == 0
    assert "latency " in capsys.readouterr().out
    model = LatencyModel(space, LatencyTable.load(out))
    assert 0 <= model.extreme("min") < model.extreme("max")


def test_fpnas_latency_on_resnet18(tmp_path: Path, capsys: Any) -> None:
    out = tmp_path / "r18.json"
    argv = ["latency", "resnet18", "--resolution", "32", "-o", str(out), *FAST]
    assert main([*argv, "--calibrate", "2"]) == 0
    space = load_space("resnet18", 32)
    doc = json.loads(out.read_text())
    assert doc["space"] == "resnet18" and doc["resolution"] == 32
    assert set(doc["entries"]) == set(space_parts(space).catalogue)
    assert "stem 32px 3ch 7x7/2:64/relu maxpool3/2" in doc["entries"]
    capsys.readouterr()
    # The one network, measured end to end beside the table's prediction.
    fixed = fixed_architecture(space)
    assert fixed is not None
    arch = tmp_path / "arch.json"
    save_arch(arch, space, fixed)
    assert main([*argv, "--arch", str(arch)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["measured_s"] > 0 and result["predicted_s"] > 0
