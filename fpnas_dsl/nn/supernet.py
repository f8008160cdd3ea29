"""The single-path weight-sharing supernet: `Supernet(space)`.

It holds the weights of every choice once and runs one architecture per forward:

- **channels and expansion** share weights by slicing: every candidate is held at its
  widest (largest input, expanded and output channels any architecture gives it) and an
  architecture uses the leading `[:out, :in]` block of each tensor, passed straight to
  `F.conv2d` / `F.batch_norm` / `F.linear`. Nothing is masked, so a step costs what the
  chosen widths cost, not the widest;
- **kernel sizes and attention variants** do not share: each (kernel, attention) pair of
  a block is its own MBConv (as FBNetV2's candidate blocks; the paper does not share the
  MBConv weights between numbers of splits), and the projection used by `skip` where the
  shape changes is one more candidate. Activations have no weights and share everything;
- **batch-norm** keeps running statistics per channel of the widest candidate; a forward
  in training mode updates only the leading channels it uses (`F.batch_norm` on slices
  of the running buffers, which are views).

Each candidate is a real `MBConv` / `ConvBnAct` built at its widest, so the state-dict
reads like the standalone network's (`blocks.3.ops.k5_sa2.conv_dw.weight`), and
`subnet(arch)` is `build_network(space, arch)` with every tensor copied out as the
leading slice of the supernet's: the same function as the supernet on that architecture.

The forward is a precomputed plan per architecture (cached): for each block, the
candidate and the widths, found from per-block slot lookups without building any
readable architecture; the loop then calls one function per block.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fpnas_dsl.cost import cost_model
from fpnas_dsl.ir import (
    ATTENTION_SPLITS,
    SKIP_KERNEL,
    Architecture,
    BlockSpec,
    Slot,
    Space,
    encode,
    make_divisible,
    mid_channels,
    shapes_can_differ,
)
from fpnas_dsl.nn.blocks import (
    ConvBnAct,
    MBConv,
    SplitAttention,
    SqueezeExcite,
    activation_fn,
    gate_fn,
    init_weights,
)
from fpnas_dsl.nn.network import Network, build_network, make_classifier

__all__ = ["Supernet", "candidate_name"]

_PLAN_CACHE = 256


def candidate_name(kernel: int, attention: str) -> str:
    """Key of a block's candidate in `SuperBlock.ops` (`k3_none`, `k5_sa4`, ...)."""
    return f"k{kernel}_{attention}"


def _lead(t: Tensor | None, rows: int, cols: int | None = None) -> Tensor:
    """The leading [:rows, :cols] block of a weight; the tensor itself when that is all of
    it (a full slice would still cost a zero-filled gradient copy in backward)."""
    assert t is not None
    if cols is None or cols == t.shape[1]:
        return t if rows == t.shape[0] else t[:rows]
    return t[:, :cols] if rows == t.shape[0] else t[:rows, :cols]


def _bn(x: Tensor, bn: nn.BatchNorm2d, channels: int, training: bool) -> Tensor:
    """Batch-norm over the leading `channels` of a widest batch-norm (stats updated in place)."""
    assert bn.running_mean is not None and bn.running_var is not None
    return F.batch_norm(
        x,
        bn.running_mean[:channels],
        bn.running_var[:channels],
        _lead(bn.weight, channels),
        _lead(bn.bias, channels),
        training,
        0.1 if bn.momentum is None else bn.momentum,
        bn.eps,
    )


# ----------------------------------------------------------------------------------
# Per-block candidates and their sliced forwards.


class SuperBlock(nn.Module):
    """All candidates of one block: `ops[k{kernel}_{attention}]` and the skip projection."""

    def __init__(self, space: Space, spec: BlockSpec) -> None:
        super().__init__()
        micro = spec.micro
        ins = [int(c) for c in spec.in_channels.choices]
        outs = [int(c) for c in spec.var("channels").choices]
        exps = [float(e) for e in spec.var("expansion").choices]
        in_max, out_max = max(ins), max(outs)
        mids = {
            (i, o, e): mid_channels(space, micro, i, o, e)
            for i, o, e in itertools.product(ins, outs, exps)
        }
        mid_max = max(mids.values())
        expand = any(e != 1 for e in exps)
        self.ops = nn.ModuleDict()
        for kernel in spec.var("kernel").choices:
            if kernel == SKIP_KERNEL:
                continue
            for attention in spec.var("attention").choices:
                splits = ATTENTION_SPLITS[str(attention)]
                attn: nn.Module | None = None
                if splits == 1:
                    se_max = max(
                        make_divisible(
                            (i if micro.se_relative_to == "input" else m) * micro.se_ratio,
                            micro.divisor,
                        )
                        for (i, _, _), m in mids.items()
                    )
                    attn = SqueezeExcite(mid_max, se_max, micro.gate)
                elif splits >= 2:
                    sa_max = max(
                        max(int(m * splits * micro.sa_ratio), micro.sa_min_width)
                        for m in mids.values()
                    )
                    attn = SplitAttention(mid_max, splits, sa_max)
                name = candidate_name(int(kernel), str(attention))
                self.ops[name] = MBConv(
                    in_max,
                    mid_max,
                    out_max,
                    int(kernel),
                    spec.stride,
                    "relu",
                    expand=expand,
                    attn=attn,
                    splits=max(splits, 1),
                )
        # The projection that `skip` becomes where the shape changes.
        needs_projection = (
            space.skip_mismatch == "project"
            and SKIP_KERNEL in spec.var("kernel").choices
            and shapes_can_differ(space, spec.stride, spec.in_channels, spec.var("channels"))
        )
        self.skip = ConvBnAct(in_max, out_max, 1, spec.stride) if needs_projection else None


def _run_mbconv(
    x: Tensor,
    op: MBConv,
    cin: int,
    mid: int,
    cout: int,
    att: int,
    splits: int,
    act: Callable[[Tensor], Tensor],
    gate: Callable[[Tensor], Tensor],
    expand: bool,
    residual: bool,
    training: bool,
) -> Tensor:
    """MBConv.forward on the leading channels of a widest MBConv (see `MBConv`)."""
    shortcut = x
    if expand:
        pw: nn.Conv2d = op.conv_pw  # type: ignore[assignment]
        bn1: nn.BatchNorm2d = op.bn1  # type: ignore[assignment]
        x = act(_bn(F.conv2d(x, _lead(pw.weight, mid, cin)), bn1, mid, training))
    dw = op.conv_dw
    width = mid * max(splits, 1)
    x = F.conv2d(x, _lead(dw.weight, width), None, dw.stride, dw.padding, 1, mid)
    x = act(_bn(x, op.bn2, width, training))
    if splits == 1:
        se: SqueezeExcite = op.attn  # type: ignore[assignment]
        reduce, expand_ = se.conv_reduce, se.conv_expand
        s = x.mean((2, 3), keepdim=True)
        s = F.relu(F.conv2d(s, _lead(reduce.weight, att, mid), _lead(reduce.bias, att)))
        s = F.conv2d(s, _lead(expand_.weight, mid, att), _lead(expand_.bias, mid))
        x = x * gate(s)
    elif splits >= 2:
        sa: SplitAttention = op.attn  # type: ignore[assignment]
        x = torch.unflatten(x, 1, (mid, splits))
        gap = x.sum(2).mean((2, 3), keepdim=True)
        a = F.relu(F.conv2d(gap, _lead(sa.fc1.weight, att, mid), _lead(sa.fc1.bias, att)))
        a = F.conv2d(a, _lead(sa.fc2.weight, width, att), _lead(sa.fc2.bias, width))
        x = (x * torch.unflatten(a, 1, (mid, splits)).softmax(2)).sum(2)
    x = _bn(F.conv2d(x, _lead(op.conv_pwl.weight, cout, mid)), op.bn3, cout, training)
    if residual:
        x = x + shortcut
    return x


def _run_conv_bn_act(x: Tensor, m: ConvBnAct, cin: int, cout: int, training: bool) -> Tensor:
    conv = m.conv
    x = F.conv2d(x, _lead(conv.weight, cout, cin), None, conv.stride, conv.padding)
    return m.act(_bn(x, m.bn, cout, training))  # type: ignore[no-any-return]


# ----------------------------------------------------------------------------------
# Plans: what one architecture runs.


@dataclass(frozen=True)
class BlockPlan:
    """One block of one architecture: which candidate and which widths."""

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


@dataclass(frozen=True)
class _Lookup:
    """Where each of a block's values is read: (decision, slot) or fixed, and the choices."""

    spec: BlockSpec
    reads: tuple[tuple[int, int] | None, ...]
    choices: tuple[tuple[object, ...], ...]

    @staticmethod
    def of(spec: BlockSpec) -> _Lookup:
        slots: Sequence[Slot] = (
            spec.in_channels,
            spec.var("channels"),
            spec.var("expansion"),
            spec.var("kernel"),
            spec.var("attention"),
            spec.var("act"),
        )
        reads = tuple(
            None if s.decision is None or s.slot is None else (s.decision, s.slot) for s in slots
        )
        return _Lookup(spec, reads, tuple(s.choices for s in slots))


class Supernet(nn.Module):
    """Every architecture of `space` in one module; `forward(x, arch)` runs one of them."""

    def __init__(self, space: Space, device: torch.device | str | None = None) -> None:
        """Every candidate at its widest, initialised as the standalone networks are
        (`blocks.init_weights`), on `device` (default: torch's default device)."""
        super().__init__()
        self.space = space
        with torch.device("meta"):  # no memory until the one initialisation below
            cin = space.in_channels
            stem = []
            for conv in space.stem:
                stem.append(ConvBnAct(cin, conv.out_channels, conv.kernel, conv.stride, conv.act))
                cin = conv.out_channels
            self.stem = nn.Sequential(*stem)
            self.blocks = nn.ModuleList(SuperBlock(space, spec) for spec in space.blocks)
            last = space.blocks[-1].var("channels").choices if space.blocks else (cin,)
            cin = max(int(c) for c in last)
            head = []
            for conv in space.head:
                head.append(ConvBnAct(cin, conv.out_channels, conv.kernel, conv.stride, conv.act))
                cin = conv.out_channels
            self.head = nn.Sequential(*head)
            self.classifier = make_classifier(space, cin)
        self.to_empty(device=torch.get_default_device() if device is None else device)
        init_weights(self)
        self._lookups = [_Lookup.of(spec) for spec in space.blocks]
        self._gate = {i: gate_fn(spec.micro.gate) for i, spec in enumerate(space.blocks)}
        self._plans: OrderedDict[bytes, tuple[list[BlockPlan], int]] = OrderedDict()
        self._layout_shape = (len(space.layout.decisions), space.layout.max_variables)

    # ------------------------------------------------------------------ plans

    def indices(self, arch: Architecture | npt.ArrayLike) -> npt.NDArray[np.int64]:
        """Choice indices [D, V] of an architecture given readable or as indices."""
        if isinstance(arch, Architecture):
            return encode(self.space, arch)
        if isinstance(arch, Tensor):
            arch = arch.detach().cpu().numpy()
        return np.ascontiguousarray(arch, dtype=np.int64)

    def plan(self, arch: Architecture | npt.ArrayLike) -> tuple[list[BlockPlan], int]:
        """(per-block plans, channels into the head) of one architecture; cached."""
        idx = self.indices(arch)
        if idx.shape != self._layout_shape:
            raise ValueError(
                f"choice indices must have shape {list(self._layout_shape)} for space "
                f"{self.space.name!r}, got {list(idx.shape)}"
            )
        key = idx.tobytes()
        cached = self._plans.get(key)
        if cached is not None:
            self._plans.move_to_end(key)
            return cached
        cost_model(self.space).flat_index(idx)  # range check, ValueError if outside
        rows = idx.tolist()
        plans = [self._block_plan(lookup, rows) for lookup in self._lookups]
        if plans:
            head_in = plans[-1].cout
        else:
            stem = self.space.stem
            head_in = stem[-1].out_channels if stem else self.space.in_channels
        result = (plans, head_in)
        self._plans[key] = result
        if len(self._plans) > _PLAN_CACHE:
            self._plans.popitem(last=False)
        return result

    def _block_plan(self, lookup: _Lookup, rows: list[list[int]]) -> BlockPlan:
        values = [
            choices[0] if read is None else choices[rows[read[0]][read[1]]]
            for read, choices in zip(lookup.reads, lookup.choices, strict=True)
        ]
        cin, cout = int(values[0]), int(values[1])  # type: ignore[call-overload]
        expansion = float(values[2])  # type: ignore[arg-type]
        kernel, attention, act = int(values[3]), str(values[4]), str(values[5])  # type: ignore[call-overload]
        spec = lookup.spec
        same_shape = spec.stride == 1 and cin == cout
        if kernel == SKIP_KERNEL:
            kind = "identity" if same_shape else "project"
            return BlockPlan(kind, None, cin, cin, cout, 0, 0, act, False, False)
        micro = spec.micro
        mid = mid_channels(self.space, micro, cin, cout, expansion)
        splits = ATTENTION_SPLITS[attention]
        att = 0
        if splits == 1:
            base = cin if micro.se_relative_to == "input" else mid
            att = make_divisible(base * micro.se_ratio, micro.divisor)
        elif splits >= 2:
            att = max(int(mid * splits * micro.sa_ratio), micro.sa_min_width)
        return BlockPlan(
            "mbconv",
            candidate_name(kernel, attention),
            cin,
            mid,
            cout,
            att,
            splits,
            act,
            expansion != 1,
            same_shape,
        )

    # ------------------------------------------------------------------ forward

    def forward(self, x: Tensor, arch: Architecture | npt.ArrayLike) -> Tensor:
        """Logits of architecture `arch` (choice indices [D, V] or readable) on `x`."""
        plans, head_in = self.plan(arch)
        training = self.training
        x = self.stem(x)
        for i, p in enumerate(plans):
            block: SuperBlock = self.blocks[i]  # type: ignore[assignment]
            if p.kind == "mbconv":
                op: MBConv = block.ops[p.op]  # type: ignore[index,assignment]
                x = _run_mbconv(
                    x,
                    op,
                    p.cin,
                    p.mid,
                    p.cout,
                    p.att,
                    p.splits,
                    activation_fn(p.act),
                    self._gate[i],
                    p.expand,
                    p.residual,
                    training,
                )
            elif p.kind == "project":
                assert block.skip is not None
                x = _run_conv_bn_act(x, block.skip, p.cin, p.cout, training)
        cin = head_in
        for m in self.head:
            conv: ConvBnAct = m  # type: ignore[assignment]
            x = _run_conv_bn_act(x, conv, cin, conv.conv.out_channels, training)
            cin = conv.conv.out_channels
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        for layer in self.classifier:
            if isinstance(layer, nn.Linear):
                x = F.linear(x, _lead(layer.weight, layer.out_features, cin), layer.bias)
                cin = layer.out_features
            else:
                x = layer(x)
        return x

    # ------------------------------------------------------------------ subnet

    def weight_map(self, arch: Architecture | npt.ArrayLike) -> list[tuple[str, str]]:
        """(module of the standalone network, module of the supernet it takes its weights
        from, as leading slices) for every part of `arch` that has weights."""
        plans, _ = self.plan(arch)
        pairs = [("stem", "stem")]
        for i, p in enumerate(plans):
            if p.kind == "mbconv":
                pairs.append((f"blocks.{i}", f"blocks.{i}.ops.{p.op}"))
            elif p.kind == "project":
                pairs.append((f"blocks.{i}", f"blocks.{i}.skip"))
        pairs += [("head", "head"), ("classifier", "classifier")]
        return pairs

    @torch.no_grad()
    def subnet(self, arch: Architecture | npt.ArrayLike) -> Network:
        """The standalone network of `arch` with the supernet's weights (and batch-norm
        statistics) copied out: it computes what `self(x, arch)` computes."""
        ref = next(self.parameters())
        with torch.device("meta"):
            net = build_network(self.space, self.indices(arch), init=False)
        net = net.to_empty(device=ref.device).to(ref.dtype)
        for dst, src in self.weight_map(arch):
            _copy(net.get_submodule(dst), self.get_submodule(src))
        net.train(self.training)
        return net


def _copy(dst: nn.Module, src: nn.Module) -> None:
    """Every parameter and buffer of `dst` := the leading slice of `src`'s of that name."""
    source = dict(itertools.chain(src.named_parameters(), src.named_buffers()))
    for name, tensor in itertools.chain(dst.named_parameters(), dst.named_buffers()):
        wide = source[name]
        tensor.copy_(wide[tuple(slice(0, n) for n in tensor.shape)])
