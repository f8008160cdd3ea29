"""The Python API: docs/api.md's worked example runs as written, and the top level
exposes what the CLI calls without importing torch."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import fpnas_dsl as fp

DOC = Path(__file__).parent.parent / "docs" / "api.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_the_worked_example_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blocks = python_blocks(DOC.read_text(encoding="utf-8"))
    assert len(blocks) == 1 and "run_search" in blocks[0] and "export_network" in blocks[0]
    monkeypatch.chdir(tmp_path)
    exec(compile(blocks[0], str(DOC), "exec"), {"__name__": "api_example"})
    out = capsys.readouterr().out
    assert "Cost(flops=33246592, params=5288548)" in out
    assert "23219011584 architectures, 23219011584 networks" in out
    assert "kernel=3 act='swish' attention='sa2' expansion=1.0 channels=16" in out
    assert "checker (full)" in out


def test_the_top_level_is_the_api() -> None:
    for name in ("load_space", "summarize", "network_cost", "build_network"):
        assert name in fp.__all__ and callable(getattr(fp, name))
    for name in ("run_search", "export_network", "architecture", "parse_space"):
        assert callable(getattr(fp, name))
    # The module names stay modules: the API's names do not shadow them.
    import fpnas_dsl.cost
    import fpnas_dsl.export

    assert callable(fpnas_dsl.cost.cost_range) and callable(fpnas_dsl.export.export)


def test_importing_the_package_does_not_import_torch() -> None:
    code = "import sys, fpnas_dsl; fpnas_dsl.load_space('fbnetv2_f'); print('torch' in sys.modules)"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == "False"


def test_a_search_space_needs_an_architecture() -> None:
    space = fp.load_space("fbnetv2_f")
    with pytest.raises(fp.FpnasError, match="networks; pass arch="):
        fp.network_cost(space)
    assert fp.network_cost(fp.load_space("mobilenet_v3_large")) == (216_589_760, 5_483_032)


def test_architectures_in_every_form(tmp_path: Path) -> None:
    from fpnas_dsl.archfile import save_arch
    from fpnas_dsl.ir import encode, uniform_samples

    space = fp.load_space("fbnetv2_f", resolution=32)
    idx = uniform_samples(space, 1, seed=3)[0]
    arch = fp.architecture(space, idx)
    path = tmp_path / "arch.json"
    save_arch(path, space, arch)
    assert fp.architecture(space, path) == arch
    assert fp.architecture(space, arch.model_dump(mode="json")) == arch
    assert (encode(space, fp.architecture(space, arch)) == idx).all()
    with pytest.raises(fp.FpnasError, match="needs a 'blocks' list"):
        fp.architecture(space, {"kernel": 3})
