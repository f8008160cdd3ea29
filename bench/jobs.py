"""`fpnas train` runs for the benchmarks: a few at a time, one torch thread each, resumable.

A job is one architecture (an arch.json, or a fixed space's name) trained into its own
directory with one recipe (the flags after the architecture). A job whose directory
already holds `result.json` is done and is not run again; an interrupted one is continued
with `fpnas train --resume`. Each job's output goes to `DIR.log` beside its directory.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TrainJob:
    name: str
    arch: str
    out: Path
    recipe: tuple[str, ...]

    @property
    def done(self) -> bool:
        return (self.out / "result.json").is_file()

    def command(self) -> list[str]:
        base = [sys.executable, "-m", "fpnas_dsl", "train"]
        if (self.out / "config.json").is_file():  # started before: continue it
            return [*base, "--resume", str(self.out), "--threads", "1", "--no-progress"]
        return [*base, self.arch, "--out", str(self.out), *self.recipe]

    def result(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads((self.out / "result.json").read_text())
        return doc


def run_jobs(jobs: list[TrainJob], parallel: int = 2) -> None:
    """Run the unfinished jobs, `parallel` at a time; stop at the first failure."""
    pending = [j for j in jobs if not j.done]
    if not pending:
        return
    print(f"training {len(pending)} of {len(jobs)} networks, {parallel} at a time", flush=True)
    running: list[tuple[TrainJob, subprocess.Popen[bytes], float]] = []
    start = time.perf_counter()
    while pending or running:
        while pending and len(running) < parallel:
            job = pending.pop(0)
            job.out.parent.mkdir(parents=True, exist_ok=True)
            with (job.out.parent / f"{job.out.name}.log").open("ab") as log:
                proc = subprocess.Popen(job.command(), stdout=log, stderr=subprocess.STDOUT)
            running.append((job, proc, time.perf_counter()))
        time.sleep(1.0)
        for entry in list(running):
            job, proc, began = entry
            code = proc.poll()
            if code is None:
                continue
            running.remove(entry)
            if code != 0:
                for _, other, _ in running:
                    other.terminate()
                raise SystemExit(f"training {job.name} failed (exit {code}): see {job.out}.log")
            took, total = time.perf_counter() - began, time.perf_counter() - start
            print(
                f"  {job.name}: {job.result()['test_acc']:.2%} in {took:.0f} s "
                f"({total:.0f} s so far)",
                flush=True,
            )
