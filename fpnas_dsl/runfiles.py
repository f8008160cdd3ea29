"""What export, train and show accept as input, read without importing torch.

An architecture reaches them in one of three shapes:

- an `arch.json` file (see `fpnas_dsl.archfile`);
- a search run directory (`fpnas search --out DIR`): `arch.json`, `checkpoint.pt` with the
  supernet's weights, `metrics.jsonl`;
- a training directory (`fpnas train --out DIR`): `arch.json`, `model.pt` / `model_ema.pt`
  with the standalone network's weights, `metrics.jsonl`, `result.json`.

`open_source` tells them apart and loads the architecture; `read_metrics` reads the
metrics file of either kind of directory.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fpnas_dsl.archfile import load_arch
from fpnas_dsl.errors import FpnasError
from fpnas_dsl.ir import Architecture, Space

SourceKind = Literal["arch", "search", "train"]

ARCH_FILE = "arch.json"
METRICS_FILE = "metrics.jsonl"
SEARCH_CHECKPOINT = "checkpoint.pt"
TRAIN_STATE = "train_state.pt"
TRAIN_MODEL = "model.pt"
TRAIN_MODEL_EMA = "model_ema.pt"
TRAIN_RESULT = "result.json"


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
        return self.path if self.kind != "arch" else None


def open_source(path: Path | str) -> Source:
    """An arch.json, a search run directory or a training directory -> `Source`."""
    path = Path(path)
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
            raise FpnasError(
                f"{path}: neither a search run ({SEARCH_CHECKPOINT} missing) nor a training "
                f"directory ({TRAIN_MODEL} missing); pass {arch_path} to use the architecture "
                "alone"
            )
        space, arch, extra = load_arch(arch_path)
        return Source(path, kind, space, arch, extra)
    if not path.exists():
        raise FpnasError(f"{path}: no such file or directory")
    space, arch, extra = load_arch(path)
    return Source(path, "arch", space, arch, extra)


def read_metrics(path: Path, kind: str = "epoch") -> list[dict[str, Any]]:
    """The lines of a metrics.jsonl whose "type" is `kind` (all lines when kind is "")."""
    if not path.is_file():
        return []
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            # A run killed mid-write leaves a partial last line; anything else is damage.
            if number == len(path.read_text().splitlines()):
                break
            raise FpnasError(f"{path}:{number}: not a JSON line") from None
        if isinstance(row, dict) and (not kind or row.get("type") == kind):
            rows.append(row)
    return rows


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """A temporary path beside `target`, renamed over it when the block succeeds.

    Refuses (FpnasError) where the target's directory does not exist or is not writable,
    before any work is done; the temporary file is removed when the block fails.
    """
    target = Path(target)
    directory = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        raise FpnasError(f"{target}: is a directory, expected a file name")
    if not directory.is_dir():
        raise FpnasError(f"{target}: directory {directory} does not exist")
    tmp = directory / f".{target.name}.{secrets.token_hex(4)}.tmp"
    try:
        # Created like any new file (mode from the umask), unlike mkstemp's 0600.
        tmp.open("x").close()
    except OSError as exc:
        raise FpnasError(f"{target}: cannot write there ({exc.strerror})") from None
    try:
        yield tmp
        os.replace(tmp, target)
    except OSError as exc:
        raise FpnasError(f"{target}: cannot write ({exc.strerror})") from None
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(target: Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def write_json_atomic(target: Path, doc: Any) -> None:
    write_text_atomic(target, json.dumps(doc, indent=2) + "\n")
