"""Data sources for search and training, read locally (nothing is downloaded).

- `fashion-mnist`: the IDX files of Debian's `dataset-fashion-mnist` package
  (/usr/share/datasets/fashion-mnist) or a directory given with `data_dir`;
- `imagefolder:PATH`: ImageNet-style `PATH/train/<class>/*.jpg` (and `PATH/val/` if present),
  optionally restricted to a class subset: `imagefolder:PATH?classes=100&seed=S` draws 100
  classes at random with seed S (the paper's ImageNet-100), `?classes=100` alone takes the
  first 100 in sorted order. Files are decoded by `fpnas_dsl.pipeline` (worker processes,
  random-resized crop and flip for training batches, centre crop for the others);
- `synthetic`: small random tensors with learnable structure, for tests.

Images travel as uint8 [N, C, H, W] tensors (so AutoAugment can run on them) and become
normalised floats per batch in `BatchPreparer`. Batch order is a function of
(seed, epoch) alone, which is what makes a resumed search draw the same batches; so are
the augmentations of an image folder's training batches (of its position in the order).
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from fpnas_dsl.errors import FpnasError
from fpnas_dsl.pipeline import Augment, Loading, load_image, stream

#: Which classes an image folder's labels are (written into run and training directories).
CLASSES_FILE = "classes.json"
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
FASHION_MNIST_HOWTO = (
    "install it with `apt-get install -y dataset-fashion-mnist` (after `apt-get update`), "
    "or pass --data-dir DIR holding the four IDX files "
    "(train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-...)"
)


class ImageSet(Protocol):
    """What the loops need from a split: its length and batched uint8 images + labels."""

    def __len__(self) -> int: ...

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass
class TensorImageSet:
    """A split held in memory: uint8 images [N, C, H, W] and int64 labels [N]."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[indices], self.labels[indices]


class FolderImageSet:
    """A split read from image files on demand, as uint8 squares of `resolution` pixels
    (the evaluation transform; `batches` with an `Augment` gives the training one)."""

    def __init__(self, root: Path, resolution: int, classes: list[str]) -> None:
        from torchvision.datasets import ImageFolder

        keep = set(classes)
        folder = ImageFolder(str(root), allow_empty=True)
        index = folder.class_to_idx
        remap = {index[c]: i for i, c in enumerate(classes) if c in index}
        self.samples = [(p, remap[t]) for p, t in folder.samples if folder.classes[t] in keep]
        self.resolution = resolution
        #: how `batches` reads the files (set by the search or the training: workers)
        self.loading = Loading()

    def __len__(self) -> int:
        return len(self.samples)

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = [], []
        for i in indices.tolist():
            path, label = self.samples[i]
            try:
                images.append(load_image(path, self.resolution, decoder=self.loading.decoder))
            except (OSError, ValueError, SyntaxError, RuntimeError) as exc:
                raise FpnasError(
                    f"{path}: not a readable image ({type(exc).__name__}); remove it or "
                    "replace it, then resume"
                ) from None
            labels.append(label)
        return torch.stack(images), torch.tensor(labels, dtype=torch.int64)

    def narrow(
        self, indices: torch.Tensor, positions: torch.Tensor
    ) -> tuple[ImageSet, torch.Tensor, torch.Tensor]:
        return self, indices, positions


@dataclass
class DataBundle:
    """A data set: train and test splits and what the network must match."""

    name: str
    train: ImageSet
    test: ImageSet
    classes: int
    channels: int
    resolution: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    #: the class folders of an image folder, in label order (None for other sources)
    class_names: list[str] | None = None

    def set_loading(self, loading: Loading) -> None:
        """How image files are read (workers, pinned memory); in-memory data ignores it."""
        for split in (self.train, self.test):
            folder = _files_below(split)
            if folder is not None:
                folder.loading = loading


def save_classes(data: DataBundle, directory: Path) -> None:
    """Record an image folder's classes (label i is `classes[i]`) in `directory`."""
    if data.class_names is not None:
        from fpnas_dsl.runfiles import write_json_atomic

        write_json_atomic(
            directory / CLASSES_FILE, {"data": data.name, "classes": data.class_names}
        )


class Subset:
    """A view of a split through a fixed index list (the omega / alpha halves)."""

    def __init__(self, base: ImageSet, indices: torch.Tensor) -> None:
        self.base = base
        self.indices = indices

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.base.batch(self.indices[indices])

    def narrow(
        self, indices: torch.Tensor, positions: torch.Tensor
    ) -> tuple[ImageSet, torch.Tensor, torch.Tensor]:
        return self.base, self.indices[indices], positions


def is_files(data: ImageSet) -> bool:
    """Whether `data` (or the split it is a view of) is read from image files."""
    return _files_below(data) is not None


def _files_below(data: ImageSet) -> FolderImageSet | None:
    """The image folder that a view (`Subset`, a rank's shard) reads, if any."""
    while not isinstance(data, FolderImageSet):
        base = getattr(data, "base", None)
        if base is None:
            return None
        data = base
    return data


def _narrowed(
    data: ImageSet, indices: torch.Tensor, positions: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The file indices (and their positions in the epoch) that a view's batch reads."""
    while not isinstance(data, FolderImageSet):
        data, indices, positions = data.narrow(indices, positions)  # type: ignore[attr-defined]
    return indices, positions


def split_halves(data: ImageSet, seed: int) -> tuple[Subset, Subset]:
    """Split a training set in two halves (weights, architecture), deterministically."""
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(data), generator=gen)
    half = len(data) // 2
    return Subset(data, perm[:half]), Subset(data, perm[half : 2 * half])


def epoch_order(size: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled order of one epoch: a pure function of (seed, epoch), so resumable."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(size, generator=gen)


def batches(
    data: ImageSet,
    batch_size: int,
    seed: int,
    epoch: int,
    start: int = 0,
    drop_last: bool = True,
    count: int | None = None,
    augment: Augment | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The batches of one epoch, from batch `start` on (`count` of them at most).

    An image folder's are decoded by the pipeline, with the training transform when
    `augment` is given (in-memory data ignores `augment`: it is augmented, if at all, by
    its consumer)."""
    order = epoch_order(len(data), seed, epoch)
    stop = len(order) - (len(order) % batch_size if drop_last else 0)
    begins = range(start * batch_size, stop, batch_size)
    if count is not None:
        begins = begins[:count]
    folder = _files_below(data)
    if folder is None:
        for begin in begins:
            yield data.batch(order[begin : begin + batch_size])
        return
    plan = [
        _narrowed(data, order[b : b + batch_size], torch.arange(b, min(b + batch_size, stop)))
        for b in begins
    ]
    key_of = (seed, epoch) if augment is not None else None
    yield from stream(folder.samples, folder.resolution, plan, key_of, augment, folder.loading)


def steps_per_epoch(data: ImageSet, batch_size: int, drop_last: bool = True) -> int:
    n = len(data)
    return n // batch_size if drop_last else -(-n // batch_size)


def eval_batches(
    data: ImageSet, batch_size: int, count: int | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """A split in its own order, in batches (the last one may be short; `count` at most)."""
    ranges = [
        torch.arange(begin, min(begin + batch_size, len(data)))
        for begin in range(0, len(data), batch_size)
    ][:count]
    folder = _files_below(data)
    if folder is None:
        for indices in ranges:
            yield data.batch(indices)
        return
    plan = [_narrowed(data, indices, indices) for indices in ranges]
    yield from stream(folder.samples, folder.resolution, plan, None, None, folder.loading)


class BatchPreparer:
    """uint8 [B, C, H, W] -> normalised float at the network's resolution and channels."""

    def __init__(
        self, data: DataBundle, resolution: int, channels: int, device: torch.device
    ) -> None:
        self.resolution = resolution
        self.channels = channels
        self.device = device
        self.mean = torch.tensor(data.mean, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(data.std, device=device).view(1, -1, 1, 1)
        self.data_channels = data.channels

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device, non_blocking=True).float().div_(255.0)
        x = (x - self.mean) / self.std
        if x.shape[-1] != self.resolution or x.shape[-2] != self.resolution:
            x = F.interpolate(
                x, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False
            )
        if self.channels != x.shape[1]:
            if x.shape[1] != 1:
                raise FpnasError(
                    f"the data has {x.shape[1]} channels and the network expects "
                    f"{self.channels}; only 1-channel data can be repeated to more"
                )
            x = x.expand(-1, self.channels, -1, -1)
        return x.contiguous(memory_format=torch.channels_last)


# --------------------------------------------------------------------------------------
# Sources


#: Per-channel mean and std that `BatchPreparer` normalises with, by data source.
FASHION_MNIST_STATS = ((0.2860,), (0.3530,))
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
SYNTHETIC_STATS = ((0.5,), (0.29,))


def data_stats(spec: str) -> tuple[str, tuple[float, ...], tuple[float, ...]] | None:
    """(name, mean, std) of a data source without reading it; None if `spec` is unknown."""
    if spec == "fashion-mnist":
        return ("fashion-mnist", *FASHION_MNIST_STATS)
    if spec.startswith("imagefolder:"):
        root = Path(spec.removeprefix("imagefolder:").partition("?")[0])
        return (f"imagefolder:{root.name}", *IMAGENET_STATS)
    if spec == "synthetic" or spec.startswith("synthetic:"):
        try:
            channels = _options(spec.partition(":")[2]).get("channels", 1)
        except FpnasError:
            return None
        mean, std = SYNTHETIC_STATS
        return ("synthetic", mean * channels, std * channels)
    return None


def load_data(spec: str, data_dir: str | None = None, seed: int = 0) -> DataBundle:
    """Open a data source by name: fashion-mnist, imagefolder:PATH[?classes=N], synthetic."""
    if spec == "fashion-mnist":
        return _fashion_mnist(Path(data_dir) if data_dir else FASHION_MNIST_DIR)
    if spec.startswith("imagefolder:"):
        return _image_folder(spec.removeprefix("imagefolder:"))
    if spec == "synthetic" or spec.startswith("synthetic:"):
        return synthetic(**_options(spec.partition(":")[2]), seed=seed)
    raise FpnasError(
        f"unknown data source {spec!r}; allowed: fashion-mnist, imagefolder:PATH, synthetic"
    )


#: The options of each data source (`synthetic:size=256,classes=4`, `imagefolder:P?classes=N`).
DATA_OPTIONS = {
    "synthetic": ("size", "test_size", "classes", "channels", "resolution"),
    "imagefolder": ("classes", "seed", "resolution"),
}


def _options(text: str, source: str = "synthetic") -> dict[str, int]:
    out: dict[str, int] = {}
    allowed = DATA_OPTIONS[source]
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        key = key.strip()
        if key not in allowed:
            raise FpnasError(f"unknown {source} data option {key!r}; allowed: {', '.join(allowed)}")
        least = 0 if key == "seed" else 1
        if not value.strip().isdigit() or int(value) < least:
            raise FpnasError(f"bad data option {item!r}: expected {key}=N with N >= {least}")
        out[key] = int(value)
    return out


def _read_idx(path: Path) -> np.ndarray[Any, np.dtype[np.uint8]]:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise FpnasError(f"{path}: cannot read ({type(exc).__name__})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise FpnasError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    if ndim < 1 or len(raw) < 4 + 4 * ndim:
        raise FpnasError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise FpnasError(f"{path}: truncated IDX file ({body.size} of {np.prod(dims)} bytes)")
    return body.reshape(dims)


def _find(directory: Path, stem: str) -> Path:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise FpnasError(
        f"Fashion-MNIST not found: no {stem}[.gz] in {directory}; {FASHION_MNIST_HOWTO}"
    )


def _fashion_mnist(directory: Path) -> DataBundle:
    arrays = {key: _read_idx(_find(directory, stem)) for key, stem in FASHION_MNIST_FILES.items()}
    train = TensorImageSet(
        torch.from_numpy(arrays["train_images"].copy()).unsqueeze(1),
        torch.from_numpy(arrays["train_labels"].astype(np.int64)),
    )
    test = TensorImageSet(
        torch.from_numpy(arrays["test_images"].copy()).unsqueeze(1),
        torch.from_numpy(arrays["test_labels"].astype(np.int64)),
    )
    return DataBundle("fashion-mnist", train, test, 10, 1, 28, *FASHION_MNIST_STATS)


def _image_folder(spec: str) -> DataBundle:
    path_text, _, query = spec.partition("?")
    root = Path(path_text)
    options = _options(query.replace("&", ","), "imagefolder")
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise FpnasError(
            f"imagefolder: {train_dir} is not a directory (expected PATH/train/<class>/)"
        )
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if not classes:
        raise FpnasError(f"imagefolder: {train_dir} has no class folders")
    if "classes" in options:
        wanted = options["classes"]
        if wanted > len(classes):
            raise FpnasError(
                f"imagefolder: classes={wanted} but {train_dir} has {len(classes)} class folders"
            )
        if "seed" in options:
            # The paper's ImageNet-100: classes drawn at random, reproducibly by seed;
            # kept in sorted order, so the labels do not depend on the draw's order.
            gen = torch.Generator().manual_seed(options["seed"])
            chosen = torch.randperm(len(classes), generator=gen)[:wanted].sort().values
            classes = [classes[i] for i in chosen.tolist()]
        else:
            classes = classes[:wanted]
    elif "seed" in options:
        raise FpnasError("imagefolder: seed=S draws the classes: give classes=N with it")
    resolution = options.get("resolution", 224)
    train = FolderImageSet(train_dir, resolution, classes)
    test_dir = root / "val"
    test = FolderImageSet(test_dir, resolution, classes) if test_dir.is_dir() else train
    imagenet_mean, imagenet_std = IMAGENET_STATS
    return DataBundle(
        f"imagefolder:{root.name}",
        train,
        test,
        len(classes),
        3,
        resolution,
        imagenet_mean,
        imagenet_std,
        class_names=classes,
    )


def synthetic(
    size: int = 512,
    test_size: int = 256,
    classes: int = 4,
    channels: int = 1,
    resolution: int = 16,
    seed: int = 0,
) -> DataBundle:
    """Random images whose class is a bright quadrant-like pattern: learnable in seconds."""
    gen = torch.Generator().manual_seed(seed)
    prototypes = torch.rand(classes, channels, resolution, resolution, generator=gen) * 255

    def make(n: int) -> TensorImageSet:
        labels = torch.randint(0, classes, (n,), generator=gen)
        noise = torch.randn(n, channels, resolution, resolution, generator=gen) * 40
        images = (prototypes[labels] + noise).clamp(0, 255).to(torch.uint8)
        return TensorImageSet(images, labels)

    return DataBundle(
        "synthetic",
        make(size),
        make(test_size),
        classes,
        channels,
        resolution,
        SYNTHETIC_STATS[0] * channels,
        SYNTHETIC_STATS[1] * channels,
    )
