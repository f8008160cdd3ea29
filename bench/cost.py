"""Benchmark: pricing architectures with the vectorised cost model, against one by one.

For FP-NAS-L2 (the largest bundled space), in one run:

- vectorised: `fpnas_dsl.cost.costs(space, idx)` on batches of 10,000 uniformly sampled
  choice-index arrays (FLOPS and params both), architectures per second (target >= 100,000);
- one by one: the same call on one [D, V] array at a time, and `arch_cost` on a readable
  architecture (what a script that loops over arch.json files does);
- the one-off costs: building the lookup tables, and the exact min/max (`cost_range`).

Run: python bench/cost.py [--space fpnas_l2] [--min-time SECONDS]
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import numpy as np

from fpnas_dsl import cost
from fpnas_dsl.ir import count_architectures, decode, uniform_samples
from fpnas_dsl.parser import load_space

BATCH = 10_000


def rate(fn: Callable[[], object], items: int, min_time: float) -> float:
    """Best items/s over repeats of fn (each pricing `items` architectures)."""
    best = float("inf")
    spent = 0.0
    runs = 0
    while spent < min_time or runs < 3:
        t0 = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - t0
        best = min(best, elapsed)
        spent += elapsed
        runs += 1
    return items / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="fpnas_l2")
    parser.add_argument("--min-time", type=float, default=2.0, help="seconds per measurement")
    args = parser.parse_args()

    space = load_space(args.space)
    print(
        f"space {space.name}: {len(space.blocks)} blocks, {len(space.layout.decisions)} "
        f"decisions, {count_architectures(space):.3g} architectures, "
        f"resolution {space.resolution}"
    )
    print(f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}")

    t0 = time.perf_counter()
    model = cost.CostModel(space)
    build = time.perf_counter() - t0
    table = sum(t.flops.size for t in model.terms)
    print(f"lookup tables: {table:,} entries per metric, built in {build * 1e3:.1f} ms")

    idx = uniform_samples(space, BATCH, seed=0)
    cost.costs(space, idx)  # warm the per-space cache
    vectorised = rate(lambda: cost.costs(space, idx), BATCH, args.min_time)

    few = idx[:1000]
    single = rate(lambda: [cost.costs(space, a) for a in few], len(few), args.min_time)
    archs = [decode(space, a) for a in few[:200]]
    readable = rate(lambda: [cost.arch_cost(space, a) for a in archs], len(archs), args.min_time)

    t0 = time.perf_counter()
    r = cost.cost_range(space)
    ranged = time.perf_counter() - t0

    print(
        f"vectorised, batches of {BATCH:,}:     {vectorised:>12,.0f} architectures/s "
        f"(target >= 100,000: {'met' if vectorised >= 100_000 else 'NOT met'})"
    )
    print(
        f"one by one, index arrays:        {single:>12,.0f} architectures/s "
        f"({vectorised / single:,.0f}x slower)"
    )
    print(
        f"one by one, readable (arch_cost): {readable:>11,.0f} architectures/s "
        f"({vectorised / readable:,.0f}x slower)"
    )
    print(f"cost_range (exact min/max + median of 10,000): {ranged * 1e3:.0f} ms")
    print(
        f"  FLOPS  min {r['flops_min'] / 1e6:,.1f} M  median {r['flops_median'] / 1e6:,.1f} M"
        f"  max {r['flops_max'] / 1e6:,.1f} M"
    )
    print(
        f"  params min {r['params_min'] / 1e6:,.2f} M  median {r['params_median'] / 1e6:,.2f} M"
        f"  max {r['params_max'] / 1e6:,.2f} M"
    )


if __name__ == "__main__":
    main()
