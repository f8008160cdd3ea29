"""What export, train and show accept as input, read without importing torch.

An architecture reaches them in one of four shapes:

- an `arch.json` file (see `fpnas_dsl.archfile`);
- a search run directory (`fpnas search --out DIR`): `arch.json`, `checkpoint.pt` with the
  supernet's weights, `metrics.jsonl`;
- a training directory (`fpnas train --out DIR`): `arch.json`, `model.pt` / `model_ema.pt`
  with the standalone network's weights, `metrics.jsonl`, `result.json`;
- a fixed space (a .space file or bundled name with one network).

`open_source` tells them apart and loads the architecture (the directories' file names
are `fpnas_dsl.runfiles`'s).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fpnas_dsl.archfile import is_space_argument, load_arch, load_fixed
from fpnas_dsl.errors import FpnasError
from fpnas_dsl.ir import Architecture, Space
from fpnas_dsl.runfiles import (
    ARCH_FILE,
    SEARCH_CHECKPOINT,
    TRAIN_MODEL,
    TRAIN_MODEL_EMA,
    TRAIN_STATE,
)

#: "run": a run directory with an architecture but no weights (yet), opened by a reader
#: that needs none (`open_source(..., weights=False)`).
SourceKind = Literal["arch", "space", "search", "train", "run"]


@dataclass
class Source:
    """An architecture and where it came from."""

    path: Path
    kind: SourceKind
    space: Space
    arch: Architecture
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def directory(self) -> Path | None:
        return self.path if self.kind in ("search", "train", "run") else None


def open_source(path: Path | str, space: str | None = None, weights: bool = True) -> Source:
    """An arch.json, a search run directory, a training directory or a fixed space (a
    .space file or bundled name with one network) -> `Source`.

    `space` (a .space path or bundled name) reads a minimal architecture file, one
    without its compiled space, against that space (see `fpnas_dsl.archfile`).
    `weights=False` also accepts a run directory without weights (kind "run")."""
    path = Path(path)
    if is_space_argument(path) and not path.is_dir():
        if space is not None:
            raise FpnasError(
                f"{path}: is a space; --space is for reading an arch.json against a space"
            )
        compiled, arch = load_fixed(path)
        return Source(path, "space", compiled, arch)
    if path.is_dir():
        arch_path = path / ARCH_FILE
        if not arch_path.is_file():
            raise FpnasError(
                f"{path}: a directory without {ARCH_FILE} (expected a search run directory, "
                "a training directory or an arch.json file)"
            )
        kind: SourceKind = "search" if (path / SEARCH_CHECKPOINT).exists() else "train"
        if kind == "train" and not any(
            (path / name).exists() for name in (TRAIN_MODEL, TRAIN_MODEL_EMA, TRAIN_STATE)
        ):
            if weights:
                raise FpnasError(
                    f"{path}: neither a search run ({SEARCH_CHECKPOINT} missing) nor a "
                    f"training directory ({TRAIN_MODEL} missing); pass {arch_path} to use the "
                    "architecture alone"
                )
            kind = "run"
        compiled, arch, extra = load_arch(arch_path, space)
        return Source(path, kind, compiled, arch, extra)
    if not path.exists():
        raise FpnasError(f"{path}: no such file or directory")
    compiled, arch, extra = load_arch(path, space)
    return Source(path, "arch", compiled, arch, extra)
