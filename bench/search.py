"""Search-loop overhead: FP-NAS iterations against standalone training of the same networks.

Runs a few search iterations on Fashion-MNIST (or synthetic data) in this process,
recording every sampled architecture, then trains the standalone network of each of those
architectures for the same work (a no-grad validation forward and a training
forward/backward/SGD step on batches of the same size) and prints images per second of
both sides and their ratio. With --run DIR it also summarises a finished search run: the
samples drawn and the wall time split into forward/backward, the core, and the rest.

    python bench/search.py --iterations 6 --run runs/fmnist
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fpnas_dsl.ir import decode
from fpnas_dsl.nn import build_network
from fpnas_dsl.search.config import make_config
from fpnas_dsl.search.run import prepare_search


def summarise_run(run: Path) -> None:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    its = [m for m in lines if m["type"] == "iter"]
    last = [m for m in lines if m["type"] == "epoch"][-1]
    split = last["time_split"]
    wall = its[-1]["wall"]
    print(
        f"run {run}: {len(its)} iterations, {its[-1]['samples']} samples drawn, wall {wall:.1f} s"
    )
    print(f"  K: first {its[0]['k']}, last {its[-1]['k']}")
    for key, label in (("fwd_bwd", "forward/backward"), ("core", "C++ core"), ("other", "rest")):
        print(f"  {label:<17} {split[key]:9.2f} s  {100 * split[key] / wall:6.2f} % of wall")
    rest = wall - sum(split.values())
    print(f"  {'epoch-end eval, io':<17} {rest:9.2f} s  {100 * rest / wall:6.2f} % of wall")


def bench_iterations(args: argparse.Namespace) -> None:
    out = Path(tempfile.mkdtemp(prefix="fpnas-bench-"))
    config = make_config(
        {
            "space": args.space,
            "target_flops": args.target_flops,
            "data": args.data,
            "epochs": 2,
            "warmup_epochs": 1,
            "steps_per_epoch": args.iterations + 1,
            "batch_size": args.batch_size,
            "threads": args.threads,
            "out": str(out),
        }
    )
    search = prepare_search(config)
    sampled: list[np.ndarray] = []
    real_sample = search.dist.sample

    def recording_sample(k: int) -> Any:
        archs = real_sample(k)
        sampled.append(archs.copy())
        return archs

    search.dist.sample = recording_sample  # type: ignore[method-assign]
    epoch_batches = search._epoch_batches(1)
    batches = [next(epoch_batches) for _ in range(args.iterations + 1)]
    search.iteration(1, *batches[0])  # warm-up: allocator, kernels
    sampled.clear()
    images = 0
    start = time.perf_counter()
    for batch in batches[1:]:
        record = search.iteration(1, *batch)
        images += 2 * record["k"] * args.batch_size
    search_time = time.perf_counter() - start

    space = search.space
    x_train, y_train, x_val, _ = batches[1]
    archs = [a for group in sampled for a in group]
    # Same memory format as the search's supernet and batches (channels-last).
    nets = [
        build_network(space, decode(space, a)).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        for a in archs
    ]
    standalone = 0.0
    for net in nets:
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        net.train()
        with torch.no_grad():
            net(x_val)  # first touch: allocations, like the search's warm-up iteration
        begin = time.perf_counter()
        with torch.no_grad():
            net(x_val)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x_train), y_train).backward()  # type: ignore[no-untyped-call]
        opt.step()
        standalone += time.perf_counter() - begin
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} "
        f"torch threads; {args.space} at {space.resolution}px, batch {args.batch_size}"
    )
    print(f"search loop:  {len(archs)} samples, {images / search_time:8.1f} img/s")
    print(f"standalone:   same architectures, {images / standalone:8.1f} img/s")
    print(f"ratio (search time / standalone time): {search_time / standalone:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="fbnetv2_f_pp")
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--target-flops", type=float, default=3e6)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--run", type=Path, help="also summarise this finished run")
    args = parser.parse_args()
    if args.run:
        summarise_run(args.run)
    bench_iterations(args)


if __name__ == "__main__":
    main()
