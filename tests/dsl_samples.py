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
