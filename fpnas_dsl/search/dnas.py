"""The DNAS baseline: FBNetV2's differentiable search as a strategy of the same loop.

Architecture parameters theta: one logit vector per search variable (a factorized
distribution, as FBNetV2 has). Per iteration:

1. weights: Gumbel-softmax weights w = softmax((theta + g) / tau) with theta fixed, one
   relaxed pass of the supernet (`fpnas_dsl.nn.relaxed`: every candidate of every block
   computed and mixed with w, channels and expansion as masks over the widest tensor) on
   the training batch, SGD (cosine) on the weights;
2. after the warm-up epochs, theta: new Gumbel weights, a relaxed pass on the validation
   batch, loss = cross-entropy + beta * max(0, E_w[FLOPS] / target - 1), Adam on theta.

E_w[FLOPS] (`ExpectedCost`) is the cost model's FLOPS (`fpnas_dsl.cost`) under the
relaxed weights, exact and differentiable: the cost is a sum of terms, each a table over
a few variables (a block's input and output channels, expansion, kernel, attention), so
its expectation under independent weights is the sum over each table of the entries
times the product of the weights of their choices (`relaxed.joint`). With w the softmax
of theta it is the exact expected FLOPS of the distribution. FBNetV2 multiplies the
cross-entropy by a power of the log cost; the hinge keeps the target and beta of the
probabilistic strategies, so that the two are compared on the same objective.

The temperature tau starts at `--temperature` (5.0, FBNetV2) and is multiplied by
`--temperature-decay` (exp(-0.045), FBNetV2) every epoch. The winner is the most probable
architecture, argmax of theta per variable; `dist` mirrors softmax(theta) so that the
loop's evaluation, top five and export read it as they read the probabilistic
strategies'. The strategy reaches the loop only through its `Context`.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from fpnas_dsl import cost
from fpnas_dsl.distribution import Distribution
from fpnas_dsl.errors import FpnasError
from fpnas_dsl.ir import Space
from fpnas_dsl.nn.relaxed import RelaxedSupernet, VarId, Weights, joint, variables_of

if TYPE_CHECKING:
    from fpnas_dsl.search.context import Context

__all__ = ["Dnas", "ExpectedCost", "gumbel_weights", "split_logits"]


def split_logits(space: Space, theta: Tensor) -> dict[VarId, Tensor]:
    """A flat logit vector (the factorized distribution's order) per variable."""
    variables = variables_of(space)
    parts = torch.split(theta, [card for _, card in variables])
    return {v: p for (v, _), p in zip(variables, parts, strict=True)}


def gumbel_weights(
    logits: dict[VarId, Tensor],
    temperature: float,
    noise: dict[VarId, Tensor] | None = None,
    generator: torch.Generator | None = None,
) -> Weights:
    """softmax((logits + g) / temperature) per variable, g standard Gumbel noise (drawn
    from `generator`, torch's default one if None, unless given as `noise`)."""
    out: Weights = {}
    for v, theta in logits.items():
        if noise is not None:
            g = noise[v]
        else:
            u = torch.rand(theta.shape, generator=generator, dtype=theta.dtype)
            g = -torch.log((-torch.log(u.clamp_min(1e-20))).clamp_min(1e-20))
        out[v] = F.softmax((theta + g.to(theta.device)) / temperature, dim=0)
    return out


class ExpectedCost:
    """E_w[metric] of a space under per-variable weights: the cost model's tables summed
    with the product of the weights of their choices; differentiable in the weights."""

    def __init__(self, space: Space, metric: cost.Metric = "flops") -> None:
        model = cost.cost_model(space)
        self.constant = float(model.constant[metric])
        self.terms = [
            (term.variables, torch.from_numpy(term.table(metric).astype(np.float64)))
            for term in model.terms
        ]

    def __call__(self, weights: Weights) -> Tensor:
        ref = next(iter(weights.values()))
        total = torch.tensor(self.constant, dtype=torch.float64, device=ref.device)
        w64 = {v: x.to(torch.float64) for v, x in weights.items()}
        for variables, table in self.terms:
            table = table.to(ref.device)
            total = total + (joint(w64, variables, table.shape) * table).sum()
        return total


class Dnas:
    """FBNetV2's search: theta, its Adam and its relaxed supernet, over the loop's
    supernet and services (`context`)."""

    def __init__(self, context: Context) -> None:
        if context.group.world > 1:
            # Not tested under torchrun (theta's all-reduce mixes dtypes): refuse it.
            raise FpnasError("--strategy dnas runs in one process; start it without torchrun")
        self.context = context
        space, cfg = context.space, context.config
        size = sum(card for _, card in variables_of(space))
        self.theta = torch.nn.Parameter(torch.zeros(size, dtype=torch.float64))
        self.optimizer = torch.optim.Adam([self.theta], lr=cfg.alpha_lr)
        self.relaxed = RelaxedSupernet(context.supernet)
        self.expected = ExpectedCost(space)
        self.dist = Distribution(space.layout.cardinalities, mode="factorized", seed=cfg.seed)
        self._sync()

    def temperature(self, epoch: int) -> float:
        cfg = self.context.config
        return cfg.temperature * cfg.temperature_decay ** (epoch - 1)

    def _sync(self) -> None:
        """softmax(theta) into the mirror distribution (argmax, entropy, top five)."""
        self.dist.logits[:] = self.theta.detach().cpu().numpy()

    def probabilities(self) -> Weights:
        return {v: F.softmax(t, 0) for v, t in split_logits(self.context.space, self.theta).items()}

    def iteration(
        self,
        epoch: int,
        x_train: Tensor,
        y_train: Tensor,
        x_val: Tensor,
        y_val: Tensor,
    ) -> dict[str, Any]:
        ctx, cfg = self.context, self.context.config
        space, net, group = ctx.space, ctx.supernet, ctx.group
        tau = self.temperature(epoch)
        where = ctx.position.where(epoch)
        t0 = time.perf_counter()
        net.train()
        weights = gumbel_weights(split_logits(space, self.theta.detach()), tau)
        ctx.optimizer.zero_grad(set_to_none=True)
        precision = ctx.precision
        with precision.autocast():
            logits = self.relaxed(x_train, weights)
        loss = F.cross_entropy(logits.float(), y_train)
        precision.backward(loss)
        (train_loss,) = group.average_gradients(
            net.parameters(), [loss.item()], f"the gradient all-reduce of {where}"
        )
        if not math.isfinite(train_loss):
            ctx.non_finite(epoch, "training loss of the relaxed supernet")
        precision.step(ctx.optimizer)
        ctx.scheduler.step()

        val_nll: float | None = None
        alpha_updated = epoch > cfg.warmup
        if alpha_updated:
            weights = gumbel_weights(split_logits(space, self.theta), tau)
            with precision.autocast():
                logits = self.relaxed(x_val, weights)
            # theta's loss and gradient in float32 whatever the autocast.
            nll = F.cross_entropy(logits.float(), y_val)
            relaxed_flops = self.expected({v: w.cpu() for v, w in weights.items()})
            assert cfg.target_flops is not None  # SearchConfig requires it for DNAS
            hinge = torch.clamp(relaxed_flops / cfg.target_flops - 1, min=0)
            (grad,) = torch.autograd.grad(nll + cfg.beta * hinge, [self.theta])
            self.theta.grad = grad
            (val_nll,) = group.average_gradients(
                [self.theta], [nll.item()], f"the theta all-reduce of {where}"
            )
            if not math.isfinite(val_nll):
                ctx.non_finite(epoch, "validation loss of the relaxed supernet")
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self._sync()
        net.zero_grad(set_to_none=True)  # the theta pass's weight gradients are not used
        t1 = time.perf_counter()

        with torch.no_grad():
            expected = float(self.expected(self.probabilities()))
        ctx.position.samples += 1
        ctx.position.trained += 1
        ctx.times["fwd_bwd"] += t1 - t0
        return {
            "type": "iter",
            "epoch": epoch,
            "step": ctx.position.step,
            "k": 1,
            "trained": 1,
            "skipped_weight": 0.0,
            "entropy": self.dist.entropy(),
            "train_loss": train_loss,
            "val_nll": val_nll,
            "flops_mean": expected,
            "alpha_updated": alpha_updated,
            "samples": ctx.position.samples,
            "lr": ctx.scheduler.get_last_lr()[0],
            "temperature": tau,
            "t_fwd_bwd": t1 - t0,
        }

    def epoch_summary(self, epoch: int) -> dict[str, Any]:
        with torch.no_grad():
            expected = float(self.expected(self.probabilities()))
        return {
            "entropy": self.dist.entropy(),
            "k": 1,
            "expected_flops": expected,
            "alpha_params": self.dist.num_params,
            "modes": sorted(set(self.dist.modes)),
            "temperature": self.temperature(epoch),
        }

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint's entries: theta and its Adam, and the mirror distribution."""
        return {
            "distribution": self.dist.state_dict(),
            "strategy": {"theta": self.theta.detach().clone(), "adam": self.optimizer.state_dict()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.dist.load_state_dict(state["distribution"])
        own = state.get("strategy", {})
        if "theta" not in own:
            raise KeyError("no DNAS parameters (theta) in the checkpoint")
        with torch.no_grad():
            self.theta.copy_(own["theta"])
        self.optimizer.load_state_dict(own["adam"])
        self._sync()
