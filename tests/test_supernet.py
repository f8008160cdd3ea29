"""The single-path supernet: same function as its standalone subnets, and a step touches
only the weights (and batch-norm statistics) of the architecture it runs."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from spaces_for_tests import BUNDLED, bundled_or_python, tiny
from torch import nn

from fpnas_dsl.ir import ArchitectureMismatch, Space, decode, uniform_samples
from fpnas_dsl.nn import Supernet, build_network

SMALL = 36


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
    count = 1 if name.startswith("mobilenet_v2") else 50
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


def used_slices(supernet: Supernet, idx: np.ndarray) -> dict[str, tuple[int, ...]]:
    """Supernet parameter/buffer name -> the leading shape the architecture uses."""
    net = supernet.subnet(idx)
    used: dict[str, tuple[int, ...]] = {}
    for dst, src in supernet.weight_map(idx):
        module = net.get_submodule(dst)
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
            used[f"{src}.{name}" if src else name] = tuple(tensor.shape)
    return used


def outside(tensor: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """The entries of `tensor` outside its leading block of `shape`."""
    mask = torch.ones_like(tensor, dtype=torch.bool)
    mask[tuple(slice(0, n) for n in shape)] = False
    return tensor[mask]


SPACES_FOR_GRADIENTS = {
    "tiny": lambda: tiny(resolution=SMALL),
    "tiny-block-output": lambda: tiny(resolution=SMALL, block_scope=True, expansion_of="output"),
    "fbnetv2_f_pp": lambda: small("fbnetv2_f_pp"),
}


@pytest.mark.parametrize("which", SPACES_FOR_GRADIENTS)
def test_gradients_reach_only_the_weights_used(which: str) -> None:
    torch.manual_seed(1)
    space = SPACES_FOR_GRADIENTS[which]()
    supernet = Supernet(space).train()
    x = torch.randn(4, space.in_channels, SMALL, SMALL)
    for idx in uniform_samples(space, 4, seed=5):
        supernet.zero_grad(set_to_none=True)
        supernet(x, idx).square().mean().backward()
        used = used_slices(supernet, idx)
        reached = 0
        for name, p in supernet.named_parameters():
            if name not in used:
                assert p.grad is None, f"{name} is not used but has a gradient"
                continue
            assert p.grad is not None, f"{name} is used but has no gradient"
            assert not outside(p.grad, used[name]).any(), f"{name}: gradient outside its slice"
            reached += int(p.grad.count_nonzero())
        assert reached > 0


@pytest.mark.parametrize("which", ["tiny", "fbnetv2_f_pp"])
def test_batch_norm_statistics_update_only_used_channels(which: str) -> None:
    torch.manual_seed(2)
    space = SPACES_FOR_GRADIENTS[which]()
    supernet = Supernet(space).train()
    x = torch.randn(4, space.in_channels, SMALL, SMALL)
    for idx in uniform_samples(space, 3, seed=8):
        before = {n: b.clone() for n, b in supernet.named_buffers()}
        with torch.no_grad():
            supernet(x, idx)
        used = used_slices(supernet, idx)
        for name, b in supernet.named_buffers():
            changed = b != before[name]
            if name not in used:
                assert not changed.any(), f"{name} is not used but changed"
            elif name.endswith(("running_mean", "running_var")):
                assert not outside(changed, used[name]).any(), f"{name} changed outside"
                # (A batch mean can be exactly 0 after batch-norm; a variance cannot.)
                if name.endswith("running_var"):
                    assert changed[: used[name][0]].all(), f"{name}: a used channel kept its value"


def test_training_step_changes_only_used_weights() -> None:
    torch.manual_seed(3)
    space = tiny(resolution=SMALL)
    supernet = Supernet(space).train()
    optimizer = torch.optim.SGD(supernet.parameters(), lr=0.1)
    idx = uniform_samples(space, 1, seed=9)[0]
    before = {n: p.detach().clone() for n, p in supernet.named_parameters()}
    optimizer.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(
        supernet(torch.randn(4, 3, SMALL, SMALL), idx), torch.tensor([0, 1, 2, 3])
    )
    loss.backward()  # type: ignore[no-untyped-call]
    optimizer.step()
    used = used_slices(supernet, idx)
    moved = 0
    for name, p in supernet.named_parameters():
        delta = p.detach() != before[name]
        if name not in used:
            assert not delta.any(), name
        else:
            assert not outside(delta, used[name]).any(), name
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
    space = tiny(resolution=SMALL)
    supernet = Supernet(space)
    keys = set(supernet.state_dict())
    assert "blocks.0.ops.k3_sa2.conv_dw.weight" in keys
    assert "blocks.1.ops.k5_none.bn3.running_var" in keys
    assert "blocks.1.skip.conv.weight" in keys  # stride 2: skip is a projection
    assert not any(k.startswith("blocks.2.skip") for k in keys)  # always the same shape
    clone = Supernet(space)
    clone.load_state_dict(supernet.state_dict())


def test_network_scripts() -> None:
    """Export needs TorchScript: the standalone network must script and agree."""
    space = tiny(resolution=SMALL)
    for idx in uniform_samples(space, 3, seed=2):
        net = build_network(space, idx).eval()
        scripted = torch.jit.script(net)
        x = torch.randn(2, 3, SMALL, SMALL)
        with torch.no_grad():
            torch.testing.assert_close(scripted(x), net(x))
