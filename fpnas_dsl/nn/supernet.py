"""The single-path weight-sharing supernet: `Supernet(space)`.

It holds the weights of every choice once and runs one architecture per forward:

- **channels and expansion** share weights by slicing: every weight is held at its widest
  (largest input, expanded and output channels any architecture gives it) and an
  architecture uses the leading `[:out, :in]` block of each tensor, passed straight to
  `F.conv2d` / `F.batch_norm` / `F.linear`. Nothing is masked, so a step costs what the
  chosen widths cost, not the widest;
- **kernel sizes and attention variants** share as the micro says (`Micro.share`). A
  block's (kernel, attention) candidates fall into weight groups, one `SharedMBConv` each
  (or, for the other row operators, one group of `nn.sliced_ops`, which share the same way):
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
supernet from the same slices the forward runs on (`nn.sliced`, `SharedMBConv.slices`
in `nn.sliced_mbconv`, the other operators' `slices` in `nn.sliced_ops`): the same
function as the supernet on that architecture. ResNet's `basic` and `bottleneck` blocks
have their projection shortcut where the shape changes: the block's one 1x1 projection,
which a skipped block is alone (as `cost` prices it).

The forward is a precomputed plan per architecture (cached): for each block, the weight
group and the widths, found from per-block slot lookups without building any readable
architecture; the loop then calls one function per block.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fpnas_dsl.cost import cost_model
from fpnas_dsl.footprint import block_shape
from fpnas_dsl.ir import (
    ATTENTION_SPLITS,
    RESNET_OPERATORS,
    SKIP_KERNEL,
    Architecture,
    BlockSpec,
    Slot,
    Space,
    encode,
    mid_channels,
)
from fpnas_dsl.nn.blocks import ConvBnAct, init_weights, set_batchnorm
from fpnas_dsl.nn.network import Network, build_network, make_classifier, make_layers
from fpnas_dsl.nn.sliced import (
    BlockPlan,
    SlicedOp,
    conv_bn_act,
    conv_bn_act_slices,
    linear_slices,
)
from fpnas_dsl.nn.sliced_mbconv import SharedMBConv
from fpnas_dsl.nn.sliced_ops import make_group

__all__ = ["SuperBlock", "Supernet"]

_PLAN_CACHE = 256


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
                if spec.op == "mbconv"
                else make_group(shape, group, spec.stride, spec.micro.gate)
                for group in shape.groups
            }
        )
        # The projection that `skip` becomes where the shape changes (and the residual
        # branch of every shape-changing MBConv under `shortcut`, and of ResNet's blocks).
        self.skip = (
            ConvBnAct(shape.in_max, shape.out_max, 1, spec.stride) if shape.projection else None
        )
        self.always_residual = shape.always_residual


# ----------------------------------------------------------------------------------
# Plans: what one architecture runs.


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
            self.stem = make_layers(space.stem, space.in_channels)
            self.blocks = nn.ModuleList(SuperBlock(space, spec) for spec in space.blocks)
            cin = space.stem[-1].out_channels if space.stem else space.in_channels
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
            for module in block.ops.values():
                group: SlicedOp = module  # type: ignore[assignment]
                if "attention" in share:
                    group.start_near_identity()
                norm = group.residual_norm()
                if "residual" in share and block.always_residual and norm is not None:
                    nn.init.zeros_(norm.weight)

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
        micro, op = spec.micro, spec.op
        mid = mid_channels(self.space, micro, cin, cout, expansion, op)
        splits = ATTENTION_SPLITS[attention]
        att = 0
        if splits == 1:
            att = micro.se_channels(cin, mid)
        elif splits >= 2:
            att = max(int(mid * splits * micro.sa_ratio), micro.sa_min_width)
        if op in RESNET_OPERATORS:
            shortcut = not same_shape
        else:
            shortcut = op == "mbconv" and self.space.skip_mismatch == "shortcut" and not same_shape
        return BlockPlan(
            op,
            block.group_of[(kernel, attention)],
            cin,
            mid,
            cout,
            att,
            splits,
            act,
            expansion != 1,
            same_shape and op != "conv",
            kernel,
            attention,
            micro.se_act_for(act),
            shortcut,
        )

    # ------------------------------------------------------------------ forward

    def forward(self, x: Tensor, arch: Architecture | npt.ArrayLike) -> Tensor:
        """Logits of architecture `arch` (choice indices [D, V] or readable) on `x`."""
        plans, head_in = self.plan(arch)
        training = self.training
        x = self.stem(x)
        for i, p in enumerate(plans):
            block: SuperBlock = self.blocks[i]  # type: ignore[assignment]
            if p.op is not None:
                op: SlicedOp = block.ops[p.op]  # type: ignore[assignment]
                residual = None
                if p.shortcut:
                    assert block.skip is not None
                    residual = conv_bn_act(x, block.skip, p.cin, p.cout, training)
                x = op.run(x, p, training, residual)
            elif p.kind == "project":
                assert block.skip is not None
                x = conv_bn_act(x, block.skip, p.cin, p.cout, training)
        return self.forward_head(x, head_in)

    def forward_head(self, x: Tensor, cin: int) -> Tensor:
        """Head, pool and classifier on the last block's output of `cin` channels."""
        training = self.training
        for m in self.head:
            conv: ConvBnAct = m  # type: ignore[assignment]
            x = conv_bn_act(x, conv, cin, conv.conv.out_channels, training)
            cin = conv.conv.out_channels
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        for layer in self.classifier:
            if isinstance(layer, nn.Linear):
                w = linear_slices(layer, cin).weights
                x = F.linear(x, w["weight"], w["bias"])
                cin = layer.out_features
            else:
                x = layer(x)
        return x

    # ------------------------------------------------------------------ subnet

    def standalone_tensors(self, arch: Architecture | npt.ArrayLike) -> dict[str, Tensor]:
        """Every parameter and buffer of the standalone network of `arch`, by its
        state-dict name, as the (views of the) supernet tensors it is copied from: the
        slices the forward runs on."""
        plans, cin = self.plan(arch)
        out = {
            f"stem.{name}": t
            for name, t in itertools.chain(self.stem.named_parameters(), self.stem.named_buffers())
        }
        for i, p in enumerate(plans):
            block: SuperBlock = self.blocks[i]  # type: ignore[assignment]
            prefix = f"blocks.{i}."
            if p.op is not None:
                op: SlicedOp = block.ops[p.op]  # type: ignore[assignment]
                out.update(op.slices(p).tensors(prefix))
                prefix += f"{op.shortcut_name}."
            if p.kind == "project" or p.shortcut:
                assert block.skip is not None
                out.update(conv_bn_act_slices(block.skip, p.cin, p.cout).tensors(prefix))
        for j, m in enumerate(self.head):
            conv: ConvBnAct = m  # type: ignore[assignment]
            out.update(conv_bn_act_slices(conv, cin, conv.conv.out_channels).tensors(f"head.{j}."))
            cin = conv.conv.out_channels
        for j, layer in enumerate(self.classifier):
            if isinstance(layer, nn.Linear):
                out.update(linear_slices(layer, cin).tensors(f"classifier.{j}."))
                cin = layer.out_features
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
            if source[name].shape != tensor.shape:
                raise AssertionError(
                    f"{name}: the supernet's slice is {list(source[name].shape)}, "
                    f"the network's tensor {list(tensor.shape)}"
                )
            tensor.copy_(source[name])
        net.train(self.training)
        return net
