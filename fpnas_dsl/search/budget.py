"""The search's budget: a FLOPS target, a latency target, or both, as one hinge cost.

C(A) = max(0, FLOPS(A) / F - 1) + max(0, latency(A) / L - 1), each term present when its
target is given; FP-NAS needs no gradient of the cost, so the latency may be any number,
here the sum of a measured table (`fpnas_dsl.latency`). The loop calls `Budget.costs` once
per iteration and `Budget.report` for the final architecture.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from fpnas_dsl import cost
from fpnas_dsl.errors import FpnasError
from fpnas_dsl.ir import Space
from fpnas_dsl.latency import LatencyModel, LatencyTable, format_seconds
from fpnas_dsl.search.config import SearchConfig
from fpnas_dsl.search.importance import hinge_cost

__all__ = ["LATENCY_TOLERANCE", "Budget", "check_latency_target", "load_table"]

#: The final architecture is "within target" up to these fractions (FLOPS: as before).
FLOPS_TOLERANCE = 0.05
LATENCY_TOLERANCE = 0.05


def load_table(config: SearchConfig, space: Space) -> LatencyModel | None:
    """The latency model of a search (None without a latency target); a table whose
    digest differs from the one the run recorded is refused (resume with another table)."""
    if config.target_latency is None:
        return None
    assert config.latency_table is not None  # SearchConfig requires it with the target
    table = LatencyTable.load(config.latency_table)
    digest = table.digest()
    if config.latency_table_digest is not None and digest != config.latency_table_digest:
        raise FpnasError(
            f"--latency-table {config.latency_table}: the table changed since the run began "
            f"(digest {digest}, the run's {config.latency_table_digest}); resume with the "
            "run's table, or start a new run with --out"
        )
    return LatencyModel(space, table)


class Budget:
    """Prices sampled architectures against the run's targets."""

    def __init__(self, config: SearchConfig, space: Space) -> None:
        self.space = space
        self.target_flops = config.target_flops
        self.target_latency = config.target_latency
        self.latency = load_table(config, space)

    def costs(
        self, archs: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """(FLOPS, hinge cost) of choice indices [K, D, V]."""
        flops = cost.flops(self.space, archs)
        total = np.zeros(len(archs), dtype=np.float64)
        if self.target_flops is not None:
            total += hinge_cost(flops, self.target_flops)
        if self.latency is not None and self.target_latency is not None:
            total += hinge_cost(self.latency.price(archs), self.target_latency)
        return flops, total

    def report(self, idx: npt.NDArray[np.int64], flops: int) -> dict[str, Any]:
        """What the result says about the targets for one architecture [D, V]."""
        out: dict[str, Any] = {"target_flops": self.target_flops}
        within = True
        if self.target_flops is not None:
            within &= flops <= (1 + FLOPS_TOLERANCE) * self.target_flops
        if self.latency is not None and self.target_latency is not None:
            predicted = float(self.latency.price(idx[None])[0])
            out["latency_s"] = predicted
            out["target_latency_s"] = self.target_latency
            within &= predicted <= (1 + LATENCY_TOLERANCE) * self.target_latency
        out["within_target"] = bool(within)
        return out

    def check(self) -> None:
        """Refuse a latency target no architecture meets, or one every architecture meets."""
        if self.latency is None or self.target_latency is None:
            return
        lo, hi = self.latency.extreme("min"), self.latency.extreme("max")
        if not lo <= self.target_latency <= hi:
            raise FpnasError(
                f"--target-latency {format_seconds(self.target_latency)} is outside the "
                f"space's range in {self.latency.table.source}: {self.space.name} at "
                f"{self.space.resolution} px spans {format_seconds(lo)} to "
                f"{format_seconds(hi)} ({self.latency.table.backend}, "
                f"{self.latency.table.threads} thread(s), batch {self.latency.table.batch})"
            )


def check_latency_target(config: SearchConfig, space: Space) -> None:
    """Before a run: the table matches the space, the target is in its range; a new run
    records the table's digest in its configuration."""
    budget = Budget(config, space)
    budget.check()
    if budget.latency is not None and config.latency_table_digest is None:
        config.latency_table_digest = budget.latency.table.digest()
