"""Search quality: the found architecture against random ones of its FLOPS and a
hand-designed network, all trained from scratch with the same recipe and seed.

Takes a finished search run and trains, with `fpnas train` and the flags after `--`
(two at a time, one thread each; resumable):

- the architecture the search returned (`RUN/arch.json`);
- `--random` architectures drawn uniformly from the same space whose FLOPS are within
  `--band` (default ±10%) of the found one's (rejection sampling, fixed seed);
- a fixed baseline space (default MobileNetV2 0.35, `spaces/mobilenet_v2_035.space`).

Prints a table (FLOPS, params, test accuracy of the raw and EMA weights), the median of
the random band, and where the found architecture stands against both; writes
`quality.json`.

    python bench/quality.py --run runs/fmnist --out runs/quality -- --epochs 10
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np

from fpnas_dsl import cost
from fpnas_dsl.archfile import save_arch
from fpnas_dsl.ir import decode, encode, uniform_samples
from fpnas_dsl.search.config import load_saved_config
from fpnas_dsl.sources import open_source

sys.path.insert(0, str(Path(__file__).resolve().parent))
from jobs import TrainJob, run_jobs


def in_band(space: Any, flops: int, band: float, count: int, seed: int) -> list[np.ndarray]:
    """`count` uniformly drawn architectures whose FLOPS are within ±band of `flops`."""
    found: list[np.ndarray] = []
    for draw in range(200):
        pool = uniform_samples(space, 5000, seed=seed + draw)
        f = cost.flops(space, pool)
        for idx in pool[np.abs(f / flops - 1) <= band]:
            found.append(idx)
            if len(found) == count:
                return found
    raise SystemExit(f"fewer than {count} architectures within ±{band:.0%} of {flops:,} FLOPS")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="a finished search run directory")
    p.add_argument("--random", type=int, default=5)
    p.add_argument("--band", type=float, default=0.10)
    p.add_argument("--baseline", default="mobilenet_v2_035", help="a fixed space")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("runs/quality"))
    p.add_argument("--parallel", type=int, default=2)
    args, recipe = p.parse_known_args()
    recipe = [x for x in recipe if x != "--"]
    source = open_source(args.run)
    config = load_saved_config(args.run / "config.json")
    space, found = source.space, source.arch
    found_flops = int(cost.flops(space, encode(space, found)[None])[0])
    args.out.mkdir(parents=True, exist_ok=True)
    common = ("--data", config.data, "--threads", "1", "--no-progress", *recipe)
    jobs = [TrainJob("found", str(args.run / "arch.json"), args.out / "found", common)]
    for n, idx in enumerate(in_band(space, found_flops, args.band, args.random, args.seed), 1):
        path = args.out / f"random{n}.json"
        save_arch(path, space, decode(space, idx))
        jobs.append(TrainJob(f"random{n}", str(path), args.out / f"random{n}", common))
    jobs.append(TrainJob(args.baseline, args.baseline, args.out / "baseline", common))
    run_jobs(jobs, args.parallel)

    rows = []
    for job in jobs:
        r = job.result()
        rows.append(
            {
                "name": job.name,
                "flops": r["flops"],
                "params": r["params"],
                "test_acc": r["test_acc"],
                "test_acc_ema": r.get("test_acc_ema"),
            }
        )
    print(f"machine: {platform.machine()}, {platform.python_version()}; run {args.run}")
    print(f"recipe: fpnas train ARCH {' '.join(recipe)} (one thread per run, same seed)")
    print("| network | MFLOPS | params | test acc | EMA test acc |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        ema = "-" if r["test_acc_ema"] is None else f"{r['test_acc_ema']:.2%}"
        print(
            f"| {r['name']} | {r['flops'] / 1e6:.3f} | {r['params']:,} | {r['test_acc']:.2%} | "
            f"{ema} |"
        )
    found_acc = rows[0]["test_acc"]
    randoms = [r["test_acc"] for r in rows[1:-1]]
    median = float(np.median(randoms))
    base = rows[-1]
    print(
        f"found {found_acc:.2%}; random band (±{args.band:.0%} FLOPS) median {median:.2%}, "
        f"range {min(randoms):.2%}-{max(randoms):.2%}: {100 * (found_acc - median):+.2f} points"
    )
    print(
        f"{base['name']} {base['test_acc']:.2%} at {base['flops']:,} FLOPS; found at "
        f"{found_flops:,} FLOPS (ratio {found_flops / base['flops']:.3f}): "
        f"{100 * (found_acc - base['test_acc']):+.2f} points"
    )
    summary = {"recipe": recipe, "rows": rows, "random_median": median}
    (args.out / "quality.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
