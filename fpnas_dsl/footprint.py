"""The shape of a space's supernet, without torch: its weight groups, widths and size.

`Supernet` builds its modules from `block_shape`, and `fpnas compile` and `fpnas search`
report `supernet_size` before anything is allocated, so both read one description:

- a block's (kernel, attention) candidates fall into weight groups by what its micro
  shares (`group_name`): everything shared is one group named after the operator
  (`mbconv`, `fused`, ...); kernels shared, one group per attention variant; attention
  shared, one per kernel; nothing shared, one per candidate (`k5_sa2`), as the paper
  has it;
- every group is held at the block's widest input, inner and output channels, with
  its kxk kernels at the group's largest size and as many depthwise filters per channel
  as its most split attention variant.

Every row operator and a stem maxpool have their supernet.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from fpnas_dsl.ir import (
    ATTENTION_SPLITS,
    RESNET_OPERATORS,
    SKIP_KERNEL,
    BlockSpec,
    Micro,
    Space,
    mid_channels,
    shapes_can_differ,
)

__all__ = [
    "BlockShape",
    "GroupShape",
    "available_memory",
    "block_shape",
    "disk_free",
    "group_name",
    "human_bytes",
    "supernet_size",
    "training_bytes",
]

#: Bytes of one float32 value.
FLOAT_BYTES = 4


def group_name(kernel: int, attention: str, share: Iterable[str], op: str = "mbconv") -> str:
    """Key of the weight group of candidate (kernel, attention): `k5_sa2` when nothing is
    shared, `sa2` with kernels shared, `k5` with attention shared, the operator's name
    (`mbconv`) with both."""
    shared = set(share)
    parts = [] if "kernel" in shared else [f"k{kernel}"]
    if "attention" not in shared:
        parts.append(attention)
    return "_".join(parts) or op


def radix(splits: int) -> int:
    """Depthwise filters per channel: the number of splits, 1 without split-attention."""
    return max(splits, 1)


@dataclass(frozen=True)
class GroupShape:
    """One weight group: its largest kernel and its attention variants, in ATTENTIONS order."""

    name: str
    kernel: int
    attentions: tuple[str, ...]

    @property
    def radices(self) -> tuple[int, ...]:
        return tuple(sorted({radix(ATTENTION_SPLITS[a]) for a in self.attentions}))

    @property
    def radix_max(self) -> int:
        return max(self.radices)


@dataclass(frozen=True)
class BlockShape:
    """The widest tensors of one block of the supernet."""

    op: str
    in_max: int
    mid_max: int
    out_max: int
    expand: bool
    groups: tuple[GroupShape, ...]
    #: (kernel, attention) -> name of its group.
    group_of: dict[tuple[int, str], str]
    #: attention variant -> its widest bottleneck (SE or split-attention).
    attention_width: dict[str, int]
    #: Whether the block holds a 1x1 conv + BN projection (it can change shape): what
    #: `skip` becomes, the residual branch of a shape-changing MBConv under `shortcut`,
    #: and ResNet's projection shortcut (`downsample`) of `basic` and `bottleneck`.
    projection: bool
    #: Whether every architecture gives this block a residual: stride 1 and the same
    #: channels, a projection shortcut wherever the shape changes (`shortcut`), or a
    #: ResNet block (always one).
    always_residual: bool


def _attention_width(micro: Micro, mids: dict[tuple[int, int, float], int], attention: str) -> int:
    splits = ATTENTION_SPLITS[attention]
    if splits == 1:
        return max(micro.se_channels(i, m) for (i, _, _), m in mids.items())
    if splits >= 2:
        return max(max(int(m * splits * micro.sa_ratio), micro.sa_min_width) for m in mids.values())
    return 0


def block_shape(space: Space, spec: BlockSpec) -> BlockShape:
    micro = spec.micro
    ins = [int(c) for c in spec.in_channels.choices]
    outs = [int(c) for c in spec.var("channels").choices]
    exps = [float(e) for e in spec.var("expansion").choices]
    op = spec.op
    mids = {
        (i, o, e): mid_channels(space, micro, i, o, e, op)
        for i, o, e in itertools.product(ins, outs, exps)
    }
    attentions = [str(a) for a in spec.var("attention").choices]
    members: dict[str, list[tuple[int, str]]] = {}
    for kernel in spec.var("kernel").choices:
        if kernel == SKIP_KERNEL:
            continue
        for attention in attentions:
            name = group_name(int(kernel), attention, micro.share, op)
            members.setdefault(name, []).append((int(kernel), attention))
    order = list(ATTENTION_SPLITS)
    groups = tuple(
        GroupShape(
            name,
            max(k for k, _ in cands),
            tuple(sorted({a for _, a in cands}, key=order.index)),
        )
        for name, cands in members.items()
    )
    can_differ = shapes_can_differ(space, spec.stride, spec.in_channels, spec.var("channels"))
    offers_skip = SKIP_KERNEL in spec.var("kernel").choices
    resnet = op in RESNET_OPERATORS
    if op == "mbconv":
        projection = can_differ and (
            space.skip_mismatch == "shortcut" or (space.skip_mismatch == "project" and offers_skip)
        )
        always_residual = not can_differ or space.skip_mismatch == "shortcut"
    else:
        # ResNet's blocks project their shortcut wherever the shape changes (and skip
        # keeps that projection alone); the others hold one only for skip.
        projection = can_differ and (resnet or (space.skip_mismatch != "forbid" and offers_skip))
        always_residual = resnet or (op != "conv" and not can_differ)
    return BlockShape(
        op=op,
        in_max=max(ins),
        mid_max=max(mids.values()),
        out_max=max(outs),
        expand=any(e != 1 for e in exps),
        groups=groups,
        group_of={c: name for name, cands in members.items() for c in cands},
        attention_width={a: _attention_width(micro, mids, a) for a in attentions},
        projection=projection,
        always_residual=always_residual,
    )


# --------------------------------------------------------------------------------------
# Size


def _bn(channels: int) -> tuple[int, int]:
    """(parameters, buffer values) of a batch-norm: gamma, beta; mean, var, count."""
    return 2 * channels, 2 * channels + 1


def _group_size(block: BlockShape, group: GroupShape) -> tuple[int, int]:
    """(parameters, buffer values) of one weight group, as `nn.sliced_ops` and
    `nn.sliced_mbconv` hold it."""
    cin, mid, cout, k2 = block.in_max, block.mid_max, block.out_max, group.kernel**2
    params = buffers = 0

    def bn(channels: int) -> None:
        nonlocal params, buffers
        p, b = _bn(channels)
        params += p
        buffers += b

    def attention(channels: int) -> None:
        nonlocal params
        for a in group.attentions:
            splits, width = ATTENTION_SPLITS[a], block.attention_width[a]
            if splits >= 1:
                out = channels * splits if splits >= 2 else channels
                params += channels * width + width + width * out + out

    if block.op == "conv":
        params += cin * cout * k2
        bn(cout)
    elif block.op == "basic":
        params += cin * cout * k2 + cout * cout * k2
        bn(cout)
        bn(cout)
    elif block.op == "bottleneck":
        params += cin * mid + mid * mid * k2 + mid * cout
        bn(mid)
        bn(mid)
        bn(cout)
    elif block.op == "fused":
        params += cin * mid * k2
        bn(mid)
        attention(mid)
        if block.expand:
            params += mid * cout
            bn(cout)
    elif block.op == "ds":
        params += cin * group.radix_max * k2
        for r in group.radices:
            bn(cin * r)
        attention(cin)
        params += cin * cout
        bn(cout)
    else:
        if block.expand:
            params += cin * mid
            bn(mid)
        params += mid * group.radix_max * k2
        for r in group.radices:
            bn(mid * r)
        attention(mid)
        params += mid * cout
        bn(cout)
    return params, buffers


def supernet_size(space: Space) -> dict[str, int]:
    """Parameters and buffer values of `Supernet(space)`, and the bytes they take in
    float32 (`bytes`) and in a search checkpoint (`checkpoint_bytes`: weights, SGD
    momentum and batch-norm statistics). Refuses a space the supernet cannot hold."""
    params = buffers = 0

    def conv_bn(cin: int, cout: int, kernel: int) -> None:
        nonlocal params, buffers
        p, b = _bn(cout)
        params += cin * cout * kernel * kernel + p
        buffers += b

    cin = space.in_channels
    for conv in space.stem:
        conv_bn(cin, conv.out_channels, conv.kernel)
        cin = conv.out_channels
    # Blocks of one row repeat the same shape: price each distinct shape once.
    priced: dict[tuple[object, ...], tuple[int, int]] = {}
    for spec in space.blocks:
        key = (
            spec.op,
            spec.micro.name,
            spec.stride,
            spec.in_channels.choices,
            shapes_can_differ(space, spec.stride, spec.in_channels, spec.var("channels")),
            tuple((name, slot.choices) for name, slot in sorted(spec.variables.items())),
        )
        if key not in priced:
            block = block_shape(space, spec)
            p = b = 0
            for group in block.groups:
                gp, gb = _group_size(block, group)
                p += gp
                b += gb
            if block.projection:
                pp, pb = _bn(block.out_max)
                p += block.in_max * block.out_max + pp
                b += pb
            priced[key] = (p, b)
        p, b = priced[key]
        params += p
        buffers += b
    if space.blocks:
        cin = max(int(c) for c in space.blocks[-1].var("channels").choices)
    for conv in space.head:
        conv_bn(cin, conv.out_channels, conv.kernel)
        cin = conv.out_channels
    for fc in space.classifier:
        out = fc.out_features if fc.out_features is not None else space.classes
        params += cin * out + out
        cin = out
    return {
        "params": params,
        "buffers": buffers,
        "bytes": (params + buffers) * FLOAT_BYTES,
        "checkpoint_bytes": (2 * params + buffers) * FLOAT_BYTES,
    }


def training_bytes(size: dict[str, int]) -> int:
    """The least memory that training the supernet takes: weights, their gradients and
    SGD momentum, batch-norm statistics, in float32 (activations come on top)."""
    return (3 * size["params"] + size["buffers"]) * FLOAT_BYTES


# --------------------------------------------------------------------------------------
# What the machine has


def _meminfo_available() -> int | None:
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


def _cgroup_available() -> int | None:
    """Memory left under a cgroup v2 limit (a container's), where there is one."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        current = Path("/sys/fs/cgroup/memory.current").read_text().strip()
    except OSError:
        return None
    if limit == "max" or not limit.isdigit() or not current.isdigit():
        return None
    return max(int(limit) - int(current), 0)


def available_memory() -> int | None:
    """Bytes of memory a new allocation can have (None where the system does not say)."""
    known = [v for v in (_meminfo_available(), _cgroup_available()) if v is not None]
    if not known:
        try:
            known.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return None
    return min(known)


def disk_free(path: Path) -> int | None:
    """Free bytes on the file system that holds `path` (or would: its nearest parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def human_bytes(n: float) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} B"
