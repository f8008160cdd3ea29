"""Latency as a cost beside FLOPS: a table measured on the user's machine, priced vectorised.

A block's latency is the sum of its parts, each keyed by a readable signature that holds
every number the part's speed depends on:

- `expand 14px 16>72 swish`: the 1x1 expansion (conv, batch-norm, activation);
- `dw 14px s2 k5 72x2 swish`: the depthwise convolution (x2: two splits per channel);
- `se 7px 72>24 relu/hsigmoid`, `sa2 7px 72>32`: squeeze-excite or split-attention;
- `project 7px 72>24 +res`: the 1x1 projection (and the residual sum, `+res`);
- `proj 14px s2 16>24`: a skipped block that must change shape (1x1 conv + BN), or the
  projection shortcut of a shape-changing MBConv (`skip where shapes differ: shortcut`)
  or ResNet block (always);
- `conv 14px s2 k3 16>64 relu`: a kxk conv + BN + act (`+res`: with the residual sum):
  a `conv` row's block, fused-MBConv's expansion, ResNet's strided convolution;
- `tail 7px k3 64>64 relu +res`: a ResNet block's last conv + BN, the shortcut's sum and
  the activation;
- `stem 28px ...`, `head 4px 56 ...`: the fixed stem (its maxpool too), and head + pool +
  classifier per width of the last block.

Every operator's block is a sum of these (`block_parts`). An identity skip costs nothing.
Parts, not whole blocks, are measured because a space's blocks multiply out to tens of
thousands of configurations (FBNetV2-F++: ~27,000) while their parts number a few
thousand, each shared by many blocks (BENCHMARKS.md, issue 16).

The table (`LatencyTable`, a JSON file written by `fpnas latency`) records each part's
robust latency (median over repetitions, after warm-up), how it was measured (machine,
backend, device, threads, batch, versions) and two corrections: `call_overhead_s`, the
cost of timing an empty call, taken off every part (a network pays it once, not once per
part), and `network_overhead_s`, a per-network constant fitted on end-to-end measurements
of random networks (what the sum of parts misses: allocation, cache effects, the
framework's per-network work).

`LatencyModel(space, table)` turns the table into one array per block over the block's
choice slots (input and output channels, expansion, kernel, activation, attention), so
the latency of a batch of architectures is one gather and one sum, as `cost.CostModel`
prices FLOPS. A table that does not match the space is refused (`TableMismatch`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeAlias

import numpy as np
import numpy.typing as npt

from fpnas_dsl.cost import _align, _factor, conv_out_size
from fpnas_dsl.errors import FpnasError
from fpnas_dsl.ir import (
    SKIP_KERNEL,
    BlockSpec,
    ConcreteBlock,
    Slot,
    Space,
    VarName,
    mid_channels,
    uniform_samples,
)
from fpnas_dsl.runfiles import write_json_atomic

__all__ = [
    "FORMAT",
    "LatencyModel",
    "LatencyTable",
    "Part",
    "TableMismatch",
    "block_parts",
    "format_seconds",
    "latency_model",
    "parse_duration",
    "space_parts",
]

FORMAT = "fpnas-latency/1"
Backend: TypeAlias = Literal["torch", "onnxruntime"]
FloatArray: TypeAlias = npt.NDArray[np.float64]
VarId: TypeAlias = tuple[int, int]

#: Slots of a block term, in this order (FLOPS ignore the activation, latency does not).
LATENCY_AXES = ("in", "channels", "expansion", "kernel", "act", "attention")
_BLOCK_VARIABLES: tuple[VarName, ...] = ("channels", "expansion", "kernel", "act", "attention")
_CHUNK = 1 << 15


class TableMismatch(FpnasError):
    """A latency table that was not measured for this space (or lacks some of its parts)."""


@dataclass(frozen=True)
class Part:
    """One measurable part of a network: its signature and how to build it."""

    signature: str
    kind: str
    params: tuple[tuple[str, Any], ...]

    def param(self, name: str) -> Any:
        return dict(self.params)[name]

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **dict(self.params)}


def _part(kind: str, signature: str, **params: Any) -> Part:
    return Part(signature, kind, tuple(sorted(params.items())))


def _expand_part(size: int, cin: int, cout: int, act: str) -> Part:
    return _part(
        "expand", f"expand {size}px {cin}>{cout} {act}", size=size, cin=cin, cout=cout, act=act
    )


def _conv_part(
    size: int, stride: int, kernel: int, cin: int, cout: int, act: str, residual: bool = False
) -> Part:
    return _part(
        "conv",
        f"conv {size}px s{stride} k{kernel} {cin}>{cout} {act}{' +res' if residual else ''}",
        size=size,
        stride=stride,
        kernel=kernel,
        cin=cin,
        cout=cout,
        act=act,
        residual=residual,
    )


def _dw_part(size: int, stride: int, kernel: int, chs: int, splits: int, act: str) -> Part:
    width = max(splits, 1)
    return _part(
        "dw",
        f"dw {size}px s{stride} k{kernel} {chs}x{width} {act}",
        size=size,
        chs=chs,
        splits=width,
        kernel=kernel,
        stride=stride,
        act=act,
    )


def _attention_parts(block: ConcreteBlock, size: int, chs: int) -> list[Part]:
    """The squeeze-excite or split-attention over `chs` (the block's inner) channels."""
    splits = block.splits
    if splits == 1:
        se, se_act, gate = block.se_channels, block.se_act, block.micro.gate
        return [
            _part(
                "se",
                f"se {size}px {chs}>{se} {se_act}/{gate}",
                size=size,
                chs=chs,
                rd=se,
                act=se_act,
                gate=gate,
            )
        ]
    if splits >= 2:
        sa = block.sa_channels
        return [
            _part("sa", f"sa{splits} {size}px {chs}>{sa}", size=size, chs=chs, splits=splits, rd=sa)
        ]
    return []


def _project_part(size: int, cin: int, cout: int, residual: bool) -> Part:
    return _part(
        "project",
        f"project {size}px {cin}>{cout}{' +res' if residual else ''}",
        size=size,
        cin=cin,
        cout=cout,
        residual=residual,
    )


def _tail_part(size: int, kernel: int, cin: int, cout: int, act: str) -> Part:
    """A ResNet block's end: its last conv and batch-norm, the shortcut's sum, the act."""
    return _part(
        "tail",
        f"tail {size}px k{kernel} {cin}>{cout} {act} +res",
        size=size,
        kernel=kernel,
        cin=cin,
        cout=cout,
        act=act,
    )


def block_parts(block: ConcreteBlock, size_in: int) -> list[Part]:
    """The parts of one concrete block whose input is `size_in` x `size_in` pixels, the
    layers of the block `nn.network.build_block` builds, by its operator:

    - mbconv: [expand] dw [se|sa] [proj, the shortcut] project;
    - fused: conv (the kxk expansion) [se] project, or with expansion 1 the one conv [se];
    - ds: dw [se|sa] project (the 1x1 pointwise);
    - conv: conv;
    - basic: conv [proj] tail; bottleneck: expand (the 1x1) conv [proj] tail, where
      proj is ResNet's projection shortcut of a block that changes shape.

    A skip is nothing, or the projection where the block changes shape."""
    cin, cout, s, op = block.in_channels, block.out_channels, block.stride, block.op
    size_out = conv_out_size(size_in, 1, s)
    projection = _part(
        "proj", f"proj {size_in}px s{s} {cin}>{cout}", size=size_in, cin=cin, cout=cout, stride=s
    )
    if block.kernel == SKIP_KERNEL:
        return [] if block.identity_shape else [projection]
    mid, k, act = block.mid_channels, block.kernel, block.act
    shortcut = [] if block.identity_shape else [projection]
    if op == "conv":
        return [_conv_part(size_in, s, k, cin, cout, act)]
    if op == "basic":
        return [
            _conv_part(size_in, s, k, cin, cout, act),
            *shortcut,
            _tail_part(size_out, k, cout, cout, act),
        ]
    if op == "bottleneck":
        return [
            _expand_part(size_in, cin, mid, act),
            _conv_part(size_in, s, k, mid, mid, act),
            *shortcut,
            _tail_part(size_out, 1, mid, cout, act),
        ]
    residual = block.identity_shape
    if op == "fused":
        if not block.has_expand:  # one conv makes the output; the residual sums after it
            return [
                _conv_part(size_in, s, k, cin, cout, act, residual),
                *_attention_parts(block, size_out, cout),
            ]
        return [
            _conv_part(size_in, s, k, cin, mid, act),
            *_attention_parts(block, size_out, mid),
            _project_part(size_out, mid, cout, residual),
        ]
    if op == "ds":
        return [
            _dw_part(size_in, s, k, cin, block.splits, act),
            *_attention_parts(block, size_out, cin),
            _project_part(size_out, cin, cout, residual),
        ]
    parts = [_expand_part(size_in, cin, mid, act)] if block.has_expand else []
    parts.append(_dw_part(size_in, s, k, mid, block.splits, act))
    parts += _attention_parts(block, size_out, mid)
    if block.has_shortcut:
        parts.append(projection)
    parts.append(_project_part(size_out, mid, cout, residual or block.has_shortcut))
    return parts


def _conv_text(convs: Iterable[Any]) -> str:
    return " ".join(
        f"{c.kernel}x{c.kernel}/{c.stride}:{c.out_channels}{'/' + c.act if c.act else ''}"
        f"{f' maxpool{c.maxpool}/{c.maxpool_stride}' if c.maxpool else ''}"
        for c in convs
    )


def stem_part(space: Space) -> tuple[Part | None, int]:
    """The fixed stem (None without one), its maxpools included, and the size it leaves."""
    size = space.resolution
    for conv in space.stem:
        size = conv_out_size(size, conv.kernel, conv.stride)
        if conv.maxpool:
            size = conv_out_size(size, conv.maxpool, conv.maxpool_stride)
    if not space.stem:
        return None, size
    sig = f"stem {space.resolution}px {space.in_channels}ch {_conv_text(space.stem)}"
    return _part("stem", sig, size=space.resolution, cin=space.in_channels), size


def head_part(space: Space, cin: int, size: int) -> Part:
    fcs = " ".join(
        f"fc{fc.out_features if fc.out_features is not None else space.classes}"
        f"{'/' + fc.act if fc.act else ''}"
        for fc in space.classifier
    )
    head = _conv_text(space.head) or "-"
    return _part("head", f"head {size}px {cin} {head} pool {fcs}", size=size, cin=cin)


@dataclass(frozen=True)
class _Term:
    name: str
    variables: tuple[VarId | None, ...]
    #: Per consistent choice combination (a tuple of slot choice indices): its parts.
    parts: dict[tuple[int, ...], tuple[str, ...]]
    shape: tuple[int, ...]


def _var_id(slot: Slot) -> VarId | None:
    if slot.decision is None or slot.slot is None:
        return None
    return (slot.decision, slot.slot)


def _block_term(space: Space, spec: BlockSpec, size_in: int, catalogue: dict[str, Part]) -> _Term:
    slots = (spec.in_channels, *(spec.var(n) for n in _BLOCK_VARIABLES))
    variables = tuple(_var_id(s) for s in slots)
    unique = list(dict.fromkeys(v for v in variables if v is not None))
    sizes = {v: len(slots[variables.index(v)].choices) for v in unique}
    parts: dict[tuple[int, ...], tuple[str, ...]] = {}
    for assignment in itertools.product(*(range(sizes[v]) for v in unique)):
        chosen = dict(zip(unique, assignment, strict=True))
        index = tuple(0 if v is None else chosen[v] for v in variables)
        cin, cout, exp, kernel, act, attention = (
            s.choices[i] for s, i in zip(slots, index, strict=True)
        )
        block = ConcreteBlock(
            in_channels=int(cin),
            out_channels=int(cout),
            mid_channels=mid_channels(space, spec.micro, int(cin), int(cout), float(exp), spec.op),
            expansion=float(exp),
            kernel=int(kernel),
            act=str(act),
            attention=str(attention),
            stride=spec.stride,
            micro=spec.micro,
            skip_mismatch=space.skip_mismatch,
            op=spec.op,
        )
        if block.is_skip and not block.identity_shape and space.skip_mismatch == "forbid":
            continue  # the space never offers it
        found = block_parts(block, size_in)
        for p in found:
            catalogue.setdefault(p.signature, p)
        parts[index] = tuple(p.signature for p in found)
    return _Term(f"block{spec.index + 1}", variables, parts, tuple(len(s.choices) for s in slots))


@dataclass(frozen=True)
class SpaceParts:
    """Every part a space's networks are made of, and which parts each block choice uses."""

    constant: tuple[str, ...]
    terms: tuple[_Term, ...]
    catalogue: dict[str, Part]


def space_parts(space: Space) -> SpaceParts:
    """The parts of every architecture of `space` (each signature once)."""
    catalogue: dict[str, Part] = {}
    stem, size = stem_part(space)
    constant: tuple[str, ...] = ()
    if stem is not None:
        catalogue[stem.signature] = stem
        constant = (stem.signature,)
    terms = []
    stem_out = space.stem[-1].out_channels if space.stem else space.in_channels
    last = Slot("channels", (stem_out,))
    for spec in space.blocks:
        terms.append(_block_term(space, spec, size, catalogue))
        size = conv_out_size(size, 1, spec.stride)
        last = spec.var("channels")
    head_parts: dict[tuple[int, ...], tuple[str, ...]] = {}
    for i, cin in enumerate(last.choices):
        p = head_part(space, int(cin), size)
        catalogue.setdefault(p.signature, p)
        head_parts[(i,)] = (p.signature,)
    terms.append(_Term("head", (_var_id(last),), head_parts, (len(last.choices),)))
    return SpaceParts(constant, tuple(terms), catalogue)


# ------------------------------------------------------------------------------------
# The table file.


@dataclass
class LatencyTable:
    """A measured table: what was measured, how, and each part's seconds."""

    space: str
    resolution: int
    in_channels: int
    classes: int
    device: str
    backend: str
    batch: int
    threads: int
    method: dict[str, Any]
    machine: dict[str, Any]
    entries: dict[str, dict[str, Any]]
    call_overhead_s: float = 0.0
    network_overhead_s: float | None = None
    part_overhead_s: float | None = None
    calibration: dict[str, Any] | None = None
    source: str = "<table>"

    @property
    def clock(self) -> str:
        return str(self.method.get("clock", "wall"))

    @property
    def setting(self) -> dict[str, Any]:
        """What must match for two runs to fill the same table."""
        return {
            "space": self.space,
            "resolution": self.resolution,
            "in_channels": self.in_channels,
            "classes": self.classes,
            "device": self.device,
            "backend": self.backend,
            "batch": self.batch,
            "threads": self.threads,
            "clock": self.clock,
            "ort_level": self.method.get("ort_level"),
        }

    def seconds(self, signature: str) -> float:
        """A part's latency with the per-call overhead taken off (never below zero)."""
        return max(0.0, float(self.entries[signature]["seconds"]) - self.call_overhead_s)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            **self.setting,
            "method": self.method,
            "machine": self.machine,
            "call_overhead_s": self.call_overhead_s,
            "network_overhead_s": self.network_overhead_s,
            "part_overhead_s": self.part_overhead_s,
            "calibration": self.calibration,
            "entries": dict(sorted(self.entries.items())),
        }

    def digest(self) -> str:
        """What the table says, whatever file holds it (recorded by a search that uses it)."""
        text = json.dumps(self.to_json(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def save(self, path: Path) -> None:
        write_json_atomic(path, self.to_json())

    @classmethod
    def load(cls, path: Path | str) -> LatencyTable:
        path = Path(path)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FpnasError(
                f"{path}: no such latency table (build one with `fpnas latency SPACE -o {path}`)"
            ) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FpnasError(f"{path}: not a latency table ({exc})") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise FpnasError(
                f'{path}: not a latency table (expected "format": "{FORMAT}", as '
                "`fpnas latency` writes)"
            )
        try:
            entries = doc["entries"]
            if not isinstance(entries, dict) or not all(
                isinstance(e, dict) and isinstance(e.get("seconds"), (int, float))
                for e in entries.values()
            ):
                raise TypeError('entries must map signatures to {"seconds": ...}')
            return cls(
                space=str(doc["space"]),
                resolution=int(doc["resolution"]),
                in_channels=int(doc["in_channels"]),
                classes=int(doc["classes"]),
                device=str(doc["device"]),
                backend=str(doc["backend"]),
                batch=int(doc["batch"]),
                threads=int(doc["threads"]),
                method=dict(doc.get("method") or {}),
                machine=dict(doc.get("machine") or {}),
                entries=entries,
                call_overhead_s=float(doc.get("call_overhead_s") or 0.0),
                network_overhead_s=None
                if doc.get("network_overhead_s") is None
                else float(doc["network_overhead_s"]),
                part_overhead_s=None
                if doc.get("part_overhead_s") is None
                else float(doc["part_overhead_s"]),
                calibration=doc.get("calibration"),
                source=str(path),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise FpnasError(f"{path}: a malformed latency table ({exc})") from None

    def check_space(self, space: Space, parts: SpaceParts | None = None) -> None:
        """Refuse a table measured for another space or input, or lacking parts."""
        where = self.source
        name = space.source if Path(space.source).is_file() else space.name
        shape = (
            f"--resolution {space.resolution} --in-channels {space.in_channels} "
            f"--classes {space.classes}"
        )
        if self.space != space.name:
            raise TableMismatch(
                f"{where}: a latency table of space {self.space!r}, not of {space.name!r}; "
                f"build one with `fpnas latency {name} {shape} -o TABLE.json`"
            )
        for field in ("resolution", "in_channels", "classes"):
            mine, theirs = getattr(self, field), getattr(space, field)
            if mine != theirs:
                raise TableMismatch(
                    f"{where}: measured at {field.replace('_', ' ')} {mine}, the space is "
                    f"searched at {theirs}; build a table with `fpnas latency {name} "
                    f"{shape} -o TABLE.json`"
                )
        parts = parts or space_parts(space)
        missing = [s for s in parts.catalogue if s not in self.entries]
        if missing:
            clock = " --clock cpu" if self.clock == "cpu" else ""
            if self.method.get("ort_level"):
                clock += f" --ort-level {self.method['ort_level']}"
            raise TableMismatch(
                f"{where}: lacks {len(missing)} of the {len(parts.catalogue)} parts of "
                f"{space.name} (first: {missing[0]!r}); finish it with `fpnas latency "
                f"{name} {shape} --backend {self.backend} --device {self.device} "
                f"--batch {self.batch} --threads {self.threads}{clock} -o {where}` "
                "(it resumes)"
            )


# ------------------------------------------------------------------------------------
# The vectorised model.


class LatencyModel:
    """Per-block latency arrays of one space from one table; prices choice-index arrays."""

    def __init__(self, space: Space, table: LatencyTable, parts: SpaceParts | None = None) -> None:
        parts = parts or space_parts(space)
        table.check_space(space, parts)
        self.space, self.table = space, table
        layout = space.layout
        self.shape = (len(layout.decisions), layout.max_variables)
        # The fitted corrections: per network, and per part the network runs.
        self.overhead = table.network_overhead_s or 0.0
        self.part_overhead = table.part_overhead_s or 0.0
        self.constant = sum(self._part(s) for s in parts.constant)
        self.terms = parts.terms
        self._constant_parts = parts.constant
        self.arrays: list[FloatArray] = []
        self.counts: list[FloatArray] = []
        for term in parts.terms:
            # Combinations no architecture has (say, in != out where both are one
            # variable) stay NaN: a gather never reads them.
            arr = np.full(term.shape, np.nan)
            count = np.full(term.shape, np.nan)
            for index, sigs in term.parts.items():
                arr[index] = sum(self._part(s) for s in sigs)
                count[index] = len(sigs)
            self.arrays.append(arr)
            self.counts.append(count)
        width = max(len(t.variables) for t in self.terms)
        terms = len(self.terms)
        self._dec = np.zeros((terms, width), dtype=np.intp)
        self._slot = np.zeros((terms, width), dtype=np.intp)
        self._stride = np.zeros((terms, width), dtype=np.int64)
        self._offset = np.zeros(terms, dtype=np.int64)
        self._chosen = np.zeros((terms, width), dtype=bool)
        offset = 0
        for t, (term, arr) in enumerate(zip(self.terms, self.arrays, strict=True)):
            strides = np.cumprod((*arr.shape[1:], 1)[::-1])[::-1]
            for a, variable in enumerate(term.variables):
                if variable is not None:
                    self._dec[t, a], self._slot[t, a] = variable
                    self._stride[t, a] = strides[a]
                    self._chosen[t, a] = True
            self._offset[t] = offset
            offset += arr.size
        self._flat = np.concatenate([a.ravel() for a in self.arrays])
        self._flat_counts = np.concatenate([c.ravel() for c in self.counts])

    def _part(self, signature: str) -> float:
        """A part's seconds with the fitted per-part correction, never below zero."""
        return max(0.0, self.table.seconds(signature) + self.part_overhead)

    def price(self, idx: npt.ArrayLike) -> FloatArray:
        """Predicted seconds per batch of `table.batch` images: indices [..., D, V] -> [...]."""
        out = self._gathered(idx, self._flat)
        total: FloatArray = np.maximum(out + self.constant + self.overhead, 0.0)
        return total

    def part_counts(self, idx: npt.ArrayLike) -> FloatArray:
        """How many measured parts each architecture runs (for fitting the overheads)."""
        out: FloatArray = self._gathered(idx, self._flat_counts) + len(self._constant_parts)
        return out

    def _gathered(self, idx: npt.ArrayLike, flat_table: FloatArray) -> FloatArray:
        arr = np.asarray(idx)
        if arr.ndim < 2 or arr.shape[-2:] != self.shape:
            raise ValueError(
                f"choice indices must have shape [..., {self.shape[0]}, {self.shape[1]}] "
                f"for space {self.space.name!r}, got {list(arr.shape)}"
            )
        lead = arr.shape[:-2]
        rows = arr.reshape(math.prod(lead), *self.shape)
        out = np.empty(len(rows), dtype=np.float64)
        for start in range(0, len(rows), _CHUNK):
            chunk = rows[start : start + _CHUNK]
            if self.shape[0] == 0:  # a fixed network (no decision): each term's one entry
                gathered = np.zeros((len(chunk), *self._dec.shape), dtype=np.int64)
            else:
                gathered = chunk[:, self._dec, self._slot].astype(np.int64) * self._chosen
            flat = (gathered * self._stride).sum(-1) + self._offset
            out[start : start + _CHUNK] = flat_table[flat].sum(-1)
        if np.isnan(out).any():
            raise ValueError(f"choice indices that space {self.space.name!r} cannot produce")
        shaped: FloatArray = out.reshape(lead)
        return shaped

    def extreme(self, mode: Literal["min", "max"]) -> float:
        """The exact least or greatest predicted latency over the space (as `CostModel.extreme`)."""
        reduce = np.nanmin if mode == "min" else np.nanmax
        last_use: dict[VarId, int] = {}
        for t, term in enumerate(self.terms):
            for variable in term.variables:
                if variable is not None:
                    last_use[variable] = t
        message: Any = np.zeros(())
        message_vars: list[VarId] = []
        for t, (term, arr) in enumerate(zip(self.terms, self.arrays, strict=True)):
            factor, factor_vars = _factor(arr, term.variables)  # type: ignore[arg-type]
            union = message_vars + [v for v in factor_vars if v not in message_vars]
            total = _align(message, message_vars, union) + _align(factor, factor_vars, union)
            gone = tuple(i for i, v in enumerate(union) if last_use[v] <= t)
            message = reduce(total, axis=gone) if gone else total
            message_vars = [v for v in union if last_use[v] > t]
        return max(0.0, float(message) + self.constant + self.overhead)

    def summary(self, samples: int = 2000, seed: int = 0) -> dict[str, float]:
        """Exact min and max, and the lower median of uniform samples (seconds)."""
        values = np.sort(self.price(uniform_samples(self.space, max(samples, 1), seed)))
        return {
            "latency_min": self.extreme("min"),
            "latency_median": float(values[(len(values) - 1) // 2]),
            "latency_max": self.extreme("max"),
        }


def latency_model(space: Space, table: LatencyTable | Path | str) -> LatencyModel:
    """The latency model of `space` from a table (or its path); `TableMismatch` if foreign."""
    if not isinstance(table, LatencyTable):
        table = LatencyTable.load(table)
    return LatencyModel(space, table)


# ------------------------------------------------------------------------------------
# Durations as users write them.

_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6}


def parse_duration(text: str | float) -> float:
    """`3ms`, `800us`, `0.01s` -> seconds; a bare number is refused (which unit?)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    value = str(text).strip().lower().replace(" ", "")
    for unit in sorted(_UNITS, key=len, reverse=True):
        if value.endswith(unit):
            number = value[: -len(unit)]
            try:
                seconds = float(number) * _UNITS[unit]
            except ValueError:
                break
            if not math.isfinite(seconds) or seconds <= 0:
                break
            return seconds
    raise ValueError(
        f"{text!r} is not a duration; give a number above 0 with a unit: 3ms, 800us, 0.01s"
    )


def format_seconds(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.3g} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} us"
