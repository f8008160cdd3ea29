"""Reference results of tiny fixed-seed searches, for tests/test_search_golden.py.

    python tests/make_search_golden.py write       # regenerate tests/data/search_golden/
    python tests/make_search_golden.py run OUT     # run every case, write OUT/<case>.json
    torchrun --nproc-per-node 2 tests/make_search_golden.py run OUT --world 2

A case is one `fpnas search` of a narrow tiny space (`mini.space`) on synthetic data
(3 epochs of 3 steps, batch 16, one thread). What is kept of it is what must not change
when the search's code is reorganised: every metrics record with its time fields removed
(JSON floats round-trip exactly), the result without its wall time, alpha (the
distribution's logits) and theta (DNAS), and a sha256 of every tensor of the final
checkpoint by its key path (its other values as they are, its clock and metrics offset
aside).

`write` also keeps `old_run/`: a run directory of the FP-NAS case stopped (as Ctrl-C
stops it) after its fourth iteration, mid-epoch 2, whose checkpoint.pt the test resumes
with the current code. Regenerate only on purpose: the references are what the test
holds the code to.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "data" / "search_golden"
#: The tiny space made narrower (its checkpoint is kept: 0.2 MB).
TINY_SPACE = GOLDEN / "mini.space"
DATA = "synthetic:size=256,test_size=128,classes=4,resolution=16"

#: Settings of every case (flags of `fpnas search`).
BASE: dict[str, Any] = {
    "target_flops": 60_000,
    "data": DATA,
    "epochs": 3,
    "warmup_epochs": 1,
    "steps_per_epoch": 3,
    "batch_size": 16,
    "lam": 0.5,
    "alpha_lr": 0.2,
    "lr": 0.05,
    "eval_batches": 1,
    "convert_epoch": 2,
    "threads": 1,
}
#: The strategies; each sampled one with skipping (a tolerance that skips passes in
#: these tiny runs, where m_omega is near 1/K) and without (0).
STRATEGIES: dict[str, dict[str, Any]] = {
    "fpnas": {"sampling": "adaptive", "distribution": "mixed"},
    "parsec": {"sampling": "fixed", "k": 4, "distribution": "joint"},
    "fd": {"sampling": "adaptive", "distribution": "factorized"},
}
SKIPS = {"skip": 0.25, "noskip": 0.0}
#: DNAS refuses torchrun, and has no training passes to skip.
DNAS: dict[str, Any] = {"strategy": "dnas", "alpha_lr": 0.05}
#: Record fields that are clock readings.
TIME_FIELDS = ("wall", "t_core", "t_fwd_bwd", "time_split", "wall_seconds")
#: Checkpoint values that are clock readings or depend on them (metrics bytes: the
#: records hold times).
CLOCK_KEYS = ("wall", "metrics_bytes")
#: The old run: stopped before this iteration (1-based, over the whole run).
STOP_BEFORE = 5


def cases(world: int) -> dict[str, dict[str, Any]]:
    out = {
        f"{name}-{skip}": {**BASE, **settings, "skip_below": value}
        for name, settings in STRATEGIES.items()
        for skip, value in SKIPS.items()
    }
    if world == 1:
        out["dnas"] = {**BASE, **DNAS}
    return {f"{key}-w{world}": value for key, value in out.items()}


def cli_args(settings: dict[str, Any], out: str) -> list[str]:
    args = ["search", TINY_SPACE.name, "--no-progress", "--out", out]
    for key, value in settings.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args


def strip_times(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in TIME_FIELDS}


def digest(value: Any) -> Any:
    """A tensor or array as dtype, shape and the sha256 of its bytes; else the value."""
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        return f"{t.dtype} {list(t.shape)} {hashlib.sha256(raw).hexdigest()}"
    if isinstance(value, np.ndarray):
        a = np.ascontiguousarray(value)
        return f"{a.dtype} {list(a.shape)} {hashlib.sha256(a.tobytes()).hexdigest()}"
    return value


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Every leaf of a checkpoint by its key path (`supernet/stem.0.weight`)."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}{key}/"))
        return out
    if isinstance(node, (list, tuple)) and any(
        isinstance(v, (dict, list, tuple, torch.Tensor, np.ndarray)) for v in node
    ):
        out = {}
        for i, value in enumerate(node):
            out.update(flatten(value, f"{prefix}{i}/"))
        return out
    value = digest(node)
    if isinstance(value, tuple):
        value = list(value)
    return {prefix.rstrip("/"): value}


def as_list(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def summarise(run_dir: Path, result: dict[str, Any]) -> dict[str, Any]:
    """What a case keeps (see the module's docstring)."""
    state = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)
    records = [
        strip_times(json.loads(line))
        for line in (run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    alpha = {k: as_list(state["distribution"][k]) for k in ("modes", "logits")}
    theta = as_list(state.get("strategy", {}).get("theta"))
    tensors = {key: value for key, value in flatten(state).items() if key not in CLOCK_KEYS}
    return {
        "records": records,
        "result": strip_times({k: v for k, v in result.items() if k != "run_dir"}),
        "alpha": alpha,
        "theta": theta,
        "checkpoint": tensors,
        "top5": json.loads((run_dir / "top5.json").read_text()),
    }


def run_case(name: str, settings: dict[str, Any], work: Path) -> dict[str, Any]:
    """One search through the CLI in this process (every rank of a torchrun)."""
    import contextlib
    import io

    from fpnas_dsl.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(cli_args(settings, name))
    if code != 0:
        raise SystemExit(f"case {name} failed with exit code {code}")
    text = out.getvalue()
    result = json.loads(text[text.index("{") :]) if "{" in text else {}
    return summarise(work / name, result) if result else {}


def shared_group() -> None:
    """Under torchrun: one process group for every case (each search would end it)."""
    from fpnas_dsl.search import distributed

    group = distributed.join(distributed.DEFAULT_TIMEOUT)
    close = type(group).close
    type(group).close = lambda self: None  # type: ignore[method-assign]
    distributed.join = lambda timeout=distributed.DEFAULT_TIMEOUT: group  # type: ignore[assignment]
    import atexit

    atexit.register(lambda: close(group))


def run_all(out: Path, world: int, only: list[str] | None) -> None:
    """Run the cases in `out` (its working directory: the space is copied there)."""
    out.mkdir(parents=True, exist_ok=True)
    rank = int(os.environ.get("RANK", "0"))
    if rank == 0 and not (out / TINY_SPACE.name).exists():
        shutil.copy(TINY_SPACE, out / TINY_SPACE.name)
    if world > 1:
        shared_group()
    os.chdir(out)
    for name, settings in cases(world).items():
        if only and name not in only:
            continue
        if rank == 0:
            shutil.rmtree(out / name, ignore_errors=True)
        summary = run_case(name, settings, out)
        if rank == 0:
            (out / f"{name}.json").write_text(json.dumps(summary) + "\n")


def stopped_run(out: Path) -> None:
    """The FP-NAS case stopped before iteration `STOP_BEFORE`, as Ctrl-C stops it."""
    from fpnas_dsl.cli import main
    from fpnas_dsl.search.loop import Search

    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(TINY_SPACE, out / TINY_SPACE.name)
    os.chdir(out)
    real = Search.iteration
    count = {"n": 0}

    def iteration(self: Search, *args: Any, **kwargs: Any) -> dict[str, Any]:
        count["n"] += 1
        if count["n"] == STOP_BEFORE - 1:
            os.kill(os.getpid(), signal.SIGINT)  # honoured at the next boundary
        return real(self, *args, **kwargs)

    Search.iteration = iteration  # type: ignore[method-assign]
    code = main(cli_args(cases(1)["fpnas-skip-w1"], "old_run"))
    if code != 130:
        raise SystemExit(f"the stopped run ended with {code}, not 130")


def write() -> None:
    """Regenerate tests/data/search_golden/ from the code as it stands."""
    import tempfile

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    me = str(Path(__file__).resolve())
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        subprocess.run([sys.executable, me, "run", str(work / "w1")], check=True, env=env)
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        subprocess.run(
            [*torchrun, "--nproc-per-node=2", me, "run", str(work / "w2"), "--world", "2"],
            check=True,
            env=env,
        )
        subprocess.run([sys.executable, me, "stopped", str(work / "stopped")], check=True, env=env)
        for old in GOLDEN.glob("*-w[12].json"):
            old.unlink()
        shutil.rmtree(GOLDEN / "old_run", ignore_errors=True)
        for world in (1, 2):
            for name in cases(world):
                shutil.copy(work / f"w{world}" / f"{name}.json", GOLDEN / f"{name}.json")
        old = work / "stopped" / "old_run"
        (GOLDEN / "old_run").mkdir()
        for item in ("checkpoint.pt", "config.json", "space.json", "metrics.jsonl"):
            shutil.copy(old / item, GOLDEN / "old_run" / item)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("write", "run", "stopped"))
    parser.add_argument("out", nargs="?", type=Path)
    parser.add_argument("--world", type=int, default=1)
    parser.add_argument("--only", nargs="*")
    args = parser.parse_args()
    if args.what == "write":
        write()
    elif args.what == "run":
        run_all(args.out.resolve(), args.world, args.only)
    else:
        stopped_run(args.out.resolve())


if __name__ == "__main__":
    main()
