"""What a search strategy may use of the loop: one small context object.

The loop (`fpnas_dsl.search.loop.Search`) owns the run: the data, the run directory,
checkpoints, stop requests, records and evaluation. A strategy owns its iteration and
its architecture parameters (`fpnas_dsl.search.strategy`), and reaches the loop's
services only through a `Context`: the supernet and its optimiser and schedule, the
precision, the group of ranks, the cost budget, where the run stands, the timers, and
the callback that stops the run on a non-finite value. Nothing here imports the loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    import torch

    from fpnas_dsl.ir import Space
    from fpnas_dsl.nn import Supernet
    from fpnas_dsl.precision import Precision
    from fpnas_dsl.search.budget import Budget
    from fpnas_dsl.search.config import SearchConfig
    from fpnas_dsl.search.distributed import Group

__all__ = ["Context", "Position", "Timers"]


@dataclass
class Position:
    """Where the search stands: the next iteration to run, and what has been done."""

    epoch: int = 1
    step: int = 0
    samples: int = 0
    wall: float = 0.0
    metrics_bytes: int = 0
    #: Samples whose training pass ran (the rest carried too little weight).
    trained: int = 0

    def where(self, epoch: int) -> str:
        """The iteration about to run, as messages name it."""
        return f"epoch {epoch}, step {self.step + 1}"


#: Seconds spent in the core, in forward/backward passes, and in everything else.
Timers = dict[str, float]


def new_timers() -> Timers:
    return {"core": 0.0, "fwd_bwd": 0.0, "other": 0.0}


@dataclass
class Context:
    """The loop's services, as a strategy sees them."""

    config: SearchConfig
    space: Space
    supernet: Supernet
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.CosineAnnealingLR
    precision: Precision
    group: Group
    budget: Budget
    #: Stops the run on every rank: `non_finite(epoch, "training loss of sample 3")`.
    non_finite: Callable[[int, str], NoReturn]
    position: Position = field(default_factory=Position)
    times: Timers = field(default_factory=new_timers)
