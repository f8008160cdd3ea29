"""The standalone network of one architecture: `build_network(space, arch)`.

A builder in timm's manner: the architecture is decoded into `ConcreteBlock`s (plain
numbers, `ir.concrete_blocks`), and each becomes a block; the builder carries the input
channels from block to block, the blocks keep none. What `fpnas_dsl.cost` prices is
exactly this module: FLOPS = FlopCounterMode / 2, params = sum(p.numel()).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from torch import Tensor, nn

from fpnas_dsl.ir import (
    SKIP_KERNEL,
    Architecture,
    ConcreteBlock,
    Conv,
    Space,
    concrete_blocks,
    decode,
    encode,
)
from fpnas_dsl.nn.blocks import (
    BasicBlock,
    Bottleneck,
    ConvBnAct,
    DepthwiseSeparable,
    FusedMBConv,
    MBConv,
    SplitAttention,
    SqueezeExcite,
    init_weights,
    make_act,
    set_batchnorm,
)

__all__ = [
    "Network",
    "build_block",
    "build_network",
    "make_classifier",
    "make_layers",
    "resolve_arch",
]


class Network(nn.Module):
    """stem -> blocks -> head -> global average pool -> classifier."""

    def __init__(
        self,
        stem: nn.Sequential,
        blocks: nn.Sequential,
        head: nn.Sequential,
        classifier: nn.Sequential,
    ) -> None:
        super().__init__()
        self.stem = stem
        self.blocks = blocks
        self.head = head
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = classifier

    def forward_features(self, x: Tensor) -> Tensor:
        out: Tensor = self.head(self.blocks(self.stem(x)))
        return out

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.forward_features(x)).flatten(1)
        out: Tensor = self.classifier(x)
        return out


def resolve_arch(
    space: Space, arch: Architecture | npt.ArrayLike
) -> tuple[Architecture, np.ndarray]:
    """(readable architecture, choice indices) of an architecture given either way.

    A readable architecture is checked against the space (`ir.ArchitectureMismatch`).
    """
    if isinstance(arch, Architecture):
        return arch, encode(space, arch)
    idx = np.asarray(arch, dtype=np.int64)
    return decode(space, idx), idx


def build_block(block: ConcreteBlock) -> nn.Module:
    """One block of its operator (with its attention), or a skip (identity or projection)."""
    if block.kernel == SKIP_KERNEL:
        if block.identity_shape:
            return nn.Identity()
        if block.skip_mismatch == "forbid":
            raise ValueError(
                "skip where the block changes shape, and the space forbids a projection"
            )
        return ConvBnAct(block.in_channels, block.out_channels, 1, block.stride)
    cin, mid, cout = block.in_channels, block.mid_channels, block.out_channels
    k, stride, act = block.kernel, block.stride, block.act
    if block.op == "conv":
        return ConvBnAct(cin, cout, k, stride, act)
    if block.op == "basic":
        return BasicBlock(cin, cout, k, stride, act)
    if block.op == "bottleneck":
        return Bottleneck(cin, mid, cout, k, stride, act)
    attn: nn.Module | None = None
    splits = 1
    if block.splits == 1:
        attn = SqueezeExcite(mid, block.se_channels, block.micro.gate, block.se_act)
    elif block.splits >= 2:
        splits = block.splits
        attn = SplitAttention(mid, splits, block.sa_channels)
    if block.op == "fused":
        return FusedMBConv(cin, mid, cout, k, stride, act, expand=block.has_expand, attn=attn)
    if block.op == "ds":
        return DepthwiseSeparable(cin, cout, k, stride, act, attn=attn, splits=splits)
    shortcut = ConvBnAct(cin, cout, 1, stride) if block.has_shortcut else None
    return MBConv(
        cin,
        mid,
        cout,
        k,
        stride,
        act,
        expand=block.has_expand,
        attn=attn,
        splits=splits,
        shortcut=shortcut,
    )


def make_layers(convs: Sequence[Conv], cin: int) -> nn.Sequential:
    """The fixed stem or head layers: conv + BN (+ act), each with its maxpool if any."""
    layers: list[nn.Module] = []
    for conv in convs:
        layers.append(ConvBnAct(cin, conv.out_channels, conv.kernel, conv.stride, conv.act))
        if conv.maxpool:
            layers.append(nn.MaxPool2d(conv.maxpool, conv.maxpool_stride, conv.maxpool // 2))
        cin = conv.out_channels
    return nn.Sequential(*layers)


def make_classifier(space: Space, in_features: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for fc in space.classifier:
        out = fc.out_features if fc.out_features is not None else space.classes
        if fc.dropout > 0:
            layers.append(nn.Dropout(fc.dropout))
        layers.append(nn.Linear(in_features, out))
        if fc.act is not None:
            layers.append(make_act(fc.act))
        in_features = out
    return nn.Sequential(*layers)


def build_network(space: Space, arch: Architecture | npt.ArrayLike, init: bool = True) -> Network:
    """The standalone network of `arch` (readable, or choice indices [D, V]) in `space`.

    Built on the current default device (`with torch.device("meta"): ...` builds one
    without memory); `init=False` leaves PyTorch's default initialisation.
    """
    readable, _ = resolve_arch(space, arch)
    stem = make_layers(space.stem, space.in_channels)
    cin = space.stem[-1].out_channels if space.stem else space.in_channels
    blocks = []
    for block in concrete_blocks(space, readable):
        blocks.append(build_block(block))
        cin = block.out_channels
    head = make_layers(space.head, cin)
    cin = space.head[-1].out_channels if space.head else cin
    net = Network(stem, nn.Sequential(*blocks), head, make_classifier(space, cin))
    set_batchnorm(net, space.bn_eps, space.bn_momentum)
    if init:
        init_weights(net)
    return net
