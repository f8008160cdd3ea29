"""The weights' cosine schedule refitted to a new total number of steps (`--resume
--epochs N`): the schedule is rebuilt for the new total and continues from the step
the run reached, as if it had been made for that total from the start."""

from __future__ import annotations

import math

import torch

from fpnas_dsl.errors import FpnasError

__all__ = ["refit_cosine", "refit_to_epochs"]


def refit_cosine(
    scheduler: torch.optim.lr_scheduler.CosineAnnealingLR,
    optimizer: torch.optim.Optimizer,
    total: int,
    done: int,
) -> list[float]:
    """Set `scheduler` to `total` steps with `done` taken; the learning rates now."""
    scheduler.T_max = total
    eta_min = float(scheduler.eta_min)
    lrs = []
    for group, base in zip(optimizer.param_groups, scheduler.base_lrs, strict=True):
        group["lr"] = eta_min + (base - eta_min) * (1 + math.cos(math.pi * done / total)) / 2
        lrs.append(group["lr"])
    # What get_last_lr() reports until the next step; torch has no public setter, and
    # the closed form above is the schedule's own (CosineAnnealingLR._get_closed_form_lr).
    scheduler._last_lr = lrs
    return lrs


def refit_to_epochs(
    scheduler: torch.optim.lr_scheduler.CosineAnnealingLR,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    steps: int,
    done: int,
) -> str | None:
    """Fit a restored schedule to `epochs` of `steps` with `done` steps taken: what to
    tell the user, or None when the total is unchanged. `--epochs` below what the run
    has done is an FpnasError."""
    total, old_total = epochs * steps, int(scheduler.T_max)
    if total == old_total:
        return None
    if done > total:
        raise FpnasError(
            f"--epochs {epochs}: the run has done {done} steps already, more than {epochs} "
            f"epochs of {steps}"
        )
    lrs = refit_cosine(scheduler, optimizer, total, done)
    return (
        f"fpnas search: {'extending' if total > old_total else 'shortening'} the search "
        f"from {old_total // max(steps, 1)} to {epochs} epochs; the cosine schedule of the "
        f"weights is rebuilt for {total} steps and continues from step {done} (learning "
        f"rate {lrs[0]:.4g})"
    )
