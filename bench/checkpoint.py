"""The cost of one search checkpoint against the interval between time-based checkpoints.

Per space, at the input of its runs, the search is built as `fpnas search` builds it
(`fpnas_dsl.search.loop.Search` on synthetic data of that shape: supernet, SGD with
momentum, cosine scheduler, distribution, strategy). Every weight is given a gradient and
one SGD step is taken, so that every weight has its momentum buffer, and the distribution
is converted FD -> JD: the largest state a search reaches (one that has trained every
candidate, past its conversion epoch). Then, --repeats times, the loop's own
`Search.state()` is written with the project's `save_checkpoint` (temporary file, fsync,
rename) into a temporary directory under --dir; the time is state() plus the write.

Printed per space: the checkpoint's size, the write's seconds (min / median), and the
median as a fraction of `fpnas_dsl.stopping.DEFAULT_CHECKPOINT_EVERY`, the share of a run's
time that checkpoints every interval would take.

    python bench/checkpoint.py --threads 1 [--repeats 5] [--dir .] [--spaces fpnas_28px ...]
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from fpnas_dsl.data import synthetic
from fpnas_dsl.parser import load_space
from fpnas_dsl.search.checkpoint import save_checkpoint
from fpnas_dsl.search.config import SearchConfig
from fpnas_dsl.search.loop import Search
from fpnas_dsl.stopping import DEFAULT_CHECKPOINT_EVERY, describe_duration

#: space -> (resolution, input channels, classes) of its runs: the README's main job
#: (Fashion-MNIST, 28 x 28 grey, 10 classes), and the paper's 64-px ImageNet-100 runs.
INPUTS: dict[str, tuple[int, int, int]] = {
    "fpnas_28px": (28, 1, 10),
    "fbnetv2_f_pp": (64, 3, 100),
}


def build(name: str, batch: int) -> Search:
    resolution, channels, classes = INPUTS[name]
    space = load_space(name, resolution=resolution, in_channels=channels, classes=classes)
    data = synthetic(size=2 * batch, test_size=batch, classes=classes, channels=channels,
                     resolution=resolution)  # fmt: skip
    config = SearchConfig(space=name, target_flops=1e9, data="synthetic", batch_size=batch)
    search = Search(config, space, data, Path("."))
    for weight in search.supernet.parameters():
        weight.grad = torch.full_like(weight, 1e-6)
    search.optimizer.step()
    search.scheduler.step()
    search.dist.to_joint()
    return search


def measure(search: Search, directory: Path, repeats: int) -> tuple[int, list[float]]:
    seconds, size = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        path = save_checkpoint(directory, search.state())
        seconds.append(time.perf_counter() - start)
        size = path.stat().st_size
    return size, seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spaces", nargs="+", default=list(INPUTS), choices=list(INPUTS))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch", type=int, default=64, help="only sizes the synthetic data")
    p.add_argument("--dir", type=Path, default=Path("."), help="where to write (its disk)")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} thread(s); "
        f"{args.repeats} writes each; default interval "
        f"{describe_duration(DEFAULT_CHECKPOINT_EVERY)} ({DEFAULT_CHECKPOINT_EVERY:g} s)"
    )
    print(
        f"{'space':<13} {'input/classes':>14} {'Mparams':>8} {'alpha':>8} {'MB':>8} "
        f"{'min s':>7} {'median s':>8} {'of interval':>11}"
    )
    work = Path(tempfile.mkdtemp(prefix="fpnas-checkpoint-bench.", dir=args.dir))
    try:
        for name in args.spaces:
            search = build(name, args.batch)
            size, seconds = measure(search, work, args.repeats)
            resolution, channels, classes = INPUTS[name]
            params = sum(w.numel() for w in search.supernet.parameters())
            median = statistics.median(seconds)
            print(
                f"{name:<13} {f'{resolution}x{resolution}x{channels}/{classes}':>14} "
                f"{params / 1e6:>8.2f} {search.dist.num_params:>8,} {size / 1e6:>8.1f} "
                f"{min(seconds):>7.3f} {median:>8.3f} "
                f"{median / DEFAULT_CHECKPOINT_EVERY:>10.2%}",
                flush=True,
            )
            del search
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
