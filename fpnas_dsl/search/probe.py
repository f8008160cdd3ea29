"""Read-only questions about P(A|alpha), answered in numpy from the core's logits:
the k most probable architectures and Monte-Carlo expectations. They never touch the
core's generator, so asking them does not change the search."""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from fpnas_dsl.distribution import Distribution

FloatArray = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.int64]


def _log_softmax(x: FloatArray) -> FloatArray:
    shifted = x - x.max()
    out: FloatArray = shifted - math.log(float(np.exp(shifted).sum()))
    return out


def decision_tables(dist: Distribution) -> list[FloatArray]:
    """Per decision, log P over the product of its variables (row-major, first slowest)."""
    logits = np.asarray(dist.logits, dtype=np.float64)
    tables: list[FloatArray] = []
    offset = 0
    for cards, mode in zip(dist.layout, dist.modes, strict=True):
        if mode == "joint":
            size = math.prod(cards)
            tables.append(_log_softmax(logits[offset : offset + size]).reshape(cards))
            offset += size
            continue
        table = np.zeros(cards, dtype=np.float64)
        for v, card in enumerate(cards):
            shape = [1] * len(cards)
            shape[v] = card
            table = table + _log_softmax(logits[offset : offset + card]).reshape(shape)
            offset += card
        tables.append(table)
    return tables


def top_k(dist: Distribution, k: int) -> list[tuple[float, IndexArray]]:
    """The k most probable architectures with their log-probabilities, exactly.

    Decisions are independent, so the top k of a product are among the products of each
    decision's top k: merge decision by decision, keeping k partial architectures."""
    tables = decision_tables(dist)
    width = max(len(c) for c in dist.layout)
    partial: list[tuple[float, tuple[tuple[int, ...], ...]]] = [(0.0, ())]
    for table in tables:
        flat = table.ravel()
        best = np.argsort(-flat, kind="stable")[:k]
        choices = [(float(flat[i]), np.unravel_index(int(i), table.shape)) for i in best]
        merged = (
            (lp + clp, (*prefix, tuple(int(c) for c in combo)))
            for lp, prefix in partial
            for clp, combo in choices
        )
        partial = heapq.nlargest(k, merged, key=lambda item: item[0])
    out = []
    for lp, combos in partial:
        idx = np.zeros((len(tables), width), dtype=np.int64)
        for d, combo in enumerate(combos):
            idx[d, : len(combo)] = combo
        out.append((lp, idx))
    return out


def sample_numpy(dist: Distribution, count: int, seed: int) -> IndexArray:
    """Samples from P(A|alpha) with numpy's generator (not the core's)."""
    rng = np.random.default_rng(seed)
    tables = decision_tables(dist)
    width = max(len(c) for c in dist.layout)
    out = np.zeros((count, len(tables), width), dtype=np.int64)
    for d, table in enumerate(tables):
        probs = np.exp(table.ravel())
        flat = rng.choice(probs.size, size=count, p=probs / probs.sum())
        for v, column in enumerate(np.unravel_index(flat, table.shape)):
            out[:, d, v] = column
    return out


def expectation(
    dist: Distribution,
    fn: Callable[[IndexArray], npt.NDArray[np.int64]],
    count: int = 4096,
    seed: int = 12345,
) -> float:
    """E[fn(A)] under P(A|alpha) by Monte Carlo with a fixed seed (comparable over time)."""
    return float(np.mean(fn(sample_numpy(dist, count, seed))))
