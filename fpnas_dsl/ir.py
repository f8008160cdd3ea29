"""The typed intermediate representation of a search space, and what derives from it.

The parser builds a `Space`; everything downstream (cost model, supernet, layout for the
C++ core, search, export) reads only this module's types. Models are frozen pydantic
models with `extra="forbid"`; children are tuples so that a frozen tree is really frozen.
Source spans ride along for error messages and survive the JSON round trip.

Derived views:
- `expand_blocks(space)`: one `BlockSpec` per MBConv block, each variable tied to the
  decision and slot that chooses it (or fixed when it has a single choice);
- `layout(space)`: the decisions with their variables' cardinalities (for the core);
- `count_architectures(space)`: the exact number of architectures, a Python int;
- `decode` / `encode`: choice-index arrays <-> the readable `Architecture`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal, TypeAlias

import numpy as np
import numpy.typing as npt
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
)

VarName: TypeAlias = Literal["kernel", "act", "attention", "expansion", "channels"]
Value: TypeAlias = int | float | str
Scope: TypeAlias = Literal["row", "block"]

#: The order in which a block's variables appear inside a decision.
VARIABLE_ORDER: tuple[VarName, ...] = ("kernel", "act", "attention", "expansion", "channels")
MICRO_VARIABLES: tuple[VarName, ...] = ("kernel", "act", "attention")
ACTIVATIONS = ("relu", "relu6", "swish", "hswish")
#: PyTorch's names for the same functions, accepted wherever an activation is written and
#: stored under the name on the left of ACTIVATIONS (so that the IR has one spelling).
ACTIVATION_ALIASES = {"silu": "swish", "hardswish": "hswish"}
GATES = ("sigmoid", "hsigmoid")
GATE_ALIASES = {"hardsigmoid": "hsigmoid"}
#: The activation inside squeeze-excite: a fixed one, or `block` (the block's own).
SE_ACTIVATIONS = (*ACTIVATIONS, "block")
#: How the SE width R x channels becomes a whole number of channels: `round` is
#: MobileNet's make_divisible (nearest multiple of the divisor, never below 90%), `floor`
#: truncates to a multiple of the divisor (torchvision's EfficientNet, mobile-vision 2020).
SE_WIDTH_RULES = ("round", "floor")
ATTENTIONS = ("none", "se", "sa2", "sa4")
#: Number of splits of each attention choice (SE is split-attention with one split).
ATTENTION_SPLITS = {"none": 0, "se": 1, "sa2": 2, "sa4": 4}
SKIP_KERNEL = 0
#: The row operators (a table row's first word), each a block family:
#: `mbconv` inverted residual (MobileNetV2/V3, EfficientNet); `fused` fused-MBConv
#: (EfficientNetV2: a kxk expansion conv, attention, a 1x1 projection; with expansion 1 a
#: single kxk conv-bn-act); `ds` depthwise-separable (kxk depthwise, attention, 1x1);
#: `conv` one kxk conv-bn-act; `basic` and `bottleneck` ResNet's two blocks (two kxk
#: convs; 1x1, kxk, 1x1), whose residual projects where the shape changes.
OpName: TypeAlias = Literal["mbconv", "fused", "ds", "conv", "basic", "bottleneck"]
OPERATORS: tuple[OpName, ...] = ("mbconv", "fused", "ds", "conv", "basic", "bottleneck")
#: What each operator takes: its micro variables and columns, and `skip` (kernel 0).
OPERATOR_VARIABLES: dict[str, tuple[str, ...]] = {
    "mbconv": ("kernel", "expansion", "channels", "act", "attention", "skip"),
    "fused": ("kernel", "expansion", "channels", "act", "attention", "skip"),
    "ds": ("kernel", "channels", "act", "attention", "skip"),
    "conv": ("kernel", "channels", "act", "skip"),
    "basic": ("kernel", "channels", "act", "skip"),
    "bottleneck": ("kernel", "expansion", "channels", "act", "skip"),
}
#: The attention choices of the operators that take attention: split-attention needs a
#: depthwise convolution to make its splits, which `fused` has not.
OPERATOR_ATTENTIONS: dict[str, tuple[str, ...]] = {
    "mbconv": ("none", "se", "sa2", "sa4"),
    "fused": ("none", "se"),
    "ds": ("none", "se", "sa2", "sa4"),
}
#: ResNet's blocks: a residual always, through a projection where the shape changes.
RESNET_OPERATORS: tuple[OpName, ...] = ("basic", "bottleneck")
#: What the candidates of a block may share in the supernet (`share ...` in a micro):
#: `kernel`: one kxk kernel per layer at the largest size, a smaller kernel its centre;
#: `attention`: one set of convolutions for every attention variant, SE and
#: split-attention as add-ons (split r of a channel is the r-th of its filters);
#: `residual`: the last batch-norm of a block that always has a residual starts at zero, so
#: the block starts as its shortcut and agrees with skip.
Sharable: TypeAlias = Literal["kernel", "attention", "residual"]
SHARABLE: tuple[Sharable, ...] = ("kernel", "attention", "residual")


class _Node(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def portable_path(file: str) -> str:
    """A space's file name as a file written for users may hold it: a bundled space by its
    name, a path below the working directory relative to it, any other absolute path by
    its file name; never the directory layout of the machine that wrote it."""
    from pathlib import Path

    from fpnas_dsl.resources import spaces_dir

    path = Path(file)
    if file.startswith("<") or not path.is_absolute():
        return file
    if path.parent.resolve() == spaces_dir().resolve():
        return path.stem
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return path.name


def _portable(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: portable_path(v) if k in ("file", "source") and isinstance(v, str) else _portable(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_portable(v) for v in node]
    return node


class Span(_Node):
    """Where a node came from: 1-based line and column of its first and last character."""

    file: str = "<string>"
    line: int = 0
    column: int = 0
    end_line: int = 0
    end_column: int = 0


class Variable(_Node):
    """A search variable: its ordered choices and whether it is decided per row or per block."""

    name: VarName
    choices: tuple[Value, ...]
    scope: Scope = "row"
    span: Span | None = None

    @property
    def fixed(self) -> bool:
        return len(self.choices) == 1


class Micro(_Node):
    """A named micro-architecture: the per-block variables and the fixed details."""

    name: str
    kernel: Variable
    act: Variable
    attention: Variable
    #: SE bottleneck width = ratio x (block input or expanded channels), made a multiple
    #: of `se_divisor` (default: `divisor`) by `se_width` (see SE_WIDTH_RULES).
    se_ratio: float = 0.25
    se_relative_to: Literal["input", "expanded"] = "expanded"
    gate: Literal["sigmoid", "hsigmoid"] = "sigmoid"
    #: The activation between the SE's two 1x1 convolutions; "block": the block's act.
    se_act: Literal["relu", "relu6", "swish", "hswish", "block"] = "relu"
    se_width: Literal["round", "floor"] = "round"
    se_divisor: int | None = None
    #: Split-attention bottleneck = max(round(channels * splits * sa_ratio), sa_min_width).
    sa_ratio: float = 0.25
    sa_min_width: int = 32
    #: Channel counts (expanded, SE width) round to a multiple of this (the 10% rule).
    divisor: int = 8
    #: What a block's candidates share in the supernet (SHARABLE); () keeps them separate,
    #: as the paper does.
    share: tuple[Sharable, ...] = SHARABLE
    span: Span | None = None

    def variable(self, name: VarName) -> Variable:
        value: Variable = getattr(self, name)
        return value

    def se_channels(self, in_channels: int, mid_channels: int) -> int:
        """The SE bottleneck width of a block with these input and expanded channels."""
        base = in_channels if self.se_relative_to == "input" else mid_channels
        divisor = self.divisor if self.se_divisor is None else self.se_divisor
        if self.se_width == "floor":
            # The epsilon keeps 100 x 0.29 (28.999999999999996 in floats) at 29.
            return max(divisor, math.floor(base * self.se_ratio + 1e-9) // divisor * divisor)
        return make_divisible(base * self.se_ratio, divisor)

    def se_act_for(self, block_act: str) -> str:
        """The activation inside squeeze-excite of a block whose activation is `block_act`."""
        return block_act if self.se_act == "block" else self.se_act


class Conv(_Node):
    """A fixed convolution + batch-norm (+ activation): stem and head layers."""

    out_channels: int
    kernel: int = 1
    stride: int = 1
    act: str | None = None
    #: A max pool after the stem conv (ResNet's 3x3 stride 2): its kernel, 0 for none.
    maxpool: int = 0
    maxpool_stride: int = 1
    span: Span | None = None

    @model_serializer(mode="wrap")
    def _without_absent_pool(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """A conv without a maxpool dumps as it did before the field existed."""
        data: dict[str, Any] = handler(self)
        if not self.maxpool:
            data.pop("maxpool", None)
            data.pop("maxpool_stride", None)
        return data


class Linear(_Node):
    """A fully connected layer of the classifier; `out_features=None` means the classes."""

    out_features: int | None = None
    act: str | None = None
    dropout: float = 0.0
    span: Span | None = None


class Row(_Node):
    """One row of the macro table: a group of `repeat` blocks of one operator.

    An operator that takes no expansion (`OPERATOR_VARIABLES`) has expansion fixed at 1."""

    op: OpName = "mbconv"
    micro: str
    expansion: Variable
    channels: Variable
    repeat: int
    stride: int
    #: Micro variables that this row narrows or fixes (kernel 5, attention {none, se}, ...).
    overrides: tuple[Variable, ...] = ()
    span: Span | None = None


class Space(_Node):
    """A whole search space, as written in a .space file."""

    name: str
    resolution: int
    in_channels: int
    classes: int
    #: MBConv expansion multiplies the block's input channels (MobileNetV2/FBNet) or output.
    expansion_of: Literal["input", "output"] = "input"
    #: Skip where a block changes shape: refused, a 1x1 conv + BN projection with stride,
    #: or `shortcut`: that projection is the shape-changing block's residual branch, added
    #: to the block's output (as ResNet's projection shortcut), and skip keeps it alone.
    skip_mismatch: Literal["forbid", "project", "shortcut"] = "project"
    micros: tuple[Micro, ...]
    stem: tuple[Conv, ...]
    rows: tuple[Row, ...]
    head: tuple[Conv, ...]
    pool: Literal["avg"] = "avg"
    classifier: tuple[Linear, ...] = Field(min_length=1)
    #: Every batch-norm's eps and momentum (PyTorch's defaults; torchvision's MobileNetV3
    #: uses 1e-3 and 0.01).
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    source: str = "<string>"
    span: Span | None = None

    def portable_dump(self) -> dict[str, Any]:
        """The IR as JSON for files users keep (arch.json, space.json, `compile --ir`):
        file names through `portable_path`."""
        dumped: dict[str, Any] = _portable(self.model_dump(mode="json"))
        return dumped

    def micro(self, name: str) -> Micro:
        for micro in self.micros:
            if micro.name == name:
                return micro
        raise KeyError(name)

    def row_variable(self, row: Row, name: VarName) -> Variable:
        """The effective variable of a row: an override, else the micro's, else the row's own."""
        if name == "expansion":
            return row.expansion
        if name == "channels":
            return row.channels
        for override in row.overrides:
            if override.name == name:
                return override
        return self.micro(row.micro).variable(name)

    def with_input(
        self,
        resolution: int | None = None,
        in_channels: int | None = None,
        classes: int | None = None,
    ) -> Space:
        """The same space for another input size or number of classes."""
        update: dict[str, int] = {}
        if resolution is not None:
            update["resolution"] = resolution
        if in_channels is not None:
            update["in_channels"] = in_channels
        if classes is not None:
            update["classes"] = classes
        return self.model_copy(update=update)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Space:
        """A copy whose derived views (`blocks`, `layout`) are recomputed, not carried over:
        pydantic copies the instance `__dict__`, cached properties included."""
        copy = super().model_copy(update=update, deep=deep)
        for name in ("blocks", "layout"):
            copy.__dict__.pop(name, None)
        return copy

    @cached_property
    def blocks(self) -> tuple[BlockSpec, ...]:
        return expand_blocks(self)

    @cached_property
    def layout(self) -> Layout:
        return make_layout(self)


# --------------------------------------------------------------------------------------
# Derived views: plain dataclasses, computed from a Space and never serialised.


@dataclass(frozen=True)
class Slot:
    """Where a block variable's value comes from: (decision, slot) in a sample, or fixed."""

    name: VarName
    choices: tuple[Value, ...]
    decision: int | None = None
    slot: int | None = None


@dataclass(frozen=True)
class BlockSpec:
    """One MBConv block of the expanded space, with every variable bound to its source."""

    index: int
    row: int
    stride: int
    micro: Micro
    variables: dict[VarName, Slot]
    #: The slot that chooses this block's input channels (the previous block's output).
    in_channels: Slot
    op: OpName = "mbconv"

    def var(self, name: VarName) -> Slot:
        return self.variables[name]


@dataclass(frozen=True)
class Decision:
    """A group of variables decided together (one categorical each in FD, one joint in JD)."""

    name: str
    variables: tuple[VarName, ...]
    cardinalities: tuple[int, ...]
    blocks: tuple[int, ...]


@dataclass(frozen=True)
class Layout:
    decisions: tuple[Decision, ...]

    @property
    def cardinalities(self) -> list[list[int]]:
        return [list(d.cardinalities) for d in self.decisions]

    @property
    def max_variables(self) -> int:
        return max((len(d.variables) for d in self.decisions), default=1)

    @property
    def log_count(self) -> float:
        return sum(math.log(c) for d in self.decisions for c in d.cardinalities)

    @property
    def params_factorized(self) -> int:
        return sum(sum(d.cardinalities) for d in self.decisions)

    @property
    def params_joint(self) -> int:
        return sum(math.prod(d.cardinalities) for d in self.decisions)


def shapes_can_differ(space: Space, stride: int, in_slot: Slot, out_slot: Slot) -> bool:
    """Whether a block's input and output may have different shapes in some architecture."""
    if stride != 1:
        return True
    same_source = in_slot.decision is not None and (
        (in_slot.decision, in_slot.slot) == (out_slot.decision, out_slot.slot)
    )
    if same_source:
        return False
    both_fixed_equal = (
        in_slot.decision is None
        and out_slot.decision is None
        and in_slot.choices == out_slot.choices
    )
    return not both_fixed_equal


def kernel_choices_for(space: Space, row: Row, block_can_change_shape: bool) -> tuple[Value, ...]:
    """A row's kernel choices for one block: skip is not offered where it cannot be identity.

    Under `skip_mismatch = forbid` the validator has already refused a row that decides
    kernel once per row and offers skip where the shape changes; per block, skip is simply
    dropped for the blocks that change shape.
    """
    choices = space.row_variable(row, "kernel").choices
    if space.skip_mismatch == "forbid" and block_can_change_shape:
        return tuple(c for c in choices if c != SKIP_KERNEL)
    return choices


def expand_blocks(space: Space) -> tuple[BlockSpec, ...]:
    """Unroll the macro table into blocks and bind each variable to a (decision, slot)."""
    return _Expansion(space).blocks


def make_layout(space: Space) -> Layout:
    return _Expansion(space).layout


class _Expansion:
    """Walks the rows once, allocating decisions: one per row for row-scoped variables,
    one per block for block-scoped ones; variables with a single choice are fixed and
    take no place in the layout."""

    def __init__(self, space: Space) -> None:
        self.space = space
        self._decisions: list[tuple[str, list[VarName], list[int], list[int]]] = []
        blocks: list[BlockSpec] = []
        stem_out = space.stem[-1].out_channels if space.stem else space.in_channels
        prev_out = Slot("channels", (stem_out,))
        for r, row in enumerate(space.rows):
            row_decision: int | None = None
            row_slots: dict[VarName, Slot] = {}
            for b in range(row.repeat):
                index = len(blocks)
                stride = row.stride if b == 0 else 1
                block_decision: int | None = None
                slots: dict[VarName, Slot] = {}
                # Channels first: skip's availability depends on whether the shape changes.
                order: tuple[VarName, ...] = ("channels", "expansion", "kernel", "act", "attention")
                for name in order:
                    var = space.row_variable(row, name)
                    choices = var.choices
                    if name == "kernel":
                        change = shapes_can_differ(space, stride, prev_out, slots["channels"])
                        choices = kernel_choices_for(space, row, change)
                    if len(choices) == 1:
                        slots[name] = Slot(name, choices)
                    elif var.scope == "row":
                        if name in row_slots:
                            slots[name] = row_slots[name]
                        else:
                            if row_decision is None:
                                row_decision = self._new_decision(f"row{r + 1}")
                            row_slots[name] = slots[name] = self._add(row_decision, name, choices)
                    else:
                        if block_decision is None:
                            block_decision = self._new_decision(f"row{r + 1}.block{b + 1}")
                        slots[name] = self._add(block_decision, name, choices)
                    if row_decision is not None:
                        self._decisions[row_decision][3].append(index)
                if block_decision is not None:
                    self._decisions[block_decision][3].append(index)
                micro = space.micro(row.micro)
                blocks.append(BlockSpec(index, r, stride, micro, slots, prev_out, row.op))
                prev_out = slots["channels"]
        self.blocks = tuple(blocks)
        self.layout = Layout(
            tuple(
                Decision(
                    name, _sorted_vars(names), _sorted_cards(names, cards), tuple(sorted(set(bl)))
                )
                for name, names, cards, bl in self._decisions
            )
        )
        self._reorder_slots()

    def _new_decision(self, name: str) -> int:
        self._decisions.append((name, [], [], []))
        return len(self._decisions) - 1

    def _add(self, decision: int, name: VarName, choices: tuple[Value, ...]) -> Slot:
        names, cards = self._decisions[decision][1], self._decisions[decision][2]
        names.append(name)
        cards.append(len(choices))
        return Slot(name, choices, decision, len(names) - 1)

    def _reorder_slots(self) -> None:
        """Slots were numbered in allocation order; renumber them in VARIABLE_ORDER."""
        remap: dict[tuple[int, int], int] = {}
        for d, (_, names, _, _) in enumerate(self._decisions):
            ordered = _sorted_vars(names)
            for s, name in enumerate(names):
                remap[(d, s)] = ordered.index(name)

        def fix(slot: Slot) -> Slot:
            if slot.decision is None or slot.slot is None:
                return slot
            return Slot(slot.name, slot.choices, slot.decision, remap[(slot.decision, slot.slot)])

        self.blocks = tuple(
            BlockSpec(
                b.index,
                b.row,
                b.stride,
                b.micro,
                {n: fix(s) for n, s in b.variables.items()},
                fix(b.in_channels),
                b.op,
            )
            for b in self.blocks
        )


def _sorted_vars(names: Sequence[VarName]) -> tuple[VarName, ...]:
    return tuple(sorted(names, key=VARIABLE_ORDER.index))


def _sorted_cards(names: Sequence[VarName], cards: Sequence[int]) -> tuple[int, ...]:
    pairs = sorted(zip(names, cards, strict=True), key=lambda p: VARIABLE_ORDER.index(p[0]))
    return tuple(c for _, c in pairs)


def count_architectures(space: Space) -> int:
    """The exact number of distinct architectures (a Python int, no overflow)."""
    return math.prod(c for d in space.layout.decisions for c in d.cardinalities)


def count_networks(space: Space) -> int:
    """The exact number of distinct networks: architectures that differ only in the act,
    attention or expansion of blocks that are skipped build the same network, and count once.

    A skipped block (kernel 0) reads nothing but its channels, so a variable that only
    skipped blocks read does not change the network. Variables never span rows (a row's
    decision serves its blocks, a block's decision one block), so the count is a product
    over rows; within a row it sums over the row's kernel choice (when decided per row)
    and runs over the blocks carrying whether some block so far is not skipped.
    """
    total = 1
    for r in range(len(space.rows)):
        specs = [b for b in space.blocks if b.row == r]
        seen: set[tuple[int, int]] = set()  # the row's variables already counted
        row_kernel: tuple[int, int] | None = None
        row_others = 1  # variables decided once for the row, other than kernel and channels
        for spec in specs:
            for name, slot in spec.variables.items():
                if slot.decision is None or slot.slot is None:
                    continue
                key = (slot.decision, slot.slot)
                if key in seen:
                    continue
                seen.add(key)
                shared = space.row_variable(space.rows[r], name).scope == "row"
                if name == "channels":
                    total *= len(slot.choices)
                elif name == "kernel" and shared:
                    row_kernel = key
                elif shared:
                    row_others *= len(slot.choices)
        # The row's kernel choices when it decides kernel once (a sentinel otherwise).
        kernel_values: list[Value] = [-1]
        if row_kernel is not None:
            kernel_values = list(
                next(
                    b.var("kernel").choices
                    for b in specs
                    if _slot_key(b.var("kernel")) == row_kernel
                )
            )
        row_total = 0
        for value in kernel_values:
            # ways[k]: assignments of the blocks so far, k = 1 if some block is not skipped
            ways = [1, 0]
            for spec in specs:
                kernel = spec.var("kernel")
                if row_kernel is not None and _slot_key(kernel) == row_kernel:
                    kernels: tuple[Value, ...] = (value,)
                else:
                    kernels = kernel.choices
                skips = sum(1 for k in kernels if k == SKIP_KERNEL)
                runs = len(kernels) - skips
                own = math.prod(
                    len(slot.choices)
                    for name, slot in spec.variables.items()
                    if name not in ("kernel", "channels")
                    and slot.decision is not None
                    and space.row_variable(space.rows[r], name).scope == "block"
                )
                ways = [ways[0] * skips, ways[1] * (skips + runs * own) + ways[0] * runs * own]
            row_total += ways[0] + ways[1] * row_others
        total *= row_total
    return total


def _slot_key(slot: Slot) -> tuple[int, int] | None:
    if slot.decision is None or slot.slot is None:
        return None
    return (slot.decision, slot.slot)


def fixed_architecture(space: Space) -> Architecture | None:
    """The one network of a fixed space (every choice a singleton, or only choices that
    skipped blocks ignore), else None."""
    if count_networks(space) != 1:
        return None
    lay = space.layout
    return decode(space, np.zeros((len(lay.decisions), lay.max_variables), dtype=np.int64))


# --------------------------------------------------------------------------------------
# Architectures: choice indices [decisions, max_variables] <-> readable blocks.


class BlockChoice(_Node):
    """The concrete choices of one block, as they appear in arch.json."""

    kernel: int
    act: str
    attention: str
    expansion: float
    channels: int


class Architecture(_Node):
    """One architecture of a space, in its readable form (what export and train read)."""

    space: str
    resolution: int
    in_channels: int
    classes: int
    blocks: tuple[BlockChoice, ...]


IndexArray: TypeAlias = npt.NDArray[np.int64]


def decode(space: Space, indices: npt.ArrayLike) -> Architecture:
    """Choice indices of shape [decisions, max_variables] -> readable architecture."""
    idx = np.asarray(indices, dtype=np.int64)
    blocks = []
    for spec in space.blocks:
        values = {name: _value(slot, idx) for name, slot in spec.variables.items()}
        blocks.append(BlockChoice.model_validate(values))
    return Architecture(
        space=space.name,
        resolution=space.resolution,
        in_channels=space.in_channels,
        classes=space.classes,
        blocks=tuple(blocks),
    )


def _value(slot: Slot, idx: IndexArray) -> Value:
    if slot.decision is None or slot.slot is None:
        return slot.choices[0]
    return slot.choices[int(idx[slot.decision, slot.slot])]


class ArchitectureMismatch(ValueError):
    """An architecture that does not belong to the space it is read against."""


def encode(space: Space, arch: Architecture) -> IndexArray:
    """Readable architecture -> choice indices; refuses one that the space cannot produce."""
    if len(arch.blocks) != len(space.blocks):
        raise ArchitectureMismatch(
            f"architecture has {len(arch.blocks)} blocks, space {space.name!r} has "
            f"{len(space.blocks)}"
        )
    lay = space.layout
    idx = np.full((len(lay.decisions), lay.max_variables), -1, dtype=np.int64)
    #: (decision, slot) -> the block that set it first (its value is shared with others)
    owner: dict[tuple[int, int], int] = {}
    for spec, block in zip(space.blocks, arch.blocks, strict=True):
        for name, slot in spec.variables.items():
            value = getattr(block, name)
            matches = [i for i, c in enumerate(slot.choices) if c == value]
            if not matches:
                raise ArchitectureMismatch(
                    f"block {spec.index + 1}: {name} {_short(value)} is not among "
                    f"{list(slot.choices)} in space {space.name!r}"
                )
            if slot.decision is None or slot.slot is None:
                continue
            previous = idx[slot.decision, slot.slot]
            if previous not in (-1, matches[0]):
                first = owner[(slot.decision, slot.slot)]
                key = (slot.decision, slot.slot)
                sharing = [
                    b.index + 1
                    for b in space.blocks
                    if (b.variables[name].decision, b.variables[name].slot) == key
                ]
                raise ArchitectureMismatch(
                    f"block {spec.index + 1}: {name} {_short(value)} differs from block "
                    f"{first + 1}'s "
                    f"{slot.choices[int(previous)]!r}; in space {space.name!r} one {name} is "
                    f"chosen for blocks {_ranges(sharing)} together, so they must agree"
                )
            idx[slot.decision, slot.slot] = matches[0]
            owner.setdefault((slot.decision, slot.slot), spec.index)
    idx[idx < 0] = 0
    return idx


def _short(value: object, limit: int = 40) -> str:
    """repr(value), cut to `limit` characters: a message never echoes a huge value."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _ranges(numbers: Sequence[int]) -> str:
    """[3, 4, 5, 9] -> '3-5, 9'."""
    out: list[str] = []
    for n in sorted(numbers):
        if out and n == int(out[-1].rpartition("-")[2]) + 1:
            out[-1] = f"{out[-1].partition('-')[0]}-{n}"
        else:
            out.append(str(n))
    return ", ".join(out)


def uniform_samples(space: Space, count: int, seed: int = 0) -> IndexArray:
    """`count` architectures drawn uniformly (numpy; for pricing and tests, not the search)."""
    rng = np.random.default_rng(seed)
    lay = space.layout
    out = np.zeros((count, len(lay.decisions), lay.max_variables), dtype=np.int64)
    for d, decision in enumerate(lay.decisions):
        for v, card in enumerate(decision.cardinalities):
            out[:, d, v] = rng.integers(0, card, size=count)
    return out


# --------------------------------------------------------------------------------------
# Channel arithmetic shared by the cost model and the networks.


def make_divisible(value: float, divisor: int) -> int:
    """Round to a multiple of divisor, never dropping more than 10% (MobileNet's rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


@dataclass(frozen=True)
class ConcreteBlock:
    """Every number a block needs to be built or priced."""

    in_channels: int
    out_channels: int
    mid_channels: int
    expansion: float
    kernel: int
    act: str
    attention: str
    stride: int
    micro: Micro
    skip_mismatch: Literal["forbid", "project", "shortcut"]
    op: OpName = "mbconv"

    @property
    def is_skip(self) -> bool:
        return self.kernel == SKIP_KERNEL

    @property
    def has_expand(self) -> bool:
        """Whether an MBConv or fused-MBConv has its expansion convolution."""
        return self.expansion != 1

    @property
    def has_residual(self) -> bool:
        """Whether the input is added to the output: where the shapes match for the
        MobileNet families, always for ResNet's blocks (projected where they differ),
        never for a plain conv."""
        if self.op in ("basic", "bottleneck"):
            return True
        return self.op != "conv" and self.identity_shape

    @property
    def identity_shape(self) -> bool:
        return self.stride == 1 and self.in_channels == self.out_channels

    @property
    def has_shortcut(self) -> bool:
        """A projection shortcut is added to this MBConv block's output."""
        return self.skip_mismatch == "shortcut" and self.op == "mbconv" and not self.identity_shape

    @property
    def splits(self) -> int:
        return ATTENTION_SPLITS[self.attention]

    @property
    def se_channels(self) -> int:
        return self.micro.se_channels(self.in_channels, self.mid_channels)

    @property
    def se_act(self) -> str:
        return self.micro.se_act_for(self.act)

    @property
    def sa_channels(self) -> int:
        width = int(self.mid_channels * self.splits * self.micro.sa_ratio)
        return max(width, self.micro.sa_min_width)


def mid_channels(
    space: Space,
    micro: Micro,
    in_ch: int,
    out_ch: int,
    expansion: float,
    op: OpName = "mbconv",
) -> int:
    """A block's inner width: MBConv's expanded (depthwise) width, expansion 1 meaning no
    expand conv, so the input's; fused-MBConv's expanded width, with expansion 1 its one
    conv's output; the depthwise width of `ds` (its input); a bottleneck's k x k width
    (always expansion x the base, as OFA's ResNets); the output for `conv` and `basic`
    (whose second conv reads it)."""
    if op in ("conv", "basic") or (op == "fused" and expansion == 1):
        return out_ch
    if op == "ds" or (expansion == 1 and op != "bottleneck"):
        return in_ch
    base = in_ch if space.expansion_of == "input" else out_ch
    return make_divisible(base * expansion, micro.divisor)


def concrete_blocks(space: Space, arch: Architecture) -> list[ConcreteBlock]:
    stem_out = space.stem[-1].out_channels if space.stem else space.in_channels
    in_ch = stem_out
    out: list[ConcreteBlock] = []
    for spec, choice in zip(space.blocks, arch.blocks, strict=True):
        mid = mid_channels(space, spec.micro, in_ch, choice.channels, choice.expansion, spec.op)
        out.append(
            ConcreteBlock(
                in_channels=in_ch,
                out_channels=choice.channels,
                mid_channels=mid,
                expansion=choice.expansion,
                kernel=choice.kernel,
                act=choice.act,
                attention=choice.attention,
                stride=spec.stride,
                micro=spec.micro,
                skip_mismatch=space.skip_mismatch,
                op=spec.op,
            )
        )
        in_ch = choice.channels
    return out
