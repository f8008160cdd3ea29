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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from fpnas_dsl.search.importance import trained_samples

if TYPE_CHECKING:
    from fpnas_dsl.distribution import Distribution
    from fpnas_dsl.search.context import Context

__all__ = ["POLICIES", "ImportanceWeighted", "Trained", "TrainingPolicy", "policy_for"]

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
    def warmup_samples(self, dist: Distribution, k: int) -> IndexArray:
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
    ) -> Trained:
        """Accumulate (and average over the ranks) the weights' gradients."""
        ...


class ImportanceWeighted:
    """Algorithm 1: the samples' passes weighted by m_omega, the lightest skipped."""

    def warmup_samples(self, dist: Distribution, k: int) -> IndexArray:
        return dist.sample(k)

    def train(
        self,
        context: Context,
        epoch: int,
        archs: IndexArray,
        m_omega: FloatArray,
        x_train: torch.Tensor,
        y_train: torch.Tensor,
    ) -> Trained:
        net, precision = context.supernet, context.precision
        context.optimizer.zero_grad(set_to_none=True)
        trained, skipped_weight = trained_samples(m_omega, context.config.skip_below)
        losses = []
        for i in trained:
            with precision.autocast():
                logits = net(x_train, archs[i])
            loss = F.cross_entropy(logits.float(), y_train)
            losses.append(loss.detach().item())
            precision.backward(loss * float(m_omega[i]))
        # Once per iteration, after the passes: the gradients and the losses, averaged
        # over the ranks.
        losses = context.group.average_gradients(
            net.parameters(),
            losses,
            f"the gradient all-reduce of {context.position.where(epoch)}",
        )
        return Trained(trained, losses, skipped_weight)


#: `training_policy` setting -> the policy's class.
POLICIES: dict[str, type[TrainingPolicy]] = {"importance": ImportanceWeighted}


def policy_for(name: str) -> TrainingPolicy:
    """The policy a `training_policy` setting names (the config validates the name)."""
    return POLICIES[name]()
