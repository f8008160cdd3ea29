"""The importance weights of Algorithm 1 and which samples are worth a training pass.

m_omega is a softmax over the K samples of their validation log-likelihoods summed over
a batch, so it concentrates on a few samples as the supernet learns: a training pass
whose m_omega is below a tolerance changes the weights by at most that fraction of one
sample's gradient, and is skipped (`trained_samples`).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["hinge_cost", "importance_weights", "trained_samples"]

FloatArray = npt.NDArray[np.float64]


def importance_weights(
    log_likelihoods: npt.ArrayLike, costs: npt.ArrayLike, beta: float
) -> tuple[FloatArray, FloatArray]:
    """m_omega = softmax(log-likelihoods), computed in log space; m_alpha adds the cost
    term -beta C_k / sum C (zero when every cost is zero)."""
    ll = np.asarray(log_likelihoods, dtype=np.float64)
    c = np.asarray(costs, dtype=np.float64)
    shifted = np.exp(ll - ll.max())
    m_omega: FloatArray = shifted / shifted.sum()
    total = float(np.sum(c))
    m_alpha: FloatArray = m_omega - beta * c / total if total > 0 else m_omega.copy()
    return m_omega, m_alpha


def hinge_cost(flops: npt.ArrayLike, target: float) -> FloatArray:
    """C(A) = max(0, FLOPS(A) / target - 1)."""
    out: FloatArray = np.maximum(0.0, np.asarray(flops, dtype=np.float64) / target - 1.0)
    return out


def trained_samples(m_omega: FloatArray, tolerance: float) -> tuple[list[int], float]:
    """(indices of the samples whose training pass runs, in order; the weight skipped):
    every sample whose m_omega is at least `tolerance`. Tolerance 0 trains every sample."""
    keep = [i for i, m in enumerate(m_omega.tolist()) if m >= tolerance]
    skipped = float(sum(m for i, m in enumerate(m_omega.tolist()) if m < tolerance))
    return keep, skipped
