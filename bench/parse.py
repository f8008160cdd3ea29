"""Time parsing + validating each bundled space (each must take < 100 ms).

    python bench/parse.py [--repeat N]

The grammar is built once per process (timed separately, "grammar"); each space is then
parsed, transformed to IR and validated `--repeat` times from its text, and the median
and best times are printed. The first syntax error of a process also builds the table
that names error contexts; that one-off cost is printed too. Exit status 1 if any space
takes 100 ms or more (median).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fpnas_dsl import resources
from fpnas_dsl.errors import SpaceError
from fpnas_dsl.parser import parse_space, parser

LIMIT_MS = 100.0


def timed(fn: object, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append((time.perf_counter() - start) * 1000)
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args()

    start = time.perf_counter()
    parser()
    print(f"{'grammar (once per process)':<28} {(time.perf_counter() - start) * 1000:8.2f} ms")

    texts = {
        name: (resources.spaces_dir() / f"{name}.space").read_text(encoding="utf-8")
        for name in resources.bundled_spaces()
    }
    results: dict[str, float] = {}
    print(f"{'space':<28} {'median':>8}    {'best':>8}    blocks  bytes")
    for name, text in texts.items():
        space = parse_space(text, name)  # warm up
        times = timed(lambda text=text, name=name: parse_space(text, name), args.repeat)
        results[name] = statistics.median(times)
        print(
            f"{name:<28} {results[name]:8.2f} ms {min(times):8.2f} ms"
            f"  {len(space.blocks):6}  {len(text.encode()):5}"
        )

    broken = texts["fbnetv2_f"].replace("(16, 24, 4)", "(16, 24 4)", 1)

    def fail() -> None:
        with contextlib.suppress(SpaceError):
            parse_space(broken, "broken")

    first = timed(fail, 1)[0]
    later = statistics.median(timed(fail, args.repeat))
    print(f"{'syntax error (first)':<28} {first:8.2f} ms")
    print(f"{'syntax error (later)':<28} {later:8.2f} ms")

    slowest = max(results, key=results.__getitem__)
    verdict = "ok" if results[slowest] < LIMIT_MS else "TOO SLOW"
    limit = f"limit {LIMIT_MS:.0f} ms each"
    print(f"slowest space {slowest}: {results[slowest]:.2f} ms ({limit}) {verdict}")
    return 0 if results[slowest] < LIMIT_MS else 1


if __name__ == "__main__":
    sys.exit(main())
