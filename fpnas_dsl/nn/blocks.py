"""Building blocks of the standalone networks (and, at their widest, of the supernet).

timm-style: blocks take plain arguments (channels, kernel, stride, activation name) and
keep no state besides their layers; short member names (`conv_pw, bn1, act1, conv_dw,
bn2, act2, attn, conv_pwl, bn3`); a disabled part is an `nn.Identity`, so `forward`
has no branches but the residual.

Channel orders are chosen so that a narrower block is a prefix slice of a wider one
(which is how the supernet shares weights): the split-attention depthwise convolution
makes R outputs per input channel (`groups = channels`), so output c * R + r is split r
of channel c, and the attention logits use the same (channel, split) order.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.jit import is_scripting  # type: ignore[attr-defined]

__all__ = [
    "ACTIVATIONS",
    "GATES",
    "BasicBlock",
    "Bottleneck",
    "ConvBnAct",
    "DepthwiseSeparable",
    "FusedMBConv",
    "MBConv",
    "SplitAttention",
    "SqueezeExcite",
    "activation_fn",
    "conv2d",
    "gate_fn",
    "init_weights",
    "make_act",
    "make_gate",
    "set_batchnorm",
]

#: Activation name -> module class (what the standalone networks hold).
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "swish": nn.SiLU,
    "hswish": nn.Hardswish,
}
#: Gate name -> module class.
GATES: dict[str, type[nn.Module]] = {"sigmoid": nn.Sigmoid, "hsigmoid": nn.Hardsigmoid}

_ACT_FNS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": F.relu,
    "relu6": F.relu6,
    "swish": F.silu,
    "hswish": F.hardswish,
}
_GATE_FNS: dict[str, Callable[[Tensor], Tensor]] = {
    "sigmoid": torch.sigmoid,
    "hsigmoid": F.hardsigmoid,
}


def make_act(name: str | None) -> nn.Module:
    """An activation module by name; `None` gives `nn.Identity`."""
    if name is None:
        return nn.Identity()
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; allowed: {sorted(ACTIVATIONS)}") from None


def make_gate(name: str) -> nn.Module:
    try:
        return GATES[name]()
    except KeyError:
        raise ValueError(f"unknown gate {name!r}; allowed: {sorted(GATES)}") from None


def activation_fn(name: str | None) -> Callable[[Tensor], Tensor]:
    """The functional form of `make_act(name)` (what the supernet calls)."""
    if name is None:
        return _identity
    try:
        return _ACT_FNS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; allowed: {sorted(ACTIVATIONS)}") from None


def gate_fn(name: str) -> Callable[[Tensor], Tensor]:
    try:
        return _GATE_FNS[name]
    except KeyError:
        raise ValueError(f"unknown gate {name!r}; allowed: {sorted(GATES)}") from None


def _identity(x: Tensor) -> Tensor:
    return x


def _tracing() -> bool:
    return bool(torch.jit.is_tracing())  # type: ignore[attr-defined,no-untyped-call]


def conv2d(x: Tensor, weight: Tensor, stride: int = 1, padding: int = 0, groups: int = 1) -> Tensor:
    """`F.conv2d` without bias, except that while autograd records on the CPU a 1x1
    convolution with a stride runs as the subsampled input convolved at stride 1 (the same
    numbers): oneDNN's channels-last backward of a strided 1x1 convolution with fewer
    input channels than its block writes past its workspace (torch 2.14.1 on AVX2: heap
    corruption from 80 px up; oneDNN issue 6035). Exports keep the plain strided conv."""
    if (
        stride > 1
        and weight.shape[-2:] == (1, 1)
        and padding == 0
        and x.device.type == "cpu"
        and torch.is_grad_enabled()
        and not _tracing()
        and not torch.onnx.is_in_onnx_export()
    ):
        return F.conv2d(x[:, :, ::stride, ::stride], weight, None, 1, 0, 1, groups)
    return F.conv2d(x, weight, None, stride, padding, 1, groups)


class ConvBnAct(nn.Module):
    """Convolution (no bias, padding kernel // 2) + batch-norm + activation (or none)."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel: int = 1,
        stride: int = 1,
        act: str | None = None,
        groups: int = 1,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_chs, out_chs, kernel, stride, kernel // 2, groups=groups, bias=False
        )
        self.bn = nn.BatchNorm2d(out_chs)
        self.act = make_act(act)

    def forward(self, x: Tensor) -> Tensor:
        if is_scripting():  # noqa: SIM108 (TorchScript skips only if-branches)
            x = self.conv(x)
        else:
            x = self._conv(x)
        out: Tensor = self.act(self.bn(x))
        return out

    @torch.jit.unused
    def _conv(self, x: Tensor) -> Tensor:
        conv = self.conv
        stride, padding = conv.stride[0], conv.padding[0]
        return conv2d(x, conv.weight, stride, padding, conv.groups)  # type: ignore[arg-type]


class SqueezeExcite(nn.Module):
    """Squeeze-excite as torchvision's: pool -> 1x1 conv -> act (ReLU unless the micro
    says otherwise) -> 1x1 conv -> gate -> scale."""

    def __init__(self, chs: int, rd_chs: int, gate: str = "sigmoid", act: str = "relu") -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(chs, rd_chs, 1, bias=True)
        self.act1 = make_act(act)
        self.conv_expand = nn.Conv2d(rd_chs, chs, 1, bias=True)
        self.gate = make_gate(gate)

    def forward(self, x: Tensor) -> Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = self.conv_expand(self.act1(self.conv_reduce(s)))
        out: Tensor = x * self.gate(s)
        return out


class SplitAttention(nn.Module):
    """ResNeSt split-attention over the R splits of a depthwise output, inside MBConv.

    Input: [B, chs * radix, H, W] in (channel, split) order; output: [B, chs, H, W] =
    sum over splits of split * softmax_splits(fc2(ReLU(fc1(pool(sum of splits))))).
    """

    def __init__(self, chs: int, radix: int, attn_chs: int) -> None:
        super().__init__()
        self.chs = chs
        self.radix = radix
        self.fc1 = nn.Conv2d(chs, attn_chs, 1, bias=True)
        self.act1 = nn.ReLU()
        self.fc2 = nn.Conv2d(attn_chs, chs * radix, 1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.unflatten(x, 1, (self.chs, self.radix))
        gap = x.sum(2).mean((2, 3), keepdim=True)
        attn = self.fc2(self.act1(self.fc1(gap)))
        attn = torch.unflatten(attn, 1, (self.chs, self.radix)).softmax(2)
        return (x * attn).sum(2)


class MBConv(nn.Module):
    """Inverted residual (MobileNetV2/V3): [1x1 expand] -> kxk depthwise -> attention ->
    1x1 project, + input when stride is 1 and the channels match, + `shortcut(input)`
    (a projection) otherwise when one is given.

    `splits` is the number of split-attention splits (the depthwise convolution then makes
    `mid_chs * splits` channels and `attn` must be a `SplitAttention`); 1 otherwise.
    """

    def __init__(
        self,
        in_chs: int,
        mid_chs: int,
        out_chs: int,
        kernel: int,
        stride: int,
        act: str,
        expand: bool = True,
        attn: nn.Module | None = None,
        splits: int = 1,
        shortcut: nn.Module | None = None,
    ) -> None:
        super().__init__()
        dw_chs = mid_chs * splits
        if not expand and mid_chs != in_chs:
            raise ValueError("without an expand convolution the block's width is its input's")
        self.conv_pw = nn.Conv2d(in_chs, mid_chs, 1, bias=False) if expand else nn.Identity()
        self.bn1 = nn.BatchNorm2d(mid_chs) if expand else nn.Identity()
        self.act1 = make_act(act) if expand else nn.Identity()
        self.conv_dw = nn.Conv2d(
            mid_chs, dw_chs, kernel, stride, kernel // 2, groups=mid_chs, bias=False
        )
        self.bn2 = nn.BatchNorm2d(dw_chs)
        self.act2 = make_act(act)
        self.attn = attn if attn is not None else nn.Identity()
        self.conv_pwl = nn.Conv2d(mid_chs, out_chs, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_chs)
        self.has_skip = stride == 1 and in_chs == out_chs
        if shortcut is not None and self.has_skip:
            raise ValueError("a block that keeps its shape has the identity as its shortcut")
        self.has_shortcut = shortcut is not None
        self.shortcut = shortcut if shortcut is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.act1(self.bn1(self.conv_pw(x)))
        x = self.act2(self.bn2(self.conv_dw(x)))
        x = self.attn(x)
        x = self.bn3(self.conv_pwl(x))
        if self.has_skip:
            x = x + shortcut
        elif self.has_shortcut:
            x = x + self.shortcut(shortcut)
        return x


class StridedConv2d(nn.Conv2d):
    """`nn.Conv2d` (no bias, padding kernel // 2) whose forward goes through `conv2d`, so
    that a strided 1x1 stays safe on the CPU (the new operators' kernels may be 1)."""

    def __init__(
        self, in_chs: int, out_chs: int, kernel: int, stride: int = 1, groups: int = 1
    ) -> None:
        super().__init__(in_chs, out_chs, kernel, stride, kernel // 2, groups=groups, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        if is_scripting():
            out: Tensor = self._conv_forward(x, self.weight, self.bias)
            return out
        return self._safe(x)

    @torch.jit.unused
    def _safe(self, x: Tensor) -> Tensor:
        return conv2d(x, self.weight, self.stride[0], self.padding[0], self.groups)  # type: ignore[arg-type]


def _shortcut(in_chs: int, out_chs: int, stride: int) -> nn.Module:
    """ResNet's shortcut: the input, or a 1x1 conv + BN with the stride where the shape
    changes (torchvision's `downsample`)."""
    if stride == 1 and in_chs == out_chs:
        return nn.Identity()
    return ConvBnAct(in_chs, out_chs, 1, stride)


class FusedMBConv(nn.Module):
    """Fused-MBConv (EfficientNetV2; timm's EdgeResidual): kxk expansion conv -> attention
    -> 1x1 project, + input when stride is 1 and the channels match. Without expansion it
    is one kxk conv-bn-act (its attention, if any, on the output)."""

    def __init__(
        self,
        in_chs: int,
        mid_chs: int,
        out_chs: int,
        kernel: int,
        stride: int,
        act: str,
        expand: bool = True,
        attn: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if not expand and mid_chs != out_chs:
            raise ValueError("without expansion a fused-MBConv's one conv makes its output")
        self.conv_exp = StridedConv2d(in_chs, mid_chs, kernel, stride)
        self.bn1 = nn.BatchNorm2d(mid_chs)
        self.act1 = make_act(act)
        self.attn = attn if attn is not None else nn.Identity()
        self.conv_pwl = nn.Conv2d(mid_chs, out_chs, 1, bias=False) if expand else nn.Identity()
        self.bn2 = nn.BatchNorm2d(out_chs) if expand else nn.Identity()
        self.has_skip = stride == 1 and in_chs == out_chs

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.attn(self.act1(self.bn1(self.conv_exp(x))))
        x = self.bn2(self.conv_pwl(x))
        if self.has_skip:
            x = x + shortcut
        return x


class DepthwiseSeparable(nn.Module):
    """Depthwise-separable conv (MobileNetV1; timm's DepthwiseSeparableConv): kxk depthwise
    -> act -> attention -> 1x1 pointwise (no act), + input when stride is 1 and the
    channels match. `splits` as in MBConv."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel: int,
        stride: int,
        act: str,
        attn: nn.Module | None = None,
        splits: int = 1,
    ) -> None:
        super().__init__()
        self.conv_dw = StridedConv2d(in_chs, in_chs * splits, kernel, stride, groups=in_chs)
        self.bn1 = nn.BatchNorm2d(in_chs * splits)
        self.act1 = make_act(act)
        self.attn = attn if attn is not None else nn.Identity()
        self.conv_pw = nn.Conv2d(in_chs, out_chs, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.has_skip = stride == 1 and in_chs == out_chs

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.attn(self.act1(self.bn1(self.conv_dw(x))))
        x = self.bn2(self.conv_pw(x))
        if self.has_skip:
            x = x + shortcut
        return x


class BasicBlock(nn.Module):
    """ResNet's basic block (torchvision's BasicBlock): kxk conv (the stride) -> act -> kxk
    conv, + the shortcut (projected where the shape changes), -> act."""

    def __init__(self, in_chs: int, out_chs: int, kernel: int, stride: int, act: str) -> None:
        super().__init__()
        self.conv1 = StridedConv2d(in_chs, out_chs, kernel, stride)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.act1 = make_act(act)
        self.conv2 = nn.Conv2d(out_chs, out_chs, kernel, 1, kernel // 2, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.downsample = _shortcut(in_chs, out_chs, stride)
        self.act2 = make_act(act)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.bn2(self.conv2(x))
        out: Tensor = self.act2(x + shortcut)
        return out


class Bottleneck(nn.Module):
    """ResNet's bottleneck (torchvision's ResNet v1.5: the stride on the kxk conv): 1x1 ->
    act -> kxk -> act -> 1x1, + the shortcut (projected where the shape changes), -> act."""

    def __init__(
        self, in_chs: int, mid_chs: int, out_chs: int, kernel: int, stride: int, act: str
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, mid_chs, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_chs)
        self.act1 = make_act(act)
        self.conv2 = StridedConv2d(mid_chs, mid_chs, kernel, stride)
        self.bn2 = nn.BatchNorm2d(mid_chs)
        self.act2 = make_act(act)
        self.conv3 = nn.Conv2d(mid_chs, out_chs, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_chs)
        self.downsample = _shortcut(in_chs, out_chs, stride)
        self.act3 = make_act(act)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.bn3(self.conv3(x))
        out: Tensor = self.act3(x + shortcut)
        return out


def set_batchnorm(module: nn.Module, eps: float, momentum: float) -> None:
    """Give every batch-norm of `module` the space's eps and momentum (`batchnorm ...`)."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = eps
            m.momentum = momentum


@torch.no_grad()
def init_weights(module: nn.Module) -> None:
    """MobileNet-style initialisation (torchvision's): He (fan-out) convolutions, unit
    batch-norm with fresh running statistics, N(0, 0.01) linear layers, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
