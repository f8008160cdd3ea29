"""Issue 11: every input through every subcommand works or ends in one clear message with
exit 2 (bad input), 1 (a failure at run time) or 130 (interrupted), never a traceback; no
command leaves partial files behind when it fails; settings are never silently ignored.

One test per item of the issue (`test_item_N_...`), and one that drives every subcommand
with a missing file, an empty file, a directory, invalid JSON and a binary file wherever it
takes a path."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import one_line_error

from fpnas_dsl.archfile import save_arch
from fpnas_dsl.cli import main
from fpnas_dsl.ir import decode, uniform_samples
from fpnas_dsl.parser import load_space

TESTS = Path(__file__).parent
TINY = str(TESTS / "data" / "tiny.space")
DATA = "synthetic:size=256,test_size=128,classes=4,resolution=16"
TARGET = "150000"
#: A search small enough for a test: 2 epochs of 2 steps.
QUICK = [
    "--data",
    DATA,
    "--epochs",
    "2",
    "--warmup-epochs",
    "1",
    "--steps-per-epoch",
    "2",
    "--batch-size",
    "16",
    "--eval-batches",
    "1",
    "--threads",
    "1",
    "--no-progress",
]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err, captured.err
    return code, captured.out, captured.err


def search_run(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str = "run") -> Path:
    out = tmp_path / name
    code, _, err = run(capsys, "search", TINY, "--target-flops", TARGET, *QUICK, "--out", str(out))
    assert code == 0, err
    return out


def tiny_arch(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A tiny space's architecture as arch.json (with 'ir') and in the minimal form."""
    space = load_space(TINY)
    arch = decode(space, uniform_samples(space, 1, seed=3)[0])
    path = tmp_path / "arch.json"
    save_arch(path, space, arch)
    return path, {"blocks": [b.model_dump(mode="json") for b in arch.blocks]}


# --------------------------------------------------------------------------------------
# Item by item


def test_item_1_fixed_space_is_not_searched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r"
    line = one_line_error(
        capsys,
        [
            *("search", "mobilenet_v2", "--target-flops", "6e6"),
            *("--data", "synthetic:resolution=32", "--out", str(out)),
        ],
    )
    assert "is fixed" in line and "nothing to search" in line and "fpnas train" in line
    assert not out.exists()


def test_item_2_huge_counts_print(capsys: pytest.CaptureFixture[str]) -> None:
    """A space with more than 4300 digits of architectures: the exact count in JSON, the
    scientific notation beside it and in the text."""
    from fpnas_dsl.parser import parse_space
    from fpnas_dsl.summary import render, summarize

    text = Path(TINY).read_text()
    row = "    mbconv  m      (1, 4, 1)      (8, 16, 8)   1       1\n"
    many = text.replace(row, row * 2100)
    space = parse_space(many)
    summary = summarize(space, cost=False)
    assert len(summary["architectures"]) > 4300
    assert json.loads(json.dumps(summary))["architectures"] == summary["architectures"]
    exponent = len(summary["architectures"]) - 1
    mantissa, _, power = summary["architectures_sci"].partition("e")
    assert int(power) == exponent and len(mantissa) == 4
    assert float(mantissa) == pytest.approx(float(summary["architectures"][:4]) / 1000, abs=0.011)
    text_out = render(summary, space)
    assert f"e{exponent}" in text_out and "the exact value is in --json" in text_out
    assert max(len(line) for line in text_out.splitlines()) < 200


def test_item_2_supernet_size_announced_and_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import fpnas_dsl.search.run as search_run_module

    out = tmp_path / "r"
    argv = ["search", TINY, "--target-flops", TARGET, *QUICK, "--out", str(out)]
    monkeypatch.setattr(search_run_module, "available_memory", lambda: 1 << 20)
    line = one_line_error(capsys, argv)
    assert "the supernet of space 'tiny' does not fit: its 177,540 weights (709 KiB" in line
    assert "2.05 MiB to train" in line and "1 MiB of memory available" in line
    assert not out.exists()
    monkeypatch.setattr(search_run_module, "disk_free", lambda path: 1 << 20)
    monkeypatch.setattr(search_run_module, "available_memory", lambda: None)
    line = one_line_error(capsys, argv)
    assert "checkpoint of this supernet takes about 1.37 MiB" in line
    assert "1 MiB free; choose another --out" in line
    assert not out.exists()
    # What fits is announced before it is built.
    monkeypatch.undo()
    code, _, err = run(capsys, *argv)
    assert code == 0
    assert err.startswith("fpnas search: building the supernet: 177,540 weights, 709 KiB")


def test_item_3_resume_honours_epochs_and_refuses_other_changes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fpnas_dsl.runfiles import read_metrics

    out = search_run(tmp_path, capsys)
    config_before = (out / "config.json").read_text()
    for argv, names in (
        (["--target-flops", "1e6"], ["--target-flops 1000000.0 (the run's: 150000.0)"]),
        (["--beta", "2", "--lam", "0.3"], ["--beta 2.0", "--lam 0.3"]),
        (["--out", str(tmp_path / "elsewhere")], ["leave out --out"]),
    ):
        line = one_line_error(capsys, ["search", "--resume", str(out), *argv])
        assert all(n in line for n in names), line
    config = tmp_path / "more.yaml"
    config.write_text("batch_size: 8\n")
    line = one_line_error(capsys, ["search", "--resume", str(out), "--config", str(config)])
    assert f"batch_size (in {config}) 8 (the run's: 16)" in line
    assert (out / "config.json").read_text() == config_before
    # The same values are no change; --epochs extends the finished search to a new total.
    code, _, err = run(
        capsys, "search", "--resume", str(out), "--target-flops", TARGET, "--epochs", "3"
    )
    assert code == 0, err
    assert "extending the search from 2 to 3 epochs" in err and "rebuilt for 6 steps" in err
    summaries = read_metrics(out / "metrics.jsonl")
    assert [r["epoch"] for r in summaries] == [1, 2, 3]
    assert json.loads((out / "config.json").read_text())["epochs"] == 3
    lrs = [r["lr"] for r in read_metrics(out / "metrics.jsonl", "iter")]
    assert lrs[3] == pytest.approx(0.0) and lrs[4] > 0 and lrs[-1] == pytest.approx(0.0)
    line = one_line_error(capsys, ["search", "--resume", str(out), "--epochs", "2"])
    assert "has done 3 epochs already" in line


def test_item_3_train_resume_refuses_changed_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    full, _ = tiny_arch(tmp_path)
    out = tmp_path / "t"
    small = ["--data", DATA, "--batch-size", "32", "--no-progress", "--threads", "1"]
    code, _, err = run(capsys, "train", str(full), "--out", str(out), "--epochs", "1", *small)
    assert code == 0, err
    line = one_line_error(
        capsys, ["train", "--resume", str(out), "--lr", "0.5", "--optimizer", "sgd"]
    )
    assert "--lr 0.5" in line and "--optimizer 'sgd' (the run's: 'rmsprop')" in line
    line = one_line_error(capsys, ["train", "--resume", str(out), "--resolution", "20"])
    assert "leave out --resolution" in line
    code, _, err = run(capsys, "train", "--resume", str(out), "--epochs", "2", "--batch-size", "32")
    assert code == 0, err
    assert json.loads((out / "result.json").read_text())["epochs"] == 2


def test_item_4_failed_start_leaves_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "deep" / "r"
    for device, needle in (("tpu", "not a device"), ("cuda:7", "cuda")):
        line = one_line_error(
            capsys,
            [
                "search",
                TINY,
                "--target-flops",
                TARGET,
                *QUICK,
                "--out",
                str(out),
                "--device",
                device,
            ],
        )
        assert needle in line
        assert not (tmp_path / "deep").exists()
    line = one_line_error(
        capsys, ["search", TINY, "--target-flops", "1", *QUICK, "--out", str(out)]
    )
    assert "outside the space's range" in line and not (tmp_path / "deep").exists()
    line = one_line_error(capsys, ["search", "--resume", str(out)])
    assert "not a search run directory" in line


def test_item_4_run_failing_before_its_first_checkpoint_removes_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from fpnas_dsl.errors import RunError
    from fpnas_dsl.search.config import make_config
    from fpnas_dsl.search.run import prepare_search

    out = tmp_path / "r"
    config = make_config(
        {"space": TINY, "target_flops": 150000, "data": DATA, "epochs": 2, "out": str(out)}
        | {"steps_per_epoch": 2, "batch_size": 16, "eval_batches": 1}
    )
    search = prepare_search(config)
    assert (out / "config.json").is_file()
    real = torch.nn.functional.cross_entropy
    monkeypatch.setattr(
        torch.nn.functional, "cross_entropy", lambda *a, **k: real(*a, **k) * float("nan")
    )
    with pytest.raises(RunError, match="no epoch had finished, so nothing was kept"):
        search.run(progress=False)
    assert not out.exists()


def test_item_5_weights_that_are_not_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = search_run(tmp_path, capsys)
    readme = tmp_path / "README.md"
    readme.write_text("# fpnas\n\nnot weights\n")
    target = tmp_path / "x.onnx"
    line = one_line_error(
        capsys, ["export", str(out), "-f", "onnx", "-o", str(target), "--weights", str(readme)]
    )
    assert "not a weights file (a text file)" in line and "state_dict" in line
    assert "weights_only" not in line and "\x1b" not in line
    line = one_line_error(
        capsys,
        ["export", str(out), "-f", "onnx", "-o", str(target), "--weights", f"{out}/checkpoint.pt"],
    )
    assert "a search checkpoint" in line and f"fpnas export {out}" in line
    assert "weights_only" not in line and "\x1b" not in line
    assert not target.exists()


def test_item_6_config_file_errors_name_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("epoch: 3\n")
    line = one_line_error(
        capsys, ["search", TINY, "--target-flops", TARGET, "--config", str(bad), *QUICK]
    )
    assert f"{bad}: unknown setting 'epoch' (did you mean 'epochs'?)" in line
    assert "command line" not in line
    bad.write_text("beta: -1\n")
    line = one_line_error(
        capsys, ["search", TINY, "--target-flops", TARGET, "--config", str(bad), *QUICK]
    )
    assert f"beta (in {bad})" in line and "command line" not in line
    line = one_line_error(capsys, ["search", TINY, "--target-flops", "-5", *QUICK])
    assert "--target-flops: Input should be greater than 0" in line


def test_item_7_a_bad_field_of_the_file_blames_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, minimal = tiny_arch(tmp_path)
    path = tmp_path / "a.json"
    path.write_text(json.dumps({**minimal, "resolution": -5}))
    line = one_line_error(capsys, ["cost", TINY, str(path)])
    assert f"{path}: 'resolution' is -5" in line and "--resolution" not in line
    line = one_line_error(capsys, ["cost", TINY, str(path), "--resolution", "-5"])
    assert "--resolution must be a whole number" in line


def test_item_8_blocks_count_from_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    full, minimal = tiny_arch(tmp_path)
    doc = json.loads(full.read_text())
    doc["blocks"][4 - 1]["kernel"] = "big"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    line = one_line_error(capsys, ["show", str(bad)])
    assert "invalid architecture at block 4, kernel" in line and "blocks.3" not in line
    # Row 2 decides its channels once for blocks 2 and 3: editing block 2 names both.
    doc = json.loads(full.read_text())
    shared = doc["blocks"][1]["channels"]
    doc["blocks"][1]["channels"] = 32 if shared != 32 else 16
    bad.write_text(json.dumps(doc))
    line = one_line_error(capsys, ["show", str(bad)])
    assert "block 3: channels" in line and f"block 2's {doc['blocks'][1]['channels']}" in line
    assert "blocks 2-3 together" in line
    doc = json.loads(full.read_text())
    del doc["ir"]["name"]
    bad.write_text(json.dumps(doc))
    line = one_line_error(capsys, ["show", str(bad)])
    assert "compiled space ('ir') is damaged at name: missing" in line
    line = one_line_error(capsys, ["cost", TINY, str(_write(tmp_path, minimal, 2, "act", 5))])
    assert "block 2, act" in line


def _write(tmp_path: Path, minimal: dict[str, Any], block: int, key: str, value: Any) -> Path:
    doc = json.loads(json.dumps(minimal))
    doc["blocks"][block - 1][key] = value
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(doc))
    return path


def test_item_9_long_lines_are_windowed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    long = tmp_path / "long.space"
    long.write_text("space x " + "a" * 1_000_000 + " !")
    code, _, err = run(capsys, "compile", str(long))
    assert code == 2 and len(err) < 2000
    lines = err.splitlines()
    source, caret = lines[1], lines[2]
    assert "…" in source and len(source) < 200
    assert caret.index("^") < len(source)
    binary = tmp_path / "bin.space"
    binary.write_bytes(bytes(range(256)) * 4000)
    line = one_line_error(capsys, ["compile", str(binary)])
    assert "a binary file" in line and "\ufffd" not in line
    latin = tmp_path / "latin.space"
    latin.write_bytes(b"space caf\xe9 " + b"x" * 5000 + b"\n")
    code, _, err = run(capsys, "compile", str(latin))
    assert code == 2 and "not valid UTF-8" in err and "\ufffd" not in err and len(err) < 1000


def test_item_10_exit_codes(tmp_path: Path) -> None:
    bare = subprocess.run(
        [sys.executable, "-m", "fpnas_dsl"], capture_output=True, text=True, timeout=60
    )
    assert bare.returncode == 2 and "usage: fpnas" in bare.stderr
    # 130 for Ctrl-C during a search: see test_search.test_interrupted_and_resumed...
    from fpnas_dsl.errors import FpnasError, Interrupted, RunError

    assert (FpnasError.exit_code, RunError.exit_code, Interrupted.exit_code) == (2, 1, 130)


def test_item_10_unexpected_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import fpnas_dsl.summary as summary

    def broken(*args: Any, **kwargs: Any) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(summary, "summarize", broken)
    line = one_line_error(capsys, ["compile", "mobilenet_v2"], code=1)
    assert "internal error" in line and "ZeroDivisionError: a bug" in line
    assert "FPNAS_DEBUG=1" in line
    monkeypatch.setenv("FPNAS_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        main(["compile", "mobilenet_v2"])


def test_a_file_that_fails_is_one_line_not_a_bug(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run directory deleted under a running search, a full disk: the operating system's
    error with its path, exit 1, never "a bug in fpnas"."""
    import fpnas_dsl.summary as summary

    def vanished(*args: Any, **kwargs: Any) -> None:
        raise FileNotFoundError(2, "No such file or directory", "runs/x/tensorboard/events")

    monkeypatch.setattr(summary, "summarize", vanished)
    line = one_line_error(capsys, ["compile", "mobilenet_v2"], code=1)
    assert "a file operation failed" in line and "runs/x/tensorboard/events" in line
    assert "bug" not in line


def test_item_10_interrupt_exits_130(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import fpnas_dsl.summary as summary

    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(summary, "summarize", interrupted)
    line = one_line_error(capsys, ["compile", "mobilenet_v2"], code=130)
    assert line == "fpnas compile: interrupted"


def test_item_11_minimal_arch_everywhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, minimal = tiny_arch(tmp_path)
    path = tmp_path / "minimal.json"
    path.write_text(json.dumps(minimal))
    assert run(capsys, "cost", TINY, str(path))[0] == 0
    line = one_line_error(capsys, ["show", str(path)])
    assert "no compiled space ('ir')" in line and "--space SPACE" in line
    code, out, err = run(capsys, "show", str(path), "--space", TINY, "-o", str(tmp_path / "pic"))
    assert code == 0, err
    assert (tmp_path / "pic.png").is_file() and "tiny: 4 blocks" in out
    code, _, err = run(
        capsys, "export", str(path), "--space", TINY, "-f", "json", "-o", str(tmp_path / "e.json")
    )
    assert code == 0, err
    assert json.loads((tmp_path / "e.json").read_text())["ir"]["name"] == "tiny"
    # A bundled space named by the file needs no --space.
    space = load_space("fbnetv2_f")
    arch = decode(space, uniform_samples(space, 1, seed=0)[0])
    named = tmp_path / "named.json"
    named.write_text(
        json.dumps({"space": "fbnetv2_f", "blocks": [b.model_dump() for b in arch.blocks]})
    )
    code, _, err = run(capsys, "export", str(named), "-f", "json", "-o", str(tmp_path / "n.json"))
    assert code == 0, err


def test_item_12_outputs_create_their_directories(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    full, _ = tiny_arch(tmp_path)
    code, _, err = run(capsys, "show", str(full), "-o", str(tmp_path / "a" / "b" / "pic"))
    assert code == 0, err
    assert (tmp_path / "a" / "b" / "pic.svg").is_file()
    code, _, err = run(
        capsys, "export", str(full), "-f", "json", "-o", str(tmp_path / "c" / "d" / "x.json")
    )
    assert code == 0, err
    code, _, err = run(capsys, "compile", TINY, "--ir", str(tmp_path / "e" / "ir.json"))
    assert code == 0, err
    # A failure removes the directories it made.
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    one_line_error(capsys, ["show", str(bad), "-o", str(tmp_path / "f" / "g" / "pic")])
    assert not (tmp_path / "f").exists()


def test_item_13_onnx_metadata(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import onnx

    out = search_run(tmp_path, capsys)
    target = tmp_path / "net.onnx"
    code, stdout, err = run(capsys, "export", str(out), "-f", "onnx", "-o", str(target))
    assert code == 0, err
    meta = {p.key: p.value for p in onnx.load(str(target)).metadata_props}
    assert meta["fpnas.resolution"] == "16" and meta["fpnas.in_channels"] == "1"
    assert meta["fpnas.classes"] == "4" and meta["fpnas.data"] == "synthetic"
    assert json.loads(meta["fpnas.mean"]) == [0.5] and json.loads(meta["fpnas.std"]) == [0.29]
    assert "minus mean [0.5]" in meta["fpnas.preprocessing"]
    assert meta["fpnas.input"] == "float32 NCHW [batch, 1, 16, 16]"
    assert "minus mean" in stdout
    full, _ = tiny_arch(tmp_path)
    code, _, err = run(
        capsys, "export", str(full), "-f", "onnx", "-o", str(target), "--data", "fashion-mnist"
    )
    assert code == 0, err
    meta = {p.key: p.value for p in onnx.load(str(target)).metadata_props}
    assert json.loads(meta["fpnas.mean"]) == [0.286] and meta["fpnas.data"] == "fashion-mnist"
    # TorchScript: the same record as an extra file; JSON: as a key.
    import torch

    scripted = tmp_path / "net.pt"
    code, _, err = run(capsys, "export", str(out), "-f", "torchscript", "-o", str(scripted))
    assert code == 0, err
    extra = {"fpnas.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load is deprecated in newer torch
        torch.jit.load(str(scripted), _extra_files=extra)  # type: ignore[no-untyped-call]
    assert json.loads(extra["fpnas.json"])["fpnas.std"] == "[0.29]"
    code, _, err = run(capsys, "export", str(out), "-f", "json", "-o", str(tmp_path / "a.json"))
    assert code == 0, err
    doc = json.loads((tmp_path / "a.json").read_text())
    assert doc["preprocessing"]["fpnas.classes"] == "4"


def test_item_15_search_picture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """K ticks are whole numbers, accuracy spans 0-100 % with a chance line, legends sit
    outside the plots, a running epoch is drawn as far as it got."""
    from fpnas_dsl import show as show_module

    figures: list[Any] = []
    real_save: Callable[..., None] = show_module._save

    def keep(fig: Any, *args: Any, **kwargs: Any) -> None:
        figures.append(fig)
        real_save(fig, *args, **kwargs)

    monkeypatch.setattr(show_module, "_save", keep)
    rows = [{"type": "epoch", "epoch": e, "entropy": 9 - e, "k": 3 - e * 0.5, "val_acc": 0.26}
            for e in (1, 2)]  # fmt: skip
    iters = [
        {"type": "iter", "epoch": e, "step": s, "entropy": 9.0 - e, "k": 3}
        for e in (1, 2, 3)
        for s in range(10 if e < 3 else 4)
    ]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows + iters))
    (run_dir / "space.json").write_text(json.dumps({"classes": 4}))
    show_module.show(run_dir)
    (h_ax, k_ax, _, a_ax) = figures[-1].axes
    assert all(float(t).is_integer() for t in k_ax.get_yticks())
    assert a_ax.get_ylim() == (0.0, 100.0)
    chance = [line for line in a_ax.get_lines() if line.get_label() == "chance (1/4)"]
    assert chance and chance[0].get_ydata()[0] == pytest.approx(25.0)
    for ax in figures[-1].axes:
        legend = ax.get_legend()
        if legend is not None:  # below the plotting area, so it hides no line
            assert legend.get_bbox_to_anchor().y1 < ax.get_window_extent().y0
    iteration_line = next(line for line in h_ax.get_lines() if line.get_label() == "per iteration")
    assert max(iteration_line.get_xdata()) == pytest.approx(2.4)  # 4 of 10 steps of epoch 3
    assert any("epoch 3 running" in t.get_text() for t in h_ax.texts)


# --------------------------------------------------------------------------------------
# Every path argument of every subcommand, with every kind of bad file


BAD_KINDS = ("missing", "empty", "directory", "invalid-json", "binary")


def bad_path(tmp_path: Path, kind: str, suffix: str = "") -> str:
    path = tmp_path / f"bad-{kind}{suffix}"
    if kind == "empty":
        path.write_text("")
    elif kind == "directory":
        path.mkdir()
    elif kind == "invalid-json":
        path.write_text('{"blocks": [1, 2,, }')
    elif kind == "binary":
        path.write_bytes(bytes(range(256)) * 64 + b"\x89PNG\x00\xff")
    return str(path)


def _good(tmp_path: Path) -> dict[str, str]:
    full, _ = tiny_arch(tmp_path)
    return {"arch": str(full), "out": str(tmp_path / "out")}


#: subcommand argv with {bad} for the path under test and {arch}, {out} for good ones.
CASES: dict[str, list[str]] = {
    "compile SPACE": ["compile", "{bad}"],
    "cost SPACE": ["cost", "{bad}", "{arch}"],
    "cost ARCH": ["cost", TINY, "{bad}"],
    "search SPACE": ["search", "{bad}", "--target-flops", TARGET, "--out", "{out}", *QUICK],
    "search --config": ["search", TINY, "--target-flops", TARGET, "--config", "{bad}", *QUICK],
    "search --config .toml": ["search", TINY, "--target-flops", TARGET, "--config", "{bad}"],
    "search --resume": ["search", "--resume", "{bad}"],
    "search --data-dir": ["search", TINY, "--target-flops", TARGET, "--data-dir", "{bad}"],
    "search --data imagefolder": [
        "search",
        TINY,
        "--target-flops",
        TARGET,
        "--data",
        "imagefolder:{bad}",
    ],
    "export SOURCE": ["export", "{bad}", "-f", "json", "-o", "{out}.json"],
    "export --weights": [
        "export",
        "{arch}",
        "-f",
        "onnx",
        "-o",
        "{out}.onnx",
        "--weights",
        "{bad}",
    ],
    "export --space": ["export", "{arch}", "-f", "json", "-o", "{out}.json", "--space", "{bad}"],
    "train ARCH": ["train", "{bad}", "--out", "{out}", "--data", DATA],
    "train --resume": ["train", "--resume", "{bad}"],
    "train --data-dir": ["train", "{arch}", "--out", "{out}", "--data-dir", "{bad}"],
    "train --space": ["train", "{arch}", "--space", "{bad}", "--out", "{out}", "--data", DATA],
    "show SOURCE": ["show", "{bad}"],
    "show --space": ["show", "{arch}", "--space", "{bad}", "-o", "{out}"],
}


@pytest.mark.parametrize("kind", BAD_KINDS)
@pytest.mark.parametrize("case", list(CASES))
def test_every_path_argument(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, kind: str
) -> None:
    suffix = ".toml" if case.endswith(".toml") else ""
    values = {"bad": bad_path(tmp_path, kind, suffix), **_good(tmp_path)}
    argv = [a.format(**values) for a in CASES[case]]
    before = sorted(p.name for p in tmp_path.iterdir())
    code, _, err = run(capsys, *argv)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert lines and lines[0].startswith(f"fpnas {argv[0]}: "), err
    assert len(err) < 2000, err
    # Nothing was created beside the inputs: no run directory, no output file.
    assert sorted(p.name for p in tmp_path.iterdir()) == before


# ---- Issue 12: a fixed space is a first-class input ----------------------------------


def test_fixed_space_needs_no_architecture(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """cost, show and export take a fixed space (a bundled name or a .space path) alone."""
    assert main(["cost", "efficientnet_b0"]) == 0
    out = capsys.readouterr().out
    assert "(385,814,752)" in out and "(5,288,548)" in out
    assert main(["cost", str(TESTS.parent / "spaces" / "mobilenet_v3_large.space"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["flops"], doc["params"]) == (216_589_760, 5_483_032)
    prefix = tmp_path / "pics" / "v3"
    assert main(["show", "mobilenet_v3_large", "-o", str(prefix)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert sorted(p.name for p in prefix.parent.iterdir()) == ["v3.png", "v3.svg"]
    assert main(["compile", "efficientnet_b0"]) == 0
    text = capsys.readouterr().out
    assert "FLOPS (MACs)         385,814,752  (386M, exact)" in text
    assert "networks             1  (every architecture distinct)" in text


@pytest.mark.parametrize(
    "argv",
    [
        ["cost", "fbnetv2_f"],
        ["show", "fbnetv2_f"],
        ["export", "fbnetv2_f", "--format", "onnx", "-o", "OUT/x.onnx"],
        ["train", TINY, "--data", DATA, "--epochs", "1", "--out", "OUT/t"],
    ],
)
def test_search_space_without_an_architecture(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    """A space of many networks where one network is needed: exit 2, one line saying how
    many networks it holds and what to pass, nothing written."""
    argv = [a.replace("OUT", str(tmp_path)) for a in argv]
    line = one_line_error(capsys, argv)
    assert "is a search space of" in line and "not one network" in line
    assert "ARCH.json" in line or "arch.json" in line
    assert not list(tmp_path.iterdir())


def test_space_and_space_flag_together(capsys: pytest.CaptureFixture[str]) -> None:
    line = one_line_error(capsys, ["show", "mobilenet_v2", "--space", "mobilenet_v2"])
    assert "is a space; --space is for reading an arch.json" in line
