"""The standalone network of one architecture: `build_network(space, arch)`.

A builder in timm's manner: the architecture is decoded into `ConcreteBlock`s (plain
numbers, `ir.concrete_blocks`), and each becomes a block; the builder carries the input
channels from block to block, the blocks keep none. What `fpnas_dsl.cost` prices is
exactly this module: FLOPS = FlopCounterMode / 2, params = sum(p.numel()).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from torch import Tensor, nn

from fpnas_dsl.ir import (
    SKIP_KERNEL,
    Architecture,
    ConcreteBlock,
    Space,
    concrete_blocks,
    decode,
    encode,
)
from fpnas_dsl.nn.blocks import (
    ConvBnAct,
    MBConv,
    SplitAttention,
    SqueezeExcite,
    init_weights,
    make_act,
    set_batchnorm,
)

__all__ = ["Network", "build_block", "build_network", "make_classifier", "resolve_arch"]


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
    """One block: MBConv with its attention, or a skip (identity or projection)."""
    if block.kernel == SKIP_KERNEL:
        if block.identity_shape:
            return nn.Identity()
        if block.skip_mismatch == "forbid":
            raise ValueError(
                "skip where the block changes shape, and the space forbids a projection"
            )
        return ConvBnAct(block.in_channels, block.out_channels, 1, block.stride)
    attn: nn.Module | None = None
    splits = 1
    if block.splits == 1:
        attn = SqueezeExcite(block.mid_channels, block.se_channels, block.micro.gate, block.se_act)
    elif block.splits >= 2:
        splits = block.splits
        attn = SplitAttention(block.mid_channels, splits, block.sa_channels)
    return MBConv(
        block.in_channels,
        block.mid_channels,
        block.out_channels,
        block.kernel,
        block.stride,
        block.act,
        expand=block.has_expand,
        attn=attn,
        splits=splits,
        shortcut=ConvBnAct(block.in_channels, block.out_channels, 1, block.stride)
        if block.has_shortcut
        else None,
    )


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
    cin = space.in_channels
    stem = []
    for conv in space.stem:
        stem.append(ConvBnAct(cin, conv.out_channels, conv.kernel, conv.stride, conv.act))
        cin = conv.out_channels
    blocks = []
    for block in concrete_blocks(space, readable):
        blocks.append(build_block(block))
        cin = block.out_channels
    head = []
    for conv in space.head:
        head.append(ConvBnAct(cin, conv.out_channels, conv.kernel, conv.stride, conv.act))
        cin = conv.out_channels
    net = Network(
        nn.Sequential(*stem),
        nn.Sequential(*blocks),
        nn.Sequential(*head),
        make_classifier(space, cin),
    )
    set_batchnorm(net, space.bn_eps, space.bn_momentum)
    if init:
        init_weights(net)
    return net
