"""`fpnas latency` stopped by SIGTERM: the parts measured so far are saved, the run exits
143, and the same command continues the table."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from fpnas_dsl.latency import space_parts
from fpnas_dsl.parser import load_space

TINY = str(Path(__file__).parent / "data" / "tiny.space")
#: Enough repetitions that the table takes several seconds: the signal lands mid-way.
SLOW = ["--warmup", "2", "--repetitions", "200", "--no-progress", "--threads", "1"]
FAST = ["--warmup", "0", "--repetitions", "2", "--no-progress", "--threads", "1"]


def test_sigterm_saves_the_table_and_exits_143(tmp_path: Path) -> None:
    out = tmp_path / "t.json"
    command = [sys.executable, "-m", "fpnas_dsl", "latency", TINY, "-o", str(out)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [*command, "--calibrate", "0", *SLOW],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:  # the estimate comes after the first group of parts
        lines.append(line)
        if "parts to measure" in line:
            break
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=120)
    err = "".join(lines) + rest
    assert proc.returncode == 143, err
    catalogue = space_parts(load_space(TINY)).catalogue
    saved = json.loads(out.read_text())["entries"]
    assert 0 < len(saved) < len(catalogue), err
    last = err.strip().splitlines()[-1]
    assert f"stopped by SIGTERM with {len(saved)} parts measured" in last, err
    assert "the same command continues it" in last and "Traceback" not in err
    # The same command measures the rest and keeps what was measured.
    done = subprocess.run(
        [*command, "--calibrate", "0", *FAST],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert f"{len(saved)} in {out} already" in done.stderr
    final = json.loads(out.read_text())["entries"]
    assert set(final) == set(catalogue)
    assert all(final[s] == saved[s] for s in saved)
