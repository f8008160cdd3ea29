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
  its accuracy is that architecture's).

SGD with Nesterov momentum 0.9, weight decay 4e-5, a one-cycle learning rate (10% warm-up).
Chance is a loss of ln 10 = 2.30 and 10% accuracy.

    python bench/single_path.py --space fbnetv2_f_pp --steps 300 --threads 1
    python bench/single_path.py --space bench/spaces/f28_*.space --share all
"""

from __future__ import annotations

import argparse
import itertools
import math
import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fpnas_dsl.data import BatchPreparer, DataBundle, batches, eval_batches, load_data, split_halves
from fpnas_dsl.ir import SHARABLE, Sharable, Space, uniform_samples
from fpnas_dsl.nn import Supernet
from fpnas_dsl.parser import load_space
from fpnas_dsl.search.scoring import supernet_accuracy

REGIMES = ("random", "fixed")


@dataclass
class Result:
    per100: list[float]  # mean training loss of every 100 steps
    accs: list[float]  # test accuracy of each scored architecture
    train_s: float
    weights: int


def sharing(text: str) -> tuple[Sharable, ...]:
    if text == "separate":
        return ()
    if text == "all":
        return SHARABLE
    parts = text.split("+")
    bad = [p for p in parts if p not in SHARABLE]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown sharing {bad}; allowed: {SHARABLE}")
    return tuple(p for p in SHARABLE if p in parts)  # type: ignore[misc]


def with_sharing(space: Space, share: tuple[Sharable, ...]) -> Space:
    micros = tuple(m.model_copy(update={"share": share}) for m in space.micros)
    return space.model_copy(update={"micros": micros})


def run(space: Space, regime: str, args: argparse.Namespace, data: DataBundle) -> Result:
    omega, _ = split_halves(data.train, 0)
    prepare = BatchPreparer(data, space.resolution, space.in_channels, torch.device("cpu"))
    torch.manual_seed(0)
    net = Supernet(space).to(memory_format=torch.channels_last)
    fixed = uniform_samples(space, 1, seed=3)[0]
    fresh = uniform_samples(space, args.steps, seed=1000)
    opt = torch.optim.SGD(
        net.parameters(), lr=args.lr, momentum=0.9, weight_decay=4e-5, nesterov=True
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.1
    )
    net.train()
    losses: list[float] = []
    start = time.perf_counter()

    def stream() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for epoch in itertools.count(1):
            yield from batches(omega, args.batch, 0, epoch)

    for i, (x, y) in zip(range(args.steps), stream(), strict=False):
        arch = fixed if regime == "fixed" else fresh[i]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(prepare(x), arch), y)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        sched.step()
        losses.append(loss.item())
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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--space", nargs="+", default=["fbnetv2_f_pp"], help="one or more spaces")
    p.add_argument("--data", default="fashion-mnist")
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
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = load_data(args.data)
    print(
        f"machine: {platform.machine()}, {args.threads} torch thread(s), torch {torch.__version__}"
    )
    print(
        f"{args.data} at {data.resolution}x{data.resolution}x{data.channels}, batch "
        f"{args.batch}, SGD (Nesterov 0.9) one-cycle lr {args.lr}, {args.steps} steps; "
        f"chance: loss ln 10 = {math.log(10):.2f}, accuracy 10%"
    )
    print(
        "| space | sharing | regime | weights | loss per 100 steps | accuracy of 6 random "
        "archs (min-max, mean) | train s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in args.space:
        base = load_space(
            name, resolution=data.resolution, in_channels=data.channels, classes=data.classes
        )
        for share in args.share:
            space = with_sharing(base, share)
            for regime in args.regimes:
                r = run(space, regime, args, data)
                accs = r.accs
                acc = (
                    f"{accs[0]:.1%} (that arch)"
                    if regime == "fixed"
                    else f"{min(accs):.1%}-{max(accs):.1%}, {np.mean(accs):.1%}"
                )
                shared = "+".join(share) if share else "separate"
                per100 = " ".join(f"{v:.2f}" for v in r.per100)
                print(
                    f"| {base.name} | {shared} | {regime} | {r.weights:,} | {per100} | {acc} | "
                    f"{r.train_s:.0f} |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
