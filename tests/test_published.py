"""Published networks, exactly: EfficientNet-B0, EfficientNetV2-S, MobileNetV3-Large,
MobileNetV2, ResNet-50 and ResNet-18 written in the DSL compute torchvision's function
once torchvision's weights are copied in.

torchvision's models are built with `weights=None` (randomly initialised: nothing is
downloaded); their batch-norm parameters and running statistics are then randomised too,
so that eps, momentum-free statistics, the SE width and its inner activation all show in
the output. The copy is layer by layer: both networks list their tensors in the same
order (stem, blocks as expand, depthwise, SE, project, head, classifier), and each pair
must agree in kind and shape before it is copied. The inputs are small (64 px) to keep
the tests quick; the cost model is compared at 224 px, where torchvision's numbers are
published.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fpnas_dsl import ir
from fpnas_dsl.cost import arch_cost
from fpnas_dsl.nn import build_network
from fpnas_dsl.parser import load_space

torchvision = pytest.importorskip("torchvision")

#: space -> (torchvision constructor, MACs at 224 px, params)
PUBLISHED: dict[str, tuple[Callable[[], nn.Module], int, int]] = {
    "efficientnet_b0": (
        lambda: torchvision.models.efficientnet_b0(weights=None),
        385_814_752,
        5_288_548,
    ),
    "mobilenet_v3_large": (
        lambda: torchvision.models.mobilenet_v3_large(weights=None),
        216_589_760,
        5_483_032,
    ),
    "efficientnet_v2_s": (
        lambda: torchvision.models.efficientnet_v2_s(weights=None),
        2_849_895_872,
        21_458_488,
    ),
    "resnet50": (lambda: torchvision.models.resnet50(weights=None), 4_089_184_256, 25_557_032),
    "resnet18": (lambda: torchvision.models.resnet18(weights=None), 1_814_073_344, 11_689_512),
    "mobilenet_v2": (lambda: torchvision.models.mobilenet_v2(weights=None), 300_774_272, 3_504_872),
    "mobilenet_v2_035": (
        lambda: torchvision.models.mobilenet_v2(weights=None, width_mult=0.35),
        59_285_808,
        1_677_128,
    ),
}
RESOLUTION = 64
TOLERANCE = 1e-5


def _kind(name: str) -> str:
    return name.rsplit(".", 1)[-1]


@torch.no_grad()
def _randomise_batchnorm(net: nn.Module, gen: torch.Generator) -> None:
    """Running statistics measured on random images (so that every layer's output is of
    unit scale in eval mode and the logits are too), then random gammas and betas."""
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average: the statistics of this batch exactly
    net.train()
    net(torch.randn(16, 3, RESOLUTION, RESOLUTION, generator=gen))
    for m, momentum in zip(norms, momenta, strict=True):
        n = m.num_features
        m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
        m.bias.copy_(torch.randn(n, generator=gen) * 0.2)
        m.momentum = momentum  # torchvision's again
    net.eval()


@torch.no_grad()
def copy_layer_by_layer(source: nn.Module, target: nn.Module) -> int:
    """Copy every tensor of `source` into `target`, pairing them in order; returns the
    number of tensors copied. Fails on the first pair that differs in kind or shape."""
    src = list(source.state_dict().items())
    dst = list(target.state_dict().items())
    assert len(src) == len(dst), f"{len(src)} tensors in torchvision, {len(dst)} in fpnas"
    for (s_name, s), (d_name, d) in zip(src, dst, strict=True):
        assert _kind(s_name) == _kind(d_name) and s.shape == d.shape, (s_name, d_name)
        d.copy_(s)
    return len(src)


def _pair(name: str, resolution: int = RESOLUTION) -> tuple[nn.Module, nn.Module]:
    make, _, _ = PUBLISHED[name]
    torch.manual_seed(0)
    reference = make().eval()
    _randomise_batchnorm(reference, torch.Generator().manual_seed(1))
    space = load_space(name, resolution=resolution)
    arch = ir.fixed_architecture(space)
    assert arch is not None
    ours = build_network(space, arch).eval()
    copy_layer_by_layer(reference, ours)
    return reference, ours


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_same_function_as_torchvision(name: str) -> None:
    reference, ours = _pair(name)
    x = torch.randn(4, 3, RESOLUTION, RESOLUTION, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want, got = reference(x), ours(x)
    scale = float(want.abs().max())
    diff = float((got - want).abs().max())
    print(f"{name}: max |diff| {diff:.2e}, max |logit| {scale:.3g}")
    # Unit-scale logits: a difference anywhere in the network would show.
    assert scale > 0.1
    assert diff <= TOLERANCE


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("efficientnet_b0", {"se_act": "relu"}),
        ("efficientnet_b0", {"se_width": "round", "se_divisor": 8}),
        ("mobilenet_v3_large", {"se_act": "hswish"}),
    ],
)
def test_the_se_details_matter(name: str, change: dict[str, object]) -> None:
    """With the SE details of the space undone the copy no longer reproduces torchvision:
    the comparison above can fail."""
    make, _, _ = PUBLISHED[name]
    torch.manual_seed(0)
    reference = make().eval()
    _randomise_batchnorm(reference, torch.Generator().manual_seed(1))
    space = load_space(name, resolution=RESOLUTION)
    micros = tuple(m.model_copy(update=change) for m in space.micros)
    wrong = space.model_copy(update={"micros": micros})
    arch = ir.fixed_architecture(wrong)
    assert arch is not None
    ours = build_network(wrong, arch).eval()
    x = torch.randn(2, 3, RESOLUTION, RESOLUTION, generator=torch.Generator().manual_seed(2))
    try:
        copy_layer_by_layer(reference, ours)
    except AssertionError:
        return  # another SE width: the shapes already differ
    with torch.no_grad():
        assert float((ours(x) - reference(x)).abs().max()) > 1e-3


def test_batchnorm_eps_matters() -> None:
    reference, _ = _pair("mobilenet_v3_large")
    space = load_space("mobilenet_v3_large", resolution=RESOLUTION)
    wrong = space.model_copy(update={"bn_eps": 1e-5, "bn_momentum": 0.1})
    arch = ir.fixed_architecture(wrong)
    assert arch is not None
    ours = build_network(wrong, arch).eval()
    copy_layer_by_layer(reference, ours)
    x = torch.randn(2, 3, RESOLUTION, RESOLUTION, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert float((ours(x) - reference(x)).abs().max()) > 1e-3


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_batchnorm_settings_are_torchvisions(name: str) -> None:
    reference, ours = _pair(name)
    want = {(m.eps, m.momentum) for m in reference.modules() if isinstance(m, nn.BatchNorm2d)}
    got = {(m.eps, m.momentum) for m in ours.modules() if isinstance(m, nn.BatchNorm2d)}
    assert got == want and len(got) == 1


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_flops_and_params_are_torchvisions(name: str) -> None:
    _, macs, params = PUBLISHED[name]
    space = load_space(name)
    arch = ir.fixed_architecture(space)
    assert arch is not None
    assert ir.count_networks(space) == ir.count_architectures(space) == 1
    assert arch_cost(space, arch) == (macs, params)
    make, _, _ = PUBLISHED[name]
    reference = make().eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        reference(torch.zeros(1, 3, 224, 224))
    assert counter.get_total_flops() == 2 * macs  # FlopCounterMode counts 2 per MAC
    assert sum(p.numel() for p in reference.parameters()) == params


class _TfPadded(nn.Module):
    """A stride-2 convolution padded TensorFlow's way (nothing before, the rest after):
    the same output shape as torch's symmetric padding, shifted by a pixel."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.conv.kernel_size[0], self.conv.stride[0]
        total = max(k - s, 0) if x.shape[-1] % s == 0 else max(k - x.shape[-1] % s, 0)
        x = nn.functional.pad(x, (0, total, 0, total))
        return nn.functional.conv2d(x, self.conv.weight, None, s, 0, 1, self.conv.groups)


def _stride_on_the_1x1(net: nn.Module) -> None:
    """ResNet v1 instead of v1.5: the first stride-2 bottleneck strides its 1x1 conv."""
    block = next(
        m for m in net.modules() if type(m).__name__ == "Bottleneck" and m.conv2.stride[0] == 2
    )
    block.conv2.stride = (1, 1)
    block.conv1.stride = (2, 2)


def _tf_padding(net: nn.Module) -> None:
    """The first stride-2 3x3 convolution inside a block padded TensorFlow's way."""
    for module in net.modules():
        for name, child in module.named_children():
            if (
                isinstance(child, nn.Conv2d)
                and child.stride == (2, 2)
                and child.kernel_size == (3, 3)
                and module is not net.stem[0]
            ):
                setattr(module, name, _TfPadded(child))
                return
    raise AssertionError("no stride-2 3x3 convolution")


def _swap_two_convs(net: nn.Module) -> None:
    """Two same-shape convolutions in the other order (what a copy in order would hide)."""
    convs = [
        m for m in net.blocks.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)
    ]
    first = convs[0]
    second = next(c for c in convs[1:] if c.weight.shape == first.weight.shape)
    with torch.no_grad():
        saved = first.weight.clone()
        first.weight.copy_(second.weight)
        second.weight.copy_(saved)


@pytest.mark.parametrize(
    ("name", "mistake"),
    [
        ("resnet50", _stride_on_the_1x1),
        ("resnet50", _tf_padding),
        ("resnet18", _tf_padding),
        ("resnet18", _swap_two_convs),
        ("efficientnet_v2_s", _tf_padding),
        ("efficientnet_v2_s", _swap_two_convs),
    ],
)
def test_one_wrong_convolution_shows(name: str, mistake: Callable[[nn.Module], None]) -> None:
    """One convolution's stride, padding or order changed in the copy: the comparison of
    `test_same_function_as_torchvision` would fail."""
    reference, ours = _pair(name)
    mistake(ours)
    x = torch.randn(2, 3, RESOLUTION, RESOLUTION, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert float((ours(x) - reference(x)).abs().max()) > 1e-3
