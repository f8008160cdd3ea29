"""The relaxed (DNAS, FBNetV2-style) forward of a `Supernet`: every candidate at once.

`RelaxedSupernet(supernet)(x, weights)` runs the supernet's own parameters (nothing is
copied or added, so checkpoints, `subnet()` and export are unchanged) on a mixture of all
architectures, where `weights` maps each search variable `(decision, slot)` to a weight
vector over its choices (Gumbel-softmax samples in the search, one-hot for one
architecture). Per block:

- every (kernel, attention, activation) candidate is computed on the widest tensors and
  the outputs are summed with weight w_kernel * w_attention * w_act (skip is one more
  candidate: the identity, or the 1x1 projection where the shape changes);
- channel and expansion choices are FBNetV2's masks over the widest tensor: the mask of
  a width is sum_c w_c [channel < c], applied after each batch-norm and activation. The
  expanded width (and the SE / split-attention bottleneck) depends on the input and
  output channels and the expansion together, so their masks weigh every combination
  with the product of its variables' weights (`joint`); a variable that two axes share
  (a row's channels that are also the next block's input) counts once;
- the residual is added with the probability that the block keeps its shape.

Each candidate runs the sliced MBConv dataflow the supernet runs (`SharedMBConv.expand`
and `.body` in `nn.sliced_mbconv`) on the slices of its plan at the widest, the masks
passed in where the channels they weigh are formed. The other row operators
(`nn.sliced_ops`) run their one `run` the same way, with one more candidate axis: the
expansion (its inner width's mask is that of the block's input and output channels at
that expansion), and for ResNet's blocks the mixed shortcut (identity where the shape is
kept, projection where not) added before their last activation. With one-hot weights this is the
supernet's forward of that architecture (up to float rounding): the masked channels are
exactly zero and the leading ones see the same weights.
A step costs the full width times every candidate: the memory and time FP-NAS avoids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from fpnas_dsl.ir import (
    ATTENTION_SPLITS,
    RESNET_OPERATORS,
    SKIP_KERNEL,
    BlockSpec,
    Slot,
    Space,
    mid_channels,
)
from fpnas_dsl.nn.blocks import SplitAttention, SqueezeExcite, activation_fn
from fpnas_dsl.nn.sliced import AttentionParts, BlockPlan, conv_bn_act, scale_channels
from fpnas_dsl.nn.sliced_mbconv import SharedMBConv
from fpnas_dsl.nn.sliced_ops import (
    SharedBasic,
    SharedBottleneck,
    SharedConv,
    SharedDepthwiseSeparable,
    SharedFusedMBConv,
)
from fpnas_dsl.nn.supernet import SuperBlock, Supernet

__all__ = [
    "Masks",
    "RelaxedSupernet",
    "VarId",
    "Weights",
    "joint",
    "one_hot_weights",
    "variables_of",
]

#: A search variable: (decision, slot).
VarId = tuple[int, int]
#: Per variable, a weight vector over its choices.
Weights = dict[VarId, Tensor]


def _var(slot: Slot) -> VarId | None:
    return None if slot.decision is None or slot.slot is None else (slot.decision, slot.slot)


def variables_of(space: Space) -> list[tuple[VarId, int]]:
    """Every search variable with its cardinality, decision by decision, slot by slot:
    the order of a factorized distribution's logits."""
    return [
        ((d, v), card)
        for d, dec in enumerate(space.layout.decisions)
        for v, card in enumerate(dec.cardinalities)
    ]


def one_hot_weights(space: Space, idx: Sequence[Sequence[int]] | Tensor) -> Weights:
    """The weights that select architecture `idx` (choice indices [D, V])."""
    rows = idx.tolist() if isinstance(idx, Tensor) else [list(r) for r in idx]
    out: Weights = {}
    for (d, v), card in variables_of(space):
        w = torch.zeros(card)
        w[int(rows[d][v])] = 1.0
        out[(d, v)] = w
    return out


def joint(weights: Weights, variables: Sequence[VarId | None], shape: Sequence[int]) -> Tensor:
    """The weight of every combination of a few axes: the product of their variables'
    weights, a variable read by two axes counted once (its diagonal), a fixed axis 1."""
    ref = next(iter(weights.values())) if weights else torch.ones(())
    out = torch.ones([1] * len(shape), dtype=ref.dtype, device=ref.device)
    first: dict[VarId, int] = {}
    for axis, variable in enumerate(variables):
        if variable is None:
            continue
        view = [1] * len(shape)
        if variable in first:
            other = first[variable]
            view[other] = view[axis] = shape[axis]
            eye = torch.eye(shape[axis], dtype=ref.dtype, device=ref.device)
            out = out * eye.reshape(view)
        else:
            first[variable] = axis
            view[axis] = shape[axis]
            out = out * weights[variable].reshape(view)
    return out


def _widths(values: Sequence[int], width: int) -> Tensor:
    """[len(values), width]: row i is 1 on the leading values[i] channels."""
    return (torch.arange(width)[None, :] < torch.tensor(values)[:, None]).float()


@dataclass
class _BlockTables:
    """What a block's masks and candidate weights are computed from."""

    #: Variables of the (in, channels, expansion) axes and their sizes.
    axes: tuple[VarId | None, VarId | None, VarId | None]
    shape: tuple[int, int, int]
    kernel: VarId | None
    attention: VarId | None
    act: VarId | None
    kernels: tuple[int, ...]
    attentions: tuple[str, ...]
    acts: tuple[str, ...]
    #: The activation inside squeeze-excite, per block activation.
    se_acts: tuple[str, ...]
    #: [in, out, exp, mid_max]: the expanded width of each combination; `_expanded`
    #: only where the expansion is not 1 (where the 1x1 expansion runs).
    mid: Tensor
    mid_expanded: Tensor
    #: [exp]: expansion 1 (the input feeds the depthwise convolution directly).
    unexpanded: Tensor
    #: [out, out_max] width masks of the output channels.
    out: Tensor
    #: [in, out]: the block keeps its shape (stride 1, same channels).
    same: Tensor
    #: attention -> [in, out, exp, bottleneck]: the SE / split-attention hidden width.
    bottleneck: dict[str, Tensor]
    in_max: int
    mid_max: int
    out_max: int

    def to(self, device: torch.device) -> _BlockTables:
        for name in ("mid", "mid_expanded", "unexpanded", "out", "same"):
            setattr(self, name, getattr(self, name).to(device))
        self.bottleneck = {k: v.to(device) for k, v in self.bottleneck.items()}
        return self


def _tables(space: Space, spec: BlockSpec, block: SuperBlock) -> _BlockTables:
    micro = spec.micro
    ins = [int(c) for c in spec.in_channels.choices]
    outs = [int(c) for c in spec.var("channels").choices]
    exps = [float(e) for e in spec.var("expansion").choices]
    groups = [g for g in block.ops.values() if isinstance(g, SharedMBConv)]
    in_max, out_max = max(ins), max(outs)
    mid_max = max((g.conv_dw.in_channels for g in groups), default=in_max)
    n = (len(ins), len(outs), len(exps))
    mid = torch.zeros(*n, mid_max)
    mid_expanded = torch.zeros(*n, mid_max)
    attentions = tuple(str(a) for a in spec.var("attention").choices)
    widths = {a: 0 for a in attentions if ATTENTION_SPLITS[a] >= 1}
    for g in groups:
        for a, m in g.attn.items():
            width = m.conv_reduce.out_channels if isinstance(m, SqueezeExcite) else None
            if isinstance(m, SplitAttention):
                width = m.fc1.out_channels
            widths[a] = max(widths.get(a, 0), int(width or 0))
    bottleneck = {a: torch.zeros(*n, w) for a, w in widths.items()}
    for i, cin in enumerate(ins):
        for j, cout in enumerate(outs):
            for k, e in enumerate(exps):
                width = mid_channels(space, micro, cin, cout, e)
                mid[i, j, k, :width] = 1
                if e != 1:
                    mid_expanded[i, j, k, :width] = 1
                for a, table in bottleneck.items():
                    splits = ATTENTION_SPLITS[a]
                    if splits == 1:
                        att = micro.se_channels(cin, width)
                    else:
                        att = max(int(width * splits * micro.sa_ratio), micro.sa_min_width)
                    table[i, j, k, :att] = 1
    same = torch.tensor(
        [[float(spec.stride == 1 and ci == co) for co in outs] for ci in ins], dtype=torch.float32
    )
    return _BlockTables(
        axes=(_var(spec.in_channels), _var(spec.var("channels")), _var(spec.var("expansion"))),
        shape=n,
        kernel=_var(spec.var("kernel")),
        attention=_var(spec.var("attention")),
        act=_var(spec.var("act")),
        kernels=tuple(int(str(k)) for k in spec.var("kernel").choices),
        attentions=attentions,
        acts=tuple(str(a) for a in spec.var("act").choices),
        se_acts=tuple(micro.se_act_for(str(a)) for a in spec.var("act").choices),
        mid=mid,
        mid_expanded=mid_expanded,
        unexpanded=torch.tensor([float(e == 1) for e in exps]),
        out=_widths(outs, out_max),
        same=same,
        bottleneck=bottleneck,
        in_max=in_max,
        mid_max=mid_max,
        out_max=out_max,
    )


def _fit(x: Tensor, channels: int) -> Tensor:
    """x with `channels` channels: cut, or zero-padded (the masked widest tensors)."""
    have = x.shape[1]
    if have == channels:
        return x
    if have > channels:
        return x[:, :channels]
    return F.pad(x, (0, 0, 0, 0, 0, channels - have))


class RelaxedSupernet:
    """The DNAS forward over a `Supernet`'s parameters (see the module docstring)."""

    def __init__(self, supernet: Supernet) -> None:
        self.supernet = supernet
        space = supernet.space
        self._tables: list[_BlockTables | _OpTables] = [
            _tables(space, spec, block)  # type: ignore[arg-type]
            if spec.op == "mbconv"
            else _op_tables(space, spec, block)  # type: ignore[arg-type]
            for spec, block in zip(space.blocks, supernet.blocks, strict=True)
        ]
        self._device: torch.device | None = None

    def masks(self, block: int, weights: Weights) -> Masks:
        """The masks and candidate weights of MBConv block `block` under `weights`."""
        tables = self._tables[block]
        assert isinstance(tables, _BlockTables), "masks are read for MBConv blocks"
        return _masks(tables, weights, tables.mid.device)

    def __call__(self, x: Tensor, weights: Weights) -> Tensor:
        net = self.supernet
        if self._device != x.device:
            self._tables = [t.to(x.device) for t in self._tables]
            self._device = x.device
        training = net.training
        x = net.stem(x)
        for i, tables in enumerate(self._tables):
            block: SuperBlock = net.blocks[i]  # type: ignore[assignment]
            if isinstance(tables, _OpTables):
                x = _op_block(x, block, tables, weights, training)
            else:
                x = self._block(x, block, tables, weights, training)
        return net.forward_head(x, x.shape[1])

    def _block(
        self,
        x: Tensor,
        block: SuperBlock,
        t: _BlockTables,
        weights: Weights,
        training: bool,
    ) -> Tensor:
        m = _masks(t, weights, x.device)
        m_mid, m_expanded, p_unexpanded = m.mid, m.expanded, m.unexpanded
        m_out, p_same, m_att = m.out, m.same, m.bottleneck
        w_kernel, w_att, w_act = m.kernel, m.attention, m.act

        mixed: Tensor | None = None
        for group_name, group in block.ops.items():
            op: SharedMBConv = group  # type: ignore[assignment]
            members = [
                (ki, ai)
                for ki, k in enumerate(t.kernels)
                for ai, a in enumerate(t.attentions)
                if k != SKIP_KERNEL and block.group_of[(k, a)] == group_name
            ]
            assert members, group_name
            pre = None
            if op.conv_pw is not None:
                first = _widest(
                    t, group_name, op, t.kernels[members[0][0]], t.attentions[members[0][1]], 0
                )
                pre = op.expand(x, first, training)
            x_mid = _fit(x, t.mid_max) if bool(t.unexpanded.any()) else None
            for fi, act_name in enumerate(t.acts):
                act = activation_fn(act_name)
                h: Tensor | None = None
                if pre is not None:
                    h = scale_channels(act(pre), m_expanded)
                if x_mid is not None:
                    h = x_mid * p_unexpanded if h is None else h + x_mid * p_unexpanded
                assert h is not None
                for ki, ai in members:
                    attention = t.attentions[ai]
                    p = _widest(t, group_name, op, t.kernels[ki], attention, fi)
                    z = op.body(h, p, training, m_mid, m_att.get(attention))
                    z = z * (w_kernel[ki] * w_att[ai] * w_act[fi])
                    mixed = z if mixed is None else mixed + z
        always = self.supernet.space.skip_mismatch == "shortcut"
        if block.skip is not None and (always or SKIP_KERNEL in t.kernels):
            # The projection that skip becomes where the shape changes; under `shortcut`
            # every candidate keeps it (an MBConv adds it, skip is it alone).
            y = conv_bn_act(x, block.skip, t.in_max, t.out_max, training, workaround=False)
            kept = 1 - p_same if always else w_kernel[t.kernels.index(SKIP_KERNEL)] * (1 - p_same)
            y = y * kept
            mixed = y if mixed is None else mixed + y
        out = None if mixed is None else scale_channels(mixed, m_out)
        if bool(t.same.any()):
            shortcut = _fit(x, t.out_max) * p_same
            out = shortcut if out is None else out + shortcut
        assert out is not None
        return out


@dataclass
class Masks:
    """A block's width masks and candidate weights under given variable weights."""

    #: Expanded (depthwise) width; `expanded`: only where the 1x1 expansion runs.
    mid: Tensor
    expanded: Tensor
    #: Weight of expansion 1 (the input goes straight to the depthwise convolution).
    unexpanded: Tensor
    #: Output channels.
    out: Tensor
    #: Weight of keeping the shape (the residual).
    same: Tensor
    #: attention -> its bottleneck width.
    bottleneck: dict[str, Tensor]
    kernel: Tensor
    attention: Tensor
    act: Tensor


def _masks(t: _BlockTables, weights: Weights, device: torch.device) -> Masks:
    def w(variable: VarId | None, size: int) -> Tensor:
        if variable is None:
            return torch.ones(size, device=device)
        return weights[variable].to(device, torch.float32)

    given = {v: w(v, n) for v, n in zip(t.axes, t.shape, strict=True) if v is not None}
    combos = joint(given, t.axes, t.shape).to(device, torch.float32)
    return Masks(
        mid=torch.einsum("ijk,ijkc->c", combos, t.mid),
        expanded=torch.einsum("ijk,ijkc->c", combos, t.mid_expanded),
        unexpanded=(combos * t.unexpanded).sum(),
        out=w(t.axes[1], t.shape[1]) @ t.out,
        same=(combos.sum(2) * t.same).sum(),
        bottleneck={a: torch.einsum("ijk,ijkc->c", combos, b) for a, b in t.bottleneck.items()},
        kernel=w(t.kernel, len(t.kernels)),
        attention=w(t.attention, len(t.attentions)),
        act=w(t.act, len(t.acts)),
    )


def _widest(
    t: _BlockTables, group: str, op: SharedMBConv, kernel: int, attention: str, act_index: int
) -> BlockPlan:
    """The plan of one (kernel, attention, activation) candidate on every channel of the
    block (its masks then weigh the widths)."""
    splits = ATTENTION_SPLITS[attention]
    att = 0
    module = op.attn[attention] if splits >= 1 else None
    if isinstance(module, SqueezeExcite):
        att = module.conv_reduce.out_channels
    elif isinstance(module, SplitAttention):
        att = module.fc1.out_channels
    return BlockPlan(
        "mbconv",
        group,
        t.in_max,
        t.mid_max,
        t.out_max,
        att,
        splits,
        t.acts[act_index],
        op.conv_pw is not None,
        False,
        kernel,
        attention,
        t.se_acts[act_index],
    )


# ----------------------------------------------------------------------------------
# The row operators beyond MBConv (`nn.sliced_ops`).

_OpGroup = (
    SharedFusedMBConv | SharedDepthwiseSeparable | SharedConv | SharedBasic | SharedBottleneck
)


@dataclass
class _OpTables:
    """What an operator block's masks and candidate weights are computed from."""

    op: str
    #: Variables of the (in, channels) axes, and their sizes.
    axes: tuple[VarId | None, VarId | None]
    shape: tuple[int, int]
    expansion: VarId | None
    kernel: VarId | None
    attention: VarId | None
    act: VarId | None
    expansions: tuple[float, ...]
    kernels: tuple[int, ...]
    attentions: tuple[str, ...]
    acts: tuple[str, ...]
    se_acts: tuple[str, ...]
    #: [in, out, exp, mid_max]: the inner width of each combination.
    mid: Tensor
    #: Per expansion, the widest inner width.
    mid_widest: tuple[int, ...]
    #: attention -> [in, out, exp, width]: its hidden width.
    bottleneck: dict[str, Tensor]
    out: Tensor
    same: Tensor
    in_max: int
    out_max: int

    def to(self, device: torch.device) -> _OpTables:
        for name in ("mid", "out", "same"):
            setattr(self, name, getattr(self, name).to(device))
        self.bottleneck = {k: v.to(device) for k, v in self.bottleneck.items()}
        return self


def _op_tables(space: Space, spec: BlockSpec, block: SuperBlock) -> _OpTables:
    micro, op = spec.micro, spec.op
    ins = [int(c) for c in spec.in_channels.choices]
    outs = [int(c) for c in spec.var("channels").choices]
    exps = [float(e) for e in spec.var("expansion").choices]
    attentions = tuple(str(a) for a in spec.var("attention").choices)
    in_max, out_max = max(ins), max(outs)
    widths: dict[str, list[list[list[int]]]] = {
        a: [[[0] * len(exps) for _ in outs] for _ in ins]
        for a in attentions
        if ATTENTION_SPLITS[a] >= 1
    }
    mids = [[[mid_channels(space, micro, i, o, e, op) for e in exps] for o in outs] for i in ins]
    for i, cin in enumerate(ins):
        for j in range(len(outs)):
            for k in range(len(exps)):
                width = mids[i][j][k]
                for a, table in widths.items():
                    splits = ATTENTION_SPLITS[a]
                    if splits == 1:
                        table[i][j][k] = micro.se_channels(cin, width)
                    else:
                        sa = int(width * splits * micro.sa_ratio)
                        table[i][j][k] = max(sa, micro.sa_min_width)
    mid_max = max(m for a in mids for b in a for m in b)

    def thermometer(values: list[list[list[int]]]) -> Tensor:
        v = torch.tensor(values)
        width = int(v.max())
        return (torch.arange(width) < v[..., None]).float()

    return _OpTables(
        op=op,
        axes=(_var(spec.in_channels), _var(spec.var("channels"))),
        shape=(len(ins), len(outs)),
        expansion=_var(spec.var("expansion")),
        kernel=_var(spec.var("kernel")),
        attention=_var(spec.var("attention")),
        act=_var(spec.var("act")),
        expansions=tuple(exps),
        kernels=tuple(int(str(k)) for k in spec.var("kernel").choices),
        attentions=attentions,
        acts=tuple(str(a) for a in spec.var("act").choices),
        se_acts=tuple(micro.se_act_for(str(a)) for a in spec.var("act").choices),
        mid=_fit_last(thermometer(mids), mid_max),
        mid_widest=tuple(max(m[k] for row in mids for m in row) for k in range(len(exps))),
        bottleneck={a: thermometer(v) for a, v in widths.items()},
        out=_widths(outs, out_max),
        same=torch.tensor([[float(spec.stride == 1 and ci == co) for co in outs] for ci in ins]),
        in_max=in_max,
        out_max=out_max,
    )


def _fit_last(t: Tensor, width: int) -> Tensor:
    return t if t.shape[-1] == width else F.pad(t, (0, width - t.shape[-1]))


def _attention_width(group: AttentionParts, attention: str) -> int:
    if attention not in group.attn:
        return 0
    module = group.attn[attention]
    if isinstance(module, SqueezeExcite):
        return module.conv_reduce.out_channels
    if isinstance(module, SplitAttention):
        return module.fc1.out_channels
    return 0


def _op_block(
    x: Tensor, block: SuperBlock, t: _OpTables, weights: Weights, training: bool
) -> Tensor:
    """One operator block's mixture: every (kernel, attention, act, expansion) candidate
    at the widest, weighed by the product of its choices' weights, its widths masked;
    skip and the residuals as the operator has them (see the module docstring)."""
    device = x.device

    def w(variable: VarId | None, size: int) -> Tensor:
        if variable is None:
            return torch.ones(size, device=device)
        return weights[variable].to(device, torch.float32)

    given = {v: w(v, n) for v, n in zip(t.axes, t.shape, strict=True) if v is not None}
    combos = joint(given, t.axes, t.shape).to(device, torch.float32)
    m_out = w(t.axes[1], t.shape[1]) @ t.out
    p_same = (combos * t.same).sum()
    m_mid = torch.einsum("ij,ijkc->kc", combos, t.mid)
    m_att = {a: torch.einsum("ij,ijkc->kc", combos, b) for a, b in t.bottleneck.items()}
    w_exp, w_kernel = w(t.expansion, len(t.expansions)), w(t.kernel, len(t.kernels))
    w_att, w_act = w(t.attention, len(t.attentions)), w(t.act, len(t.acts))

    ident = _fit(x, t.out_max) * p_same if bool(t.same.any()) else None
    proj = None
    if block.skip is not None:
        proj = conv_bn_act(x, block.skip, t.in_max, t.out_max, training) * (1 - p_same)
    parts = [r for r in (ident, proj) if r is not None]
    residual = sum(parts[1:], parts[0]) if parts else None
    resnet = t.op in RESNET_OPERATORS

    mixed: Tensor | None = None
    for ki, kernel in enumerate(t.kernels):
        if kernel == SKIP_KERNEL:
            continue
        for ai, attention in enumerate(t.attentions):
            group_name = block.group_of[(kernel, attention)]
            group: _OpGroup = block.ops[group_name]  # type: ignore[assignment]
            for fi, act in enumerate(t.acts):
                for ei, expansion in enumerate(t.expansions):
                    p = BlockPlan(
                        t.op,
                        group_name,
                        t.in_max,
                        t.mid_widest[ei],
                        t.out_max,
                        _attention_width(group, attention),
                        ATTENTION_SPLITS[attention],
                        act,
                        expansion != 1,
                        False,
                        kernel,
                        attention,
                        t.se_acts[fi],
                    )
                    hidden = m_att[attention][ei] if attention in m_att else None
                    z = group.run(x, p, training, residual if resnet else None, m_mid[ei], hidden)
                    z = z * (w_kernel[ki] * w_att[ai] * w_act[fi] * w_exp[ei])
                    mixed = z if mixed is None else mixed + z
    w_skip = w_kernel[t.kernels.index(SKIP_KERNEL)] if SKIP_KERNEL in t.kernels else None
    if proj is not None and w_skip is not None:
        y = proj * w_skip
        mixed = y if mixed is None else mixed + y
    out = None if mixed is None else scale_channels(mixed, m_out)
    if ident is not None:
        # fused and ds add their input where the shape is kept, as skip is; conv and
        # ResNet's blocks have it only as skip (ResNet's candidates added it inside).
        kept = ident if t.op in ("fused", "ds") else ident * w_skip if w_skip is not None else None
        if kept is not None:
            out = kept if out is None else out + kept
    assert out is not None
    return out
