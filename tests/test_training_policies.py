"""The parts of supernet training that ranks (`fpnas_dsl.search.training`): fair warm-up
draws, the sandwich rule, in-place distillation."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_search import TINY, final_state, iters, read_metrics, run_search, settings, wait_for

from fpnas_dsl import cost
from fpnas_dsl.parser import load_space
from fpnas_dsl.search.training import extreme_architecture, fair_samples

PARTS: dict[str, Any] = {"warmup_sampling": "fair", "sandwich": True, "distill": "largest"}


@pytest.mark.parametrize("k", [12, 14, 5])
def test_fair_samples_use_every_choice_equally_often(k: int) -> None:
    space = load_space("fbnetv2_f_pp")
    archs = fair_samples(space, k, np.random.default_rng(3))
    assert archs.shape == (k, len(space.layout.decisions), space.layout.max_variables)
    for d, decision in enumerate(space.layout.decisions):
        for v, choices in enumerate(decision.cardinalities):
            counts = np.bincount(archs[:, d, v], minlength=choices)
            assert len(counts) == choices  # nothing outside the choices
            assert counts.max() - counts.min() <= 1
            if k % choices == 0:
                assert set(counts) == {k // choices}
    # The pairing of choices across variables is random: two iterations differ.
    assert not np.array_equal(archs, fair_samples(space, k, np.random.default_rng(4)))


@pytest.mark.parametrize("name", ["fpnas_28px", "fbnetv2_f", "fbnetv2_f_pp", "fpnas_l0"])
def test_the_largest_architecture_is_the_most_expensive(name: str) -> None:
    # Under `skip where shapes differ: shortcut` a block whose widths differ pays for its
    # projection, so the widest choices everywhere need not be the very most FLOPS.
    space = load_space(name).model_copy(update={"skip_mismatch": "project"})
    largest = extreme_architecture(space, largest=True)
    assert cost.flops(space, largest[None])[0] == cost.cost_model(space).extreme("flops", "max")
    smallest = extreme_architecture(space, largest=False)
    assert cost.flops(space, smallest[None])[0] < cost.flops(space, largest[None])[0]


def test_the_smallest_architecture_of_fpnas_28px_is_the_cheapest() -> None:
    space = load_space("fpnas_28px")
    smallest = extreme_architecture(space, largest=False)
    assert cost.flops(space, smallest[None])[0] == cost.cost_model(space).extreme("flops", "min")


def test_parts_change_the_warmup_and_resume_bit_for_bit(tmp_path: Path) -> None:
    _, base = run_search(tmp_path / "base")
    _, whole = run_search(tmp_path / "whole", **PARTS)
    warmup = [r for r in iters(whole) if r["epoch"] == 1]
    # The parts change the warm-up (fair draws, two more passes, soft targets) ...
    assert [r["train_loss"] for r in warmup] != [r["train_loss"] for r in iters(base)[:6]]
    assert all(r["trained"] == r["k"] for r in warmup)
    # ... and a run killed after its first checkpoint resumes to the same end.
    args = ["search", TINY, "--no-progress", "--warmup-sampling", "fair", "--sandwich"]
    args += ["--distill", "largest"]
    for key, value in settings(tmp_path / "killed").items():
        if key != "space":
            args += [f"--{key.replace('_', '-')}", str(value)]
    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "fpnas_dsl", *args], cwd=tmp_path)
    wait_for(run / "checkpoint.pt", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed = subprocess.run(
        [sys.executable, "-m", "fpnas_dsl", "search", "--resume", str(run), "--no-progress"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    logits, blocks = final_state(run)
    whole_logits, whole_blocks = final_state(tmp_path / "whole")
    assert np.array_equal(logits, whole_logits) and blocks == whole_blocks
    keep = ("train_loss", "k", "trained", "flops_mean", "val_acc")
    assert [{k: r.get(k) for k in keep} for r in read_metrics(run)] == [
        {k: r.get(k) for k in keep} for r in whole
    ]
