"""Does the supernet rank architectures? Supernet accuracy against standalone accuracy.

Takes a finished search run and a set of architectures of its space:

- spread (the default): spread over the space's FLOPS range, evenly in log FLOPS, from
  uniform draws (`spread_over_flops`);
- within one band (`--band 0.1`): drawn uniformly among those whose FLOPS are within ±10%
  of `--flops F` (default: the FLOPS of the run's arch.json), by rejection sampling with
  a fixed seed (`in_band`). Bigger architectures tend to be better, so a spread set is
  easy to rank; within a band, size hardly helps and what is left is the supernet's.

For each architecture it measures:

- its accuracy under the searched supernet's weights, scored as the search scores the
  architecture it returns: the standalone network copied out of the supernet, batch
  norm re-estimated on 16 batches of the weights' half of the training split, then the
  whole test split (`RunScorer`);
- its test accuracy trained from scratch by `fpnas train` with one stated recipe (the
  flags after `--`; two trainings at a time, one thread each).

Prints both per architecture, Kendall's tau and Spearman's rho between them with a
bootstrap 95% interval (2,000 resamples of the architectures), the same for FLOPS alone
as the predictor (within the band too), and for what is left of both accuracies once a
line in log FLOPS is taken out of each. Writes `ranking.csv` and `ranking.json` to the
output directory and a scatter plot (default OUT/ranking.png).

Resumable: every score (OUT/scores.json) and every training (OUT/trainNN) is kept, and
the same command skips what is done; a command whose settings differ from the
directory's (OUT/bench.json) is refused. `--archs` may grow in band mode: the draws are
the same, more of them. `--pool DIR` keeps the trainings in DIR under names made of the
architecture and the recipe, where bench/quality.py finds them too.

    python bench/ranking.py --run runs/fmnist --archs 12 --out runs/ranking -- --epochs 3
    python bench/ranking.py --run runs/fmnist --band 0.1 --archs 12 --out runs/ranking_band \\
        -- --epochs 3
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import platform
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fpnas_dsl import cost
from fpnas_dsl.archfile import arch_document
from fpnas_dsl.data import (
    BatchPreparer,
    DataBundle,
    Subset,
    batches,
    eval_batches,
    load_data,
    split_halves,
)
from fpnas_dsl.errors import FpnasError
from fpnas_dsl.ir import Space, decode, encode, uniform_samples
from fpnas_dsl.nn import Supernet
from fpnas_dsl.runfiles import SEARCH_CHECKPOINT, write_json_atomic
from fpnas_dsl.search.checkpoint import load_supernet_weights
from fpnas_dsl.search.config import SearchConfig, load_saved_config
from fpnas_dsl.search.evaluation import BN_CALIBRATION_BATCHES, TEST_BATCH
from fpnas_dsl.search.scoring import supernet_accuracy
from fpnas_dsl.sources import open_source

sys.path.insert(0, str(Path(__file__).resolve().parent))
from jobs import (
    Scores,
    TrainJob,
    arch_digest,
    check_settings,
    digest,
    job_dir,
    refuse,
    run_jobs,
)

Stat = Callable[[np.ndarray, np.ndarray], float]

#: Flags a recipe may not carry: the benchmark sets them (one data source, one thread
#: per training, its own directories).
BENCH_FLAGS = ("--out", "-o", "--resume", "--data", "--threads", "--progress", "--no-progress")


# --------------------------------------------------------------------------------------
# Statistics


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
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def bootstrap(
    a: np.ndarray, b: np.ndarray, fn: Stat, n: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """95% percentile interval of `fn(a, b)` over `n` resamples of the pairs (the
    architectures) with replacement; resamples of fewer than 3 distinct pairs are
    skipped (they say nothing about a ranking)."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n):
        pick = rng.integers(0, len(a), len(a))
        if len(np.unique(pick)) < 3:
            continue
        values.append(fn(a[pick], b[pick]))
    lo, hi = np.nanpercentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def without_size(acc: np.ndarray, flops: np.ndarray) -> np.ndarray:
    """What is left of `acc` after the least-squares line in log FLOPS."""
    x = np.log(flops)
    return acc - np.polyval(np.polyfit(x, acc, 1), x)


# --------------------------------------------------------------------------------------
# Which architectures


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


def in_band(space: Space, flops: float, band: float, count: int, seed: int) -> np.ndarray:
    """The first `count` distinct uniformly drawn architectures whose FLOPS are within
    ±band of `flops` (rejection sampling over pools of 5,000 draws, seeds seed, seed+1,
    ...): uniform over the band, and the first n of a larger count are the same n."""
    found: list[np.ndarray] = []
    seen: set[bytes] = set()
    for draw in range(200):
        pool = uniform_samples(space, 5000, seed=seed + draw)
        f = cost.flops(space, pool)
        for idx in pool[np.abs(f / flops - 1) <= band]:
            key = idx.tobytes()
            if key in seen:
                continue
            seen.add(key)
            found.append(idx)
            if len(found) == count:
                return np.stack(found)
    refuse(
        f"fewer than {count} architectures of {space.name} within ±{band:.0%} of "
        f"{flops:,.0f} FLOPS in 1,000,000 uniform draws; widen --band or choose FLOPS "
        "inside the space's range"
    )


def write_arch_once(path: Path, space: Space, idx: np.ndarray, **extra: Any) -> None:
    """Write an architecture file, or check that the one there is this architecture."""
    doc = arch_document(space, decode(space, idx), **extra)
    if path.is_file():
        if json.loads(path.read_text()) != json.loads(json.dumps(doc)):
            refuse(
                f"{path} holds another architecture than this command draws; give another "
                "--out, or remove the directory to start anew"
            )
        return
    write_json_atomic(path, doc)


def arch_cost(space: Space, idx: np.ndarray) -> tuple[int, int]:
    """(FLOPS, params) of one architecture."""
    return int(cost.flops(space, idx[None])[0]), int(cost.params(space, idx[None])[0])


# --------------------------------------------------------------------------------------
# Scores under the supernet


class RunScorer:
    """Architectures scored under a finished run's supernet as the search scores the one
    it returns (`Search.finish`): the standalone network copied out of the supernet,
    batch norm re-estimated on 2 x `BN_CALIBRATION_BATCHES` batches (the run's batch
    size, seed 7) of the half of the training split the weights train on, then top-1
    accuracy on `split`:

    - `test`: the test split (all of it, or its first `images`);
    - `alpha`: the other half of the training split, which the weights never train on
      (the search scores its samples' likelihoods there); its first `images`.
    """

    SPLITS = ("test", "alpha")

    def __init__(self, run: Path, split: str = "test", images: int | None = None) -> None:
        if split not in self.SPLITS:
            raise ValueError(f"split {split!r}: expected one of {self.SPLITS}")
        if not (run / SEARCH_CHECKPOINT).is_file():
            refuse(f"--run {run}: not a search run directory (no {SEARCH_CHECKPOINT})")
        source = open_source(run)
        self.run = run
        self.space: Space = source.space
        self.found = encode(source.space, source.arch)
        self.found_doc = source.extra
        self.config: SearchConfig = load_saved_config(run / "config.json")
        self.data: DataBundle = load_data(
            self.config.data, self.config.data_dir, seed=self.config.seed
        )
        self.supernet = Supernet(self.space).to(memory_format=torch.channels_last)
        self.supernet.load_state_dict(load_supernet_weights(run))
        self.omega, alpha = split_halves(self.data.train, self.config.seed)
        target = self.data.test if split == "test" else alpha
        if images is not None:
            target = Subset(target, torch.arange(min(images, len(target))))
        self.target = target
        self.split = split
        self.prepare = BatchPreparer(
            self.data, self.space.resolution, self.space.in_channels, torch.device("cpu")
        )

    @property
    def images(self) -> int:
        return len(self.target)

    @property
    def key(self) -> str:
        """What a score depends on besides the architecture and the checkpoint."""
        return f"{self.split}:{self.images}:bn{2 * BN_CALIBRATION_BATCHES}"

    def describe(self) -> str:
        where = "the test split" if self.split == "test" else "the α half of the training split"
        return (
            f"supernet accuracy on {self.images:,} images of {where}, batch norm re-estimated "
            f"on {2 * BN_CALIBRATION_BATCHES} batches of {self.config.batch_size} of the ω half"
        )

    def checkpoint_digest(self) -> str:
        return digest((self.run / SEARCH_CHECKPOINT).read_bytes())

    def __call__(self, idx: np.ndarray) -> float:
        calibration = (
            x
            for x, _ in batches(
                self.omega, self.config.batch_size, 7, 0, count=2 * BN_CALIBRATION_BATCHES
            )
        )
        test = eval_batches(self.target, TEST_BATCH)
        return supernet_accuracy(self.supernet, idx, calibration, test, self.prepare)


def score_all(
    scorer: RunScorer, archs: Sequence[np.ndarray], scores: Scores, names: Sequence[str]
) -> list[float]:
    """Each architecture's score, computed once and kept in `scores`."""
    values = []
    for name, idx in zip(names, archs, strict=True):
        value, kept = scores.get(f"{arch_digest(idx)}:{scorer.key}", functools.partial(scorer, idx))
        flops, _ = arch_cost(scorer.space, idx)
        note = " (kept)" if kept else ""
        print(f"{name}: {flops / 1e6:6.3f} MFLOPS, supernet {value:.2%}{note}", flush=True)
        values.append(value)
    return values


def check_recipe(recipe: Sequence[str], also: Sequence[str] = ()) -> None:
    bad = [x.split("=")[0] for x in recipe if x.split("=")[0] in (*BENCH_FLAGS, *also)]
    if bad:
        refuse(
            f"the recipe (the flags after --) may not set {', '.join(bad)}: the benchmark "
            "sets them itself"
        )


def add_pool_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--pool",
        type=Path,
        help="keep the trainings in this directory, named by architecture and recipe, so "
        "that benchmarks training the same architecture with the same recipe share them",
    )


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1 (got {value})")
    return value


def fraction(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, such as 0.1 (got {value})")
    return value


# --------------------------------------------------------------------------------------
# The report


def statistics(rows: list[dict[str, Any]], resamples: int) -> dict[str, Any]:
    a = np.array([r["supernet_acc"] for r in rows], dtype=float)
    b = np.array([r["standalone_acc"] for r in rows], dtype=float)
    flops = np.array([r["flops"] for r in rows], dtype=float)
    a_rest, b_rest = without_size(a, flops), without_size(b, flops)
    return {
        "archs": len(rows),
        "kendall_tau": kendall_tau(a, b),
        "kendall_tau_95": bootstrap(a, b, kendall_tau, resamples),
        "spearman_rho": spearman_rho(a, b),
        "spearman_rho_95": bootstrap(a, b, spearman_rho, resamples),
        "flops_kendall_tau": kendall_tau(flops, b),
        "flops_kendall_tau_95": bootstrap(flops, b, kendall_tau, resamples),
        "flops_spearman_rho": spearman_rho(flops, b),
        "beyond_size_kendall_tau": kendall_tau(a_rest, b_rest),
        "beyond_size_kendall_tau_95": bootstrap(a_rest, b_rest, kendall_tau, resamples),
        "beyond_size_spearman_rho": spearman_rho(a_rest, b_rest),
    }


def plot(rows: list[dict[str, Any]], stats: dict[str, Any], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.array([r["supernet_acc"] for r in rows], dtype=float) * 100
    y = np.array([r["standalone_acc"] for r in rows], dtype=float) * 100
    f = np.array([r["flops"] for r in rows], dtype=float) / 1e6
    fig, ax = plt.subplots(figsize=(5.4, 4.4), dpi=120)
    points = ax.scatter(x, y, c=f, cmap="viridis", s=36, edgecolors="k", linewidths=0.4)
    fig.colorbar(points, ax=ax, label="MFLOPS (multiply-accumulates)")
    ax.set_xlabel("accuracy under the supernet's weights (%)")
    ax.set_ylabel("accuracy trained from scratch (%)")
    lo, hi = stats["kendall_tau_95"]
    ax.set_title(
        f"{textwrap.fill(title, 64)}\nKendall τ {stats['kendall_tau']:.2f} [{lo:.2f}, {hi:.2f}], "
        f"FLOPS alone τ {stats['flops_kendall_tau']:.2f}",
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def report(rows: list[dict[str, Any]], stats: dict[str, Any], header: Sequence[str]) -> None:
    print()
    for line in header:
        print(line)
    print("| arch | MFLOPS | params | supernet acc | standalone acc |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['arch']} | {r['flops'] / 1e6:.3f} | {r['params']:,} | "
            f"{r['supernet_acc']:.2%} | {r['standalone_acc']:.2%} |"
        )

    def ci(key: str) -> str:
        lo, hi = stats[key]
        return f"(95% bootstrap {lo:.2f} to {hi:.2f})"

    print(f"Kendall tau {stats['kendall_tau']:.3f} {ci('kendall_tau_95')}")
    print(f"Spearman rho {stats['spearman_rho']:.3f} {ci('spearman_rho_95')}")
    print(
        f"FLOPS alone as the predictor: Kendall tau {stats['flops_kendall_tau']:.3f} "
        f"{ci('flops_kendall_tau_95')}, rho {stats['flops_spearman_rho']:.3f}"
    )
    print(
        f"beyond size (both accuracies less their line in log FLOPS): Kendall tau "
        f"{stats['beyond_size_kendall_tau']:.3f} {ci('beyond_size_kendall_tau_95')}, "
        f"Spearman rho {stats['beyond_size_spearman_rho']:.3f}"
    )


def parse(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="a finished search run directory")
    p.add_argument("--archs", type=positive_int, default=12)
    p.add_argument(
        "--band",
        type=fraction,
        help="draw the architectures within ±BAND of one FLOPS value (0.1: ±10%%)",
    )
    p.add_argument(
        "--flops", type=float, help="the band's FLOPS (default: the run's arch.json FLOPS)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the draws")
    p.add_argument("--out", type=Path, default=Path("runs/ranking"))
    p.add_argument("--plot", type=Path, help="scatter plot (default OUT/ranking.png)")
    add_pool_option(p)
    p.add_argument("--parallel", type=positive_int, default=2, help="trainings at a time")
    p.add_argument("--threads", type=positive_int, default=1, help="torch threads for scoring")
    p.add_argument("--bootstrap", type=positive_int, default=2000, help="resamples")
    args, recipe = p.parse_known_args(argv)
    recipe = [x for x in recipe if x != "--"]
    if args.flops is not None and args.band is None:
        refuse("--flops is the centre of a band: give --band too")
    if args.archs < 3:
        refuse(f"--archs {args.archs}: a ranking needs at least 3 architectures")
    check_recipe(recipe)
    return args, recipe


def main(argv: Sequence[str] | None = None) -> int:
    args, recipe = parse(argv)
    torch.set_num_threads(args.threads)
    try:
        scorer = RunScorer(args.run, "test")
    except FpnasError as exc:
        refuse(str(exc))
    space, config = scorer.space, scorer.config
    found_flops, _ = arch_cost(space, scorer.found)
    centre = None
    if args.band is None:
        archs = spread_over_flops(space, args.archs, args.seed)
        what = f"{args.archs} architectures spread over FLOPS"
    else:
        centre = float(args.flops if args.flops is not None else found_flops)
        archs = in_band(space, centre, args.band, args.archs, args.seed)
        what = (
            f"{args.archs} architectures within ±{args.band:.0%} of {centre:,.0f} FLOPS "
            "(uniform, rejection sampling)"
        )
    settings: dict[str, Any] = {
        "bench": "ranking",
        "space": space.name,
        "checkpoint": scorer.checkpoint_digest(),
        "band": args.band,
        "flops": centre,
        "seed": args.seed,
        "recipe": recipe,
        "data": config.data,
    }
    if args.band is None:
        settings["archs"] = args.archs  # spread draws depend on the count
    check_settings(args.out, settings)

    names = [f"arch{n:02d}" for n in range(1, len(archs) + 1)]
    for name, idx in zip(names, archs, strict=True):
        flops, params = arch_cost(space, idx)
        write_arch_once(args.out / f"{name}.json", space, idx, flops=flops, params=params)
    values = score_all(scorer, list(archs), Scores(args.out / "scores.json"), names)
    common = ("--data", config.data, "--threads", "1", "--no-progress", *recipe)
    jobs = []
    for name in names:
        arch = str(args.out / f"{name}.json")
        out = job_dir(args.pool, args.out, f"train{name[4:]}", arch, common)
        jobs.append(TrainJob(name, arch, out, common))
    run_jobs(jobs, args.parallel)
    rows = []
    for name, idx, value, job in zip(names, archs, values, jobs, strict=True):
        flops, params = arch_cost(space, idx)
        result = job.result()
        rows.append(
            {
                "arch": f"{name}.json",
                "flops": flops,
                "params": params,
                "supernet_acc": value,
                "standalone_acc": result["test_acc"],
                "standalone_acc_ema": result.get("test_acc_ema"),
            }
        )
    stats = statistics(rows, args.bootstrap)
    header = [
        f"machine: {platform.machine()}, torch {torch.__version__}; run {args.run}",
        f"{space.name}: {what}; seed {args.seed}",
        f"supernet: {scorer.describe()}",
        f"recipe: fpnas train ARCH {' '.join(recipe)} (one thread per training)",
    ]
    report(rows, stats, header)
    with (args.out / "ranking.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summary = {
        **stats,
        "space": space.name,
        "mode": "spread" if args.band is None else "band",
        "band": args.band,
        "band_flops": centre,
        "seed": args.seed,
        "supernet_scoring": scorer.describe(),
        "recipe": recipe,
        "rows": rows,
    }
    write_json_atomic(args.out / "ranking.json", summary)
    plot_path = args.plot or args.out / "ranking.png"
    plot(rows, stats, f"{space.name}: {what}", plot_path)
    print(f"wrote {args.out / 'ranking.csv'}, {args.out / 'ranking.json'}, {plot_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
