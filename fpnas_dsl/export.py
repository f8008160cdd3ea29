"""Export one architecture as a standalone network: ONNX, TorchScript or JSON.

The network is `fpnas_dsl.nn.build_network(space, arch)` in eval mode, with weights from

- the supernet of a search run (`RUN_DIR/checkpoint.pt`, copied out by `Supernet.subnet`),
- a training directory (`model_ema.pt` or `model.pt`, whichever scored better),
- a file given with `weights=` (a state_dict of the standalone network, or a training
  checkpoint holding one), or
- a fresh initialisation (seeded) for a bare arch.json.

Nothing is reported as written before it is checked: the ONNX file passes
`onnx.checker` and ONNX Runtime reproduces PyTorch's logits on random inputs of batch 1
and 8 within `tolerance` (max absolute difference); the TorchScript file is loaded back
with `torch.jit.load` and compared the same way. The file is written under a temporary
name and renamed into place only after the check, so a failed export leaves nothing.

ONNX uses PyTorch's classic (TorchScript-based) exporter, which needs nothing beyond
torch and onnx; opsets 13 to 20 are accepted (hard-swish needs 14), 17 by default.
"""

from __future__ import annotations

import inspect
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from fpnas_dsl.archfile import arch_document
from fpnas_dsl.errors import FpnasError
from fpnas_dsl.ir import Architecture, Space
from fpnas_dsl.runfiles import (
    SEARCH_CHECKPOINT,
    TRAIN_MODEL,
    TRAIN_MODEL_EMA,
    TRAIN_RESULT,
    Source,
    atomic_path,
    open_source,
)

Format = Literal["onnx", "torchscript", "json"]
FORMATS: tuple[Format, ...] = ("onnx", "torchscript", "json")
DEFAULT_OPSET = 17
MIN_OPSET, MAX_OPSET = 13, 20
TOLERANCE = 1e-4
VERIFY_BATCHES = (1, 8)
INPUT_NAME, OUTPUT_NAME = "input", "logits"


@dataclass
class ExportReport:
    """What was written and how it was checked."""

    path: Path
    format: Format
    size_bytes: int
    space: str
    resolution: int
    in_channels: int
    classes: int
    flops: int
    params: int
    weights: str
    opset: int | None = None
    method: str | None = None
    #: batch size -> max |exported - PyTorch| on random inputs
    max_abs_diff: dict[int, float] = field(default_factory=dict)
    #: max |logit| of PyTorch on those inputs (the scale the differences compare to)
    output_scale: float = 0.0
    checker: str | None = None


# --------------------------------------------------------------------------------------
# Building the network


def architecture_cost(space: Space, arch: Architecture) -> tuple[int, int]:
    """(FLOPS as multiply-accumulates, params) from the analytical cost model."""
    from fpnas_dsl.cost import arch_cost

    flops, params = arch_cost(space, arch)
    return int(flops), int(params)


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """A state_dict from a .pt file: a bare one, or a checkpoint dict that holds one."""
    if not path.is_file():
        raise FpnasError(f"{path}: no such weights file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged or foreign file
        raise FpnasError(
            f"{path}: not a readable PyTorch weights file ({_first_line(exc)})"
        ) from None
    for key in ("model_ema", "ema", "model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise FpnasError(f"{path}: holds no state_dict of tensors")
    return obj


def load_into(net: nn.Module, state: dict[str, torch.Tensor], origin: str) -> None:
    """Load weights strictly; a mismatch is the user's error (weights of another network)."""
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(
                f"{len(wrong)} of another shape (e.g. {k}: {tuple(state[k].shape)} vs "
                f"{tuple(own[k].shape)})"
            )
        raise FpnasError(f"{origin}: weights do not fit this architecture: {'; '.join(parts)}")
    net.load_state_dict(state)


def build_standalone(space: Space, arch: Architecture) -> nn.Module:
    from fpnas_dsl.nn import build_network

    net: nn.Module = build_network(space, arch)
    return net


def network_for(
    source: Source, weights: Path | None = None, seed: int = 0
) -> tuple[nn.Module, str]:
    """The standalone network of a source, in eval mode, and a phrase saying whose weights."""
    if weights is not None:
        net = build_standalone(source.space, source.arch)
        load_into(net, load_state_dict_file(weights), str(weights))
        return net.eval(), f"from {weights}"
    if source.kind == "search":
        from fpnas_dsl.nn import Supernet
        from fpnas_dsl.search.checkpoint import load_supernet_weights

        supernet = Supernet(source.space)
        state = load_supernet_weights(source.path)
        try:
            supernet.load_state_dict(state)
        except RuntimeError as exc:
            raise FpnasError(
                f"{source.path / SEARCH_CHECKPOINT}: supernet weights do not fit the space of "
                f"arch.json ({_first_line(exc)})"
            ) from None
        net = supernet.subnet(source.arch)
        return net.eval(), f"supernet of search run {source.path}"
    if source.kind == "train":
        name = best_trained_weights(source.path)
        net = build_standalone(source.space, source.arch)
        load_into(net, load_state_dict_file(source.path / name), str(source.path / name))
        return net.eval(), f"trained, {source.path / name}"
    torch.manual_seed(seed)
    net = build_standalone(source.space, source.arch)
    return net.eval(), f"fresh initialisation (seed {seed})"


def best_trained_weights(directory: Path) -> str:
    """The weights file of a training directory that scored better on the test split."""
    result = directory / TRAIN_RESULT
    if result.is_file():
        try:
            name = json.loads(result.read_text()).get("best_weights")
        except (json.JSONDecodeError, AttributeError):
            name = None
        if name in (TRAIN_MODEL, TRAIN_MODEL_EMA) and (directory / name).is_file():
            return str(name)
    for name in (TRAIN_MODEL_EMA, TRAIN_MODEL):
        if (directory / name).is_file():
            return name
    raise FpnasError(f"{directory}: training has not finished an epoch yet (no {TRAIN_MODEL})")


# --------------------------------------------------------------------------------------
# Export and verification


def export(
    source_path: Path | str,
    fmt: Format,
    out: Path | str,
    *,
    weights: Path | str | None = None,
    opset: int = DEFAULT_OPSET,
    tolerance: float = TOLERANCE,
    seed: int = 0,
) -> ExportReport:
    """Write the architecture at `source_path` as `fmt` to `out`, verified. FpnasError on
    bad input or a failed check (nothing is left at `out` then)."""
    if fmt not in FORMATS:
        raise FpnasError(f"unknown format {fmt!r}; allowed: {', '.join(FORMATS)}")
    if fmt == "onnx" and not MIN_OPSET <= opset <= MAX_OPSET:
        raise FpnasError(f"opset {opset} not supported; allowed: {MIN_OPSET} to {MAX_OPSET}")
    out = Path(out)
    source = open_source(source_path)
    space, arch = source.space, source.arch
    flops, params = architecture_cost(space, arch)
    report = ExportReport(
        path=out,
        format=fmt,
        size_bytes=0,
        space=arch.space,
        resolution=arch.resolution,
        in_channels=arch.in_channels,
        classes=arch.classes,
        flops=flops,
        params=params,
        weights="none (architecture only)",
    )
    with atomic_path(out) as tmp:
        if fmt == "json":
            doc = arch_document(space, arch, flops=flops, params=params, **_kept(source.extra))
            tmp.write_text(json.dumps(doc, indent=2) + "\n")
        else:
            net, report.weights = network_for(source, Path(weights) if weights else None, seed)
            inputs = _random_inputs(arch, seed)
            with torch.no_grad():
                expected = {b: net(x) for b, x in inputs.items()}
            _check_finite(expected)
            report.output_scale = max(float(y.abs().max()) for y in expected.values())
            if fmt == "onnx":
                report.opset = opset
                report.checker = _write_onnx(net, inputs[max(inputs)], tmp, opset)
                run = _onnx_runner(tmp)
            else:
                report.method = _write_torchscript(net, inputs[max(inputs)], tmp)
                run = _torchscript_runner(tmp)
            report.max_abs_diff = _compare(run, inputs, expected, tolerance, fmt)
        report.size_bytes = tmp.stat().st_size
    return report


def _kept(extra: dict[str, Any]) -> dict[str, Any]:
    """The extra fields of the source arch.json that still hold for the export."""
    return {k: v for k, v in extra.items() if k not in ("flops", "params")}


def _random_inputs(arch: Architecture, seed: int) -> dict[int, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed + 1)
    shape = (arch.in_channels, arch.resolution, arch.resolution)
    return {b: torch.randn(b, *shape, generator=gen) for b in VERIFY_BATCHES}


def _check_finite(outputs: dict[int, torch.Tensor]) -> None:
    if not all(bool(torch.isfinite(y).all()) for y in outputs.values()):
        raise FpnasError("the network's output is not finite on random inputs; refusing to export")


def _compare(
    run: Callable[[torch.Tensor], np.ndarray[Any, Any]],
    inputs: dict[int, torch.Tensor],
    expected: dict[int, torch.Tensor],
    tolerance: float,
    fmt: str,
) -> dict[int, float]:
    diffs: dict[int, float] = {}
    for b, x in inputs.items():
        got = run(x)
        want = expected[b].numpy()
        if got.shape != want.shape:
            raise FpnasError(
                f"{fmt} check failed: output shape {got.shape} at batch {b}, PyTorch {want.shape}"
            )
        diffs[b] = float(np.max(np.abs(got - want)))
        if not diffs[b] <= tolerance:
            raise FpnasError(
                f"{fmt} check failed: max |difference| {diffs[b]:.3g} > {tolerance:g} at batch {b}"
            )
    return diffs


def _write_onnx(net: nn.Module, example: torch.Tensor, path: Path, opset: int) -> str:
    import onnx

    kwargs: dict[str, Any] = {
        "input_names": [INPUT_NAME],
        "output_names": [OUTPUT_NAME],
        "opset_version": opset,
        "dynamic_axes": {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        "do_constant_folding": True,
    }
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # the classic exporter: no onnxscript needed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(net, (example,), str(path), **kwargs)
        except Exception as exc:  # exporter failures come in many types
            raise FpnasError(f"ONNX export failed: {_first_line(exc)}") from None
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # onnx.checker.ValidationError and shape-inference errors
        raise FpnasError(f"ONNX checker refused the exported model: {_first_line(exc)}") from None
    return f"onnx {onnx.__version__} checker (full)"


def _onnx_runner(path: Path) -> Callable[[torch.Tensor], np.ndarray[Any, Any]]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:
        raise FpnasError(
            f"ONNX Runtime cannot load the exported model: {_first_line(exc)}"
        ) from None

    def run(x: torch.Tensor) -> np.ndarray[Any, Any]:
        out: np.ndarray[Any, Any] = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
        return out

    return run


def _write_torchscript(net: nn.Module, example: torch.Tensor, path: Path) -> str:
    """Script the network (keeps any control flow); trace it where scripting fails."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            module = torch.jit.script(net)
            method = "torch.jit.script"
        except Exception:
            try:
                with torch.no_grad():
                    module = torch.jit.trace(  # type: ignore[no-untyped-call]
                        net, (example,), check_trace=False
                    )
            except Exception as exc:
                raise FpnasError(f"TorchScript export failed: {_first_line(exc)}") from None
            method = "torch.jit.trace"
        torch.jit.save(module, str(path))
    return method


def _torchscript_runner(path: Path) -> Callable[[torch.Tensor], np.ndarray[Any, Any]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            module = torch.jit.load(  # type: ignore[no-untyped-call]
                str(path), map_location="cpu"
            )
        except Exception as exc:
            raise FpnasError(f"torch.jit.load cannot load the export: {_first_line(exc)}") from None
    module.eval()

    def run(x: torch.Tensor) -> np.ndarray[Any, Any]:
        with torch.no_grad():
            out: np.ndarray[Any, Any] = module(x).numpy()
        return out

    return run


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
