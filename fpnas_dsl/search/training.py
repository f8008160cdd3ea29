"""How the sampled strategies train the supernet's weights (omega): one small seam.

Per iteration the sampled strategy (`fpnas_dsl.search.sampled`) draws K architectures
and weighs them (m_omega); then a `TrainingPolicy` updates the weights' gradients with
them. The policy is chosen by the `training_policy` setting (`policy_for`); it is given

- `train(context, epoch, archs, m_omega, x_train, y_train)`: the loop's services
  (`fpnas_dsl.search.context.Context`), the epoch, the K sampled architectures as index
  arrays [K, D, V], their weights m_omega and the training batch. It runs the forward and
  backward passes, averages the gradients over the ranks, and returns a `Trained`: the
  indices of the samples it trained, their losses (averaged over the ranks) and the
  weight it skipped. The strategy then checks the losses, steps the optimiser and
  schedule, and writes the record.
- `warmup_samples(dist, k)`: the K architectures of a uniform warm-up iteration (before
  alpha moves), so that a sampler such as a strict-fair one can replace the draw.

`importance` (the default) is Algorithm 1: every sample whose m_omega is at least
`skip_below` (`importance.trained_samples`) trains with loss m_omega x cross-entropy,
accumulated in order; the warm-up draws `dist.sample(k)`.

Three parts of supernet training that ranks, each a setting, all off by default (with all
off the policy is Algorithm 1 bit for bit); they act in the uniform warm-up, where the
supernet is trained for its own sake:

- `warmup_sampling = "fair"`: FairNAS's strict fairness: the K architectures of an
  iteration are drawn so that every choice of every variable appears K/c times (c its
  number of choices; when c does not divide K, floor or ceil of it), instead of K
  independent uniform draws, whose counts spread binomially;
- `sandwich`: AttentiveNAS's sandwich rule: the largest and the smallest architecture
  (`extreme_architecture`) train in every iteration beside the K samples;
- `distill = "largest"`: in-place distillation: the largest architecture trains on the
  labels and its predictions (detached) are the targets of every other pass.

The passes of an iteration then weigh 1/(K + extra passes) each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from fpnas_dsl.ir import ATTENTION_SPLITS, Space, Value
from fpnas_dsl.search.importance import trained_samples

if TYPE_CHECKING:
    from fpnas_dsl.distribution import Distribution
    from fpnas_dsl.search.config import SearchConfig
    from fpnas_dsl.search.context import Context

__all__ = [
    "POLICIES",
    "ImportanceWeighted",
    "Trained",
    "TrainingPolicy",
    "extreme_architecture",
    "fair_samples",
    "policy_for",
]

IndexArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass
class Trained:
    """What one weight update did, for the iteration's record."""

    #: The samples whose training pass ran, in order.
    indices: list[int]
    #: Their cross-entropy losses, averaged over the ranks.
    losses: list[float]
    #: The m_omega of the samples that did not train.
    skipped_weight: float


class TrainingPolicy(Protocol):
    def warmup_samples(
        self, context: Context, epoch: int, dist: Distribution, k: int
    ) -> IndexArray:
        """The architectures of one uniform warm-up iteration."""
        ...

    def train(
        self,
        context: Context,
        epoch: int,
        archs: IndexArray,
        m_omega: FloatArray,
        x_train: torch.Tensor,
        y_train: torch.Tensor,
        warmup: bool,
    ) -> Trained:
        """Accumulate (and average over the ranks) the weights' gradients; `warmup`: a
        uniform warm-up iteration."""
        ...


class ImportanceWeighted:
    """Algorithm 1: the samples' passes weighted by m_omega, the lightest skipped; in the
    uniform warm-up optionally fair draws, the sandwich rule and in-place distillation."""

    def __init__(self, config: SearchConfig, space: Space) -> None:
        self.fair = config.warmup_sampling == "fair"
        self.largest = (
            extreme_architecture(space, largest=True)
            if config.sandwich or config.distill == "largest"
            else None
        )
        self.smallest = extreme_architecture(space, largest=False) if config.sandwich else None
        self.distill = config.distill == "largest"

    def warmup_samples(
        self, context: Context, epoch: int, dist: Distribution, k: int
    ) -> IndexArray:
        if not self.fair:
            return dist.sample(k)
        # Seeded by the iteration, so every rank and a resumed run draw the same.
        rng = np.random.default_rng((context.config.seed, epoch, context.position.step))
        return fair_samples(context.space, k, rng)

    def train(
        self,
        context: Context,
        epoch: int,
        archs: IndexArray,
        m_omega: FloatArray,
        x_train: torch.Tensor,
        y_train: torch.Tensor,
        warmup: bool,
    ) -> Trained:
        net, precision = context.supernet, context.precision
        context.optimizer.zero_grad(set_to_none=True)
        trained, skipped_weight = trained_samples(m_omega, context.config.skip_below)
        # The sandwich's ends (the largest first: it is the distillation's teacher); with
        # them every pass weighs 1/(K + ends), m_omega = 1/K rescaled.
        ends = [a for a in (self.largest, self.smallest) if a is not None] if warmup else []
        end_weight = 1.0 / (len(archs) + len(ends))
        scale = len(archs) * end_weight if ends else 1.0
        passes = [(a, end_weight) for a in ends[:1]]
        passes += [(archs[i], float(m_omega[i]) * scale) for i in trained]
        passes += [(a, end_weight) for a in ends[1:]]
        teacher: torch.Tensor | None = None
        losses = []
        for arch, weight in passes:
            with precision.autocast():
                logits = net(x_train, arch)
            logits = logits.float()
            if teacher is None:
                loss = F.cross_entropy(logits, y_train)
                if warmup and self.distill:
                    teacher = logits.detach().softmax(1)
            else:  # soft cross-entropy against the largest architecture's predictions
                loss = -(teacher * F.log_softmax(logits, 1)).sum(1).mean()
            losses.append(loss.detach().item())
            precision.backward(loss * weight)
        # Once per iteration, after the passes: the gradients and the losses, averaged
        # over the ranks.
        losses = context.group.average_gradients(
            net.parameters(),
            losses,
            f"the gradient all-reduce of {context.position.where(epoch)}",
        )
        head = 1 if ends else 0
        for value in losses[:head] + losses[head + len(trained) :]:
            if not math.isfinite(value):
                context.non_finite(epoch, "training loss of the sandwich's largest or smallest")
        return Trained(trained, losses[head : head + len(trained)], skipped_weight)


def fair_samples(space: Space, k: int, rng: np.random.Generator) -> IndexArray:
    """K architectures [K, D, V] in which every choice of every variable appears K/c times
    (c its choices; floor or ceil of it when c does not divide K), paired at random."""
    layout = space.layout
    out = np.zeros((k, len(layout.decisions), layout.max_variables), dtype=np.int64)
    for d, decision in enumerate(layout.decisions):
        for v, choices in enumerate(decision.cardinalities):
            column = np.resize(rng.permutation(choices), k)
            rng.shuffle(column)
            out[:, d, v] = column
    return out


def _size_order(name: str, value: Value) -> float:
    """How much a choice adds to a network: widths, expansion, kernel size (skip is 0),
    attention splits; the activation adds nothing."""
    if name == "attention":
        return float(ATTENTION_SPLITS[str(value)])
    if name == "act":
        return 0.0
    return float(value)


def extreme_architecture(space: Space, largest: bool) -> IndexArray:
    """The largest (smallest) architecture: every variable at its largest (smallest)
    choice, the activation at its first; AttentiveNAS's sandwich ends."""
    out = np.zeros((len(space.layout.decisions), space.layout.max_variables), dtype=np.int64)
    for spec in space.blocks:
        for name, slot in spec.variables.items():
            if slot.decision is None or slot.slot is None:
                continue
            sizes = [_size_order(name, c) for c in slot.choices]
            best = max(sizes) if largest else min(sizes)
            out[slot.decision, slot.slot] = sizes.index(best)
    return out


#: `training_policy` setting -> the policy's class.
POLICIES: dict[str, type[ImportanceWeighted]] = {"importance": ImportanceWeighted}


def policy_for(config: SearchConfig, space: Space) -> TrainingPolicy:
    """The policy the `training_policy` setting names, with its parts."""
    return POLICIES[config.training_policy](config, space)
