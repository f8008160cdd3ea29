"""The FP-NAS loop on synthetic data: the algorithm's behaviour, resume and guards."""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fpnas_dsl.cli import main
from fpnas_dsl.errors import FpnasError
from fpnas_dsl.search.checkpoint import load_checkpoint
from fpnas_dsl.search.config import make_config
from fpnas_dsl.search.importance import importance_weights, trained_samples
from fpnas_dsl.search.run import prepare_search

TINY = str(Path(__file__).parent / "data" / "tiny.space")
DATA = "synthetic:size=256,test_size=128,classes=4,resolution=16"
# Within the tiny space's FLOPS range at 16 px (checked by test_target_guard's numbers).
TARGET = 150_000


def settings(out: Path, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "space": TINY,
        "target_flops": TARGET,
        "data": DATA,
        "epochs": 3,
        "warmup_epochs": 1,
        "steps_per_epoch": 6,
        "batch_size": 16,
        "lam": 0.5,
        "alpha_lr": 0.2,
        "lr": 0.05,
        "eval_batches": 1,
        "threads": 1,
        "out": str(out),
    }
    values.update(overrides)
    return values


def run_search(out: Path, **overrides: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    search = prepare_search(make_config(settings(out, **overrides)))
    result = search.run(progress=False)
    return result, read_metrics(out)


def read_metrics(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def iters(metrics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in metrics if m["type"] == "iter"]


def epochs(metrics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in metrics if m["type"] == "epoch"]


def test_importance_weights_in_log_space() -> None:
    # Batch log-likelihoods of thousands of nats: a naive exp() underflows to 0/0.
    ll = np.array([-5000.0, -5001.0, -6000.0])
    m_omega, m_alpha = importance_weights(ll, np.array([0.0, 0.5, 1.5]), beta=0.3)
    assert m_omega.sum() == pytest.approx(1.0)
    assert m_omega[0] == pytest.approx(1 / (1 + math.exp(-1)))
    assert m_alpha == pytest.approx(m_omega - 0.3 * np.array([0.0, 0.25, 0.75]))
    # No cost anywhere: the cost term vanishes instead of dividing by zero.
    _, m_alpha = importance_weights(ll, np.zeros(3), beta=0.3)
    assert np.array_equal(m_alpha, importance_weights(ll, np.zeros(3), 0.3)[0])


def test_entropy_and_k_fall_after_warmup(tmp_path: Path) -> None:
    result, metrics = run_search(tmp_path / "run", epochs=4, alpha_lr=0.3)
    its = iters(metrics)
    warm = [m for m in its if m["epoch"] == 1]
    assert not any(m["alpha_updated"] for m in warm)
    assert len({round(m["entropy"], 12) for m in warm}) == 1  # alpha frozen in warm-up
    assert its[-1]["entropy"] < warm[-1]["entropy"] - 1.0
    assert its[-1]["k"] < warm[-1]["k"]
    for name in ("arch.json", "top5.json", "config.json", "space.json", "checkpoint.pt"):
        assert (tmp_path / "run" / name).is_file(), name
    arch = json.loads((tmp_path / "run" / "arch.json").read_text())
    assert arch["flops"] == result["flops"] and "accuracy" in arch and arch["space"] == "tiny"
    top5 = json.loads((tmp_path / "run" / "top5.json").read_text())
    assert [t["rank"] for t in top5] == [1, 2, 3, 4, 5]
    assert all(a["log_prob"] >= b["log_prob"] for a, b in itertools.pairwise(top5))
    assert len(epochs(metrics)) == 4 and all("val_acc" in e for e in epochs(metrics))


def test_cost_pressure_lowers_expected_flops(tmp_path: Path) -> None:
    # The hinge term pushes by relative cost (C_k / sum C), so the pull is gentle.
    _, metrics = run_search(tmp_path / "run", epochs=4, beta=5.0, alpha_lr=0.5, target_flops=60_000)
    expected = [e["expected_flops"] for e in epochs(metrics)]
    assert expected[-1] < 0.97 * expected[0], expected


def test_fixed_sampling_keeps_k(tmp_path: Path) -> None:
    _, metrics = run_search(tmp_path / "run", sampling="fixed", k=3, distribution="joint")
    assert {m["k"] for m in iters(metrics)} == {3}


def test_mixed_schedule_converts_without_entropy_jump(tmp_path: Path) -> None:
    _, metrics = run_search(tmp_path / "run", epochs=3, convert_epoch=2)
    summaries = epochs(metrics)
    converted = [e for e in summaries if e.get("converted_to_joint")]
    assert [e["epoch"] for e in converted] == [2]
    assert converted[0]["entropy_after_conversion"] == pytest.approx(
        converted[0]["entropy"], abs=1e-9
    )
    assert summaries[0]["modes"] == ["factorized"] and summaries[2]["modes"] == ["joint"]
    assert summaries[2]["alpha_params"] > summaries[0]["alpha_params"]


def cli(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    # Run outside the checkout so that `-m fpnas_dsl` imports the installed package
    # (with its compiled core), not the source tree.
    return subprocess.run(
        [sys.executable, "-m", "fpnas_dsl", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
    )


def cli_args(out: Path, **overrides: Any) -> list[str]:
    args = ["search", TINY, "--no-progress"]
    for key, value in settings(out, **overrides).items():
        if key != "space":
            args += [f"--{key.replace('_', '-')}", str(value)]
    return args


def final_state(run: Path) -> tuple[np.ndarray, list[Any]]:
    state = load_checkpoint(run)
    logits = np.asarray(state["distribution"]["logits"])
    return logits, json.loads((run / "arch.json").read_text())["blocks"]


def wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, "the run ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.02)


@pytest.mark.parametrize("how", ["sigkill", "sigint"])
def test_interrupted_and_resumed_equals_uninterrupted(tmp_path: Path, how: str) -> None:
    overrides = {"epochs": 3, "steps_per_epoch": 12}
    done = cli(*cli_args(tmp_path / "straight", **overrides), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run = tmp_path / "stopped"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fpnas_dsl", *cli_args(run, **overrides)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    if how == "sigkill":
        wait_for(run / "checkpoint.pt", proc)  # written at the end of epoch 1
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    else:
        wait_for(run / "metrics.jsonl", proc)
        while proc.poll() is None and len(read_metrics(run)) < 3:
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130 and "resume with: fpnas search --resume" in err
        assert load_checkpoint(run)["step"] > 0  # saved mid-epoch
    resumed = cli("search", "--resume", str(run), "--no-progress", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    straight_logits, straight_blocks = final_state(tmp_path / "straight")
    logits, blocks = final_state(run)
    assert np.array_equal(logits, straight_logits)
    assert blocks == straight_blocks
    assert [m for m in read_metrics(run) if m["type"] == "epoch"][-1]["samples"] == [
        m for m in read_metrics(tmp_path / "straight") if m["type"] == "epoch"
    ][-1]["samples"]


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().err


def test_target_guard(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for target in ("1", "1e12"):
        code, err = run_cli(capsys, *cli_args(tmp_path / "r", target_flops=target))
        assert code == 2 and "outside the space's range" in err and "FLOPS" in err
        assert "Traceback" not in err


def test_cuda_guard(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    code, err = run_cli(capsys, *cli_args(tmp_path / "r", device="cuda"))
    assert code == 2 and "no CUDA GPU" in err


def test_non_finite_loss_stops_with_last_good_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    search = prepare_search(make_config(settings(tmp_path / "run", epochs=2)))
    calls = {"n": 0}
    real = torch.nn.functional.cross_entropy

    def poisoned(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return (
            loss * float("nan")
            if search.position.epoch == 2 and kwargs.get("reduction") != "sum"
            else loss
        )

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", poisoned)
    with pytest.raises(FpnasError, match=r"non-finite training loss .* at epoch 2, step 1"):
        search.run(progress=False)
    state = load_checkpoint(tmp_path / "run")
    assert (state["epoch"], state["step"]) == (2, 0)
    assert all(torch.isfinite(t).all() for t in state["supernet"].values() if t.is_floating_point())


def test_corrupt_and_foreign_checkpoints_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    small = {"epochs": 2, "steps_per_epoch": 2}
    assert run_cli(capsys, *cli_args(tmp_path / "a", **small))[0] == 0
    assert run_cli(capsys, *cli_args(tmp_path / "b", resolution=20, **small))[0] == 0
    foreign = tmp_path / "foreign"
    shutil.copytree(tmp_path / "a", foreign)
    shutil.copy(tmp_path / "b" / "checkpoint.pt", foreign / "checkpoint.pt")
    code, err = run_cli(capsys, "search", "--resume", str(foreign))
    assert code == 2 and "checkpoint of another space" in err
    corrupt = tmp_path / "corrupt"
    shutil.copytree(tmp_path / "a", corrupt)
    data = (corrupt / "checkpoint.pt").read_bytes()
    (corrupt / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    code, err = run_cli(capsys, "search", "--resume", str(corrupt))
    assert code == 2 and "corrupt or unreadable checkpoint" in err
    code, err = run_cli(capsys, "search", "--resume", str(tmp_path / "nowhere"))
    assert code == 2 and "not a search run directory" in err


def test_missing_data_is_one_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_cli(
        capsys,
        "search",
        TINY,
        "--target-flops",
        "1e5",
        "--data-dir",
        str(tmp_path),
        "--out",
        str(tmp_path / "r"),
    )
    assert code == 2 and "apt-get install -y dataset-fashion-mnist" in err
    assert err.count("\n") == 1


def test_config_file_and_flags(tmp_path: Path) -> None:
    from fpnas_dsl.cli import build_parser
    from fpnas_dsl.commands.search import settings_from

    cfg = tmp_path / "search.toml"
    cfg.write_text('epochs = 5\nbeta = 0.7\ndistribution = "joint"\n')
    args = build_parser().parse_args(
        ["search", TINY, "--config", str(cfg), "--beta", "0.1", "--target-flops", "1e5"]
    )
    values = settings_from(args)
    assert values["epochs"] == 5 and values["beta"] == 0.1 and values["distribution"] == "joint"
    assert os.fspath(values["space"]) == TINY


def test_trained_samples() -> None:
    m = np.array([0.6, 1e-4, 0.3999, 0.0, 1e-7])
    assert trained_samples(m, 0.0) == ([0, 1, 2, 3, 4], 0.0)
    keep, skipped = trained_samples(m, 1e-3)
    assert keep == [0, 2] and skipped == pytest.approx(1e-4 + 1e-7)


def test_tolerance_zero_is_the_full_loop(tmp_path: Path) -> None:
    """With skip_below 0 an iteration is Algorithm 1 as printed: every sample's training
    pass, weighted by m_omega, accumulated in order; checked against a reference written
    here, to the last bit of every weight."""
    search = prepare_search(
        make_config(settings(tmp_path / "run", skip_below=0.0, warmup_training="weighted"))
    )
    reference = copy.deepcopy(search.supernet)
    ref_opt = torch.optim.SGD(
        reference.parameters(), lr=0.05, momentum=0.9, weight_decay=search.config.weight_decay
    )
    dist_state = search.dist.state_dict()
    x_train, y_train, x_val, y_val = next(iter(search._epoch_batches(1)))
    record = search.iteration(1, x_train, y_train, x_val, y_val)
    assert record["trained"] == record["k"] and record["skipped_weight"] == 0.0

    search.dist.load_state_dict(dist_state)  # the same K samples again
    archs = search.dist.sample(record["k"])
    reference.train()
    with torch.no_grad():
        ll = [-float(F.cross_entropy(reference(x_val, a), y_val, reduction="sum")) for a in archs]
    m = np.exp(np.array(ll) - max(ll))
    m /= m.sum()
    ref_opt.zero_grad(set_to_none=True)
    for i, a in enumerate(archs):
        (F.cross_entropy(reference(x_train, a), y_train) * float(m[i])).backward()
    ref_opt.step()
    for (name, p), q in zip(
        search.supernet.named_parameters(), reference.parameters(), strict=True
    ):
        assert torch.equal(p, q), name
    for (name, b), c in zip(search.supernet.named_buffers(), reference.buffers(), strict=True):
        assert torch.equal(b, c), name


@pytest.mark.parametrize("epochs", [2, 4])
def test_skipping_saves_passes_and_keeps_the_result(tmp_path: Path, epochs: int) -> None:
    """Skipping passes below 1e-3 changes alpha by little after one epoch of alpha updates
    (the runs then drift apart as noisy searches do) and finds the same architecture."""
    overrides = {"epochs": epochs, "steps_per_epoch": 10, "lam": 1.0, "lr": 0.2, "alpha_lr": 0.1}
    _, full = run_search(tmp_path / "full", skip_below=0.0, **overrides)
    _, skipping = run_search(tmp_path / "skip", skip_below=1e-3, **overrides)
    trained_full = sum(m["trained"] for m in iters(full))
    trained_skip = sum(m["trained"] for m in iters(skipping))
    assert trained_full == sum(m["k"] for m in iters(full))
    assert trained_skip < trained_full
    assert all(m["skipped_weight"] < m["k"] * 1e-3 for m in iters(skipping))
    # Uniform warm-up: every pass weighs 1/K and runs.
    assert all(m["trained"] == m["k"] for m in iters(skipping) if m["epoch"] == 1)
    full_logits, full_blocks = final_state(tmp_path / "full")
    skip_logits, skip_blocks = final_state(tmp_path / "skip")
    if epochs == 2:
        assert np.abs(full_logits - skip_logits).max() < 0.1
    assert full_blocks == skip_blocks


def test_run_files_hold_no_machine_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fpnas_dsl.parser import load_space
    from fpnas_dsl.search.checkpoint import space_digest

    work = tmp_path / "work"
    (work / "spaces").mkdir(parents=True)
    shutil.copy(TINY, work / "spaces" / "tiny.space")
    monkeypatch.chdir(work)
    run_search(Path("run"), space="spaces/tiny.space", epochs=2)
    for path in sorted((work / "run").iterdir()):
        if path.suffix in (".json", ".jsonl"):
            assert str(tmp_path) not in path.read_text(), path.name
    spans = json.loads((work / "run" / "arch.json").read_text())["ir"]["span"]
    assert spans["file"] == "spaces/tiny.space"
    # A bundled space is named, not located; an absolute path elsewhere keeps its file name.
    assert load_space("fpnas_28px").portable_dump()["source"] == "fpnas_28px"
    assert load_space(TINY).portable_dump()["span"]["file"] == "tiny.space"
    # The checkpoint's digest does not depend on where the file was read from.
    assert space_digest(load_space(TINY)) == space_digest(load_space("spaces/tiny.space"))
