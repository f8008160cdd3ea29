"""What `fpnas compile` prints: the numbers a researcher checks first about a space.

`summarize(space)` returns a JSON-ready dict (`--json` prints it); `render(summary)` draws
it as text. The keys `name, resolution, blocks, decisions, architectures (exact, a string),
log10_architectures, uniform_entropy_nats, initial_k, alpha_params_factorized,
alpha_params_joint` are the stable interface (`architectures_sci`, the count in scientific
notation, sits beside the exact value, which can have thousands of digits); `networks`
(and `networks_sci`) counts distinct networks, where `architectures` counts index tuples
(what the search samples):
choices of a skipped block count once (`ir.count_networks`); `notes` holds positioned
remarks that are not errors (a divisor that rounds SE widths); `rows` (the table, row by
row), `layout` (the decisions), `variables` (per variable) and `cost` add detail.

FLOPS/params hook: when `fpnas_dsl.cost` is importable and has
`cost_range(space) -> {flops_min, flops_median, flops_max, params_min, params_median,
params_max}`, its result is included under "cost" (see `cost_hook`).
"""

from __future__ import annotations

import importlib
import itertools
import math
import sys
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from fpnas_dsl import ir
from fpnas_dsl.footprint import human_bytes, supernet_size
from fpnas_dsl.ir import Space
from fpnas_dsl.validate import feature_sizes, fmt_choices, fmt_value

#: lambda of the paper's adaptive sampling: K = max(1, floor(lambda x H)).
SAMPLING_LAMBDA = 0.25

COST_KEYS = ("flops_min", "flops_median", "flops_max", "params_min", "params_median", "params_max")


def initial_k(entropy_nats: float, lam: float = SAMPLING_LAMBDA) -> int:
    """K = max(1, floor(lambda x H)), the core's formula."""
    return max(1, math.floor(lam * entropy_nats))


def cost_hook() -> Callable[[Space], dict[str, Any]] | None:
    """`fpnas_dsl.cost.cost_range` once the cost model exists, else None."""
    try:
        module = importlib.import_module("fpnas_dsl.cost")
    except ImportError:
        return None
    fn = getattr(module, "cost_range", None)
    return fn if callable(fn) else None


def summarize(space: Space, *, cost: bool = True) -> dict[str, Any]:
    """The summary of a (validated) space as a JSON-ready dict."""
    layout = space.layout
    count = ir.count_architectures(space)
    networks = ir.count_networks(space)
    entropy = layout.log_count
    sizes = feature_sizes(space)
    stem_n = sum(1 + bool(conv.maxpool) for conv in space.stem)  # a maxpool downsamples too
    rows: list[dict[str, Any]] = []
    first_block = 0
    for r, row in enumerate(space.rows):
        size = sizes[stem_n + r]
        variables = {}
        for name in ir.VARIABLE_ORDER:
            var = space.row_variable(row, name)
            variables[name] = {
                "choices": list(var.choices),
                "scope": "fixed" if var.fixed else var.scope,
                "overridden": any(o.name == name for o in row.overrides),
            }
        rows.append(
            {
                "row": r + 1,
                "op": row.op,
                "micro": row.micro,
                "repeat": row.repeat,
                "stride": row.stride,
                "blocks": [first_block + 1, first_block + row.repeat],
                "output_size": size,
                "variables": variables,
            }
        )
        first_block += row.repeat
    decisions = [
        {
            "name": d.name,
            "variables": list(d.variables),
            "cardinalities": list(d.cardinalities),
            "blocks": [b + 1 for b in d.blocks],
        }
        for d in layout.decisions
    ]
    per_variable: dict[str, dict[str, int]] = {}
    for name in ir.VARIABLE_ORDER:
        cards = [
            c
            for d in layout.decisions
            for v, c in zip(d.variables, d.cardinalities, strict=True)
            if v == name
        ]
        per_variable[name] = {
            "decisions": len(cards),
            "choices_total": sum(cards),
            "max_cardinality": max(cards, default=1),
        }
    out: dict[str, Any] = {
        "name": space.name,
        "resolution": space.resolution,
        "in_channels": space.in_channels,
        "classes": space.classes,
        "expansion_of": space.expansion_of,
        "skip_mismatch": space.skip_mismatch,
        "blocks": len(space.blocks),
        "decisions": len(layout.decisions),
        "architectures": exact(count),
        "architectures_sci": sci(count),
        "networks": exact(networks),
        "networks_sci": sci(networks),
        "log10_architectures": math.log10(count) if count > 0 else None,
        "uniform_entropy_nats": entropy,
        "initial_k": initial_k(entropy),
        "alpha_params_factorized": layout.params_factorized,
        "alpha_params_joint": layout.params_joint,
        "output_size": sizes[-1] if sizes else space.resolution,
        "rows": rows,
        "layout": decisions,
        "variables": per_variable,
        "weight_sharing": {m.name: list(m.share) for m in _used_micros(space)},
        "supernet": supernet_size(space),
        "notes": notes(space),
    }
    if cost:
        hook = cost_hook()
        if hook is not None:
            result = hook(space)
            out["cost"] = {key: result[key] for key in COST_KEYS if key in result}
    return out


def notes(space: Space) -> list[dict[str, Any]]:
    """Remarks on a valid space, positioned like errors: where a micro's divisor (not one
    the SE line sets) rounds an SE width away from ratio x channels, once per micro."""
    out: list[dict[str, Any]] = []
    for micro in _used_micros(space):
        if micro.se_divisor is not None:
            continue  # the user chose the SE's divisor
        found = _rounded_se(space, micro)
        if found is None:
            continue
        block, base, exact_width, width = found
        where = "input" if micro.se_relative_to == "input" else "expanded"
        message = (
            f"micro '{micro.name}': divisor {micro.divisor} {micro.se_width}s SE widths "
            f"(block {block}: {fmt_value(micro.se_ratio)} x {base} {where} channels = "
            f"{fmt_value(exact_width)} becomes {width})"
        )
        hint = (
            "for exactly ratio x channels write `se ..., divisor 1` (with `width floor` to "
            f"truncate), or `se ..., divisor {micro.divisor}` to keep this"
        )
        span = micro.span
        out.append(
            {
                "line": span.line if span else 0,
                "column": span.column if span else 0,
                "message": message,
                "help": hint,
            }
        )
    return out


def _rounded_se(space: Space, micro: ir.Micro) -> tuple[int, int, float, int] | None:
    """(block, channels, ratio x channels, SE width) of the first SE the divisor changes."""
    for spec in space.blocks:
        if spec.micro.name != micro.name or "se" not in spec.var("attention").choices:
            continue
        for cin, cout, exp in itertools.product(
            spec.in_channels.choices, spec.var("channels").choices, spec.var("expansion").choices
        ):
            mid = ir.mid_channels(space, micro, int(cin), int(cout), float(exp))
            base = int(cin) if micro.se_relative_to == "input" else mid
            exact_width = base * micro.se_ratio
            width = micro.se_channels(int(cin), mid)
            if abs(width - exact_width) > 1e-9:
                return spec.index + 1, base, exact_width, width
    return None


def _used_micros(space: Space) -> list[ir.Micro]:
    used = {row.micro for row in space.rows}
    return [m for m in space.micros if m.name in used]


# --------------------------------------------------------------------------------------
# Text


def exact(count: int) -> str:
    """All the digits of `count`, however many (Python refuses more than 4300 by default)."""
    limit = getattr(sys, "get_int_max_str_digits", lambda: 0)()
    if not limit or count.bit_length() < 3.3 * limit:
        return str(count)
    sys.set_int_max_str_digits(0)
    try:
        return str(count)
    finally:
        sys.set_int_max_str_digits(limit)


def sci(count: int) -> str:
    """`count` in scientific notation (`1.23e4761`), without converting it to a string."""
    if count.bit_length() < 1000:
        return f"{count:.2e}".replace("e+", "e")
    log = math.log10(count)
    exponent = math.floor(log)
    mantissa = 10 ** (log - exponent)
    if round(mantissa, 2) >= 10:
        mantissa, exponent = mantissa / 10, exponent + 1
    return f"{mantissa:.2f}e{exponent}"


def count_text(count: int, digits: int = 40) -> str:
    """The exact count where it is short, else scientific notation only."""
    return f"{count:,}" if count < 10**digits else sci(count)


def _choices(values: list[Any]) -> str:
    """One value, a range (min, max, step) when the choices are evenly spaced, else a set."""
    if len(values) == 1:
        return fmt_value(values[0])
    if len(values) >= 3 and all(isinstance(v, (int, float)) for v in values):
        exact = [Fraction(repr(v)) for v in values]
        steps = {b - a for a, b in itertools.pairwise(exact)}
        if len(steps) == 1 and min(steps) > 0:
            step = values[1] - values[0]
            if isinstance(values[0], float):
                step = float(exact[1] - exact[0])
            return f"({fmt_value(values[0])}, {fmt_value(values[-1])}, {fmt_value(step)})"
    return fmt_choices(values)


def _layer(kind: str, conv: ir.Conv) -> str:
    stride = f" stride {conv.stride}" if conv.stride != 1 else ""
    act = f" act {conv.act}" if conv.act else ""
    pool = ""
    if conv.maxpool:
        pool = f" maxpool {conv.maxpool}x{conv.maxpool} stride {conv.maxpool_stride}"
    return f"{kind} conv {conv.kernel}x{conv.kernel} {conv.out_channels}{stride}{act}{pool}"


def _human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:g}"


def _bytes(n: float) -> str:
    return human_bytes(n)


def render(summary: dict[str, Any], space: Space) -> str:
    """The summary as text for a terminal."""
    s = summary
    lines = [
        f"space {s['name']}   ({space.source})",
        f"  input {s['resolution']}x{s['resolution']}x{s['in_channels']}, {s['classes']} classes;"
        f" expansion relative to {s['expansion_of']}; skip where shapes differ:"
        f" {s['skip_mismatch']}",
        "",
    ]
    for conv in space.stem:
        lines.append("  " + _layer("stem", conv))
    header = (
        "row",
        "op",
        "micro",
        "expansion",
        "channels",
        "n",
        "s",
        "kernel",
        "act",
        "attention",
        "out",
    )
    table: list[tuple[str, ...]] = [header]
    for row in s["rows"]:
        v = row["variables"]

        def cell(name: str, v: dict[str, Any] = v) -> str:
            text = _choices(v[name]["choices"])
            return text + ("*" if v[name]["scope"] == "block" else "")

        table.append(
            (
                str(row["row"]),
                row["op"],
                row["micro"],
                cell("expansion") if "expansion" in ir.OPERATOR_VARIABLES[row["op"]] else "-",
                cell("channels"),
                str(row["repeat"]),
                str(row["stride"]),
                cell("kernel"),
                cell("act"),
                cell("attention"),
                f"{row['output_size']}x{row['output_size']}",
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    for conv in space.head:
        lines.append("  " + _layer("head", conv))
    if not space.head:
        lines.append("  head none")
    lines.append(f"  pool {space.pool}")
    for fc in space.classifier:
        width = fc.out_features if fc.out_features is not None else s["classes"]
        extra = f" act {fc.act}" if fc.act else ""
        extra += f" dropout {fc.dropout:g}" if fc.dropout else ""
        lines.append(f"  fc {width}{extra}")
    if any(row["variables"][n]["scope"] == "block" for row in s["rows"] for n in ir.VARIABLE_ORDER):
        lines.append("  (* decided per block; everything else once per row)")
    lines.append("")
    lines.append(
        f"blocks {s['blocks']}   rows {len(s['rows'])}   decisions {s['decisions']}"
        f"   output {s['output_size']}x{s['output_size']}"
    )
    lines.append("decisions (variable:cardinality):")
    described = []
    for d in s["layout"]:
        cards = "  ".join(
            f"{v}:{c}" for v, c in zip(d["variables"], d["cardinalities"], strict=True)
        )
        blocks = d["blocks"]
        where = f"block {blocks[0]}" if len(blocks) == 1 else f"blocks {blocks[0]}-{blocks[-1]}"
        described.append((d["name"], cards, where))
    name_w = max((len(n) for n, _, _ in described), default=0)
    cards_w = max((len(c) for _, c, _ in described), default=0)
    for name, cards, where in described:
        lines.append(f"  {name:<{name_w}}  {cards:<{cards_w}}  {where}")
    if not s["layout"]:
        lines.append("  none: every choice is fixed (a single architecture)")
    lines.append("variables (decisions, choices in total):")
    for name, info in s["variables"].items():
        lines.append(
            f"  {name:<10} {info['decisions']:>3} decisions  {info['choices_total']:>4} choices"
        )
    digits = len(s["architectures"])
    if digits <= 40:
        count = int(s["architectures"])
        shown = f"{count}  ({count_text(count, 6)}, 10^{s['log10_architectures']:.2f})"
    else:
        shown = (
            f"{s['architectures_sci']}  (10^{s['log10_architectures']:.2f}, {digits:,} digits; "
            "the exact value is in --json)"
        )
    networks = int(s["networks"]) if len(s["networks"]) <= 40 else None
    if networks is not None and s["networks"] == s["architectures"]:
        net_line = f"networks             {count_text(networks, 40)}  (every architecture distinct)"
    else:
        net_text = count_text(networks, 40) if networks is not None else s["networks_sci"]
        net_line = (
            f"networks             {net_text}  distinct (choices of skipped blocks count once)"
        )
    lines += [
        "",
        f"architectures        {shown}",
        net_line,
        f"uniform entropy      {s['uniform_entropy_nats']:.4f} nats",
        f"initial K            {s['initial_k']}  (lambda 1/4)",
        f"alpha parameters     {s['alpha_params_factorized']:,} factorized (FD), "
        f"{s['alpha_params_joint']:,} joint (JD)",
    ]
    sharing = s.get("weight_sharing", {})
    for micro, shared in sharing.items():
        what = ", ".join(shared) if shared else "nothing (separate weights per candidate)"
        where = f" (micro {micro})" if len(sharing) > 1 else ""
        lines.append(f"weights shared       {what}{where}")
    size = s.get("supernet")
    if size:
        lines.append(
            f"supernet             {_human(size['params'])} weights, "
            f"{_bytes(size['bytes'])} in float32, a search checkpoint about "
            f"{_bytes(size['checkpoint_bytes'])}"
        )
    cost = s.get("cost")
    fixed = s["networks"] == "1"
    if cost and fixed:
        # One network: its cost is a number, not a range, and exact.
        lines.append(
            f"FLOPS (MACs)         {cost['flops_min']:,}  ({_human(cost['flops_min'])}, exact)"
        )
        lines.append(
            f"params               {cost['params_min']:,}  ({_human(cost['params_min'])}, exact)"
        )
    elif cost:
        lines.append(
            "FLOPS (MACs)         "
            f"min {_human(cost['flops_min'])}  median {_human(cost['flops_median'])}"
            f"  max {_human(cost['flops_max'])}"
        )
        lines.append(
            "params               "
            f"min {_human(cost['params_min'])}  median {_human(cost['params_median'])}"
            f"  max {_human(cost['params_max'])}"
        )
    for note in s.get("notes", ()):
        lines.append(f"{space.source}:{note['line']}:{note['column']}: note: {note['message']}")
        lines.append(f"  help: {note['help']}")
    return "\n".join(lines)
