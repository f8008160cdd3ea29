"""Semantic checks of a search space: everything the grammar cannot say.

Two layers, one vocabulary of messages:

- value checks (`check_value`, `check_word`) that the parser applies to each literal as it
  reads it, so that an error points at the offending token;
- `validate_space(space, text)`, run on the finished IR (and on IR read back from JSON,
  or after `--resolution`/`--classes` overrides): cross references, the table against its
  micros, skip against shapes, the strides against the resolution.

Every failure is a `SpaceError` positioned at file:line:column, saying what was found and
what is allowed. The first error found is raised.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Sequence
from fractions import Fraction

from fpnas_dsl import ir
from fpnas_dsl.errors import SpaceError
from fpnas_dsl.ir import Conv, Micro, Row, Space, Span, Value, Variable, VarName

OPERATORS = ir.OPERATORS
STRIDES = (1, 2)
EXPANSION_OF = ("input", "output")
SKIP_MODES = ("project", "shortcut", "forbid")
SE_RELATIVE_TO = ("input", "expanded")
GATES = ir.GATES
BN_SETTINGS = ("eps", "momentum")
#: The largest batch-norm eps accepted (a larger one is surely a typo for momentum).
MAX_BN_EPS = 0.1
POOLS = ("avg",)
SCOPES = ("row", "block")
#: Activation names accepted on fixed layers (stem, head, fc): "none" means no activation.
LAYER_ACTIVATIONS = (*ir.ACTIVATIONS, "none")
#: The paper writes attention as a number of splits: 0 none, 1 SE, 2 and 4 split-attention.
ATTENTION_BY_SPLITS = {0: "none", 1: "se", 2: "sa2", 4: "sa4"}
#: A range may not enumerate more choices than this (a guard against `(1, 1e9, 1)`).
MAX_CHOICES = 1024
#: Every number in a space lies in [-MAX_NUMBER, MAX_NUMBER].
MAX_NUMBER = 10**9

_WHAT: dict[str, str] = {
    "kernel": "kernel size",
    "act": "activation",
    "attention": "attention",
    "expansion": "expansion",
    "channels": "channels",
}


# --------------------------------------------------------------------------------------
# Formatting and error construction


def fmt_value(value: Value | Fraction) -> str:
    """A value as a user wrote it: 4.5, 16, relu (floats without a trailing .0 only if whole)."""
    if isinstance(value, Fraction):
        value = int(value) if value.denominator == 1 else float(value)
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            return f"{value:g}"
        return f"{value:.1f}"
    return str(value)


def fmt_choices(values: Iterable[Value]) -> str:
    return "{" + ", ".join(fmt_value(v) for v in values) + "}"


def fmt_allowed(allowed: Sequence[str]) -> str:
    return ", ".join(allowed)


def did_you_mean(word: str, allowed: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(word, list(allowed), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


def error(
    message: str, span: Span | None, text: str | None = None, hint: str | None = None
) -> SpaceError:
    """A SpaceError at `span` (the start of it), drawing the line from `text`."""
    if span is None:
        return SpaceError(message, hint=hint)
    return SpaceError(
        message, file=span.file, line=span.line, column=span.column, source=text, hint=hint
    )


def check_word(
    word: str, allowed: Sequence[str], what: str, aliases: dict[str, str] | None = None
) -> tuple[str, str | None] | None:
    """None if `word` is allowed, else (message, hint). `aliases` (other names of allowed
    words, such as PyTorch's `silu` for `swish`) are listed and suggested too."""
    if word in allowed or (aliases and aliases.get(word) in allowed):
        return None
    names = [a for a, target in (aliases or {}).items() if target in allowed]
    also = f" (or PyTorch's {fmt_allowed(names)})" if names else ""
    return (
        f"unknown {what} '{word}'; allowed: {fmt_allowed(allowed)}{also}",
        did_you_mean(word, [*allowed, *names]),
    )


def check_value(name: VarName, value: Value) -> str | None:
    """None if `value` is a valid choice of variable `name`, else the message."""
    if name == "kernel":
        if not isinstance(value, int) or isinstance(value, bool):
            return f"kernel size must be a whole number, found {fmt_value(value)}"
        if value != ir.SKIP_KERNEL and (value < 1 or value % 2 == 0):
            return (
                f"kernel size {value} is not allowed: a kernel is odd (1, 3, 5, 7, ...) "
                "or 0 for skip"
            )
        return None
    if name == "act":
        if not isinstance(value, str) or value not in ir.ACTIVATIONS:
            return f"unknown activation {_quoted(value)}; allowed: {fmt_allowed(ir.ACTIVATIONS)}"
        return None
    if name == "attention":
        if not isinstance(value, str) or value not in ir.ATTENTIONS:
            return (
                f"unknown attention {_quoted(value)}; allowed: {fmt_allowed(ir.ATTENTIONS)} "
                "(or the splits 0, 1, 2, 4)"
            )
        return None
    if name == "expansion":
        if isinstance(value, (str, bool)):
            return f"expansion must be a number, found {_quoted(value)}"
        if not value > 0 or not math.isfinite(value):
            return f"expansion must be positive, found {fmt_value(value)}"
        return None
    if name == "channels":
        if not isinstance(value, int) or isinstance(value, bool):
            return f"channels must be a whole number, found {_quoted(value)}"
        if value < 1:
            return f"channels must be at least 1, found {value}"
        return None
    return f"unknown variable '{name}'"


def _quoted(value: Value) -> str:
    return f"'{value}'" if isinstance(value, str) else fmt_value(value)


# --------------------------------------------------------------------------------------
# Spatial sizes


def downsampling(space: Space) -> list[tuple[str, int, Span | None]]:
    """The strided layers in order: (description, stride, span), stem, rows, head."""
    out: list[tuple[str, int, Span | None]] = []
    for i, conv in enumerate(space.stem):
        out.append((f"stem conv {i + 1}", conv.stride, conv.span))
        if conv.maxpool:
            out.append((f"stem conv {i + 1}'s maxpool", conv.maxpool_stride, conv.span))
    for r, row in enumerate(space.rows):
        out.append((f"row {r + 1}", row.stride, row.span))
    for i, conv in enumerate(space.head):
        out.append((f"head conv {i + 1}", conv.stride, conv.span))
    return out


def feature_sizes(space: Space) -> list[int]:
    """Side of the feature map after each entry of `downsampling` ("same" padding: ceil)."""
    size = space.resolution
    sizes = []
    for _, stride, _ in downsampling(space):
        size = -(-size // stride)
        sizes.append(size)
    return sizes


def min_resolution(space: Space) -> int:
    """The smallest input side for which no stride-2 layer meets a 1x1 feature map."""
    halvings = sum(1 for _, stride, _ in downsampling(space) if stride > 1)
    return 2 ** (halvings - 1) + 1 if halvings else 1


# --------------------------------------------------------------------------------------
# The whole space


def validate_space(space: Space, text: str | None = None) -> Space:
    """Check a space; return it unchanged or raise the first SpaceError found."""
    _Validator(space, text).run()
    return space


class _Validator:
    def __init__(self, space: Space, text: str | None) -> None:
        self.space = space
        self.text = text

    def fail(self, message: str, span: Span | None, hint: str | None = None) -> SpaceError:
        return error(message, span if span is not None else self.space.span, self.text, hint)

    def run(self) -> None:
        self.check_header()
        micros = self.check_micros()
        self.check_layers("stem", self.space.stem, "stem conv 3x3 16 stride 2 act hswish")
        self.check_rows(micros)
        for conv in self.space.head:  # none at all is `head none` (ResNet)
            self.check_conv(conv)
        self.check_classifier()
        self.check_skip()
        self.check_resolution()

    # ---- header ----------------------------------------------------------------------

    def check_header(self) -> None:
        s = self.space
        if not 0 < s.bn_eps <= MAX_BN_EPS:
            raise self.fail(
                f"batch-norm eps must be in (0, {MAX_BN_EPS:g}], found {s.bn_eps:g}", s.span
            )
        if not 0 < s.bn_momentum <= 1:
            raise self.fail(
                f"batch-norm momentum must be in (0, 1], found {s.bn_momentum:g}", s.span
            )
        for what, value in (
            ("input resolution", s.resolution),
            ("input channels", s.in_channels),
            ("number of classes", s.classes),
        ):
            if value < 1:
                raise self.fail(f"{what} must be at least 1, found {value}", s.span)
            if value > MAX_NUMBER:
                raise self.fail(f"{what} must be at most {MAX_NUMBER}, found {value}", s.span)

    # ---- micros ----------------------------------------------------------------------

    def check_micros(self) -> dict[str, Micro]:
        micros: dict[str, Micro] = {}
        if not self.space.micros:
            raise self.fail(
                f"space '{self.space.name}' declares no micro-architecture",
                self.space.span,
                "add e.g. `micro fbnet { kernel {0, 3, 5}; act {relu, swish}; attention none }`",
            )
        for micro in self.space.micros:
            if micro.name in micros:
                first = micros[micro.name].span
                raise self.fail(f"duplicate micro '{micro.name}'" + _first_at(first), micro.span)
            micros[micro.name] = micro
            for name in ir.MICRO_VARIABLES:
                var = micro.variable(name)
                if var.name != name:
                    raise self.fail(
                        f"micro '{micro.name}' holds variable '{var.name}' where {name} belongs",
                        var.span or micro.span,
                    )
                self.check_variable(var, micro.span)
            for what, value in (("se ratio", micro.se_ratio), ("sa ratio", micro.sa_ratio)):
                if not value > 0 or not math.isfinite(value):
                    raise self.fail(f"{what} must be positive, found {value:g}", micro.span)
            if micro.sa_min_width < 1:
                raise self.fail(
                    f"sa min width must be at least 1, found {micro.sa_min_width}", micro.span
                )
            if micro.divisor < 1:
                raise self.fail(f"divisor must be at least 1, found {micro.divisor}", micro.span)
            if micro.se_divisor is not None and micro.se_divisor < 1:
                raise self.fail(
                    f"se divisor must be at least 1, found {micro.se_divisor}", micro.span
                )
        return micros

    def check_variable(self, var: Variable, fallback: Span | None) -> None:
        span = var.span or fallback
        if not var.choices:
            raise self.fail(f"{var.name} has no choices (an empty set)", span)
        seen: set[Value] = set()
        for value in var.choices:
            message = check_value(var.name, value)
            if message is not None:
                raise self.fail(message, span)
            if value in seen:
                raise self.fail(
                    f"duplicate choice {fmt_value(value)} in {var.name} {fmt_choices(var.choices)}",
                    span,
                )
            seen.add(value)
        if len(var.choices) > MAX_CHOICES:
            raise self.fail(
                f"{var.name} has {len(var.choices)} choices; at most {MAX_CHOICES} are allowed",
                span,
            )

    # ---- fixed layers ----------------------------------------------------------------

    def check_layers(self, where: str, convs: Sequence[Conv], example: str) -> None:
        if not convs:
            raise self.fail(
                f"space '{self.space.name}' has no {where} layer",
                self.space.span,
                f"add e.g. `{example}`",
            )
        for conv in convs:
            self.check_conv(conv)

    def check_conv(self, conv: Conv) -> None:
        if conv.kernel < 1 or conv.kernel % 2 == 0:
            raise self.fail(
                f"conv kernel {conv.kernel}x{conv.kernel} is not allowed: a kernel is odd "
                "(1, 3, 5, 7, ...)",
                conv.span,
            )
        if conv.out_channels < 1:
            raise self.fail(
                f"conv output channels must be at least 1, found {conv.out_channels}", conv.span
            )
        if conv.stride not in STRIDES:
            raise self.fail(f"stride {conv.stride} is not allowed; allowed: 1, 2", conv.span)
        if conv.act is not None and conv.act not in ir.ACTIVATIONS:
            raise self.fail(
                f"unknown activation '{conv.act}'; allowed: {fmt_allowed(LAYER_ACTIVATIONS)}",
                conv.span,
                did_you_mean(conv.act, ir.ACTIVATIONS),
            )

    def check_classifier(self) -> None:
        layers = self.space.classifier
        if not layers:
            raise self.fail(
                f"space '{self.space.name}' has no classifier", self.space.span, "add `fc classes`"
            )
        for layer in layers:
            if layer.out_features is not None and layer.out_features < 1:
                raise self.fail(
                    f"fc width must be at least 1, found {layer.out_features}", layer.span
                )
            if layer.act is not None and layer.act not in ir.ACTIVATIONS:
                raise self.fail(
                    f"unknown activation '{layer.act}'; allowed: {fmt_allowed(LAYER_ACTIVATIONS)}",
                    layer.span,
                )
            if not 0 <= layer.dropout < 1:
                raise self.fail(f"dropout must be in [0, 1), found {layer.dropout:g}", layer.span)
        if layers[-1].out_features is not None:
            raise self.fail(
                f"the last fc layer must output the classes, found fc {layers[-1].out_features}",
                layers[-1].span,
                "write `fc classes`, so that --classes can change it",
            )

    # ---- the table -------------------------------------------------------------------

    def check_rows(self, micros: dict[str, Micro]) -> None:
        if not self.space.rows:
            raise self.fail(
                f"space '{self.space.name}' has an empty table",
                self.space.span,
                "add a row, e.g. `mbconv fbnet (0.75, 4.5, 0.75) (16, 24, 4) 1 2`",
            )
        for r, row in enumerate(self.space.rows, start=1):
            self.check_row(r, row, micros)

    def check_row(self, r: int, row: Row, micros: dict[str, Micro]) -> None:
        if row.micro not in micros:
            raise self.fail(
                f"row {r} uses undefined micro '{row.micro}'; defined: {fmt_allowed(list(micros))}",
                row.span,
                did_you_mean(row.micro, micros),
            )
        micro = micros[row.micro]
        if row.repeat < 1:
            raise self.fail(f"row {r}: repeat must be at least 1, found {row.repeat}", row.span)
        if row.repeat > MAX_CHOICES:
            raise self.fail(
                f"row {r}: repeat must be at most {MAX_CHOICES}, found {row.repeat}", row.span
            )
        if row.stride not in STRIDES:
            raise self.fail(f"row {r}: stride {row.stride} is not allowed; allowed: 1, 2", row.span)
        for name, var in (("expansion", row.expansion), ("channels", row.channels)):
            if var.name != name:
                raise self.fail(
                    f"row {r}: the {name} column holds variable '{var.name}'", var.span or row.span
                )
            self.check_variable(var, row.span)
        self.check_operator(r, row, micro)
        seen: set[str] = set()
        for override in row.overrides:
            span = override.span or row.span
            if override.name not in ir.MICRO_VARIABLES:
                raise self.fail(
                    f"row {r}: micro '{micro.name}' declares no variable '{override.name}' to "
                    f"override; it declares {fmt_allowed(ir.MICRO_VARIABLES)}",
                    span,
                    "expansion and channels are columns of the table"
                    if override.name in ("expansion", "channels")
                    else None,
                )
            if override.name in seen:
                raise self.fail(f"row {r}: {override.name} is overridden twice", span)
            seen.add(override.name)
            self.check_variable(override, row.span)
            declared = micro.variable(override.name).choices
            outside = [v for v in override.choices if v not in declared]
            if outside:
                raise self.fail(
                    f"row {r}: {override.name} {fmt_choices(outside)} is outside the choices of "
                    f"micro '{micro.name}': {override.name} {fmt_choices(declared)}",
                    span,
                    "a row may only narrow or fix a micro's choices",
                )

    def check_operator(self, r: int, row: Row, micro: Micro) -> None:
        """A row gives its operator only what the operator takes (`ir.OPERATOR_VARIABLES`):
        no expansion but 1 where it takes none, attention `none` where it takes none, and
        only the attentions it can build."""
        takes = ir.OPERATOR_VARIABLES[row.op]
        allowed = fmt_allowed(takes)
        if "expansion" not in takes and row.expansion.choices != (1.0,):
            raise self.fail(
                f"row {r}: {row.op} takes no expansion, found expansion "
                f"{fmt_choices(row.expansion.choices)}",
                row.expansion.span or row.span,
                f"write - in the expansion column; {row.op} takes {allowed}",
            )
        attention = self.space.row_variable(row, "attention")
        offered = ir.OPERATOR_ATTENTIONS.get(row.op, ("none",))
        outside = [a for a in attention.choices if a not in offered]
        if not outside:
            return
        overridden = _override_span(row, "attention")
        source = "" if overridden else f" (micro '{micro.name}' offers them)"
        if "attention" not in takes:
            raise self.fail(
                f"row {r}: {row.op} takes no attention, found attention "
                f"{fmt_choices(attention.choices)}{source}",
                overridden or row.span,
                f"write attention=none in this row; {row.op} takes {allowed}",
            )
        raise self.fail(
            f"row {r}: {row.op} cannot have attention {fmt_choices(outside)}{source}; "
            f"allowed: {fmt_allowed(offered)}",
            overridden or row.span,
            "split-attention needs the depthwise convolution of mbconv or ds",
        )

    # ---- skip where shapes differ ----------------------------------------------------

    def check_skip(self) -> None:
        space = self.space
        if space.skip_mismatch != "forbid":
            return
        for spec in ir.expand_blocks(space):
            row = space.rows[spec.row]
            kernel = space.row_variable(row, "kernel")
            if ir.SKIP_KERNEL not in kernel.choices:
                continue
            if not ir.shapes_can_differ(space, spec.stride, spec.in_channels, spec.var("channels")):
                continue
            why = _shape_change(spec)
            span = _override_span(row, "kernel") or row.span
            block = spec.index - _first_block(space, spec.row) + 1
            if all(k == ir.SKIP_KERNEL for k in kernel.choices):
                raise self.fail(
                    f"row {spec.row + 1} offers only skip (kernel 0), but its block {block} "
                    f"changes shape ({why}) and cannot be an identity",
                    span,
                    "give the row a kernel size, or declare `skip where shapes differ: project`",
                )
            if kernel.fixed or kernel.scope == "row":
                raise self.fail(
                    f"row {spec.row + 1} offers skip (kernel 0 in {fmt_choices(kernel.choices)}) "
                    f"but its block {block} changes shape ({why}), and the space declares "
                    "`skip where shapes differ: forbid`",
                    span,
                    f"drop 0 in this row (kernel={fmt_choices(k for k in kernel.choices if k)}), "
                    "decide kernel per block (`per block: kernel`), or declare "
                    "`skip where shapes differ: project`",
                )

    # ---- resolution ------------------------------------------------------------------

    def check_resolution(self) -> None:
        space = self.space
        size = space.resolution
        for what, stride, span in downsampling(space):
            if stride > 1 and size == 1:
                need = min_resolution(space)
                raise self.fail(
                    f"the strides reduce the {space.resolution}x{space.resolution} input below "
                    f"1x1: {what} has stride {stride} but receives a 1x1 feature map",
                    span,
                    f"this space needs an input of at least {need}x{need}",
                )
            size = -(-size // stride)


def _first_at(span: Span | None) -> str:
    return f" (first defined at line {span.line})" if span is not None and span.line else ""


def _override_span(row: Row, name: str) -> Span | None:
    for override in row.overrides:
        if override.name == name:
            return override.span
    return None


def _first_block(space: Space, row: int) -> int:
    return sum(r.repeat for r in space.rows[:row])


def _shape_change(spec: ir.BlockSpec) -> str:
    if spec.stride != 1:
        return f"stride {spec.stride}"
    ins = fmt_choices(spec.in_channels.choices)
    outs = fmt_choices(spec.var("channels").choices)
    if spec.in_channels.decision is None and len(spec.in_channels.choices) == 1:
        ins = fmt_value(spec.in_channels.choices[0])
    return f"{ins} channels in, {outs} out"
