"""`fpnas export`: ONNX / TorchScript / JSON of random architectures of every bundled space,
checked against PyTorch; run directories use the supernet's weights; bad input is one line
and exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from cli_helpers import one_line_error as _err

from fpnas_dsl.archfile import load_arch, save_arch
from fpnas_dsl.cli import main
from fpnas_dsl.cost import arch_cost
from fpnas_dsl.export import export
from fpnas_dsl.ir import Architecture, Space, decode, uniform_samples
from fpnas_dsl.nn import Supernet, build_network
from fpnas_dsl.parser import load_space
from fpnas_dsl.resources import bundled_spaces

RESOLUTION = 32  # small, for speed; every bundled space still reduces it to >= 1


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def interesting_arch(space: Space, seed: int) -> Architecture:
    """A random architecture with a skipped block and split-attention where offered."""
    offered = {c for b in space.blocks for c in b.var("attention").choices}
    skip_offered = any(0 in b.var("kernel").choices for b in space.blocks)
    best, best_score = None, -1
    for idx in uniform_samples(space, 64, seed):
        arch = decode(space, idx)
        kinds = {b.attention for b in arch.blocks if b.kernel}
        score = (
            int(any(b.kernel == 0 for b in arch.blocks) or not skip_offered)
            + len(kinds & {"sa2", "sa4"} & offered)
            + int("se" in kinds or "se" not in offered)
        )
        if score > best_score:
            best, best_score = arch, score
    assert best is not None
    return best


def randomise(net: torch.nn.Module, seed: int) -> None:
    """Weights as after training (non-trivial batch-norm statistics, O(1) logits), so that
    a 1e-4 agreement means something."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
            elif isinstance(m, torch.nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) / m.in_features**0.5)


def write_case(tmp: Path, name: str, seed: int) -> tuple[Path, Path, Space, Architecture]:
    space = load_space(name, resolution=RESOLUTION)
    arch = interesting_arch(space, seed)
    arch_path = tmp / f"{name}.json"
    save_arch(arch_path, space, arch)
    torch.manual_seed(seed)
    net = build_network(space, arch).eval()
    randomise(net, seed)
    weights = tmp / f"{name}.pt"
    torch.save(net.state_dict(), weights)
    return arch_path, weights, space, arch


@pytest.mark.filterwarnings("ignore:.*torch.jit.*deprecated:FutureWarning")
@pytest.mark.parametrize("name", bundled_spaces())
def test_onnx_and_torchscript_of_every_bundled_space(tmp_path: Path, name: str) -> None:
    arch_path, weights, space, arch = write_case(tmp_path, name, seed=len(name))
    onnx_path = tmp_path / "net.onnx"
    report = export(arch_path, "onnx", onnx_path, weights=weights)
    assert report.opset == 17
    assert set(report.max_abs_diff) == {1, 8}
    # Within 1e-4 of the logits' scale (O(1) here, except ResNet's growing residual sums).
    scale = max(1.0, report.output_scale)
    assert max(report.max_abs_diff.values()) <= 1e-4 * scale
    assert (report.flops, report.params) == arch_cost(space, arch)
    assert report.size_bytes == onnx_path.stat().st_size > 0
    assert not list(tmp_path.glob(".*.tmp"))

    # Independently of the command's own check: the file is valid, the batch axis is
    # dynamic, and ONNX Runtime reproduces PyTorch at a batch size the check did not use.
    model = onnx.load(str(onnx_path))
    onnx.checker.check_model(model)
    assert model.opset_import[0].version == 17
    dim0 = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param and not dim0.dim_value
    net = build_network(space, arch).eval()
    net.load_state_dict(torch.load(weights))
    x = torch.randn(3, arch.in_channels, RESOLUTION, RESOLUTION)
    with torch.no_grad():
        want = net(x).numpy()
    assert np.abs(want).max() > 0.05  # the comparison below is not vacuous
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x.numpy()})[0]
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, float(np.abs(want).max()))

    ts_path = tmp_path / "net.pt"
    report = export(arch_path, "torchscript", ts_path, weights=weights)
    assert max(report.max_abs_diff.values()) <= 1e-4 * scale
    loaded = torch.jit.load(str(ts_path))  # type: ignore[no-untyped-call]
    with torch.no_grad():
        assert torch.allclose(loaded(x), torch.from_numpy(want), atol=1e-4 * scale)


def test_json_export_is_a_loadable_arch_file(tmp_path: Path) -> None:
    arch_path, _, space, arch = write_case(tmp_path, "fbnetv2_f_pp", seed=1)
    out = tmp_path / "out.json"
    assert main(["export", str(arch_path), "--format", "json", "-o", str(out)]) == 0
    doc = json.loads(out.read_text())
    flops, params = arch_cost(space, arch)
    assert doc["space"] == "fbnetv2_f_pp"
    assert doc["resolution"] == RESOLUTION
    assert (doc["flops"], doc["params"]) == (flops, params)
    _, arch2, extra = load_arch(out)
    assert arch2 == arch and extra["flops"] == flops


def _fake_search_run(tmp: Path, space: Space, arch: Architecture) -> Path:
    """A run directory as `fpnas search` leaves it: arch.json and checkpoint.pt."""
    from fpnas_dsl.search.checkpoint import save_checkpoint, space_digest

    run = tmp / "run"
    run.mkdir()
    save_arch(run / "arch.json", space, arch, flops=arch_cost(space, arch)[0], accuracy=0.5)
    (run / "space.json").write_text(space.model_dump_json())
    torch.manual_seed(3)
    supernet = Supernet(space)
    randomise(supernet, 3)
    state = {
        "space_digest": space_digest(space),
        "epoch": 1,
        "step": 0,
        "supernet": supernet.state_dict(),
        "optimizer": {},
        "scheduler": {},
        "distribution": {},
        "torch_rng": torch.get_rng_state(),
        "samples": 0,
        "wall": 0.0,
    }
    save_checkpoint(run, state)
    return run


def test_run_directory_exports_with_supernet_weights(tmp_path: Path) -> None:
    space = load_space("fbnetv2_f_pp", resolution=RESOLUTION, in_channels=1, classes=10)
    arch = interesting_arch(space, 5)
    run = _fake_search_run(tmp_path, space, arch)
    out = tmp_path / "run.onnx"
    assert main(["export", str(run), "--format", "onnx", "-o", str(out)]) == 0

    supernet = Supernet(space)
    supernet.load_state_dict(torch.load(run / "checkpoint.pt", weights_only=False)["supernet"])
    supernet.eval()
    x = torch.randn(2, 1, RESOLUTION, RESOLUTION)
    with torch.no_grad():
        want = supernet(x, arch).numpy()
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(
        None, {"input": x.numpy()}
    )[0]
    assert np.abs(got - want).max() <= 1e-4
    assert np.abs(want).max() > 0.05


def test_cli_prints_flops_params_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    arch_path, weights, space, arch = write_case(tmp_path, "mobilenet_v2", seed=0)
    out = tmp_path / "m.onnx"
    code = main(
        [
            "export",
            str(arch_path),
            "-f",
            "onnx",
            "-o",
            str(out),
            "--weights",
            str(weights),
            "--opset",
            "14",
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    flops, params = arch_cost(space, arch)
    assert "opset 14" in text and "dynamic batch" in text
    assert f"{flops / 1e6:,.2f} M" in text and f"{params:,}" in text
    assert "ONNX Runtime" in text and "batch 8" in text
    assert "KiB" in text or "MiB" in text


# --------------------------------------------------------------------------------------
# Bad input: one line on stderr, exit 2, nothing written


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fpnas_dsl", *args], capture_output=True, text=True, timeout=120
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_bad_input_subprocess(tmp_path: Path) -> None:
    """The real command line (one subprocess, several failures through main)."""
    proc = run_cli(
        "export", str(tmp_path / "missing.json"), "--format", "onnx", "-o", str(tmp_path / "x.onnx")
    )
    assert_one_line_error(proc, "missing.json", "no such file")
    assert not (tmp_path / "x.onnx").exists()


@pytest.fixture(scope="module")
def good_arch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("good")
    space = load_space("fbnetv2_f", resolution=RESOLUTION)
    path = tmp / "arch.json"
    save_arch(path, space, interesting_arch(space, 0))
    return path


def test_arch_of_another_space(
    tmp_path: Path, good_arch: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = json.loads(good_arch.read_text())
    doc["ir"] = load_space("mobilenet_v2", resolution=RESOLUTION).model_dump(mode="json")
    bad = tmp_path / "other.json"
    bad.write_text(json.dumps(doc))
    line = _err(capsys, ["export", str(bad), "-f", "onnx", "-o", str(tmp_path / "o.onnx")])
    assert "fbnetv2_f" in line and "mobilenet_v2" in line


def test_malformed_arch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    assert "bad.json" in _err(
        capsys, ["export", str(bad), "-f", "json", "-o", str(tmp_path / "o.json")]
    )
    bad.write_text(json.dumps({"blocks": []}))
    assert "bad.json" in _err(
        capsys, ["export", str(bad), "-f", "json", "-o", str(tmp_path / "o.json")]
    )


def test_unknown_format(
    tmp_path: Path, good_arch: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _err(capsys, ["export", str(good_arch), "-f", "tflite", "-o", str(tmp_path / "o")])
    assert "tflite" in line and "onnx" in line


def test_unwritable_output(
    tmp_path: Path, good_arch: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    line = _err(capsys, ["export", str(good_arch), "-f", "onnx", "-o", str(blocker / "net.onnx")])
    assert "net.onnx" in line
    line = _err(capsys, ["export", str(good_arch), "-f", "json", "-o", str(tmp_path)])
    assert "directory" in line
    # Issue 11, item 12: missing directories are created, as `fpnas search --out` does.
    deep = tmp_path / "no" / "such" / "dir" / "net.json"
    assert main(["export", str(good_arch), "-f", "json", "-o", str(deep)]) == 0
    assert json.loads(deep.read_text())["blocks"]


def test_weights_of_another_architecture(
    tmp_path: Path, good_arch: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, weights, _, _ = write_case(tmp_path, "mobilenet_v2", seed=0)
    export = ["export", str(good_arch), "-f", "onnx", "-o", str(tmp_path / "o.onnx")]
    line = _err(capsys, [*export, "--weights", str(weights)])
    assert "do not fit" in line
    assert not (tmp_path / "o.onnx").exists()
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    line = _err(capsys, [*export, "--weights", str(junk)])
    assert "junk.pt" in line


def test_bad_run_directories(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "arch.json" in _err(
        capsys, ["export", str(empty), "-f", "onnx", "-o", str(tmp_path / "o.onnx")]
    )
    space = load_space("fbnetv2_f", resolution=RESOLUTION)
    run = _fake_search_run(tmp_path, space, interesting_arch(space, 1))
    (run / "checkpoint.pt").write_bytes(b"corrupt")
    assert "checkpoint" in _err(
        capsys, ["export", str(run), "-f", "onnx", "-o", str(tmp_path / "o.onnx")]
    )
    assert not (tmp_path / "o.onnx").exists()


def test_failed_check_leaves_the_old_file(
    tmp_path: Path,
    good_arch: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A file that ONNX Runtime does not reproduce within the tolerance is not written."""
    import fpnas_dsl.export as ex

    real = ex._onnx_runner

    def off_by_a_little(path: Path) -> Any:
        run = real(path)
        return lambda x: run(x) * (1 + 1e-3)  # 10x the relative tolerance

    monkeypatch.setattr(ex, "_onnx_runner", off_by_a_little)
    out = tmp_path / "net.onnx"
    out.write_text("previous export")
    # A failure at run time (the input was fine): exit 1.
    line = _err(capsys, ["export", str(good_arch), "-f", "onnx", "-o", str(out)], code=1)
    assert "check failed" in line and "batch 1" in line
    assert out.read_text() == "previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["net.onnx"]


# ---- a check that can fail --------------------------------------------------------------


def test_fresh_networks_without_calibration_have_vanishing_logits() -> None:
    """Why the check calibrates: freshly initialised, these networks' logits are far
    below 1e-4, so an absolute tolerance of 1e-4 would accept any export at all."""
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    for name in ("mobilenet_v2", "efficientnet_b0", "mobilenet_v3_large"):
        torch.manual_seed(0)
        net = build_network(load_space(name, resolution=64), load_arch_of(name)).eval()
        with torch.no_grad():
            assert float(net(x).abs().max()) < 1e-6


def load_arch_of(name: str) -> Architecture:
    from fpnas_dsl.ir import fixed_architecture

    arch = fixed_architecture(load_space(name, resolution=64))
    assert arch is not None
    return arch


@pytest.mark.parametrize("name", ["efficientnet_b0", "mobilenet_v3_large"])
def test_fixed_space_exports_with_unit_scale_logits(tmp_path: Path, name: str) -> None:
    import fpnas_dsl as fp

    space = fp.load_space(name, resolution=64)
    report = fp.export_network(space, "onnx", tmp_path / "net.onnx")
    assert report.weights.startswith("fresh initialisation")
    assert report.output_scale > 0.01  # calibrated: ~1e-14 .. 1e-9 without
    assert max(report.max_rel_diff.values()) <= 1e-4
    assert report.checker and (tmp_path / "net.onnx").is_file()


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_a_deliberately_wrong_export_is_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    """The file written holds a network whose one batch-norm in the middle is 1% off: the
    check compares the file with the true network and refuses it, leaving nothing."""
    import copy

    import fpnas_dsl.export as ex

    writer = "_write_onnx" if fmt == "onnx" else "_write_torchscript"
    real = getattr(ex, writer)

    def write_wrong(net: torch.nn.Module, *args: Any) -> Any:
        wrong = copy.deepcopy(net)
        norms = [m for m in wrong.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        with torch.no_grad():
            norms[len(norms) // 2].weight.mul_(1.01)
        return real(wrong, *args)

    monkeypatch.setattr(ex, writer, write_wrong)
    space = load_space("efficientnet_b0", resolution=64)
    out = tmp_path / "net.bin"
    from fpnas_dsl.api import export_network
    from fpnas_dsl.errors import RunError

    with pytest.raises(RunError, match=r"check failed: max \|difference\|"):
        export_network(space, fmt, out)  # type: ignore[arg-type]
    assert not out.exists() and not list(tmp_path.iterdir())
    # The same export without the fault passes.
    monkeypatch.setattr(ex, writer, real)
    assert export_network(space, fmt, out).path == out  # type: ignore[arg-type]


def test_export_of_a_fixed_space_from_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x.onnx"
    assert main(["export", "mobilenet_v2_035", "--format", "onnx", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "space mobilenet_v2_035" in text and "passed onnx" in text
    assert "max |diff| / max |logit|" in text
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["fpnas.space"] == "mobilenet_v2_035" and meta["fpnas.flops"] == "59285808"


def test_export_of_a_search_space_without_an_architecture(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _err(capsys, ["export", "fbnetv2_f", "-f", "onnx", "-o", str(tmp_path / "x.onnx")])
    assert "is a search space of" in line and "not one network" in line
    assert "--space fbnetv2_f" in line
    assert not list(tmp_path.iterdir())


@pytest.mark.filterwarnings("ignore:.*torch.jit.*deprecated:FutureWarning")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_row_operator_exports_and_runs_in_onnx_runtime(tmp_path: Path, seed: int) -> None:
    """A space that mixes every operator (skips, projections, SE and split-attention,
    kernels 1 to 5, a stem maxpool): ONNX Runtime and TorchScript reproduce PyTorch."""
    from dsl_samples import MIXED

    from fpnas_dsl.parser import parse_space

    space = parse_space(MIXED, "mixed.space")
    arch = interesting_arch(space, seed)
    arch_path = tmp_path / "mixed.json"
    save_arch(arch_path, space, arch)
    torch.manual_seed(seed)
    net = build_network(space, arch).eval()
    randomise(net, seed)
    weights = tmp_path / "mixed.pt"
    torch.save(net.state_dict(), weights)
    ops = {row.op for row in space.rows}
    assert ops == {"conv", "ds", "fused", "mbconv", "basic", "bottleneck"}
    onnx_path = tmp_path / "net.onnx"
    report = export(arch_path, "onnx", onnx_path, weights=weights)
    assert max(report.max_abs_diff.values()) <= 1e-4
    assert (report.flops, report.params) == arch_cost(space, arch)
    x = torch.randn(3, 3, space.resolution, space.resolution)
    with torch.no_grad():
        want = net(x).numpy()
    assert np.abs(want).max() > 0.05
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x.numpy()})[0]
    assert np.abs(got - want).max() <= 1e-4
    ts_path = tmp_path / "net.pt"
    report = export(arch_path, "torchscript", ts_path, weights=weights)
    assert max(report.max_abs_diff.values()) <= 1e-4
