"""One search on 1 process against the same search on 2 processes under torchrun.

Runs the same search (the flags after `--`, same seed, same global batch) three ways, one
after the other in one run of this script: one process with one thread, one process with
two threads, and `torchrun --nproc-per-node 2` with one thread per process. Prints for
each the architecture samples drawn per second of search iterations (the end-of-epoch
scoring left out), the images per second (global batch x iterations), their ratio to one
process with one thread, and the returned architecture.

It also measures the batch-norm choice (per rank: each rank normalises with the
statistics of its half of the batch). On the 1-process run's final supernet and `--bn-
batches` validation batches, the K validation log-likelihoods of uniform random
architectures are computed with whole-batch statistics (one process) and as the sum of
two half-batches with their own statistics (two ranks); printed: the relative
difference of the log-likelihoods, the largest difference in the importance weights
m_omega, and how often both pick the same most-weighted sample.

    python bench/distributed.py --out runs/distributed -- fpnas_28px \
        --target-flops 1.04e6 --epochs 2 --warmup-epochs 1 --steps-per-epoch 30
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fpnas_dsl.distribution import Distribution
from fpnas_dsl.runfiles import read_metrics
from fpnas_dsl.search.checkpoint import load_checkpoint
from fpnas_dsl.search.config import load_saved_config
from fpnas_dsl.search.importance import importance_weights
from fpnas_dsl.search.loop import Search
from fpnas_dsl.search.run import load_inputs

WAYS = {
    "1 process, 1 thread": (None, 1),
    "1 process, 2 threads": (None, 2),
    "2 processes (torchrun), 1 thread each": (2, 1),
}


def run(search_args: list[str], nproc: int | None, threads: int, out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    prefix = [sys.executable]
    if nproc is not None:
        prefix += ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    cmd = [*prefix, "-m", "fpnas_dsl", "search", *search_args]
    cmd += ["--threads", str(threads), "--out", str(out), "--no-progress"]
    print("$", " ".join(cmd), flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)


def throughput(out: Path) -> dict[str, Any]:
    """Samples and images per second of search iterations: the time between consecutive
    iterations of an epoch (the first of each epoch follows the scoring, left out)."""
    config = load_saved_config(out / "config.json")
    iters = read_metrics(out / "metrics.jsonl", "iter")
    samples = seconds = 0.0
    count = 0
    for before, it in itertools.pairwise(iters):
        if it["epoch"] == before["epoch"]:
            samples += it["k"]
            seconds += it["wall"] - before["wall"]
            count += 1
    arch = json.loads((out / "arch.json").read_text())
    logits = np.asarray(load_checkpoint(out)["distribution"]["logits"], dtype=np.float64)
    return {
        "samples_s": samples / seconds,
        "images_s": count * config.batch_size / seconds,
        "iterations": len(iters),
        "blocks": arch["blocks"],
        "flops": arch["flops"],
        "accuracy": arch["accuracy"],
        "logits": logits,
    }


def batch_norm_effect(out: Path, batches: int, k: int) -> dict[str, float]:
    """Whole-batch against per-half batch-norm statistics in the validation pass."""
    config = load_saved_config(out / "config.json")
    data, space = load_inputs(config)
    saved = json.loads((out / "space.json").read_text())
    assert saved == space.portable_dump(), "the run's space is not the one its config names"
    search = Search(config, space, data, out)
    search.restore(out / "checkpoint.pt")
    search.supernet.train()  # the validation pass runs in train mode (batch statistics)
    archs = Distribution(space.layout.cardinalities, seed=1).sample(k)
    rel, dm, same = [], [], 0
    with torch.no_grad():
        for _, _, x, y in list(search._epoch_batches(1))[:batches]:
            half = len(y) // 2
            whole = np.array(
                [-float(F.cross_entropy(search.supernet(x, a), y, reduction="sum")) for a in archs]
            )
            split = np.array(
                [
                    -sum(
                        float(F.cross_entropy(search.supernet(xs, a), ys, reduction="sum"))
                        for xs, ys in ((x[:half], y[:half]), (x[half:], y[half:]))
                    )
                    for a in archs
                ]
            )
            rel.append(float(np.max(np.abs(split - whole) / np.abs(whole))))
            m_whole, _ = importance_weights(whole, np.zeros(k), 0.0)
            m_split, _ = importance_weights(split, np.zeros(k), 0.0)
            dm.append(float(np.max(np.abs(m_split - m_whole))))
            same += int(np.argmax(m_whole) == np.argmax(m_split))
    return {
        "rel_ll": float(np.mean(rel)),
        "max_dm": float(np.max(dm)),
        "mean_dm": float(np.mean(dm)),
        "same_top": same / len(rel),
        "batches": len(rel),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/distributed"))
    p.add_argument("--bn-batches", type=int, default=10)
    p.add_argument("--bn-k", type=int, default=8)
    args, search_args = p.parse_known_args()
    search_args = [x for x in search_args if x != "--"]
    runs = {}
    for i, (name, (nproc, threads)) in enumerate(WAYS.items()):
        out = args.out / f"way{i}"
        run(search_args, nproc, threads, out)
        runs[name] = throughput(out)
    base = runs[next(iter(WAYS))]
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores "
        f"({platform.processor() or 'cpu'}), torch {torch.__version__}, "
        f"python {platform.python_version()}"
    )
    print(f"search: fpnas search {' '.join(search_args)}")
    print(
        "| run | samples / s | images / s | ratio to 1 process, 1 thread | "
        "max abs delta alpha vs 1 process | same arch | FLOPS | supernet acc |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in runs.items():
        same_shape = r["logits"].shape == base["logits"].shape
        delta = float(np.abs(r["logits"] - base["logits"]).max()) if same_shape else float("nan")
        print(
            f"| {name} | {r['samples_s']:.2f} | {r['images_s']:.0f} | "
            f"{r['samples_s'] / base['samples_s']:.2f} | {delta:.3g} | "
            f"{'yes' if r['blocks'] == base['blocks'] else 'no'} | {r['flops']:,} | "
            f"{r['accuracy']:.2%} |"
        )
    bn = batch_norm_effect(args.out / "way0", args.bn_batches, args.bn_k)
    print(
        f"batch norm per rank (2 half-batches) vs whole batch, {bn['batches']} validation "
        f"batches x {args.bn_k} architectures on the 1-process run's supernet: "
        f"log-likelihood relative difference {bn['rel_ll']:.3g} (mean of the per-batch "
        f"max), m_omega max abs difference {bn['max_dm']:.3g} (mean {bn['mean_dm']:.3g}), "
        f"same most-weighted sample in {bn['same_top']:.0%} of the batches"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
