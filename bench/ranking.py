"""Does the supernet rank architectures? Supernet accuracy against standalone accuracy.

Takes a finished search run, picks architectures spread over the space's FLOPS range
(evenly in log FLOPS, from uniform draws; `spread_over_flops`), and for each one
measures:

- its accuracy under the searched supernet's weights: the standalone network copied out
  of the supernet, batch-norm re-estimated on 16 training batches, the whole test split;
- its test accuracy trained from scratch by `fpnas train` with one fixed short recipe
  (the flags after `--`; two trainings at a time, one thread each; resumable).

Prints both per architecture, Kendall's tau and Spearman's rho between them with a
bootstrap 95% interval (2,000 resamples of the architectures), writes `ranking.csv` and
`ranking.json` to the output directory and a scatter plot to `--plot`.

Architectures spread over FLOPS are easy to rank: bigger ones tend to be better. So it
also prints the same statistics for FLOPS alone as the predictor, and for what is left of
both accuracies once a line in log FLOPS is taken out of each (does the supernet know
more than the size?).

    python bench/ranking.py --run runs/fmnist --archs 12 --out runs/ranking -- --epochs 4
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch

from fpnas_dsl import cost
from fpnas_dsl.archfile import save_arch
from fpnas_dsl.data import BatchPreparer, batches, eval_batches, load_data, split_halves
from fpnas_dsl.ir import Space, decode, uniform_samples
from fpnas_dsl.nn import Supernet
from fpnas_dsl.search.checkpoint import load_supernet_weights
from fpnas_dsl.search.config import load_saved_config
from fpnas_dsl.search.scoring import supernet_accuracy
from fpnas_dsl.sources import open_source

sys.path.insert(0, str(Path(__file__).resolve().parent))
from jobs import TrainJob, run_jobs


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-b (ties in either ranking counted as neither concordant nor not)."""
    i, j = np.triu_indices(len(a), 1)
    da, db = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
    concordance = float((da * db).sum())
    norm = np.sqrt(float(np.count_nonzero(da)) * float(np.count_nonzero(db)))
    return concordance / norm if norm else 0.0


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties sharing their mean rank."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(1, len(x) + 1)
    for value in np.unique(x):
        tied = x == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman_rho(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = _ranks(a), _ranks(b)
    return float(np.corrcoef(ra, rb)[0, 1])


def bootstrap(a: np.ndarray, b: np.ndarray, fn: object, n: int = 2000) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    values = []
    for _ in range(n):
        pick = rng.integers(0, len(a), len(a))
        if len(np.unique(pick)) < 3:
            continue
        values.append(fn(a[pick], b[pick]))  # type: ignore[operator]
    lo, hi = np.nanpercentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def without_size(acc: np.ndarray, flops: np.ndarray) -> np.ndarray:
    """What is left of `acc` after the least-squares line in log FLOPS."""
    x = np.log(flops)
    return acc - np.polyval(np.polyfit(x, acc, 1), x)


def spread_over_flops(space: Space, count: int, seed: int) -> np.ndarray:
    """`count` architectures whose FLOPS are evenly spaced in log scale over the space's
    range (the 0.1st to the 99.9th percentile of 20,000 uniform draws), each the drawn
    architecture nearest its target."""
    pool = uniform_samples(space, 20000, seed=seed)
    flops = cost.flops(space, pool).astype(np.float64)
    lo, hi = np.percentile(flops, [0.1, 99.9])
    picks: list[int] = []
    for target in np.geomspace(lo, hi, count):
        order = np.argsort(np.abs(np.log(flops / target)), kind="stable")
        picks.append(int(next(i for i in order if i not in picks)))
    return pool[picks]


def plot(rows: list[dict[str, object]], tau: float, rho: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.array([r["supernet_acc"] for r in rows], dtype=float) * 100
    y = np.array([r["standalone_acc"] for r in rows], dtype=float) * 100
    f = np.array([r["flops"] for r in rows], dtype=float) / 1e6
    fig, ax = plt.subplots(figsize=(5.2, 4.2), dpi=120)
    points = ax.scatter(x, y, c=f, cmap="viridis", s=36, edgecolors="k", linewidths=0.4)
    fig.colorbar(points, ax=ax, label="MFLOPS (multiply-accumulates)")
    ax.set_xlabel("accuracy under the supernet's weights (%)")
    ax.set_ylabel("accuracy trained from scratch (%)")
    ax.set_title(f"{len(rows)} architectures: Kendall τ {tau:.2f}, Spearman ρ {rho:.2f}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="a finished search run directory")
    p.add_argument("--archs", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/ranking"))
    p.add_argument("--plot", type=Path, default=Path("docs/img/ranking.png"))
    p.add_argument("--parallel", type=int, default=2, help="trainings at a time")
    args, recipe = p.parse_known_args()
    recipe = [x for x in recipe if x != "--"]
    torch.set_num_threads(1)
    source = open_source(args.run)
    config = load_saved_config(args.run / "config.json")
    space = source.space
    data = load_data(config.data, config.data_dir, seed=config.seed)
    archs = spread_over_flops(space, args.archs, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)

    # Supernet scores (cheap), then the trainings (the long part, resumable).
    supernet = Supernet(space)
    supernet.load_state_dict(load_supernet_weights(args.run))
    omega, _ = split_halves(data.train, config.seed)
    prepare = BatchPreparer(data, space.resolution, space.in_channels, torch.device("cpu"))
    jobs, rows = [], []
    for n, idx in enumerate(archs, start=1):
        readable = decode(space, idx)
        arch_path = args.out / f"arch{n:02d}.json"
        flops = int(cost.flops(space, idx[None])[0])
        params = int(cost.params(space, idx[None])[0])
        save_arch(arch_path, space, readable, flops=flops, params=params)
        calibration = itertools.islice((x for x, _ in batches(omega, 64, 7, 0)), 16)
        score = supernet_accuracy(supernet, idx, calibration, eval_batches(data.test, 500), prepare)
        rows.append(
            {"arch": arch_path.name, "flops": flops, "params": params, "supernet_acc": score}
        )
        print(f"arch{n:02d}: {flops / 1e6:6.2f} MFLOPS, supernet accuracy {score:.2%}", flush=True)
        recipe_args = ("--data", config.data, "--threads", "1", "--no-progress", *recipe)
        jobs.append(
            TrainJob(f"arch{n:02d}", str(arch_path), args.out / f"train{n:02d}", recipe_args)
        )
    run_jobs(jobs, args.parallel)
    for row, job in zip(rows, jobs, strict=True):
        row["standalone_acc"] = job.result()["test_acc"]

    a = np.array([r["supernet_acc"] for r in rows], dtype=float)
    b = np.array([r["standalone_acc"] for r in rows], dtype=float)
    tau, rho = kendall_tau(a, b), spearman_rho(a, b)
    tau_ci, rho_ci = bootstrap(a, b, kendall_tau), bootstrap(a, b, spearman_rho)
    print()
    print(f"machine: {platform.machine()}, torch {torch.__version__}; run {args.run}")
    print(f"recipe: fpnas train ARCH {' '.join(recipe)}")
    print("| arch | MFLOPS | params | supernet acc | standalone acc |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['arch']} | {r['flops'] / 1e6:.2f} | {r['params']:,} | "  # type: ignore[operator]
            f"{r['supernet_acc']:.2%} | {r['standalone_acc']:.2%} |"
        )
    print(f"Kendall tau {tau:.3f} (95% bootstrap {tau_ci[0]:.2f} to {tau_ci[1]:.2f})")
    print(f"Spearman rho {rho:.3f} (95% bootstrap {rho_ci[0]:.2f} to {rho_ci[1]:.2f})")
    flops = np.array([r["flops"] for r in rows], dtype=float)
    tau_flops, rho_flops = kendall_tau(flops, b), spearman_rho(flops, b)
    a_rest, b_rest = without_size(a, flops), without_size(b, flops)
    tau_rest, rho_rest = kendall_tau(a_rest, b_rest), spearman_rho(a_rest, b_rest)
    tau_rest_ci = bootstrap(a_rest, b_rest, kendall_tau)
    print(f"FLOPS alone as the predictor: Kendall tau {tau_flops:.3f}, rho {rho_flops:.3f}")
    print(
        f"beyond size (both accuracies less their line in log FLOPS): Kendall tau "
        f"{tau_rest:.3f} (95% bootstrap {tau_rest_ci[0]:.2f} to {tau_rest_ci[1]:.2f}), "
        f"Spearman rho {rho_rest:.3f}"
    )
    with (args.out / "ranking.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summary = {
        "kendall_tau": tau,
        "kendall_tau_95": tau_ci,
        "spearman_rho": rho,
        "spearman_rho_95": rho_ci,
        "flops_kendall_tau": tau_flops,
        "flops_spearman_rho": rho_flops,
        "beyond_size_kendall_tau": tau_rest,
        "beyond_size_kendall_tau_95": tau_rest_ci,
        "beyond_size_spearman_rho": rho_rest,
        "recipe": recipe,
        "rows": rows,
    }
    (args.out / "ranking.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(rows, tau, rho, args.plot)
    print(f"wrote {args.out / 'ranking.csv'}, {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
