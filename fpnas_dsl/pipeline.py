"""Decoding image files into uint8 batches fast enough to keep a GPU busy.

`imagefolder:` data is decoded here, through a `torch.utils.data.DataLoader` with worker
processes, pinned memory and prefetching. Two transforms, as the timm/torchvision ImageNet
recipes do:

- training (the omega batches of a search, the batches of `fpnas train`): random-resized
  crop (scale 0.08..1, aspect 3/4..4/3), horizontal flip, optionally AutoAugment;
- evaluation (alpha batches, BN calibration, test): centre crop of 0.875 of the shorter
  side, resized to the resolution (resize to res/0.875, then centre crop res).

Every random draw of an image comes from a generator seeded with a key of (seed, epoch,
position of the image in the epoch's order), never from a worker's generator: the batches
are the same whatever the number of workers and after a resume at any step. Batches
arrive in plan order (the DataLoader keeps it), so the order is `data.epoch_order`'s.

JPEGs are decoded by torchvision.io (libjpeg-turbo) at full size, or, where the crop is
at least twice the resolution, by Pillow with DCT-domain downscaling (`Image.draft`: a
decode at 1/2, 1/4 or 1/8 of the size): each the faster where it is used, measured by
`bench/data.py` (BENCHMARKS.md, issue 14).
"""

from __future__ import annotations

import io
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from fpnas_dsl.errors import FpnasError

Decoder = Literal["auto", "pil", "torchvision"]
DECODERS: tuple[Decoder, ...] = ("auto", "pil", "torchvision")
#: "auto" decodes with Pillow's DCT scaling where the crop is at least this many times the
#: resolution (a decode at 1/2 of the size or less), with torchvision.io elsewhere: the
#: faster of the two each side of it in `bench/data.py`.
DRAFT_MIN = 2
#: The share of the shorter side that the evaluation crop keeps (timm's crop_pct).
EVAL_CROP = 0.875
RRC_SCALE = (0.08, 1.0)
RRC_RATIO = (3 / 4, 4 / 3)
#: Batches each worker prepares ahead.
PREFETCH = 4


def default_workers(streams: int = 1) -> int:
    """Worker processes per stream of batches when none are asked for: the CPUs this
    process may use, less one for the training loop itself, at most 16, shared by
    `streams` (a search reads two: omega and alpha). A GPU consumes thousands of images a
    second, a worker decodes a few hundred: every free core is worth giving it."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    total = max(0, min(16, cpus - 1))
    return -(-total // streams)


@dataclass(frozen=True)
class Augment:
    """The training transform's options (the random-resized crop is always on)."""

    flip: bool = True
    #: a torchvision AutoAugment policy name, or None
    autoaugment: str | None = None


@dataclass(frozen=True)
class Loading:
    """How files are read: worker processes (0: in this process), pinned memory."""

    workers: int = 0
    pin_memory: bool = False
    decoder: Decoder = "auto"


def image_key(seed: int, epoch: int, position: int) -> int:
    """The seed of one image's random draws: a function of where it stands, nothing else."""
    mixed = (seed * 1_000_003 + epoch) * 2_654_435_761 + position * 40_503 + 0x5EED
    return mixed % (1 << 62)


# --------------------------------------------------------------------------------------
# One image


def rrc_box(width: int, height: int, gen: torch.Generator) -> tuple[int, int, int, int]:
    """(left, top, w, h) of a random-resized crop: 10 draws of area and log-aspect, then
    the centre crop at the nearest allowed aspect, as torchvision's RandomResizedCrop."""
    area = width * height
    log_lo, log_hi = math.log(RRC_RATIO[0]), math.log(RRC_RATIO[1])
    draws = torch.rand(10, 4, generator=gen, dtype=torch.float64).tolist()
    for u_area, u_ratio, u_x, u_y in draws:
        target = area * (RRC_SCALE[0] + (RRC_SCALE[1] - RRC_SCALE[0]) * u_area)
        ratio = math.exp(log_lo + (log_hi - log_lo) * u_ratio)
        w = round(math.sqrt(target * ratio))
        h = round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            return int(u_x * (width - w + 1)), int(u_y * (height - h + 1)), w, h
    ratio = width / height
    if ratio < RRC_RATIO[0]:
        w, h = width, round(width / RRC_RATIO[0])
    elif ratio > RRC_RATIO[1]:
        w, h = round(height * RRC_RATIO[1]), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def centre_box(width: int, height: int) -> tuple[int, int, int, int]:
    """(left, top, w, h) of the evaluation crop: a square of 0.875 of the shorter side."""
    side = max(1, round(min(width, height) * EVAL_CROP))
    return (width - side) // 2, (height - side) // 2, side, side


def _decode(
    path: str, resolution: int, gen: torch.Generator | None, decoder: Decoder
) -> torch.Tensor:
    from PIL import Image

    if decoder == "torchvision":
        return _decode_torchvision(Path(path).read_bytes(), resolution, gen)
    raw = Path(path).read_bytes()  # read once, for Pillow's header and either decoder
    with Image.open(io.BytesIO(raw)) as img:  # reads the header only, until asked for pixels
        width, height = img.size
        box = rrc_box(width, height, gen) if gen is not None else centre_box(width, height)
        # "auto": Pillow only where DCT scaling can skip 3/4 of the pixels or more.
        if decoder == "auto" and (img.format != "JPEG" or min(box[2:]) < DRAFT_MIN * resolution):
            try:
                return _decode_torchvision(raw, resolution, None, box)
            except (RuntimeError, ImportError):  # a file it cannot read (CMYK), or no decoder
                pass
        left, top, w, h = box
        # Decode at the smallest DCT scale (1, 1/2, 1/4, 1/8) that keeps the crop at least
        # `resolution` pixels wide and high: most of the decoding work of a downscale.
        img.draft("RGB", (math.ceil(width * resolution / w), math.ceil(height * resolution / h)))
        sx, sy = img.size[0] / width, img.size[1] / height
        rgb = img.convert("RGB")
    scaled = (left * sx, top * sy, (left + w) * sx, (top + h) * sy)
    out = rgb.resize((resolution, resolution), Image.Resampling.BILINEAR, box=scaled)
    return torch.from_numpy(np.asarray(out).copy()).permute(2, 0, 1)


def _decode_torchvision(
    raw: bytes,
    resolution: int,
    gen: torch.Generator | None,
    box: tuple[int, int, int, int] | None = None,
) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms.v2 import functional as TF

    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its decoders for TorchCodec's; they still work, and
        # "auto" falls back to Pillow the day they are gone.
        warnings.simplefilter("ignore", DeprecationWarning)
        data = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
        img = decode_image(data, mode=ImageReadMode.RGB)
    if box is None:
        height, width = img.shape[-2:]
        box = rrc_box(width, height, gen) if gen is not None else centre_box(width, height)
    left, top, w, h = box
    out: torch.Tensor = TF.resized_crop(
        img, top, left, h, w, [resolution, resolution], antialias=True
    )
    return out


def load_image(
    path: str,
    resolution: int,
    key: int | None = None,
    augment: Augment | None = None,
    decoder: Decoder = "auto",
) -> torch.Tensor:
    """One file as uint8 [3, resolution, resolution]: the evaluation transform, or with
    `augment` the training one, its draws seeded by `key`."""
    if augment is None:
        return _decode(path, resolution, None, decoder)
    gen = torch.Generator().manual_seed(key or 0)
    img = _decode(path, resolution, gen, decoder)
    if augment.flip and float(torch.rand((), generator=gen)) < 0.5:
        img = img.flip(-1)
    if augment.autoaugment:
        img = _autoaugment(img, augment.autoaugment, gen)
    return img


def _autoaugment(img: torch.Tensor, policy: str, gen: torch.Generator) -> torch.Tensor:
    from torchvision.transforms import v2

    # torchvision draws from the global generator: seed it from this image's key, and
    # put it back after, so that the caller's random state is untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 1 << 62, (), generator=gen)))
        out: torch.Tensor = v2.AutoAugment(v2.AutoAugmentPolicy(policy))(img)
    return out


# --------------------------------------------------------------------------------------
# Batches


class _Files(Dataset[tuple[torch.Tensor, int, str]]):
    """Items are (file index, key): the image, its label, and an error ('' if none)."""

    def __init__(
        self,
        samples: Sequence[tuple[str, int]],
        resolution: int,
        augment: Augment | None,
        decoder: Decoder,
    ) -> None:
        self.samples = samples
        self.resolution = resolution
        self.augment = augment
        self.decoder = decoder

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item: Any) -> tuple[torch.Tensor, int, str]:
        index, key = item
        path, label = self.samples[index]
        try:
            img = load_image(path, self.resolution, key, self.augment, self.decoder)
        except (OSError, ValueError, SyntaxError, RuntimeError) as exc:
            # Said by the main process (an exception raised in a worker arrives with the
            # worker's traceback in its message).
            blank = torch.zeros(3, self.resolution, self.resolution, dtype=torch.uint8)
            return blank, label, f"{path}: not a readable image ({type(exc).__name__})"
        return img, label, ""


def _collate(items: list[tuple[torch.Tensor, int, str]]) -> tuple[torch.Tensor, torch.Tensor, str]:
    errors = [e for _, _, e in items if e]
    images = torch.stack([img for img, _, _ in items])
    labels = torch.tensor([label for _, label, _ in items], dtype=torch.int64)
    return images, labels, errors[0] if errors else ""


class _Plan(Sampler[list[tuple[int, int]]]):
    def __init__(self, plan: Sequence[list[tuple[int, int]]]) -> None:
        self.plan = plan

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return iter(self.plan)

    def __len__(self) -> int:
        return len(self.plan)


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)  # a worker decodes; threads would fight the others


def stream(
    samples: Sequence[tuple[str, int]],
    resolution: int,
    plan: Sequence[tuple[torch.Tensor, torch.Tensor]],
    key_of: tuple[int, int] | None,
    augment: Augment | None,
    loading: Loading,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The batches of `plan` ((file indices, positions in the epoch) per batch), in order.

    `key_of`: (seed, epoch) that the training transform's draws derive from with each
    image's position; None (or no `augment`) for the evaluation transform."""
    if key_of is None:
        augment = None
    batches = [
        [
            (int(i), image_key(*key_of, int(p)) if key_of is not None else 0)
            for i, p in zip(indices.tolist(), positions.tolist(), strict=True)
        ]
        for indices, positions in plan
    ]
    if not batches:
        return
    files = _Files(samples, resolution, augment, loading.decoder)
    workers = min(loading.workers, len(batches))
    loader = DataLoader(
        files,
        batch_sampler=_Plan(batches),
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=loading.pin_memory,
        prefetch_factor=PREFETCH if workers else None,
        worker_init_fn=_one_thread if workers else None,
    )
    for images, labels, error in loader:
        if error:
            raise FpnasError(f"{error}; remove it or replace it, then resume")
        yield images, labels


def write_jpeg_folder(
    root: Path,
    classes: int = 4,
    per_class: int = 16,
    size: tuple[int, int] = (500, 375),
    seed: int = 0,
    splits: Sequence[str] = ("train", "val"),
    quality: int = 90,
) -> Path:
    """An ImageNet-style folder of generated JPEGs (benchmarks, tests): `root/<split>/
    c<k>/<n>.jpg`, each class a colour and a stripe direction under noise, photo-sized."""
    from PIL import Image

    gen = np.random.default_rng(seed)
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    for split in splits:
        for c in range(classes):
            folder = root / split / f"c{c:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            colour = gen.uniform(40, 215, size=3)
            angle = math.pi * c / max(classes, 1)
            stripes = np.sin((xx * math.cos(angle) + yy * math.sin(angle)) / 9.0) * 40
            for n in range(per_class):
                noise = gen.normal(0, 25, size=(height, width, 3))
                pixels = colour + stripes[..., None] + noise
                img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
                img.save(folder / f"{n:05d}.jpg", quality=quality)
    return root
