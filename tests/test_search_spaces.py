"""The bundled search spaces of the row operators beyond MBConv: efficientnetv2_search
(EfficientNetV2-S's macro, micro choices open) and resnet_search (OFA-ResNet50's depth,
expansion and width). They compile, hold their published network as one of their
architectures (its exact cost), and `fpnas search` runs on each."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from fpnas_dsl.cli import main
from fpnas_dsl.cost import arch_cost
from fpnas_dsl.ir import Architecture, BlockSpec, Space, decode, encode, uniform_samples
from fpnas_dsl.parser import load_space

SPACES = ("efficientnetv2_search", "resnet_search")


pytestmark = pytest.mark.usefixtures("one_thread")


def member(space: Space, choose: Callable[[BlockSpec], dict[str, object]]) -> Architecture:
    """The architecture whose block choices `choose(spec)` gives."""
    arch = decode(space, uniform_samples(space, 1, seed=0)[0])
    blocks = tuple(
        b.model_copy(update=choose(spec)) for b, spec in zip(arch.blocks, space.blocks, strict=True)
    )
    return arch.model_copy(update={"blocks": blocks})


@pytest.mark.parametrize("name", SPACES)
def test_compiles_with_its_supernet(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compile", name, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["supernet"]["params"] >= summary["cost"]["params_max"]
    assert int(summary["networks"]) > 10**12


def test_efficientnet_v2_s_is_an_architecture_of_its_search_space() -> None:
    space = load_space("efficientnetv2_search")
    expansion = (1.0, 4.0, 4.0, 4.0, 6.0, 6.0)
    arch = member(
        space,
        lambda spec: {
            "kernel": 3,
            "expansion": expansion[spec.row],
            "attention": "se" if spec.op == "mbconv" else "none",
        },
    )
    assert arch_cost(space, arch) == (2_849_895_872, 21_458_488)  # spaces/efficientnet_v2_s
    assert len(encode(space, arch))


def test_resnet50_is_an_architecture_of_its_search_space() -> None:
    """3, 4, 6, 3 blocks (the fourth of stages 1 and 4 skipped), full width, 0.25."""
    space = load_space("resnet_search")
    widest = {r: max(int(c) for c in row.channels.choices) for r, row in enumerate(space.rows)}
    first = {spec.row: spec.index for spec in reversed(space.blocks)}

    def choose(spec: BlockSpec) -> dict[str, object]:
        skipped = spec.row in (0, 3) and spec.index - first[spec.row] == 3
        return {"kernel": 0 if skipped else 3, "expansion": 0.25, "channels": widest[spec.row]}

    arch = member(space, choose)
    assert arch_cost(space, arch) == (4_089_184_256, 25_557_032)  # spaces/resnet50


@pytest.mark.parametrize("name", SPACES)
def test_search_runs_with_a_tiny_budget(name: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = ["search", name, "--resolution", "32", "--target-flops", "5e7", "--no-progress"]
    argv += ["--data", "synthetic:size=32,test_size=16,classes=4,resolution=32"]
    argv += ["--epochs", "2", "--warmup-epochs", "1", "--steps-per-epoch", "1"]
    argv += ["--batch-size", "4", "--eval-batches", "1", "--threads", "1", "--out", str(out)]
    assert main(argv) == 0
    chosen = json.loads((out / "arch.json").read_text())
    assert chosen["space"] == name and len(chosen["blocks"]) == len(load_space(name).blocks)


def test_the_benchmarks_mixed_space_holds_every_operator() -> None:
    """bench/spaces/mixed_ops_28.space (BENCHMARKS.md, issue 25) stays valid and searchable."""
    from fpnas_dsl.footprint import supernet_size
    from fpnas_dsl.ir import OPERATORS

    space = load_space(
        str(Path(__file__).resolve().parent.parent / "bench/spaces/mixed_ops_28.space")
    )
    assert {row.op for row in space.rows} == set(OPERATORS)
    assert supernet_size(space)["params"] > 0
