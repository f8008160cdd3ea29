"""Digests of what the supernet and the relaxed (DNAS) forward compute, bitwise.

The sliced dataflow is shared by the single-path forward, `subnet()` and the relaxed
forward; restructuring it must not change one bit. This records, for a few spaces and a
few fixed-seed architectures, sha256 digests of:

- the supernet's training-mode output, every parameter gradient after a backward, every
  buffer (batch-norm running statistics) after that forward, and its eval-mode output;
- the tensors of `subnet(arch)` (its state dict);
- the relaxed forward under fixed soft weights (training mode: output, parameter and
  weight gradients, buffers after) and under the architecture's one-hot weights (eval).

`tests/test_dataflow_golden.py` recomputes them and compares. The digests hold for the
torch version and CPU capability they were recorded with (float kernels differ between
builds); the test skips elsewhere. Regenerate (only when a change is meant to alter the
numbers) with `python tests/make_dataflow_golden.py`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from spaces_for_tests import bundled_or_python, tiny
from test_supernet import randomise
from torch import Tensor, nn

from fpnas_dsl.ir import Space, uniform_samples
from fpnas_dsl.nn import Supernet
from fpnas_dsl.nn.relaxed import RelaxedSupernet, one_hot_weights, variables_of

GOLDEN = Path(__file__).resolve().parent / "data" / "dataflow_golden.json"
ARCHS = 3
BATCH = 2

#: name -> the space (small resolutions keep the relaxed forward cheap).
CASES: dict[str, Callable[[], Space]] = {
    "tiny": lambda: tiny(resolution=16),
    "tiny-separate": lambda: tiny(resolution=16, share=()),
    "tiny-block-output": lambda: tiny(resolution=16, block_scope=True, expansion_of="output"),
    "fpnas_28px": lambda: bundled_or_python("fpnas_28px"),
    # The paper's F++ as it was recorded: skip as the projection, no shortcut.
    "fbnetv2_f_pp": lambda: (
        bundled_or_python("fbnetv2_f_pp")
        .with_input(resolution=32)
        .model_copy(update={"skip_mismatch": "project"})
    ),
}


def platform_key() -> str:
    return f"torch {torch.__version__} {torch.backends.cpu.get_cpu_capability()}"


def _digest(tensors: Iterable[tuple[str, Tensor | None]]) -> str:
    h = hashlib.sha256()
    for name, t in tensors:
        h.update(name.encode())
        if t is None:
            h.update(b"<none>")
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{list(t.shape)}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _fresh(space: Space) -> Supernet:
    torch.manual_seed(0)
    net = Supernet(space)
    randomise(net)
    return net


def _grads(net: nn.Module) -> list[tuple[str, Tensor | None]]:
    return [(n, p.grad) for n, p in net.named_parameters()]


def _step(
    net: Supernet, forward: Callable[[Tensor], Tensor], x: Tensor, y: Tensor, prefix: str
) -> dict[str, str]:
    """Training forward + backward: output, gradients, buffers after."""
    net.train()
    torch.manual_seed(1)  # dropout
    out = forward(x)
    F.cross_entropy(out, y).backward()  # type: ignore[no-untyped-call]
    return {
        f"{prefix}_train_out": _digest([("out", out)]),
        f"{prefix}_grads": _digest(_grads(net)),
        f"{prefix}_buffers": _digest(net.named_buffers()),
    }


def case_digests(space: Space) -> dict[str, dict[str, str]]:
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(BATCH, space.in_channels, space.resolution, space.resolution, generator=gen)
    y = torch.randint(0, space.classes, (BATCH,), generator=gen)
    count = ARCHS if space.layout.decisions else 1
    out: dict[str, dict[str, str]] = {}
    for a, idx in enumerate(uniform_samples(space, count, seed=7)):
        d: dict[str, str] = {}
        net = _fresh(space)
        d.update(_step(net, partial(net, arch=idx), x, y, "supernet"))
        net.eval()
        with torch.no_grad():
            d["supernet_eval_out"] = _digest([("out", net(x, idx))])
        d["subnet"] = _digest(net.subnet(idx).state_dict().items())

        net = _fresh(space)
        relaxed = RelaxedSupernet(net)
        wgen = torch.Generator().manual_seed(3 + a)
        weights = {
            v: torch.randn(n, generator=wgen).softmax(0).requires_grad_()
            for v, n in variables_of(space)
        }
        d.update(_step(net, partial(relaxed, weights=weights), x, y, "relaxed"))
        d["relaxed_weight_grads"] = _digest((str(v), w.grad) for v, w in weights.items())
        net.eval()
        with torch.no_grad():
            d["relaxed_one_hot_eval_out"] = _digest(
                [("out", relaxed(x, one_hot_weights(space, idx.tolist())))]
            )
        out[f"arch{a}"] = d
    return out


def compute() -> dict[str, dict[str, dict[str, str]]]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {name: case_digests(make()) for name, make in CASES.items()}
    finally:
        torch.set_num_threads(threads)


def main() -> None:
    record = {"platform": platform_key(), "cases": compute()}
    GOLDEN.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN} ({platform_key()})")


if __name__ == "__main__":
    main()
