"""Run files: what search and training directories hold, and how every file is written.

A search run directory (`fpnas search --out DIR`) holds config.json, space.json,
metrics.jsonl, checkpoint.pt and, at the end, arch.json; a training directory
(`fpnas train --out DIR`) holds config.json, arch.json, metrics.jsonl, train_state.pt,
model.pt, model_ema.pt and, at the end, result.json. Their names are defined here only.

One durability policy covers every file fpnas writes (`atomic_path`): the file is written
under a temporary name in its target's directory, flushed and fsynced, renamed over the
target (`os.replace`), and the directory is fsynced, so that a crash, a SIGKILL or a
power cut leaves the old file or the new one, never a torn one, and a rename that stays.
On top of it: `write_text_atomic`, `write_json_atomic`, `save_torch_atomic`, and
`staged_files` for several files that appear together.

A run directory is made with `NewRunDir`, which removes what a run added when it fails
before its first checkpoint; `truncate_metrics` cuts a metrics file back to what the
checkpoint being resumed had seen; `ResumePolicy` says which settings `--resume` may
change. Reading an architecture from these directories is `fpnas_dsl.sources`.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fpnas_dsl.errors import FpnasError, RunError

ARCH_FILE = "arch.json"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
SEARCH_SPACE = "space.json"
SEARCH_CHECKPOINT = "checkpoint.pt"
TRAIN_STATE = "train_state.pt"
TRAIN_MODEL = "model.pt"
TRAIN_MODEL_EMA = "model_ema.pt"
TRAIN_RESULT = "result.json"


# --------------------------------------------------------------------------------------
# Metrics files


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


def append_metrics(path: Path, row: dict[str, Any]) -> None:
    """Append one line to a metrics file, synced: a checkpoint written after it names
    the file's length (`truncate_metrics`), so the line must be on the disk first."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def truncate_metrics(path: Path, size: int) -> None:
    """Cut a metrics file back to its first `size` bytes, its length when the checkpoint
    being resumed was written: a run killed after it may have logged lines past it."""
    if path.is_file() and path.stat().st_size > size:
        with open(path, "r+b") as fh:
            fh.truncate(size)
            fh.flush()
            os.fsync(fh.fileno())


def metrics_size_through(path: Path, epoch: int) -> int:
    """The bytes of a metrics file up to the end of its last line of epoch `epoch` or
    before, for a checkpoint that recorded the epoch but not the file's length."""
    if not path.is_file():
        return 0
    size = 0
    with open(path, "rb") as fh:
        for line in fh:
            try:
                row = json.loads(line)
                line_epoch = int(row.get("epoch", 0)) if line.endswith(b"\n") else None
            except (ValueError, AttributeError, TypeError):  # JSON and UTF-8 errors too
                line_epoch = None  # a partial or damaged line ends what is kept
            if line_epoch is None or line_epoch > epoch:
                break
            size += len(line)
    return size


# --------------------------------------------------------------------------------------
# Durable writes


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


def sync_file(path: Path) -> None:
    """Flush a written file's data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_directory(directory: Path) -> None:
    """Make the renames and creations in a directory durable. Some file systems refuse a
    directory's fsync; the rename has been made then, only its durability is theirs."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temporary(target: Path) -> Path:
    directory = target.parent if str(target.parent) else Path(".")
    return directory / f".{target.name}.{secrets.token_hex(4)}.tmp"


def _publish(tmp: Path, target: Path) -> None:
    sync_file(tmp)
    os.replace(tmp, target)


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """A temporary path beside `target`, synced and renamed over it when the block
    succeeds, the directory synced after (the module's one durability policy).

    Missing parent directories are created (as `fpnas search --out` creates its run
    directory), and removed again when the block fails; the temporary file is removed
    then too, so a failed command leaves nothing behind. Refuses (FpnasError) a target
    that is a directory, or a place that cannot be written, before any work is done.
    """
    target = Path(target)
    if target.is_dir():
        raise FpnasError(f"{target}: is a directory, expected a file name")
    created = make_parents(target)
    tmp = _temporary(target)
    try:
        # Created like any new file (mode from the umask), unlike mkstemp's 0600.
        tmp.open("x").close()
    except OSError as exc:
        remove_dirs(created)
        raise FpnasError(f"{target}: cannot write there ({exc.strerror})") from None
    done = False
    try:
        yield tmp
        _publish(tmp, target)
        sync_directory(tmp.parent)
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
        tmp = _temporary(target)
        try:
            tmp.open("x").close()
        except OSError as exc:
            raise FpnasError(f"{target}: cannot write there ({exc.strerror})") from None
        self.files.append((tmp, target))
        return tmp

    def commit(self) -> None:
        for tmp, target in self.files:
            _publish(tmp, target)
        for directory in {tmp.parent for tmp, _ in self.files}:
            sync_directory(directory)
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


def save_torch_atomic(obj: Any, target: Path) -> None:
    """`torch.save` under the module's durability policy (checkpoints and weights)."""
    import torch

    with atomic_path(target) as tmp:
        torch.save(obj, tmp)


# --------------------------------------------------------------------------------------
# Run directories and resuming


class NewRunDir:
    """The directory of a new run: `make` creates it (and its missing parents);
    `discard` removes what the run added to it and the directories `make` created,
    for a run that fails before its first checkpoint and so leaves nothing to resume."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.before = set(self.path.iterdir()) if self.path.is_dir() else set()
        self.created: list[Path] = []

    def make(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise FpnasError(f"--out {self.path}: is a file, expected a directory")
        missing = []
        probe = self.path
        while not probe.exists() and probe != probe.parent:
            missing.append(probe)
            probe = probe.parent
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FpnasError(f"cannot create run directory {self.path}: {exc.strerror}") from None
        self.created = missing  # deepest first

    def discard(self) -> None:
        if self.path.is_dir():
            for entry in set(self.path.iterdir()) - self.before:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
        remove_dirs(self.created)

    @contextmanager
    def discarded_unless(self, kept: Callable[[], bool]) -> Iterator[NewRunDir]:
        """Discard the run directory when the block fails and `kept()` is false (no
        checkpoint was written)."""
        try:
            yield self
        except BaseException:
            if not kept():
                self.discard()
            raise


@dataclass(frozen=True)
class ResumePolicy:
    """What `--resume DIR` may change: the settings named in `may_change` (epochs: a
    new total); any other setting given with a value other than the run's is refused
    by name, with `elsewhere` saying how to run with it instead."""

    may_change: tuple[str, ...]
    elsewhere: str

    def check(self, run_dir: Path, given: Iterable[tuple[str, str, Any, Any]]) -> None:
        """Refuse the (setting, flag, value given, the run's value) that may not change
        and differ."""
        refused = [
            f"{flag} {new!r} (the run's: {old!r})"
            for key, flag, new, old in given
            if key not in self.may_change and new != old
        ]
        if refused:
            raise FpnasError(
                f"--resume {run_dir} continues with the run's settings "
                f"({Path(run_dir) / CONFIG_FILE}); these cannot change: {', '.join(refused)}. "
                f"Only {self.describe()} can; {self.elsewhere}"
            )

    def describe(self) -> str:
        flags = [
            "--epochs (a new total)" if key == "epochs" else "--" + key.replace("_", "-")
            for key in self.may_change
        ]
        return ", ".join(flags[:-1]) + f" and {flags[-1]}" if len(flags) > 1 else flags[0]
