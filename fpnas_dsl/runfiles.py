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

from fpnas_dsl.archfile import is_space_argument, load_arch, load_fixed
from fpnas_dsl.errors import FpnasError, RunError
from fpnas_dsl.ir import Architecture, Space

SourceKind = Literal["arch", "space", "search", "train"]

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
        return self.path if self.kind in ("search", "train") else None


def open_source(path: Path | str, space: str | None = None) -> Source:
    """An arch.json, a search run directory, a training directory or a fixed space (a
    .space file or bundled name with one network) -> `Source`.

    `space` (a .space path or bundled name) reads a minimal architecture file, one
    without its compiled space, against that space (see `fpnas_dsl.archfile`)."""
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
            raise FpnasError(
                f"{path}: neither a search run ({SEARCH_CHECKPOINT} missing) nor a training "
                f"directory ({TRAIN_MODEL} missing); pass {arch_path} to use the architecture "
                "alone"
            )
        compiled, arch, extra = load_arch(arch_path, space)
        return Source(path, kind, compiled, arch, extra)
    if not path.exists():
        raise FpnasError(f"{path}: no such file or directory")
    compiled, arch, extra = load_arch(path, space)
    return Source(path, "arch", compiled, arch, extra)


def read_metrics(path: Path, kind: str = "epoch") -> list[dict[str, Any]]:
    """The lines of a metrics.jsonl whose "type" is `kind` (all lines when kind is "")."""
    if not path.is_file():
        return []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise FpnasError(f"{path}: not a metrics file (not UTF-8 text)") from None
    except OSError as exc:
        raise FpnasError(f"{path}: cannot read ({exc.strerror})") from None
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            # A run killed mid-write leaves a partial last line; anything else is damage.
            if number == len(lines):
                break
            raise FpnasError(f"{path}:{number}: not a JSON line") from None
        if isinstance(row, dict) and (not kind or row.get("type") == kind):
            rows.append(row)
    return rows


def make_parents(target: Path) -> list[Path]:
    """Create the missing directories above `target`; return them, deepest first (to
    remove them again when the work fails). FpnasError where that cannot be done."""
    directory = target.parent if str(target.parent) else Path(".")
    missing: list[Path] = []
    probe = directory
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise FpnasError(f"{target}: {probe} is a file, not a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FpnasError(
            f"{target}: cannot create directory {directory} ({exc.strerror})"
        ) from None
    return missing


def remove_dirs(dirs: list[Path]) -> None:
    """Remove directories that `make_parents` created, where they are still empty."""
    for directory in dirs:
        try:
            directory.rmdir()
        except OSError:
            break


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """A temporary path beside `target`, renamed over it when the block succeeds.

    Missing parent directories are created (as `fpnas search --out` creates its run
    directory), and removed again when the block fails; the temporary file is removed
    then too, so a failed command leaves nothing behind. Refuses (FpnasError) a target
    that is a directory, or a place that cannot be written, before any work is done.
    """
    target = Path(target)
    if target.is_dir():
        raise FpnasError(f"{target}: is a directory, expected a file name")
    created = make_parents(target)
    directory = target.parent if str(target.parent) else Path(".")
    tmp = directory / f".{target.name}.{secrets.token_hex(4)}.tmp"
    try:
        # Created like any new file (mode from the umask), unlike mkstemp's 0600.
        tmp.open("x").close()
    except OSError as exc:
        remove_dirs(created)
        raise FpnasError(f"{target}: cannot write there ({exc.strerror})") from None
    done = False
    try:
        yield tmp
        os.replace(tmp, target)
        done = True
    except OSError as exc:
        raise RunError(f"{target}: cannot write ({exc.strerror})") from None
    finally:
        if tmp.exists():
            tmp.unlink()
        if not done:
            remove_dirs(created)


class Staged:
    """Files written under temporary names beside their targets and renamed into place
    together when the work succeeds (`staged_files`): a command that fails half-way
    leaves none of them, nor the directories it created for them."""

    def __init__(self) -> None:
        self.files: list[tuple[Path, Path]] = []
        self.dirs: list[Path] = []

    def path(self, target: Path) -> Path:
        """A temporary path to write `target` at."""
        target = Path(target)
        if target.is_dir():
            raise FpnasError(f"{target}: is a directory, expected a file name")
        self.dirs = make_parents(target) + self.dirs
        directory = target.parent if str(target.parent) else Path(".")
        tmp = directory / f".{target.name}.{secrets.token_hex(4)}.tmp"
        try:
            tmp.open("x").close()
        except OSError as exc:
            raise FpnasError(f"{target}: cannot write there ({exc.strerror})") from None
        self.files.append((tmp, target))
        return tmp

    def commit(self) -> None:
        for tmp, target in self.files:
            os.replace(tmp, target)
        self.files, self.dirs = [], []

    def discard(self) -> None:
        for tmp, _ in self.files:
            tmp.unlink(missing_ok=True)
        remove_dirs(self.dirs)
        self.files, self.dirs = [], []


@contextmanager
def staged_files() -> Iterator[Staged]:
    """A `Staged` whose files are renamed into place when the block succeeds."""
    stage = Staged()
    try:
        yield stage
        stage.commit()
    except OSError as exc:
        raise RunError(f"cannot write {exc.filename or 'a file'} ({exc.strerror})") from None
    finally:
        stage.discard()


def write_text_atomic(target: Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def write_json_atomic(target: Path, doc: Any) -> None:
    write_text_atomic(target, json.dumps(doc, indent=2) + "\n")
