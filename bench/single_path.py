"""Does single-path training of the supernet learn? Training loss under sampling regimes.

Trains the supernet of a space on Fashion-MNIST (or synthetic data) for a fixed number of
SGD steps, one architecture per step, under several regimes, each from the same fresh
initialisation and on the same batches, and prints the mean training loss of the first and
the last 25 steps of each:

- fixed:   one architecture every step (a plain network: the reference);
- two:     two architectures alternating;
- pool8:   eight architectures in turn;
- random:  a new uniformly sampled architecture every step (what the search's warm-up does);
- random-tied: as random, with every block's candidates initialised to compute the same
  function (the kernel-3 depthwise filter the centre of the kernel-5 one, split-attention
  splits copies of one filter, the attention's last layer zero so every gate is uniform):
  tells co-adaptation of separately trained candidates from their different initial
  functions.

Chance level is ln(10) = 2.30.

    python bench/single_path.py --steps 200 --threads 1
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fpnas_dsl.data import batches
from fpnas_dsl.ir import Space, uniform_samples
from fpnas_dsl.nn import Supernet
from fpnas_dsl.nn.blocks import MBConv, SplitAttention, SqueezeExcite
from fpnas_dsl.search.config import make_config
from fpnas_dsl.search.run import prepare_search

REGIMES = ("fixed", "two", "pool8", "random", "random-tied")


@torch.no_grad()
def tie_candidates(net: Supernet) -> None:
    """Every candidate of a block computes the same function as the widest-kernel one."""
    for block in net.blocks:
        ops: list[MBConv] = list(block.ops.values())  # type: ignore[arg-type]
        if not ops:
            continue
        ref = max(ops, key=lambda op: (op.conv_dw.kernel_size[0], -op.conv_dw.out_channels))
        kmax = ref.conv_dw.kernel_size[0]
        mid = ref.conv_pwl.in_channels
        for op in ops:
            if op is not ref:
                if isinstance(op.conv_pw, nn.Conv2d) and isinstance(ref.conv_pw, nn.Conv2d):
                    op.conv_pw.weight.copy_(ref.conv_pw.weight)
                op.conv_pwl.weight.copy_(ref.conv_pwl.weight)
                k = op.conv_dw.kernel_size[0]
                off = (kmax - k) // 2
                centre = ref.conv_dw.weight[:mid, :, off : off + k, off : off + k]
                op.conv_dw.weight.copy_(centre.repeat_interleave(op.conv_dw.out_channels // mid, 0))
            if isinstance(op.attn, SqueezeExcite):
                op.attn.conv_expand.weight.zero_()
            elif isinstance(op.attn, SplitAttention):
                op.attn.fc2.weight.zero_()


def schedule(regime: str, space: Space, steps: int) -> Callable[[int], np.ndarray]:
    pool = uniform_samples(space, 8, seed=3)
    fresh = uniform_samples(space, steps, seed=1000)
    if regime == "fixed":
        return lambda i: pool[0]
    if regime == "two":
        return lambda i: pool[i % 2]
    if regime == "pool8":
        return lambda i: pool[i % 8]
    return lambda i: fresh[i]


def run(regime: str, args: argparse.Namespace) -> tuple[float, float, float]:
    torch.manual_seed(0)
    search = prepare_search(
        make_config(
            {
                "space": args.space,
                "target_flops": 2.5e6,
                "data": args.data,
                "out": f"{args.tmp}/{regime}",
                "threads": args.threads,
                "batch_size": args.batch,
            }
        )
    )
    net = search.supernet
    if regime.endswith("tied"):
        tie_candidates(net)
    arch_of = schedule(regime, search.space, args.steps)
    opt = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=0.9, weight_decay=4e-5)
    net.train()
    losses: list[float] = []
    start = time.perf_counter()
    stream: Iterator[tuple[torch.Tensor, torch.Tensor]] = batches(
        search.omega_half, args.batch, 0, 1
    )
    for i in range(args.steps):
        x, y = next(stream)
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(search.prepare(x), arch_of(i)), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return float(np.mean(losses[:25])), float(np.mean(losses[-25:])), time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--space", default="fbnetv2_f_pp")
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--regimes", nargs="+", choices=REGIMES, default=list(REGIMES))
    p.add_argument("--tmp", default="/tmp/fpnas-single-path")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"machine: {platform.machine()}, {args.threads} torch thread(s), torch {torch.__version__}"
    )
    print(
        f"{args.space} on {args.data}, batch {args.batch}, SGD lr {args.lr} momentum 0.9, "
        f"{args.steps} steps; chance = ln 10 = {math.log(10):.2f}"
    )
    print(f"{'regime':12s} {'loss, first 25':>15s} {'loss, last 25':>14s} {'time s':>7s}")
    for regime in args.regimes:
        first, last, secs = run(regime, args)
        print(f"{regime:12s} {first:15.3f} {last:14.3f} {secs:7.0f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
