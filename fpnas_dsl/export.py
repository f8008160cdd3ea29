"""Export one architecture as a standalone network: ONNX, TorchScript or JSON.

The network is `fpnas_dsl.nn.build_network(space, arch)` in eval mode, with weights from

- the supernet of a search run (`RUN_DIR/checkpoint.pt`, copied out by `Supernet.subnet`),
- a training directory (`model_ema.pt` or `model.pt`, whichever scored better),
- a file given with `weights=` (a state_dict of the standalone network, or a training
  checkpoint holding one), or
- a fresh initialisation (seeded) for a bare arch.json or a fixed space, whose batch-norm
  statistics are then measured on random inputs (`calibrate_batchnorm`).

Nothing is reported as written before it is checked: the ONNX file passes
`onnx.checker` and ONNX Runtime reproduces PyTorch's logits on random inputs of batch 1
and 8 within `tolerance` *relative to the logits' scale* (max |exported - PyTorch| <=
tolerance x max |PyTorch|); the TorchScript file is loaded back with `torch.jit.load` and
compared the same way. The check must be able to fail: a freshly initialised MobileNet
has logits of ~1e-8 (every depthwise layer shrinks the signal while the batch-norms still
hold their initial statistics), against which an absolute 1e-4 accepts anything. With
the statistics calibrated every layer's output is of unit scale, so the logits are too
(~0.1-1), and the relative tolerance holds whatever the weights. The file is written
under a temporary name and renamed into place only after the check, so a failed export
leaves nothing.

ONNX uses PyTorch's classic (TorchScript-based) exporter, which needs nothing beyond
torch and onnx; opsets 13 to 20 are accepted (hard-swish needs 14), 17 by default.
"""

from __future__ import annotations

import inspect
import json
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from fpnas_dsl.archfile import arch_document
from fpnas_dsl.errors import FpnasError, RunError, clip
from fpnas_dsl.ir import Architecture, Space
from fpnas_dsl.runfiles import (
    CONFIG_FILE,
    SEARCH_CHECKPOINT,
    TRAIN_MODEL,
    TRAIN_MODEL_EMA,
    TRAIN_RESULT,
    atomic_path,
)
from fpnas_dsl.sources import Source, open_source

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
    #: batch size -> max |exported - PyTorch| / max |PyTorch| (what `tolerance` bounds)
    max_rel_diff: dict[int, float] = field(default_factory=dict)
    #: max |logit| of PyTorch on those inputs (the scale the differences compare to)
    output_scale: float = 0.0
    checker: str | None = None
    #: What the file records about its input and preprocessing (see `preprocessing`)
    metadata: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------------------
# Building the network


def architecture_cost(space: Space, arch: Architecture) -> tuple[int, int]:
    """(FLOPS as multiply-accumulates, params) from the analytical cost model."""
    from fpnas_dsl.cost import arch_cost

    flops, params = arch_cost(space, arch)
    return int(flops), int(params)


WEIGHTS_EXPECTED = (
    "--weights takes a state_dict of the standalone network saved with torch.save "
    "(model.pt or model_ema.pt of `fpnas train`)"
)


def describe_file(path: Path) -> str:
    """What a file that is not a weights file is, in a few words, from its first bytes."""
    import zipfile

    try:
        with path.open("rb") as fh:
            head = fh.read(8192)
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    if not head:
        return "an empty file"
    if head.startswith(b"PK\x03\x04") and zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
                body = archive.read(pickles[0]) if pickles else b""
        except (zipfile.BadZipFile, OSError, KeyError):
            return "a damaged zip archive"
        if b"fpnas-search-checkpoint" in body:
            return "a search checkpoint"
        if not pickles:
            return "a zip archive, not a PyTorch file"
        return "a PyTorch file holding Python objects besides tensors"
    if head[:1] == b"\x80":
        return "a pickle file (not the zip format torch.save writes)"
    if b"\x00" not in head:
        try:
            head.decode("utf-8")
            return "a text file"
        except UnicodeDecodeError as exc:
            if exc.start >= len(head) - 4:  # a character cut at the 8 KiB boundary
                return "a text file"
    return "a binary file that is not a PyTorch file"


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """A state_dict from a .pt file: a bare one, or a checkpoint dict that holds one."""
    if path.is_dir():
        raise FpnasError(f"{path}: is a directory; {WEIGHTS_EXPECTED}")
    if not path.is_file():
        raise FpnasError(f"{path}: no such weights file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch raises many types for a damaged or foreign file
        what = describe_file(path)
        if what == "a search checkpoint":
            raise FpnasError(
                f"{path}: a search checkpoint (the whole supernet), not the weights of one "
                f"network; export the run directory instead: fpnas export {path.parent} ..."
            ) from None
        raise FpnasError(f"{path}: not a weights file ({what}); {WEIGHTS_EXPECTED}") from None
    for key in ("model_ema", "ema", "model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise FpnasError(f"{path}: holds no state_dict of tensors; {WEIGHTS_EXPECTED}")
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
        from fpnas_dsl.footprint import available_memory, human_bytes, supernet_size
        from fpnas_dsl.nn import Supernet
        from fpnas_dsl.search.checkpoint import load_supernet_weights

        size = supernet_size(source.space)
        free = available_memory()
        # The supernet and its checkpoint's copy of the weights are held at once.
        if free is not None and 2 * size["bytes"] > free:
            raise FpnasError(
                f"{source.path}: the run's supernet takes {human_bytes(size['bytes'])} (twice "
                f"that while its weights load) and there is {human_bytes(free)} of memory "
                "available; export on a machine with more memory"
            )
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
    calibrate_batchnorm(net, source.arch, seed)
    return net.eval(), f"fresh initialisation (seed {seed}), batch-norm statistics of random inputs"


CALIBRATION_BATCH = 8


@torch.no_grad()
def calibrate_batchnorm(net: nn.Module, arch: Architecture, seed: int) -> None:
    """Batch-norm running statistics measured on random inputs (one batch, a cumulative
    average): in eval mode every layer's output is then of unit scale, and so are the
    logits, which the export check needs to mean anything (see the module docstring)."""
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    gen = torch.Generator().manual_seed(seed + 2)
    shape = (CALIBRATION_BATCH, arch.in_channels, arch.resolution, arch.resolution)
    net.train()
    net(torch.randn(*shape, generator=gen))
    net.eval()
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum


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
    source_path: Path | str | Source,
    fmt: Format,
    out: Path | str,
    *,
    weights: Path | str | None = None,
    opset: int = DEFAULT_OPSET,
    tolerance: float = TOLERANCE,
    seed: int = 0,
    space: str | None = None,
    data: str | None = None,
) -> ExportReport:
    """Write the architecture at `source_path` as `fmt` to `out`, verified. FpnasError on
    bad input or a failed check (nothing is left at `out` then).

    `space` reads a minimal architecture file against that space; `data` names the data
    the network is for (default: the run's), which sets the preprocessing recorded in the
    file (ONNX metadata_props, a `fpnas.json` entry of TorchScript, a key of JSON)."""
    if fmt not in FORMATS:
        raise FpnasError(f"unknown format {fmt!r}; allowed: {', '.join(FORMATS)}")
    if fmt == "onnx" and not MIN_OPSET <= opset <= MAX_OPSET:
        raise FpnasError(f"opset {opset} not supported; allowed: {MIN_OPSET} to {MAX_OPSET}")
    out = Path(out)
    source = source_path if isinstance(source_path, Source) else open_source(source_path, space)
    compiled, arch = source.space, source.arch
    flops, params = architecture_cost(compiled, arch)
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
    report.metadata = preprocessing(source, data, flops, params)
    with atomic_path(out) as tmp:
        if fmt == "json":
            doc = arch_document(
                compiled,
                arch,
                flops=flops,
                params=params,
                **{**_kept(source.extra), "preprocessing": report.metadata},
            )
            tmp.write_text(json.dumps(doc, indent=2) + "\n")
        else:
            net, report.weights = network_for(source, Path(weights) if weights else None, seed)
            report.metadata["fpnas.weights"] = report.weights
            inputs = _random_inputs(arch, seed)
            with torch.no_grad():
                expected = {b: net(x) for b, x in inputs.items()}
            _check_finite(expected)
            report.output_scale = max(float(y.abs().max()) for y in expected.values())
            if fmt == "onnx":
                report.opset = opset
                report.checker = _write_onnx(net, inputs[max(inputs)], tmp, opset, report.metadata)
                run = _onnx_runner(tmp)
            else:
                report.method = _write_torchscript(net, inputs[max(inputs)], tmp, report.metadata)
                run = _torchscript_runner(tmp)
            report.max_abs_diff, report.max_rel_diff = _compare(
                run, inputs, expected, tolerance, fmt
            )
        report.size_bytes = tmp.stat().st_size
    return report


def _kept(extra: dict[str, Any]) -> dict[str, Any]:
    """The extra fields of the source arch.json that still hold for the export."""
    return {k: v for k, v in extra.items() if k not in ("flops", "params", "preprocessing")}


def _run_data(source: Source) -> str | None:
    """The data source a run (or the run directory an arch.json sits in) was made with."""
    directory = source.directory or source.path.parent
    config = directory / CONFIG_FILE
    if not config.is_file():
        return None
    try:
        value = json.loads(config.read_text(encoding="utf-8")).get("data")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def preprocessing(source: Source, data: str | None, flops: int, params: int) -> dict[str, str]:
    """What a user of the exported file must know to feed it: the input it takes, how
    images become that input (the data set's mean and std), what comes out. String values
    (ONNX metadata_props are strings); numbers and lists as JSON."""
    from fpnas_dsl.data import data_stats

    arch = source.arch
    r, c = arch.resolution, arch.in_channels
    spec = data or _run_data(source)
    stats = data_stats(spec) if spec else None
    if data is not None and stats is None:
        raise FpnasError(
            f"--data {data!r}: unknown data source; allowed: fashion-mnist, "
            "imagefolder:PATH, synthetic"
        )
    meta = {
        "fpnas.space": arch.space,
        "fpnas.input": f"float32 NCHW [batch, {c}, {r}, {r}]",
        "fpnas.resolution": str(r),
        "fpnas.in_channels": str(c),
        "fpnas.classes": str(arch.classes),
        "fpnas.output": f"logits [batch, {arch.classes}] (no softmax)",
        "fpnas.flops": str(flops),
        "fpnas.params": str(params),
    }
    if stats is None:
        meta["fpnas.data"] = "unknown"
        meta["fpnas.preprocessing"] = (
            "unknown: no data is recorded for this architecture (export with --data to "
            "record the preprocessing of fashion-mnist, imagefolder:PATH or synthetic)"
        )
        return meta
    name, mean, std = stats
    repeat = f", the {len(mean)} channel(s) repeated to {c}" if len(mean) != c else ""
    meta.update(
        {
            "fpnas.data": name,
            "fpnas.mean": json.dumps(list(mean)),
            "fpnas.std": json.dumps(list(std)),
            "fpnas.preprocessing": (
                f"uint8 images / 255, minus mean {list(mean)} and divided by std "
                f"{list(std)} per channel, resized bilinearly to {r}x{r}{repeat}"
            ),
        }
    )
    return meta


def _random_inputs(arch: Architecture, seed: int) -> dict[int, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed + 1)
    shape = (arch.in_channels, arch.resolution, arch.resolution)
    return {b: torch.randn(b, *shape, generator=gen) for b in VERIFY_BATCHES}


def _check_finite(outputs: dict[int, torch.Tensor]) -> None:
    if not all(bool(torch.isfinite(y).all()) for y in outputs.values()):
        raise RunError("the network's output is not finite on random inputs; refusing to export")


def _compare(
    run: Callable[[torch.Tensor], np.ndarray[Any, Any]],
    inputs: dict[int, torch.Tensor],
    expected: dict[int, torch.Tensor],
    tolerance: float,
    fmt: str,
) -> tuple[dict[int, float], dict[int, float]]:
    """(max |difference|, the same relative to max |PyTorch|) per batch size; RunError
    where the relative difference exceeds `tolerance`."""
    diffs: dict[int, float] = {}
    relative: dict[int, float] = {}
    for b, x in inputs.items():
        got = run(x)
        want = expected[b].numpy()
        if got.shape != want.shape:
            raise RunError(
                f"{fmt} check failed: output shape {got.shape} at batch {b}, PyTorch {want.shape}"
            )
        diffs[b] = float(np.max(np.abs(got - want)))
        scale = float(np.max(np.abs(want)))
        if scale == 0.0:
            raise RunError(
                f"{fmt} check impossible: PyTorch's logits are all zero at batch {b}, so no "
                "difference can be measured against them"
            )
        relative[b] = diffs[b] / scale
        if not relative[b] <= tolerance:
            raise RunError(
                f"{fmt} check failed: max |difference| {diffs[b]:.3g} is {relative[b]:.3g} of "
                f"the logits' scale {scale:.3g} (tolerance {tolerance:g}) at batch {b}"
            )
    return diffs, relative


def _write_onnx(
    net: nn.Module, example: torch.Tensor, path: Path, opset: int, metadata: dict[str, str]
) -> str:
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
            raise RunError(f"ONNX export failed: {_first_line(exc)}") from None
    model = onnx.load(str(path))
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.doc_string = metadata.get("fpnas.preprocessing", "")
    onnx.save(model, str(path))
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # onnx.checker.ValidationError and shape-inference errors
        raise RunError(f"ONNX checker refused the exported model: {_first_line(exc)}") from None
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
        raise RunError(f"ONNX Runtime cannot load the exported model: {_first_line(exc)}") from None

    def run(x: torch.Tensor) -> np.ndarray[Any, Any]:
        out: np.ndarray[Any, Any] = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
        return out

    return run


def _write_torchscript(
    net: nn.Module, example: torch.Tensor, path: Path, metadata: dict[str, str]
) -> str:
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
                raise RunError(f"TorchScript export failed: {_first_line(exc)}") from None
            method = "torch.jit.trace"
        torch.jit.save(module, str(path), _extra_files={"fpnas.json": json.dumps(metadata)})
    return method


def _torchscript_runner(path: Path) -> Callable[[torch.Tensor], np.ndarray[Any, Any]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            module = torch.jit.load(  # type: ignore[no-untyped-call]
                str(path), map_location="cpu"
            )
        except Exception as exc:
            raise RunError(f"torch.jit.load cannot load the export: {_first_line(exc)}") from None
    module.eval()

    def run(x: torch.Tensor) -> np.ndarray[Any, Any]:
        with torch.no_grad():
            out: np.ndarray[Any, Any] = module(x).numpy()
        return out

    return run


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _first_line(exc: BaseException) -> str:
    """The first sentence of an exception's text, without terminal escapes."""
    text = _ANSI.sub("", str(exc)).strip() or type(exc).__name__
    first = text.splitlines()[0]
    return clip(first.split(". ")[0] if len(first) > 200 else first, 200)
