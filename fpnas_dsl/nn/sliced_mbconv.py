"""The sliced MBConv: one weight group's widest tensors, the slices a plan takes of them,
and the one dataflow that runs on those slices.

`SharedMBConv.slices(plan)` says, once, which slice of which widest tensor every layer of
the standalone `blocks.MBConv` of that plan gets. Its users:

- the supernet's single-path forward: `run(x, plan, training)`;
- `subnet()`: `standalone_tensors(plan)` (the same slices, by state-dict name);
- the relaxed (DNAS) forward: `expand` and `body` on the slices of a plan at the widest,
  with its width masks passed in where the channels they weigh are formed.

`blocks.MBConv` stays the exported network's own module; what is shared with it is the
state-dict layout (see `blocks`): a narrower block is a prefix slice of a wider one.
"""

from __future__ import annotations

from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from fpnas_dsl.footprint import GroupShape, radix
from fpnas_dsl.nn.blocks import activation_fn
from fpnas_dsl.nn.sliced import (
    AttentionParts,
    BlockPlan,
    NormSlice,
    Slices,
    depthwise_slice,
    lead,
    scale_channels,
)

__all__ = ["SharedMBConv"]


class SharedMBConv(AttentionParts):
    """The weights of one or more (kernel, attention) candidates of an MBConv block, at
    their widest: `conv_pw`, `bn1`, one depthwise `conv_dw` at the largest kernel with the
    most filters per channel, `bn2[r{R}]` per number of filters per channel, the attention
    add-ons `attn[se|sa2|sa4]`, `conv_pwl`, `bn3`."""

    shortcut_name: ClassVar[str] = "shortcut"

    def __init__(
        self,
        in_max: int,
        mid_max: int,
        out_max: int,
        group: GroupShape,
        stride: int,
        expand: bool,
        attention_width: dict[str, int],
        gate: str,
    ) -> None:
        super().__init__()
        self.radix_max = group.radix_max
        self.kernel = kernel = group.kernel
        self.stride = stride
        self.conv_pw = nn.Conv2d(in_max, mid_max, 1, bias=False) if expand else None
        self.bn1 = nn.BatchNorm2d(mid_max) if expand else None
        self.conv_dw = nn.Conv2d(
            mid_max,
            mid_max * self.radix_max,
            kernel,
            stride,
            kernel // 2,
            groups=mid_max,
            bias=False,
        )
        self.bn2 = nn.ModuleDict({f"r{r}": nn.BatchNorm2d(mid_max * r) for r in group.radices})
        self.make_attention(mid_max, group, attention_width, gate)
        self.conv_pwl = nn.Conv2d(mid_max, out_max, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_max)

    def depthwise(self, mid: int, splits: int, kernel: int) -> Tensor:
        """The depthwise weight [mid * R, 1, k, k] of `mid` channels, R filters each."""
        return depthwise_slice(self.conv_dw.weight, self.radix_max, mid, radix(splits), kernel)

    def residual_norm(self) -> nn.BatchNorm2d:
        """The last batch-norm (gamma 0 starts an always-residual block as its shortcut)."""
        return self.bn3

    # ------------------------------------------------------------------ slices
    # One accessor per layer: which slice of which widest tensor a plan's layer gets.
    # The dataflow calls each where the layer runs (so autograd records each view next
    # to its use, as a hand-written forward would); `slices` lists them all by the
    # standalone `MBConv`'s state-dict names.

    def expand_weight(self, p: BlockPlan) -> Tensor:
        assert self.conv_pw is not None
        return lead(self.conv_pw.weight, p.mid, p.cin)

    def expand_norm(self, p: BlockPlan) -> NormSlice:
        assert self.bn1 is not None
        return NormSlice(self.bn1, p.mid)

    def depthwise_weight(self, p: BlockPlan) -> Tensor:
        return self.depthwise(p.mid, p.splits, p.kernel)

    def depthwise_norm(self, p: BlockPlan) -> NormSlice:
        filters = radix(p.splits)
        return NormSlice(self.bn2[f"r{filters}"], p.mid * filters)  # type: ignore[arg-type]

    def project_weight(self, p: BlockPlan) -> Tensor:
        return lead(self.conv_pwl.weight, p.cout, p.mid)

    def project_norm(self, p: BlockPlan) -> NormSlice:
        return NormSlice(self.bn3, p.cout)

    def slices(self, p: BlockPlan) -> Slices:
        """Every layer's slice for the standalone `MBConv` of plan `p`, by its names."""
        w: dict[str, Tensor] = {}
        norms: dict[str, NormSlice] = {}
        if p.expand:
            w["conv_pw.weight"] = self.expand_weight(p)
            norms["bn1"] = self.expand_norm(p)
        w["conv_dw.weight"] = self.depthwise_weight(p)
        norms["bn2"] = self.depthwise_norm(p)
        w.update(self.attention_slices(p))
        w["conv_pwl.weight"] = self.project_weight(p)
        norms["bn3"] = self.project_norm(p)
        return Slices(w, norms)

    def standalone_tensors(self, p: BlockPlan) -> dict[str, Tensor]:
        """The tensors of the standalone `MBConv` of plan `p`, by its state-dict names,
        as (views of) this group's: what `subnet()` copies out."""
        return self.slices(p).tensors()

    # ------------------------------------------------------------------ dataflow

    def run(
        self, x: Tensor, p: BlockPlan, training: bool, residual: Tensor | None = None
    ) -> Tensor:
        """`MBConv.forward` of plan `p` on the leading channels of this group; the
        projected `residual` is added where the plan has a shortcut."""
        shortcut = x
        if p.expand:
            x = activation_fn(p.act)(self.expand(x, p, training))
        x = self.body(x, p, training)
        if p.residual:
            x = x + shortcut
        elif residual is not None:
            x = x + residual
        return x

    def expand(self, x: Tensor, p: BlockPlan, training: bool) -> Tensor:
        """The 1x1 expansion and its batch-norm, before the activation."""
        return self.expand_norm(p)(F.conv2d(x, self.expand_weight(p)), training)

    def body(
        self,
        x: Tensor,
        p: BlockPlan,
        training: bool,
        mid_mask: Tensor | None = None,
        hidden_mask: Tensor | None = None,
    ) -> Tensor:
        """Depthwise convolution, activation, attention, projection and its batch-norm
        (the residual aside) on the expanded input `x`.

        The relaxed forward weighs channels where they are formed: `mid_mask` one weight
        per expanded channel (repeated over its filters) after the depthwise activation,
        `hidden_mask` the attention's bottleneck channels (its leading entries) after
        its first layer."""
        act = activation_fn(p.act)
        mid, splits = p.mid, p.splits
        filters = radix(splits)
        x = F.conv2d(x, self.depthwise_weight(p), None, self.stride, p.kernel // 2, 1, mid)
        x = act(self.depthwise_norm(p)(x, training))
        if mid_mask is not None:
            x = scale_channels(x, mid_mask.repeat_interleave(filters) if filters > 1 else mid_mask)
        x = self.attend(x, p, hidden_mask)
        return self.project_norm(p)(F.conv2d(x, self.project_weight(p)), training)
