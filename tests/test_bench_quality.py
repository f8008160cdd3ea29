"""bench/quality.py: percentiles against the random band, the RSWS pick as the
supernet's best of its N, and a rerun that trains nothing again (tiny search run)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from test_bench_ranking import BENCH, RECIPE, load_bench, tiny_search, trainings

from fpnas_dsl.archfile import load_arch
from fpnas_dsl.ir import encode


@pytest.fixture(scope="module")
def quality() -> Iterator[ModuleType]:
    sys.path.insert(0, str(BENCH))
    try:
        yield load_bench("quality")
    finally:
        for name in ("quality", "ranking", "jobs"):
            sys.modules.pop(name, None)
        sys.path.remove(str(BENCH))


def test_percentile_rank_counts_ties_half(quality: ModuleType) -> None:
    band = [0.80, 0.81, 0.82, 0.83]
    assert quality.percentile_rank(0.79, band) == 0.0
    assert quality.percentile_rank(0.815, band) == 50.0
    assert quality.percentile_rank(0.82, band) == 62.5
    assert quality.percentile_rank(0.90, band) == 100.0


def test_summary_judges_on_the_seed_means(quality: ModuleType) -> None:
    randoms = [f"random{n}" for n in range(1, 9)]
    means = {name: 0.80 + 0.01 * n for n, name in enumerate(randoms)}  # 0.80 ... 0.87
    means.update(found=0.86, rsws=0.865)
    s = quality.summarise(means, randoms)
    assert s["random_75th"] == pytest.approx(np.percentile([0.80 + 0.01 * n for n in range(8)], 75))
    assert s["found_at_75th"] and s["found_percentile"] == 75.0
    assert not s["found_no_worse_than_rsws"]
    assert s["found_minus_rsws"] == pytest.approx(-0.005)
    means["found"] = 0.84
    assert not quality.summarise(means, randoms)["found_at_75th"]


def test_rsws_pick_is_the_first_best(quality: ModuleType) -> None:
    assert quality.rsws_pick([0.2, 0.5, 0.1, 0.5]) == 1


def test_quality_picks_rsws_by_the_supernet_and_resumes(
    quality: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tiny_search(tmp_path / "run")
    out, pool = tmp_path / "quality", tmp_path / "trainings"
    argv = [
        "--run", str(run), "--band", "0.2", "--random", "3", "--rsws", "4", "--seeds", "0",
        "--rsws-images", "96", "--out", str(out), "--pool", str(pool), *RECIPE,
    ]  # fmt: skip
    assert quality.main(argv) == 0
    doc = json.loads((out / "quality.json").read_text())
    names = ["found", "random1", "random2", "random3", "rsws"]
    assert [r["name"] for r in doc["rows"]] == names
    assert trainings(pool) == 5
    assert 0 <= doc["found_percentile"] <= 100

    # RSWS's pick is the best of its 4 candidates under the run's supernet, rescored here
    # independently on the same 96 alpha images.
    ranking = sys.modules["ranking"]
    scorer = ranking.RunScorer(run, "alpha", images=96)
    centre = json.loads((run / "arch.json").read_text())["flops"]
    candidates = ranking.in_band(scorer.space, centre, 0.2, 4, 1 + quality.RSWS_SEED_OFFSET)
    rescored = [scorer(idx) for idx in candidates]
    assert doc["rsws"]["scores"] == rescored
    space, arch, _ = load_arch(out / "rsws.json")
    np.testing.assert_array_equal(encode(space, arch), candidates[int(np.argmax(rescored))])
    assert doc["rows"][-1]["supernet_acc"] == max(rescored)
    capsys.readouterr()

    assert quality.main(argv) == 0  # the same command: nothing trained again
    assert "at a time" not in capsys.readouterr().out
    assert trainings(pool) == 5
    assert json.loads((out / "quality.json").read_text())["rows"] == doc["rows"]

    # The within-band ranking drawn with the same seed trains the same architectures
    # with the same recipe on seed 0: it finds them in the pool.
    band = tmp_path / "band"
    assert ranking.main(
        [
            "--run", str(run), "--band", "0.2", "--archs", "3", "--seed", "1",
            "--out", str(band), "--pool", str(pool), *RECIPE, "--seed", "0",
        ]
    ) == 0  # fmt: skip
    assert trainings(pool) == 5
    rows = json.loads((band / "ranking.json").read_text())["rows"]
    assert [r["standalone_acc"] for r in rows] == [r["test_acc_s0"] for r in doc["rows"][1:4]]

    # Another RSWS budget would change the pick under the same directory: refused.
    with pytest.raises(SystemExit) as exc:
        quality.main([a if a != "4" else "5" for a in argv])
    assert exc.value.code == 2
    assert "rsws 4 (now 5)" in capsys.readouterr().err
