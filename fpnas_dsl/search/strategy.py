"""What a search strategy is to the loop, and which one a run uses.

The loop (`fpnas_dsl.search.loop.Search`) runs the epochs and iterations and keeps the
run directory, checkpoints, stop requests, records and evaluation. A strategy owns its
iteration (the update of the supernet's weights and of its architecture parameters),
those parameters, the distribution that holds its belief and the strategy's part of
each epoch's summary. It reaches the loop's services only through a `Context`
(`fpnas_dsl.search.context`) and never imports the loop; nothing calls back into it.

- `fpnas_dsl.search.sampled.Sampled`: the probabilistic strategies (FP-NAS adaptive K,
  PARSEC fixed K; mixed FD->JD, JD or FD only), one sampled network per pass, their
  weight update a training policy (`fpnas_dsl.search.training`);
- `fpnas_dsl.search.dnas.Dnas`: FBNetV2's differentiable search, every candidate mixed.

Either way `dist` is a `Distribution` over the space's layout, which the loop reads for
the argmax, the top five and the ranks' agreement check.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from fpnas_dsl.distribution import Distribution
from fpnas_dsl.search.context import Context

__all__ = ["Strategy", "make_strategy"]


class Strategy(Protocol):
    #: The architecture distribution the loop's evaluation and `finish()` read.
    dist: Distribution

    def iteration(
        self,
        epoch: int,
        x_train: torch.Tensor,
        y_train: torch.Tensor,
        x_val: torch.Tensor,
        y_val: torch.Tensor,
    ) -> dict[str, Any]:
        """One step on a training and a validation batch; the metrics record. It moves
        `context.position.samples`/`trained` and the timers; the loop moves the step."""
        ...

    def epoch_summary(self, epoch: int) -> dict[str, Any]:
        """The strategy's fields of the epoch summary (entropy, K, expected FLOPS, ...);
        the place for what changes between epochs (FD->JD)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint's entries of the strategy: "distribution" and "strategy"."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from a checkpoint (all of it: the strategy reads its entries)."""
        ...


def make_strategy(context: Context) -> Strategy:
    """The strategy `context.config.strategy` names."""
    if context.config.strategy == "dnas":
        from fpnas_dsl.search.dnas import Dnas

        return Dnas(context)
    from fpnas_dsl.search.sampled import Sampled

    return Sampled(context)
