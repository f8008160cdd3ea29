"""The paper's search ablations (Sections 5.2-5.3, Table 5, Figs. 3-4) on one space and data.

Runs, with the same seeds, epochs, warm-up and data, one `fpnas search` per strategy and
seed, one at a time (so that their wall times are comparable):

- `parsec`: fixed sampling, K = 14, joint distribution (PARSEC);
- `adaptive_joint`: adaptive sampling (K = max(1, floor(lam H))), joint only;
- `adaptive_factorized`: adaptive sampling, factorized only;
- `fpnas`: adaptive sampling, factorized then joint (the mixed schedule, FP-NAS);
- optionally `fixed_k0`: fixed sampling at the K that adaptive sampling starts with on this
  space, joint (a control: is the saving the adaptation, or a K of 14 too large here?).

Then trains every found architecture with `fpnas train` and one short recipe (the flags
after `--`), and reports per strategy: sampled architectures, samples actually trained,
search wall time, final entropy, FLOPS and supernet accuracy of the found architecture,
its trained test accuracy; and per seed the ratios against PARSEC of the same seed, with
their mean and spread. Writes `OUT/ablation.csv` (one row per run; a copy beside the
plot), `OUT/ablation.json`, and plots of entropy and K against epochs per strategy (the
paper's Figs. 3b and 4a).

Resumable: a finished search (arch.json) or training (result.json) is not run again, an
interrupted one is continued with `--resume`. The same script runs on a GPU (`--device
cuda`) and on image folders (`--data imagefolder:PATH`).

    python bench/ablation.py --out runs/ablation -- --epochs 3 --train-subset 20000

The defaults are the README main job's space, target and schedule (6 epochs, warm-up 2,
FD->JD after epoch 4) with 40 instead of 230 steps per epoch, so that the 12 searches and
12 trainings fit in about two hours of a 2-core machine, and alpha's learning rate 4x the
paper's (0.064): with the paper's 0.016, 160 alpha steps barely move a joint distribution
(PARSEC's entropy fell 1.5 of 23.9 nats and its expected FLOPS rose). `--steps-per-epoch
230 --alpha-lr 0.016` is the main job's budget.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from jobs import TrainJob, run_jobs

#: The flags of `fpnas search` that make each strategy; everything else is shared.
STRATEGIES: dict[str, tuple[str, ...]] = {
    "parsec": ("--sampling", "fixed", "--k", "14", "--distribution", "joint"),
    "adaptive_joint": ("--sampling", "adaptive", "--distribution", "joint"),
    "adaptive_factorized": ("--sampling", "adaptive", "--distribution", "factorized"),
    "fpnas": ("--sampling", "adaptive", "--distribution", "mixed"),
    "fixed_k0": ("--sampling", "fixed", "--distribution", "joint"),  # --k added at run time
}
DEFAULT_STRATEGIES = ("parsec", "adaptive_joint", "adaptive_factorized", "fpnas")
LABELS = {
    "parsec": "PARSEC (fixed K=14, JD)",
    "adaptive_joint": "adaptive + JD",
    "adaptive_factorized": "adaptive + FD",
    "fpnas": "FP-NAS (adaptive + FD->JD)",
    "fixed_k0": "fixed K=K0, JD",
}
#: The paper's figures for the FBNetV2-F space on ImageNet (Sec. 5.2.1, Fig. 3d; Table 5):
#: fewer samples than PARSEC, and search speed-up over PARSEC.
PAPER = {
    "adaptive_joint": "60% fewer, 1.8x (Fig. 3d)",
    "adaptive_factorized": "Table 5: -5.5 K, 2.2 GPU-days vs 2.4 for JD; acc -1.0",
    "fpnas": "64% fewer, 2.1x (Sec. 5.3)",
}


@dataclass(frozen=True)
class SearchJob:
    strategy: str
    seed: int
    out: Path
    flags: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.strategy}-s{self.seed}"

    @property
    def done(self) -> bool:
        return (self.out / "arch.json").is_file()

    @property
    def cpu_file(self) -> Path:
        return self.out.parent / f"{self.out.name}.cpu.json"

    @property
    def cpu_seconds(self) -> float:
        """CPU seconds of the search processes so far (all of an interrupted run's parts)."""
        if not self.cpu_file.is_file():
            return 0.0
        return float(json.loads(self.cpu_file.read_text())["cpu_s"])

    def command(self) -> list[str]:
        base = [sys.executable, "-m", "fpnas_dsl", "search"]
        if (self.out / "checkpoint.pt").is_file():  # started before: continue it
            return [*base, "--resume", str(self.out), "--no-progress"]
        return [*base, *self.flags, "--seed", str(self.seed), "--out", str(self.out)]

    def run(self) -> None:
        if self.done:
            return
        if self.out.exists() and not (self.out / "checkpoint.pt").is_file():
            # Died before its first checkpoint: fpnas removes such a run, but a killed one
            # may leave its directory; start it again.
            for path in sorted(self.out.rglob("*"), reverse=True):
                path.unlink() if path.is_file() else path.rmdir()
            self.out.rmdir()
        self.out.parent.mkdir(parents=True, exist_ok=True)
        began = time.perf_counter()
        cpu_before = children_cpu()
        with (self.out.parent / f"{self.out.name}.log").open("ab") as log:
            code = subprocess.call(self.command(), stdout=log, stderr=subprocess.STDOUT)
        # CPU seconds as well as wall time: on a shared machine the wall time of a run
        # depends on what else runs; its CPU time (one thread) much less.
        self.cpu_file.write_text(
            json.dumps({"cpu_s": self.cpu_seconds + children_cpu() - cpu_before}) + "\n"
        )
        if code != 0:
            raise SystemExit(f"search {self.name} failed (exit {code}): see {self.out}.log")
        arch = json.loads((self.out / "arch.json").read_text())
        print(
            f"  {self.name}: {arch['samples']} samples, {arch['flops']:,} FLOPS, supernet "
            f"{arch['accuracy']:.2%}, search loop {arch['wall_seconds']:.0f} s "
            f"(process {time.perf_counter() - began:.0f} s, {self.cpu_seconds:.0f} CPU s)",
            flush=True,
        )


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def read_metrics(run: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    iters, epochs = [], []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        (iters if record["type"] == "iter" else epochs).append(record)
    return iters, epochs


def initial_k(args: argparse.Namespace) -> int:
    """The K that adaptive sampling draws at the start on this space (uniform alpha)."""
    import fpnas_dsl
    from fpnas_dsl.distribution import Distribution

    space = fpnas_dsl.load_space(args.space)
    dist = Distribution(space.layout.cardinalities, mode="factorized", seed=0)
    return int(dist.sample_size(args.lam))


def summarise(rows: list[dict[str, Any]], strategies: list[str]) -> dict[str, Any]:
    """Per strategy: the mean and spread of each measure, and of the per-seed ratios
    against PARSEC of the same seed."""
    parsec = {r["seed"]: r for r in rows if r["strategy"] == "parsec"}
    out: dict[str, Any] = {}
    for s in strategies:
        mine = [r for r in rows if r["strategy"] == s]
        entry: dict[str, Any] = {"runs": len(mine)}
        for key in (
            "samples",
            "trained",
            "wall_s",
            "cpu_s",
            "final_entropy",
            "flops",
            "supernet_acc",
            "test_acc",
        ):
            values = [r[key] for r in mine if r.get(key) is not None]
            if values:
                entry[key] = {
                    "mean": float(np.mean(values)),
                    "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                }
        fewer, speed, cpu, acc = [], [], [], []
        for r in mine:
            base = parsec.get(r["seed"])
            if base is None:
                continue
            fewer.append(1 - r["samples"] / base["samples"])
            speed.append(base["wall_s"] / r["wall_s"])
            if r.get("cpu_s") and base.get("cpu_s"):
                cpu.append(base["cpu_s"] / r["cpu_s"])
            if r.get("test_acc") is not None and base.get("test_acc") is not None:
                acc.append(100 * (r["test_acc"] - base["test_acc"]))
        for key, values in (
            ("fewer_samples", fewer),
            ("speedup", speed),
            ("cpu_speedup", cpu),
            ("acc_points", acc),
        ):
            if values:
                entry[key] = {
                    "mean": float(np.mean(values)),
                    "min": float(np.min(values)),
                    "max": float(np.max(values)),
                    "per_seed": [round(v, 4) for v in values],
                }
        out[s] = entry
    return out


def plot(runs: dict[str, list[Path]], steps: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_h, ax_k) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = dict(zip(runs, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    for strategy, dirs in runs.items():
        for n, run in enumerate(dirs):
            iters, _ = read_metrics(run)
            x = [r["epoch"] - 1 + r["step"] / steps for r in iters]
            style = {
                "color": colors[strategy],
                "lw": 1.2,
                "alpha": 0.8,
                "label": LABELS[strategy] if n == 0 else None,
            }
            ax_h.plot(x, [r["entropy"] for r in iters], **style)
            ax_k.plot(x, [r["k"] for r in iters], drawstyle="steps-post", **style)
    ax_h.set(
        xlabel="search epoch",
        ylabel="entropy H (nats)",
        title="distribution entropy (cf. Figs. 3b, 4a)",
    )
    ax_k.set(
        xlabel="search epoch",
        ylabel="architectures sampled per iteration (K)",
        title="sample size K",
    )
    ax_k.set_ylim(bottom=0)
    for ax in (ax_h, ax_k):
        ax.grid(alpha=0.3)
    ax_h.legend(fontsize=8)
    fig.suptitle("one line per seed", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fmt(entry: dict[str, Any], key: str, spec: str, scale: float = 1.0) -> str:
    if key not in entry:
        return "-"
    m, sd = entry[key]["mean"] * scale, entry[key]["std"] * scale
    return f"{m:{spec}} ± {sd:{spec}}"


def ratio(entry: dict[str, Any], key: str, spec: str, scale: float = 1.0, unit: str = "") -> str:
    if key not in entry:
        return "-"
    e = entry[key]
    return f"{e['mean'] * scale:{spec}}{unit} ({e['min'] * scale:{spec}}-{e['max'] * scale:{spec}})"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--space", default="fpnas_28px")
    p.add_argument("--target-flops", default="1.04e6")
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--warmup-epochs", type=int, default=2)
    p.add_argument("--convert-epoch", type=int, default=4)
    p.add_argument("--steps-per-epoch", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lam", type=float, default=0.25)
    p.add_argument(
        "--alpha-lr",
        type=float,
        default=0.064,
        help="Adam learning rate of alpha (default 4x the paper's 0.016: 40 instead of 230 "
        "steps per epoch)",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument(
        "--strategies", nargs="+", default=list(DEFAULT_STRATEGIES), choices=list(STRATEGIES)
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--no-train", action="store_true", help="searches only")
    p.add_argument(
        "--train-parallel", type=int, default=1, help="trainings at a time (one thread each)"
    )
    p.add_argument("--out", type=Path, default=Path("runs/ablation"))
    p.add_argument("--plot", type=Path, default=Path("docs/img/ablation.png"))
    args, recipe = p.parse_known_args()
    recipe = [x for x in recipe if x != "--"] or ["--epochs", "3", "--train-subset", "20000"]

    common = (
        args.space,
        "--target-flops", args.target_flops,
        "--data", args.data,
        "--epochs", str(args.epochs),
        "--warmup-epochs", str(args.warmup_epochs),
        "--convert-epoch", str(args.convert_epoch),
        "--steps-per-epoch", str(args.steps_per_epoch),
        "--batch-size", str(args.batch_size),
        "--lam", str(args.lam),
        "--alpha-lr", str(args.alpha_lr),
        "--device", args.device,
        "--threads", str(args.threads),
        "--no-progress",
    )  # fmt: skip
    k0 = initial_k(args) if "fixed_k0" in args.strategies else None
    LABELS["fixed_k0"] = f"fixed K={k0}, JD"
    jobs = []
    # Seed by seed, every strategy in turn: a slow spell of a shared machine then falls on
    # all strategies of a seed rather than on one strategy.
    for seed in args.seeds:
        for s in args.strategies:
            flags = (*common, *STRATEGIES[s]) + (("--k", str(k0)) if s == "fixed_k0" else ())
            jobs.append(SearchJob(s, seed, args.out / "search" / f"{s}-s{seed}", flags))
    left = [j for j in jobs if not j.done]
    print(
        f"ablation on {args.space}, {args.data}: {len(args.strategies)} strategies x "
        f"{len(args.seeds)} seeds, {args.epochs} epochs of {args.steps_per_epoch} steps "
        f"(warm-up {args.warmup_epochs}, FD->JD after {args.convert_epoch}); "
        f"{len(left)} of {len(jobs)} searches to run",
        flush=True,
    )
    for job in left:
        job.run()

    train_jobs = []
    if not args.no_train:
        train_recipe = ("--data", args.data, "--threads", str(args.threads), "--no-progress",
                        "--device", args.device, *recipe)  # fmt: skip
        train_jobs = [
            TrainJob(j.name, str(j.out / "arch.json"), args.out / "train" / j.name, train_recipe)
            for j in jobs
        ]
        run_jobs(train_jobs, parallel=args.train_parallel)

    rows = []
    for n, job in enumerate(jobs):
        arch = json.loads((job.out / "arch.json").read_text())
        _, epochs = read_metrics(job.out)
        trained = train_jobs[n].result() if train_jobs else {}
        rows.append(
            {
                "strategy": job.strategy,
                "seed": job.seed,
                "samples": arch["samples"],
                "trained": arch["trained"],
                "wall_s": arch["wall_seconds"],
                "cpu_s": round(job.cpu_seconds, 1),
                "final_entropy": round(epochs[-1]["entropy"], 4),
                "flops": arch["flops"],
                "params": arch["params"],
                "supernet_acc": arch["accuracy"],
                "test_acc": trained.get("test_acc"),
                "test_acc_ema": trained.get("test_acc_ema"),
                "k_per_epoch": " ".join(str(e["k"]) for e in epochs),
                "entropy_per_epoch": " ".join(f"{e['entropy']:.2f}" for e in epochs),
            }
        )
    args.out.mkdir(parents=True, exist_ok=True)
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    for path in (args.out / "ablation.csv", args.plot.with_suffix(".csv")):
        with path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    summary = summarise(rows, args.strategies)
    (args.out / "ablation.json").write_text(
        json.dumps({"rows": rows, "summary": summary, "recipe": recipe}, indent=2) + "\n"
    )
    runs = {s: [j.out for j in jobs if j.strategy == s] for s in args.strategies}
    plot(runs, args.steps_per_epoch, args.plot)

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}; {args.threads} torch thread(s) per run, one run at a time"
    )
    print(f"search: fpnas search {' '.join(common)} + the strategy's flags; seeds {args.seeds}")
    if train_jobs:
        print(f"training: fpnas train ARCH {' '.join(recipe)} (same seed for every network)")
    print(
        "| strategy | samples | trained | search loop (s) | CPU (s) | final H | MFLOPS "
        "| supernet acc | trained acc | fewer samples vs PARSEC | speed-up vs PARSEC (wall) "
        "| speed-up (CPU) | acc vs PARSEC (pts) | paper |"
    )
    print("| --- " * 14 + "|")
    for s in args.strategies:
        e = summary[s]
        print(
            f"| {LABELS[s]} | {fmt(e, 'samples', ',.0f')} | {fmt(e, 'trained', ',.0f')} "
            f"| {fmt(e, 'wall_s', '.0f')} | {fmt(e, 'cpu_s', '.0f')} "
            f"| {fmt(e, 'final_entropy', '.1f')} "
            f"| {fmt(e, 'flops', '.3f', 1e-6)} | {fmt(e, 'supernet_acc', '.2f', 100)} "
            f"| {fmt(e, 'test_acc', '.2f', 100)} "
            f"| {'-' if s == 'parsec' else ratio(e, 'fewer_samples', '.0f', 100, '%')} "
            f"| {'-' if s == 'parsec' else ratio(e, 'speedup', '.2f', 1, 'x')} "
            f"| {'-' if s == 'parsec' else ratio(e, 'cpu_speedup', '.2f', 1, 'x')} "
            f"| {'-' if s == 'parsec' else ratio(e, 'acc_points', '+.2f')} "
            f"| {PAPER.get(s, '-')} |"
        )
    print(
        "(mean ± sample std over seeds; ratios per seed against PARSEC of the same seed: "
        "mean (min-max))"
    )
    fp = summary.get("fpnas", {})
    if "fewer_samples" in fp and "speedup" in fp:
        fewer, speed = fp["fewer_samples"], fp["speedup"]
        verdict = [
            f"samples: {fewer['mean']:.0%} fewer (target >= 50%: "
            f"{'met' if fewer['min'] >= 0.5 else 'not met'} on every seed)"
            if fewer["min"] >= 0.5 or fewer["mean"] < 0.5
            else f"samples: {fewer['mean']:.0%} fewer on average, {fewer['min']:.0%} at worst",
            f"speed: {speed['mean']:.2f}x (target >= 1.6x: "
            f"{'met' if speed['min'] >= 1.6 else 'not met on every seed'})",
        ]
        if "acc_points" in fp:
            acc = fp["acc_points"]
            ok = acc["mean"] >= -0.5
            verdict.append(
                f"trained accuracy: {acc['mean']:+.2f} points against PARSEC on average "
                f"(target: at most 0.5 points below: {'met' if ok else 'not met'}; "
                f"FLOPS {fp['flops']['mean'] / summary['parsec']['flops']['mean']:.2f}x "
                f"PARSEC's)"
            )
        print("FP-NAS against PARSEC: " + "; ".join(verdict))
    print(
        f"wrote {args.out / 'ablation.csv'}, {args.out / 'ablation.json'}, {args.plot} "
        f"and {args.plot.with_suffix('.csv')}"
    )
    return 0 if all(math.isfinite(r["wall_s"]) for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
