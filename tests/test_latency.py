"""Latency tables: the file `fpnas latency` writes, refusal of a table that does not match
the space, the vectorised latency model against a block-by-block sum, the search budget."""

from __future__ import annotations

import itertools
import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cli_helpers import one_line_error
from spaces_for_tests import tiny

from fpnas_dsl.cli import main
from fpnas_dsl.cost import conv_out_size
from fpnas_dsl.errors import FpnasError
from fpnas_dsl.ir import Space, concrete_blocks, count_architectures, decode, uniform_samples
from fpnas_dsl.latency import (
    FORMAT,
    LatencyModel,
    LatencyTable,
    TableMismatch,
    block_parts,
    head_part,
    parse_duration,
    space_parts,
    stem_part,
)
from fpnas_dsl.parser import load_space
from fpnas_dsl.search.budget import Budget
from fpnas_dsl.search.config import make_config

TINY = str(Path(__file__).parent / "data" / "tiny.space")
DATA = "synthetic:size=256,test_size=128,classes=4,resolution=16"
FAST = ["--warmup", "0", "--repetitions", "2", "--no-progress", "--threads", "1"]


def fake_table(of: Space, **changes: Any) -> LatencyTable:
    """Every part of space `of` with a made-up latency that depends on its signature."""
    space = of
    entries = {
        s: {"seconds": 1e-5 * (1 + zlib.crc32(s.encode()) % 997), **p.as_dict()}
        for s, p in space_parts(space).catalogue.items()
    }
    fields: dict[str, Any] = {
        "space": space.name,
        "resolution": space.resolution,
        "in_channels": space.in_channels,
        "classes": space.classes,
        "device": "cpu",
        "backend": "torch",
        "batch": 1,
        "threads": 1,
        "method": {"clock": "wall"},
        "machine": {},
        "entries": entries,
        "call_overhead_s": 2e-6,
        "network_overhead_s": 3e-4,
        "part_overhead_s": 1e-6,
    }
    fields.update(changes)
    return LatencyTable(**fields)


def by_blocks(space: Space, table: LatencyTable, idx: np.ndarray) -> float:
    """One architecture's latency the slow way: its concrete blocks, one at a time."""
    stem, size = stem_part(space)
    parts = [stem] if stem is not None else []
    last = space.stem[-1].out_channels if space.stem else space.in_channels
    for block in concrete_blocks(space, decode(space, idx)):
        parts += block_parts(block, size)
        size = conv_out_size(size, 1, block.stride)
        last = block.out_channels
    parts.append(head_part(space, last, size))
    per_part = table.part_overhead_s or 0.0
    total = sum(table.seconds(p.signature) + per_part for p in parts)
    return total + (table.network_overhead_s or 0.0)


@pytest.mark.parametrize(
    "variant",
    [{}, {"skip_mismatch": "forbid"}, {"skip_mismatch": "shortcut"}, {"block_scope": True}],
)
def test_vectorised_latency_is_the_sum_of_each_blocks_parts(variant: dict[str, Any]) -> None:
    space = tiny(16, **variant)
    table = fake_table(space)
    model = LatencyModel(space, table)
    archs = uniform_samples(space, 300, seed=3)
    got = model.price(archs)
    want = np.array([by_blocks(space, table, a) for a in archs])
    assert got.shape == (300,)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    # Any leading shape, as the FLOPS model.
    assert model.price(archs.reshape(3, 100, *archs.shape[1:])).shape == (3, 100)


def test_exact_latency_range_is_the_brute_force_one() -> None:
    space = tiny(16)
    model = LatencyModel(space, fake_table(space))
    lay = space.layout
    assert count_architectures(space) <= 200_000
    grids = [range(c) for d in lay.decisions for c in d.cardinalities]
    every = np.zeros((len(list(itertools.product(*grids))), len(lay.decisions), lay.max_variables))
    for n, choice in enumerate(itertools.product(*grids)):
        k = 0
        for d, dec in enumerate(lay.decisions):
            for v in range(len(dec.cardinalities)):
                every[n, d, v] = choice[k]
                k += 1
    prices = model.price(every.astype(np.int64))
    assert model.extreme("min") == pytest.approx(prices.min(), rel=1e-12)
    assert model.extreme("max") == pytest.approx(prices.max(), rel=1e-12)


def test_table_for_another_space_resolution_or_missing_part_is_refused() -> None:
    space = tiny(16)
    table = fake_table(space)
    with pytest.raises(TableMismatch, match="resolution 16, the space is searched at 32"):
        LatencyModel(tiny(32), table)
    with pytest.raises(TableMismatch, match="of space 'other', not of 'tiny'"):
        LatencyModel(space, fake_table(space, space="other"))
    missing = fake_table(space)
    gone = sorted(missing.entries)[5]
    del missing.entries[gone]
    with pytest.raises(TableMismatch, match=f"lacks 1 of the .*first: '{gone}'.*resumes"):
        LatencyModel(space, missing)


def test_fpnas_latency_writes_a_resumable_table(tmp_path: Path, capsys: Any) -> None:
    out = tmp_path / "t.json"
    assert main(["latency", TINY, "-o", str(out), "--calibrate", "6", *FAST]) == 0
    doc = json.loads(out.read_text())
    space = load_space(TINY)
    catalogue = space_parts(space).catalogue
    assert doc["format"] == FORMAT and doc["space"] == "tiny" and doc["resolution"] == 16
    assert (doc["backend"], doc["device"], doc["threads"], doc["batch"]) == ("torch", "cpu", 1, 1)
    assert doc["method"] == {"warmup": 0, "repetitions": 2, "statistic": "median", "clock": "wall"}
    assert {"torch", "python", "platform", "processor"} <= set(doc["machine"])
    assert set(doc["entries"]) == set(catalogue)
    entry = next(e for s, e in doc["entries"].items() if s.startswith("dw "))
    assert entry["kind"] == "dw" and entry["seconds"] > 0 and entry["iqr_s"] >= 0
    assert doc["calibration"]["networks"] == 6 and doc["network_overhead_s"] is not None
    assert str(tmp_path) not in out.read_text()  # no machine paths in the table
    capsys.readouterr()

    # Resume: only the parts taken out are measured again, the others are kept as they are.
    kept = dict(doc["entries"])
    dropped = sorted(kept)[:7]
    for s in dropped:
        del doc["entries"][s]
    out.write_text(json.dumps(doc))
    assert main(["latency", TINY, "-o", str(out), "--calibrate", "0", *FAST]) == 0
    err = capsys.readouterr().err
    assert f"{len(catalogue) - 7} in {out} already" in err and "7 parts to measure" in err
    again = json.loads(out.read_text())["entries"]
    assert set(again) == set(catalogue)
    assert all(again[s] == kept[s] for s in kept if s not in dropped)

    # Other settings do not fill the same table.
    message = one_line_error(capsys, ["latency", TINY, "-o", str(out), "--batch", "2", *FAST])
    assert "batch 2 (the table's: 1)" in message

    # The table prices architectures from the CLI; at another resolution it is refused.
    assert main(["compile", TINY, "--latency-table", str(out)]) == 0
    assert "latency " in capsys.readouterr().out
    message = one_line_error(
        capsys, ["compile", TINY, "--resolution", "32", "--latency-table", str(out)]
    )
    assert "measured at resolution 16, the space is searched at 32" in message


def test_durations() -> None:
    assert parse_duration("3ms") == pytest.approx(3e-3)
    assert parse_duration("800 us") == pytest.approx(8e-4)
    assert parse_duration("0.01s") == pytest.approx(0.01)
    for bad in ("3", "ms", "-1ms", "3 parsecs"):
        with pytest.raises(ValueError, match="not a duration"):
            parse_duration(bad)


def test_budget_adds_both_hinges(tmp_path: Path) -> None:
    space = load_space(TINY)
    table = fake_table(space)
    path = tmp_path / "t.json"
    table.save(path)
    model = LatencyModel(space, table)
    archs = uniform_samples(space, 64, seed=1)
    lat = model.price(archs)
    target = float(np.median(lat))
    config = make_config(
        {
            "space": TINY,
            "target_flops": 150_000,
            "target_latency": f"{target * 1e3}ms",
            "latency_table": str(path),
        }
    )
    flops, costs = Budget(config, space).costs(archs)
    want = np.maximum(0, flops / 150_000 - 1) + np.maximum(0, lat / target - 1)
    np.testing.assert_allclose(costs, want, rtol=1e-9)
    with pytest.raises(FpnasError, match="--target-latency and --latency-table go together"):
        make_config({"space": TINY, "target_latency": "3ms"})
    with pytest.raises(FpnasError, match="give --target-flops, --target-latency, or both"):
        make_config({"space": TINY})


def test_search_for_a_latency_target_and_resume_with_another_table(
    tmp_path: Path, capsys: Any
) -> None:
    space = load_space(TINY)
    table = fake_table(space)
    path = tmp_path / "t.json"
    table.save(path)
    model = LatencyModel(space, table)
    target = float(np.quantile(model.price(uniform_samples(space, 500, seed=0)), 0.3))
    run = tmp_path / "run"
    argv = [
        "search",
        TINY,
        "--target-latency",
        f"{target * 1e3:.4f}ms",
        "--latency-table",
        str(path),
        "--data",
        DATA,
        "--epochs",
        "2",
        "--warmup-epochs",
        "1",
        "--steps-per-epoch",
        "4",
        "--batch-size",
        "16",
        "--eval-batches",
        "1",
        "--threads",
        "1",
        "--alpha-lr",
        "0.3",
        "--out",
        str(run),
        "--no-progress",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    result = json.loads(out[out.index("{") :])
    assert result["target_flops"] is None and result["target_latency_s"] == pytest.approx(
        target, rel=1e-3
    )
    arch = json.loads((run / "arch.json").read_text())
    assert arch["latency_s"] == pytest.approx(result["latency_s"])
    config = json.loads((run / "config.json").read_text())
    assert config["latency_table_digest"] == table.digest()
    # The table changes: resuming the run with it is refused.
    first = sorted(table.entries)[0]
    table.entries[first]["seconds"] *= 2
    table.save(path)
    message = one_line_error(
        capsys, ["search", "--resume", str(run), "--epochs", "3", "--no-progress"]
    )
    assert "the table changed since the run began" in message
    # A target outside the table's range is refused before anything runs.
    message = one_line_error(
        capsys, [*argv[:3], "1us", *argv[4:-3], "--out", str(tmp_path / "r2"), "--no-progress"]
    )
    assert "outside the space's range" in message


def test_fitted_overheads() -> None:
    from fpnas_dsl.calibration import fit_overheads

    counts = np.arange(10.0, 40.0)
    assert fit_overheads(1e-3 + 2e-5 * counts, counts) == pytest.approx((1e-3, 2e-5))
    # ONNX Runtime: a session call per part that a network pays once.
    assert fit_overheads(1e-4 - 1.8e-5 * counts, counts) == pytest.approx((1e-4, -1.8e-5))
    # On noise, leave-one-out error picks no correction over a fit that chases it.
    rng = np.random.default_rng(0)
    measured = rng.uniform(1e-3, 5e-3, 30)
    noise = rng.normal(0, 0.3, 30) * measured
    assert fit_overheads(noise, rng.integers(10, 40, 30), measured)[1] == 0.0
    # Too few networks: the median, alone.
    assert fit_overheads([1e-3, 3e-3, 2e-3], [10, 20, 30]) == (2e-3, 0.0)


def test_a_negative_part_correction_never_makes_a_negative_latency() -> None:
    space = tiny(16)
    table = fake_table(space, part_overhead_s=-1.0, network_overhead_s=-1.0)
    model = LatencyModel(space, table)
    assert (model.price(uniform_samples(space, 50, seed=0)) == 0).all()
    assert model.extreme("min") >= 0
