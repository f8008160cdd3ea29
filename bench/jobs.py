"""What makes the long benchmarks resumable: `fpnas train` jobs, scores kept on disk, and
the settings an output directory was made with.

- A `TrainJob` is one architecture (an arch.json, or a fixed space's name) trained into
  its own directory with one recipe (the flags after the architecture). A job whose
  directory holds `result.json` is done and is not run again; one that was stopped is
  continued with `fpnas train --resume` from its last finished epoch. Each job's output
  goes to `DIR.log` beside its directory, and `DIR.job.json` records which architecture
  (its space and choices, whatever file holds it) and which recipe: a directory trained
  otherwise is refused, never reused. With a pool directory (`job_dir`), a training is
  named by its architecture and recipe, so benchmarks that train the same architecture
  with the same recipe share it.
- `Scores` keeps supernet scores in one JSON file, written after every new score.
- `check_settings` records what defines a directory's results in `DIR/bench.json` and
  refuses a rerun that would mix in other settings.

`run_jobs` stops on SIGINT or SIGTERM: it passes Ctrl-C to the trainings (each keeps its
last finished epoch), waits for them, and exits with 128 + the signal's number; the same
command continues.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from fpnas_dsl.archfile import is_space_argument, load_arch
from fpnas_dsl.ir import encode
from fpnas_dsl.runfiles import TRAIN_RESULT, TRAIN_STATE, write_json_atomic
from fpnas_dsl.search.checkpoint import space_digest
from fpnas_dsl.stopping import StopRequest

SETTINGS_FILE = "bench.json"


def refuse(message: str) -> NoReturn:
    """One line on stderr, exit code 2 (bad input or a directory of other settings)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def arch_digest(indices: np.ndarray) -> str:
    """Which architecture a choice-index array is (the same indices, the same digest)."""
    return digest(np.ascontiguousarray(indices, dtype=np.int64).tobytes())


def arch_identity(arch: str) -> str:
    """Which architecture an arch.json holds (its space's digest and its choices, whatever
    else the file says); a fixed space's name as it is."""
    if is_space_argument(arch) or not Path(arch).is_file():
        return arch
    space, architecture, _ = load_arch(Path(arch))
    return f"{space_digest(space)}:{arch_digest(encode(space, architecture))}"


def job_dir(pool: Path | None, out: Path, name: str, arch: str, recipe: Sequence[str]) -> Path:
    """Where a training lives: OUT/NAME, or, with a pool, POOL/ARCH-RECIPE (digests), which
    every benchmark training this architecture with this recipe finds again."""
    if pool is None:
        return out / name
    what = digest(arch_identity(arch).encode())
    return pool / f"{what}-{digest(json.dumps(list(recipe)).encode())}"


def check_settings(out: Path, settings: dict[str, Any]) -> None:
    """Start `out` with `settings`, or continue it if it was started with the same ones."""
    path = out / SETTINGS_FILE
    settings = json.loads(json.dumps(settings))  # tuples -> lists, as read back
    if path.is_file():
        saved = json.loads(path.read_text())
        changed = [
            f"{key} {saved.get(key)!r} (now {settings.get(key)!r})"
            for key in sorted(set(saved) | set(settings))
            if saved.get(key) != settings.get(key)
        ]
        if changed:
            refuse(
                f"{out} was started with other settings: {'; '.join(changed)}. Rerun the "
                "same command to continue it, or give another --out to start anew"
            )
        return
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, settings)


class Scores:
    """Scores by key in one JSON file: each is computed once, then read back."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.values: dict[str, float] = json.loads(path.read_text()) if path.is_file() else {}

    def get(self, key: str, compute: Callable[[], float]) -> tuple[float, bool]:
        """(the score, whether it was kept from before)."""
        if key in self.values:
            return self.values[key], True
        value = float(compute())
        self.values[key] = value
        write_json_atomic(self.path, self.values)
        return value, False


@dataclass(frozen=True)
class TrainJob:
    name: str
    arch: str
    out: Path
    recipe: tuple[str, ...]

    @property
    def done(self) -> bool:
        return (self.out / TRAIN_RESULT).is_file()

    @property
    def stamp_path(self) -> Path:
        return self.out.parent / f"{self.out.name}.job.json"

    def stamp(self) -> dict[str, Any]:
        return {"arch": arch_identity(self.arch), "recipe": list(self.recipe)}

    def check_stamp(self) -> None:
        """Refuse a directory that holds another architecture's or recipe's training."""
        mine = self.stamp()
        if self.stamp_path.is_file():
            theirs = json.loads(self.stamp_path.read_text())
            if theirs != mine:
                refuse(
                    f"{self.out} holds a training of another architecture or recipe "
                    f"({theirs} against {mine}); give another --out, or remove {self.out} "
                    "to train it again"
                )
            return
        self.out.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.stamp_path, mine)

    def command(self) -> list[str]:
        base = [sys.executable, "-m", "fpnas_dsl", "train"]
        if (self.out / TRAIN_STATE).is_file():  # stopped after an epoch: continue it
            return [*base, "--resume", str(self.out), "--threads", "1", "--no-progress"]
        return [*base, self.arch, "--out", str(self.out), *self.recipe]

    def result(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads((self.out / TRAIN_RESULT).read_text())
        return doc


def run_jobs(jobs: list[TrainJob], parallel: int = 2) -> int:
    """Run the unfinished jobs, `parallel` at a time; stop at the first failure. Returns
    how many were run (0 when all were done before)."""
    for job in jobs:
        job.check_stamp()
    pending = [j for j in jobs if not j.done]
    if not pending:
        return 0
    print(f"training {len(pending)} of {len(jobs)} networks, {parallel} at a time", flush=True)
    count = len(pending)
    running: list[tuple[TrainJob, subprocess.Popen[bytes], float]] = []
    start = time.perf_counter()
    with StopRequest() as stop:
        while pending or running:
            while pending and len(running) < parallel and not stop.requested:
                job = pending.pop(0)
                job.out.parent.mkdir(parents=True, exist_ok=True)
                with (job.out.parent / f"{job.out.name}.log").open("ab") as log:
                    proc = subprocess.Popen(job.command(), stdout=log, stderr=subprocess.STDOUT)
                running.append((job, proc, time.perf_counter()))
            if stop.requested:
                _stop_all(running)
                print(
                    f"stopped by {stop.signal_name}; every finished epoch is kept: run the "
                    "same command to continue",
                    file=sys.stderr,
                )
                raise SystemExit(stop.exit_code)
            time.sleep(0.5)
            for entry in list(running):
                job, proc, began = entry
                code = proc.poll()
                if code is None:
                    continue
                running.remove(entry)
                if code != 0:
                    _stop_all(running)
                    raise SystemExit(f"training {job.name} failed (exit {code}): see {job.out}.log")
                took, total = time.perf_counter() - began, time.perf_counter() - start
                print(
                    f"  {job.name}: {job.result()['test_acc']:.2%} in {took:.0f} s "
                    f"({total:.0f} s so far)",
                    flush=True,
                )
    return count


def _stop_all(running: list[tuple[TrainJob, subprocess.Popen[bytes], float]]) -> None:
    """Ctrl-C to each training (it keeps its last finished epoch), then wait for it."""
    for _, proc, _ in running:
        proc.send_signal(signal.SIGINT)
    for _, proc, _ in running:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
