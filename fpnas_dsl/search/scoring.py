"""Scoring one architecture with the supernet's weights.

The supernet's running batch-norm statistics mix every architecture it has run, so an
architecture is scored on its standalone network (`Supernet.subnet`) after its own
statistics are re-estimated on training batches (as SPOS and Once-for-All do): a
cumulative average over the calibration batches, then test accuracy in eval mode.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy.typing as npt
import torch
from torch import Tensor, nn

from fpnas_dsl.ir import Architecture
from fpnas_dsl.nn import Supernet

__all__ = ["recalibrate_batch_norm", "supernet_accuracy", "supernet_counts"]


@torch.no_grad()
def recalibrate_batch_norm(net: nn.Module, images: Iterable[Tensor]) -> None:
    """Every batch-norm's running statistics := their average over `images` batches."""
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    was_training = net.training
    net.train()
    for x in images:
        net(x)
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    net.train(was_training)


def supernet_accuracy(
    supernet: Supernet,
    arch: Architecture | npt.ArrayLike,
    calibration: Iterable[Tensor],
    test: Iterable[tuple[Tensor, Tensor]],
    prepare: Callable[[Tensor], Tensor] = lambda x: x,
) -> float:
    """Top-1 accuracy of `arch` under the supernet's weights: its standalone network,
    batch-norm re-estimated on `calibration` (uint8 or float batches, through `prepare`),
    then scored on `test` (images, labels) in eval mode."""
    correct, seen = supernet_counts(supernet, arch, calibration, test, prepare)
    return correct / max(seen, 1)


@torch.no_grad()
def supernet_counts(
    supernet: Supernet,
    arch: Architecture | npt.ArrayLike,
    calibration: Iterable[Tensor],
    test: Iterable[tuple[Tensor, Tensor]],
    prepare: Callable[[Tensor], Tensor] = lambda x: x,
) -> tuple[int, int]:
    """(correct, seen) of `supernet_accuracy`: counts that ranks can add up."""
    net = supernet.subnet(arch)
    recalibrate_batch_norm(net, (prepare(x) for x in calibration))
    net.eval()
    correct = seen = 0
    for x, y in test:
        logits = net(prepare(x))
        correct += int((logits.argmax(1).cpu() == y.cpu()).sum())
        seen += len(y)
    return correct, seen
