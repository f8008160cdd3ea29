"""Everything worth measuring on a GPU machine, in one run of a few minutes.

1. the machine (GPU, memory, CPUs, torch, CUDA, python);
2. a training step of the supernet on a sampled architecture against the standalone
   network of the same architecture (the supernet's `subnet`): median ms per step,
   images per second and peak working memory, fp32 and bf16 autocast, channels-last
   (the paper's settings: FBNetV2-F at 128 px, batch 256);
3. search iterations per second after the warm-up (K samples scored on the alpha batch,
   the ones that carry weight trained on the omega batch), with sample skipping
   (`--skip-below 1e-3`, the default) and without (0), fp32 and bf16;
4. the image-folder pipeline (`bench/data.py`): images per second delivered with 0..N
   workers at 128 and 224 px on generated 500x375 JPEGs, against what the search of 3
   consumes (omega + alpha batch per iteration).

Prints Markdown for BENCHMARKS.md (and writes it to `--out FILE`). On a GPU machine:

    pip install -e . && python bench/gpu.py --out gpu.md

`--device cpu --quick` runs every part at toy sizes, to know it does not crash.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fpnas_dsl import cost
from fpnas_dsl.ir import uniform_samples
from fpnas_dsl.nn import Supernet
from fpnas_dsl.parser import load_space
from fpnas_dsl.pipeline import write_jpeg_folder
from fpnas_dsl.precision import Precision


def _sibling(name: str) -> Any:
    """A script of bench/ as a module (by path: `data` is too common a name to import)."""
    path = Path(__file__).resolve().parent / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"fpnas_bench_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


_data, _supernet = _sibling("data"), _sibling("supernet")
consumed, cpus, delivered = _data.consumed, _data.cpus, _data.delivered
peak_bytes = _supernet.peak_bytes


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def machine(device: torch.device) -> list[str]:
    rows = [
        f"- python {platform.python_version()}, torch {torch.__version__}, "
        f"numpy {np.__version__}, {platform.machine()}, {cpus()} CPUs"
    ]
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        rows.append(
            f"- GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB, "
            f"{props.multi_processor_count} SMs, CUDA {torch.version.cuda}, "
            f"cuDNN {torch.backends.cudnn.version()}, {torch.cuda.device_count()} device(s)"
        )
    else:
        rows.append(f"- no GPU: {device}, {torch.get_num_threads()} threads")
    return rows


def timed(step: Callable[[], None], device: torch.device, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        sync(device)
        began = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def step_table(args: argparse.Namespace, device: torch.device) -> list[str]:
    space = load_space(args.space, resolution=args.resolution)
    torch.manual_seed(0)
    fmt = torch.channels_last
    supernet = Supernet(space).to(device).to(memory_format=fmt).train()
    x = torch.randn(args.batch, space.in_channels, space.resolution, space.resolution)
    x = x.to(device=device, memory_format=fmt)
    y = torch.randint(0, space.classes, (args.batch,), device=device)
    archs = uniform_samples(space, args.archs, seed=0)
    flops = cost.flops(space, archs)
    rows = [
        f"{space.name} at {space.resolution} px, batch {args.batch}, channels-last, SGD "
        f"momentum 0.9; {args.archs} uniform architectures ({flops.min() / 1e6:.0f} to "
        f"{flops.max() / 1e6:.0f} MFLOPS), median of {args.steps} steps after {args.warmup}",
        "",
        "| amp | arch | supernet ms/step | standalone ms/step | ratio | supernet img/s | "
        "standalone img/s | supernet MiB | standalone MiB | ratio |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for amp in args.amps:
        precision = Precision(amp, device)
        for i, arch in enumerate(archs):
            net = supernet.subnet(arch).to(device).to(memory_format=fmt).train()
            sides: list[tuple[Callable[[torch.Tensor], torch.Tensor], Any]] = [
                (lambda t, a=arch: supernet(t, a), supernet.parameters()),
                (net, net.parameters()),
            ]
            results = []
            for forward, params in sides:
                opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=4e-5)

                def step(forward: Any = forward, opt: Any = opt, pr: Any = precision) -> None:
                    opt.zero_grad(set_to_none=True)
                    with pr.autocast():
                        logits = forward(x)
                    pr.backward(F.cross_entropy(logits.float(), y))
                    pr.step(opt)

                seconds = timed(step, device, args.warmup, args.steps)
                opt.zero_grad(set_to_none=True)
                results.append((seconds, peak_bytes(step, device)))
            (ts, ms), (ta, ma) = results
            rows.append(
                f"| {amp} | {i + 1} | {ts * 1e3:.1f} | {ta * 1e3:.1f} | {ts / ta:.2f} | "
                f"{args.batch / ts:,.0f} | {args.batch / ta:,.0f} | {ms / 2**20:,.0f} | "
                f"{ma / 2**20:,.0f} | {ms / max(ma, 1):.2f} |"
            )
            del net
    return rows


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    with contextlib.redirect_stderr(io.StringIO()):
        yield


def search_table(args: argparse.Namespace, device: torch.device) -> tuple[list[str], float]:
    from fpnas_dsl.search.config import make_config
    from fpnas_dsl.search.run import prepare_search

    space = load_space(args.space, resolution=args.resolution, in_channels=3, classes=100)
    target = float(cost.cost_range(space, samples=200, seed=0)["flops_median"])
    data = f"synthetic:size={4 * args.batch},test_size={args.batch},classes=100,channels=3,"
    data += f"resolution={args.resolution}"
    rows = [
        f"search iterations after the warm-up ({args.space}, {args.resolution} px, batch "
        f"{args.batch} for omega and for alpha, fresh supernet, median of "
        f"{args.iterations} iteration(s) after one)",
        "",
        "| amp | skip below | iterations/s | images/s (omega + alpha) | K | trained / K |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    best = 0.0
    for amp in args.amps:
        for skip in (1e-3, 0.0):
            with tempfile.TemporaryDirectory() as tmp:
                config = make_config(
                    {
                        "space": args.space,
                        "target_flops": target,
                        "data": data,
                        "epochs": 3,
                        "warmup_epochs": 1,
                        "batch_size": args.batch,
                        "device": str(device),
                        "skip_below": skip,
                        "amp": amp,
                        "out": str(Path(tmp) / "run"),
                    }
                )
                with quiet():
                    search = prepare_search(config, log=lambda _: None)
                x = search.prepare(search.data.train.batch(torch.arange(args.batch))[0])
                y = torch.randint(0, 100, (args.batch,), device=search.device)
                records: list[dict[str, Any]] = []

                def one(search: Any = search, x: Any = x, y: Any = y, out: Any = records) -> None:
                    out.append(search.iteration(2, x, y, x, y))

                seconds = timed(one, search.device, 1, args.iterations)
            k = statistics.median(r["k"] for r in records)
            trained = statistics.fmean(r["trained"] / r["k"] for r in records)
            rate = 2 * args.batch / seconds
            best = max(best, rate)
            rows.append(
                f"| {amp} | {skip:g} | {1 / seconds:.2f} | {rate:,.0f} | {k:.0f} | {trained:.2f} |"
            )
    return rows, best


def data_table(args: argparse.Namespace, device: torch.device, eats: float) -> list[str]:
    rows = [
        f"image-folder pipeline, training transform, batch {args.batch}, {args.images} "
        f"JPEGs of 500x375 ({args.distinct} generated, the rest copies of them; the page "
        "cache holds them all), against the search of the table above "
        f"({eats:,.0f} img/s at its best at {args.resolution} px)",
        "",
        "| px | workers | delivered img/s | delivered / consumed |",
        "| --- | --- | --- | --- |",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "jpegs"
        write_jpeg_folder(root, 8, max(1, args.distinct // 8), splits=("train",))
        made = sorted((root / "train").rglob("*.jpg"))
        for n in range(args.images - len(made)):
            src = made[n % len(made)]
            shutil.copyfile(src, src.with_name(f"copy{n:06d}.jpg"))
        for res in args.data_resolutions:
            rate = eats
            if res != args.resolution:
                rate, _, _ = consumed(args.space, res, args.batch, 1, str(device), 0)
            for w in args.workers:
                got = delivered(root, res, w, args.batch, args.repeats, device.type == "cuda")
                rows.append(f"| {res} | {w} | {got:,.0f} | {got / rate:.2f} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="toy sizes: a smoke test")
    p.add_argument("--out", type=Path, help="also write the Markdown here")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    args.space = "fbnetv2_f"
    args.amps = ["off", "bf16"]
    if args.quick:
        args.resolution, args.batch, args.archs, args.steps, args.warmup = 32, 8, 1, 2, 1
        args.iterations, args.images, args.distinct, args.repeats = 1, 64, 16, 1
        args.workers, args.data_resolutions = [0, 2], [32]
    else:
        args.resolution, args.batch, args.archs, args.steps, args.warmup = 128, 256, 3, 10, 3
        args.iterations, args.images, args.distinct, args.repeats = 3, 4096, 256, 3
        most = max(1, cpus() - 1)
        args.workers = sorted({0, 1, 2, 4, 8, most} & set(range(most + 1)))
        args.data_resolutions = [128, 224]
    if gpu:
        torch.backends.cudnn.benchmark = True
    began = time.perf_counter()
    lines = ["```", f"$ python bench/gpu.py {' '.join(argv or sys.argv[1:])}".rstrip()]
    lines += machine(device)
    lines += ["```", ""]

    def show(rows: list[str]) -> None:
        lines.extend([*rows, ""])
        print("\n".join(rows) + "\n", flush=True)

    print("\n".join(lines), flush=True)
    show(step_table(args, device))
    rows, eats = search_table(args, device)
    show(rows)
    show(data_table(args, device, eats))
    tail = f"total {time.perf_counter() - began:.0f} s"
    show([tail])
    if args.out is not None:
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
