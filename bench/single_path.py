"""Does single-path training of the supernet learn? Loss and accuracy per sharing setting.

Trains the supernet of a space on Fashion-MNIST for a fixed number of SGD steps, one
architecture per step, from the same initialisation seed and on the same batches, once per
(sharing setting, sampling regime), and prints the mean training loss of every 100 steps
and the test accuracy of 6 uniformly random architectures under the trained weights
(batch-norm re-estimated on 8 training batches, the whole test split):

- sharing (`Micro.share`, the `share` line of a micro): `separate` (the paper: every
  (kernel, attention) candidate its own weights), `kernel`, `attention`, `residual`, any
  `+`-joined combination, `all` (kernel+attention+residual, fpnas's default);
- regime: `random` (a new uniformly sampled architecture every step, what the search's
  warm-up does) or `fixed` (one architecture every step: a plain network, the reference;
  its accuracy is that architecture's). With both, each row shows the fixed reference
  beside the random architectures, and the gap between them.

`--resolution R` builds each space for R x R inputs; the images are resized to it
(bilinear, `BatchPreparer`), so Fashion-MNIST at 64 px is its 28-px images upsampled.

SGD with Nesterov momentum 0.9, weight decay 4e-5, a one-cycle learning rate (10% warm-up).
Chance is a loss of ln 10 = 2.30 and 10% accuracy.

Resumable: each finished (space, resolution, sharing, regime, schedule) result is kept in
OUT/single_path.json and a rerun prints it without training again; any other setting is
a new entry, never a stale one.

    python bench/single_path.py --space fbnetv2_f_pp --steps 300 --threads 1
    python bench/single_path.py --space fbnetv2_f_pp --resolution 64 --share all \\
        --regimes random fixed --threads 1
    python bench/single_path.py --space bench/spaces/f28_*.space --share all
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import platform
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fpnas_dsl.data import BatchPreparer, DataBundle, batches, eval_batches, load_data, split_halves
from fpnas_dsl.errors import FpnasError
from fpnas_dsl.ir import SHARABLE, Sharable, Space, uniform_samples
from fpnas_dsl.nn import Supernet
from fpnas_dsl.parser import load_space
from fpnas_dsl.runfiles import write_json_atomic
from fpnas_dsl.search.checkpoint import space_digest
from fpnas_dsl.search.scoring import supernet_accuracy

REGIMES = ("random", "fixed")
RESULTS_FILE = "single_path.json"


@dataclass(frozen=True)
class Schedule:
    """How long and how fast the supernet trains."""

    steps: int = 300
    batch: int = 64
    lr: float = 0.05


@dataclass
class Result:
    per100: list[float]  # mean training loss of every 100 steps
    accs: list[float]  # test accuracy of each scored architecture
    train_s: float
    weights: int


#: One training step: (supernet, optimizer, prepared images, labels, architecture) ->
#: the step's loss. A training policy (several architectures per step, distillation)
#: replaces `sgd_step`; the schedule steps the learning rate after it.
Step = Callable[[Supernet, torch.optim.Optimizer, torch.Tensor, torch.Tensor, np.ndarray], float]


def sgd_step(
    net: Supernet,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    arch: np.ndarray,
) -> float:
    """Single path: one architecture's forward and backward pass, one update."""
    optimizer.zero_grad(set_to_none=True)
    loss = F.cross_entropy(net(images, arch), labels)
    loss.backward()  # type: ignore[no-untyped-call]
    optimizer.step()
    return float(loss.item())


def step_name(step: Step) -> str:
    return str(getattr(step, "name", getattr(step, "__name__", type(step).__name__)))


def sharing(text: str) -> tuple[Sharable, ...]:
    if text == "separate":
        return ()
    if text == "all":
        return SHARABLE
    parts = text.split("+")
    bad = [p for p in parts if p not in SHARABLE]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown sharing {bad}; allowed: {SHARABLE}")
    return tuple(p for p in SHARABLE if p in parts)


def sharing_name(share: tuple[Sharable, ...]) -> str:
    return "+".join(share) if share else "separate"


def with_sharing(space: Space, share: tuple[Sharable, ...]) -> Space:
    micros = tuple(m.model_copy(update={"share": share}) for m in space.micros)
    return space.model_copy(update={"micros": micros})


def run(
    space: Space,
    regime: str,
    schedule: Schedule,
    data: DataBundle,
    step: Step = sgd_step,
) -> Result:
    """Train `space`'s supernet under `regime` for `schedule.steps` steps of `step`, then
    score 6 random architectures (`random`) or the trained one (`fixed`)."""
    omega, _ = split_halves(data.train, 0)
    prepare = BatchPreparer(data, space.resolution, space.in_channels, torch.device("cpu"))
    torch.manual_seed(0)
    net = Supernet(space).to(memory_format=torch.channels_last)
    fixed = uniform_samples(space, 1, seed=3)[0]
    fresh = uniform_samples(space, schedule.steps, seed=1000)
    opt = torch.optim.SGD(
        net.parameters(), lr=schedule.lr, momentum=0.9, weight_decay=4e-5, nesterov=True
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=schedule.lr, total_steps=schedule.steps, pct_start=0.1
    )
    net.train()
    losses: list[float] = []
    start = time.perf_counter()

    def stream() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for epoch in itertools.count(1):
            yield from batches(omega, schedule.batch, 0, epoch)

    for i, (x, y) in zip(range(schedule.steps), stream(), strict=False):
        arch = fixed if regime == "fixed" else fresh[i]
        losses.append(step(net, opt, prepare(x), y, arch))
        sched.step()
    train_s = time.perf_counter() - start
    archs = [fixed] if regime == "fixed" else list(uniform_samples(space, 6, seed=77))
    accs = []
    for arch in archs:
        calibration = itertools.islice((x for x, _ in batches(omega, 64, 7, 0)), 8)
        accs.append(
            supernet_accuracy(net, arch, calibration, eval_batches(data.test, 500), prepare)
        )
    per100 = [float(np.mean(losses[i : i + 100])) for i in range(0, len(losses), 100)]
    return Result(per100, accs, train_s, sum(p.numel() for p in net.parameters()))


def result_key(space: Space, regime: str, schedule: Schedule, data_name: str, step: Step) -> str:
    """Everything a result depends on (the space digest covers its resolution and sharing)."""
    return json.dumps(
        {
            "space": space_digest(space),
            "regime": regime,
            "data": data_name,
            "step": step_name(step),
            **asdict(schedule),
        },
        sort_keys=True,
    )


class Results:
    """Results kept in one JSON file, keyed by `result_key`, written after each."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.values: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}

    def get(self, key: str, compute: Callable[[], Result]) -> tuple[Result, bool]:
        """(the result, whether it was kept from before)."""
        if key in self.values:
            return Result(**self.values[key]), True
        result = compute()
        self.values[key] = asdict(result)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path, self.values)
        return result, False


def describe(result: Result, regime: str) -> tuple[str, str]:
    """(loss per 100 steps, accuracy) as the table shows them."""
    accs = result.accs
    per100 = " ".join(f"{v:.2f}" for v in result.per100)
    if regime == "fixed":
        return per100, f"{accs[0]:.1%}"
    return per100, f"{min(accs):.1%}-{max(accs):.1%}, {np.mean(accs):.1%}"


def table_header(regimes: Sequence[str]) -> list[str]:
    cols = ["space", "px", "sharing", "weights"]
    for regime in regimes:
        what = (
            "accuracy of 6 random archs (min-max, mean)"
            if regime == "random"
            else ("accuracy of that arch")
        )
        cols += [f"{regime}: loss per 100 steps", f"{regime}: {what}"]
    if len(regimes) == 2:
        cols.append("random mean - fixed (points)")
    cols.append("train s")
    return [
        "| " + " | ".join(cols) + " |",
        "|" + " --- |" * len(cols),
    ]


def table_row(
    space: Space, share: tuple[Sharable, ...], results: dict[str, Result], kept: bool = False
) -> str:
    first = next(iter(results.values()))
    cells = [space.name, str(space.resolution), sharing_name(share), f"{first.weights:,}"]
    for regime, result in results.items():
        cells += describe(result, regime)
    if len(results) == 2:
        gap = 100 * (float(np.mean(results["random"].accs)) - results["fixed"].accs[0])
        cells.append(f"{gap:+.1f}")
    train_s = " + ".join(f"{r.train_s:.0f}" for r in results.values())
    cells.append(f"{train_s} (kept)" if kept else train_s)
    return "| " + " | ".join(cells) + " |"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--space", nargs="+", default=["fbnetv2_f_pp"], help="one or more spaces")
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument(
        "--resolution",
        type=int,
        help="build the spaces for R x R inputs; images are resized to it (default: the data's)",
    )
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--share",
        nargs="+",
        type=sharing,
        default=[(), ("kernel",), ("kernel", "attention"), SHARABLE],
        help="sharing settings to compare: separate, all, or e.g. kernel+attention",
    )
    p.add_argument("--regimes", nargs="+", choices=REGIMES, default=["random"])
    p.add_argument("--out", type=Path, default=Path("runs/single_path"), help="results kept here")
    args = p.parse_args(argv)
    if args.steps < 1 or args.batch < 1:
        p.error("--steps and --batch must be >= 1")
    regimes = [r for r in REGIMES if r in args.regimes]  # random first, fixed beside it
    schedule = Schedule(args.steps, args.batch, args.lr)
    torch.set_num_threads(args.threads)
    try:
        data = load_data(args.data)
        resolution = args.resolution or data.resolution
        bases = [
            load_space(name, resolution=resolution, in_channels=data.channels, classes=data.classes)
            for name in args.space
        ]
    except FpnasError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    kept = Results(args.out / RESULTS_FILE)
    print(
        f"machine: {platform.machine()}, {args.threads} torch thread(s), torch {torch.__version__}"
    )
    resized = "" if resolution == data.resolution else f", resized (bilinear) to {resolution} px"
    print(
        f"{args.data} at {data.resolution}x{data.resolution}x{data.channels}{resized}, batch "
        f"{args.batch}, SGD (Nesterov 0.9) one-cycle lr {args.lr}, {args.steps} steps; "
        f"chance: loss ln 10 = {math.log(10):.2f}, accuracy 10%"
    )
    lines = table_header(regimes)
    print("\n".join(lines), flush=True)
    for base in bases:
        for share in args.share:
            space = with_sharing(base, share)
            results, was_kept = {}, []
            for regime in regimes:
                key = result_key(space, regime, schedule, args.data, sgd_step)
                results[regime], old = kept.get(
                    key, functools.partial(run, space, regime, schedule, data)
                )
                was_kept.append(old)
            row = table_row(space, share, results, all(was_kept))
            lines.append(row)
            print(row, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
