"""What skipping low-weight training passes saves over a whole search, and what it changes.

Runs the same search (the flags after `--`, same seed) once per tolerance, one after the
other on an otherwise idle machine, with `fpnas search --skip-below T`; tolerance 0 trains
every sample (Algorithm 1 as printed). Prints per run the samples drawn and trained, the
training passes per iteration, the m_omega weight skipped, the search loop's wall time and
its ratio to the full loop's, the largest |delta alpha| against the full loop (the final
logits of the distribution, in the same FD/JD form), whether the returned architecture is
the same, and its supernet accuracy. A finished run (arch.json present) is not repeated.

    python bench/skipping.py --out runs/skipping -- fpnas_28px --target-flops 1.04e6 \
        --epochs 6 --warmup-epochs 2 --convert-epoch 4 --steps-per-epoch 230
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from fpnas_dsl.runfiles import read_metrics
from fpnas_dsl.search.checkpoint import load_checkpoint


def run(search_args: list[str], tolerance: float, out: Path) -> None:
    if (out / "arch.json").is_file():
        return
    cmd = [sys.executable, "-m", "fpnas_dsl", "search", *search_args]
    cmd += ["--skip-below", repr(tolerance), "--out", str(out), "--no-progress"]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def summary(out: Path) -> dict[str, Any]:
    iters = read_metrics(out / "metrics.jsonl", "iter")
    arch = json.loads((out / "arch.json").read_text())
    logits = np.asarray(load_checkpoint(out)["distribution"]["logits"], dtype=np.float64)
    return {
        "samples": sum(m["k"] for m in iters),
        "trained": sum(m["trained"] for m in iters),
        "iterations": len(iters),
        "skipped_weight": sum(m["skipped_weight"] for m in iters),
        "loop_s": sum(m["t_fwd_bwd"] + m["t_core"] for m in iters),
        "wall_s": arch["wall_seconds"],
        "blocks": arch["blocks"],
        "accuracy": arch["accuracy"],
        "flops": arch["flops"],
        "logits": logits,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/skipping"))
    p.add_argument("--tolerances", type=float, nargs="+", default=[1e-3, 0.0])
    args, search_args = p.parse_known_args()
    search_args = [x for x in search_args if x != "--"]
    if 0.0 not in args.tolerances:
        args.tolerances.append(0.0)
    runs = {t: args.out / f"skip_{t:g}" for t in args.tolerances}
    for tolerance, out in runs.items():
        run(search_args, tolerance, out)
    results = {t: summary(out) for t, out in runs.items()}
    full = results[0.0]
    print(f"machine: {platform.machine()}, python {platform.python_version()}")
    print(f"search: fpnas search {' '.join(search_args)}")
    print(
        "| skip below | samples drawn | trained | passes / iteration | weight skipped | "
        "wall s | wall / full | max abs delta alpha | same arch | FLOPS | supernet acc |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for tolerance, r in results.items():
        delta = float(np.abs(r["logits"] - full["logits"]).max())
        print(
            f"| {tolerance:g} | {r['samples']:,} | {r['trained']:,} | "
            f"{r['trained'] / r['iterations']:.2f} | {r['skipped_weight']:.3g} | "
            f"{r['wall_s']:.0f} | {r['wall_s'] / full['wall_s']:.3f} | {delta:.3g} | "
            f"{'yes' if r['blocks'] == full['blocks'] else 'no'} | {r['flops']:,} | "
            f"{r['accuracy']:.2%} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
