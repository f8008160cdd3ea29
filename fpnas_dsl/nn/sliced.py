"""Slicing: how one architecture's tensors are read out of the widest ones.

Every weight of the supernet is held at its widest; an architecture uses the leading
`[:out, :in]` block of each tensor. An operator writes, once, which slice of which
weight each of its standalone layers gets (`Slices`, keyed by the standalone module's
state-dict names), and both of its uses read that one answer:

- its sliced forward (the supernet's single-path step, and the relaxed forward's
  candidates at the widest) runs on `Slices`;
- `subnet()` copies `Slices.tensors()` into the standalone network.

Nothing here holds state about an architecture: a slice is taken from a `BlockPlan`
per call (Once-for-All shares its slicing between the supernet and `get_active_subnet`
the same way, but keeps the active widths on the modules).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fpnas_dsl.footprint import GroupShape, radix
from fpnas_dsl.ir import ATTENTION_SPLITS
from fpnas_dsl.nn.blocks import (
    ConvBnAct,
    SplitAttention,
    SqueezeExcite,
    activation_fn,
    conv2d,
    gate_fn,
)

__all__ = [
    "AttentionParts",
    "BlockPlan",
    "NormSlice",
    "SlicedOp",
    "Slices",
    "centre",
    "conv_bn_act",
    "conv_bn_act_slices",
    "depthwise_slice",
    "lead",
    "linear_slices",
    "scale_channels",
]


@dataclass(frozen=True)
class BlockPlan:
    """One block of one architecture: which weight group and which widths."""

    kind: str  # the row operator ("mbconv", "fused", ...), "identity" or "project"
    op: str | None
    cin: int
    mid: int
    cout: int
    att: int
    splits: int
    act: str
    expand: bool
    residual: bool
    kernel: int = 0
    attention: str = "none"
    #: The activation inside squeeze-excite (`Micro.se_act`, resolved for this block).
    se_act: str = "relu"
    #: The block's projection is its residual (an MBConv under `skip where shapes differ:
    #: shortcut`, ResNet's blocks wherever the shape changes).
    shortcut: bool = False


def lead(t: Tensor | None, rows: int, cols: int | None = None) -> Tensor:
    """The leading [:rows, :cols] block of a weight; the tensor itself when that is all of
    it (a full slice would still cost a zero-filled gradient copy in backward)."""
    assert t is not None
    if cols is None or cols == t.shape[1]:
        return t if rows == t.shape[0] else t[:rows]
    return t[:, :cols] if rows == t.shape[0] else t[:rows, :cols]


@dataclass(slots=True)  # not frozen: built per layer per forward, frozen init is slower
class NormSlice:
    """The leading `channels` of a widest batch-norm: its affine parameters, and its
    running statistics as views (a training forward updates them in place)."""

    bn: nn.BatchNorm2d
    channels: int

    def __call__(self, x: Tensor, training: bool) -> Tensor:
        """Batch-norm over these channels. `momentum = None` is a cumulative average, as
        in `nn.BatchNorm2d`."""
        bn, channels = self.bn, self.channels
        assert bn.running_mean is not None and bn.running_var is not None
        momentum = bn.momentum
        if training and momentum is None:
            assert bn.num_batches_tracked is not None
            bn.num_batches_tracked.add_(1)
            momentum = 1.0 / float(bn.num_batches_tracked)
        return F.batch_norm(
            x,
            bn.running_mean[:channels],
            bn.running_var[:channels],
            lead(bn.weight, channels),
            lead(bn.bias, channels),
            training,
            0.0 if momentum is None else momentum,
            bn.eps,
        )

    def tensors(self, prefix: str) -> dict[str, Tensor]:
        """The standalone `nn.BatchNorm2d`'s state dict under `prefix`."""
        bn, channels = self.bn, self.channels
        assert bn.running_mean is not None and bn.running_var is not None
        assert bn.num_batches_tracked is not None
        return {
            f"{prefix}.weight": lead(bn.weight, channels),
            f"{prefix}.bias": lead(bn.bias, channels),
            f"{prefix}.running_mean": bn.running_mean[:channels],
            f"{prefix}.running_var": bn.running_var[:channels],
            f"{prefix}.num_batches_tracked": bn.num_batches_tracked,
        }


@dataclass(frozen=True, slots=True)
class Slices:
    """One operator's tensors for one plan, by the standalone module's names: `weights`
    maps a parameter's state-dict name ("conv_pw.weight") to its slice, `norms` a
    batch-norm's module name ("bn1") to its `NormSlice`. An absent name is a layer the
    plan does not have."""

    weights: dict[str, Tensor]
    norms: dict[str, NormSlice]

    def tensors(self, prefix: str = "") -> dict[str, Tensor]:
        """Every parameter and buffer of the standalone module, by state-dict name."""
        out = {f"{prefix}{name}": t for name, t in self.weights.items()}
        for name, norm in self.norms.items():
            out.update(norm.tensors(f"{prefix}{name}"))
        return out


class SlicedOp(Protocol):
    """A weight group of the supernet: one operator's widest weights, shared by the
    candidates of a block that use them. `slices(plan)` says which slice of which weight
    each layer of the plan's standalone block gets (by its state-dict names); `run`
    is that block's forward on those slices (reading them from `slices`), with
    `residual` the block's projected input where `plan.shortcut` (the supernet's 1x1
    projection, held by the block, whose standalone name is `shortcut_name`). The
    supernet's forward and `subnet()` need nothing else of an operator; the relaxed
    forward runs the same dataflow at the widest plan with width masks."""

    shortcut_name: ClassVar[str]

    def slices(self, p: BlockPlan) -> Slices: ...

    def run(
        self, x: Tensor, p: BlockPlan, training: bool, residual: Tensor | None = None
    ) -> Tensor: ...

    def start_near_identity(self) -> None: ...

    def residual_norm(self) -> nn.BatchNorm2d | None: ...


def centre(w: Tensor, kernel: int) -> Tensor:
    """The centre kernel x kernel taps of a [out, in, K, K] weight (a smaller kernel
    shares the largest one's centre)."""
    big = w.shape[-1]
    if kernel == big:
        return w
    lo, hi = (big - kernel) // 2, (big + kernel) // 2
    return w[:, :, lo:hi, lo:hi]


def depthwise_slice(w: Tensor, radix_max: int, channels: int, filters: int, kernel: int) -> Tensor:
    """The depthwise weight [channels * filters, 1, k, k] out of a widest one of
    `radix_max` filters per channel (filter r of channel c is row c * radix_max + r)."""
    big = w.shape[-1]
    if filters == radix_max and kernel == big:
        return lead(w, channels * filters)
    lo, hi = (big - kernel) // 2, (big + kernel) // 2
    w = w.view(-1, radix_max, big, big)[:channels, :filters, lo:hi, lo:hi]
    return w.reshape(channels * filters, 1, kernel, kernel)


class AttentionParts(nn.Module):
    """A weight group's attention add-ons `attn[se|sa2|sa4]` at the widest channels,
    their slices and their dataflow (MBConv's, fused-MBConv's and ds's attention; the
    operators without attention hold none). A plan's attention sees `plan.mid` channels
    (times its splits) and has `plan.att` hidden ones."""

    attn: nn.ModuleDict
    gate: str

    def make_attention(
        self, channels: int, group: GroupShape, attention_width: dict[str, int], gate: str
    ) -> None:
        self.gate = gate
        self.attn = nn.ModuleDict()
        for a in group.attentions:
            splits = ATTENTION_SPLITS[a]
            if splits == 1:
                self.attn[a] = SqueezeExcite(channels, attention_width[a], gate)
            elif splits >= 2:
                self.attn[a] = SplitAttention(channels, splits, attention_width[a])

    @torch.no_grad()
    def start_near_identity(self) -> None:
        """Attention add-ons start as a constant (SE) or an equal-weight sum (splits)."""
        for module in self.attn.values():
            if isinstance(module, SqueezeExcite):
                nn.init.zeros_(module.conv_expand.weight)
            elif isinstance(module, SplitAttention):
                nn.init.zeros_(module.fc2.weight)

    def _attention_layers(self, attention: str) -> tuple[nn.Conv2d, nn.Conv2d]:
        m = self.attn[attention]
        if isinstance(m, SqueezeExcite):
            return m.conv_reduce, m.conv_expand
        assert isinstance(m, SplitAttention)
        return m.fc1, m.fc2

    def attention_first(self, p: BlockPlan) -> tuple[Tensor, Tensor]:
        """Weight and bias of the attention's first layer (SE's reduce, SA's fc1)."""
        layer = self._attention_layers(p.attention)[0]
        return lead(layer.weight, p.att, p.mid), lead(layer.bias, p.att)

    def attention_second(self, p: BlockPlan) -> tuple[Tensor, Tensor]:
        """Weight and bias of its second layer (SE's expand: one per channel; SA's fc2:
        one per (channel, split))."""
        layer = self._attention_layers(p.attention)[1]
        rows = p.mid * radix(p.splits)
        return lead(layer.weight, rows, p.att), lead(layer.bias, rows)

    def attention_slices(self, p: BlockPlan) -> dict[str, Tensor]:
        """The standalone attention module's tensors (under `attn.`), none without one."""
        w: dict[str, Tensor] = {}
        if p.splits >= 1:
            first, second = ("conv_reduce", "conv_expand") if p.splits == 1 else ("fc1", "fc2")
            w[f"attn.{first}.weight"], w[f"attn.{first}.bias"] = self.attention_first(p)
            w[f"attn.{second}.weight"], w[f"attn.{second}.bias"] = self.attention_second(p)
        return w

    def attend(self, x: Tensor, p: BlockPlan, hidden_mask: Tensor | None = None) -> Tensor:
        """The plan's attention on `x` (`p.mid` channels, times the splits for
        split-attention, which sums them); `hidden_mask` weighs its bottleneck channels
        (leading entries) after its first layer (the relaxed forward)."""
        splits = p.splits
        if splits == 1:
            g = x.mean((2, 3), keepdim=True)
            g = activation_fn(p.se_act)(F.conv2d(g, *self.attention_first(p)))
            if hidden_mask is not None:
                g = scale_channels(g, hidden_mask[: g.shape[1]])
            g = F.conv2d(g, *self.attention_second(p))
            x = x * gate_fn(self.gate)(g)
        elif splits >= 2:
            x5 = torch.unflatten(x, 1, (p.mid, splits))
            gap = x5.sum(2).mean((2, 3), keepdim=True)
            a = F.relu(F.conv2d(gap, *self.attention_first(p)))
            if hidden_mask is not None:
                a = scale_channels(a, hidden_mask[: a.shape[1]])
            a = F.conv2d(a, *self.attention_second(p))
            x = (x5 * torch.unflatten(a, 1, (p.mid, splits)).softmax(2)).sum(2)
        return x


def scale_channels(x: Tensor, scale: Tensor) -> Tensor:
    """x [B, C, H, W] times one factor per channel (the relaxed forward's width masks)."""
    return x * scale.to(x.dtype)[None, :, None, None]


# ----------------------------------------------------------------------------------
# Fixed-layout layers whose input or output width an architecture may narrow.


def conv_bn_act_slices(m: ConvBnAct, cin: int, cout: int) -> Slices:
    """A `ConvBnAct` at `cin` inputs and `cout` outputs (its names: conv, bn)."""
    return Slices({"conv.weight": lead(m.conv.weight, cout, cin)}, {"bn": NormSlice(m.bn, cout)})


def conv_bn_act(
    x: Tensor, m: ConvBnAct, cin: int, cout: int, training: bool, *, workaround: bool = True
) -> Tensor:
    """`ConvBnAct.forward` on the leading `cin` inputs and `cout` outputs.

    `workaround=False` runs a strided 1x1 convolution as `F.conv2d` does rather than as
    `blocks.conv2d` does on the CPU (the relaxed forward's projection always has; the two
    differ in the last bits)."""
    s = conv_bn_act_slices(m, cin, cout)
    conv, weight = m.conv, s.weights["conv.weight"]
    if workaround:
        x = conv2d(x, weight, conv.stride[0], conv.padding[0])  # type: ignore[arg-type]
    else:
        x = F.conv2d(x, weight, None, conv.stride, conv.padding)
    return m.act(s.norms["bn"](x, training))  # type: ignore[no-any-return]


def linear_slices(layer: nn.Linear, cin: int) -> Slices:
    """A `nn.Linear` on its leading `cin` inputs."""
    return Slices({"weight": lead(layer.weight, layer.out_features, cin), "bias": layer.bias}, {})
