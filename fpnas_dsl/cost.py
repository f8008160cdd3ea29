"""The exact analytical cost model: FLOPS and parameter count of any architecture of a space.

Conventions
-----------
FLOPS are **multiply-accumulates** (MACs) per image of every convolution and fully
connected layer, the convention in which EfficientNet-B0 is 0.39 G and MobileNetV2 1.0 is
300.8 M: exactly half of what `torch.utils.flop_counter.FlopCounterMode` reports for a
batch of one on the standalone network (`fpnas_dsl.nn.build_network`), which counts
2 per multiply-accumulate. Bias additions, batch-norm, activations, gates, softmax,
residual and split sums and pooling are not counted (FlopCounterMode does not count
them either). With `count_pool=True` every global average pool also counts one
operation per input element (C x H x W) -- the final pool and the pools inside
squeeze-excite and split-attention -- which is how FBNet's tools count them.

Params are `sum(p.numel() for p in net.parameters())` of the standalone network:
convolution and linear weights, biases (SE/SA fully connected layers and the classifier
have them; convolutions followed by batch-norm do not), and batch-norm weight and bias
(running statistics are buffers, not parameters).

How it is computed
------------------
Every row operator (`ir.OPERATORS`) is priced by its own formula over the same axes; the
MBConv families' attention terms are shared. A block's cost depends only on its own
choices (kernel, attention, expansion, output channels) and its input channels, which is
the previous block's channel choice; the activation costs nothing. Per space, once, each
block gets a lookup table over the product of the choices of those five slots (a few
thousand entries at most), built with numpy broadcasting; the head and classifier get
one over the last block's channels. The price of a batch of architectures is then one
gather and one sum: flat table indices [N, terms] from the choice-index array [N,
decisions, max_variables], then `table[flat].sum(1)`. `CostModel(space)` holds the
tables; `cost_model(space)` caches one per space.

Exact extremes: the total is a sum of terms, each a function of a few choice slots, and
the terms form a chain (block b shares slots only with its row and, through its input
channels, with the block before it). `CostModel.extreme` eliminates the slots in block
order (min-sum / max-sum variable elimination, i.e. dynamic programming over the chain):
the message carried from block to block is a table over the slots that later blocks
still use (a row's shared channels, expansion, kernel and attention: a few hundred
entries), every slot is minimised (maximised) out right after its last use. This is an
exact optimisation over all architectures of the space, with no monotonicity assumption.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import numpy as np
import numpy.typing as npt

from fpnas_dsl.ir import (
    ATTENTION_SPLITS,
    SKIP_KERNEL,
    Architecture,
    BlockSpec,
    Micro,
    Slot,
    Space,
    encode,
    uniform_samples,
)

__all__ = [
    "CostModel",
    "arch_cost",
    "conv_out_size",
    "cost_model",
    "cost_range",
    "costs",
    "flops",
    "params",
]

Int64Array: TypeAlias = npt.NDArray[np.int64]
Metric: TypeAlias = Literal["flops", "flops_pool", "params"]
#: A slot as a hashable variable id: (decision, slot).
VarId: TypeAlias = tuple[int, int]

#: Axes of a block term, in this order.
BLOCK_AXES = ("in", "channels", "expansion", "kernel", "attention")
_MAX_MESSAGE = 50_000_000
#: Architectures priced per gather (bounds the [chunk, terms, axes] temporaries).
_CHUNK = 1 << 15


def conv_out_size(size: int, kernel: int, stride: int) -> int:
    """Spatial size after a convolution with padding kernel // 2 (what the networks use)."""
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


def _make_divisible(value: npt.NDArray[np.floating[Any]], divisor: int) -> Int64Array:
    """`ir.make_divisible`, elementwise (the same float64 arithmetic, bit for bit)."""
    rounded = np.maximum(divisor, np.floor(value + divisor / 2) // divisor * divisor)
    rounded = np.where(rounded < 0.9 * value, rounded + divisor, rounded)
    out: Int64Array = rounded.astype(np.int64)
    return out


def _se_channels(micro: Micro, cin: Int64Array, mid: Int64Array) -> Int64Array:
    """`Micro.se_channels`, elementwise (the same float64 arithmetic)."""
    base = (cin if micro.se_relative_to == "input" else mid) * micro.se_ratio
    divisor = micro.divisor if micro.se_divisor is None else micro.se_divisor
    if micro.se_width == "floor":
        floored = np.floor(base + 1e-9).astype(np.int64) // divisor * divisor
        out: Int64Array = np.maximum(divisor, floored)
        return out
    return _make_divisible(base, divisor)


@dataclass(frozen=True)
class _Term:
    """One summand of the cost: tables over the choices of a few slots."""

    name: str
    #: Per axis: the variable that chooses it, or None when fixed (axis of size 1).
    variables: tuple[VarId | None, ...]
    flops: Int64Array
    pool: Int64Array
    params: Int64Array

    def table(self, metric: Metric) -> Int64Array:
        if metric == "flops":
            return self.flops
        if metric == "flops_pool":
            return self.flops + self.pool
        return self.params


def _var_id(slot: Slot) -> VarId | None:
    if slot.decision is None or slot.slot is None:
        return None
    return (slot.decision, slot.slot)


class CostModel:
    """The lookup tables of one space; prices batches of choice-index arrays."""

    def __init__(self, space: Space) -> None:
        self.space = space
        self.layout = space.layout
        self.shape = (len(self.layout.decisions), self.layout.max_variables)
        self.cardinalities = {
            (d, v): card
            for d, dec in enumerate(self.layout.decisions)
            for v, card in enumerate(dec.cardinalities)
        }
        const_flops, const_pool, const_params, size = self._stem()
        terms: list[_Term] = []
        stem_out = space.stem[-1].out_channels if space.stem else space.in_channels
        last = Slot("channels", (stem_out,))
        for spec in space.blocks:
            out_size = conv_out_size(size, 1, spec.stride)
            terms.append(self._block_term(spec, size, out_size))
            size = out_size
            last = spec.var("channels")
        terms.append(self._head_term(last, size))
        self.terms = tuple(terms)
        self.constant = {
            "flops": const_flops,
            "flops_pool": const_flops + const_pool,
            "params": const_params,
        }
        self._build_gather()

    # ---------------------------------------------------------------- tables

    def _stem(self) -> tuple[int, int, int, int]:
        space = self.space
        size, cin, flops, params = space.resolution, space.in_channels, 0, 0
        for conv in space.stem:
            size = conv_out_size(size, conv.kernel, conv.stride)
            flops += cin * conv.out_channels * conv.kernel**2 * size * size
            params += cin * conv.out_channels * conv.kernel**2 + 2 * conv.out_channels
            cin = conv.out_channels
            if conv.maxpool:  # no multiply-accumulates, no parameters
                size = conv_out_size(size, conv.maxpool, conv.maxpool_stride)
        return flops, 0, params, size

    def _block_term(self, spec: BlockSpec, size_in: int, size_out: int) -> _Term:
        space, micro = self.space, spec.micro
        slots = (
            spec.in_channels,
            spec.var("channels"),
            spec.var("expansion"),
            spec.var("kernel"),
            spec.var("attention"),
        )
        for k in spec.var("kernel").choices:
            if not isinstance(k, int) or (k != SKIP_KERNEL and k % 2 == 0):
                raise ValueError(f"block {spec.index + 1}: kernel {k!r} must be an odd size or 0")

        def axis(values: list[float], position: int) -> npt.NDArray[np.float64]:
            shape = [1] * 5
            shape[position] = len(values)
            return np.asarray(values, dtype=np.float64).reshape(shape)

        cin = axis([float(c) for c in slots[0].choices], 0).astype(np.int64)
        cout = axis([float(c) for c in slots[1].choices], 1).astype(np.int64)
        exp = axis([float(c) for c in slots[2].choices], 2)
        kernel = axis([float(c) for c in slots[3].choices], 3).astype(np.int64)
        splits = axis([float(ATTENTION_SPLITS[str(a)]) for a in slots[4].choices], 4)
        splits = splits.astype(np.int64)
        hw_in, hw_out = size_in * size_in, size_out * size_out

        has_expand = exp != 1
        base = cin if space.expansion_of == "input" else cout
        widened = _make_divisible(base * exp, micro.divisor)
        identity = (spec.stride == 1) & (cin == cout)
        # The 1x1 conv + BN of a skip where the shape changes (and ResNet's shortcut).
        skip_flops = np.where(identity, 0, cin * cout * hw_out)
        skip_params = np.where(identity, 0, cin * cout + 2 * cout)
        k2 = kernel * kernel

        # The inner width the attention sees (ir.mid_channels).
        if spec.op == "fused":
            mid = np.where(has_expand, widened, cout)
        elif spec.op == "bottleneck":
            mid = widened
        elif spec.op in ("conv", "basic"):
            mid = cout
        elif spec.op == "ds":
            mid = cin
        else:
            mid = np.where(has_expand, widened, cin)
        se = _se_channels(micro, cin, mid)
        sa = np.maximum(np.floor(mid * splits * micro.sa_ratio), micro.sa_min_width)
        sa = sa.astype(np.int64)
        is_se, is_sa = splits == 1, splits >= 2
        dw = np.where(is_sa, splits, 1) * mid  # depthwise output channels

        att_flops = np.where(is_se, 2 * mid * se, np.where(is_sa, mid * sa + sa * dw, 0))
        att_params = np.where(
            is_se, 2 * mid * se + se + mid, np.where(is_sa, mid * sa + sa + sa * dw + dw, 0)
        )
        mb_pool = np.where(splits >= 1, mid * hw_out, 0)
        if spec.op == "fused":
            mb_flops = cin * mid * k2 * hw_out + att_flops + has_expand * mid * cout * hw_out
            mb_params = cin * mid * k2 + 2 * mid + att_params + has_expand * (mid * cout + 2 * cout)
        elif spec.op == "ds":
            mb_flops = dw * k2 * hw_out + att_flops + cin * cout * hw_out
            mb_params = dw * k2 + 2 * dw + att_params + cin * cout + 2 * cout
        elif spec.op == "conv":
            mb_flops = cin * cout * k2 * hw_out
            mb_params = cin * cout * k2 + 2 * cout
        elif spec.op == "basic":
            mb_flops = (cin + cout) * cout * k2 * hw_out + skip_flops
            mb_params = (cin + cout) * cout * k2 + 4 * cout + skip_params
        elif spec.op == "bottleneck":
            mb_flops = (
                cin * mid * hw_in + mid * mid * k2 * hw_out + mid * cout * hw_out + skip_flops
            )
            mb_params = cin * mid + mid * mid * k2 + mid * cout + 4 * mid + 2 * cout + skip_params
        else:
            mb_flops = (
                has_expand * cin * mid * hw_in
                + dw * kernel * kernel * hw_out
                + att_flops
                + mid * cout * hw_out
            )
            mb_params = (
                has_expand * (cin * mid + 2 * mid)
                + dw * kernel * kernel
                + 2 * dw
                + att_params
                + mid * cout
                + 2 * cout
            )
            if space.skip_mismatch == "shortcut":  # the projection is the block's residual
                mb_flops = mb_flops + skip_flops
                mb_params = mb_params + skip_params
        is_skip = kernel == SKIP_KERNEL
        shape = tuple(len(s.choices) for s in slots)

        def full(a: npt.NDArray[np.int64]) -> Int64Array:
            return np.ascontiguousarray(np.broadcast_to(a, shape), dtype=np.int64)

        return _Term(
            name=f"block{spec.index + 1}",
            variables=tuple(_var_id(s) for s in slots),
            flops=full(np.where(is_skip, skip_flops, mb_flops)),
            pool=full(np.where(is_skip, 0, mb_pool)),
            params=full(np.where(is_skip, skip_params, mb_params)),
        )

    def _head_term(self, last: Slot, size: int) -> _Term:
        space = self.space
        choices = [int(c) for c in last.choices]
        flops, pool, params = [], [], []
        for cin in choices:
            f = p = 0
            hw = size
            for conv in space.head:
                hw = conv_out_size(hw, conv.kernel, conv.stride)
                f += cin * conv.out_channels * conv.kernel**2 * hw * hw
                p += cin * conv.out_channels * conv.kernel**2 + 2 * conv.out_channels
                cin = conv.out_channels
            pool.append(cin * hw * hw)
            for fc in space.classifier:
                out = fc.out_features if fc.out_features is not None else space.classes
                f += cin * out
                p += cin * out + out
                cin = out
            flops.append(f)
            params.append(p)
        return _Term(
            name="head",
            variables=(_var_id(last),),
            flops=np.asarray(flops, dtype=np.int64),
            pool=np.asarray(pool, dtype=np.int64),
            params=np.asarray(params, dtype=np.int64),
        )

    # ---------------------------------------------------------------- pricing

    def _build_gather(self) -> None:
        """Flat tables and, per term and axis, where its choice index is read and its stride."""
        width = max(len(t.variables) for t in self.terms)
        count = len(self.terms)
        self._dec = np.zeros((count, width), dtype=np.intp)
        self._slot = np.zeros((count, width), dtype=np.intp)
        self._stride = np.zeros((count, width), dtype=np.int64)
        self._offset = np.zeros(count, dtype=np.int64)
        offset = 0
        for t, term in enumerate(self.terms):
            shape = term.flops.shape
            strides = np.cumprod((*shape[1:], 1)[::-1])[::-1]
            for a, variable in enumerate(term.variables):
                if variable is not None:
                    self._dec[t, a], self._slot[t, a] = variable
                    self._stride[t, a] = strides[a]
            self._offset[t] = offset
            offset += term.flops.size
        self._tables: dict[Metric, Int64Array] = {
            metric: np.concatenate([t.table(metric).ravel() for t in self.terms])
            for metric in ("flops", "flops_pool", "params")
        }
        # Per (term, axis): the cardinality the index must be below; fixed axes read nothing.
        self._limit = np.ones((count, width), dtype=np.int64)
        self._chosen = np.zeros((count, width), dtype=bool)
        for t, term in enumerate(self.terms):
            self._limit[t, : len(term.variables)] = term.flops.shape
            self._chosen[t, : len(term.variables)] = [v is not None for v in term.variables]

    def flat_index(self, idx: npt.ArrayLike) -> Int64Array:
        """Choice indices [..., decisions, max_variables] -> flat table rows [..., terms]."""
        arr = np.asarray(idx)
        if arr.ndim < 2 or arr.shape[-2:] != self.shape:
            raise ValueError(
                f"choice indices must have shape [..., {self.shape[0]}, {self.shape[1]}] "
                f"for space {self.space.name!r}, got {list(arr.shape)}"
            )
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"choice indices must be integers, got {arr.dtype}")
        lead = arr.shape[:-2]
        if self.shape[0] == 0:
            return np.broadcast_to(self._offset, (*lead, len(self.terms))).copy()
        gathered = arr[..., self._dec, self._slot].astype(np.int64, copy=False)
        bad = ((gathered < 0) | (gathered >= self._limit)) & self._chosen
        if bad.any():
            raise ValueError(f"choice index out of range for space {self.space.name!r}")
        flat: Int64Array = (gathered * self._stride).sum(-1) + self._offset
        return flat

    def price(self, idx: npt.ArrayLike, metric: Metric) -> Int64Array:
        """One metric of a batch: choice indices [..., D, V] -> int64 [...]."""
        return self._priced(idx, (metric,))[0]

    def costs(self, idx: npt.ArrayLike, count_pool: bool = False) -> tuple[Int64Array, Int64Array]:
        """(FLOPS, params) of a batch, reading the indices once."""
        flops_, params_ = self._priced(idx, ("flops_pool" if count_pool else "flops", "params"))
        return flops_, params_

    def _priced(self, idx: npt.ArrayLike, metrics: tuple[Metric, ...]) -> list[Int64Array]:
        arr = np.asarray(idx)
        lead = arr.shape[:-2] if arr.ndim >= 2 else ()
        count = math.prod(lead)
        if count <= _CHUNK:
            flat = self.flat_index(arr)
            return [self._tables[m][flat].sum(-1) + self.constant[m] for m in metrics]
        # Bounded temporaries for huge batches: [chunk, terms, axes] at a time.
        rows = arr.reshape(count, *arr.shape[-2:])
        out = [np.empty(count, dtype=np.int64) for _ in metrics]
        for start in range(0, count, _CHUNK):
            flat = self.flat_index(rows[start : start + _CHUNK])
            for o, m in zip(out, metrics, strict=True):
                o[start : start + _CHUNK] = self._tables[m][flat].sum(-1) + self.constant[m]
        return [o.reshape(lead) for o in out]

    # ---------------------------------------------------------------- exact extremes

    def extreme(self, metric: Metric, mode: Literal["min", "max"]) -> int:
        """The exact minimum or maximum of a metric over every architecture of the space.

        Min-sum (max-sum) variable elimination over the chain of terms, in block order.
        """
        reduce = np.min if mode == "min" else np.max
        last_use: dict[VarId, int] = {}
        for t, term in enumerate(self.terms):
            for variable in term.variables:
                if variable is not None:
                    last_use[variable] = t
        message = np.zeros((), dtype=np.int64)
        message_vars: list[VarId] = []
        for t, term in enumerate(self.terms):
            factor, factor_vars = _factor(term.table(metric), term.variables)
            union = message_vars + [v for v in factor_vars if v not in message_vars]
            total = _align(message, message_vars, union) + _align(factor, factor_vars, union)
            if total.size > _MAX_MESSAGE:
                raise ValueError(f"space {self.space.name!r} is too entangled for an exact range")
            gone = tuple(i for i, v in enumerate(union) if last_use[v] <= t)
            message = reduce(total, axis=gone) if gone else total
            message_vars = [v for v in union if last_use[v] > t]
        return int(message) + self.constant[metric]


def _factor(
    table: Int64Array, variables: tuple[VarId | None, ...]
) -> tuple[Int64Array, list[VarId]]:
    """A term's table over its distinct variables: fixed axes dropped, repeated ones diagonal."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    names: dict[VarId, str] = {}
    subscripts = ""
    for variable in variables:
        if variable is None:
            subscripts += letters[len(names) + 10]  # size-1 axis, summed away
        else:
            subscripts += names.setdefault(variable, letters[len(names)])
    unique = list(names)
    out: Int64Array = np.einsum(f"{subscripts}->{''.join(names.values())}", table)
    return out, unique


def _align(array: Int64Array, variables: list[VarId], union: list[VarId]) -> Int64Array:
    """Broadcast a table over `variables` to the axes of `union` (size 1 where absent)."""
    if not variables:
        return array
    positions = [union.index(v) for v in variables]
    order = np.argsort(positions)
    moved = np.transpose(array, order)
    shape = [1] * len(union)
    for position, size in zip(sorted(positions), moved.shape, strict=True):
        shape[position] = size
    return moved.reshape(shape)


# ------------------------------------------------------------------------------------
# Module-level API: one cached CostModel per space.

_CACHE: OrderedDict[Space, CostModel] = OrderedDict()
_CACHE_SIZE = 32


def cost_model(space: Space) -> CostModel:
    """The cost model of a space, built once and cached (spaces compare by value)."""
    model = _CACHE.get(space)
    if model is None:
        model = CostModel(space)
        _CACHE[space] = model
        if len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    else:
        _CACHE.move_to_end(space)
    return model


def flops(space: Space, idx: npt.ArrayLike, count_pool: bool = False) -> Int64Array:
    """MACs per image of each architecture: choice indices [..., D, V] -> int64 [...]."""
    return cost_model(space).price(idx, "flops_pool" if count_pool else "flops")


def params(space: Space, idx: npt.ArrayLike) -> Int64Array:
    """Parameter count of each architecture: choice indices [..., D, V] -> int64 [...]."""
    return cost_model(space).price(idx, "params")


def costs(
    space: Space, idx: npt.ArrayLike, count_pool: bool = False
) -> tuple[Int64Array, Int64Array]:
    """(FLOPS, params) of each architecture, as `flops` and `params` but in one pass."""
    return cost_model(space).costs(idx, count_pool)


def arch_cost(space: Space, arch: Architecture, count_pool: bool = False) -> tuple[int, int]:
    """(FLOPS, params) of one readable architecture (`ArchitectureMismatch` if foreign)."""
    f, p = cost_model(space).costs(encode(space, arch), count_pool)
    return int(f), int(p)


def cost_range(
    space: Space, samples: int = 10000, seed: int = 0, count_pool: bool = False
) -> dict[str, int]:
    """FLOPS and params: exact minimum and maximum over the space, median of uniform samples.

    The median is the lower median of `samples` architectures drawn uniformly with `seed`
    (`ir.uniform_samples`), so it is the cost of an actual sampled architecture.
    """
    model = cost_model(space)
    metric: Metric = "flops_pool" if count_pool else "flops"
    f, p = model.costs(uniform_samples(space, max(samples, 1), seed), count_pool)
    return {
        "flops_min": model.extreme(metric, "min"),
        "flops_median": _lower_median(f),
        "flops_max": model.extreme(metric, "max"),
        "params_min": model.extreme("params", "min"),
        "params_median": _lower_median(p),
        "params_max": model.extreme("params", "max"),
    }


def _lower_median(values: Int64Array) -> int:
    ordered = np.sort(values)
    return int(ordered[(len(ordered) - 1) // 2])
