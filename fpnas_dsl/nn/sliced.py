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
from typing import Protocol

import torch.nn.functional as F
from torch import Tensor, nn

from fpnas_dsl.nn.blocks import ConvBnAct, conv2d

__all__ = [
    "BlockPlan",
    "NormSlice",
    "SlicedOp",
    "Slices",
    "conv_bn_act",
    "conv_bn_act_slices",
    "lead",
    "linear_slices",
    "scale_channels",
]


@dataclass(frozen=True)
class BlockPlan:
    """One block of one architecture: which weight group and which widths."""

    kind: str  # "mbconv", "identity" or "project"
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
    #: The projection is added to the MBConv's output (`skip where shapes differ: shortcut`).
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
    is that block's forward on those slices (reading them from `slices`). The supernet's
    forward and `subnet()` need nothing else of an operator; the relaxed forward runs
    its stages at the widest plan with width masks (`SharedMBConv.expand`, `.body`)."""

    def slices(self, p: BlockPlan) -> Slices: ...

    def run(self, x: Tensor, p: BlockPlan, training: bool) -> Tensor: ...


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
