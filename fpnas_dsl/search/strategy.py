"""What a search strategy is to the loop: the seam between `Search` and its method.

`Search` (`fpnas_dsl.search.loop`) keeps the data, the run directory, checkpoints and
resume, the epoch evaluation and `finish()` (arch.json, top5.json). A strategy owns its
architecture parameters and how one iteration updates them and the supernet's weights:

- `Sampled`: the probabilistic strategies (FP-NAS adaptive/mixed, PARSEC fixed K, FD or
  JD only), one sampled network per pass; `Search.sampled_iteration` is their iteration;
- `fpnas_dsl.search.dnas.Dnas`: FBNetV2's differentiable search, every candidate mixed.

Either way `dist` is a `Distribution` over the space's layout holding the strategy's
current belief, which the loop reads for the argmax, the entropy and the top five.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import torch

from fpnas_dsl.distribution import Distribution

if TYPE_CHECKING:
    from fpnas_dsl.search.loop import Search

__all__ = ["Sampled", "Strategy", "make_strategy"]


class Strategy(Protocol):
    #: The architecture distribution the epoch summary and `finish()` read.
    dist: Distribution

    def iteration(
        self,
        epoch: int,
        x_train: torch.Tensor,
        y_train: torch.Tensor,
        x_val: torch.Tensor,
        y_val: torch.Tensor,
    ) -> dict[str, Any]:
        """One step on a training and a validation batch; the metrics record."""
        ...

    def epoch_summary(self, epoch: int) -> dict[str, Any]:
        """Fields the strategy adds to (or overrides in) the epoch summary."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint needs beyond the supernet and `dist`."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Sampled:
    """The probabilistic strategies: the loop's own sampled iteration over `search.dist`."""

    def __init__(self, search: Search) -> None:
        self.search = search
        self.dist = search.dist

    def iteration(
        self,
        epoch: int,
        x_train: torch.Tensor,
        y_train: torch.Tensor,
        x_val: torch.Tensor,
        y_val: torch.Tensor,
    ) -> dict[str, Any]:
        return self.search.sampled_iteration(epoch, x_train, y_train, x_val, y_val)

    def epoch_summary(self, epoch: int) -> dict[str, Any]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}  # alpha is the checkpoint's "distribution"

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def make_strategy(search: Search) -> Strategy:
    """The strategy `search.config.strategy` names."""
    if search.config.strategy == "dnas":
        from fpnas_dsl.search.dnas import Dnas

        return Dnas(search)
    return Sampled(search)
