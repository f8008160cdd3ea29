"""Training benchmark: a searched architecture against a hand-designed baseline, trained
from scratch with the same recipe, side by side.

Both trainings are `fpnas train` runs started together, one torch thread each (a 2-core
machine gives each its own core, so neither slows the other more than the other way
round); every flag after `--` goes to both. Prints the per-epoch test accuracy of both and
a summary: FLOPS, params, wall time, images per second and the final test accuracy of the
raw and the EMA weights, with the FLOPS ratio and the accuracy difference, and whether
the searched network reaches the issue's 93% on Fashion-MNIST.

    python bench/train.py --arch docs/fmnist_arch.json --baseline mobilenet_v2_035 \
        --epochs 18 --resolution 56 --out runs/bench_train -- --crop-padding 2
    python bench/train.py --report runs/train_fmnist56 runs/train_mbv2_035_56
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TARGET = 0.93
FOUND_ON_FMNIST = Path(__file__).resolve().parent.parent / "docs" / "fmnist_arch.json"


def launch(
    arch: str, out: Path, args: argparse.Namespace, extra: list[str]
) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "fpnas_dsl", "train", arch, "--out", str(out)]
    cmd += ["--data", args.data, "--epochs", str(args.epochs), "--threads", "1", "--no-progress"]
    if args.resolution:
        cmd += ["--resolution", str(args.resolution)]
    cmd += extra
    print("$", " ".join(cmd), flush=True)
    with (out.parent / f"{out.name}.log").open("wb") as log:  # the child keeps its own copy
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)


def load(run: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    if not (run / "result.json").is_file():
        raise SystemExit(f"{run}: no result.json (not a finished `fpnas train` directory)")
    result = json.loads((run / "result.json").read_text(encoding="utf-8"))
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    epochs = [m for m in map(json.loads, lines) if m.get("type") == "epoch"]
    return result, epochs


def report(searched: Path, baseline: Path) -> None:
    (rs, es), (rb, eb) = load(searched), load(baseline)
    print(f"machine: {platform.machine()}, {platform.python_version()}, one torch thread per run")
    print(f"searched: {searched} ({rs['space']}), baseline: {baseline} ({rb['space']})")
    print()
    print("epoch  searched acc (EMA)   baseline acc (EMA)")
    by_epoch = {m["epoch"]: m for m in eb}
    for m in es:
        b = by_epoch.get(m["epoch"], {})
        if "test_acc" in m or "test_acc" in b:
            print(f"{m['epoch']:5d}  {_acc(m)}     {_acc(b)}")
    print()
    rows = [("searched", rs, es), ("baseline", rb, eb)]
    print(
        f"{'':9s} {'FLOPS':>11s} {'params':>9s} {'res':>4s} {'epochs':>6s} {'wall s':>8s}"
        f" {'img/s':>6s} {'test acc':>9s} {'EMA acc':>8s}"
    )
    for name, r, e in rows:
        ips = sum(m["images_per_s"] for m in e) / len(e)
        print(
            f"{name:9s} {r['flops']:11,d} {r['params']:9,d} {r['resolution']:4d}"
            f" {r['epochs']:6d} {r['wall_s']:8.0f} {ips:6.0f}"
            f" {r['test_acc']:9.2%} {_pct(r['test_acc_ema']):>8s}"
        )
    best_s, best_b = _best(rs), _best(rb)
    print()
    print(f"FLOPS ratio searched/baseline: {rs['flops'] / rb['flops']:.3f}")
    print(
        f"best test accuracy: searched {best_s:.2%}, baseline {best_b:.2%}, "
        f"difference {100 * (best_s - best_b):+.2f} points"
    )
    verdict = "reaches" if best_s >= TARGET else "misses"
    print(f"searched network {verdict} the {TARGET:.0%} target")


def _acc(m: dict[str, Any]) -> str:
    if "test_acc" not in m:
        return " " * 15
    return f"{m['test_acc']:6.2%} ({_pct(m.get('test_acc_ema'))})"


def _best(result: dict[str, Any]) -> float:
    """The better of the raw and the EMA weights' test accuracy (no EMA: the raw)."""
    return float(max(result["test_acc"], result["test_acc_ema"] or 0.0))


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:6.2%}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--arch", default=str(FOUND_ON_FMNIST), help="the searched arch.json")
    p.add_argument("--baseline", default="mobilenet_v2_035", help="a fixed space")
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--epochs", type=int, default=18)
    p.add_argument("--resolution", type=int, help="train both at this input resolution")
    p.add_argument("--out", type=Path, default=Path("runs/bench_train"))
    p.add_argument(
        "--report",
        nargs=2,
        type=Path,
        metavar=("SEARCHED", "BASELINE"),
        help="only summarise two finished training directories",
    )
    args, extra = p.parse_known_args()
    extra = [x for x in extra if x != "--"]
    if args.report:
        report(*args.report)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    searched, baseline = args.out / "searched", args.out / "baseline"
    start = time.perf_counter()
    procs = [launch(args.arch, searched, args, extra), launch(args.baseline, baseline, args, extra)]
    codes = [proc.wait() for proc in procs]
    print(f"both trainings done in {time.perf_counter() - start:.0f} s (exit codes {codes})")
    if any(codes):
        print(f"a training failed: see {args.out}/*.log", file=sys.stderr)
        return 1
    report(searched, baseline)
    return 0


if __name__ == "__main__":
    sys.exit(main())
