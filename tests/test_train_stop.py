"""`fpnas train` on a cluster: SIGTERM stops at the next step with a checkpoint and exit
143; `--checkpoint-every` bounds what a SIGKILL loses; a resumed run, from within an
epoch or from a state written before the state's format changed, ends with the records
and weights of an uninterrupted one. (`fpnas train` runs on one process: it has no
torchrun mode.)"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from fpnas_dsl.cli import main
from fpnas_dsl.runfiles import METRICS_FILE, TRAIN_MODEL, TRAIN_MODEL_EMA, TRAIN_STATE

HERE = Path(__file__).parent
REFERENCE = HERE / "data" / "train_v1"
SPACE = REFERENCE / "train_ref.space"  # a fixed network of 0.01 MFLOPS: ~3 ms a step
#: 1024 steps of 16 per epoch: longer than `--checkpoint-every 2s` (3 s or more), so
#: that checkpoints are written within epochs and a signal lands inside one.
DATA = "synthetic:size=16384,test_size=64,resolution=8"
STEPS = 1024
SHORT = "synthetic:size=240,test_size=32,resolution=8"
TIME_FIELDS = {"epoch_s", "images_per_s", "wall"}


def train_args(out: Path, *extra: str) -> list[str]:
    return [
        "train", str(SPACE), "--out", str(out), "--data", DATA, "--batch-size", "16",
        "--warmup-epochs", "0.5", "--seed", "3", "--threads", "1", "--no-progress", *extra,
    ]  # fmt: skip


def epoch_rows(run: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (run / METRICS_FILE).read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIME_FIELDS} for row in rows]


def assert_same_run(a: Path, b: Path) -> None:
    """The same records (time fields aside) and bitwise the same weights."""
    assert epoch_rows(a) == epoch_rows(b)
    for name in (TRAIN_MODEL, TRAIN_MODEL_EMA):
        wa, wb = torch.load(a / name), torch.load(b / name)
        assert list(wa) == list(wb)
        assert all(torch.equal(wa[k], wb[k]) for k in wa), name


def start(out: Path, *extra: str) -> subprocess.Popen[str]:
    """`fpnas train` in a process of its own; returns once its training loop starts."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fpnas_dsl", *train_args(out, *extra)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("training "):
            return proc
    proc.wait()
    raise AssertionError(f"the run ended before training: {proc.stderr.read()}")  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run of 2 epochs."""
    out = tmp_path_factory.mktemp("straight") / "run"
    assert main(train_args(out, "--epochs", "2", "--checkpoint-every", "off")) == 0
    return out


def test_sigterm_checkpoints_at_the_next_step_and_resumes_exactly(
    tmp_path: Path, straight: Path
) -> None:
    out = tmp_path / "run"
    proc = start(out, "--epochs", "2", "--checkpoint-every", "off")
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    state = torch.load(out / TRAIN_STATE, weights_only=True)
    step = state["progress"]["step"]
    assert state["epoch"] == 0 and 0 < step < STEPS  # inside the first epoch
    line = err.strip().splitlines()[-1]
    assert f"stopped by SIGTERM at epoch 1, step {step} of {STEPS}" in line, err
    assert f"fpnas train --resume {out}" in line and "Traceback" not in err
    assert not (out / METRICS_FILE).exists() or epoch_rows(out) == []
    assert main(["train", "--resume", str(out), "--no-progress"]) == 0
    assert_same_run(straight, out)


def test_sigkill_loses_at_most_the_interval_and_a_step(tmp_path: Path, straight: Path) -> None:
    every = 2.0
    out = tmp_path / "run"
    proc = start(out, "--epochs", "2", "--checkpoint-every", f"{every:g}s")
    while not (out / TRAIN_STATE).exists():  # the first checkpoint, 2 s in
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.02)
    # A random point in what is left of the run, judged from the first checkpoint's pace.
    first = torch.load(out / TRAIN_STATE, weights_only=True)
    partial = first.get("progress", {"step": 0, "train_s": 0.0})
    done = first["epoch"] * STEPS + partial["step"]
    step_s = (first["wall"] + partial["train_s"]) / done
    delay = random.uniform(0, min(every + step_s, 0.7 * (2 * STEPS - done) * step_s))
    time.sleep(delay)
    killed_at = time.time()
    assert proc.poll() is None, "the run ended before the kill"
    proc.kill()
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    state = torch.load(out / TRAIN_STATE, weights_only=True)
    lost = killed_at - state["saved_at"]
    assert main(["train", "--resume", str(out), "--no-progress"]) == 0
    assert_same_run(straight, out)
    # One step's time, from the records of the (now complete) resumed run.
    rows = [json.loads(line) for line in (out / METRICS_FILE).read_text().splitlines()]
    step_s = max(step_s, max(row["epoch_s"] for row in rows) / STEPS)
    # Generous for writing the checkpoint and for a busy machine, not for a lost epoch.
    assert 0 <= lost <= every + step_s + 1.0, (delay, lost, step_s)


def test_a_state_from_before_the_format_change_resumes(tmp_path: Path) -> None:
    """tests/data/train_v1: a run of 2 epochs stopped after the first, written by the
    code before mid-epoch checkpoints (state format /1), with the records and weights
    its uninterrupted run ended with (make_reference.py)."""
    out = tmp_path / "old"
    shutil.copytree(REFERENCE, out)
    assert torch.load(out / TRAIN_STATE, weights_only=True)["format"] == "fpnas-train-state/1"
    assert main(["train", "--resume", str(out), "--no-progress"]) == 0
    expected = [json.loads(line) for line in (REFERENCE / "expected_metrics.jsonl").open()]
    got = [json.loads(line) for line in (out / METRICS_FILE).open()]
    assert [r["epoch"] for r in got] == [1, 2]
    for row, want in zip(got, expected, strict=True):
        for key in set(want) - TIME_FIELDS:
            assert row[key] == pytest.approx(want[key], rel=1e-6, abs=1e-9), key
    for name, reference in (
        (TRAIN_MODEL, "expected_model.pt"),
        (TRAIN_MODEL_EMA, "expected_model_ema.pt"),
    ):
        wa, wb = torch.load(out / name), torch.load(REFERENCE / reference)
        assert all(torch.allclose(wa[k].float(), wb[k].float(), atol=1e-6) for k in wa), name
    # And today's code trains that run from scratch to the same place, bitwise.
    fresh = tmp_path / "fresh"
    cfg = json.loads((REFERENCE / "config.json").read_text())
    assert (
        main(
            [
                "train",
                str(SPACE),
                "--out",
                str(fresh),
                "--data",
                cfg["data"],
                "--epochs",
                "2",
                "--batch-size",
                "16",
                "--warmup-epochs",
                "0.5",
                "--ema-decay",
                "0.9",
                "--seed",
                "3",
                "--threads",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    assert_same_run(fresh, out)


def test_a_run_inside_its_warm_up_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = train_args(tmp_path / "short", "--epochs", "1")
    args[args.index("--warmup-epochs") + 1] = "1"  # the default: the whole run
    args[args.index(DATA)] = SHORT
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "note: the run (1 epoch, 15 steps) is not longer than its learning-rate warm-up" in out
    assert "The EMA decay became 0.167" in out  # 1 - 1 / (0.08 x 15)
    # A run past its warm-up has no note.
    args = train_args(tmp_path / "long", "--epochs", "2")
    args[args.index(DATA)] = SHORT
    assert main(args) == 0
    assert "note:" not in capsys.readouterr().out


def test_checkpoint_every_must_be_a_duration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:  # argparse's usage error
        main(train_args(tmp_path / "x", "--checkpoint-every", "soon"))
    assert exited.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--checkpoint-every: 'soon' is not a duration" in line and "5m" in line
    assert not (tmp_path / "x").exists()
