"""A search preempted as a cluster does it: SIGTERM (a checkpoint at the next iteration
boundary, exit 143), then SIGKILL at a random point with `--checkpoint-every 2s` (at
most 2 s plus one iteration lost); resumed, the run ends with the records, alpha and
weights of the run that was never stopped. On one process and on two under torchrun."""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_distributed import LIMIT, descendants, launched, launcher, rank_pid, run
from test_search import cli_args, iters, read_metrics

from fpnas_dsl.search.checkpoint import load_checkpoint

#: 3 epochs of 8 iterations of the tiny space (its data gives 8): a few 2 s checkpoints.
OVERRIDES: dict[str, Any] = {"epochs": 3, "steps_per_epoch": 8, "convert_epoch": 2}
TIME_FIELDS = ("wall", "t_core", "t_fwd_bwd", "time_split")


def timeless(run_dir: Path) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in TIME_FIELDS} for r in read_metrics(run_dir)]


def search(nproc: int | None, run_dir: Path, *extra: str) -> list[str]:
    return launcher(nproc, "-m", "fpnas_dsl", *cli_args(run_dir, **OVERRIDES), *extra)


def resume(nproc: int | None, run_dir: Path) -> None:
    cmd = launcher(nproc, "-m", "fpnas_dsl", "search", "--resume", str(run_dir), "--no-progress")
    log = run_dir.parent / f"{run_dir.name}-resume.log"
    assert run(cmd, run_dir.parent, log) == 0, log.read_text()


def wait_records(run_dir: Path, proc: subprocess.Popen[bytes], count: int) -> None:
    deadline = time.monotonic() + LIMIT
    while not (run_dir / "metrics.jsonl").exists() or len(read_metrics(run_dir)) < count:
        assert proc.poll() is None, "the run ended before it could be stopped"
        assert time.monotonic() < deadline
        time.sleep(0.05)


def workers(proc: subprocess.Popen[bytes], nproc: int | None) -> list[int]:
    return [proc.pid] if nproc is None else [rank_pid(proc.pid, r) for r in range(nproc)]


def sigkilled(
    nproc: int | None, run_dir: Path, rng: random.Random, duration: float
) -> tuple[float, float]:
    """A run killed at a random point of its `duration` (the straight run's, from its
    second record on); the wall of its last iteration recorded and of its checkpoint."""
    log = run_dir.parent / f"{run_dir.name}.log"
    with launched(search(nproc, run_dir, "--checkpoint-every", "2s"), run_dir.parent, log) as proc:
        wait_records(run_dir, proc, 2)
        time.sleep(rng.uniform(0.3, 0.7) * duration)
        assert proc.poll() is None, "the run ended before it could be killed"
        for pid in [proc.pid, *descendants(proc.pid)]:
            os.kill(pid, signal.SIGKILL)
        proc.wait()
    state = load_checkpoint(run_dir)
    return iters(read_metrics(run_dir))[-1]["wall"], state["wall"]


def sigtermed(nproc: int | None, run_dir: Path) -> None:
    """The resumed run, stopped with SIGTERM to every process (as SLURM sends it)."""
    log = run_dir.parent / f"{run_dir.name}-term.log"
    before = len(read_metrics(run_dir))
    cmd = launcher(nproc, "-m", "fpnas_dsl", "search", "--resume", str(run_dir), "--no-progress")
    with launched(cmd, run_dir.parent, log) as proc:
        wait_records(run_dir, proc, before + 2)
        for pid in workers(proc, nproc):
            os.kill(pid, signal.SIGTERM)
        code = proc.wait(timeout=LIMIT)
    text = log.read_text()
    assert text.count("interrupted at epoch") == 1, text  # said once, by rank 0
    assert "SIGTERM" in text and f"resume with: fpnas search --resume {run_dir}" in text
    if nproc is None:
        assert code == 143, text
    else:
        assert code != 0 and "143" in text, text  # torchrun names its workers' exit code
    # The checkpoint is at the boundary after the last iteration recorded, mid-epoch.
    state = load_checkpoint(run_dir)
    assert state["metrics_bytes"] == (run_dir / "metrics.jsonl").stat().st_size
    last = iters(read_metrics(run_dir))[-1]
    steps = OVERRIDES["steps_per_epoch"]
    at = (state["epoch"], state["step"])
    assert at == (last["epoch"], last["step"] + 1) or (
        at == (last["epoch"] + 1, 0) and last["step"] + 1 == steps
    ), (at, last)


@pytest.mark.parametrize("nproc", [None, 2], ids=["one-process", "torchrun-2"])
def test_sigkill_then_sigterm_then_resume_is_the_straight_run(
    nproc: int | None, tmp_path: Path
) -> None:
    straight = tmp_path / "straight"
    assert run(search(nproc, straight), tmp_path, tmp_path / "straight.log") == 0, (
        tmp_path / "straight.log"
    ).read_text()
    its = iters(read_metrics(straight))
    longest = max(b["wall"] - a["wall"] for a, b in itertools.pairwise(its))

    seed = random.randrange(1 << 30)
    stopped = tmp_path / "stopped"
    last, kept = sigkilled(nproc, stopped, random.Random(seed), its[-1]["wall"] - its[1]["wall"])
    # What the kill lost: from the checkpoint to the last iteration recorded.
    assert last - kept <= 2.0 + 2 * longest + 1.0, (seed, last, kept, longest)

    sigtermed(nproc, stopped)
    resume(nproc, stopped)

    assert timeless(stopped) == timeless(straight)
    a, b = load_checkpoint(straight), load_checkpoint(stopped)
    assert np.array_equal(a["distribution"]["logits"], b["distribution"]["logits"])
    assert all(torch.equal(a["supernet"][k], b["supernet"][k]) for k in a["supernet"])
    arch = json.loads((stopped / "arch.json").read_text())
    assert arch["blocks"] == json.loads((straight / "arch.json").read_text())["blocks"]
