"""Images per second that the image-folder pipeline delivers, against what a search eats.

On a generated folder of photo-sized JPEGs (500x375, quality 90, as ImageNet's median):

1. decoders, one image at a time in this process: Pillow decoding at full size and
   resizing (what `imagefolder:` did before issue 14), Pillow with DCT-domain downscaling
   (`Image.draft`), torchvision.io.decode_image, and the pipeline's "auto" (Pillow's
   scaling where it skips 3/4 of the pixels or more, torchvision elsewhere); for the
   evaluation transform (centre crop) and the training one (random-resized crop + flip);
2. the pipeline (`fpnas_dsl.data.batches`, training transform, batch 64) with 0, 1, 2, ...
   worker processes;
3. what one search consumes: images (omega + alpha batch) per second of search
   iterations of the space (default fbnetv2_f) on in-memory tensors of the same size.

Both sides run in this one process, one after the other, at 128 and 224 px; each figure
is the median of `--repeats` timings. Prints the ratio delivered / consumed.

    python bench/data.py                       # the CPU machine: 2 cores
    python bench/data.py --device cuda --batch 256 --workers 0 4 8 15   # a GPU machine
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from fpnas_dsl.data import batches, load_data, split_halves
from fpnas_dsl.pipeline import Augment, Loading, load_image, write_jpeg_folder


def median_rate(count: int, work: Callable[[], Any], repeats: int) -> float:
    """count / seconds of `work()`, the median of `repeats` timings."""
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        work()
        times.append(time.perf_counter() - began)
    return count / statistics.median(times)


def pil_full(path: str, resolution: int, train: bool) -> torch.Tensor:
    """What `imagefolder:` did before: decode the whole JPEG, resize, centre crop (v2)."""
    from PIL import Image
    from torchvision.transforms import v2

    with Image.open(path) as img:
        rgb = img.convert("RGB")
    t = v2.functional.pil_to_tensor(rgb)
    if train:
        t = v2.RandomResizedCrop(resolution, antialias=True)(t)
        return v2.RandomHorizontalFlip()(t)
    t = v2.functional.resize(t, int(resolution / 0.875), antialias=True)
    return v2.functional.center_crop(t, [resolution, resolution])


def decoders(files: list[str], resolution: int, repeats: int) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    ways: dict[str, Callable[[str, int, bool, int], torch.Tensor]] = {
        "PIL, full decode (before)": lambda p, r, t, k: pil_full(p, r, t),
        "PIL + draft": lambda p, r, t, k: load_image(p, r, k, Augment() if t else None, "pil"),
        "torchvision.io": lambda p, r, t, k: load_image(
            p, r, k, Augment() if t else None, "torchvision"
        ),
        "auto (the pipeline's)": lambda p, r, t, k: load_image(
            p, r, k, Augment() if t else None, "auto"
        ),
    }
    for train in (False, True):
        for way in ways.values():
            way(files[0], resolution, train, 0)  # imports, first-call set-up
        # Round-robin over the decoders, so that a machine busy with other jobs slows all
        # of them alike; the median per decoder.
        times: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(repeats):
            for name, way in ways.items():
                began = time.perf_counter()
                for k, path in enumerate(files):
                    way(path, resolution, train, k)
                times[name].append(time.perf_counter() - began)
        for name in ways:
            rate = len(files) / statistics.median(times[name])
            out.setdefault(name, {})["train" if train else "eval"] = rate
    return out


def delivered(
    root: Path, resolution: int, workers: int, batch: int, repeats: int, pin: bool
) -> float:
    data = load_data(f"imagefolder:{root}?resolution={resolution}")
    data.set_loading(Loading(workers=workers, pin_memory=pin))
    omega, _ = split_halves(data.train, 0)
    steps = len(omega) // batch
    epoch = iter(range(1, 1000))

    def work() -> None:
        for _ in batches(omega, batch, 0, next(epoch), augment=Augment()):
            pass

    return median_rate(steps * batch, work, repeats)


def consumed(
    space_name: str, resolution: int, batch: int, iterations: int, device: str, threads: int
) -> tuple[float, float, int]:
    """(images per second, seconds per iteration, K) of warm-up search iterations (K
    samples trained with weight 1/K, as the first epochs do) on tensors in memory."""
    from fpnas_dsl import cost
    from fpnas_dsl.parser import load_space
    from fpnas_dsl.search.config import make_config
    from fpnas_dsl.search.run import prepare_search

    space = load_space(space_name, resolution=resolution, in_channels=3, classes=100)
    target = float(cost.cost_range(space, samples=200, seed=0)["flops_median"])
    data = f"synthetic:size={4 * batch},test_size={batch},classes=100,channels=3,"
    data += f"resolution={resolution}"
    with tempfile.TemporaryDirectory() as tmp:
        config = make_config(
            {
                "space": space_name,
                "target_flops": target,
                "data": data,
                "epochs": 2,
                "warmup_epochs": 1,
                "batch_size": batch,
                "device": device,
                "threads": threads or None,
                "out": str(Path(tmp) / "run"),
            }
        )
        search = prepare_search(config, log=lambda _: None)
        x = search.prepare(search.data.train.batch(torch.arange(batch))[0])
        y = torch.zeros(batch, dtype=torch.int64, device=search.device)
        search.iteration(1, x, y, x, y)  # warm-up (allocator, kernels)
        times, ks = [], []
        for _ in range(iterations):
            if search.device.type == "cuda":
                torch.cuda.synchronize()
            began = time.perf_counter()
            ks.append(search.iteration(1, x, y, x, y)["k"])
            if search.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - began)
    per = statistics.median(times)
    return 2 * batch / per, per, ks[-1]


def consumed_apart(
    space: str, resolution: int, batch: int, iterations: int, device: str, threads: int
) -> tuple[float, float, int] | str:
    """`consumed` in a child process: a crash there (torch's CPU backward has segfaulted
    on FBNetV2-F at 160 px and more on this project's CPU machine) is reported, not fatal."""
    cmd = [sys.executable, __file__, "--consume", str(resolution), "--space", space]
    cmd += ["--batch", str(batch), "--iterations", str(iterations), "--device", device]
    cmd += ["--threads", str(threads)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        why = f"signal {-done.returncode}" if done.returncode < 0 else f"exit {done.returncode}"
        return f"not measured: the search's process died ({why})"
    rate, per, k = done.stdout.split()[-3:]
    return float(rate), float(per), int(k)


def cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--resolutions", type=int, nargs="+", default=[128, 224])
    p.add_argument("--workers", type=int, nargs="+", help="default: 0 .. the CPUs")
    p.add_argument("--images", type=int, default=1024, help="training images generated")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--space", default="fbnetv2_f")
    p.add_argument("--iterations", type=int, default=2, help="timed search iterations")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the search")
    p.add_argument("--folder", type=Path, help="an existing imagefolder (default: generated)")
    p.add_argument("--consume", type=int, metavar="PX", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.consume:  # the child of `consumed_apart`
        torch.set_num_threads(args.threads or torch.get_num_threads())
        got = consumed(
            args.space, args.consume, args.batch, args.iterations, args.device, args.threads
        )
        print(*got)
        return 0
    workers = args.workers if args.workers is not None else list(range(cpus() + 1))
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.folder
        if root is None:
            root = Path(tmp) / "jpegs"
            per_class = max(1, args.images // 8)
            write_jpeg_folder(root, 8, per_class, size=(500, 375), splits=("train",))
        files = [str(f) for f in sorted((root / "train").rglob("*.jpg"))][:64]
        print(
            f"machine: {platform.machine()}, {cpus()} CPUs, torch {torch.__version__}, "
            f"python {platform.python_version()}, device {args.device}"
            + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else "")
        )
        print(f"folder: {len(list((root / 'train').rglob('*.jpg')))} JPEGs (500x375, q90)")
        for res in args.resolutions:
            print(f"\n### {res} px")
            print("\n| decoder (1 process) | eval img/s | train img/s |")
            print("| --- | --- | --- |")
            for name, rates in decoders(files, res, args.repeats).items():
                print(f"| {name} | {rates['eval']:.0f} | {rates['train']:.0f} |")
            eats = consumed_apart(
                args.space, res, args.batch, args.iterations, args.device, args.threads
            )
            rate = float("nan")
            if isinstance(eats, str):
                print(f"\nsearch consumes: {eats}")
            else:
                rate, per, k = eats
                print(
                    f"\nsearch consumes: {rate:.1f} img/s ({args.space}, batch {args.batch}, "
                    f"warm-up iterations of K={k}: {per:.2f} s each for an omega and an "
                    f"alpha batch, {args.threads} thread(s), {args.device})"
                )
            print("\n| workers | delivered img/s | delivered / consumed |")
            print("| --- | --- | --- |")
            pin = args.device.startswith("cuda")
            for w in workers:
                got = delivered(root, res, w, args.batch, args.repeats, pin)
                print(f"| {w} | {got:.0f} | {got / rate:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
