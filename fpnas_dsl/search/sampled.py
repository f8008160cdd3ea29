"""The probabilistic strategies: FP-NAS (Algorithm 1 of the paper) and PARSEC.

Per iteration: entropy H -> K -> K samples -> validation log-likelihood (no grad) and
hinge cost of each -> m_omega = softmax_k(log-likelihood), m_alpha = m_omega - beta C/sum C
-> the weights' gradient from the training policy (`fpnas_dsl.search.training`; by
default accumulated over the samples on the training batch, skipping the passes whose
m_omega is below `skip_below`) -> alpha's gradient from the core after the warm-up
epochs -> SGD (cosine) on the weights, Adam on alpha.
During the warm-up, by default, every sample trains with weight 1/K and nothing is scored
(`warmup_training`), so the supernet learns the whole space before alpha moves.
At the end of epoch `convert_epoch` a mixed schedule turns FD into JD.

Fixed sampling (PARSEC) and FD-only / JD-only distributions are settings of the same
strategy. Under torchrun the K log-likelihoods are summed over the ranks before the
importance weights, so alpha comes out the same on every rank.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fpnas_dsl import cost
from fpnas_dsl.distribution import Distribution, Mode
from fpnas_dsl.search import probe
from fpnas_dsl.search.context import Context
from fpnas_dsl.search.importance import importance_weights
from fpnas_dsl.search.training import policy_for

__all__ = ["Sampled"]


class Sampled:
    """FP-NAS adaptive K or PARSEC fixed K, over a mixed, joint or factorized alpha."""

    def __init__(self, context: Context) -> None:
        self.context = context
        cfg = context.config
        mode: Mode = "joint" if cfg.distribution == "joint" else "factorized"
        self.dist = Distribution(context.space.layout.cardinalities, mode=mode, seed=cfg.seed)
        self.policy = policy_for(cfg, context.space)

    def sample_size(self) -> int:
        cfg = self.context.config
        return self.dist.sample_size(cfg.lam) if cfg.sampling == "adaptive" else cfg.k

    def iteration(
        self,
        epoch: int,
        x_train: torch.Tensor,
        y_train: torch.Tensor,
        x_val: torch.Tensor,
        y_val: torch.Tensor,
    ) -> dict[str, Any]:
        ctx, cfg, dist = self.context, self.context.config, self.dist
        t0 = time.perf_counter()
        entropy = dist.entropy()
        k = self.sample_size()
        uniform = epoch <= cfg.warmup and cfg.warmup_training == "uniform"
        archs = self.policy.warmup_samples(ctx, epoch, dist, k) if uniform else dist.sample(k)
        t_core = time.perf_counter() - t0

        flops, costs = ctx.budget.costs(archs)

        t1 = time.perf_counter()
        ctx.supernet.train()
        log_likelihoods: np.ndarray | None = None
        if uniform:
            # Warm-up as single-path supernets train: every sample's pass weighs 1/K, so
            # the weights learn the whole space, not only each batch's most likely sample;
            # nothing is scored, since alpha does not move yet.
            m_omega = m_alpha = np.full(k, 1.0 / k)
        else:
            log_likelihoods = self._log_likelihoods(epoch, archs, x_val, y_val)
            m_omega, m_alpha = importance_weights(log_likelihoods, costs, cfg.beta)

        trained = self.policy.train(ctx, epoch, archs, m_omega, x_train, y_train, uniform)
        # Checked after the all-reduce, so that every rank stops at the same point.
        train_loss = 0.0
        for i, value in zip(trained.indices, trained.losses, strict=True):
            if not math.isfinite(value):
                ctx.non_finite(epoch, f"training loss of sample {i + 1}")
            train_loss += float(m_omega[i]) * value
        t2 = time.perf_counter()

        alpha_updated = epoch > cfg.warmup
        if alpha_updated:
            dist.step(archs, m_alpha, cfg.alpha_lr)
        t3 = time.perf_counter()
        ctx.precision.step(ctx.optimizer)
        ctx.scheduler.step()
        t4 = time.perf_counter()

        pos, times = ctx.position, ctx.times
        pos.samples += k
        pos.trained += len(trained.indices)
        times["core"] += t_core + (t3 - t2)
        times["fwd_bwd"] += t2 - t1
        times["other"] += (t1 - t0 - t_core) + (t4 - t3)
        return {
            "type": "iter",
            "epoch": epoch,
            "step": pos.step,
            "k": k,
            "trained": len(trained.indices),
            "skipped_weight": trained.skipped_weight,
            "entropy": entropy,
            "train_loss": train_loss,
            "val_nll": None
            if log_likelihoods is None
            else float(-(m_omega * log_likelihoods).sum() / (len(y_val) * ctx.group.world)),
            "flops_mean": float(flops.mean()),
            "flops_min": int(flops.min()),
            "flops_max": int(flops.max()),
            "alpha_updated": alpha_updated,
            "samples": pos.samples,
            "lr": ctx.scheduler.get_last_lr()[0],
            "t_core": t_core + (t3 - t2),
            "t_fwd_bwd": t2 - t1,
        }

    def _log_likelihoods(
        self, epoch: int, archs: np.ndarray, x_val: torch.Tensor, y_val: torch.Tensor
    ) -> np.ndarray:
        """log P(y_val | x_val, w, A_k) of each sample, summed over the batch (no grad)."""
        ctx = self.context
        out = np.empty(len(archs), dtype=np.float64)
        with torch.no_grad():
            for i, arch in enumerate(archs):
                with ctx.precision.autocast():
                    logits = ctx.supernet(x_val, arch)
                # Summed in float32 whatever the autocast: thousands of nats per batch.
                out[i] = -float(F.cross_entropy(logits.float(), y_val, reduction="sum"))
        # One all-reduce: the sums over the whole batch, the same on every rank.
        out = ctx.group.sum(out, f"the log-likelihood sum of {ctx.position.where(epoch)}")
        if not np.all(np.isfinite(out)):
            ctx.non_finite(epoch, "validation log-likelihood")
        return out

    def epoch_summary(self, epoch: int) -> dict[str, Any]:
        """alpha's state at the end of `epoch`; a mixed schedule's FD->JD switch."""
        cfg, dist, space = self.context.config, self.dist, self.context.space
        summary: dict[str, Any] = {
            "entropy": dist.entropy(),
            "k": self.sample_size(),
            "expected_flops": probe.expectation(dist, lambda a: cost.flops(space, a)),
            "alpha_params": dist.num_params,
            "modes": sorted(set(dist.modes)),
        }
        if cfg.distribution == "mixed" and epoch == cfg.convert_epoch:
            dist.to_joint()
            summary["converted_to_joint"] = True
            summary["entropy_after_conversion"] = dist.entropy()
        return summary

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint's entries of this strategy (alpha is its "distribution")."""
        return {"distribution": self.dist.state_dict(), "strategy": {}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.dist.load_state_dict(state["distribution"])
