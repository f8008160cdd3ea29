"""The single-path weight-sharing supernet: `Supernet(space)`.

It holds the weights of every choice once and runs one architecture per forward:

- **channels and expansion** share weights by slicing: every weight is held at its widest
  (largest input, expanded and output channels any architecture gives it) and an
  architecture uses the leading `[:out, :in]` block of each tensor, passed straight to
  `F.conv2d` / `F.batch_norm` / `F.linear`. Nothing is masked, so a step costs what the
  chosen widths cost, not the widest;
- **kernel sizes and attention variants** share as the micro says (`Micro.share`). A
  block's (kernel, attention) candidates fall into weight groups, one `SharedMBConv` each:
  with `kernel` shared, one depthwise kernel at the largest size serves every size (a
  smaller kernel is its centre, as in Once-for-All and Single-Path NAS); with `attention`
  shared, one set of convolutions serves every attention variant and SE / split-attention
  are add-ons whose last layer starts at zero (SE then scales by a constant, which the
  following batch-norm undoes; split-attention weighs its splits equally). Split r of
  channel c is the r-th depthwise filter of c, so fewer splits use the leading filters.
  Sharing nothing gives the paper's setting: every (kernel, attention) pair its own MBConv.
  The projection that `skip` becomes where the shape changes is its own 1x1 conv + BN
  (under `skip where shapes differ: shortcut` also added to the block's MBConv output);
- **residual** (also `Micro.share`): the last batch-norm of every block that always has a
  residual starts with gamma 0, so each sampled block starts as its shortcut (as
  AttentiveNAS and FBNetV2 initialise) and agrees with skip;
- **batch-norm** keeps running statistics per channel of the widest candidate; a forward
  in training mode updates only the leading channels it uses (`F.batch_norm` on slices
  of the running buffers, which are views). The depthwise batch-norm is kept per number
  of splits, since its channels are (channel, split) pairs.

`subnet(arch)` is `build_network(space, arch)` with every tensor copied out of the
supernet by the same accessors the forward uses (`SharedMBConv.standalone_tensors`):
the same function as the supernet on that architecture.

The forward is a precomputed plan per architecture (cached): for each block, the weight
group and the widths, found from per-block slot lookups without building any readable
architecture; the loop then calls one function per block.
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
from fpnas_dsl.footprint import GroupShape, block_shape, radix
from fpnas_dsl.ir import (
    ATTENTION_SPLITS,
    SKIP_KERNEL,
    Architecture,
    BlockSpec,
    Slot,
    Space,
    encode,
    mid_channels,
)
from fpnas_dsl.nn.blocks import (
    ConvBnAct,
    SplitAttention,
    SqueezeExcite,
    activation_fn,
    conv2d,
    gate_fn,
    init_weights,
    set_batchnorm,
)
from fpnas_dsl.nn.network import Network, build_network, make_classifier

__all__ = ["SharedMBConv", "Supernet"]

_PLAN_CACHE = 256


def _lead(t: Tensor | None, rows: int, cols: int | None = None) -> Tensor:
    """The leading [:rows, :cols] block of a weight; the tensor itself when that is all of
    it (a full slice would still cost a zero-filled gradient copy in backward)."""
    assert t is not None
    if cols is None or cols == t.shape[1]:
        return t if rows == t.shape[0] else t[:rows]
    return t[:, :cols] if rows == t.shape[0] else t[:rows, :cols]


def _bn(x: Tensor, bn: nn.BatchNorm2d, channels: int, training: bool) -> Tensor:
    """Batch-norm over the leading `channels` of a widest batch-norm (stats updated in
    place). `momentum = None` is a cumulative average, as in `nn.BatchNorm2d`."""
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
        _lead(bn.weight, channels),
        _lead(bn.bias, channels),
        training,
        0.0 if momentum is None else momentum,
        bn.eps,
    )


def _bn_tensors(prefix: str, bn: nn.BatchNorm2d, channels: int) -> dict[str, Tensor]:
    assert bn.running_mean is not None and bn.running_var is not None
    assert bn.num_batches_tracked is not None
    return {
        f"{prefix}.weight": bn.weight[:channels],
        f"{prefix}.bias": bn.bias[:channels],
        f"{prefix}.running_mean": bn.running_mean[:channels],
        f"{prefix}.running_var": bn.running_var[:channels],
        f"{prefix}.num_batches_tracked": bn.num_batches_tracked,
    }


# ----------------------------------------------------------------------------------
# A weight group: the candidates of a block that share one set of weights.


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
            return _lead(w, mid * filters)
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

    def standalone_tensors(self, p: BlockPlan) -> dict[str, Tensor]:
        """The tensors of the standalone `MBConv` of plan `p`, by its state-dict names,
        as (views of) this group's: what `subnet()` copies out."""
        out: dict[str, Tensor] = {}
        if p.expand:
            assert self.conv_pw is not None and self.bn1 is not None
            out["conv_pw.weight"] = _lead(self.conv_pw.weight, p.mid, p.cin)
            out.update(_bn_tensors("bn1", self.bn1, p.mid))
        filters = radix(p.splits)
        out["conv_dw.weight"] = self.depthwise(p.mid, p.splits, p.kernel)
        out.update(_bn_tensors("bn2", self.bn2[f"r{filters}"], p.mid * filters))  # type: ignore[arg-type]
        if p.splits == 1:
            se: SqueezeExcite = self.attn[p.attention]  # type: ignore[assignment]
            out["attn.conv_reduce.weight"] = _lead(se.conv_reduce.weight, p.att, p.mid)
            out["attn.conv_reduce.bias"] = _lead(se.conv_reduce.bias, p.att)
            out["attn.conv_expand.weight"] = _lead(se.conv_expand.weight, p.mid, p.att)
            out["attn.conv_expand.bias"] = _lead(se.conv_expand.bias, p.mid)
        elif p.splits >= 2:
            sa: SplitAttention = self.attn[p.attention]  # type: ignore[assignment]
            out["attn.fc1.weight"] = _lead(sa.fc1.weight, p.att, p.mid)
            out["attn.fc1.bias"] = _lead(sa.fc1.bias, p.att)
            out["attn.fc2.weight"] = _lead(sa.fc2.weight, p.mid * p.splits, p.att)
            out["attn.fc2.bias"] = _lead(sa.fc2.bias, p.mid * p.splits)
        out["conv_pwl.weight"] = _lead(self.conv_pwl.weight, p.cout, p.mid)
        out.update(_bn_tensors("bn3", self.bn3, p.cout))
        return out


class SuperBlock(nn.Module):
    """All candidates of one block: weight groups `ops[...]` and the skip projection,
    shaped by `footprint.block_shape`."""

    def __init__(self, space: Space, spec: BlockSpec) -> None:
        super().__init__()
        shape = block_shape(space, spec)
        #: (kernel, attention) -> the name of its weight group.
        self.group_of = shape.group_of
        self.ops = nn.ModuleDict(
            {
                group.name: SharedMBConv(
                    shape.in_max,
                    shape.mid_max,
                    shape.out_max,
                    group,
                    spec.stride,
                    shape.expand,
                    shape.attention_width,
                    spec.micro.gate,
                )
                for group in shape.groups
            }
        )
        # The projection that `skip` becomes where the shape changes (and, under
        # `shortcut`, the residual branch of every shape-changing MBConv).
        self.skip = (
            ConvBnAct(shape.in_max, shape.out_max, 1, spec.stride) if shape.projection else None
        )
        self.always_residual = shape.always_residual


def _run_mbconv(
    x: Tensor,
    op: SharedMBConv,
    p: BlockPlan,
    act: Callable[[Tensor], Tensor],
    gate: Callable[[Tensor], Tensor],
    training: bool,
) -> Tensor:
    """MBConv.forward of plan `p` on the leading channels of a weight group (see `MBConv`)."""
    shortcut = x
    cin, mid, cout, att, splits = p.cin, p.mid, p.cout, p.att, p.splits
    if p.expand:
        assert op.conv_pw is not None and op.bn1 is not None
        x = act(_bn(F.conv2d(x, _lead(op.conv_pw.weight, mid, cin)), op.bn1, mid, training))
    width = mid * radix(splits)
    x = F.conv2d(x, op.depthwise(mid, splits, p.kernel), None, op.stride, p.kernel // 2, 1, mid)
    x = act(_bn(x, op.bn2[f"r{radix(splits)}"], width, training))  # type: ignore[arg-type]
    if splits == 1:
        se: SqueezeExcite = op.attn[p.attention]  # type: ignore[assignment]
        reduce, expand_ = se.conv_reduce, se.conv_expand
        s = x.mean((2, 3), keepdim=True)
        s = activation_fn(p.se_act)(
            F.conv2d(s, _lead(reduce.weight, att, mid), _lead(reduce.bias, att))
        )
        s = F.conv2d(s, _lead(expand_.weight, mid, att), _lead(expand_.bias, mid))
        x = x * gate(s)
    elif splits >= 2:
        sa: SplitAttention = op.attn[p.attention]  # type: ignore[assignment]
        x = torch.unflatten(x, 1, (mid, splits))
        gap = x.sum(2).mean((2, 3), keepdim=True)
        a = F.relu(F.conv2d(gap, _lead(sa.fc1.weight, att, mid), _lead(sa.fc1.bias, att)))
        a = F.conv2d(a, _lead(sa.fc2.weight, width, att), _lead(sa.fc2.bias, width))
        x = (x * torch.unflatten(a, 1, (mid, splits)).softmax(2)).sum(2)
    x = _bn(F.conv2d(x, _lead(op.conv_pwl.weight, cout, mid)), op.bn3, cout, training)
    if p.residual:
        x = x + shortcut
    return x


def _run_conv_bn_act(x: Tensor, m: ConvBnAct, cin: int, cout: int, training: bool) -> Tensor:
    conv = m.conv
    x = conv2d(x, _lead(conv.weight, cout, cin), conv.stride[0], conv.padding[0])  # type: ignore[arg-type]
    return m.act(_bn(x, m.bn, cout, training))  # type: ignore[no-any-return]


# ----------------------------------------------------------------------------------
# Plans: what one architecture runs.


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
        """Every weight group at its widest, initialised as the standalone networks are
        (`blocks.init_weights`), then as the micros' `share` asks, on `device`
        (default: torch's default device)."""
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
        set_batchnorm(self, space.bn_eps, space.bn_momentum)
        self.to_empty(device=torch.get_default_device() if device is None else device)
        self.reset_parameters()
        self._lookups = [_Lookup.of(spec) for spec in space.blocks]
        self._gate = {i: gate_fn(spec.micro.gate) for i, spec in enumerate(space.blocks)}
        self._plans: OrderedDict[bytes, tuple[list[BlockPlan], int]] = OrderedDict()
        self._layout_shape = (len(space.layout.decisions), space.layout.max_variables)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The standalone networks' initialisation, then what the micros' `share` adds:
        attention add-ons near the identity, zero last batch-norm on always-residual blocks."""
        init_weights(self)
        for spec, block in zip(self.space.blocks, self.blocks, strict=True):
            share = spec.micro.share
            assert isinstance(block, SuperBlock)
            for group in block.ops.values():
                assert isinstance(group, SharedMBConv)
                if "attention" in share:
                    group.start_near_identity()
                if "residual" in share and block.always_residual:
                    nn.init.zeros_(group.bn3.weight)

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
        plans = [
            self._block_plan(lookup, block, rows)  # type: ignore[arg-type]
            for lookup, block in zip(self._lookups, self.blocks, strict=True)
        ]
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

    def _block_plan(self, lookup: _Lookup, block: SuperBlock, rows: list[list[int]]) -> BlockPlan:
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
            att = micro.se_channels(cin, mid)
        elif splits >= 2:
            att = max(int(mid * splits * micro.sa_ratio), micro.sa_min_width)
        return BlockPlan(
            "mbconv",
            block.group_of[(kernel, attention)],
            cin,
            mid,
            cout,
            att,
            splits,
            act,
            expansion != 1,
            same_shape,
            kernel,
            attention,
            micro.se_act_for(act),
            self.space.skip_mismatch == "shortcut" and not same_shape,
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
                op: SharedMBConv = block.ops[p.op]  # type: ignore[index,assignment]
                y = _run_mbconv(x, op, p, activation_fn(p.act), self._gate[i], training)
                if p.shortcut:
                    assert block.skip is not None
                    y = y + _run_conv_bn_act(x, block.skip, p.cin, p.cout, training)
                x = y
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

    def standalone_tensors(self, arch: Architecture | npt.ArrayLike) -> dict[str, Tensor]:
        """Every parameter and buffer of the standalone network of `arch`, by its
        state-dict name, as the (views of the) supernet tensors it is copied from."""
        plans, _ = self.plan(arch)
        out: dict[str, Tensor] = {}
        _add_whole(out, "stem", self.stem)
        for i, p in enumerate(plans):
            block: SuperBlock = self.blocks[i]  # type: ignore[assignment]
            if p.kind == "mbconv":
                op: SharedMBConv = block.ops[p.op]  # type: ignore[index,assignment]
                out.update({f"blocks.{i}.{k}": v for k, v in op.standalone_tensors(p).items()})
            if p.kind == "project" or p.shortcut:
                assert block.skip is not None
                conv, bn = block.skip.conv, block.skip.bn
                prefix = f"blocks.{i}.shortcut" if p.shortcut else f"blocks.{i}"
                out[f"{prefix}.conv.weight"] = _lead(conv.weight, p.cout, p.cin)
                out.update(_bn_tensors(f"{prefix}.bn", bn, p.cout))
        _add_whole(out, "head", self.head)
        _add_whole(out, "classifier", self.classifier)
        return out

    @torch.no_grad()
    def subnet(self, arch: Architecture | npt.ArrayLike) -> Network:
        """The standalone network of `arch` with the supernet's weights (and batch-norm
        statistics) copied out: it computes what `self(x, arch)` computes."""
        ref = next(self.parameters())
        with torch.device("meta"):
            net = build_network(self.space, self.indices(arch), init=False)
        net = net.to_empty(device=ref.device).to(ref.dtype)
        source = self.standalone_tensors(arch)
        target = dict(itertools.chain(net.named_parameters(), net.named_buffers()))
        if source.keys() != target.keys():
            raise AssertionError(
                f"supernet and network disagree on tensors: {sorted(source.keys() ^ target.keys())}"
            )
        for name, tensor in target.items():
            tensor.copy_(_fit(source[name], tensor.shape))
        net.train(self.training)
        return net


def _fit(wide: Tensor, shape: torch.Size) -> Tensor:
    """The leading block of `shape` of `wide`."""
    return wide[tuple(slice(0, n) for n in shape)] if wide.dim() else wide


def _add_whole(out: dict[str, Tensor], prefix: str, module: nn.Module) -> None:
    """Every tensor of a fixed module (stem, head, classifier) whole: `_fit` takes the
    leading block each standalone tensor needs (their input width is the architecture's)."""
    for name, tensor in itertools.chain(module.named_parameters(), module.named_buffers()):
        out[f"{prefix}.{name}"] = tensor
