"""The supernet of the row operators beyond MBConv (fused, ds, conv, basic, bottleneck) on a
space that mixes them all (tests/data/mixed_ops.space): the supernet on an architecture
is its `subnet()`, the subnet is what the cost model prices, the relaxed (DNAS) forward
with one-hot weights is the supernet, `supernet_size` is what the supernet holds, and a
subnet exports to ONNX that ONNX Runtime runs."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from test_cost import measured
from test_export import _fake_search_run, interesting_arch
from test_supernet import randomise

from fpnas_dsl import cost
from fpnas_dsl.cli import main
from fpnas_dsl.footprint import supernet_size
from fpnas_dsl.ir import SHARABLE, Space, decode, uniform_samples
from fpnas_dsl.nn import Supernet
from fpnas_dsl.nn.relaxed import RelaxedSupernet, one_hot_weights
from fpnas_dsl.parser import parse_space

MIXED_OPS = Path(__file__).resolve().parent / "data" / "mixed_ops.space"
SMALL = 24

#: Variants of the space: sharing nothing, every block's residual a projection where the
#: shape changes, expansion of the output, skip refused where the shape changes.
VARIANTS: dict[str, dict[str, object]] = {
    "default": {},
    "share-none": {"share": ()},
    "shortcut": {"skip_mismatch": "shortcut"},
    "output-forbid": {"expansion_of": "output", "skip_mismatch": "forbid"},
}


pytestmark = pytest.mark.usefixtures("one_thread")


def mixed_ops(resolution: int = SMALL, **update: object) -> Space:
    space = parse_space(MIXED_OPS.read_text(), str(MIXED_OPS)).with_input(resolution=resolution)
    share = update.pop("share", None)
    if share is not None:
        micros = tuple(m.model_copy(update={"share": share}) for m in space.micros)
        update["micros"] = micros
    return space.model_copy(update=update) if update else space


def test_the_space_mixes_every_operator_with_their_choices_open() -> None:
    space = mixed_ops()
    assert [row.op for row in space.rows] == [
        "conv", "ds", "fused", "mbconv", "basic", "bottleneck"
    ]  # fmt: skip
    open_kernels = [b for b in space.blocks if len(b.var("kernel").choices) > 1]
    assert len(open_kernels) == len(space.blocks)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_supernet_equals_subnet(variant: str) -> None:
    torch.manual_seed(0)
    space = mixed_ops(**VARIANTS[variant])
    supernet = Supernet(space).eval()
    randomise(supernet)
    x = torch.randn(2, 3, SMALL, SMALL)
    kinds: set[str] = set()
    with torch.no_grad():
        for idx in uniform_samples(space, 40, seed=21):
            net = supernet.subnet(idx).eval()
            kinds |= {type(b).__name__ for b in net.blocks}
            torch.testing.assert_close(supernet(x, idx), net(x), rtol=1e-5, atol=1e-5)
    # Every operator, and skip as the identity (where the space allows it), were among them.
    assert {"ConvBnAct", "DepthwiseSeparable", "FusedMBConv", "MBConv"} <= kinds
    assert {"BasicBlock", "Bottleneck"} <= kinds
    assert ("Identity" in kinds) == (space.skip_mismatch != "forbid")
    del supernet
    gc.collect()


def test_supernet_equals_subnet_in_training_mode() -> None:
    """Batch statistics: the supernet's slices of its running buffers update as the
    subnet's own do."""
    torch.manual_seed(1)
    space = mixed_ops()
    supernet = Supernet(space)
    randomise(supernet)
    x = torch.randn(4, 3, SMALL, SMALL)
    for idx in uniform_samples(space, 6, seed=3):
        net = supernet.subnet(idx).train()
        want = net(x)
        got = supernet.train()(x, idx)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        after = supernet.subnet(idx).state_dict()
        for name, t in net.state_dict().items():
            if name.endswith("num_batches_tracked"):  # not counted (momentum 0.1, as MBConv)
                continue
            torch.testing.assert_close(after[name], t, rtol=1e-6, atol=1e-6, msg=name)


@pytest.mark.parametrize("expansion_of", ["input", "output"])
def test_cost_model_is_the_subnet_measured(expansion_of: str) -> None:
    space = mixed_ops(resolution=32, expansion_of=expansion_of)
    supernet = Supernet(space, device="meta")
    idx = uniform_samples(space, 30, seed=5)
    flops, params = cost.costs(space, idx)
    for i in range(len(idx)):
        net = supernet.subnet(idx[i]) if i < 3 else None  # shapes agree (else AssertionError)
        assert net is None or sum(p.numel() for p in net.parameters()) == int(params[i])
        assert (int(flops[i]), int(params[i])) == measured(space, idx[i]), decode(space, idx[i])


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_one_hot_relaxed_forward_is_the_supernet(variant: str) -> None:
    space = mixed_ops(resolution=16, **VARIANTS[variant])
    torch.manual_seed(0)
    net = Supernet(space)
    with torch.no_grad():  # away from the zero-started residuals and attention
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    x = torch.randn(4, 3, 16, 16)
    relaxed = RelaxedSupernet(net)
    for mode in ("train", "eval"):
        getattr(net, mode)()
        for arch in uniform_samples(space, 4, seed=2):
            got = relaxed(x, one_hot_weights(space, arch))
            torch.testing.assert_close(got, net(x, arch), rtol=1e-5, atol=1e-5)


def test_relaxed_forward_mixes_and_reaches_every_operator() -> None:
    """Under soft weights every operator's weights get a gradient."""
    space = mixed_ops(resolution=16)
    torch.manual_seed(0)
    net = Supernet(space).train()
    weights = {v: torch.full((n,), 1.0 / n) for v, n in _variables(space)}
    out = RelaxedSupernet(net)(torch.randn(2, 3, 16, 16), weights)
    assert bool(torch.isfinite(out).all())
    out.square().mean().backward()
    for i, block in enumerate(net.blocks):
        for name, group in block.ops.items():  # type: ignore[union-attr]
            grads = [p.grad for p in group.parameters()]
            assert any(g is not None and bool(g.abs().sum() > 0) for g in grads), (i, name)


def _variables(space: Space) -> list[tuple[tuple[int, int], int]]:
    from fpnas_dsl.nn.relaxed import variables_of

    return variables_of(space)


@pytest.mark.parametrize("share", [(), ("kernel",), SHARABLE])
def test_announced_size_is_the_supernet_size(share: tuple[str, ...]) -> None:
    for skip_mismatch in ("project", "shortcut"):
        space = mixed_ops(share=share, skip_mismatch=skip_mismatch)
        supernet = Supernet(space, device="meta")
        size = supernet_size(space)
        assert size["params"] == sum(p.numel() for p in supernet.parameters())
        assert size["buffers"] == sum(b.numel() for b in supernet.buffers())


def test_sharing_shrinks_the_supernet_and_names_the_groups() -> None:
    shared, separate = mixed_ops(), mixed_ops(share=())
    assert supernet_size(shared)["params"] < supernet_size(separate)["params"]
    net = Supernet(shared, device="meta")
    # `plain` shares kernels only: one group per attention variant (none).
    assert set(net.blocks[0].ops) == {"none"}  # type: ignore[arg-type]
    assert set(net.blocks[1].ops) == {"ds"}  # type: ignore[arg-type]
    assert set(Supernet(separate, device="meta").blocks[7].ops) == {  # type: ignore[arg-type]
        "k1_none",
        "k3_none",
    }


def test_resnet_blocks_project_where_the_shape_changes_and_skip_keeps_it() -> None:
    """The first basic block (stride 2) holds one projection: in the subnet it is the
    block's `downsample`, and a skipped block there is that projection alone (the same
    weights), as the cost model prices it."""
    space = mixed_ops()
    torch.manual_seed(0)
    supernet = Supernet(space).eval()
    randomise(supernet)
    first_basic = 7
    projection = supernet.blocks[first_basic].skip
    assert projection is not None
    idx = uniform_samples(space, 200, seed=9)
    kept = next(i for i in idx if decode(space, i).blocks[first_basic].kernel != 0)
    skipped = next(i for i in idx if decode(space, i).blocks[first_basic].kernel == 0)
    for arch, name in ((kept, "downsample.conv"), (skipped, "conv")):
        block = supernet.subnet(arch).blocks[first_basic]
        weight = block.get_submodule(name).weight
        rows, cols = weight.shape[:2]
        assert torch.equal(weight, projection.conv.weight[:rows, :cols])  # type: ignore[union-attr]


def test_residual_blocks_start_as_their_shortcut() -> None:
    """With `residual` shared, the last batch-norm of every always-residual block starts
    at zero: a ResNet block starts as act(shortcut); a ds block whose channels may change
    does not."""
    supernet = Supernet(mixed_ops(share=SHARABLE))
    for i, always in ((2, False), (7, True), (8, True), (10, True)):  # ds, basic, bottleneck
        block = supernet.blocks[i]
        assert block.always_residual == always
        for group in block.ops.values():  # type: ignore[union-attr]
            norm = group.residual_norm()
            assert norm is not None and bool((norm.weight == 0).all()) == always
    plain = Supernet(mixed_ops()).blocks[8]  # `plain` shares kernels only
    assert all(bool((g.residual_norm().weight == 1).all()) for g in plain.ops.values())  # type: ignore[union-attr]


def test_subnet_exports_to_onnx_that_onnx_runtime_runs(tmp_path: Path) -> None:
    space = mixed_ops(resolution=32)
    arch = interesting_arch(space, 4)
    run = _fake_search_run(tmp_path, space, arch)
    out = tmp_path / "mixed.onnx"
    assert main(["export", str(run), "--format", "onnx", "-o", str(out)]) == 0
    supernet = Supernet(space)
    supernet.load_state_dict(torch.load(run / "checkpoint.pt", weights_only=False)["supernet"])
    supernet.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = supernet(x, arch).numpy()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x.numpy()})[0]
    assert np.abs(want).max() > 0.05  # the comparison is not vacuous
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, float(np.abs(want).max()))


@pytest.mark.parametrize("strategy", ["fpnas", "dnas"])
def test_search_runs_on_the_mixed_space(strategy: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = ["search", str(MIXED_OPS), "--strategy", strategy, "--resolution", "16"]
    argv += ["--data", "synthetic:size=32,test_size=16,classes=4,resolution=16"]
    argv += ["--target-flops", "5e5", "--epochs", "2", "--warmup-epochs", "1"]
    argv += ["--steps-per-epoch", "1", "--batch-size", "4", "--eval-batches", "1"]
    argv += ["--threads", "1", "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    assert (out / "arch.json").is_file()
