"""bench/single_path.py: spaces built at another resolution, a replaceable training step,
the fixed reference beside the random architectures, results kept for a rerun."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from test_bench_ranking import TINY, load_bench

from fpnas_dsl.data import load_data
from fpnas_dsl.parser import load_space

DATA = "synthetic:size=128,test_size=64,classes=4,resolution=16"


@pytest.fixture(scope="module")
def single_path() -> Iterator[ModuleType]:
    try:
        yield load_bench("single_path")
    finally:
        sys.modules.pop("single_path", None)


def test_run_trains_at_the_space_resolution_with_the_given_step(
    single_path: ModuleType,
) -> None:
    data = load_data(DATA)
    space = load_space(TINY, resolution=24, classes=data.classes)
    seen: list[tuple[tuple[int, ...], bytes]] = []

    def counting_step(net, optimizer, images, labels, arch) -> float:  # type: ignore[no-untyped-def]
        seen.append((tuple(images.shape), np.asarray(arch).tobytes()))
        return single_path.sgd_step(net, optimizer, images, labels, arch)

    result = single_path.run(
        space, "random", single_path.Schedule(4, 16, 0.05), data, counting_step
    )
    assert [shape for shape, _ in seen] == [(16, 1, 24, 24)] * 4  # 16-px data resized to 24
    assert len({arch for _, arch in seen}) == 4  # a new architecture every step
    assert len(result.accs) == 6 and all(0 <= a <= 1 for a in result.accs)
    fixed = single_path.run(space, "fixed", single_path.Schedule(3, 16, 0.05), data)
    assert len(fixed.accs) == 1 and len(fixed.per100) == 1


def test_table_shows_fixed_beside_random_and_a_rerun_keeps_results(
    single_path: ModuleType,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    argv = [
        "--space", TINY, "--data", DATA, "--resolution", "20", "--steps", "3", "--batch", "16",
        "--share", "all", "--regimes", "fixed", "random", "--out", str(tmp_path),
    ]  # fmt: skip
    assert single_path.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.startswith("| space"))
    assert header.index("random:") < header.index("fixed:")  # fixed beside random
    (row,) = [line for line in lines if line.startswith("| tiny")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "20" and "(kept)" not in row
    assert float(cells[8]) == pytest.approx(
        float(cells[5].split(", ")[1].rstrip("%")) - float(cells[7].rstrip("%")), abs=0.2
    )

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("trained again")

    monkeypatch.setattr(single_path, "run", no_training)
    assert single_path.main(argv) == 0
    again = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| tiny")]
    assert again[0].endswith("(kept) |") and again[0].split("|")[:9] == row.split("|")[:9]
