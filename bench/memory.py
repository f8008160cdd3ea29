"""Peak memory and time of one search iteration: DNAS (FBNetV2) against FP-NAS, side by side.

One iteration of each strategy on the same supernet, input and labels, as the search runs
it (`fpnas_dsl.search.sampled.Sampled.iteration`, `fpnas_dsl.search.dnas.Dnas`):

- FP-NAS with K samples (K = 1, and the initial K = max(1, floor(H / 4)) of the uniform
  distribution): K no-grad validation forwards of K uniformly drawn architectures, K
  training forward/backward passes (gradients accumulated), one SGD step;
- DNAS: a relaxed forward/backward on the training batch (every candidate mixed with
  Gumbel-softmax weights at temperature 5, channel masks over the widest tensors), an SGD
  step, a relaxed forward/backward on the validation batch for theta with the expected
  FLOPS hinge, an Adam step on theta.

Peak memory is the iteration's working memory above what was alive before (weights,
momentum and inputs are there before and after), measured as `bench/supernet.py` does:
the CPU allocator's bytes from torch.profiler's memory events, or
torch.cuda.max_memory_allocated on a GPU. Time: the median of --steps iterations after
one untimed one; strategies alternate so that a busy machine slows both alike.

Memory grows linearly in batch x pixels (activations) over a constant (gradients of the
widest tensors): per space and strategy a least-squares line through the measured points
gives the largest batch that fits in --budget GiB (weights and momentum included) at 224
and 128 px: an extrapolation, printed as such.

    python bench/memory.py --threads 1 [--device cuda] [--resolutions 32 48] [--batches 8 16]
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from supernet import peak_bytes, sync

from fpnas_dsl.distribution import Distribution
from fpnas_dsl.ir import Space, uniform_samples
from fpnas_dsl.nn import Supernet
from fpnas_dsl.nn.relaxed import RelaxedSupernet, variables_of
from fpnas_dsl.parser import load_space
from fpnas_dsl.search.dnas import ExpectedCost, gumbel_weights, split_logits

Step = Callable[[], None]


def fpnas_step(
    net: Supernet, opt: torch.optim.Optimizer, archs: np.ndarray, x: torch.Tensor, y: torch.Tensor
) -> Step:
    def step() -> None:
        with torch.no_grad():
            for arch in archs:
                F.cross_entropy(net(x, arch), y, reduction="sum")
        opt.zero_grad(set_to_none=True)
        for arch in archs:
            (F.cross_entropy(net(x, arch), y) / len(archs)).backward()  # type: ignore[no-untyped-call]
        opt.step()

    return step


def dnas_step(
    space: Space, net: Supernet, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
) -> Step:
    relaxed = RelaxedSupernet(net)
    expected = ExpectedCost(space)
    theta = torch.nn.Parameter(
        torch.zeros(sum(n for _, n in variables_of(space)), dtype=torch.float64)
    )
    theta_opt = torch.optim.Adam([theta], lr=0.016)
    with torch.no_grad():  # the hinge below targets 80% of the uniform expectation
        uniform = {v: F.softmax(t, 0) for v, t in split_logits(space, theta).items()}
        target = float(expected(uniform))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        w = gumbel_weights(split_logits(space, theta.detach()), 5.0)
        F.cross_entropy(relaxed(x, w), y).backward()  # type: ignore[no-untyped-call]
        opt.step()
        w = gumbel_weights(split_logits(space, theta), 5.0)
        nll = F.cross_entropy(relaxed(x, w), y)
        hinge = torch.clamp(expected(w) / (0.8 * target) - 1, min=0)
        (theta.grad,) = torch.autograd.grad(nll + 0.3 * hinge, [theta])
        theta_opt.step()
        net.zero_grad(set_to_none=True)

    return step


def measure(
    space: Space, batch: int, args: argparse.Namespace, device: torch.device
) -> dict[str, tuple[float, int]]:
    torch.manual_seed(0)
    net = Supernet(space).to(device).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=4e-5)
    x = torch.randn(batch, space.in_channels, space.resolution, space.resolution, device=device)
    y = torch.randint(0, space.classes, (batch,), device=device)
    k0 = Distribution(space.layout.cardinalities).sample_size(0.25)
    archs = uniform_samples(space, k0, seed=args.seed)
    steps = {
        "fpnas_k1": fpnas_step(net, opt, archs[:1], x, y),
        f"fpnas_k{k0}": fpnas_step(net, opt, archs, x, y),
        "dnas": dnas_step(space, net, opt, x, y),
    }
    for step in steps.values():  # untimed: plans, allocator, momentum buffers
        step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.steps):
        for name, step in steps.items():
            sync(device)
            start = time.perf_counter()
            step()
            sync(device)
            times[name].append(time.perf_counter() - start)
    out = {}
    for name, step in steps.items():
        net.zero_grad(set_to_none=True)  # every side starts without gradients
        peak = peak_bytes(step, device)
        out[name] = (statistics.median(times[name]), peak)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--spaces", nargs="+", default=["fbnetv2_f", "fbnetv2_f_pp", "fpnas_l0"])
    p.add_argument("--resolutions", nargs="+", type=int, help="default: 32 48 (CPU), 128 224")
    p.add_argument("--batches", nargs="+", type=int, help="default: 4 8 (CPU), 32 64")
    p.add_argument("--steps", type=int, default=2, help="timed iterations per strategy")
    p.add_argument("--budget", type=float, default=16.0, help="GiB for the extrapolation")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    args.resolutions = args.resolutions or ([128, 224] if gpu else [32, 48])
    args.batches = args.batches or ([32, 64] if gpu else [4, 8])
    if args.threads:
        torch.set_num_threads(args.threads)
    what = (
        torch.cuda.get_device_name(device)
        if gpu
        else f"CPU ({platform.machine()}), {torch.get_num_threads()} thread(s)"
    )
    print(f"torch {torch.__version__}, {what}; fp32, eager; {args.steps} timed iterations, median")
    print(
        f"{'space':<13} {'px':>4} {'batch':>5} | {'FP-NAS K=1':>14} {'FP-NAS K=K0':>18} "
        f"{'DNAS':>14} | {'DNAS/K=1':>8} {'DNAS/K0':>8} {'DNAS/K=1':>8} {'DNAS/K0':>8}"
    )
    print(
        f"{'':<13} {'':>4} {'':>5} | {'s':>6} {'MiB':>7} {'K0':>3} {'s':>6} {'MiB':>7} "
        f"{'s':>6} {'MiB':>7} | {'memory':>8} {'memory':>8} {'time':>8} {'time':>8}"
    )
    fits: dict[tuple[str, str], list[tuple[int, int]]] = {}
    base: dict[str, int] = {}
    for name in args.spaces:
        for res in args.resolutions:
            space = load_space(name, resolution=res)
            weights = sum(p.numel() for p in Supernet(space, device="meta").parameters())
            base[name] = 2 * 4 * weights  # weights and SGD momentum, fp32
            for batch in args.batches:
                r = measure(space, batch, args, device)
                kname = next(k for k in r if k.startswith("fpnas_k") and k != "fpnas_k1")
                (t1, m1), (tk, mk), (td, md) = r["fpnas_k1"], r[kname], r["dnas"]
                print(
                    f"{name:<13} {res:>4} {batch:>5} | {t1:>6.2f} {m1 / 2**20:>7.1f} "
                    f"{kname[7:]:>3} {tk:>6.2f} {mk / 2**20:>7.1f} {td:>6.2f} {md / 2**20:>7.1f} | "
                    f"{md / m1:>8.2f} {md / mk:>8.2f} {td / t1:>8.2f} {td / tk:>8.2f}",
                    flush=True,
                )
                for strategy, peak in (("FP-NAS", mk), ("DNAS", md)):
                    fits.setdefault((name, strategy), []).append((batch * res * res, peak))
    budget = args.budget * 2**30
    print(
        f"\nLargest batch in {args.budget:g} GiB (weights + momentum + the iteration's peak), "
        f"extrapolated linearly in batch x pixels from the points above:"
    )
    print(
        f"{'space':<13} {'strategy':<8} {'MiB + MiB per (img x 1000 px)':>30} "
        f"{'128 px':>8} {'224 px':>8}"
    )
    for (name, strategy), points in fits.items():
        xs = np.array([p[0] for p in points], dtype=np.float64)
        ys = np.array([p[1] for p in points], dtype=np.float64)
        slope, const = np.polyfit(xs / 1e3, ys, 1)
        slope /= 1e3
        const = max(const, 0.0)
        row = []
        for res in (128, 224):
            room = budget - base[name] - const
            row.append(max(0, math.floor(room / (slope * res * res))) if slope > 0 else 0)
        print(
            f"{name:<13} {strategy:<8} {const / 2**20:>12.1f} + {slope * 1000 / 2**20:>10.3f}"
            f"      {row[0]:>8} {row[1]:>8}"
        )


if __name__ == "__main__":
    main()
