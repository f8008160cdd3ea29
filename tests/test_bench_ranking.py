"""bench/ranking.py: its statistics, the within-band draws, the supernet scores, and a
rerun that continues instead of training again (on a tiny search run made here)."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from scipy import stats

from fpnas_dsl import cost
from fpnas_dsl.cli import main as fpnas
from fpnas_dsl.parser import load_space

BENCH = Path(__file__).resolve().parent.parent / "bench"
TINY = str(Path(__file__).parent / "data" / "tiny.space")
DATA = "synthetic:size=256,test_size=128,classes=4,resolution=16"
RECIPE = ["--", "--batch-size", "32", "--eval-batch-size", "128", "--epochs", "1"]


def load_bench(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ranking() -> Iterator[ModuleType]:
    sys.path.insert(0, str(BENCH))
    try:
        yield load_bench("ranking")
    finally:
        for name in ("ranking", "jobs"):
            sys.modules.pop(name, None)
        sys.path.remove(str(BENCH))


def tiny_search(out: Path) -> Path:
    code = fpnas(
        [
            "search", TINY, "--target-flops", "150000", "--data", DATA, "--epochs", "2",
            "--warmup-epochs", "1", "--steps-per-epoch", "4", "--batch-size", "16",
            "--eval-batches", "1", "--threads", "1", "--no-progress", "--out", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_search(tmp_path_factory.mktemp("search") / "run")


def trainings(out: Path) -> int:
    """How many trainings ran to their end in `out` (each appends to its log)."""
    return sum(p.read_text().count("final test accuracy") for p in out.glob("*.log"))


def test_tau_and_rho_match_scipy_with_ties(ranking: ModuleType) -> None:
    rng = np.random.default_rng(3)
    a = rng.integers(0, 5, 15).astype(float)  # many ties
    b = a + rng.normal(0, 2, 15).round()
    assert ranking.kendall_tau(a, b) == pytest.approx(stats.kendalltau(a, b).statistic)
    assert ranking.spearman_rho(a, b) == pytest.approx(stats.spearmanr(a, b).statistic)


@pytest.mark.parametrize("noise", [0.3, 1.0, 3.0])
def test_bootstrap_interval_contains_the_point_estimate(ranking: ModuleType, noise: float) -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=12)
    b = a + rng.normal(0, noise, 12)
    tau = ranking.kendall_tau(a, b)
    lo, hi = ranking.bootstrap(a, b, ranking.kendall_tau, 500)
    assert lo <= tau <= hi
    assert lo < hi  # 12 noisy pairs: the interval has a width
    # A perfect ranking stays perfect in every resample.
    assert ranking.bootstrap(a, 2 * a, ranking.kendall_tau, 200) == (1.0, 1.0)


def test_band_draws_stay_in_the_band_are_distinct_and_prefix_stable(
    ranking: ModuleType,
) -> None:
    space = load_space(TINY)
    centre = float(np.median(cost.flops(space, ranking.uniform_samples(space, 2000, seed=9))))
    archs = ranking.in_band(space, centre, 0.1, 12, seed=0)
    flops = cost.flops(space, archs)
    assert len(archs) == 12
    assert np.all(np.abs(flops / centre - 1) <= 0.1)
    assert len({a.tobytes() for a in archs}) == 12
    np.testing.assert_array_equal(ranking.in_band(space, centre, 0.1, 5, seed=0), archs[:5])
    assert not np.array_equal(ranking.in_band(space, centre, 0.1, 5, seed=1), archs[:5])


def test_an_empty_band_is_refused(ranking: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    space = load_space(TINY)
    with pytest.raises(SystemExit) as exc:
        ranking.in_band(space, 1e12, 0.1, 3, seed=0)
    assert exc.value.code == 2
    assert "widen --band" in capsys.readouterr().err


def test_the_scorer_scores_as_the_search_scores_its_pick(
    ranking: ModuleType, run_dir: Path
) -> None:
    scorer = ranking.RunScorer(run_dir, "test")
    assert scorer(scorer.found) == scorer.found_doc["accuracy"]
    alpha = ranking.RunScorer(run_dir, "alpha", images=64)
    assert alpha.images == 64 and alpha.key != scorer.key


def test_within_band_ranking_resumes_without_training_again(
    ranking: ModuleType,
    run_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "band"
    argv = ["--run", str(run_dir), "--band", "0.2", "--archs", "3", "--out", str(out), *RECIPE]
    assert ranking.main(argv) == 0
    first = json.loads((out / "ranking.json").read_text())
    assert trainings(out) == 3
    assert (out / "ranking.png").is_file() and (out / "ranking.csv").is_file()
    centre = json.loads((run_dir / "arch.json").read_text())["flops"]
    assert first["band_flops"] == centre
    assert all(abs(r["flops"] / centre - 1) <= 0.2 for r in first["rows"])
    lo, hi = first["kendall_tau_95"]
    assert lo <= first["kendall_tau"] <= hi
    assert "flops_kendall_tau" in first
    capsys.readouterr()

    assert ranking.main(argv) == 0  # the same command: nothing trained or scored again
    again = capsys.readouterr().out
    assert trainings(out) == 3
    assert "at a time" not in again and again.count("(kept)") == 3
    assert json.loads((out / "ranking.json").read_text())["rows"] == first["rows"]

    # Another recipe in the same directory would mix two recipes: refused.
    with pytest.raises(SystemExit) as exc:
        ranking.main([*argv[:-1], "2"])
    assert exc.value.code == 2
    assert "other settings" in capsys.readouterr().err
    assert trainings(out) == 3
