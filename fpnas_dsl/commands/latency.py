"""`fpnas latency SPACE -o TABLE.json`: measure a latency table of a space on this machine.

    fpnas latency SPACE [--device cpu|cuda[:N]] [--backend torch|onnxruntime] [--batch B]
                  [--threads T] [--resolution N] [--warmup W] [--repetitions R]
                  [--calibrate N] [--seed S] -o TABLE.json
    fpnas latency SPACE --arch ARCH.json -o TABLE.json     # measure one network, compare

Every part of every block configuration the space can produce (`fpnas_dsl.latency`) is
timed; the table is saved every few seconds and at the end, so a run that stops (a crash,
a SIGKILL) keeps what it measured and the same command resumes it. SIGTERM and Ctrl-C
stop it after the parts being measured, with the table saved and exit 143 or 130. A table
is filled only with the settings it was started with (backend, device, batch, threads,
space, input).
Then `--calibrate N` random networks are measured end to end to fit the per-network
and per-part overheads (`fpnas_dsl.calibration`).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

from fpnas_dsl.errors import FpnasError, Interrupted
from fpnas_dsl.stopping import StopRequest

SAVE_EVERY_S = 20.0
#: Parts measured together, in turn (`measure.measure_parts`).
GROUP = 24


def register(sub: Any, name: str, help_text: str) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help_text,
        description="Measure on this machine the latency of every part of every block "
        "configuration a space can produce (and its stem and head), into a table that "
        "`fpnas search --target-latency`, `fpnas compile` and `fpnas cost` read.",
    )
    p.add_argument("space", metavar="SPACE", help="a .space file, or a bundled space's name")
    p.add_argument(
        "-o", "--out", required=True, metavar="TABLE.json", help="the table (resumed if it exists)"
    )
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N")
    p.add_argument(
        "--backend",
        default="torch",
        choices=("torch", "onnxruntime"),
        help="torch eager (default) or ONNX Runtime",
    )
    p.add_argument("--batch", type=int, default=1, metavar="B", help="images per call (default 1)")
    p.add_argument("--threads", type=int, default=1, metavar="T", help="CPU threads (default 1)")
    p.add_argument(
        "--resolution", type=int, metavar="N", help="input resolution (default: the space's)"
    )
    p.add_argument(
        "--in-channels", type=int, metavar="N", help="input channels (default: the space's)"
    )
    p.add_argument("--classes", type=int, metavar="N", help="classes (default: the space's)")
    p.add_argument(
        "--warmup", type=int, default=5, metavar="W", help="untimed calls first (default 5)"
    )
    p.add_argument(
        "--repetitions",
        type=int,
        default=30,
        metavar="R",
        help="timed calls, median kept (default 30)",
    )
    p.add_argument(
        "--clock",
        default="wall",
        choices=("wall", "cpu"),
        help="wall clock (default), or the calling thread's CPU time: steadier on a "
        "machine shared with other jobs (--threads 1 on cpu only)",
    )
    p.add_argument(
        "--ort-level",
        default="extended",
        choices=("extended", "all"),
        help="ONNX Runtime graph optimisations: extended (default: fusions, no NCHWc "
        "layout, which parts measured alone cannot reproduce) or all",
    )
    p.add_argument(
        "--calibrate",
        type=int,
        default=20,
        metavar="N",
        help="random networks measured end to end to fit the per-network overhead "
        "(default 20; 0: none)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the calibration networks (default 0)"
    )
    p.add_argument(
        "--arch",
        metavar="ARCH.json",
        help="measure this architecture end to end and compare with the table",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from fpnas_dsl.latency import LatencyTable, format_seconds, space_parts
    from fpnas_dsl.measure import Timer, machine_info
    from fpnas_dsl.parser import load_space

    if args.batch < 1:
        raise FpnasError(f"--batch {args.batch}: give 1 or more images")
    if args.calibrate < 0:
        raise FpnasError(f"--calibrate {args.calibrate}: give 0 or more networks")
    space = load_space(args.space, args.resolution, args.in_channels, args.classes)
    timer = Timer(
        args.backend,
        args.device,
        args.threads,
        args.warmup,
        args.repetitions,
        args.clock,
        args.ort_level,
    )
    out = Path(args.out)
    parts = space_parts(space)
    fresh = LatencyTable(
        space=space.name,
        resolution=space.resolution,
        in_channels=space.in_channels,
        classes=space.classes,
        device=args.device,
        backend=args.backend,
        batch=args.batch,
        threads=args.threads,
        method=timer.settings(),
        machine=machine_info(timer),
        entries={},
        source=str(out),
    )
    if out.exists():
        table = LatencyTable.load(out)
        if table.setting != fresh.setting:
            diff = ", ".join(
                f"{k} {fresh.setting[k]!r} (the table's: {v!r})"
                for k, v in table.setting.items()
                if fresh.setting[k] != v
            )
            raise FpnasError(
                f"{out}: a table measured with other settings; these differ: {diff}. "
                "Give the table's settings to fill it in, or another -o"
            )
    else:
        table = fresh
    if args.arch is not None:
        return _compare(args, space, table, timer)

    missing = [p for s, p in parts.catalogue.items() if s not in table.entries]
    _log(
        f"fpnas latency: {space.name} at {space.resolution} px, {args.backend} on "
        f"{args.device}, {args.threads} thread(s), batch {args.batch}: "
        f"{len(parts.catalogue)} parts, {len(parts.catalogue) - len(missing)} in {out} already"
    )
    started = time.perf_counter()
    with StopRequest() as stop:
        measured = _measure(space, table, missing, timer, args, out, stop)
        if measured:
            table.network_overhead_s = table.part_overhead_s = None  # the parts changed
            table.calibration = None
        built = time.perf_counter() - started
        if args.calibrate and table.calibration is None:
            _calibrate(space, table, timer, args, parts, stop)
            table.save(out)
    from fpnas_dsl.latency import LatencyModel

    summary = LatencyModel(space, table, parts).summary()
    print(
        f"{out}: {len(table.entries)} parts ({measured} measured now in {built:.0f} s); "
        f"latency min {format_seconds(summary['latency_min'])}, median "
        f"{format_seconds(summary['latency_median'])}, max "
        f"{format_seconds(summary['latency_max'])} per batch of {args.batch}"
    )
    if table.calibration is not None:
        c = table.calibration
        print(
            f"fitted overheads: {c['network_overhead_s'] * 1e3:.3f} ms per network, "
            f"{c['part_overhead_s'] * 1e6:.1f} us per part ({c['networks']} networks; after "
            f"them, mean absolute error {c['mape_pct']:.1f}%)"
        )
    return 0


def _stopped(stop: StopRequest, where: str, out: Path) -> Interrupted:
    return Interrupted(
        f"stopped by {stop.signal_name} {where}; the table is saved in {out}: the same "
        "command continues it",
        exit_code=stop.exit_code,
    )


def _measure(
    space: Any,
    table: Any,
    missing: list[Any],
    timer: Any,
    args: argparse.Namespace,
    out: Path,
    stop: StopRequest,
) -> int:
    from tqdm import tqdm

    from fpnas_dsl.latency import format_seconds
    from fpnas_dsl.measure import measure_parts

    if not missing:
        return 0
    if not table.entries or not table.call_overhead_s:
        table.call_overhead_s = timer.call_overhead()
    # A random order: the estimate from the first parts is unbiased, and a table left
    # half-done covers every row a little rather than the first rows fully.
    order = list(missing)
    random.Random(0).shuffle(order)
    groups = [order[i : i + GROUP] for i in range(0, len(order), GROUP)]
    t0 = time.perf_counter()
    table.entries.update(measure_parts(space, groups[0], timer, args.batch))
    each = (time.perf_counter() - t0) / len(groups[0])
    _log(
        f"fpnas latency: {len(order)} parts to measure, about {each * len(order) / 60:.1f} min "
        f"({format_seconds(each)} each, from the first {len(groups[0])})"
    )
    last_save = time.perf_counter()
    try:
        with tqdm(
            total=len(order),
            initial=len(groups[0]),
            desc="latency",
            unit="part",
            disable=args.no_progress or None,
        ) as bar:
            for group in groups[1:]:
                if stop.requested:
                    done = len(table.entries)
                    raise _stopped(stop, f"with {done} parts measured", out)
                table.entries.update(measure_parts(space, group, timer, args.batch))
                bar.update(len(group))
                if time.perf_counter() - last_save > SAVE_EVERY_S:
                    table.save(out)
                    last_save = time.perf_counter()
    finally:
        table.save(out)  # what was measured survives a stop or a failure
    return len(order)


def _calibrate(
    space: Any, table: Any, timer: Any, args: argparse.Namespace, parts: Any, stop: StopRequest
) -> None:
    from tqdm import tqdm

    from fpnas_dsl.calibration import CALIBRATION_ROUNDS, calibrate

    with tqdm(
        total=args.calibrate * CALIBRATION_ROUNDS,
        desc="calibration",
        unit="net",
        disable=args.no_progress or None,
    ) as bar:

        def progress(n: int) -> None:
            bar.update(n)
            if stop.requested:  # the parts are saved; a calibration is redone whole
                raise _stopped(stop, "during the calibration", Path(args.out))

        calibrate(space, table, timer, args.batch, args.calibrate, args.seed, parts, progress)


def _compare(args: argparse.Namespace, space: Any, table: Any, timer: Any) -> int:
    from fpnas_dsl.archfile import arch_from_blocks, read_arch_doc
    from fpnas_dsl.ir import encode
    from fpnas_dsl.latency import LatencyModel, format_seconds
    from fpnas_dsl.measure import measure_networks

    doc = read_arch_doc(args.arch)
    arch = arch_from_blocks(space, doc["blocks"], args.arch)
    idx = encode(space, arch)
    predicted = float(LatencyModel(space, table).price(idx[None])[0])
    measured = float(measure_networks(space, idx[None], timer, args.batch)[0])
    out = {
        "arch": Path(args.arch).name,
        "backend": args.backend,
        "device": args.device,
        "threads": args.threads,
        "batch": args.batch,
        "predicted_s": predicted,
        "measured_s": measured,
        "error_pct": (predicted - measured) / measured * 100,
    }
    if doc.get("target_latency_s"):
        out["target_latency_s"] = doc["target_latency_s"]
        out["measured_within_target"] = measured <= float(doc["target_latency_s"])
    print(json.dumps(out, indent=2))
    _log(
        f"fpnas latency: {Path(args.arch).name}: measured {format_seconds(measured)}, "
        f"the table predicts {format_seconds(predicted)}"
    )
    return 0
