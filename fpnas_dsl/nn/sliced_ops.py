"""The sliced row operators beyond MBConv: fused-MBConv, depthwise-separable, conv-bn-act
and ResNet's basic and bottleneck blocks, each one weight group's widest tensors, the
slices a plan takes of them and the one dataflow that runs on those slices.

As `nn.sliced_mbconv` does for MBConv, each group says once (`slices(plan)`) which slice
of which widest tensor every layer of the standalone block (`nn.blocks`) gets, by its
state-dict names; `run` is that block's forward on the slices. The supernet's
single-path forward calls `run`, `subnet()` copies `slices(plan).tensors()`, and the
relaxed (DNAS) forward calls `run` on the plan at the widest with its width masks:
`mid_mask` weighs the inner channels where they are formed (after their batch-norm and
activation), `hidden_mask` the attention's bottleneck.

Sharing as for MBConv: channels and expansion by the leading `[:out, :in]` block of each
weight; kernels (with `share kernel`) by the centre of the largest kxk kernel; attention
variants (with `share attention`) as add-ons of one set of convolutions. ResNet's
projection shortcut (`downsample`) is the block's 1x1 projection, the one that `skip`
becomes where the shape changes: `run` adds the `residual` it is given before the last
activation, as torchvision's blocks do.
"""

from __future__ import annotations

from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from fpnas_dsl.footprint import BlockShape, GroupShape, radix
from fpnas_dsl.nn.blocks import activation_fn, conv2d
from fpnas_dsl.nn.sliced import (
    AttentionParts,
    BlockPlan,
    NormSlice,
    Slices,
    centre,
    depthwise_slice,
    lead,
    scale_channels,
)

__all__ = [
    "SharedBasic",
    "SharedBottleneck",
    "SharedConv",
    "SharedDepthwiseSeparable",
    "SharedFusedMBConv",
    "make_group",
]


def _conv(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)


def _mask(x: Tensor, mask: Tensor | None) -> Tensor:
    return x if mask is None else scale_channels(x, mask[: x.shape[1]])


class _Group(AttentionParts):
    """What every group has: its largest kernel and stride, no attention unless made."""

    shortcut_name: ClassVar[str] = "shortcut"

    def __init__(self, group: GroupShape, stride: int) -> None:
        super().__init__()
        self.kernel = group.kernel
        self.stride = stride
        self.attn = nn.ModuleDict()
        self.gate = "sigmoid"

    def kxk(self, conv: nn.Conv2d, rows: int, cols: int, kernel: int) -> Tensor:
        """The [rows, cols, kernel, kernel] slice of a dense kxk weight."""
        return centre(lead(conv.weight, rows, cols), kernel)

    def residual_norm(self) -> nn.BatchNorm2d | None:
        return None


class SharedConv(_Group):
    """`conv`: one kxk conv (`conv`) and its batch-norm (`bn`), as `blocks.ConvBnAct`."""

    def __init__(self, block: BlockShape, group: GroupShape, stride: int) -> None:
        super().__init__(group, stride)
        self.conv = _conv(block.in_max, block.out_max, group.kernel, stride)
        self.bn = nn.BatchNorm2d(block.out_max)

    def slices(self, p: BlockPlan) -> Slices:
        return Slices(
            {"conv.weight": self.kxk(self.conv, p.cout, p.cin, p.kernel)},
            {"bn": NormSlice(self.bn, p.cout)},
        )

    def run(
        self,
        x: Tensor,
        p: BlockPlan,
        training: bool,
        residual: Tensor | None = None,
        mid_mask: Tensor | None = None,
        hidden_mask: Tensor | None = None,
    ) -> Tensor:
        w = self.kxk(self.conv, p.cout, p.cin, p.kernel)
        x = conv2d(x, w, self.stride, p.kernel // 2)
        return activation_fn(p.act)(NormSlice(self.bn, p.cout)(x, training))


class SharedFusedMBConv(_Group):
    """`fused`: the kxk expansion conv `conv_exp` and `bn1`, the attention add-ons, and
    (where some expansion is not 1) `conv_pwl` and `bn2`. Expansion 1 is the one conv,
    its `cout` leading filters, and its attention."""

    def __init__(self, block: BlockShape, group: GroupShape, stride: int, gate: str) -> None:
        super().__init__(group, stride)
        self.conv_exp = _conv(block.in_max, block.mid_max, group.kernel, stride)
        self.bn1 = nn.BatchNorm2d(block.mid_max)
        self.make_attention(block.mid_max, group, block.attention_width, gate)
        self.conv_pwl = _conv(block.mid_max, block.out_max, 1) if block.expand else None
        self.bn2 = nn.BatchNorm2d(block.out_max) if block.expand else None

    def residual_norm(self) -> nn.BatchNorm2d | None:
        return self.bn2 if self.bn2 is not None else self.bn1

    def _project(self, p: BlockPlan) -> tuple[Tensor, NormSlice]:
        assert self.conv_pwl is not None and self.bn2 is not None
        return lead(self.conv_pwl.weight, p.cout, p.mid), NormSlice(self.bn2, p.cout)

    def slices(self, p: BlockPlan) -> Slices:
        w = {"conv_exp.weight": self.kxk(self.conv_exp, p.mid, p.cin, p.kernel)}
        norms = {"bn1": NormSlice(self.bn1, p.mid)}
        w.update(self.attention_slices(p))
        if p.expand:
            w["conv_pwl.weight"], norms["bn2"] = self._project(p)
        return Slices(w, norms)

    def run(
        self,
        x: Tensor,
        p: BlockPlan,
        training: bool,
        residual: Tensor | None = None,
        mid_mask: Tensor | None = None,
        hidden_mask: Tensor | None = None,
    ) -> Tensor:
        shortcut = x
        x = conv2d(x, self.kxk(self.conv_exp, p.mid, p.cin, p.kernel), self.stride, p.kernel // 2)
        x = _mask(activation_fn(p.act)(NormSlice(self.bn1, p.mid)(x, training)), mid_mask)
        x = self.attend(x, p, hidden_mask)
        if p.expand:
            weight, norm = self._project(p)
            x = norm(F.conv2d(x, weight), training)
        if p.residual:
            x = x + shortcut
        return x


class SharedDepthwiseSeparable(_Group):
    """`ds`: the depthwise `conv_dw` at the largest kernel with the most filters per
    channel, `bn1[r{R}]` per number of filters, the attention add-ons, `conv_pw`, `bn2`."""

    def __init__(self, block: BlockShape, group: GroupShape, stride: int, gate: str) -> None:
        super().__init__(group, stride)
        self.radix_max = group.radix_max
        cin = block.in_max
        self.conv_dw = _conv(cin, cin * self.radix_max, group.kernel, stride, groups=cin)
        self.bn1 = nn.ModuleDict({f"r{r}": nn.BatchNorm2d(cin * r) for r in group.radices})
        self.make_attention(cin, group, block.attention_width, gate)
        self.conv_pw = _conv(cin, block.out_max, 1)
        self.bn2 = nn.BatchNorm2d(block.out_max)

    def residual_norm(self) -> nn.BatchNorm2d | None:
        return self.bn2

    def _depthwise(self, p: BlockPlan) -> tuple[Tensor, NormSlice]:
        filters = radix(p.splits)
        w = depthwise_slice(self.conv_dw.weight, self.radix_max, p.cin, filters, p.kernel)
        return w, NormSlice(self.bn1[f"r{filters}"], p.cin * filters)  # type: ignore[arg-type]

    def _pointwise(self, p: BlockPlan) -> tuple[Tensor, NormSlice]:
        return lead(self.conv_pw.weight, p.cout, p.cin), NormSlice(self.bn2, p.cout)

    def slices(self, p: BlockPlan) -> Slices:
        w: dict[str, Tensor] = {}
        norms: dict[str, NormSlice] = {}
        w["conv_dw.weight"], norms["bn1"] = self._depthwise(p)
        w.update(self.attention_slices(p))
        w["conv_pw.weight"], norms["bn2"] = self._pointwise(p)
        return Slices(w, norms)

    def run(
        self,
        x: Tensor,
        p: BlockPlan,
        training: bool,
        residual: Tensor | None = None,
        mid_mask: Tensor | None = None,
        hidden_mask: Tensor | None = None,
    ) -> Tensor:
        shortcut = x
        weight, norm = self._depthwise(p)
        x = conv2d(x, weight, self.stride, p.kernel // 2, p.cin)
        x = activation_fn(p.act)(norm(x, training))
        filters = radix(p.splits)
        if mid_mask is not None:
            x = scale_channels(x, mid_mask.repeat_interleave(filters) if filters > 1 else mid_mask)
        x = self.attend(x, p, hidden_mask)
        weight, norm = self._pointwise(p)
        x = norm(F.conv2d(x, weight), training)
        if p.residual:
            x = x + shortcut
        return x


class _ResNetGroup(_Group):
    """ResNet's blocks: the shortcut (identity, or the block's projection) is added
    before the last activation."""

    shortcut_name: ClassVar[str] = "downsample"

    @staticmethod
    def finish(x: Tensor, shortcut: Tensor, p: BlockPlan, residual: Tensor | None) -> Tensor:
        if not p.residual:
            assert residual is not None, "a ResNet block that changes shape needs its projection"
            shortcut = residual
        return activation_fn(p.act)(x + shortcut)


class SharedBasic(_ResNetGroup):
    """`basic`: `conv1` (kxk, the stride) and `bn1`, `conv2` (kxk) and `bn2`, at the
    widest input and output channels."""

    def __init__(self, block: BlockShape, group: GroupShape, stride: int) -> None:
        super().__init__(group, stride)
        self.conv1 = _conv(block.in_max, block.out_max, group.kernel, stride)
        self.bn1 = nn.BatchNorm2d(block.out_max)
        self.conv2 = _conv(block.out_max, block.out_max, group.kernel)
        self.bn2 = nn.BatchNorm2d(block.out_max)

    def residual_norm(self) -> nn.BatchNorm2d | None:
        return self.bn2

    def slices(self, p: BlockPlan) -> Slices:
        return Slices(
            {
                "conv1.weight": self.kxk(self.conv1, p.cout, p.cin, p.kernel),
                "conv2.weight": self.kxk(self.conv2, p.cout, p.cout, p.kernel),
            },
            {"bn1": NormSlice(self.bn1, p.cout), "bn2": NormSlice(self.bn2, p.cout)},
        )

    def run(
        self,
        x: Tensor,
        p: BlockPlan,
        training: bool,
        residual: Tensor | None = None,
        mid_mask: Tensor | None = None,
        hidden_mask: Tensor | None = None,
    ) -> Tensor:
        shortcut, act, pad = x, activation_fn(p.act), p.kernel // 2
        x = conv2d(x, self.kxk(self.conv1, p.cout, p.cin, p.kernel), self.stride, pad)
        x = _mask(act(NormSlice(self.bn1, p.cout)(x, training)), mid_mask)
        x = F.conv2d(x, self.kxk(self.conv2, p.cout, p.cout, p.kernel), None, 1, pad)
        return self.finish(NormSlice(self.bn2, p.cout)(x, training), shortcut, p, residual)


class SharedBottleneck(_ResNetGroup):
    """`bottleneck`: `conv1` (1x1) and `bn1`, `conv2` (kxk, the stride) and `bn2` at the
    widest inner width, `conv3` (1x1) and `bn3`."""

    def __init__(self, block: BlockShape, group: GroupShape, stride: int) -> None:
        super().__init__(group, stride)
        mid = block.mid_max
        self.conv1 = _conv(block.in_max, mid, 1)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = _conv(mid, mid, group.kernel, stride)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = _conv(mid, block.out_max, 1)
        self.bn3 = nn.BatchNorm2d(block.out_max)

    def residual_norm(self) -> nn.BatchNorm2d | None:
        return self.bn3

    def slices(self, p: BlockPlan) -> Slices:
        return Slices(
            {
                "conv1.weight": lead(self.conv1.weight, p.mid, p.cin),
                "conv2.weight": self.kxk(self.conv2, p.mid, p.mid, p.kernel),
                "conv3.weight": lead(self.conv3.weight, p.cout, p.mid),
            },
            {
                "bn1": NormSlice(self.bn1, p.mid),
                "bn2": NormSlice(self.bn2, p.mid),
                "bn3": NormSlice(self.bn3, p.cout),
            },
        )

    def run(
        self,
        x: Tensor,
        p: BlockPlan,
        training: bool,
        residual: Tensor | None = None,
        mid_mask: Tensor | None = None,
        hidden_mask: Tensor | None = None,
    ) -> Tensor:
        shortcut, act = x, activation_fn(p.act)
        x = F.conv2d(x, lead(self.conv1.weight, p.mid, p.cin))
        x = _mask(act(NormSlice(self.bn1, p.mid)(x, training)), mid_mask)
        w = self.kxk(self.conv2, p.mid, p.mid, p.kernel)
        x = conv2d(x, w, self.stride, p.kernel // 2)
        x = _mask(act(NormSlice(self.bn2, p.mid)(x, training)), mid_mask)
        x = F.conv2d(x, lead(self.conv3.weight, p.cout, p.mid))
        return self.finish(NormSlice(self.bn3, p.cout)(x, training), shortcut, p, residual)


def make_group(
    block: BlockShape, group: GroupShape, stride: int, gate: str
) -> SharedFusedMBConv | SharedDepthwiseSeparable | SharedConv | SharedBasic | SharedBottleneck:
    """The weight group of one of the operators beyond MBConv (`block.op`)."""
    if block.op == "fused":
        return SharedFusedMBConv(block, group, stride, gate)
    if block.op == "ds":
        return SharedDepthwiseSeparable(block, group, stride, gate)
    if block.op == "conv":
        return SharedConv(block, group, stride)
    if block.op == "basic":
        return SharedBasic(block, group, stride)
    if block.op == "bottleneck":
        return SharedBottleneck(block, group, stride)
    raise ValueError(f"no sliced operator {block.op!r}")
