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

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fpnas_dsl.footprint import GroupShape, radix
from fpnas_dsl.ir import ATTENTION_SPLITS
from fpnas_dsl.nn.blocks import SplitAttention, SqueezeExcite, activation_fn, gate_fn
from fpnas_dsl.nn.sliced import BlockPlan, NormSlice, Slices, lead, scale_channels

__all__ = ["SharedMBConv"]


class SharedMBConv(nn.Module):
    """The weights of one or more (kernel, attention) candidates of an MBConv block, at
    their widest: `conv_pw`, `bn1`, one depthwise `conv_dw` at the largest kernel with the
    most filters per channel, `bn2[r{R}]` per number of filters per channel, the attention
    add-ons `attn[se|sa2|sa4]`, `conv_pwl`, `bn3`."""

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
        self.gate = gate
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
        self.attn = nn.ModuleDict()
        for a in group.attentions:
            splits = ATTENTION_SPLITS[a]
            if splits == 1:
                self.attn[a] = SqueezeExcite(mid_max, attention_width[a], gate)
            elif splits >= 2:
                self.attn[a] = SplitAttention(mid_max, splits, attention_width[a])
        self.conv_pwl = nn.Conv2d(mid_max, out_max, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_max)

    def depthwise(self, mid: int, splits: int, kernel: int) -> Tensor:
        """The depthwise weight [mid * R, 1, k, k] of `mid` channels, R filters each."""
        w = self.conv_dw.weight
        filters = radix(splits)
        if filters == self.radix_max and kernel == self.kernel:
            return lead(w, mid * filters)
        big = self.kernel
        lo, hi = (big - kernel) // 2, (big + kernel) // 2
        w = w.view(-1, self.radix_max, big, big)[:mid, :filters, lo:hi, lo:hi]
        return w.reshape(mid * filters, 1, kernel, kernel)

    @torch.no_grad()
    def start_near_identity(self) -> None:
        """Attention add-ons start as a constant (SE) or an equal-weight sum (splits)."""
        for module in self.attn.values():
            if isinstance(module, SqueezeExcite):
                nn.init.zeros_(module.conv_expand.weight)
            elif isinstance(module, SplitAttention):
                nn.init.zeros_(module.fc2.weight)

    # ------------------------------------------------------------------ slices

    def slices(self, p: BlockPlan) -> Slices:
        """The slices of this group that the standalone `MBConv` of plan `p` is made of,
        by its state-dict names (the one place that says which)."""
        w: dict[str, Tensor] = {}
        norms: dict[str, NormSlice] = {}
        if p.expand:
            assert self.conv_pw is not None and self.bn1 is not None
            w["conv_pw.weight"] = lead(self.conv_pw.weight, p.mid, p.cin)
            norms["bn1"] = NormSlice(self.bn1, p.mid)
        filters = radix(p.splits)
        w["conv_dw.weight"] = self.depthwise(p.mid, p.splits, p.kernel)
        norms["bn2"] = NormSlice(self.bn2[f"r{filters}"], p.mid * filters)  # type: ignore[arg-type]
        if p.splits == 1:
            se: SqueezeExcite = self.attn[p.attention]  # type: ignore[assignment]
            w["attn.conv_reduce.weight"] = lead(se.conv_reduce.weight, p.att, p.mid)
            w["attn.conv_reduce.bias"] = lead(se.conv_reduce.bias, p.att)
            w["attn.conv_expand.weight"] = lead(se.conv_expand.weight, p.mid, p.att)
            w["attn.conv_expand.bias"] = lead(se.conv_expand.bias, p.mid)
        elif p.splits >= 2:
            sa: SplitAttention = self.attn[p.attention]  # type: ignore[assignment]
            w["attn.fc1.weight"] = lead(sa.fc1.weight, p.att, p.mid)
            w["attn.fc1.bias"] = lead(sa.fc1.bias, p.att)
            w["attn.fc2.weight"] = lead(sa.fc2.weight, p.mid * p.splits, p.att)
            w["attn.fc2.bias"] = lead(sa.fc2.bias, p.mid * p.splits)
        w["conv_pwl.weight"] = lead(self.conv_pwl.weight, p.cout, p.mid)
        norms["bn3"] = NormSlice(self.bn3, p.cout)
        return Slices(w, norms)

    def standalone_tensors(self, p: BlockPlan) -> dict[str, Tensor]:
        """The tensors of the standalone `MBConv` of plan `p`, by its state-dict names,
        as (views of) this group's: what `subnet()` copies out."""
        return self.slices(p).tensors()

    # ------------------------------------------------------------------ dataflow

    def run(self, x: Tensor, p: BlockPlan, training: bool) -> Tensor:
        """`MBConv.forward` of plan `p` on the leading channels of this group."""
        s = self.slices(p)
        shortcut = x
        if p.expand:
            x = activation_fn(p.act)(self.expand(x, s, training))
        x = self.body(x, s, p, training)
        if p.residual:
            x = x + shortcut
        return x

    @staticmethod
    def expand(x: Tensor, s: Slices, training: bool) -> Tensor:
        """The 1x1 expansion and its batch-norm, before the activation."""
        return s.norms["bn1"](F.conv2d(x, s.weights["conv_pw.weight"]), training)

    def body(
        self,
        x: Tensor,
        s: Slices,
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
        mid, splits, w = p.mid, p.splits, s.weights
        filters = radix(splits)
        x = F.conv2d(x, w["conv_dw.weight"], None, self.stride, p.kernel // 2, 1, mid)
        x = act(s.norms["bn2"](x, training))
        if mid_mask is not None:
            x = scale_channels(x, mid_mask.repeat_interleave(filters) if filters > 1 else mid_mask)
        if splits == 1:
            g = x.mean((2, 3), keepdim=True)
            g = activation_fn(p.se_act)(
                F.conv2d(g, w["attn.conv_reduce.weight"], w["attn.conv_reduce.bias"])
            )
            if hidden_mask is not None:
                g = scale_channels(g, hidden_mask[: g.shape[1]])
            g = F.conv2d(g, w["attn.conv_expand.weight"], w["attn.conv_expand.bias"])
            x = x * gate_fn(self.gate)(g)
        elif splits >= 2:
            x5 = torch.unflatten(x, 1, (mid, splits))
            gap = x5.sum(2).mean((2, 3), keepdim=True)
            a = F.relu(F.conv2d(gap, w["attn.fc1.weight"], w["attn.fc1.bias"]))
            if hidden_mask is not None:
                a = scale_channels(a, hidden_mask[: a.shape[1]])
            a = F.conv2d(a, w["attn.fc2.weight"], w["attn.fc2.bias"])
            x = (x5 * torch.unflatten(a, 1, (mid, splits)).softmax(2)).sum(2)
        return s.norms["bn3"](F.conv2d(x, w["conv_pwl.weight"]), training)
