"""Pictures of an architecture (as the paper's Fig. B.5) and of a search or training run.

Architecture picture: one box per MBConv block, left to right. Box colour = kernel size
(a skipped block is a light box with a dashed outline), box height proportional to the
block's output channels, hatching = the nonlinearity (solid ReLU/ReLU6, `///` swish,
`xxx` hard-swish), the number on top = attention splits as in the paper (0 none, 1
squeeze-excite, 2 or 4 split-attention), vertical bars where a stride-2 block starts a
new stage (each stage labelled with its feature-map size). Blocks of the other row
operators are drawn the same way with the operator's letter at the foot of the box
(`OPERATOR_MARKS`: F fused-MBConv, D depthwise-separable, C conv, B basic, R bottleneck)
and, for those that take no attention, nothing on top. Saved as PNG and SVG.

Run plots (PNG): for a search run, entropy, K, expected FLOPS (and the current most
probable architecture's) and validation accuracy per epoch from metrics.jsonl; for a
training run, loss and test accuracy (raw and EMA weights) per epoch.

matplotlib with the Agg backend; no torch.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fpnas_dsl.errors import FpnasError
from fpnas_dsl.ir import (
    ATTENTION_SPLITS,
    OPERATOR_VARIABLES,
    Architecture,
    ConcreteBlock,
    Space,
    concrete_blocks,
)
from fpnas_dsl.runfiles import (
    ARCH_FILE,
    CONFIG_FILE,
    METRICS_FILE,
    SEARCH_SPACE,
    Staged,
    atomic_path,
    read_metrics,
    staged_files,
)
from fpnas_dsl.sources import Source, open_source

ARCH_DPI = 150
ARCH_HEIGHT_IN = 3.8
RUN_DPI = 120
RUN_SIZE_IN = (10.0, 6.5)

KERNEL_COLOURS = {3: "#4c72b0", 5: "#dd8452", 7: "#55a868", 1: "#8172b3", 9: "#c44e52"}
OTHER_KERNEL_COLOURS = ("#937860", "#da8bc3", "#8c8c8c", "#ccb974", "#64b5cd")
SKIP_FACE, SKIP_EDGE = "#f2f2f2", "#9a9a9a"
HATCHES = {"relu": "", "relu6": "", "swish": "///", "hswish": "xxx"}
ACT_LABELS = {"relu": "ReLU", "relu6": "ReLU6", "swish": "swish", "hswish": "hard-swish"}
#: The letter at the foot of a block of each row operator but MBConv, and its legend.
OPERATOR_MARKS = {
    "fused": ("F", "fused-MBConv"),
    "ds": ("D", "depthwise-separable"),
    "conv": ("C", "conv"),
    "basic": ("B", "ResNet basic"),
    "bottleneck": ("R", "ResNet bottleneck"),
}


@dataclass
class ShowReport:
    written: list[Path] = field(default_factory=list)
    table: str = ""
    summary: str = ""


# --------------------------------------------------------------------------------------
# Sizes (tests check the written pictures against these)


def architecture_figsize(blocks: int) -> tuple[float, float]:
    """Figure size in inches of an architecture picture with `blocks` boxes."""
    width = min(max(2.0 + 0.36 * blocks, 7.0), 40.0)
    return width, ARCH_HEIGHT_IN


def architecture_pixels(blocks: int) -> tuple[int, int]:
    """(width, height) in pixels of the PNG of an architecture with `blocks` boxes."""
    w, h = architecture_figsize(blocks)
    return round(w * ARCH_DPI), round(h * ARCH_DPI)


def run_pixels() -> tuple[int, int]:
    """(width, height) in pixels of a run's PNG plot."""
    return round(RUN_SIZE_IN[0] * RUN_DPI), round(RUN_SIZE_IN[1] * RUN_DPI)


# --------------------------------------------------------------------------------------
# The table


def stage_starts(blocks: list[ConcreteBlock]) -> list[int]:
    """Indices of the blocks that start a stage: the first, and every stride-2 block."""
    return [i for i, b in enumerate(blocks) if i == 0 or b.stride > 1]


def feature_sizes(space: Space, blocks: list[ConcreteBlock]) -> list[int]:
    """The output feature-map size of each block (after the stem's strides)."""
    size = space.resolution
    for conv in space.stem:
        size = _strided(size, conv.stride)
        if conv.maxpool:
            size = _strided(size, conv.maxpool_stride)
    out = []
    for b in blocks:
        size = _strided(size, b.stride)
        out.append(size)
    return out


def _strided(size: int, stride: int) -> int:
    return -(-size // stride)


def arch_table(space: Space, arch: Architecture) -> str:
    """A plain-text table of the blocks, one line each."""
    blocks = concrete_blocks(space, arch)
    sizes = feature_sizes(space, blocks)
    starts = set(stage_starts(blocks))
    head: tuple[str, ...] = (
        "block",
        "stage",
        "stride",
        "size",
        "in",
        "out",
        "exp",
        "mid",
        "kernel",
        "act",
        "attention",
    )
    mixed = any(b.op != "mbconv" for b in blocks)
    if mixed:  # the operator of each block beside its number
        head = (head[0], "op", *head[1:])
    rows: list[tuple[str, ...]] = []
    stage = 0
    for i, (b, size) in enumerate(zip(blocks, sizes, strict=True)):
        stage += i in starts
        rows.append(
            (
                str(i + 1),
                *((b.op,) if mixed else ()),
                str(stage),
                str(b.stride),
                f"{size}x{size}",
                str(b.in_channels),
                str(b.out_channels),
                f"{b.expansion:g}" if "expansion" in OPERATOR_VARIABLES[b.op] else "-",
                "-" if b.is_skip else str(b.mid_channels),
                "skip" if b.is_skip else f"{b.kernel}x{b.kernel}",
                "-" if b.is_skip else b.act,
                "-" if b.is_skip else b.attention,
            )
        )
    widths = [max(len(h), *(len(r[c]) for r in rows)) for c, h in enumerate(head)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def summary_line(space: Space, arch: Architecture, extra: dict[str, Any]) -> str:
    from fpnas_dsl.cost import arch_cost

    flops, params = arch_cost(space, arch)
    text = (
        f"{arch.space}: {len(arch.blocks)} blocks, input {arch.in_channels}x"
        f"{arch.resolution}x{arch.resolution}, {arch.classes} classes, "
        f"{int(flops) / 1e6:,.2f} MFLOPS, {int(params) / 1e6:,.3f} M params"
    )
    accuracy = extra.get("accuracy")
    if isinstance(accuracy, int | float):
        text += f", accuracy {accuracy:.2%} (supernet weights)"
    return text


# --------------------------------------------------------------------------------------
# The architecture picture


def _kernel_colour(kernel: int, seen: dict[int, str]) -> str:
    if kernel in KERNEL_COLOURS:
        return KERNEL_COLOURS[kernel]
    if kernel not in seen:
        seen[kernel] = OTHER_KERNEL_COLOURS[len(seen) % len(OTHER_KERNEL_COLOURS)]
    return seen[kernel]


def draw_architecture(
    space: Space,
    arch: Architecture,
    png: Path,
    svg: Path | None,
    title: str | None = None,
    stage: Staged | None = None,
) -> None:
    """Draw the Fig. B.5-style picture to `png` (and `svg`)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch, Rectangle

    blocks = concrete_blocks(space, arch)
    if not blocks:
        raise FpnasError(f"space {space.name!r} has no blocks to draw")
    sizes = feature_sizes(space, blocks)
    starts = stage_starts(blocks)
    top = max(b.out_channels for b in blocks)
    fig = Figure(figsize=architecture_figsize(len(blocks)), dpi=ARCH_DPI)
    left = 0.5 / fig.get_figwidth()  # half an inch for the axis labels
    ax = fig.add_axes((left, 0.2, 0.985 - left, 0.6))
    extra_colours: dict[int, str] = {}
    box_w, step = 0.8, 1.0
    for i, b in enumerate(blocks):
        x = i * step
        height = max(b.out_channels / top, 0.02)
        if b.is_skip:
            ax.add_patch(
                Rectangle(
                    (x, 0),
                    box_w,
                    height,
                    facecolor=SKIP_FACE,
                    edgecolor=SKIP_EDGE,
                    linestyle="--",
                    linewidth=1.0,
                )
            )
            continue
        ax.add_patch(
            Rectangle(
                (x, 0),
                box_w,
                height,
                facecolor=_kernel_colour(b.kernel, extra_colours),
                edgecolor="black",
                linewidth=0.6,
                hatch=HATCHES.get(b.act, "..."),
            )
        )
        if b.op in OPERATOR_MARKS:
            ax.text(
                x + box_w / 2,
                0.01,
                OPERATOR_MARKS[b.op][0],
                ha="center",
                va="bottom",
                fontsize=7,
                fontweight="bold",
                bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5},
            )
        if "attention" not in OPERATOR_VARIABLES[b.op]:
            continue
        ax.text(
            x + box_w / 2,
            height + 0.02,
            str(ATTENTION_SPLITS.get(b.attention, "?")),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    n = len(blocks)
    for s, start in enumerate(starts):
        end = starts[s + 1] if s + 1 < len(starts) else n
        if start > 0:
            ax.axvline(start * step - (step - box_w) / 2, color="black", linewidth=1.6)
        ax.text(
            (start + end) / 2 * step - (step - box_w) / 2,
            -0.13,
            f"{sizes[start]}²",
            ha="center",
            va="top",
            fontsize=8,
            color="#444444",
        )
    ax.set_xlim(-0.3, n * step + 0.1)
    ax.set_ylim(0, 1.12)
    ax.set_xticks([i * step + box_w / 2 for i in range(n)])
    ax.set_xticklabels([str(b.out_channels) for b in blocks], fontsize=6, rotation=90)
    ax.tick_params(axis="x", length=0, pad=2)
    ax.set_yticks([0, 0.5, 1.0])
    ax.set_yticklabels(["0", f"{top / 2:g}", f"{top}"], fontsize=7)
    ax.set_ylabel("channels", fontsize=8)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    handles = []
    for kernel in sorted({b.kernel for b in blocks if not b.is_skip}):
        handles.append(
            Patch(
                facecolor=_kernel_colour(kernel, extra_colours),
                edgecolor="black",
                label=f"{kernel}x{kernel}",
            )
        )
    if any(b.is_skip for b in blocks):
        handles.append(
            Patch(facecolor=SKIP_FACE, edgecolor=SKIP_EDGE, linestyle="--", label="skip")
        )
    order = list(ACT_LABELS)
    acts = {b.act for b in blocks if not b.is_skip}
    for act in sorted(acts, key=lambda a: (order.index(a) if a in order else len(order), a)):
        handles.append(
            Patch(
                facecolor="white",
                edgecolor="black",
                hatch=HATCHES.get(act, "..."),
                label=ACT_LABELS.get(act, act),
            )
        )
    for op in sorted({b.op for b in blocks if not b.is_skip and b.op in OPERATOR_MARKS}):
        mark, name = OPERATOR_MARKS[op]
        handles.append(Patch(facecolor="white", edgecolor="white", label=f"{mark} {name}"))
    ax.legend(
        handles=handles,
        loc="lower left",
        bbox_to_anchor=(0.0, 1.01),
        ncol=len(handles),
        fontsize=7,
        frameon=False,
        handlelength=1.6,
        columnspacing=1.0,
        borderaxespad=0,
    )
    fig.text(
        left,
        0.04,
        "on top: attention splits (0 none, 1 SE, 2/4 split-attention) · height ∝ output "
        "channels (below) · bars: stages (feature size)",
        fontsize=6.5,
        color="#444444",
    )
    fig.suptitle(title or _title(space, arch), fontsize=9.5, x=left, y=0.97, ha="left")
    _save(fig, png, "png", stage)
    if svg is not None:
        _save(fig, svg, "svg", stage)


def _title(space: Space, arch: Architecture) -> str:
    from fpnas_dsl.cost import arch_cost

    flops, params = arch_cost(space, arch)
    return (
        f"{arch.space}: {arch.resolution}²×{arch.in_channels} input, {len(arch.blocks)} "
        f"{_block_kind(space)}, {int(flops) / 1e6:,.2f} MFLOPS, {int(params) / 1e6:,.3f} M params"
    )


def _block_kind(space: Space) -> str:
    """'MBConv blocks', or the operators' names where the space has other rows."""
    ops = list(dict.fromkeys(row.op for row in space.rows))
    if ops == ["mbconv"]:
        return "MBConv blocks"
    names = {"mbconv": "MBConv", **{op: name for op, (_, name) in OPERATOR_MARKS.items()}}
    return " + ".join(names[op] for op in ops) + " blocks"


def _save(fig: Any, path: Path, fmt: str, stage: Staged | None = None) -> None:
    if stage is not None:
        fig.savefig(stage.path(path), format=fmt, dpi=fig.dpi)
        return
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=fig.dpi)


# --------------------------------------------------------------------------------------
# Run plots


def _series(rows: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for i, row in enumerate(rows):
        value = row.get(key)
        if isinstance(value, int | float) and math.isfinite(value):
            xs.append(float(row.get("epoch", i + 1)))
            ys.append(float(value))
    return xs, ys


def _panel(
    ax: Any, rows: list[dict[str, Any]], keys: list[tuple[str, str, float]], title: str, ylabel: str
) -> bool:
    """Plot the epoch series `keys` (key, label, scale); whether anything was drawn."""
    drawn = False
    for key, label, scale in keys:
        xs, ys = _series(rows, key)
        if xs:
            ax.plot(
                xs,
                [y * scale for y in ys],
                marker="o" if len(xs) < 40 else None,
                markersize=3,
                label=label,
            )
            drawn = True
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("epoch", fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
    return drawn


def _legend(ax: Any) -> None:
    """The panel's legend outside its plotting area, below the axis label, so that it
    hides no line (one legend per panel, rebuilt from every labelled line)."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    ax.legend(
        handles,
        labels,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.2),
        ncol=min(len(handles), 3),
        fontsize=7,
        frameon=False,
        handlelength=2.0,
        columnspacing=1.2,
        borderaxespad=0,
    )


def _not_recorded(ax: Any) -> None:
    ax.text(
        0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes, color="#888888"
    )


def _epoch_lengths(iters: list[dict[str, Any]]) -> dict[int, int]:
    """Steps seen per epoch (step s counts s + 1)."""
    steps: dict[int, int] = {}
    for row in iters:
        e, s = int(row.get("epoch", 1)), int(row.get("step", 0))
        steps[e] = max(steps.get(e, 0), s + 1)
    return steps


def _iteration_x(
    iters: list[dict[str, Any]], complete: set[int] | None = None, length: int | None = None
) -> list[float]:
    """Fractional epochs of iteration lines: epoch e, step s of n -> e - 1 + (s + 1) / n.

    n is the length of an epoch: the steps of a finished epoch (one in `complete`), or
    `length` where none has finished; an epoch still running is drawn as the share of it
    done, not stretched to look finished."""
    seen = _epoch_lengths(iters)
    finished = [n for e, n in seen.items() if complete is None or e in complete]
    full = max(finished, default=0) or length or max(seen.values(), default=1)
    return [int(r.get("epoch", 1)) - 1 + (int(r.get("step", 0)) + 1) / max(full, 1) for r in iters]


def partial_epoch(
    rows: list[dict[str, Any]], iters: list[dict[str, Any]], length: int | None = None
) -> tuple[int, int, int | None] | None:
    """(epoch, steps done, steps per epoch or None) of an epoch that has iterations but no
    summary yet (a run still going, or interrupted mid-epoch); None when there is none."""
    complete = {int(r["epoch"]) for r in rows if isinstance(r.get("epoch"), int)}
    seen = _epoch_lengths(iters)
    running = [e for e in seen if e not in complete]
    if not running:
        return None
    e = max(running)
    full = max((n for k, n in seen.items() if k in complete), default=0) or length
    return e, seen[e], full


def _overlay_iterations(
    ax: Any,
    iters: list[dict[str, Any]],
    key: str,
    scale: float,
    label: str,
    xs: list[float],
) -> bool:
    pts = [
        (x, float(r[key]) * scale)
        for x, r in zip(xs, iters, strict=True)
        if isinstance(r.get(key), int | float) and math.isfinite(r[key])
    ]
    if pts:
        ax.plot(
            [p[0] for p in pts],
            [p[1] for p in pts],
            color="#999999",
            linewidth=0.7,
            marker="." if len(pts) < 40 else None,
            markersize=3,
            alpha=0.8,
            label=label,
            zorder=1,
        )
    return bool(pts)


def plot_search(
    rows: list[dict[str, Any]],
    png: Path,
    title: str,
    target_flops: float | None = None,
    warmup: float | None = None,
    iters: list[dict[str, Any]] | None = None,
    classes: int | None = None,
    steps_per_epoch: int | None = None,
    stage: Staged | None = None,
) -> None:
    """Entropy, K, expected FLOPS and accuracy per epoch of a search run (with the
    iteration lines, where there are any, drawn thin underneath).

    K has whole-number ticks; accuracy is drawn on 0-100 % with the chance level
    (100 / classes) marked, so that noise at chance does not look like a trend; an epoch
    still running is drawn as far as it got and labelled as such."""
    from matplotlib.ticker import MaxNLocator

    fig, axes = _run_figure()
    (h_ax, k_ax), (f_ax, a_ax) = axes
    drawn = {
        id(h_ax): _panel(
            h_ax, rows, [("entropy", "per epoch", 1.0)], "distribution entropy H", "nats"
        ),
        id(k_ax): _panel(k_ax, rows, [("k", "per epoch", 1.0)], "samples per iteration K", "K"),
        id(f_ax): _panel(
            f_ax,
            rows,
            [
                ("expected_flops", "expected (samples)", 1e-6),
                ("arch_flops", "most probable architecture", 1e-6),
            ],
            "FLOPS",
            "MFLOPS",
        ),
        id(a_ax): _panel(
            a_ax,
            rows,
            [("val_acc", "validation accuracy", 100.0)],
            "accuracy of the most probable architecture",
            "%",
        ),
    }
    iters = iters or []
    complete = {int(r["epoch"]) for r in rows if isinstance(r.get("epoch"), int)}
    if iters:
        xs = _iteration_x(iters, complete, steps_per_epoch)
        for ax, key, scale, label in (
            (h_ax, "entropy", 1.0, "per iteration"),
            (k_ax, "k", 1.0, "per iteration"),
            (f_ax, "flops_mean", 1e-6, "samples, per iteration"),
        ):
            drawn[id(ax)] = _overlay_iterations(ax, iters, key, scale, label, xs) or drawn[id(ax)]
    k_ax.yaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=2))
    if target_flops:
        f_ax.axhline(target_flops / 1e6, color="red", linestyle=":", linewidth=1, label="target")
    a_ax.set_ylim(0, 100)
    if classes:
        a_ax.axhline(
            100.0 / classes,
            color="#c44e52",
            linestyle="-.",
            linewidth=0.9,
            label=f"chance (1/{classes})",
        )
    for ax in (h_ax, k_ax, f_ax, a_ax):
        if not drawn[id(ax)]:
            _not_recorded(ax)
    marks = []
    if warmup:
        marks.append((warmup, "#999999", "end of warm-up"))
    converted = [r.get("epoch") for r in rows if r.get("converted_to_joint")]
    if converted and isinstance(converted[0], int | float):
        marks.append((float(converted[0]), "#b07aa1", "FD→JD"))
    for x, colour, label in marks:
        for ax in (h_ax, k_ax, f_ax, a_ax):
            ax.axvline(
                x,
                color=colour,
                linestyle="--",
                linewidth=0.8,
                zorder=0,
                label=label if ax is h_ax else None,
            )
    running = partial_epoch(rows, iters, steps_per_epoch)
    if running is not None:
        epoch, done, full = running
        of = f" of {full}" if full else ""
        for ax in (h_ax, k_ax, f_ax, a_ax):
            ax.axvspan(epoch - 1, epoch, color="#f0e442", alpha=0.15, zorder=0, lw=0)
        h_ax.text(
            epoch - 0.5,
            0.98,
            f"epoch {epoch} running:\n{done}{of} steps",
            transform=h_ax.get_xaxis_transform(),
            ha="center",
            va="top",
            fontsize=7,
            color="#666666",
        )
    # One epoch axis for the four panels: from 0 to the last epoch begun.
    last = max([*complete, running[0] if running else 0, 1])
    for ax in (h_ax, k_ax, f_ax, a_ax):
        ax.set_xlim(0, last + 0.05 * last)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=2))
        _legend(ax)
    fig.suptitle(title, fontsize=11)
    _save(fig, png, "png", stage)


def plot_training(
    rows: list[dict[str, Any]], png: Path, title: str, stage: Staged | None = None
) -> None:
    """Loss, accuracy, learning rate and throughput per epoch of a training run."""
    fig, axes = _run_figure()
    drawn = [
        _panel(
            axes[0][0],
            rows,
            [
                ("train_loss", "train (smoothed labels)", 1.0),
                ("test_loss", "test", 1.0),
                ("test_loss_ema", "test, EMA", 1.0),
            ],
            "loss",
            "cross-entropy",
        ),
        _panel(
            axes[0][1],
            rows,
            [
                ("train_acc", "train (augmented)", 100.0),
                ("test_acc", "test", 100.0),
                ("test_acc_ema", "test, EMA", 100.0),
            ],
            "accuracy",
            "%",
        ),
        _panel(
            axes[1][0], rows, [("lr", "learning rate", 1.0)], "learning rate (end of epoch)", "lr"
        ),
        _panel(
            axes[1][1], rows, [("images_per_s", "images/s", 1.0)], "training throughput", "images/s"
        ),
    ]
    axes[0][1].set_ylim(0, 100)
    for ax, done in zip([a for r in axes for a in r], drawn, strict=True):
        if not done:
            _not_recorded(ax)
        _legend(ax)
    fig.suptitle(title, fontsize=11)
    _save(fig, png, "png", stage)


def _run_figure() -> tuple[Any, list[list[Any]]]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=RUN_SIZE_IN, dpi=RUN_DPI)
    grid = fig.subplots(2, 2)
    # Room below each panel for its legend (see `_legend`).
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.14, top=0.9, hspace=0.75, wspace=0.2)
    return fig, [list(grid[0]), list(grid[1])]


# --------------------------------------------------------------------------------------
# The command's work


def show(
    source: Path | str, prefix: Path | str | None = None, space: str | None = None
) -> ShowReport:
    """Draw an arch.json, or a run directory's architecture and metrics. `space` reads a
    minimal architecture file against that space. Every picture is written, or none."""
    source = Path(source)
    report = ShowReport()
    if prefix is not None and Path(prefix).is_dir():
        prefix = Path(prefix) / "arch"  # a directory: the pictures go inside it
    rows: list[dict[str, Any]] = []
    iters: list[dict[str, Any]] = []
    if source.is_dir():
        rows = read_metrics(source / METRICS_FILE)
        iters = read_metrics(source / METRICS_FILE, "iter")
        if not (source / ARCH_FILE).is_file() and not rows and not iters:
            raise FpnasError(f"{source}: neither {ARCH_FILE} nor metrics in {METRICS_FILE}")
        base = Path(prefix) if prefix else source / "arch"
    else:
        base = Path(prefix) if prefix else source.with_suffix("")
    # A run directory shows its metrics before its arch.json is written.
    loaded: Source | None = None
    if not source.is_dir() or (source / ARCH_FILE).is_file():
        loaded = open_source(source, space, weights=False)
    with staged_files() as stage:
        if loaded is not None:
            compiled, arch = loaded.space, loaded.arch
            report.summary = summary_line(compiled, arch, loaded.extra)
            report.table = arch_table(compiled, arch)
            png, svg = _with_suffix(base, ".png"), _with_suffix(base, ".svg")
            draw_architecture(compiled, arch, png, svg, stage=stage)
            report.written += [png, svg]
        if rows or iters:
            name = source.resolve().name or str(source)
            if iters or any("entropy" in r or "k" in r for r in rows):
                png = _run_png(source, prefix, "search")
                settings = _search_settings(source)
                classes = loaded.arch.classes if loaded is not None else settings.classes
                plot_search(
                    rows,
                    png,
                    f"search run {name}",
                    settings.target,
                    settings.warmup,
                    iters,
                    classes=classes,
                    steps_per_epoch=settings.steps_per_epoch,
                    stage=stage,
                )
            else:
                png = _run_png(source, prefix, "training")
                plot_training(rows, png, f"training run {name}", stage=stage)
            report.written.append(png)
    return report


def _run_png(run_dir: Path, prefix: Path | str | None, kind: str) -> Path:
    return Path(f"{prefix}-{kind}.png") if prefix else run_dir / f"{kind}.png"


def _with_suffix(base: Path, suffix: str) -> Path:
    return base.with_name(base.name + suffix)


@dataclass
class _Settings:
    target: float | None = None
    warmup: float | None = None
    classes: int | None = None
    steps_per_epoch: int | None = None


def _search_settings(run_dir: Path) -> _Settings:
    """The FLOPS target, warm-up epochs, classes and steps per epoch of a search run,
    where its config.json (the search's settings, `SearchConfig`) and space.json record
    them."""
    out = _Settings()
    config = _json_object(run_dir / CONFIG_FILE)

    def number(key: str) -> float | None:
        value = config.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return float(value)

    out.target, out.warmup = number("target_flops"), number("warmup_epochs")
    classes, steps = number("classes"), number("steps_per_epoch")
    out.classes = int(classes) if classes and classes >= 1 else None
    out.steps_per_epoch = int(steps) if steps and steps >= 1 else None
    if out.classes is None:
        classes = _json_object(run_dir / SEARCH_SPACE).get("classes")
        if isinstance(classes, int) and not isinstance(classes, bool) and classes >= 1:
            out.classes = classes
    return out


def _json_object(path: Path) -> dict[str, Any]:
    """A run file's JSON object; empty where it is missing or unreadable (a picture is
    drawn without what it would have said)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return {}
    return doc if isinstance(doc, dict) else {}
