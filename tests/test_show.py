"""`fpnas show`: the architecture picture (PNG, SVG), the table, and the run plots."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import one_line_error as _err
from matplotlib import image as mpimg

from fpnas_dsl.archfile import save_arch
from fpnas_dsl.cli import main
from fpnas_dsl.ir import Architecture, Space, decode, uniform_samples
from fpnas_dsl.parser import load_space
from fpnas_dsl.show import architecture_pixels, run_pixels, show


def _arch(name: str = "fbnetv2_f_pp", seed: int = 0) -> tuple[Space, Architecture]:
    space = load_space(name, resolution=28, in_channels=1, classes=10)
    # A few draws, keep one with a skipped block so the dashed box is drawn too.
    for idx in uniform_samples(space, 32, seed):
        arch = decode(space, idx)
        if any(b.kernel == 0 for b in arch.blocks):
            return space, arch
    return space, decode(space, uniform_samples(space, 1, seed)[0])


def assert_picture(path: Path, size: tuple[int, int]) -> None:
    assert path.is_file() and path.stat().st_size > 0
    pixels = mpimg.imread(str(path))
    assert (pixels.shape[1], pixels.shape[0]) == size
    rgb = pixels[..., :3]
    assert float(np.std(rgb)) > 0.05  # not blank
    # Not mostly one colour either: a real drawing covers a fair share of the canvas.
    assert float(np.mean(np.any(rgb < 0.95, axis=-1))) > 0.05


def search_metrics(run: Path, epochs: int = 6) -> None:
    lines = [json.dumps({"type": "iter", "epoch": 1, "step": 1, "entropy": 40.0, "k": 10})]
    for e in range(1, epochs + 1):
        lines.append(
            json.dumps(
                {
                    "type": "epoch",
                    "epoch": e,
                    "entropy": 40.0 - 5 * max(0, e - 2),
                    "k": 10 - e,
                    "expected_flops": 8e6 - 3e5 * e,
                    "arch_flops": 7e6 - 2e5 * e,
                    "val_acc": 0.5 + 0.05 * e,
                    "samples": 100 * e,
                    "wall": 10.0 * e,
                }
            )
        )
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (run / "config.json").write_text(json.dumps({"target_flops": 6e6, "warmup_epochs": 2}))


def test_architecture_picture_png_svg_and_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space, arch = _arch()
    path = tmp_path / "arch.json"
    save_arch(path, space, arch)
    assert main(["show", str(path), "-o", str(tmp_path / "pic")]) == 0
    out = capsys.readouterr().out
    assert_picture(tmp_path / "pic.png", architecture_pixels(len(arch.blocks)))
    svg = ET.parse(tmp_path / "pic.svg").getroot()
    assert svg.tag.endswith("svg") and len(list(svg.iter())) > 50
    # The table: a header and one line per block, with the choices.
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["block", "stage"])
    rows = lines[header + 2 : header + 2 + len(arch.blocks)]
    assert [r.split()[0] for r in rows] == [str(i + 1) for i in range(len(arch.blocks))]
    assert any("skip" in r for r in rows)
    assert "MFLOPS" in out and "wrote" in out


def test_default_output_beside_arch_json(tmp_path: Path) -> None:
    space, arch = _arch("mobilenet_v2")
    path = tmp_path / "mbv2.json"
    save_arch(path, space, arch)
    report = show(path)
    assert report.written == [tmp_path / "mbv2.png", tmp_path / "mbv2.svg"]
    assert_picture(tmp_path / "mbv2.png", architecture_pixels(len(arch.blocks)))


def test_search_run_directory(tmp_path: Path) -> None:
    space, arch = _arch("fpnas_l0", seed=2)
    run = tmp_path / "run"
    run.mkdir()
    save_arch(run / "arch.json", space, arch, flops=1, params=1, accuracy=0.8)
    search_metrics(run)
    report = show(run)
    assert run / "search.png" in report.written
    assert_picture(run / "search.png", run_pixels())
    assert_picture(run / "arch.png", architecture_pixels(len(arch.blocks)))
    assert "accuracy 80.00%" in report.summary


def test_run_directory_without_arch_yet(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    search_metrics(run, epochs=2)
    report = show(run, tmp_path / "p")
    assert report.written == [tmp_path / "p-search.png"]
    assert_picture(tmp_path / "p-search.png", run_pixels())


def test_training_directory(tmp_path: Path) -> None:
    run = tmp_path / "train"
    run.mkdir()
    rows = [
        {
            "type": "epoch",
            "epoch": e,
            "lr": 0.01 * 0.9**e,
            "train_loss": 2 / e,
            "train_acc": 1 - 0.5 / e,
            "test_acc": 1 - 0.6 / e,
            "test_acc_ema": 1 - 0.55 / e,
            "test_loss": 2.1 / e,
            "images_per_s": 500.0,
        }
        for e in range(1, 5)
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = show(run)
    assert report.written == [run / "training.png"]
    assert_picture(run / "training.png", run_pixels())


def test_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "no such file" in _err(capsys, ["show", str(tmp_path / "nope.json")])
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "arch.json" in _err(capsys, ["show", str(empty)])
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    assert "bad.json" in _err(capsys, ["show", str(bad)])
    space, arch = _arch("mobilenet_v2")
    good = tmp_path / "good.json"
    save_arch(good, space, arch)
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert "pic.png" in _err(capsys, ["show", str(good), "-o", str(blocker / "pic")])
