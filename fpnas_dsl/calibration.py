"""Calibrating a latency table: what the sum of parts misses, fitted on whole networks.

A network's latency from a table (`latency.LatencyModel`) is the sum of its parts; timed
end to end, a network also pays what no part measured alone does (allocation, cache
effects, the framework's per-network work) and less of what every part measured alone
pays (a session call per part under ONNX Runtime). `calibrate` times a few random
networks of the space end to end and fits that difference as a per-network constant
plus a per-part one (`fit_overheads`), which the table then keeps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from fpnas_dsl.ir import Space, uniform_samples
from fpnas_dsl.latency import LatencyModel, LatencyTable, SpaceParts
from fpnas_dsl.measure import Timer, measure_networks

__all__ = ["CALIBRATION_ROUNDS", "calibrate", "fit_overheads"]

#: Interleaved rounds over the calibration networks (`measure.measure_networks`).
CALIBRATION_ROUNDS = 3


def calibrate(
    space: Space,
    table: LatencyTable,
    timer: Timer,
    batch: int,
    networks: int,
    seed: int = 0,
    parts: SpaceParts | None = None,
    progress: Callable[[int], object] | None = None,
) -> None:
    """Time `networks` random networks (drawn with `10_000 + seed`) end to end, fit the
    overheads of `table` on them, and record the fit in `table.calibration` (the networks,
    the seed, the rounds, both overheads and the mean absolute percentage error left).
    `progress(n)` is called as networks are timed."""
    table.network_overhead_s = table.part_overhead_s = None
    model = LatencyModel(space, table, parts)
    draw = 10_000 + seed
    archs = uniform_samples(space, networks, seed=draw)
    predicted = model.price(archs)
    counts = model.part_counts(archs)
    measured = measure_networks(space, archs, timer, batch, CALIBRATION_ROUNDS, progress)
    network, per_part = fit_overheads(measured - predicted, counts, measured)
    corrected = predicted + network + per_part * counts
    table.network_overhead_s, table.part_overhead_s = network, per_part
    table.calibration = {
        "networks": int(networks),
        "seed": draw,
        "rounds": CALIBRATION_ROUNDS,
        "network_overhead_s": network,
        "part_overhead_s": per_part,
        "mape_pct": float(np.mean(np.abs(corrected - measured) / measured) * 100),
    }


def fit_overheads(missed: Any, counts: Any, measured: Any | None = None) -> tuple[float, float]:
    """(per network, per part) seconds that the sum of parts misses: `missed = network +
    per_part x counts`. Either may be below 0: ONNX Runtime pays a session call per part
    in the table but one per network, torch's parts run hotter alone than in a network
    (`LatencyModel` keeps every corrected part at 0 or more).

    Four models compete: no correction, the per-network constant alone (the median), the
    per-part one alone, both by least squares on relative residuals (divided by
    `measured`); with `measured`, the one of least leave-one-out mean absolute percentage
    error wins (on a noisy machine a two-parameter fit on 20 networks can be worse than
    none), else the least-squares one.
    With too few networks, or parts per network that barely vary, only the constant is
    fitted."""
    missed, counts = np.asarray(missed, dtype=float), np.asarray(counts, dtype=float)
    if len(missed) < 6 or np.ptp(counts) < 3:
        return float(np.median(missed)), 0.0

    # Relative residuals: small networks weigh as much as large ones (what MAPE counts).
    weight = np.ones_like(missed) if measured is None else 1 / np.asarray(measured, float)

    def least_squares(m: Any, c: Any, w: Any) -> tuple[float, float]:
        design = np.stack([np.ones_like(c), c], axis=1) * w[:, None]
        (network, per_part), *_ = np.linalg.lstsq(design, m * w, rcond=None)
        return float(network), float(per_part)

    def constant(m: Any, c: Any, w: Any) -> tuple[float, float]:
        return float(np.median(m)), 0.0

    def nothing(m: Any, c: Any, w: Any) -> tuple[float, float]:
        return 0.0, 0.0

    def per_part_only(m: Any, c: Any, w: Any) -> tuple[float, float]:
        cw = c * w
        return 0.0, float(cw @ (m * w) / (cw @ cw))

    if measured is None:
        return least_squares(missed, counts, weight)
    keep = np.ones(len(missed), dtype=bool)

    def loo_error(fit: Any) -> float:
        errors = []
        for i in range(len(missed)):
            keep[:] = True
            keep[i] = False
            network, per_part = fit(missed[keep], counts[keep], weight[keep])
            errors.append(abs(missed[i] - network - per_part * counts[i]) * weight[i])
        return float(np.mean(errors))

    best = min((nothing, constant, per_part_only, least_squares), key=loo_error)
    return best(missed, counts, weight)
