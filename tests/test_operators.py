"""The row operators beyond MBConv (fused, ds, conv, basic, bottleneck) in fixed networks:
the exact cost model against torch's counters on random architectures of a space that
mixes them all, the blocks each operator builds, and the supernet of a fixed network."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from dsl_samples import MIXED
from test_cost import measured

from fpnas_dsl import cost, ir
from fpnas_dsl.footprint import supernet_size
from fpnas_dsl.ir import Space, uniform_samples
from fpnas_dsl.nn import blocks, build_network
from fpnas_dsl.parser import load_space, parse_space

pytestmark = pytest.mark.usefixtures("one_thread")


def mixed(**update: object) -> Space:
    space = parse_space(MIXED, "mixed.space")
    return space.model_copy(update=update) if update else space


@pytest.mark.parametrize("expansion_of", ["input", "output"])
def test_cost_equals_the_counters_on_random_architectures(expansion_of: str) -> None:
    space = mixed(expansion_of=expansion_of)
    idx = uniform_samples(space, 60, seed=3)
    flops, params = cost.costs(space, idx)
    for i in range(len(idx)):
        got = (int(flops[i]), int(params[i]))
        assert got == measured(space, idx[i]), f"architecture {i}: {ir.decode(space, idx[i])}"


def test_cost_range_brackets_the_samples() -> None:
    space = mixed()
    bounds = cost.cost_range(space, samples=2000)
    flops, params = cost.costs(space, uniform_samples(space, 2000, seed=5))
    assert bounds["flops_min"] <= flops.min() <= flops.max() <= bounds["flops_max"]
    assert bounds["params_min"] <= params.min() <= params.max() <= bounds["params_max"]


def test_each_operator_builds_its_block() -> None:
    space = mixed()
    lay = space.layout
    # Every kernel at its last choice (no skip), expansion at its largest.
    idx = np.zeros((len(lay.decisions), lay.max_variables), dtype=np.int64)
    for d, decision in enumerate(lay.decisions):
        idx[d, : len(decision.cardinalities)] = np.asarray(decision.cardinalities) - 1
    net = build_network(space, idx)
    kinds = [type(b).__name__ for b in net.blocks]
    assert kinds == [
        "ConvBnAct",
        "DepthwiseSeparable",
        "DepthwiseSeparable",
        "FusedMBConv",
        "FusedMBConv",
        "MBConv",
        "MBConv",
        "BasicBlock",
        "BasicBlock",
        "Bottleneck",
        "Bottleneck",
    ]
    assert isinstance(net.stem[1], torch.nn.MaxPool2d)
    first_basic = net.blocks[7]
    assert isinstance(first_basic, blocks.BasicBlock)
    assert isinstance(first_basic.downsample, blocks.ConvBnAct)  # stride 2: projected
    assert isinstance(net.blocks[8].downsample, torch.nn.Identity)
    out = net.eval()(torch.randn(2, 3, 40, 40))
    assert out.shape == (2, 10) and bool(torch.isfinite(out).all())


def test_fused_without_expansion_is_one_conv() -> None:
    space = mixed()
    arch = ir.decode(space, uniform_samples(space, 1, seed=0)[0])
    blocks_ = list(arch.blocks)
    for b in (3, 4):  # the row decides its expansion once
        blocks_[b] = blocks_[b].model_copy(update={"expansion": 1.0, "kernel": 3})
    net = build_network(space, arch.model_copy(update={"blocks": tuple(blocks_)}))
    fused = net.blocks[3]
    assert isinstance(fused, blocks.FusedMBConv)
    assert isinstance(fused.conv_pwl, torch.nn.Identity)
    assert fused.conv_exp.out_channels == blocks_[3].channels


def test_the_supernet_of_a_fixed_network_is_that_network() -> None:
    """Every operator and a stem maxpool have their supernet (tests/test_supernet_operators.py
    tests it); a fixed space's holds exactly the network's parameters."""
    from fpnas_dsl.nn import Supernet

    assert supernet_size(mixed())["params"] > 0
    for name in ("resnet18", "efficientnet_v2_s"):
        space = load_space(name)
        size = supernet_size(space)
        supernet = Supernet(space, device="meta")
        assert size["params"] == sum(p.numel() for p in supernet.parameters())
        (idx,) = uniform_samples(space, 1, seed=0)
        assert size["params"] == int(cost.costs(space, idx[None])[1][0])


def test_compile_prints_the_supernet_of_the_published_nets(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from fpnas_dsl.cli import main

    for name in ("resnet50", "resnet18", "efficientnet_v2_s"):
        assert main(["compile", name, "--json"]) == 0
        summary = json.loads(capsys.readouterr().out)
        assert summary["supernet"]["params"] == summary["cost"]["params_max"]


def test_the_reference_example_of_the_operators_parses_and_costs() -> None:
    """docs/dsl.md's example that mixes every operator: valid, and priced exactly."""
    import re

    doc = (Path(__file__).resolve().parent.parent / "docs" / "dsl.md").read_text()
    (example,) = [b for b in re.findall(r"```space\n(.*?)```", doc, re.S) if "mixed_example" in b]
    space = parse_space(example, "docs/dsl.md")
    assert {row.op for row in space.rows} == set(ir.OPERATORS)
    idx = uniform_samples(space, 8, seed=1)
    flops, params = cost.costs(space, idx)
    for i in range(len(idx)):
        assert (int(flops[i]), int(params[i])) == measured(space, idx[i])
    # The operator table's example row of each operator is a row of the example.
    rows = re.findall(r"^\| `(\w+)` \|.*\| `([^`]+)` \|$", doc, re.M)
    assert {op for op, _ in rows} == set(ir.OPERATORS)
    written = {" ".join(line.split("#")[0].split()) for line in example.splitlines()}
    for op, row in rows:
        assert row.startswith(op) and " ".join(row.split()) in written, row
    # And it is searchable: its supernet on an architecture is that architecture's network.
    from fpnas_dsl.nn import Supernet

    small = space.with_input(resolution=32)
    torch.manual_seed(0)
    supernet = Supernet(small).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for arch in uniform_samples(small, 4, seed=2):
            want = supernet.subnet(arch).eval()(x)
            torch.testing.assert_close(supernet(x, arch), want, rtol=1e-5, atol=1e-5)


def test_the_picture_and_table_mark_each_operator(tmp_path: Path) -> None:
    from fpnas_dsl import show

    space = mixed()
    arch = ir.decode(space, uniform_samples(space, 1, seed=4)[0])
    table = show.arch_table(space, arch)
    header = table.splitlines()[0].split()
    assert header[:2] == ["block", "op"]
    ops = [line.split()[1] for line in table.splitlines()[2:]]
    assert ops == [row.op for row in space.rows for _ in range(row.repeat)]
    # Feature sizes count the stem maxpool: 40 -> 20 -> 10, fused stride 2 -> 5.
    assert show.feature_sizes(space, ir.concrete_blocks(space, arch))[:4] == [10, 10, 10, 5]
    png = tmp_path / "arch.png"
    show.draw_architecture(space, arch, png, tmp_path / "arch.svg")
    assert png.stat().st_size > 0
    assert (tmp_path / "arch.svg").stat().st_size > 0
    assert "conv + depthwise-separable + fused-MBConv + MBConv + ResNet basic" in show._title(
        space, arch
    )


def test_latency_tables_measure_the_new_operators() -> None:
    """Their parts (tests/test_latency_ops.py checks them against the network's layers)."""
    from fpnas_dsl.latency import space_parts

    kinds = {p.kind for p in space_parts(mixed()).catalogue.values()}
    assert {"stem", "conv", "dw", "expand", "project", "proj", "tail", "head"} <= kinds
