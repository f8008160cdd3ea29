"""PyTorch modules built from the IR: the standalone network of one architecture and the
single-path weight-sharing supernet of a whole space."""

from fpnas_dsl.nn.blocks import ConvBnAct, MBConv, SplitAttention, SqueezeExcite
from fpnas_dsl.nn.network import Network, build_network
from fpnas_dsl.nn.supernet import Supernet

__all__ = [
    "ConvBnAct",
    "MBConv",
    "Network",
    "SplitAttention",
    "SqueezeExcite",
    "Supernet",
    "build_network",
]
