"""`fpnas train`: a short run on synthetic data finishes, writes its files, learns, resumes
exactly, and trains a fixed space (the hand-designed baseline) by name."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from cli_helpers import one_line_error as _err

from fpnas_dsl.archfile import load_arch, save_arch
from fpnas_dsl.cli import main
from fpnas_dsl.ir import decode, uniform_samples
from fpnas_dsl.parser import load_space
from fpnas_dsl.train import TrainConfig, learning_rate, train

# A small searchable space (split-attention and skip offered) and its fixed sibling.
TINY = """
space train_tiny
input 16 x 16 x 1
classes 4
expansion relative to input
skip where shapes differ: project
micro m {
    kernel    {0, 3, 5}
    act       {relu, swish}
    attention {0, 1, 2, 4}
    divisor 8
}
stem conv 3x3 8 stride 1 act hswish
table {
    mbconv  m  1          8            1  1
    mbconv  m  (2, 4, 2)  (16, 24, 8)  2  2
    mbconv  m  (2, 4, 2)  (24, 32, 8)  2  2
}
head conv 1x1 64 act hswish
pool avg
fc classes
"""
FIXED = (
    TINY.replace("space train_tiny", "space train_fixed")
    .replace("{0, 3, 5}", "3")
    .replace("{relu, swish}", "relu6")
    .replace("{0, 1, 2, 4}", "0")
    .replace("(2, 4, 2)", "4")
    .replace("(16, 24, 8)", "16")
    .replace("(24, 32, 8)", "32")
)

# Synthetic data that the tiny network learns in one epoch. One epoch must hold enough
# steps (64 here) for batch-norm's running statistics to forget their initial values
# (0.9^64 ~ 0.001), or evaluation sees chance. Augmentation is off: the synthetic classes
# are fixed random patterns, which crops and flips would destroy.
DATA = "synthetic:size=1024,test_size=256,resolution=16"
SMALL = "synthetic:size=256,test_size=64,resolution=16"
COMMON = [
    "--batch-size",
    "16",
    "--lr",
    "0.002",
    "--warmup-epochs",
    "0",
    "--crop-padding",
    "0",
    "--no-flip",
    "--threads",
    "1",
    "--no-progress",
]


@pytest.fixture(scope="module")
def spaces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("spaces")
    (tmp / "train_tiny.space").write_text(TINY)
    (tmp / "train_fixed.space").write_text(FIXED)
    return tmp


@pytest.fixture(scope="module")
def arch_file(spaces: Path) -> Path:
    space = load_space(spaces / "train_tiny.space")
    path = spaces / "arch.json"
    arch = decode(space, uniform_samples(space, 1, 4)[0])
    save_arch(path, space, arch)
    return path


def epochs(run: Path) -> list[dict[str, Any]]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_one_epoch_writes_everything_and_learns(
    tmp_path: Path, arch_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert (
        main(["train", str(arch_file), "--out", str(out), "--epochs", "1", "--data", DATA, *COMMON])
        == 0
    )
    printed = capsys.readouterr().out
    assert "final test accuracy" in printed and "EMA" in printed
    for name in (
        "config.json",
        "arch.json",
        "metrics.jsonl",
        "train_state.pt",
        "model.pt",
        "model_ema.pt",
        "result.json",
    ):
        assert (out / name).is_file(), name
    result = json.loads((out / "result.json").read_text())
    assert result["epochs"] == 1
    assert result["test_acc"] > 0.5  # 4 classes: chance is 0.25
    assert 0 <= result["test_acc_ema"] <= 1
    assert result["best_weights"] in ("model.pt", "model_ema.pt")
    (row,) = epochs(out)
    assert row["type"] == "epoch" and row["epoch"] == 1
    assert row["test_acc"] == result["test_acc"] and "test_acc_ema" in row
    assert math.isfinite(row["train_loss"]) and row["images"] == 1024
    # The training directory exports with its trained weights.
    assert main(["export", str(out), "-f", "onnx", "-o", str(tmp_path / "t.onnx")]) == 0
    assert "trained" in capsys.readouterr().out


class Interrupted(Exception):
    pass


def _stop_after_first_epoch(line: str) -> None:
    if line.startswith("epoch 1/"):
        raise Interrupted  # as a Ctrl-C right after the epoch's checkpoint


def test_resume_continues_exactly(tmp_path: Path, arch_file: Path) -> None:
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert (
        main(
            [
                "train",
                str(arch_file),
                "--out",
                str(straight),
                "--epochs",
                "2",
                "--data",
                SMALL,
                *COMMON,
            ]
        )
        == 0
    )
    cfg = TrainConfig(
        data=SMALL,
        epochs=2,
        batch_size=16,
        lr=0.002,
        warmup_epochs=0,
        crop_padding=0,
        flip=False,
        threads=1,
        progress=False,
    )
    with pytest.raises(Interrupted):
        train(str(arch_file), split, cfg, log=_stop_after_first_epoch)
    assert len(epochs(split)) == 1 and not (split / "result.json").exists()
    # The settings come from split/config.json.
    assert main(["train", "--resume", str(split), "--no-progress"]) == 0
    a, b = epochs(straight), epochs(split)
    assert [r["epoch"] for r in b] == [1, 2]
    for key in ("train_loss", "train_acc", "test_acc", "test_acc_ema"):
        assert a[-1][key] == pytest.approx(b[-1][key], abs=1e-6), key
    wa = torch.load(straight / "model.pt")
    wb = torch.load(split / "model.pt")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_resume_to_a_new_total(tmp_path: Path, arch_file: Path) -> None:
    out = tmp_path / "run"
    assert (
        main(
            ["train", str(arch_file), "--out", str(out), "--epochs", "1", "--data", SMALL, *COMMON]
        )
        == 0
    )
    assert main(["train", "--resume", str(out), "--epochs", "2", "--no-progress"]) == 0
    assert [r["epoch"] for r in epochs(out)] == [1, 2]
    assert json.loads((out / "result.json").read_text())["epochs"] == 2


def test_fixed_space(tmp_path: Path, spaces: Path) -> None:
    """The hand-designed baseline: a fixed space (a .space path here; a bundled name such
    as mobilenet_v2 works alike), instantiated for the data unless overridden."""
    out = tmp_path / "fixed"
    assert (
        main(
            [
                "train",
                str(spaces / "train_fixed.space"),
                "--resolution",
                "20",
                "--out",
                str(out),
                "--epochs",
                "1",
                "--data",
                SMALL,
                *COMMON,
            ]
        )
        == 0
    )
    _, arch, extra = load_arch(out / "arch.json")
    assert arch.space == "train_fixed"
    assert (arch.resolution, arch.in_channels, arch.classes) == (20, 1, 4)
    assert extra["flops"] > 0
    assert json.loads((out / "result.json").read_text())["epochs"] == 1


def test_bundled_fixed_space_resolves_for_the_data() -> None:
    from fpnas_dsl.data import load_data
    from fpnas_dsl.train import resolve_architecture

    data = load_data(SMALL)
    _, arch = resolve_architecture("mobilenet_v2", data, resolution=32)
    assert (arch.space, arch.resolution, arch.in_channels, arch.classes) == (
        "mobilenet_v2",
        32,
        1,
        4,
    )
    assert len(arch.blocks) == 17


def test_recipe_defaults() -> None:
    cfg = TrainConfig(epochs=420, batch_size=4096).resolved(steps_per_epoch=312, resolution=224)
    assert cfg.lr == pytest.approx(0.2048)  # the paper's rate at the paper's batch
    assert cfg.lr_decay == pytest.approx(0.9875)
    assert cfg.ema_decay == pytest.approx(0.9999)
    assert cfg.autoaugment is True and cfg.label_smoothing == 0.1
    small = TrainConfig(epochs=20, batch_size=128).resolved(steps_per_epoch=468, resolution=28)
    assert small.lr == pytest.approx(0.0064)
    assert small.ema_decay is not None and 0.99 < small.ema_decay < 0.9999
    assert small.autoaugment is False and small.crop_padding == 3
    # The paper's total decay over 420 epochs, spread over 20.
    assert small.lr_decay == pytest.approx(0.9875**21)
    # Warm-up, then the staircase decay.
    assert learning_rate(small, 0.5) == pytest.approx(0.0032)
    assert learning_rate(small, 1.5) == pytest.approx(0.0064 * 0.9875**21)
    literal = TrainConfig(epochs=20, lr_decay=0.9875).resolved(468, 28)
    assert learning_rate(literal, 10.2) == pytest.approx(0.0064 * 0.9875**10)


def test_bad_input(
    tmp_path: Path, arch_file: Path, spaces: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "o")
    assert "no such file" in _err(
        capsys, ["train", str(tmp_path / "x.json"), "--out", out, "--data", DATA]
    )
    line = _err(capsys, ["train", str(spaces / "train_tiny.space"), "--out", out, "--data", DATA])
    assert "architectures" in line  # a space with choices is not one architecture
    line = _err(capsys, ["train", str(arch_file), "--out", out, "--data", "synthetic:classes=7"])
    assert "classes" in line
    assert "nothing to resume" in _err(capsys, ["train", "--resume", out])
    assert "--out" in _err(capsys, ["train", str(arch_file), "--data", DATA])
    assert "--lr" in _err(
        capsys, ["train", str(arch_file), "--out", out, "--data", DATA, "--lr", "-1"]
    )
    assert "unknown data source" in _err(
        capsys, ["train", str(arch_file), "--out", out, "--data", "mnist"]
    )
