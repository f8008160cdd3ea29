"""`fpnas search` under torchrun: 2 processes on the CPU (gloo), synthetic data, the tiny
space. Every launch has a timeout after which its whole process tree is killed, and
torchrun's --standalone rendezvous takes a free port, so no test can hang."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_search import TINY, cli_args, iters, read_metrics

from fpnas_dsl.distribution import Distribution
from fpnas_dsl.parser import load_space
from fpnas_dsl.search.checkpoint import load_checkpoint

WORKER = str(Path(__file__).parent / "distributed_worker.py")
#: 3 epochs of 8 iterations: the warm-up, one alpha epoch in FD, then FD -> JD.
OVERRIDES: dict[str, Any] = {"epochs": 3, "steps_per_epoch": 8, "convert_epoch": 2}
ITERATIONS = 3 * 8
LIMIT = 300  # seconds any one launch may take


def launcher(nproc: int | None, *args: str) -> list[str]:
    """torchrun with `nproc` processes (None: one plain process, no torchrun)."""
    if nproc is None:
        return [sys.executable, *args]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        *args,
    ]


def descendants(pid: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def rank_pid(launcher_pid: int, rank: int) -> int:
    for pid in descendants(launcher_pid):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and b"TORCHELASTIC_RUN_ID" in b" ".join(env):
            return pid
    raise AssertionError(f"no process of rank {rank} under {launcher_pid}")


@contextmanager
def launched(
    cmd: list[str], cwd: Path, log: Path, **env_vars: str
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `cmd` with its output in `log`; whatever happens, kill what is left of it."""
    # PYTHONFAULTHANDLER: a rank that aborts prints where it was.
    settings = {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"}
    env = {**os.environ, **settings, **env_vars}
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            for pid in [*descendants(proc.pid), proc.pid]:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            proc.wait()


def run(cmd: list[str], cwd: Path, log: Path, **env_vars: str) -> int:
    with launched(cmd, cwd, log, **env_vars) as proc:
        try:
            return proc.wait(timeout=LIMIT)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{cmd} ran past {LIMIT} s:\n{log.read_text()}") from None


def wait_iterations(run_dir: Path, proc: subprocess.Popen[bytes], count: int) -> None:
    deadline = time.monotonic() + LIMIT
    metrics = run_dir / "metrics.jsonl"
    while not metrics.exists() or len(iters(read_metrics(run_dir))) < count:
        assert proc.poll() is None, "the run ended before it could be stopped"
        assert time.monotonic() < deadline
        time.sleep(0.05)


def recorded_run(tmp: Path, **overrides: Any) -> Path:
    """2 processes through the recording worker; the run directory is tmp/run."""
    args = cli_args(tmp / "run", **{**OVERRIDES, **overrides})
    code = run(launcher(2, WORKER, str(tmp), *args), tmp, tmp / "log")
    assert code == 0, (tmp / "log").read_text()
    return tmp


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return recorded_run(tmp_path_factory.mktemp("straight"))


def check_identical_ranks(tmp: Path, iterations: int) -> list[np.ndarray]:
    a0, a1 = np.load(tmp / "alpha0.npz"), np.load(tmp / "alpha1.npz")
    assert len(a0.files) == len(a1.files) == iterations
    alphas = [a0[f"arr_{i}"] for i in range(iterations)]
    for i, alpha in enumerate(alphas):
        assert alpha.dtype == np.float64
        assert np.array_equal(alpha, a1[f"arr_{i}"]), f"ranks differ after iteration {i + 1}"
    r0 = json.loads((tmp / "result0.json").read_text())
    r1 = json.loads((tmp / "result1.json").read_text())
    r0.pop("wall_seconds"), r1.pop("wall_seconds")  # each rank's own clock
    assert r0 == r1  # the same argmax, weights (digest), accuracy, FLOPS
    arch = json.loads((tmp / "run" / "arch.json").read_text())
    assert arch["flops"] == r0["flops"] and arch["accuracy"] == r0["accuracy"]
    return alphas


def test_alpha_is_bitwise_identical_on_both_ranks(straight: Path) -> None:
    alphas = check_identical_ranks(straight, ITERATIONS)
    assert np.array_equal(alphas[0], alphas[7])  # the warm-up epoch leaves alpha alone
    assert not np.array_equal(alphas[8], alphas[15])  # then it moves,
    assert alphas[-1].size > alphas[0].size  # and FD became JD after epoch 2


def test_only_rank_0_writes_and_prints(straight: Path) -> None:
    metrics = read_metrics(straight / "run")
    positions = [(m["epoch"], m["step"]) for m in iters(metrics)]
    assert positions == [(e, s) for e in (1, 2, 3) for s in range(8)]
    assert [m["epoch"] for m in metrics if m["type"] == "epoch"] == [1, 2, 3]
    log = (straight / "log").read_text()
    assert log.count("fpnas search: run directory") == 1 and log.count('"run_dir"') == 1
    assert log.count("building the supernet") == 1
    assert (straight / "run" / "tensorboard").is_dir()


def test_fixed_sampling_factorized_weighted_with_skipping(tmp_path: Path) -> None:
    tmp = recorded_run(
        tmp_path,
        epochs=2,
        steps_per_epoch=6,
        sampling="fixed",
        k=4,
        distribution="factorized",
        warmup_training="weighted",
        skip_below=0.2,
        lr=0.2,
    )
    check_identical_ranks(tmp, 12)
    its = iters(read_metrics(tmp / "run"))
    assert {m["k"] for m in its} == {4}
    assert sum(m["trained"] for m in its) < sum(m["k"] for m in its)  # passes were skipped


def interrupted(nproc: int | None, tmp: Path, name: str) -> Path:
    """A run stopped with Ctrl-C (SIGINT to the launcher) after a few iterations."""
    run_dir = tmp / name
    cmd = launcher(nproc, "-m", "fpnas_dsl", *cli_args(run_dir, **OVERRIDES))
    log = tmp / f"{name}.log"
    with launched(cmd, tmp, log) as proc:
        wait_iterations(run_dir, proc, 3)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=LIMIT)
    text = log.read_text()
    assert text.count("interrupted at epoch") == 1, text  # said once, by rank 0
    assert f"resume with: fpnas search --resume {run_dir}" in text
    if nproc is None:
        assert proc.returncode == 130
    state = load_checkpoint(run_dir)
    assert (state["epoch"], state["step"]) > (1, 0)  # saved mid-epoch 1 or later
    return run_dir


def resume(nproc: int | None, run_dir: Path) -> None:
    cmd = launcher(nproc, "-m", "fpnas_dsl", "search", "--resume", str(run_dir), "--no-progress")
    log = run_dir.parent / f"{run_dir.name}-resume.log"
    assert run(cmd, run_dir.parent, log) == 0, log.read_text()


def final(run_dir: Path) -> tuple[np.ndarray, Any]:
    logits = np.asarray(load_checkpoint(run_dir)["distribution"]["logits"])
    return logits, json.loads((run_dir / "arch.json").read_text())["blocks"]


def check_continued(run_dir: Path, state: dict[str, Any], reference: Path) -> None:
    """The resumed run went on from the checkpoint: every iteration once, in order; the
    first one after it started from the checkpoint's alpha and learning rate."""
    its = iters(read_metrics(run_dir))
    assert [(m["epoch"], m["step"]) for m in its] == [(e, s) for e in (1, 2, 3) for s in range(8)]
    first = its[(state["epoch"] - 1) * 8 + state["step"]]
    space = load_space(TINY, resolution=16, in_channels=1, classes=4)
    dist = Distribution(space.layout.cardinalities)
    dist.load_state_dict(state["distribution"])
    assert first["entropy"] == dist.entropy()
    ref = iters(read_metrics(reference))
    assert [m["lr"] for m in its] == [m["lr"] for m in ref]  # the schedule ignores N
    assert json.loads((run_dir / "arch.json").read_text())["samples"] == sum(m["k"] for m in its)


def test_ctrl_c_then_resume_on_two_and_on_one_process(straight: Path, tmp_path: Path) -> None:
    stopped = interrupted(2, tmp_path, "stopped")
    state = load_checkpoint(stopped)
    as_one = tmp_path / "as_one"
    shutil.copytree(stopped, as_one)
    # Same number of processes: bit for bit the run that was never stopped.
    resume(2, stopped)
    straight_logits, straight_blocks = final(straight / "run")
    logits, blocks = final(stopped)
    assert np.array_equal(logits, straight_logits) and blocks == straight_blocks
    # One process goes on from the 2-process checkpoint.
    resume(None, as_one)
    check_continued(as_one, state, straight / "run")


def test_one_process_run_resumes_on_two(straight: Path, tmp_path: Path) -> None:
    stopped = interrupted(None, tmp_path, "alone")
    state = load_checkpoint(stopped)
    resume(2, stopped)
    check_continued(stopped, state, straight / "run")


def long_run(tmp: Path, *extra: str) -> tuple[list[str], Path]:
    run_dir = tmp / "run"
    args = cli_args(run_dir, **{**OVERRIDES, "steps_per_epoch": 200})
    return launcher(2, "-m", "fpnas_dsl", *args, *extra), run_dir


def test_killed_rank_ends_the_job_with_its_name(tmp_path: Path) -> None:
    cmd, run_dir = long_run(tmp_path, "--timeout", "20")
    log = tmp_path / "log"
    with launched(cmd, tmp_path, log) as proc:
        wait_iterations(run_dir, proc, 3)
        os.kill(rank_pid(proc.pid, 1), signal.SIGKILL)
        start = time.monotonic()
        code = proc.wait(timeout=LIMIT)
        elapsed = time.monotonic() - start
    text = log.read_text()
    assert code != 0 and elapsed < 20, (elapsed, text)
    assert "rank 1" in text or "rank      : 1" in text, text


def test_hung_rank_is_named_within_the_timeout(tmp_path: Path) -> None:
    cmd, run_dir = long_run(tmp_path, "--timeout", "5")
    log = tmp_path / "log"
    message = "fpnas search: rank 0: rank 1"
    with launched(cmd, tmp_path, log) as proc:
        wait_iterations(run_dir, proc, 3)
        hung = rank_pid(proc.pid, 1)
        os.kill(hung, signal.SIGSTOP)  # alive but silent: only the timeout can tell
        start = time.monotonic()
        try:
            while message not in log.read_text() and time.monotonic() - start < 60:
                time.sleep(0.1)
            named = time.monotonic() - start
        finally:
            # torchrun now sends SIGTERM to rank 1; a stopped process takes it only once
            # it runs again (else torchrun waits 30 s before SIGKILL), a hung one at once.
            os.kill(hung, signal.SIGCONT)
        code = proc.wait(timeout=LIMIT)
        ended = time.monotonic() - start
    text = log.read_text()
    # Rank 0's collective gives up after the 5 s timeout and names the silent rank.
    assert message in text and "timeout of 5 s" in text, text
    assert 4 < named < 20 and code != 0 and ended < 30, (named, ended, text)


def test_the_ranks_parts_make_up_each_batch() -> None:
    from fpnas_dsl.data import TensorImageSet, batches
    from fpnas_dsl.search.distributed import Shard

    images = torch.arange(40, dtype=torch.uint8).view(40, 1, 1, 1)
    data = TensorImageSet(images, torch.arange(40))
    whole = [y for _, y in batches(data, 8, seed=3, epoch=2)]
    parts = [[y for _, y in batches(Shard(data, r, 2), 8, seed=3, epoch=2)] for r in (0, 1)]
    for b, y in enumerate(whole):
        assert torch.equal(torch.cat([parts[0][b], parts[1][b]]), y)  # in order, disjoint
    # From batch 3 on (a resumed epoch), the same parts.
    later = [y for _, y in batches(Shard(data, 1, 2), 8, seed=3, epoch=2, start=3)]
    assert all(torch.equal(a, b) for a, b in zip(later, parts[1][3:], strict=True))


def test_a_setting_refused_on_rank_0_is_said_once(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = cli_args(run_dir, **{**OVERRIDES, "batch_size": 15})
    code = run(launcher(2, "-m", "fpnas_dsl", *args), tmp_path, tmp_path / "log")
    text = (tmp_path / "log").read_text()
    assert code != 0 and not run_dir.exists()
    message = "fpnas search: --batch-size 15 is the global batch and does not split over 2"
    assert text.count(message) == 1, text


def test_ranks_that_drift_apart_are_stopped(tmp_path: Path) -> None:
    args = cli_args(tmp_path / "run", **OVERRIDES)
    log = tmp_path / "log"
    code = run(launcher(2, WORKER, str(tmp_path), *args), tmp_path, log, NUDGE_RANK="1")
    text = log.read_text()
    assert code != 0
    assert text.count("the ranks no longer agree on alpha and the weights after epoch 1") == 1
