"""Benchmark: the C++ distribution core against a straightforward torch.distributions version.

For the paper's 32-decision layout (each decision 3*2*4*7*8 = 1344 choices), factorized
(768 logits) and joint (43,008 logits), both sides do in the same run:

- one full alpha update: entropy, sample K = 14 architectures, the gradient of
  sum_k w_k * (-log P(A_k | alpha)) with random weights w, one Adam step;
- sampling throughput: architectures per second, drawn in batches of 10,000.

The baseline is what one would write in torch: one Categorical per categorical (per variable
for factorized, per decision for joint), autograd for the gradient, torch.optim.Adam.

Run: python bench/core.py [--min-time SECONDS]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from fpnas_dsl.distribution import Distribution, Mode

LAYOUT: list[list[int]] = [[3, 2, 4, 7, 8] for _ in range(32)]
K = 14
LR = 1e-3
SAMPLE_BATCH = 10_000
REPEATS = 5


class TorchBaseline:
    """The same operations with torch.distributions.Categorical, autograd and Adam."""

    def __init__(self, layout: Sequence[Sequence[int]], mode: Mode) -> None:
        self.layout = [list(d) for d in layout]
        self.mode = mode
        sizes = (
            [math.prod(d) for d in layout] if mode == "joint" else [c for d in layout for c in d]
        )
        self.params = [torch.zeros(n, dtype=torch.float64, requires_grad=True) for n in sizes]
        self.opt = torch.optim.Adam(self.params, lr=LR)
        self.vmax = max(map(len, layout))

    def _categoricals(self) -> list[torch.distributions.Categorical]:
        return [torch.distributions.Categorical(logits=p) for p in self.params]

    def _to_architectures(self, draws: list[torch.Tensor]) -> torch.Tensor:
        """Categorical draws -> [n, decisions, max_variables] per-variable indices."""
        n = len(draws[0])
        out = torch.zeros(n, len(self.layout), self.vmax, dtype=torch.int64)
        it = iter(draws)
        for d, cards in enumerate(self.layout):
            if self.mode == "factorized":
                for v in range(len(cards)):
                    out[:, d, v] = next(it)
                continue
            flat = next(it)
            for v in reversed(range(len(cards))):  # row-major: the last variable fastest
                out[:, d, v] = flat % cards[v]
                flat = flat // cards[v]
        return out

    def _flat_indices(self, arch: torch.Tensor) -> list[torch.Tensor]:
        """The inverse of _to_architectures: one index tensor per categorical."""
        out = []
        for d, cards in enumerate(self.layout):
            if self.mode == "factorized":
                out.extend(arch[:, d, v] for v in range(len(cards)))
                continue
            flat = torch.zeros(len(arch), dtype=torch.int64)
            for v, c in enumerate(cards):
                flat = flat * c + arch[:, d, v]
            out.append(flat)
        return out

    def sample(self, n: int) -> torch.Tensor:
        with torch.no_grad():
            return self._to_architectures([c.sample((n,)) for c in self._categoricals()])

    def update(self, weights: torch.Tensor) -> float:
        cats = self._categoricals()
        with torch.no_grad():
            entropy = float(sum(c.entropy() for c in cats))
            arch = self._to_architectures([c.sample((K,)) for c in cats])
        log_p = sum(c.log_prob(i) for c, i in zip(cats, self._flat_indices(arch), strict=True))
        loss = -(weights * log_p).sum()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return entropy


def core_update(dist: Distribution, weights: np.ndarray) -> float:
    entropy = dist.entropy()
    dist.step(dist.sample(K), weights, LR)
    return entropy


CLOCKS = {"cpu": time.thread_time, "wall": time.perf_counter}
clock = CLOCKS["cpu"]


def best_time(fn: Callable[[], object], min_time: float) -> float:
    """Seconds per call: the best over REPEATS runs of at least min_time each."""
    fn()  # warm up
    best = math.inf
    for _ in range(REPEATS):
        calls, start = 0, clock()
        while (elapsed := clock() - start) < min_time or calls == 0:
            fn()
            calls += 1
        best = min(best, elapsed / calls)
    return best


def gradient_check(mode: Mode) -> float:
    """Max |core gradient - torch autograd| on the same logits and samples (same maths?)."""
    dist = Distribution(LAYOUT, mode, seed=1)
    dist.logits[:] = np.random.default_rng(1).normal(size=dist.num_params)
    base = TorchBaseline(LAYOUT, mode)
    with torch.no_grad():  # the core's logits, one tensor per categorical in the same order
        offset = 0
        for p in base.params:
            p.copy_(torch.from_numpy(dist.logits[offset : offset + len(p)]))
            offset += len(p)
    arch = dist.sample(K)
    weights = np.random.default_rng(2).normal(size=K)
    cats = base._categoricals()
    log_p = sum(
        c.log_prob(i) for c, i in zip(cats, base._flat_indices(torch.from_numpy(arch)), strict=True)
    )
    (-(torch.from_numpy(weights) * log_p).sum()).backward()
    expected = torch.cat([p.grad for p in base.params if p.grad is not None]).numpy()
    return float(np.max(np.abs(dist.grad(arch, weights) - expected)))


def measure(mode: Mode, min_time: float) -> tuple[float, float]:
    """Prints the two rows for one mode; returns the update times (core, torch)."""
    dist = Distribution(LAYOUT, mode, seed=0)
    base = TorchBaseline(LAYOUT, mode)
    pool = np.random.default_rng(0).normal(size=(64, K))  # random weights, cycled
    tpool = [torch.from_numpy(w) for w in pool]
    calls = iter(range(1 << 62))
    t_core = best_time(lambda: core_update(dist, pool[next(calls) % 64]), min_time)
    t_torch = best_time(lambda: base.update(tpool[next(calls) % 64]), min_time)
    s_core = SAMPLE_BATCH / best_time(lambda: dist.sample(SAMPLE_BATCH), min_time)
    s_torch = SAMPLE_BATCH / best_time(lambda: base.sample(SAMPLE_BATCH), min_time)
    row = f"{mode:<11}{dist.num_params:>7}  "
    print(
        f"{row}{'full alpha update (us)':<28}{t_core * 1e6:>12.1f}{t_torch * 1e6:>12.1f}"
        f"{t_torch / t_core:>8.0f}x"
    )
    print(
        f"{row}{'sampling (architectures/s)':<28}{s_core:>12,.0f}{s_torch:>12,.0f}"
        f"{s_core / s_torch:>8.0f}x"
    )
    return t_core, t_torch


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    load = (
        ", load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()) if os.name == "posix" else ""
    )
    return f"{cpu} ({platform.machine()}), {os.cpu_count()} CPUs{load}, {platform.platform()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-time", type=float, default=0.25, help="seconds per timing run")
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="cpu",
        help="cpu: CPU time of the calling thread, robust on a shared machine (default); "
        "wall: elapsed time",
    )
    args = parser.parse_args()
    global clock
    clock = CLOCKS[args.clock]
    torch.set_num_threads(1)

    print("fpnas core benchmark")
    print(f"machine: {machine()}")
    print(f"python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}")
    print("threads: torch.set_num_threads(1) for the baseline; the core is single-threaded")
    print(f"layout: 32 decisions x [3, 2, 4, 7, 8]; K = {K}; best of {REPEATS} runs")
    what = "CPU time of the calling thread" if args.clock == "cpu" else "wall-clock time"
    print(f"clock: {what} (--clock {args.clock})")
    print()
    header = (
        f"{'mode':<11}{'logits':>7}  {'measurement':<28}{'fpnas core':>12}{'torch':>12}{'ratio':>9}"
    )
    print(header)
    print("-" * len(header))

    results = {mode: measure(mode, args.min_time) for mode in ("factorized", "joint")}
    print()
    for mode in ("factorized", "joint"):
        print(
            f"check ({mode}): max |closed-form grad - torch autograd| = {gradient_check(mode):.1e}"
        )
    ratios = {m: t / c for m, (c, t) in results.items()}
    fast = all(r >= 20 for r in ratios.values())
    print(
        "target >= 20x faster than the baseline: "
        + ("met" if fast else "NOT met")
        + f" (factorized {ratios['factorized']:.0f}x, joint {ratios['joint']:.0f}x)"
    )
    for mode, (t_core, _) in results.items():
        verdict = "met" if t_core < 50e-6 else "NOT met"
        print(f"target < 50 us per full update, {mode}: {verdict} ({t_core * 1e6:.1f} us)")


if __name__ == "__main__":
    main()
