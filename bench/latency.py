"""Benchmark: latency predicted by a table (sum of parts) against measured end to end.

For `--networks` random architectures of the table's space (drawn with `--seed`, never the
calibration networks of `fpnas latency`), in one run: the standalone network of each is
measured on the table's backend, device, threads and batch, timed as the table's parts were
(warm-up, repetitions, median), in `--rounds` interleaved rounds (every network once per
round, the median over rounds kept) so that a burst of load on a shared machine does not
fall on one network only. Printed: mean absolute percentage error (MAPE) and Spearman's
rho of the prediction with and without the table's fitted per-network overhead, and the
mean signed error; the scatter plot goes to `--plot`.

Run: python bench/latency.py TABLE.json [--networks 50] [--rounds 3] [--plot docs/img/X.png]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from fpnas_dsl.ir import uniform_samples
from fpnas_dsl.latency import LatencyModel, LatencyTable
from fpnas_dsl.measure import Timer, _cpu_name, measure_networks
from fpnas_dsl.parser import load_space


def ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    out = np.empty(len(values))
    out[order] = np.arange(len(values))
    return out


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def mape(predicted: np.ndarray, measured: np.ndarray) -> float:
    return float(np.mean(np.abs(predicted - measured) / measured) * 100)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("table")
    ap.add_argument("--space", help="the space (default: the table's, a bundled name)")
    ap.add_argument("--networks", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repetitions", type=int, help="timed calls per round (default: the table's)")
    ap.add_argument("--plot", help="scatter plot file (png)")
    args = ap.parse_args()

    table = LatencyTable.load(args.table)
    space = load_space(
        args.space or table.space, table.resolution, table.in_channels, table.classes
    )
    timer = Timer(
        table.backend,
        table.device,
        table.threads,
        int(table.method.get("warmup", 5)),
        args.repetitions or int(table.method.get("repetitions", 30)),
        table.clock,
        str(table.method.get("ort_level", "extended")),
    )
    model = LatencyModel(space, table)
    archs = uniform_samples(space, args.networks, seed=args.seed)
    predicted = model.price(archs)
    raw = predicted - model.overhead - model.part_overhead * model.part_counts(archs)

    t0 = time.perf_counter()
    rounds = measure_networks(space, archs, timer, table.batch, args.rounds, per_round=True)
    measured = np.median(rounds, axis=1)
    took = time.perf_counter() - t0

    print(
        f"machine: {_cpu_name()}, {platform.platform()}, torch {torch.__version__} "
        "(shared with other jobs: timings are noisy)"
    )
    print(
        f"table {args.table}: {table.space} at {table.resolution} px, {table.backend} on "
        f"{table.device}, {table.threads} thread(s), batch {table.batch}, "
        f"{len(table.entries)} parts, warm-up {timer.warmup}, {timer.repetitions} "
        f"repetitions, median, {table.clock} clock"
    )
    print(
        f"networks {args.networks} (seed {args.seed}), {args.rounds} interleaved rounds, "
        f"{took:.0f} s to build and measure"
    )
    print(
        f"measured end to end: min {measured.min() * 1e3:.3f} ms, median "
        f"{np.median(measured) * 1e3:.3f} ms, max {measured.max() * 1e3:.3f} ms"
    )
    if args.rounds >= 2:
        # The noise floor: one round's measurement against another's, same networks.
        print(
            f"repeatability, round 1 vs round 2: MAPE {mape(rounds[:, 0], rounds[:, 1]):5.1f}%  "
            f"Spearman rho {spearman(rounds[:, 0], rounds[:, 1]):.3f}"
        )
    print(
        f"sum of parts alone:        MAPE {mape(raw, measured):5.1f}%  Spearman rho "
        f"{spearman(raw, measured):.3f}  mean signed error "
        f"{np.mean(raw - measured) * 1e3:+.3f} ms"
    )
    print(
        f"+ fitted overheads ({model.overhead * 1e3:.3f} ms per network, "
        f"{model.part_overhead * 1e6:.1f} us per part):\n"
        f"                           MAPE {mape(predicted, measured):5.1f}%  "
        f"Spearman rho {spearman(predicted, measured):.3f}  mean signed error "
        f"{np.mean(predicted - measured) * 1e3:+.3f} ms"
    )
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        ax.scatter(measured * 1e3, predicted * 1e3, s=12)
        lo = min(measured.min(), predicted.min()) * 1e3 * 0.9
        hi = max(measured.max(), predicted.max()) * 1e3 * 1.1
        ax.plot([lo, hi], [lo, hi], "k:", linewidth=1)
        ax.set_xlabel("measured end to end (ms)")
        ax.set_ylabel("predicted by the table (ms)")
        ax.set_title(
            f"{table.space} {table.resolution}px, {table.backend}\n"
            f"MAPE {mape(predicted, measured):.1f}%, rho {spearman(predicted, measured):.2f}",
            fontsize=9,
        )
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
