"""The single-path supernet: same function as its standalone subnets, and a step touches
only the weights (and batch-norm statistics) of the architecture it runs."""

from __future__ import annotations

import copy
import gc

import numpy as np
import pytest
import torch
from spaces_for_tests import BUNDLED, bundled_or_python, tiny
from torch import nn

from fpnas_dsl import cost
from fpnas_dsl.footprint import supernet_size
from fpnas_dsl.ir import SHARABLE, ArchitectureMismatch, Sharable, Space, decode, uniform_samples
from fpnas_dsl.nn import Supernet, build_network

SMALL = 36


pytestmark = pytest.mark.usefixtures("one_thread")


@torch.no_grad()
def randomise(net: nn.Module) -> None:
    """Batch-norm statistics and affine parameters, and biases, away from their
    initial values, so that every slice matters."""
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert m.running_mean is not None and m.running_var is not None
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.1, 0.1)
        elif isinstance(m, nn.Conv2d | nn.Linear) and m.bias is not None:
            m.bias.uniform_(-0.1, 0.1)


def small(name: str) -> Space:
    return bundled_or_python(name).with_input(resolution=SMALL)


@pytest.mark.parametrize("name", BUNDLED)
def test_supernet_equals_subnet(name: str) -> None:
    torch.manual_seed(0)
    space = small(name)
    supernet = Supernet(space).eval()
    randomise(supernet)
    x = torch.randn(2, space.in_channels, SMALL, SMALL)
    count = 1 if not space.layout.decisions else 50
    with torch.no_grad():
        for idx in uniform_samples(space, count, seed=21):
            expected = supernet.subnet(idx).eval()(x)
            torch.testing.assert_close(supernet(x, idx), expected, rtol=1e-5, atol=1e-5)
    del supernet
    gc.collect()


def test_mobilenet_v2_subnet_is_torchvision_shaped() -> None:
    torchvision = pytest.importorskip("torchvision")
    space = bundled_or_python("mobilenet_v2")
    net = Supernet(space).subnet(uniform_samples(space, 1)[0])
    reference = torchvision.models.mobilenet_v2()
    ours = sorted(p.numel() for p in net.parameters())
    assert ours == sorted(p.numel() for p in reference.parameters())


def used_masks(supernet: Supernet, idx: np.ndarray) -> dict[str, torch.Tensor]:
    """Supernet parameter/buffer name -> which of its entries the standalone network of
    `idx` is made of (found through `standalone_tensors`, the views `subnet()` copies)."""
    with torch.device("meta"):
        net = build_network(supernet.space, idx, init=False)
    shapes = {n: t.shape for n, t in [*net.named_parameters(), *net.named_buffers()]}
    probe = copy.deepcopy(supernet)
    with torch.no_grad():
        for b in probe.buffers():
            b.zero_()
    total = torch.zeros(())
    for name, view in probe.standalone_tensors(idx).items():
        lead = view[tuple(slice(0, n) for n in shapes[name])] if view.dim() else view
        if lead.requires_grad:
            total = total + lead.sum()
        else:
            with torch.no_grad():
                lead.fill_(1)  # buffers are leading slices: views into the probe's
    total.backward()  # type: ignore[no-untyped-call]
    masks = {
        n: torch.zeros_like(p, dtype=torch.bool) if p.grad is None else p.grad != 0
        for n, p in probe.named_parameters()
    }
    masks.update({n: b != 0 for n, b in probe.named_buffers()})
    return masks


SPACES_FOR_GRADIENTS = {
    "tiny": lambda: tiny(resolution=SMALL),
    "tiny-separate": lambda: tiny(resolution=SMALL, share=()),
    "tiny-kernel": lambda: tiny(resolution=SMALL, share=("kernel",)),
    "tiny-block-output": lambda: tiny(resolution=SMALL, block_scope=True, expansion_of="output"),
    "fbnetv2_f_pp": lambda: small("fbnetv2_f_pp"),
}


@pytest.mark.parametrize("which", SPACES_FOR_GRADIENTS)
def test_gradients_reach_only_the_weights_used(which: str) -> None:
    torch.manual_seed(1)
    space = SPACES_FOR_GRADIENTS[which]()
    supernet = Supernet(space).train()
    randomise(supernet)  # no zero-initialised gamma that would stop a gradient
    x = torch.randn(4, space.in_channels, SMALL, SMALL)
    for idx in uniform_samples(space, 4, seed=5):
        supernet.zero_grad(set_to_none=True)
        supernet(x, idx).square().mean().backward()
        used = used_masks(supernet, idx)
        reached = 0
        for name, p in supernet.named_parameters():
            if not used[name].any():
                assert p.grad is None, f"{name} is not used but has a gradient"
                continue
            assert p.grad is not None, f"{name} is used but has no gradient"
            assert not p.grad[~used[name]].any(), f"{name}: gradient outside what is used"
            reached += int(p.grad.count_nonzero())
        assert reached > 0


@pytest.mark.parametrize("which", ["tiny", "tiny-separate", "fbnetv2_f_pp"])
def test_batch_norm_statistics_update_only_used_channels(which: str) -> None:
    torch.manual_seed(2)
    space = SPACES_FOR_GRADIENTS[which]()
    supernet = Supernet(space).train()
    x = torch.randn(4, space.in_channels, SMALL, SMALL)
    for idx in uniform_samples(space, 3, seed=8):
        before = {n: b.clone() for n, b in supernet.named_buffers()}
        with torch.no_grad():
            supernet(x, idx)
        used = used_masks(supernet, idx)
        for name, b in supernet.named_buffers():
            changed = b != before[name]
            if not used[name].any():
                assert not changed.any(), f"{name} is not used but changed"
            elif name.endswith(("running_mean", "running_var")):
                assert not changed[~used[name]].any(), f"{name} changed outside"
                # (A batch mean can be exactly 0 after batch-norm; a variance cannot.)
                if name.endswith("running_var"):
                    assert changed[used[name]].all(), f"{name}: a used channel kept its value"


def test_training_step_changes_only_used_weights() -> None:
    torch.manual_seed(3)
    space = tiny(resolution=SMALL)
    supernet = Supernet(space).train()
    randomise(supernet)
    optimizer = torch.optim.SGD(supernet.parameters(), lr=0.1)
    idx = uniform_samples(space, 1, seed=9)[0]
    before = {n: p.detach().clone() for n, p in supernet.named_parameters()}
    optimizer.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(
        supernet(torch.randn(4, 3, SMALL, SMALL), idx), torch.tensor([0, 1, 2, 3])
    )
    loss.backward()  # type: ignore[no-untyped-call]
    optimizer.step()
    used = used_masks(supernet, idx)
    moved = 0
    for name, p in supernet.named_parameters():
        delta = p.detach() != before[name]
        assert not delta[~used[name]].any(), name
        moved += int(delta.sum())
    assert moved > 0


def test_readable_architecture_and_tensor_indices() -> None:
    torch.manual_seed(4)
    space = tiny(resolution=SMALL)
    supernet = Supernet(space).eval()
    x = torch.randn(2, 3, SMALL, SMALL)
    idx = uniform_samples(space, 1, seed=3)[0]
    with torch.no_grad():
        expected = supernet(x, idx)
        torch.testing.assert_close(supernet(x, decode(space, idx)), expected)
        torch.testing.assert_close(supernet(x, torch.from_numpy(idx)), expected)
        torch.testing.assert_close(supernet.subnet(decode(space, idx)).eval()(x), expected)


def test_channels_last() -> None:
    torch.manual_seed(5)
    space = small("fbnetv2_f_pp")
    supernet = Supernet(space).eval()
    randomise(supernet)
    x = torch.randn(2, 3, SMALL, SMALL)
    for idx in uniform_samples(space, 5, seed=6):
        with torch.no_grad():
            expected = supernet(x, idx)
            got = supernet.to(memory_format=torch.channels_last)(
                x.to(memory_format=torch.channels_last), idx
            )
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    supernet.train()
    out = supernet(x.to(memory_format=torch.channels_last), idx)
    out.sum().backward()


def test_foreign_or_malformed_architectures_are_refused() -> None:
    space = tiny(resolution=SMALL)
    supernet = Supernet(space)
    x = torch.randn(2, 3, SMALL, SMALL)
    idx = uniform_samples(space, 1)[0]
    with pytest.raises(ValueError, match="shape"):
        supernet(x, idx[:1])
    bad = idx.copy()
    bad[0, 0] = 7
    with pytest.raises(ValueError, match="out of range"):
        supernet(x, bad)
    other = bundled_or_python("fbnetv2_f")
    with pytest.raises(ArchitectureMismatch):
        supernet(x, decode(other, uniform_samples(other, 1)[0]))


def test_state_dict_reads_like_the_network() -> None:
    space = tiny(resolution=SMALL, share=())
    supernet = Supernet(space)
    keys = set(supernet.state_dict())
    assert "blocks.0.ops.k3_sa2.conv_dw.weight" in keys
    assert "blocks.1.ops.k5_none.bn3.running_var" in keys
    assert "blocks.1.skip.conv.weight" in keys  # stride 2: skip is a projection
    assert not any(k.startswith("blocks.2.skip") for k in keys)  # always the same shape
    clone = Supernet(space)
    clone.load_state_dict(supernet.state_dict())


SHARINGS: dict[str, tuple[Sharable, ...]] = {
    "separate": (),
    "kernel": ("kernel",),
    "attention": ("attention",),
    "all": SHARABLE,
}
#: Weight groups of block 1 of `tiny` (kernel {3, 5} x attention {none, se, sa2, sa4}).
GROUPS = {
    "separate": {f"k{k}_{a}" for k in (3, 5) for a in ("none", "se", "sa2", "sa4")},
    "kernel": {"none", "se", "sa2", "sa4"},
    "attention": {"k3", "k5"},
    "all": {"mbconv"},
}


@pytest.mark.parametrize("sharing", SHARINGS)
def test_sharing_groups_and_equality(sharing: str) -> None:
    torch.manual_seed(6)
    space = tiny(resolution=SMALL, share=SHARINGS[sharing])
    supernet = Supernet(space).eval()
    assert set(supernet.blocks[0].ops) == GROUPS[sharing]
    randomise(supernet)
    x = torch.randn(2, 3, SMALL, SMALL)
    with torch.no_grad():
        for idx in uniform_samples(space, 30, seed=4):
            expected = supernet.subnet(idx).eval()(x)
            torch.testing.assert_close(supernet(x, idx), expected, rtol=1e-5, atol=1e-5)


def test_sharing_keeps_costs_and_shrinks_the_supernet() -> None:
    shared, separate = tiny(resolution=SMALL), tiny(resolution=SMALL, share=())
    archs = uniform_samples(shared, 64, seed=1)
    np.testing.assert_array_equal(cost.flops(shared, archs), cost.flops(separate, archs))
    np.testing.assert_array_equal(cost.params(shared, archs), cost.params(separate, archs))
    for idx in archs[:8]:  # the standalone network holds what the cost model prices
        net = Supernet(shared).subnet(idx)
        assert sum(p.numel() for p in net.parameters()) == cost.params(shared, idx[None])[0]
    size = {
        name: sum(p.numel() for p in Supernet(space).parameters())
        for name, space in (("shared", shared), ("separate", separate))
    }
    assert size["shared"] < size["separate"] / 2


def _with(space: Space, idx: np.ndarray, block: int, **values: object) -> np.ndarray:
    """`idx` with some of one block's variables set to the given choices."""
    out = idx.copy()
    spec = space.blocks[block]
    for name, value in values.items():
        slot = spec.var(name)  # type: ignore[arg-type]
        assert slot.decision is not None and slot.slot is not None
        out[slot.decision, slot.slot] = slot.choices.index(value)  # type: ignore[arg-type]
    return out


def test_smaller_kernel_is_the_centre_and_fewer_splits_the_leading_filters() -> None:
    torch.manual_seed(7)
    space = tiny(resolution=SMALL, block_scope=True)
    supernet = Supernet(space)
    base = uniform_samples(space, 1, seed=2)[0]
    k5 = _with(space, base, 0, kernel=5, attention="sa4")
    k3 = _with(space, base, 0, kernel=3, attention="sa2")
    wide = supernet.subnet(k5).blocks[0].conv_dw.weight  # type: ignore[union-attr]
    narrow = supernet.subnet(k3).blocks[0].conv_dw.weight  # type: ignore[union-attr]
    mid = narrow.shape[0] // 2
    by_split = wide.view(mid, 4, 5, 5)
    torch.testing.assert_close(narrow.view(mid, 2, 3, 3), by_split[:, :2, 1:4, 1:4])


def test_residual_blocks_start_as_their_shortcut() -> None:
    """With `residual` shared, a block that always has a residual computes the identity at
    initialisation, as skip does; elsewhere the last batch-norm starts at one."""
    torch.manual_seed(8)
    space = tiny(resolution=SMALL, block_scope=True)
    supernet = Supernet(space).eval()  # (train mode would differ by the classifier's dropout)
    always = [b.always_residual for b in supernet.blocks]
    assert always == [False, False, True]  # block 3: stride 1, channels of its row
    for block, residual in zip(supernet.blocks, always, strict=True):
        for group in block.ops.values():
            assert bool((group.bn3.weight == 0).all()) == residual
    x = torch.randn(4, 3, SMALL, SMALL)
    for idx in uniform_samples(space, 5, seed=3):
        with torch.no_grad():
            block = supernet(x, _with(space, idx, 2, kernel=5))
            skip = supernet(x, _with(space, idx, 2, kernel=0))
        torch.testing.assert_close(block, skip)
    assert not (
        Supernet(tiny(resolution=SMALL, share=())).blocks[2].ops["k3_none"].bn3.weight == 0
    ).any()


def test_network_scripts() -> None:
    """Export needs TorchScript: the standalone network must script and agree."""
    space = tiny(resolution=SMALL)
    for idx in uniform_samples(space, 3, seed=2):
        net = build_network(space, idx).eval()
        scripted = torch.jit.script(net)
        x = torch.randn(2, 3, SMALL, SMALL)
        with torch.no_grad():
            torch.testing.assert_close(scripted(x), net(x))


@pytest.mark.parametrize("name", BUNDLED)
def test_announced_size_is_the_supernet_size(name: str) -> None:
    """`fpnas compile` and `fpnas search` announce the supernet's size before building it
    (`footprint.supernet_size`); it is what `Supernet` then holds, for every sharing."""
    for share in ((), ("kernel",), SHARABLE):
        space = _shared(bundled_or_python(name), share)
        supernet = Supernet(space, device="meta")
        size = supernet_size(space)
        assert size["params"] == sum(p.numel() for p in supernet.parameters())
        assert size["buffers"] == sum(b.numel() for b in supernet.buffers())


def _shared(space: Space, share: tuple[Sharable, ...]) -> Space:
    micros = tuple(m.model_copy(update={"share": share}) for m in space.micros)
    return space.model_copy(update={"micros": micros})


def _se_details(se_act: str) -> Space:
    """`tiny` with the SE and batch-norm details published networks need."""
    space = tiny(resolution=SMALL)
    micros = tuple(
        m.model_copy(update={"se_act": se_act, "se_width": "floor", "se_divisor": 1})
        for m in space.micros
    )
    return space.model_copy(update={"micros": micros, "bn_eps": 1e-3, "bn_momentum": 0.01})


@pytest.mark.parametrize("name", ["efficientnet_b0", "mobilenet_v3_large", "block", "swish"])
def test_supernet_equals_subnet_with_se_and_batchnorm_details(name: str) -> None:
    """The SE's activation (fixed or the block's), the floor rule and its divisor, and
    the space's batch-norm eps and momentum reach the supernet as they reach the network:
    equal in eval mode, and in train mode (where momentum updates the statistics)."""
    torch.manual_seed(0)
    if name in ("block", "swish"):
        space = _se_details(name)
    else:
        from fpnas_dsl.parser import load_space

        space = load_space(name, resolution=SMALL)
    supernet = Supernet(space).eval()
    randomise(supernet)
    norms = [m for m in supernet.modules() if isinstance(m, nn.BatchNorm2d)]
    assert {(m.eps, m.momentum) for m in norms} == {(space.bn_eps, space.bn_momentum)}
    x = torch.randn(2, space.in_channels, SMALL, SMALL)
    count = 1 if not space.layout.decisions else 30
    with torch.no_grad():
        for idx in uniform_samples(space, count, seed=5):
            subnet = supernet.subnet(idx).eval()
            torch.testing.assert_close(supernet(x, idx), subnet(x), rtol=1e-5, atol=1e-5)
    # Train mode: one step of statistics with the space's momentum, on both.
    idx = uniform_samples(space, 1, seed=6)[0]
    subnet = supernet.subnet(idx).train()
    supernet.train()
    for m in [*subnet.modules(), *supernet.modules()]:
        if isinstance(m, nn.Dropout):
            m.p = 0.0  # dropout draws differ; the statistics are what is compared
    with torch.no_grad():
        torch.testing.assert_close(supernet(x, idx), subnet(x), rtol=1e-5, atol=1e-5)
        after = supernet.subnet(idx).state_dict()
    for key, value in subnet.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue  # the supernet counts batches only where momentum is None
        torch.testing.assert_close(after[key], value, rtol=1e-5, atol=1e-6)


def test_strided_pointwise_convolution_trains_on_the_cpu_in_channels_last() -> None:
    """A stride-2 1x1 convolution with few input channels (a skip projection) runs
    forward and backward in channels-last as the plain convolution does: torch 2.14.1's
    oneDNN corrupts the heap on it from 80 px up (run in a child, since that kills it)."""
    import subprocess
    import sys
    import textwrap

    child = textwrap.dedent(
        """
        import torch
        from fpnas_dsl.nn.blocks import ConvBnAct
        torch.set_num_threads(1)
        torch.manual_seed(0)
        m = ConvBnAct(12, 20, 1, 2)
        x = torch.randn(2, 12, 81, 81)
        ref = torch.autograd.grad(m.bn.eval() and m(x).square().sum(), m.conv.weight)[0]
        m = m.to(memory_format=torch.channels_last)
        xl = x.to(memory_format=torch.channels_last)
        for _ in range(3):
            got = torch.autograd.grad(m(xl).square().sum(), m.conv.weight)[0]
        assert torch.allclose(got, ref, rtol=1e-4, atol=1e-4), float((got - ref).abs().max())
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_strided_pointwise_convolution_is_the_plain_one() -> None:
    from fpnas_dsl.nn.blocks import conv2d

    torch.manual_seed(0)
    x = torch.randn(2, 5, 9, 9, requires_grad=True)
    w = torch.randn(7, 5, 1, 1, requires_grad=True)
    ours = torch.autograd.grad(conv2d(x, w, 2).sum(), (x, w))
    plain = torch.autograd.grad(torch.nn.functional.conv2d(x, w, stride=2).sum(), (x, w))
    for a, b in zip(ours, plain, strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    assert torch.equal(conv2d(x, w, 2), torch.nn.functional.conv2d(x, w, stride=2))


def test_a_shortcut_is_added_where_the_shape_changes_and_starts_the_block_as_it() -> None:
    """`skip where shapes differ: shortcut`: a shape-changing MBConv adds its projection;
    with the residual shared, its last batch-norm starts at zero, so the block starts as
    its shortcut, which is exactly what skip gives."""
    space = tiny(skip_mismatch="shortcut")
    torch.manual_seed(0)
    net = Supernet(space).eval()
    x = torch.randn(2, space.in_channels, space.resolution, space.resolution)
    archs = uniform_samples(space, 40, seed=2)
    shortcuts = 0
    for arch in archs:
        plans, _ = net.plan(arch)
        shortcuts += sum(p.shortcut for p in plans)
        sub = net.subnet(arch).eval()
        torch.testing.assert_close(net(x, arch), sub(x), rtol=1e-5, atol=1e-6)
        for p, block in zip(plans, sub.blocks, strict=True):
            assert getattr(block, "has_shortcut", False) == p.shortcut
    assert shortcuts > 0
    skipped = archs[0].copy()
    plans, _ = net.plan(skipped)
    i = next(i for i, p in enumerate(plans) if p.shortcut)
    spec = space.blocks[i]
    kernel = spec.var("kernel")
    with_skip, with_conv = skipped.copy(), skipped.copy()
    assert kernel.decision is not None and kernel.slot is not None
    with_skip[kernel.decision, kernel.slot] = kernel.choices.index(0)
    with_conv[kernel.decision, kernel.slot] = next(
        j for j, k in enumerate(kernel.choices) if k != 0
    )
    torch.testing.assert_close(net(x, with_skip), net(x, with_conv))
