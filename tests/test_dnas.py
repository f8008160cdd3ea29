"""The DNAS baseline (FBNetV2): Gumbel weights, masks, expected FLOPS, the relaxed forward
against the supernet, and the search from the CLI (export, resume, guards)."""

from __future__ import annotations

import itertools
import json
import math
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cli_helpers import one_line_error
from spaces_for_tests import tiny
from test_search import DATA, TINY, cli, cli_args, final_state, read_metrics, wait_for

from fpnas_dsl import cost
from fpnas_dsl.ir import Space, uniform_samples
from fpnas_dsl.nn import Supernet
from fpnas_dsl.nn.relaxed import RelaxedSupernet, VarId, one_hot_weights, variables_of
from fpnas_dsl.search.checkpoint import load_checkpoint
from fpnas_dsl.search.dnas import ExpectedCost, gumbel_weights


def var_of(space: Space, block: int, name: str) -> VarId:
    slot = space.blocks[block].var(name) if name != "in" else space.blocks[block].in_channels
    assert slot.decision is not None and slot.slot is not None
    return (slot.decision, slot.slot)


def uniform(space: Space) -> dict[VarId, torch.Tensor]:
    return {v: torch.full((n,), 1.0 / n) for v, n in variables_of(space)}


def test_gumbel_weights_by_hand() -> None:
    theta = torch.tensor([0.0, math.log(2.0), math.log(3.0)], dtype=torch.float64)
    noise = torch.tensor([0.5, -0.2, 0.1], dtype=torch.float64)
    got = gumbel_weights({(0, 0): theta}, 2.0, {(0, 0): noise})[(0, 0)]
    pairs = zip([0.0, math.log(2), math.log(3)], [0.5, -0.2, 0.1], strict=True)
    e = [math.exp((t + g) / 2.0) for t, g in pairs]
    assert got.tolist() == pytest.approx([x / sum(e) for x in e], rel=1e-12)
    # Drawn noise: Gumbel(0, 1), whose variance is pi^2 / 6; a low temperature: one-hot.
    torch.manual_seed(0)
    big = torch.zeros(20000, dtype=torch.float64)
    w = gumbel_weights({(0, 0): big}, 1.0)[(0, 0)]
    g = torch.log(w) - torch.log(w).mean()  # the noise, up to a constant shift
    assert abs(float(g.var()) - math.pi**2 / 6) < 0.1
    cold = gumbel_weights({(0, 0): torch.zeros(4, dtype=torch.float64)}, 0.01)[(0, 0)]
    assert float(cold.max()) > 0.99


def test_masks_by_hand() -> None:
    space = tiny()  # stem 8; row 1: expansion {1, 3}, channels {8, 16}; row 2 repeat 2
    relaxed = RelaxedSupernet(Supernet(space))
    w = uniform(space)
    w[var_of(space, 0, "expansion")] = torch.tensor([0.25, 0.75])
    w[var_of(space, 0, "channels")] = torch.tensor([0.4, 0.6])
    m = relaxed.masks(0, w)
    # Expansion 1 keeps the 8 input channels, 3 expands them to 24.
    assert m.mid.tolist() == pytest.approx([1.0] * 8 + [0.75] * 16)
    assert m.expanded.tolist() == pytest.approx([0.75] * 24)
    assert float(m.unexpanded) == pytest.approx(0.25)
    assert m.out.tolist() == pytest.approx([1.0] * 8 + [0.6] * 8)
    assert float(m.same) == pytest.approx(0.4)  # the residual: 8 in, 8 out
    # Split-attention with 2 splits: max(mid x 2 / 4, 8) = 8 or 12.
    assert m.bottleneck["sa2"].tolist() == pytest.approx([1.0] * 8 + [0.75] * 4)
    assert m.bottleneck["se"].tolist() == pytest.approx([1.0] * 8)

    # Row 2's second block reads one variable for its input and output channels: the
    # combinations are its diagonal (no 16-in / 24-out mixtures), the residual certain.
    a, (p, q, r) = 0.3, (0.2, 0.3, 0.5)
    w[var_of(space, 2, "channels")] = torch.tensor([a, 1 - a])
    w[var_of(space, 2, "expansion")] = torch.tensor([p, q, r])
    assert var_of(space, 2, "in") == var_of(space, 2, "channels")
    m = relaxed.masks(2, w)
    assert float(m.same) == pytest.approx(1.0)
    # mid: 16 in -> 8, 16, 32; 24 in -> 16, 24, 48 (expansion 0.5, 1, 2; divisor 8).
    mid = {16: (8, 16, 32), 24: (16, 24, 48)}

    def by_hand(c: int) -> float:
        return sum(
            wc * we * (c < mid[ch][e])
            for ch, wc in ((16, a), (24, 1 - a))
            for e, we in enumerate((p, q, r))
        )

    assert m.mid.tolist() == pytest.approx([by_hand(c) for c in range(48)])
    assert float(m.mid[20]) == pytest.approx(a * r + (1 - a) * (q + r))


def all_architectures(space: Space) -> np.ndarray:
    layout = space.layout
    per_decision = [
        list(itertools.product(*(range(c) for c in d.cardinalities))) for d in layout.decisions
    ]
    out = np.zeros(
        (math.prod(len(p) for p in per_decision), len(per_decision), layout.max_variables),
        dtype=np.int64,
    )
    for n, combo in enumerate(itertools.product(*per_decision)):
        for d, choice in enumerate(combo):
            out[n, d, : len(choice)] = choice
    return out


@pytest.mark.parametrize("variant", [{}, {"block_scope": True, "expansion_of": "output"}])
def test_expected_flops_equals_enumeration(variant: dict[str, bool | str]) -> None:
    space = tiny(**variant)  # type: ignore[arg-type]
    archs = all_architectures(space)
    flops = cost.flops(space, archs).astype(np.float64)
    gen = torch.Generator().manual_seed(1)
    logits = {v: torch.randn(n, generator=gen, dtype=torch.float64) for v, n in variables_of(space)}
    probs = {v: F.softmax(t, 0) for v, t in logits.items()}
    p_arch = np.ones(len(archs))
    for (d, s), p in probs.items():
        p_arch *= p.numpy()[archs[:, d, s]]
    assert p_arch.sum() == pytest.approx(1.0)
    expected = ExpectedCost(space)
    assert float(expected(probs)) == pytest.approx(float((p_arch * flops).sum()), rel=1e-12)
    for arch in archs[:: len(archs) // 7]:
        assert float(expected(one_hot_weights(space, arch))) == pytest.approx(
            float(cost.flops(space, arch)), rel=1e-12
        )

    # Differentiable: the gradient is the enumeration's too.
    def of_logits(*parts: torch.Tensor) -> torch.Tensor:
        return expected({v: F.softmax(t, 0) for v, t in zip(logits, parts, strict=True)})

    inputs = tuple(t.clone().requires_grad_(True) for t in logits.values())
    assert torch.autograd.gradcheck(of_logits, inputs)


@pytest.mark.parametrize(
    "variant",
    [
        {},
        {"block_scope": True},
        {"expansion_of": "output", "skip_mismatch": "forbid"},
        {"skip_mismatch": "shortcut"},
        {"share": ()},
    ],
)
def test_one_hot_relaxed_forward_is_the_supernet(variant: dict[str, object]) -> None:
    space = tiny(**variant)  # type: ignore[arg-type]
    torch.manual_seed(0)
    net = Supernet(space)
    with torch.no_grad():  # away from the zero-started residuals and attention
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    for m in net.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0  # its masks depend on the tensor width
    x = torch.randn(4, 3, 16, 16)
    # Training mode too: batch statistics (the relaxed pass also updates the running
    # statistics of every candidate and masked channel, which scoring re-estimates).
    relaxed = RelaxedSupernet(net)
    for mode in ("train", "eval"):
        getattr(net, mode)()
        for arch in uniform_samples(space, 5, seed=2):
            got = relaxed(x, one_hot_weights(space, arch))
            torch.testing.assert_close(got, net(x, arch), rtol=1e-5, atol=1e-5)


def test_relaxed_forward_mixes_and_trains_theta() -> None:
    space = tiny()
    net = Supernet(space)
    relaxed = RelaxedSupernet(net)
    theta = {v: torch.zeros(n, requires_grad=True) for v, n in variables_of(space)}
    out = relaxed(torch.randn(4, 3, 16, 16), gumbel_weights(theta, 5.0))
    out.square().sum().backward()
    assert all(t.grad is not None and bool(t.grad.abs().sum() > 0) for t in theta.values())


DNAS = {"strategy": "dnas", "epochs": 2, "steps_per_epoch": 4, "alpha_lr": 0.1}


def test_dnas_search_from_the_cli_exports_and_resumes(tmp_path: Path) -> None:
    done = cli(*cli_args(tmp_path / "straight", **DNAS), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    straight = tmp_path / "straight"
    result = json.loads(done.stdout[done.stdout.index("{") :])
    arch = json.loads((straight / "arch.json").read_text())
    assert (
        arch["flops"] == result["flops"]
        and len(json.loads((straight / "top5.json").read_text())) == 5
    )
    metrics = read_metrics(straight)
    summaries = [m for m in metrics if m["type"] == "epoch"]
    assert [s["temperature"] for s in summaries] == pytest.approx(
        [5.0 * 0.956**e for e in range(2)], rel=1e-3
    )
    assert all(m["alpha_updated"] == (m["epoch"] > 1) for m in metrics if m["type"] == "iter")
    assert summaries[-1]["entropy"] < summaries[0]["entropy"]  # theta moved
    exported = cli(
        "export", str(straight), "--format", "onnx", "-o", str(tmp_path / "w.onnx"), cwd=tmp_path
    )
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "w.onnx").stat().st_size > 0

    run = tmp_path / "stopped"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fpnas_dsl", *cli_args(run, **DNAS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    wait_for(run / "checkpoint.pt", proc)  # the end of epoch 1
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert "theta" in load_checkpoint(run)["strategy"]
    resumed = cli("search", "--resume", str(run), "--no-progress", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert final_state(run)[1] == final_state(straight)[1]
    assert torch.equal(
        load_checkpoint(run)["strategy"]["theta"], load_checkpoint(straight)["strategy"]["theta"]
    )


def test_dnas_refuses_a_joint_distribution(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["search", TINY, "--target-flops", "1e5", "--data", DATA, "--out", str(tmp_path / "r")]
    err = one_line_error(capsys, [*argv, "--strategy", "dnas", "--distribution", "joint"])
    assert "--distribution" in err and "factorized" in err
    err = one_line_error(capsys, [*argv, "--strategy", "dnas", "--temperature", "0"])
    assert "--temperature" in err
    latency = ["--target-latency", "1ms", "--latency-table", str(tmp_path / "t.json")]
    err = one_line_error(capsys, [*argv, "--strategy", "dnas", *latency])
    assert "--target-flops" in err and "--target-latency" in err
