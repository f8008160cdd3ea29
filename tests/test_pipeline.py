"""The image-folder pipeline on a JPEG folder built here: batches that depend on neither
the number of workers nor where a run resumed, the paper's random class subset, a search
and a training through 2 workers from the CLI, mixed precision's guards."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from cli_helpers import one_line_error

from fpnas_dsl.cli import main
from fpnas_dsl.data import batches, eval_batches, load_data, split_halves
from fpnas_dsl.errors import FpnasError, Interrupted
from fpnas_dsl.pipeline import (
    Augment,
    Loading,
    centre_box,
    image_key,
    rrc_box,
    write_jpeg_folder,
)
from fpnas_dsl.search.checkpoint import load_checkpoint
from fpnas_dsl.search.config import make_config
from fpnas_dsl.search.distributed import Shard
from fpnas_dsl.search.run import prepare_search, resume_config
from fpnas_dsl.train import TrainConfig, train

TINY = str(Path(__file__).parent / "data" / "tiny.space")
TARGET = 150_000
FIXED = """
space pipe_fixed
input 16 x 16 x 3
classes 4
expansion relative to input
micro m {
    kernel    3
    act       relu6
    attention 0
    divisor 8
}
stem conv 3x3 8 stride 2 act relu
table {
    mbconv  m  4  16  2  2
}
head conv 1x1 32 act relu
pool avg
fc classes
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 4 classes x 16 photo-shaped JPEGs per split: big enough for the crops to matter.
    return write_jpeg_folder(tmp_path_factory.mktemp("jpegs"), 4, 16, size=(96, 72))


def spec(folder: Path, query: str = "resolution=32") -> str:
    return f"imagefolder:{folder}?{query}"


def all_batches(data: Any, **kwargs: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(batches(data, 8, 3, 2, **kwargs))


def same(a: list[tuple[torch.Tensor, torch.Tensor]], b: list[Any]) -> bool:
    return len(a) == len(b) and all(
        torch.equal(x, u) and torch.equal(y, v) for (x, y), (u, v) in zip(a, b, strict=True)
    )


def test_batches_do_not_depend_on_workers_or_start(folder: Path) -> None:
    data = load_data(spec(folder))
    omega, _ = split_halves(data.train, 0)
    augment = Augment(flip=True, autoaugment="imagenet")
    data.set_loading(Loading(workers=0))
    alone = all_batches(omega, augment=augment)
    plain = all_batches(omega)
    tests = list(eval_batches(data.test, 10))
    data.set_loading(Loading(workers=2))
    assert same(alone, all_batches(omega, augment=augment))
    assert same(alone[1:], all_batches(omega, start=1, augment=augment))
    assert same(alone[1:3], all_batches(omega, start=1, count=2, augment=augment))
    assert same(plain, all_batches(omega))
    assert same(tests, list(eval_batches(data.test, 10)))
    # The order is epoch_order's (the labels of the in-process path), and the training
    # transform draws anew per image and per epoch; the evaluation one does not.
    assert [int(y.sum()) for _, y in alone] == [int(y.sum()) for _, y in plain]
    assert not any(torch.equal(x, u) for (x, _), (u, _) in zip(alone, plain, strict=True))
    other_epoch = list(batches(omega, 8, 3, 3, augment=augment))
    assert not torch.equal(alone[0][0], other_epoch[0][0])
    assert alone[0][0].shape == (8, 3, 32, 32) and alone[0][0].dtype == torch.uint8
    assert sum(len(y) for _, y in tests) == len(data.test) == 64


def test_a_ranks_share_is_its_part_of_the_whole_batch(folder: Path) -> None:
    # Under torchrun each rank decodes its part of every batch, augmented as the whole
    # batch's images at those positions would be.
    data = load_data(spec(folder))
    omega, _ = split_halves(data.train, 0)
    whole = list(batches(omega, 8, 3, 2, count=2, augment=Augment()))
    for rank in (0, 1):
        part = list(batches(Shard(omega, rank, 2), 8, 3, 2, count=2, augment=Augment()))
        for (x, y), (u, v) in zip(whole, part, strict=True):
            assert torch.equal(x[rank * 4 : rank * 4 + 4], u)
            assert torch.equal(y[rank * 4 : rank * 4 + 4], v)


def test_crop_boxes_stay_inside_and_in_range() -> None:
    for key in range(300):
        gen = torch.Generator().manual_seed(image_key(0, 1, key))
        width, height = (500, 375) if key % 3 else (90, 400)
        left, top, w, h = rrc_box(width, height, gen)
        assert left >= 0 and left + w <= width and top >= 0 and top + h <= height
        assert 0.08 * width * height * 0.95 <= w * h <= width * height
    assert centre_box(500, 375) == (86, 23, 328, 328)
    assert image_key(1, 2, 3) == image_key(1, 2, 3) != image_key(1, 3, 3)


def test_random_class_subset(folder: Path) -> None:
    picks = {
        tuple(load_data(spec(folder, f"classes=2&seed={s}")).class_names or []) for s in range(6)
    }
    assert len(picks) > 1  # the seed draws the classes
    first = load_data(spec(folder, "classes=2&seed=4"))
    again = load_data(spec(folder, "classes=2&seed=4"))
    assert first.class_names == again.class_names and first.classes == 2
    assert len(first.train) == 32 and set(first.train.samples[0][0].split("/")[-2:-1]) <= set(
        first.class_names or []
    )
    assert load_data(spec(folder, "classes=2")).class_names == ["c000", "c001"]
    with pytest.raises(FpnasError, match="give classes=N"):
        load_data(spec(folder, "seed=1"))
    with pytest.raises(FpnasError, match=r"classes=9 but .* has 4 class folders"):
        load_data(spec(folder, "classes=9&seed=1"))


def test_unreadable_image_is_named(tmp_path: Path) -> None:
    root = write_jpeg_folder(tmp_path / "bad", 2, 4, size=(40, 30), splits=("train",))
    broken = root / "train" / "c001" / "00002.jpg"
    broken.write_bytes(b"not a jpeg")
    data = load_data(f"imagefolder:{root}?resolution=16")
    data.set_loading(Loading(workers=2))
    with pytest.raises(FpnasError, match=r"00002\.jpg: not a readable image"):
        list(batches(data.train, 4, 0, 1, augment=Augment()))


def search_settings(folder: Path, out: Path, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "space": TINY,
        "target_flops": TARGET,
        "data": spec(folder, "classes=4&seed=1&resolution=32"),
        "resolution": 16,
        "epochs": 2,
        "warmup_epochs": 1,
        "steps_per_epoch": 3,
        "batch_size": 8,
        "lam": 0.5,
        "alpha_lr": 0.2,
        "lr": 0.05,
        "eval_batches": 1,
        "threads": 1,
        "workers": 2,
        "out": str(out),
    }
    values.update(overrides)
    return values


def iteration_records(out: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    drop = ("wall", "t_core", "t_fwd_bwd", "time_split")
    return [{k: v for k, v in r.items() if k not in drop} for r in rows]


def test_search_from_the_cli_and_a_resume_mid_epoch(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    straight = tmp_path / "straight"
    argv = ["search", "--no-progress"]
    for key, value in search_settings(folder, straight).items():
        argv += [str(value)] if key == "space" else [f"--{key.replace('_', '-')}", str(value)]
    assert main(argv) == 0, capsys.readouterr().err
    classes = json.loads((straight / "classes.json").read_text())
    assert classes["data"] == f"imagefolder:{folder.name}" and len(classes["classes"]) == 4

    # Stopped (as by Ctrl-C) at epoch 2, step 1 with 2 workers, resumed with none.
    stopped = tmp_path / "stopped"
    search = prepare_search(make_config(search_settings(folder, stopped)))
    checks = {"n": 0}

    def stop_at_step_5(flags: list[bool], where: str) -> list[bool]:
        checks["n"] += 1  # flags: a stop request, a checkpoint due
        return [checks["n"] == 5, False]

    search.group.any_of = stop_at_step_5  # type: ignore[method-assign]
    with pytest.raises(Interrupted):
        search.run(progress=False)
    assert (load_checkpoint(stopped)["epoch"], load_checkpoint(stopped)["step"]) == (2, 1)
    config = resume_config(stopped, {"workers": 0})
    prepare_search(config, resume=stopped).run(progress=False)
    assert iteration_records(stopped) == iteration_records(straight)
    a, b = load_checkpoint(straight), load_checkpoint(stopped)
    assert np.array_equal(a["distribution"]["logits"], b["distribution"]["logits"])
    assert all(torch.equal(a["supernet"][k], b["supernet"][k]) for k in a["supernet"])


def test_search_bf16_autocast_keeps_scores_in_float(folder: Path, tmp_path: Path) -> None:
    search = prepare_search(
        make_config(search_settings(folder, tmp_path / "bf16", amp="bf16", workers=0))
    )
    result = search.run(progress=False)
    rows = iteration_records(tmp_path / "bf16")
    assert all(np.isfinite(r["val_nll"]) for r in rows if r.get("val_nll") is not None)
    assert 0 <= result["accuracy"] <= 1
    assert search.dist.logits.dtype == np.float64


def test_fp16_needs_cuda(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    argv = ["search", TINY, "--target-flops", str(TARGET), "--amp", "fp16"]
    argv += ["--data", spec(folder), "--out", str(tmp_path / "r")]
    assert "--amp fp16 needs a CUDA device" in one_line_error(capsys, argv)
    assert not (tmp_path / "r").exists()
    argv = ["train", str(tmp_path / "f.space"), "--out", str(tmp_path / "t"), "--amp", "fp16"]
    (tmp_path / "f.space").write_text(FIXED)
    assert "--amp fp16 needs a CUDA device" in one_line_error(
        capsys, [*argv, "--data", spec(folder)]
    )


def _stop_after_first_epoch(line: str) -> None:
    if line.startswith("epoch 1/"):
        raise KeyboardInterrupt  # as a Ctrl-C right after the epoch's checkpoint


def test_train_from_the_cli_and_resume(folder: Path, tmp_path: Path) -> None:
    arch = str(tmp_path / "fixed.space")
    (tmp_path / "fixed.space").write_text(FIXED)
    straight, split = tmp_path / "straight", tmp_path / "split"
    argv = ["train", arch, "--out", str(straight), "--data", spec(folder), "--resolution", "16"]
    argv += ["--epochs", "2", "--batch-size", "8", "--lr", "0.01", "--warmup-epochs", "0"]
    argv += ["--autoaugment", "--eval-batch-size", "16", "--workers", "2", "--threads", "1"]
    assert main([*argv, "--no-progress"]) == 0
    cfg = TrainConfig(
        data=spec(folder),
        epochs=2,
        batch_size=8,
        lr=0.01,
        warmup_epochs=0,
        autoaugment=True,
        eval_batch_size=16,
        workers=2,
        threads=1,
        progress=False,
    )
    with pytest.raises(Interrupted):
        train(arch, split, cfg, resolution=16, log=_stop_after_first_epoch)
    assert main(["train", "--resume", str(split), "--workers", "0", "--no-progress"]) == 0
    assert json.loads((split / "classes.json").read_text())["classes"][0] == "c000"
    config = json.loads((split / "config.json").read_text())
    assert config["crop_padding"] == 0 and config["autoaugment"] is True
    wa, wb = torch.load(straight / "model.pt"), torch.load(split / "model.pt")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    ra = json.loads((straight / "result.json").read_text())
    rb = json.loads((split / "result.json").read_text())
    assert (ra["test_acc"], ra["test_acc_ema"]) == (rb["test_acc"], rb["test_acc_ema"])
