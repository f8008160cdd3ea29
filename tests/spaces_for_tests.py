"""Search spaces built directly in Python, for the cost-model and supernet tests.

They mirror the bundled `.space` files (paper Tables 1, 2, D.13-D.15 and MobileNetV2 1.0)
so that those tests do not depend on the parser, plus a few small spaces that exercise
the corners (per-block decisions, expansion of the output, SE relative to the input,
hard-sigmoid gate, skip refused where shapes differ, no head, several fc layers).
`bundled_or_python()` prefers the bundled files once the parser can load them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

from fpnas_dsl.ir import (
    SHARABLE,
    Conv,
    Linear,
    Micro,
    Row,
    Scope,
    Sharable,
    Space,
    Value,
    Variable,
    VarName,
)


def var(name: VarName, choices: Sequence[Value], scope: Scope = "row") -> Variable:
    return Variable(name=name, choices=tuple(choices), scope=scope)


def span(lo: float, hi: float, step: float) -> tuple[float, ...]:
    """(min, max, step) as the paper writes it, inclusive."""
    count = round((hi - lo) / step) + 1
    return tuple(round(lo + i * step, 6) for i in range(count))


def ints(lo: int, hi: int, step: int) -> tuple[int, ...]:
    return tuple(range(lo, hi + 1, step))


def fbnet_micro(name: str = "fbnetv2", scope: Scope = "row", splits: bool = False) -> Micro:
    attention = ("none", "se", "sa2", "sa4") if splits else ("none", "se")
    return Micro(
        name=name,
        kernel=var("kernel", (0, 3, 5), scope),
        act=var("act", ("relu", "swish"), scope),
        attention=var("attention", attention, scope),
        se_ratio=0.25,
        se_relative_to="expanded",
        gate="hsigmoid",
    )


def _fbnet_rows(micro: str) -> tuple[Row, ...]:
    e = span(0.75, 4.5, 0.75)
    table: list[tuple[tuple[float, ...], tuple[int, ...], int, int]] = [
        ((1.0,), ints(12, 16, 4), 1, 1),
        (e, ints(16, 24, 4), 1, 2),
        (e, ints(16, 24, 4), 2, 1),
        (e, ints(16, 40, 8), 1, 2),
        (e, ints(16, 40, 8), 2, 1),
        (e, ints(48, 80, 8), 1, 2),
        (e, ints(48, 80, 8), 2, 1),
        (e, ints(72, 112, 8), 3, 1),
        (e, ints(112, 184, 8), 1, 2),
        (e, ints(112, 184, 8), 3, 1),
    ]
    return tuple(
        Row(
            micro=micro,
            expansion=var("expansion", exp),
            channels=var("channels", ch),
            repeat=rep,
            stride=s,
        )
        for exp, ch, rep, s in table
    )


def fbnetv2_f(resolution: int = 224) -> Space:
    return Space(
        name="fbnetv2_f",
        resolution=resolution,
        in_channels=3,
        classes=1000,
        skip_mismatch="shortcut",
        micros=(fbnet_micro(),),
        stem=(Conv(out_channels=16, kernel=3, stride=2, act="hswish"),),
        rows=_fbnet_rows("fbnetv2"),
        head=(Conv(out_channels=1984, kernel=1, act="hswish"),),
        classifier=(Linear(dropout=0.2),),
    )


def fbnetv2_f_fine(resolution: int = 224) -> Space:
    return fbnetv2_f(resolution).model_copy(
        update={"name": "fbnetv2_f_fine", "micros": (fbnet_micro(scope="block"),)}
    )


def fbnetv2_f_pp(resolution: int = 224) -> Space:
    return fbnetv2_f(resolution).model_copy(
        update={"name": "fbnetv2_f_pp", "micros": (fbnet_micro(splits=True),)}
    )


_L_TABLES: dict[str, tuple[int, int, list[tuple[tuple[int, int, int], int, int]]]] = {
    # name: (resolution, stem channels, [(channels (min, max, step), repeat, stride)])
    "fpnas_l0": (
        224,
        16,
        [
            ((8, 32, 8), 1, 1),
            ((16, 32, 8), 2, 2),
            ((16, 32, 8), 2, 1),
            ((16, 56, 8), 2, 2),
            ((16, 56, 8), 2, 1),
            ((48, 96, 16), 2, 2),
            ((48, 96, 16), 2, 1),
            ((48, 96, 16), 2, 1),
            ((48, 96, 16), 2, 1),
            ((72, 136, 16), 2, 1),
            ((112, 224, 16), 2, 2),
            ((112, 224, 16), 2, 1),
            ((168, 280, 16), 2, 1),
        ],
    ),
    "fpnas_l1": (
        240,
        24,
        [
            ((16, 40, 8), 1, 1),
            ((24, 40, 8), 2, 2),
            ((24, 40, 8), 2, 1),
            ((24, 72, 8), 3, 2),
            ((24, 72, 8), 2, 1),
            ((64, 120, 16), 3, 2),
            ((64, 120, 16), 3, 1),
            ((88, 168, 16), 3, 1),
            ((88, 168, 16), 3, 1),
            ((136, 272, 16), 2, 2),
            ((136, 272, 16), 2, 1),
            ((208, 336, 16), 2, 1),
            ((208, 336, 16), 2, 1),
        ],
    ),
}
_L_TABLES["fpnas_l2"] = (256, 24, _L_TABLES["fpnas_l1"][2])


def fpnas_l(name: str, resolution: int | None = None) -> Space:
    res, stem, table = _L_TABLES[name]
    e = span(1.5, 6.0, 0.75)
    rows = tuple(
        Row(
            micro="fpnas",
            expansion=var("expansion", e),
            channels=var("channels", ints(*ch)),
            repeat=rep,
            stride=s,
        )
        for ch, rep, s in table
    )
    return Space(
        name=name,
        resolution=resolution or res,
        in_channels=3,
        classes=1000,
        skip_mismatch="shortcut",
        micros=(fbnet_micro("fpnas", splits=True),),
        stem=(Conv(out_channels=stem, kernel=3, stride=2, act="hswish"),),
        rows=rows,
        head=(Conv(out_channels=1984, kernel=1, act="hswish"),),
        classifier=(Linear(dropout=0.2),),
    )


def _width(channels: int, multiplier: float) -> int:
    """torchvision's channel rounding for a width multiplier."""
    scaled = max(8, int(channels * multiplier + 4) // 8 * 8)
    return scaled + 8 if scaled < 0.9 * channels * multiplier else scaled


def mobilenet_v2(resolution: int = 224, width: float = 1.0) -> Space:
    """torchvision's mobilenet_v2(width_mult=width): every choice a singleton."""
    micro = Micro(
        name="mbv2",
        kernel=var("kernel", (3,)),
        act=var("act", ("relu6",)),
        attention=var("attention", ("none",)),
    )
    table = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1)]
    table += [(6, 160, 3, 2), (6, 320, 1, 1)]
    rows = tuple(
        Row(
            micro="mbv2",
            expansion=var("expansion", (float(t),)),
            channels=var("channels", (_width(c, width),)),
            repeat=n,
            stride=s,
        )
        for t, c, n, s in table
    )
    suffix = "" if width == 1.0 else f"_{round(width * 100):03d}"
    return Space(
        name=f"mobilenet_v2{suffix}",
        resolution=resolution,
        in_channels=3,
        classes=1000,
        micros=(micro,),
        stem=(Conv(out_channels=_width(32, width), kernel=3, stride=2, act="relu6"),),
        rows=rows,
        head=(Conv(out_channels=_width(1280, max(1.0, width)), kernel=1, act="relu6"),),
        classifier=(Linear(dropout=0.2),),
    )


def tiny(
    resolution: int = 16,
    *,
    expansion_of: Literal["input", "output"] = "input",
    skip_mismatch: Literal["forbid", "project", "shortcut"] = "project",
    se_relative_to: Literal["input", "expanded"] = "expanded",
    block_scope: bool = False,
    head: bool = True,
    share: Sequence[Sharable] = SHARABLE,
) -> Space:
    """A small space whose every architecture can be enumerated (brute-force checks)."""
    scope: Scope = "block" if block_scope else "row"
    micro = Micro(
        name="tiny",
        kernel=var("kernel", (0, 3, 5), scope),
        act=var("act", ("relu", "hswish"), scope),
        attention=var("attention", ("none", "se", "sa2", "sa4"), scope),
        se_ratio=0.25,
        se_relative_to=se_relative_to,
        gate="sigmoid",
        sa_min_width=8,
        share=tuple(share),
    )
    rows = (
        Row(
            micro="tiny",
            expansion=var("expansion", (1.0, 3.0)),
            channels=var("channels", (8, 16)),
            repeat=1,
            stride=1,
        ),
        Row(
            micro="tiny",
            expansion=var("expansion", (0.5, 1.0, 2.0)),
            channels=var("channels", (16, 24)),
            repeat=2,
            stride=2,
            overrides=(var("attention", ("none", "sa2")),),
        ),
    )
    return Space(
        name="tiny",
        resolution=resolution,
        in_channels=3,
        classes=5,
        expansion_of=expansion_of,
        skip_mismatch=skip_mismatch,
        micros=(micro,),
        stem=(Conv(out_channels=8, kernel=3, stride=2, act="relu"),),
        rows=rows,
        head=(Conv(out_channels=32, kernel=1, act="relu"),) if head else (),
        classifier=(Linear(out_features=24, act="relu", dropout=0.1), Linear()),
    )


PYTHON_SPACES: dict[str, Callable[[], Space]] = {
    "fbnetv2_f": fbnetv2_f,
    "fbnetv2_f_fine": fbnetv2_f_fine,
    "fbnetv2_f_pp": fbnetv2_f_pp,
    "fpnas_l0": lambda: fpnas_l("fpnas_l0"),
    "fpnas_l1": lambda: fpnas_l("fpnas_l1"),
    "fpnas_l2": lambda: fpnas_l("fpnas_l2"),
    "mobilenet_v2": mobilenet_v2,
    "mobilenet_v2_035": lambda: mobilenet_v2(width=0.35),
}

#: The bundled spaces the tests cover (file stems under spaces/).
BUNDLED = tuple(PYTHON_SPACES)


def bundled_or_python(name: str) -> Space:
    """The bundled space when the parser loads it, else the Python-built twin."""
    try:
        from fpnas_dsl.parser import load_space  # type: ignore[import-not-found,unused-ignore]
        from fpnas_dsl.resources import resolve_space_path
    except ImportError:
        return PYTHON_SPACES[name]()
    if resolve_space_path(name) is None:
        return PYTHON_SPACES[name]()
    space: Space = load_space(name)
    return space
