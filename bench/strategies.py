"""DNAS (FBNetV2) against FP-NAS: the same search budget, one after the other, from the CLI.

Both strategies search the same space on the same data with the same schedule (epochs,
warm-up, iterations per epoch, batch, FLOPS target, beta, alpha learning rate, seed);
each run is `fpnas search ... --strategy S` in its own process, one at a time. Printed per
strategy: wall time of the search, iterations, the winner's FLOPS and params, its test
accuracy under the supernet weights (batch-norm recalibrated, the whole test split, as
`finish()` scores it) and the ratios DNAS / FP-NAS. The winners' arch.json files are in
the run directories (`fpnas export` / `fpnas train` read them).

    python bench/strategies.py --out runs/strategies --epochs 3 --warmup-epochs 1 \
        --steps-per-epoch 20 --threads 1
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch


def run(strategy: str, args: argparse.Namespace) -> dict[str, object]:
    out = args.out / strategy
    if out.exists():
        shutil.rmtree(out)
    cmd = [
        sys.executable, "-m", "fpnas_dsl", "search", args.space,
        "--strategy", strategy,
        "--target-flops", str(args.target_flops),
        "--epochs", str(args.epochs),
        "--warmup-epochs", str(args.warmup_epochs),
        "--steps-per-epoch", str(args.steps_per_epoch),
        "--batch-size", str(args.batch_size),
        "--threads", str(args.threads),
        "--seed", str(args.seed),
        "--no-progress",
        "--out", str(out),
    ]  # fmt: skip
    if strategy == "fpnas":
        cmd += ["--convert-epoch", str(args.convert_epoch)]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{strategy}: exit {done.returncode}\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout[done.stdout.index("{") :])
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    its = [m for m in lines if m["type"] == "iter"]
    return {**result, "process_seconds": elapsed, "iterations": len(its)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="fpnas_28px")
    p.add_argument("--target-flops", type=float, default=1.04e6)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--warmup-epochs", type=int, default=1)
    p.add_argument("--convert-epoch", type=int, default=2)
    p.add_argument("--steps-per-epoch", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/strategies"))
    args = p.parse_args()
    print(
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{args.threads} thread(s); {args.space}, target {args.target_flops:g} MACs, "
        f"{args.epochs} epochs ({args.warmup_epochs} warm-up) x {args.steps_per_epoch} "
        f"iterations, batch {args.batch_size}, seed {args.seed}"
    )
    rows = {s: run(s, args) for s in ("fpnas", "dnas")}
    print(
        f"{'strategy':<9} {'iters':>5} {'search s':>9} {'process s':>9} {'FLOPS':>10} "
        f"{'params':>8} {'within':>6} {'accuracy':>8}"
    )
    for name, r in rows.items():
        print(
            f"{name:<9} {r['iterations']:>5} {r['wall_seconds']:>9.1f} "
            f"{r['process_seconds']:>9.1f} {r['flops']:>10,} {r['params']:>8,} "
            f"{r['within_target']!s:>6} {r['accuracy']:>8.4f}"
        )
    f, d = rows["fpnas"], rows["dnas"]
    print(
        f"DNAS / FP-NAS: search time {float(d['wall_seconds']) / float(f['wall_seconds']):.2f}x, "  # type: ignore[arg-type]
        f"winner FLOPS {int(d['flops']) / int(f['flops']):.2f}x, "  # type: ignore[call-overload]
        f"accuracy {float(d['accuracy']) - float(f['accuracy']):+.4f}"  # type: ignore[arg-type]
    )


if __name__ == "__main__":
    main()
