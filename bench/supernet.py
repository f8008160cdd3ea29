"""Benchmark: a training step of the supernet on a sampled architecture, against the
standalone network of the same architecture, side by side in one process.

For each of several uniformly sampled architectures: the standalone network is the
supernet's `subnet(arch)` (same weights, same memory format); both sides do the same
step -- zero_grad(set_to_none), forward, cross-entropy, backward, SGD (momentum 0.9,
weight decay 4e-5; the supernet's optimizer holds every supernet parameter, as the search's
does). Steps alternate between the two sides so that a busy machine slows both alike; the
time is the median over the timed steps. Besides the whole step, the forward+backward
alone is timed: a search iteration runs K samples' forward+backward and one optimizer
step, so that ratio is what each sample costs there. (The optimizer is where the supernet
pays extra: a used tensor's gradient, momentum and weight decay cover the whole widest
tensor, not only the slice the architecture used.)

Peak memory is the step's working memory: the most bytes of tensors alive at once during
the step, above what was alive when it began (weights, optimizer state and the input are
there before and after; gradients, activations and temporaries are what the step adds).
- GPU: torch.cuda.max_memory_allocated() after reset_peak_memory_stats(), minus
  memory_allocated() at the start of the step;
- CPU: PyTorch keeps no peak statistic for the CPU allocator, so one extra step per side
  runs under torch.profiler with profile_memory=True, which records every allocation and
  free of the CPU allocator with its size and time; the running sum of those, in time
  order, peaks at the step's working memory. (Process RSS would mix in the allocator's
  caching and the interpreter; the profiler counts exactly tensor bytes.)

Targets (issue 4): time ratio <= 1.10, memory ratio <= 1.10.

Run: python bench/supernet.py [--device cpu|cuda] [--spaces fbnetv2_f fbnetv2_f_pp]
     [--resolution N] [--batch N] [--archs N] [--steps N] [--threads N]
Defaults: CPU: FBNetV2-F and F++ at 64 px, batch 64; GPU: FBNetV2-F and F++ at 128 px,
batch 256, channels-last.
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F

from fpnas_dsl import cost
from fpnas_dsl.ir import Space, uniform_samples
from fpnas_dsl.nn import Supernet
from fpnas_dsl.parser import load_space


@dataclass
class Side:
    """One side of the comparison: its forward, its optimizer, what was measured."""

    name: str
    forward: Callable[[torch.Tensor], torch.Tensor]
    optimizer: torch.optim.Optimizer
    step_times: list[float] = field(default_factory=list)
    fwd_bwd_times: list[float] = field(default_factory=list)
    peak: int = 0

    def fwd_bwd(self, x: torch.Tensor, y: torch.Tensor) -> None:
        loss = F.cross_entropy(self.forward(x), y)
        loss.backward()  # type: ignore[no-untyped-call]

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Forward, loss, backward, SGD (gradients released beforehand, untimed)."""
        self.fwd_bwd(x, y)
        self.optimizer.step()

    def timed_step(self, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        sync(device)
        t0 = time.perf_counter()
        self.fwd_bwd(x, y)
        sync(device)
        t1 = time.perf_counter()
        self.optimizer.step()
        sync(device)
        t2 = time.perf_counter()
        self.fwd_bwd_times.append(t1 - t0)
        self.step_times.append(t2 - t0)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sgd(params: object) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=4e-5)  # type: ignore[arg-type]


def peak_bytes(step: Callable[[], None], device: torch.device) -> int:
    """Working memory of one step: the peak of tensor bytes alive above the start."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - start)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = [
        (e.start_ns(), e.nbytes())
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and str(e.device_type()).endswith("CPU")
    ]
    events.sort()
    alive = peak = 0
    for _, nbytes in events:
        alive += nbytes
        peak = max(peak, alive)
    return peak


def bench_space(space: Space, args: argparse.Namespace, device: torch.device) -> list[float]:
    torch.manual_seed(0)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    supernet = Supernet(space).to(device).to(memory_format=fmt).train()
    super_params = sum(p.numel() for p in supernet.parameters())
    super_opt = sgd(supernet.parameters())
    x = torch.randn(args.batch, space.in_channels, space.resolution, space.resolution)
    x = x.to(device=device, memory_format=fmt)
    y = torch.randint(0, space.classes, (args.batch,), device=device)
    archs = uniform_samples(space, args.archs, seed=args.seed)
    flops, params = cost.costs(space, archs)
    print(
        f"\n{space.name} at {space.resolution} px, batch {args.batch}, "
        f"{'channels-last' if args.channels_last else 'contiguous'}; supernet holds "
        f"{super_params / 1e6:.1f} M parameters"
    )
    print(
        f"{'arch':>4} {'MFLOPS':>8} {'Mparams':>8} | {'supernet':>9} {'standalone':>10} "
        f"{'ratio':>6} {'ratio':>6} | {'supernet':>9} {'standalone':>10} {'ratio':>6}"
    )
    print(
        f"{'':>4} {'':>8} {'':>8} | {'ms/step':>9} {'ms/step':>10} {'step':>6} {'fw+bw':>6} | "
        f"{'MB peak':>9} {'MB peak':>10} {'':>6}"
    )
    ratios: list[float] = []
    fb_ratios: list[float] = []
    mem_ratios: list[float] = []
    totals = [0.0, 0.0]
    for i, arch in enumerate(archs):
        net = supernet.subnet(arch).to(device).to(memory_format=fmt).train()
        sides = [
            Side("supernet", partial(supernet, arch=arch), super_opt),
            Side("standalone", net, sgd(net.parameters())),
        ]
        for _ in range(args.warmup):
            for side in sides:
                side.optimizer.zero_grad(set_to_none=True)
                side.step(x, y)
        for _ in range(args.steps):
            for side in sides:
                side.timed_step(x, y, device)
        for side in sides:
            side.optimizer.zero_grad(set_to_none=True)
            side.peak = peak_bytes(partial(side.step, x, y), device)
            side.optimizer.zero_grad(set_to_none=True)
        t_super = statistics.median(sides[0].step_times)
        t_alone = statistics.median(sides[1].step_times)
        totals[0] += t_super
        totals[1] += t_alone
        ratios.append(t_super / t_alone)
        fb_ratios.append(
            statistics.median(sides[0].fwd_bwd_times) / statistics.median(sides[1].fwd_bwd_times)
        )
        mem_ratios.append(sides[0].peak / sides[1].peak)
        print(
            f"{i + 1:>4} {flops[i] / 1e6:>8.1f} {params[i] / 1e6:>8.2f} | "
            f"{t_super * 1e3:>9.1f} {t_alone * 1e3:>10.1f} {ratios[-1]:>6.3f} {fb_ratios[-1]:>6.3f}"
            f" | {sides[0].peak / 2**20:>9.1f} {sides[1].peak / 2**20:>10.1f} "
            f"{mem_ratios[-1]:>6.3f}"
        )
        del net, sides
    geo, geo_fb, geo_mem = (geomean(r) for r in (ratios, fb_ratios, mem_ratios))
    print(
        f"{space.name}: step time ratio supernet/standalone: geometric mean {geo:.3f}, "
        f"total {totals[0] / totals[1]:.3f}, worst {max(ratios):.3f} (target <= 1.10)"
    )
    print(
        f"{space.name}: forward+backward time ratio (what each of the K samples of a search "
        f"iteration costs): geometric mean {geo_fb:.3f}, worst {max(fb_ratios):.3f}"
    )
    print(
        f"{space.name}: peak-memory ratio: geometric mean {geo_mem:.3f}, "
        f"worst {max(mem_ratios):.3f} (target <= 1.10)"
    )
    return [geo, geo_mem]


def geomean(values: list[float]) -> float:
    return math.exp(statistics.fmean(math.log(v) for v in values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--spaces", nargs="+", default=["fbnetv2_f", "fbnetv2_f_pp"])
    parser.add_argument("--resolution", type=int, help="default: 64 on CPU, 128 on GPU")
    parser.add_argument("--batch", type=int, help="default: 64 on CPU, 256 on GPU")
    parser.add_argument("--archs", type=int, default=5, help="architectures per space")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per side and arch")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per side and arch")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="default: on for GPU, off for CPU",
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    args.resolution = args.resolution or (128 if gpu else 64)
    args.batch = args.batch or (256 if gpu else 64)
    if args.channels_last is None:
        args.channels_last = gpu
    if args.threads:
        torch.set_num_threads(args.threads)
    what = torch.cuda.get_device_name(device) if gpu else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"torch {torch.__version__}, {what}, python {platform.python_version()}, "
        f"numpy {np.__version__}; fp32, eager"
    )
    for name in args.spaces:
        bench_space(load_space(name, resolution=args.resolution), args, device)


if __name__ == "__main__":
    main()
