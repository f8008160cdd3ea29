"""A small valid space and a line editor, shared by the DSL tests (imported by bare name:
pytest puts this directory on sys.path)."""

from __future__ import annotations

#: The keys `fpnas compile --json` must print (issue 3).
REQUIRED_KEYS = {
    "name",
    "resolution",
    "blocks",
    "decisions",
    "architectures",
    "log10_architectures",
    "uniform_entropy_nats",
    "initial_k",
    "alpha_params_factorized",
    "alpha_params_joint",
}

TINY = """\
# a tiny space
space tiny
input 32 x 32 x 3
classes 10
expansion relative to input
skip where shapes differ: project

micro m {
    kernel    {0, 3, 5}
    act       {relu, swish}
    attention {none, se}
}

stem conv 3x3 16 stride 2 act relu
table {
    mbconv m 1 (8, 16, 8) 1 1
    mbconv m (1, 4, 1) (16, 24, 8) 2 2
}
head conv 1x1 64 act relu
pool avg
fc classes
"""


def with_lines(text: str, replacements: dict[int, str]) -> str:
    lines = text.split("\n")
    for number, line in replacements.items():
        lines[number - 1] = line
    return "\n".join(lines)


#: A space that mixes every row operator, with skips, projections, attention, per-block
#: choices, kernels 1 to 5 and a stem maxpool (the operators' cost, network and export
#: tests).
MIXED = """\
space mixed
input 40 x 40 x 3
classes 10
expansion relative to input
skip where shapes differ: project

micro m {
    kernel    {0, 3, 5}
    act       {relu, swish}
    attention {none, se, sa2}
    se ratio 0.25 of expanded, gate hsigmoid
    per block: kernel, act, attention, channels
}
micro plain {
    kernel    {0, 1, 3}
    act       {relu, hswish}
    attention none
    per block: kernel, expansion
}

stem conv 3x3 16 stride 2 act relu maxpool 3x3 stride 2
table {
    conv        plain  -            {16, 24}  1  1  kernel={1, 3}
    ds          m      -            {16, 24}  2  1
    fused       m      {1, 4}       {24, 32}  2  2  attention={none, se}
    mbconv      m      (1, 6, 1)    {32, 40}  2  1
    basic       plain  -            {32, 48}  2  2
    bottleneck  plain  {0.25, 0.5}  {48, 64}  2  1
}
head conv 1x1 64 act relu
fc classes
"""
