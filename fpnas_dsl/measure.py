"""Measuring latency on this machine: the parts of a latency table, and whole networks.

Both are timed the same way (`Timer`): the module (torch, eager, inference mode) or its
ONNX export (ONNX Runtime, the classic exporter as `fpnas export` uses), `warmup` calls,
then `repetitions` timed calls, and the median of those. On CUDA every timed call is
bracketed by `torch.cuda.synchronize()` (kernels run asynchronously). The thread count is
set once for torch (`torch.set_num_threads`) and per session for ONNX Runtime
(intra-op threads; inter-op 1).

The clock is the wall clock, or with `clock="cpu"` the CPU time of the calling thread: with
one thread, torch and ONNX Runtime compute in the calling thread, and its CPU time is the
latency the call would have on an idle core. On a machine shared with other jobs the wall
clock of a long call (a whole network) includes the slices the scheduler gives to others,
while short calls (one part) mostly fit between them: wall-clock tables then underestimate
networks by a load-dependent factor (BENCHMARKS.md, issue 16).
"""

from __future__ import annotations

import inspect
import io
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from fpnas_dsl.errors import FpnasError, RunError
from fpnas_dsl.ir import Space, decode
from fpnas_dsl.latency import Part
from fpnas_dsl.nn.blocks import (
    BasicBlock,
    Bottleneck,
    ConvBnAct,
    SplitAttention,
    SqueezeExcite,
    init_weights,
)
from fpnas_dsl.nn.network import build_network, make_classifier, make_layers

__all__ = ["BACKENDS", "Timer", "build_part", "machine_info", "measure_networks", "measure_parts"]

BACKENDS = ("torch", "onnxruntime")
OPSET = 17
ORT_LEVELS = {"extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


class _Project(nn.Module):
    """The last 1x1 convolution and batch-norm of an MBConv, with its residual sum."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv_pwl = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)

    def forward(self, x: Tensor, shortcut: Tensor | None = None) -> Tensor:
        out: Tensor = self.bn3(self.conv_pwl(x))
        return out if shortcut is None else out + shortcut


class _Residual(nn.Module):
    """A part whose output the block sums with its input (a fused-MBConv's one conv)."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: Tensor, shortcut: Tensor) -> Tensor:
        out: Tensor = self.body(x) + shortcut
        return out


class _Tail(nn.Module):
    """The end of a ResNet block, its own layers: the last conv and batch-norm, the sum
    with the shortcut, the activation."""

    def __init__(self, conv: nn.Module, bn: nn.Module, act: nn.Module) -> None:
        super().__init__()
        self.conv, self.bn, self.act = conv, bn, act

    def forward(self, x: Tensor, shortcut: Tensor) -> Tensor:
        out: Tensor = self.act(self.bn(self.conv(x)) + shortcut)
        return out


def _tail(kernel: int, cin: int, cout: int, act: str) -> _Tail:
    """A ResNet tail taken from the block that has it: a bottleneck's 1x1 conv3, or a
    basic block's kxk conv2."""
    if kernel == 1:
        bottleneck = Bottleneck(cout, cin, cout, 1, 1, act)
        return _Tail(bottleneck.conv3, bottleneck.bn3, bottleneck.act3)
    basic = BasicBlock(cout, cout, kernel, 1, act)
    return _Tail(basic.conv2, basic.bn2, basic.act2)


class _Head(nn.Module):
    def __init__(self, head: nn.Sequential, classifier: nn.Sequential) -> None:
        super().__init__()
        self.head, self.pool, self.classifier = head, nn.AdaptiveAvgPool2d(1), classifier

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.classifier(self.pool(self.head(x)).flatten(1))
        return out


def build_part(space: Space, part: Part, batch: int) -> tuple[nn.Module, tuple[Tensor, ...]]:
    """The module of one table part and example inputs for it (batch `batch`)."""
    p = dict(part.params)
    size = p["size"]

    def image(chs: int) -> Tensor:
        return torch.randn(batch, chs, size, size)

    module: nn.Module
    if part.kind in ("stem", "head"):
        # The network's own layers (`make_layers`: conv, BN, act, maxpool).
        convs, cin = (space.stem if part.kind == "stem" else space.head), p["cin"]
        body = make_layers(convs, cin)
        c = convs[-1].out_channels if convs else cin
        module = body if part.kind == "stem" else _Head(body, make_classifier(space, c))
        inputs: tuple[Tensor, ...] = (image(cin),)
    elif part.kind == "conv":
        cin, cout = p["cin"], p["cout"]
        module = ConvBnAct(cin, cout, p["kernel"], p["stride"], p["act"])
        inputs = (image(cin),)
        if p["residual"]:
            module, inputs = _Residual(module), (image(cin), image(cout))
    elif part.kind == "tail":
        module = _tail(p["kernel"], p["cin"], p["cout"], p["act"])
        inputs = (image(p["cin"]), image(p["cout"]))
    elif part.kind == "expand":
        module, inputs = ConvBnAct(p["cin"], p["cout"], 1, 1, p["act"]), (image(p["cin"]),)
    elif part.kind == "dw":
        chs = p["chs"]
        module = ConvBnAct(chs, chs * p["splits"], p["kernel"], p["stride"], p["act"], groups=chs)
        inputs = (image(chs),)
    elif part.kind == "se":
        module, inputs = SqueezeExcite(p["chs"], p["rd"], p["gate"], p["act"]), (image(p["chs"]),)
    elif part.kind == "sa":
        module = SplitAttention(p["chs"], p["splits"], p["rd"])
        inputs = (image(p["chs"] * p["splits"]),)
    elif part.kind == "project":
        module = _Project(p["cin"], p["cout"])
        inputs = (image(p["cin"]), image(p["cout"])) if p["residual"] else (image(p["cin"]),)
    elif part.kind == "proj":
        module, inputs = ConvBnAct(p["cin"], p["cout"], 1, p["stride"]), (image(p["cin"]),)
    else:
        raise ValueError(f"unknown part kind {part.kind!r}")
    init_weights(module)
    return module.eval(), inputs


@dataclass
class Timer:
    """How a callable is timed: on which backend and device, with how many threads."""

    backend: str = "torch"
    device: str = "cpu"
    threads: int = 1
    warmup: int = 5
    repetitions: int = 30
    #: "wall" (time.perf_counter) or "cpu" (the calling thread's CPU time, which leaves out
    #: the time other processes take the core: one thread on a shared machine only).
    clock: str = "wall"
    #: ONNX Runtime's graph optimisations: "extended" (fusions, no layout change) or "all"
    #: (also the NCHWc layout of x86 convolutions, ONNX Runtime's default). Under "all" a
    #: part measured alone converts its input to NCHWc and its output back, which a
    #: network does once for a chain of convolutions, so the parts' sum overestimates
    #: networks by 50-120% (BENCHMARKS.md, issue 16); "extended" times both the same way.
    ort_level: str = "extended"

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise FpnasError(f"--backend {self.backend!r}: use one of {', '.join(BACKENDS)}")
        try:
            dev = torch.device(self.device)
        except (RuntimeError, ValueError):
            raise FpnasError(f"--device {self.device!r}: use cpu, cuda or cuda:N") from None
        if dev.type not in ("cpu", "cuda"):
            raise FpnasError(f"--device {self.device!r}: use cpu, cuda or cuda:N")
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise FpnasError(f"--device {self.device}: no CUDA GPU is available here")
        if self.backend == "onnxruntime" and dev.type == "cuda":
            import onnxruntime as ort

            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise FpnasError(
                    f"--device {self.device} --backend onnxruntime: this onnxruntime has no "
                    "CUDAExecutionProvider (install onnxruntime-gpu)"
                )
        if self.ort_level not in ORT_LEVELS:
            raise FpnasError(f"--ort-level {self.ort_level!r}: use extended or all")
        if self.threads < 1 or self.warmup < 0 or self.repetitions < 1:
            raise FpnasError("--threads and --repetitions must be 1 or more, --warmup 0 or more")
        if self.clock not in ("wall", "cpu"):
            raise FpnasError(f"--clock {self.clock!r}: use wall or cpu")
        if self.clock == "cpu" and (dev.type != "cpu" or self.threads != 1):
            raise FpnasError(
                "--clock cpu times the calling thread only: it needs --device cpu and "
                "--threads 1 (use --clock wall otherwise)"
            )
        self.torch_device = dev
        torch.set_num_threads(self.threads)

    def runner(self, module: nn.Module, inputs: tuple[Tensor, ...]) -> Callable[[], Any]:
        """A no-argument callable that runs `module` once on `inputs` on this backend."""
        if self.backend == "torch":
            module = module.to(self.torch_device)
            moved = tuple(x.to(self.torch_device) for x in inputs)
            return lambda: module(*moved)
        session = self._session(module, inputs)
        names = [i.name for i in session.get_inputs()]
        feeds = {n: x.numpy() for n, x in zip(names, inputs, strict=True)}
        return lambda: session.run(None, feeds)

    def _session(self, module: nn.Module, inputs: tuple[Tensor, ...]) -> Any:
        import onnxruntime as ort

        buffer = io.BytesIO()
        kwargs: dict[str, Any] = {
            "input_names": [f"x{i}" for i in range(len(inputs))],
            "opset_version": OPSET,
            "do_constant_folding": True,
        }
        if "dynamo" in inspect.signature(torch.onnx.export).parameters:
            kwargs["dynamo"] = False  # the classic exporter, as `fpnas export`
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                torch.onnx.export(module, inputs, buffer, **kwargs)  # type: ignore[arg-type]
            except Exception as exc:  # exporter failures come in many types
                raise RunError(f"ONNX export failed: {str(exc).splitlines()[0]}") from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        options.graph_optimization_level = getattr(
            ort.GraphOptimizationLevel, ORT_LEVELS[self.ort_level]
        )
        providers = (["CUDAExecutionProvider"] if self.torch_device.type == "cuda" else []) + [
            "CPUExecutionProvider"
        ]
        return ort.InferenceSession(buffer.getvalue(), sess_options=options, providers=providers)

    def time(self, run: Callable[[], Any]) -> list[float]:
        """Seconds of each of `repetitions` calls, after `warmup` calls."""
        cuda = self.torch_device.type == "cuda"
        sync: Callable[[], None] = (
            (lambda: torch.cuda.synchronize(self.torch_device)) if cuda else (lambda: None)
        )
        clock = time.thread_time if self.clock == "cpu" else time.perf_counter
        out = []
        with torch.inference_mode():
            for _ in range(self.warmup):
                run()
            sync()
            for _ in range(self.repetitions):
                start = clock()
                run()
                sync()
                out.append(clock() - start)
        return out

    def time_interleaved(self, runs: list[Callable[[], Any]]) -> list[list[float]]:
        """`time` for several callables, one call of each per repetition, in turn."""
        cuda = self.torch_device.type == "cuda"
        clock = time.thread_time if self.clock == "cpu" else time.perf_counter
        out: list[list[float]] = [[] for _ in runs]
        with torch.inference_mode():
            for _ in range(self.warmup):
                for run in runs:
                    run()
            for _ in range(self.repetitions):
                for times, run in zip(out, runs, strict=True):
                    if cuda:
                        torch.cuda.synchronize(self.torch_device)
                    start = clock()
                    run()
                    if cuda:
                        torch.cuda.synchronize(self.torch_device)
                    times.append(clock() - start)
        return out

    def median(self, module: nn.Module, inputs: tuple[Tensor, ...]) -> float:
        return statistics.median(self.time(self.runner(module, inputs)))

    def call_overhead(self) -> float:
        """What timing one empty call costs (an identity on a tiny tensor)."""
        return self.median(_Identity(), (torch.zeros(1, 8, 1, 1),))

    def settings(self) -> dict[str, Any]:
        return {
            "warmup": self.warmup,
            "repetitions": self.repetitions,
            "statistic": "median",
            "clock": self.clock,
            **({"ort_level": self.ort_level} if self.backend == "onnxruntime" else {}),
        }


class _Identity(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * 1.0  # an exported graph needs one node


def measure_parts(
    space: Space, parts: list[Part], timer: Timer, batch: int
) -> dict[str, dict[str, Any]]:
    """Table entries of `parts`, measured together: each is warmed up, then every timed
    repetition runs each part once in turn, so that a part runs after others (its weights
    and buffers out of the caches, as in a network) rather than after itself. The entry:
    the median seconds and the interquartile range."""
    runners = []
    for part in parts:
        module, inputs = build_part(space, part, batch)
        runners.append(timer.runner(module, inputs))
    times = timer.time_interleaved(runners)
    out = {}
    for part, t in zip(parts, times, strict=True):
        q1, q3 = np.percentile(t, [25, 75])
        out[part.signature] = {
            "seconds": statistics.median(t),
            "iqr_s": float(q3 - q1),
            **part.as_dict(),
        }
    return out


def measure_networks(
    space: Space,
    archs: np.ndarray,
    timer: Timer,
    batch: int,
    rounds: int = 3,
    progress: Callable[[int], object] | None = None,
    per_round: bool = False,
) -> np.ndarray:
    """Median seconds of the standalone network of each of `archs` [N, D, V] (one batch
    of `batch` images), timed as the table's parts are, in `rounds` interleaved rounds
    (every network once per round; the median over rounds): a burst of load on a shared
    machine then spreads over every network instead of falling on a few. `per_round`:
    the [N, rounds] medians of each round instead (how repeatable the measurement is)."""
    runners = []
    for idx in archs:
        net = build_network(space, decode(space, idx)).eval()
        x = torch.randn(batch, space.in_channels, space.resolution, space.resolution)
        runners.append(timer.runner(net, (x,)))
    rounds_of: list[list[float]] = [[] for _ in runners]
    for _ in range(rounds):
        for i, run in enumerate(runners):
            rounds_of[i].append(statistics.median(timer.time(run)))
            if progress is not None:
                progress(1)
    if per_round:
        return np.array(rounds_of)
    return np.array([statistics.median(r) for r in rounds_of])


def machine_info(timer: Timer) -> dict[str, Any]:
    """What the table was measured on (no paths, no user names)."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": _cpu_name(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
    }
    if timer.backend == "onnxruntime":
        import onnxruntime as ort

        info["onnxruntime"] = ort.__version__
    if timer.torch_device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(timer.torch_device)
        info["cuda"] = torch.version.cuda
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
