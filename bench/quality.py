"""Search quality: the found architecture against random ones of its FLOPS band and the
pick of random search with weight sharing (RSWS), all trained from scratch with the same
recipe on the same seeds.

Takes a finished search run and trains, with `fpnas train` and the flags after `--`
(two at a time, one thread each), on every seed of `--seeds`:

- the architecture the search returned (`RUN/arch.json`, "found");
- `--random` architectures drawn uniformly from the same space whose FLOPS are within
  `--band` (default ±10%) of the found one's (rejection sampling, seed `--seed`);
- the RSWS pick: the best of `--rsws` other uniform band architectures (seed
  `--seed` + 1000, so none is drawn twice) under the same supernet, the run's
  checkpoint, scored as the search scores the architecture it returns (batch norm
  re-estimated on 16 batches of the weights' half of the training split) on
  `--rsws-images` images of `--rsws-split`: by default the α half of the training split,
  which the weights never train on, so that no pick sees the test split it is judged on;
- optionally a fixed baseline space (`--baseline mobilenet_v2_035`).

Prints a table (FLOPS, params, supernet score, test accuracy per seed and its mean: the
raw weights' at the end of training), the random band's median and 75th percentile of
the seed means, the found architecture's and the RSWS pick's percentile among the
random band, whether the found one is at or above the 75th percentile and no worse than
the RSWS pick; writes `quality.json` and `quality.csv`.

Resumable: scores (OUT/scores.json) and trainings (OUT/NAME-sSEED) are kept and the same
command skips them; other settings (OUT/bench.json) are refused. `--random` and `--seeds`
may grow: the draws are the same, more of them. `--pool DIR` shares trainings with
bench/ranking.py: its within-band mode with `--seed 1` draws the same first architectures
as the random band here, and its recipe `... --seed 0` is this one's on seed 0.

    python bench/quality.py --run runs/fmnist --random 8 --seeds 0 1 --rsws 50 \\
        --out runs/quality_band -- --epochs 10
"""

from __future__ import annotations

import argparse
import csv
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fpnas_dsl.errors import FpnasError
from fpnas_dsl.runfiles import ARCH_FILE, write_json_atomic

sys.path.insert(0, str(Path(__file__).resolve().parent))
from jobs import Scores, TrainJob, check_settings, job_dir, refuse, run_jobs
from ranking import (
    RunScorer,
    add_pool_option,
    arch_cost,
    check_recipe,
    fraction,
    in_band,
    positive_int,
    score_all,
    write_arch_once,
)

#: The RSWS candidates are drawn with seed `--seed` + this (`in_band` reads at most 200
#: pools from its seed on, so the two sets of draws never share a pool).
RSWS_SEED_OFFSET = 1000


def percentile_rank(value: float, population: Sequence[float]) -> float:
    """Percent of `population` below `value`, ties counted half."""
    pop = np.asarray(population, dtype=float)
    below = float(np.sum(pop < value)) + 0.5 * float(np.sum(pop == value))
    return 100.0 * below / len(pop)


def rsws_pick(scores: Sequence[float]) -> int:
    """Random search with weight sharing: the candidate the supernet scores best (the
    first of equal ones)."""
    return int(np.argmax(np.asarray(scores, dtype=float)))


def summarise(means: dict[str, float], randoms: Sequence[str]) -> dict[str, Any]:
    """Where the found architecture and the RSWS pick stand against the random band,
    on the seed means."""
    band = [means[name] for name in randoms]
    q75 = float(np.percentile(band, 75))
    found, rsws = means["found"], means["rsws"]
    return {
        "random_median": float(np.median(band)),
        "random_75th": q75,
        "random_min": min(band),
        "random_max": max(band),
        "found_mean": found,
        "found_percentile": percentile_rank(found, band),
        "found_at_75th": found >= q75,
        "rsws_mean": rsws,
        "rsws_percentile": percentile_rank(rsws, band),
        "found_minus_rsws": found - rsws,
        "found_no_worse_than_rsws": found >= rsws,
    }


def parse(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="a finished search run directory")
    p.add_argument("--random", type=positive_int, default=8, help="random band architectures")
    p.add_argument("--band", type=fraction, default=0.10)
    p.add_argument("--seed", type=int, default=1, help="seed of the random band's draws")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds")
    p.add_argument("--rsws", type=positive_int, default=50, help="RSWS candidates (N)")
    p.add_argument("--rsws-split", choices=RunScorer.SPLITS, default="alpha")
    p.add_argument("--rsws-images", type=positive_int, default=10000)
    p.add_argument("--baseline", default="none", help="a fixed space to train too, or none")
    p.add_argument("--out", type=Path, default=Path("runs/quality"))
    add_pool_option(p)
    p.add_argument("--parallel", type=positive_int, default=2, help="trainings at a time")
    p.add_argument("--threads", type=positive_int, default=1, help="torch threads for scoring")
    args, recipe = p.parse_known_args(argv)
    recipe = [x for x in recipe if x != "--"]
    check_recipe(recipe, also=("--seed",))
    if len(set(args.seeds)) != len(args.seeds):
        refuse(f"--seeds {' '.join(map(str, args.seeds))}: each seed once")
    return args, recipe


def main(argv: Sequence[str] | None = None) -> int:
    args, recipe = parse(argv)
    torch.set_num_threads(args.threads)
    try:
        scorer = RunScorer(args.run, args.rsws_split, args.rsws_images)
    except FpnasError as exc:
        refuse(str(exc))
    space, config = scorer.space, scorer.config
    found_flops, found_params = arch_cost(space, scorer.found)
    randoms = in_band(space, found_flops, args.band, args.random, args.seed)
    candidates = in_band(space, found_flops, args.band, args.rsws, args.seed + RSWS_SEED_OFFSET)
    baseline = None if args.baseline == "none" else args.baseline
    check_settings(
        args.out,
        {
            "bench": "quality",
            "space": space.name,
            "checkpoint": scorer.checkpoint_digest(),
            "band": args.band,
            "seed": args.seed,
            "rsws": args.rsws,
            "rsws_scoring": scorer.key,
            "baseline": baseline,
            "recipe": recipe,
            "data": config.data,
        },
    )
    random_names = [f"random{n}" for n in range(1, len(randoms) + 1)]
    for name, idx in zip(random_names, randoms, strict=True):
        flops, params = arch_cost(space, idx)
        write_arch_once(args.out / f"{name}.json", space, idx, flops=flops, params=params)

    scores = Scores(args.out / "scores.json")
    print(f"RSWS: {args.rsws} candidates, {scorer.describe()}", flush=True)
    candidate_scores = score_all(
        scorer, list(candidates), scores, [f"rsws{n:02d}" for n in range(1, len(candidates) + 1)]
    )
    best = rsws_pick(candidate_scores)
    pick = candidates[best]
    flops, params = arch_cost(space, pick)
    write_arch_once(
        args.out / "rsws.json",
        space,
        pick,
        flops=flops,
        params=params,
        rsws_candidate=best + 1,
        rsws_score=candidate_scores[best],
    )
    # The others on the same split, for context: does the supernet score the search's
    # pick as high as RSWS's?
    found_score, *random_scores = score_all(
        scorer, [scorer.found, *randoms], scores, ["found", *random_names]
    )

    networks: list[tuple[str, str, float | None]] = [
        ("found", str(args.run / ARCH_FILE), found_score),
        *(
            (name, str(args.out / f"{name}.json"), s)
            for name, s in zip(random_names, random_scores, strict=True)
        ),
        ("rsws", str(args.out / "rsws.json"), candidate_scores[best]),
    ]
    if baseline is not None:
        networks.append(("baseline", baseline, None))
    jobs: dict[tuple[str, int], TrainJob] = {}
    for seed in args.seeds:
        common = (
            "--data", config.data, "--threads", "1", "--no-progress", *recipe,
            "--seed", str(seed),
        )  # fmt: skip
        for name, arch, _ in networks:
            out = job_dir(args.pool, args.out, f"{name}-s{seed}", arch, common)
            jobs[name, seed] = TrainJob(f"{name}-s{seed}", arch, out, common)
    run_jobs(list(jobs.values()), args.parallel)

    rows: list[dict[str, Any]] = []
    for name, _, score in networks:
        results = [jobs[name, seed].result() for seed in args.seeds]
        accs = [float(r["test_acc"]) for r in results]
        emas = [r.get("test_acc_ema") for r in results]
        rows.append(
            {
                "name": name if name != "baseline" else str(baseline),
                "flops": int(results[0]["flops"]),
                "params": int(results[0]["params"]),
                "supernet_acc": score,
                **{f"test_acc_s{seed}": acc for seed, acc in zip(args.seeds, accs, strict=True)},
                "test_acc_mean": float(np.mean(accs)),
                "test_acc_ema_mean": None
                if any(e is None for e in emas)
                else float(np.mean([float(e) for e in emas if e is not None])),
            }
        )
    means = {net[0]: row["test_acc_mean"] for net, row in zip(networks, rows, strict=True)}
    summary = summarise(means, random_names)

    seeds_cols = " | ".join(f"seed {s}" for s in args.seeds)
    print()
    print(f"machine: {platform.machine()}, {platform.python_version()}; run {args.run}")
    print(
        f"recipe: fpnas train ARCH {' '.join(recipe)} --seed S, S in "
        f"{' '.join(map(str, args.seeds))} (one thread per training); test accuracy of the "
        "raw weights at the end"
    )
    print(
        f"band: ±{args.band:.0%} of the found architecture's {found_flops:,} FLOPS; "
        f"{len(randoms)} random (seed {args.seed}); RSWS the best of {args.rsws} "
        f"(seed {args.seed + RSWS_SEED_OFFSET}) by {scorer.describe()}"
    )
    print(f"| network | MFLOPS | params | supernet acc ({args.rsws_split}) | {seeds_cols} | mean |")
    print("| --- | --- | --- | --- |" + " --- |" * len(args.seeds) + " --- |")
    for row in rows:
        shown = "-" if row["supernet_acc"] is None else f"{row['supernet_acc']:.2%}"
        per_seed = " | ".join(f"{row[f'test_acc_s{s}']:.2%}" for s in args.seeds)
        print(
            f"| {row['name']} | {row['flops'] / 1e6:.3f} | {row['params']:,} | {shown} | "
            f"{per_seed} | {row['test_acc_mean']:.2%} |"
        )
    s = summary
    print(
        f"random band, mean of seeds: median {s['random_median']:.2%}, 75th percentile "
        f"{s['random_75th']:.2%}, range {s['random_min']:.2%}-{s['random_max']:.2%}"
    )
    print(
        f"found {s['found_mean']:.2%}: percentile {s['found_percentile']:.0f} of the random "
        f"band; at or above its 75th percentile: {'yes' if s['found_at_75th'] else 'no'}"
    )
    print(
        f"RSWS pick {s['rsws_mean']:.2%} (percentile {s['rsws_percentile']:.0f}); found "
        f"{100 * s['found_minus_rsws']:+.2f} points: no worse than RSWS: "
        f"{'yes' if s['found_no_worse_than_rsws'] else 'no'}"
    )
    doc = {
        "space": space.name,
        "recipe": recipe,
        "seeds": args.seeds,
        "band": args.band,
        "found_flops": found_flops,
        "found_params": found_params,
        "rsws": {
            "candidates": args.rsws,
            "scoring": scorer.describe(),
            "pick": best + 1,
            "scores": candidate_scores,
        },
        "rows": rows,
        **summary,
    }
    write_json_atomic(args.out / "quality.json", doc)
    with (args.out / "quality.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {args.out / 'quality.json'}, {args.out / 'quality.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
