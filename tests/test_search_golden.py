"""Fixed-seed searches against references kept from before the search's code was
reorganised (tests/make_search_golden.py, tests/data/search_golden/): every record (time
fields aside), alpha, theta and every checkpoint tensor bitwise equal, for FP-NAS
adaptive mixed, PARSEC fixed-K JD, FD only (each with skipping and without) and DNAS, on
one process and on two under torchrun (gloo); and a checkpoint written by the old code
resumes to the uninterrupted run's records."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import make_search_golden as golden
import pytest

LIMIT = 300  # seconds any one launch may take


def reference(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((golden.GOLDEN / f"{name}.json").read_text())
    return doc


def launch(world: int, out: Path) -> None:
    me = str(Path(golden.__file__).resolve())
    cmd = [sys.executable, me, "run", str(out)]
    if world > 1:
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        cmd = [*torchrun, f"--nproc-per-node={world}", me, "run", str(out), "--world", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=LIMIT)
    assert done.returncode == 0, done.stderr[-4000:]


@pytest.fixture(scope="module", params=[1, 2], ids=["one-process", "torchrun-2"])
def runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp(f"w{request.param}")
    launch(request.param, out)
    return out


def compare(got: dict[str, Any], want: dict[str, Any], name: str) -> None:
    assert got.keys() == want.keys()
    for i, (a, b) in enumerate(zip(got["records"], want["records"], strict=True)):
        assert a == b, f"{name}: record {i + 1} differs"
    for key in ("result", "alpha", "theta", "top5"):
        assert got[key] == want[key], f"{name}: {key} differs"
    assert got["checkpoint"].keys() == want["checkpoint"].keys(), name
    differ = [k for k, v in want["checkpoint"].items() if got["checkpoint"][k] != v]
    assert not differ, f"{name}: checkpoint entries differ: {differ[:8]}"


def test_every_case_is_bitwise_the_reference(runs: Path) -> None:
    world = int(runs.name[1])
    names = list(golden.cases(world))
    assert len(names) == (7 if world == 1 else 6)
    for name in names:
        compare(json.loads((runs / f"{name}.json").read_text()), reference(name), name)


def test_skipping_is_exercised() -> None:
    """The skipping cases skip passes, so that the comparison covers that path."""
    for world in (1, 2):
        records = reference(f"fpnas-skip-w{world}")["records"]
        assert any(r["type"] == "iter" and r["trained"] < r["k"] for r in records)
        records = reference(f"parsec-skip-w{world}")["records"]
        assert any(r["type"] == "iter" and r["trained"] < r["k"] for r in records)


def test_a_checkpoint_of_the_old_code_resumes_to_the_same_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from fpnas_dsl.cli import main
    from fpnas_dsl.search.checkpoint import load_checkpoint

    shutil.copy(golden.TINY_SPACE, tmp_path / golden.TINY_SPACE.name)
    shutil.copytree(golden.GOLDEN / "old_run", tmp_path / "old_run")
    state = load_checkpoint(tmp_path / "old_run")
    assert (state["epoch"], state["step"]) == (2, 1)  # written mid-epoch by the old code
    monkeypatch.chdir(tmp_path)
    assert main(["search", "--resume", "old_run", "--no-progress"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out[out.index("{") :])
    got = golden.summarise(tmp_path / "old_run", result)
    compare(got, reference("fpnas-skip-w1"), "resumed old run")
