"""The supernet forward, its gradients and batch-norm updates, `subnet()` and the relaxed
forward are bitwise what they were when `tests/data/dataflow_golden.json` was recorded
(see tests/make_dataflow_golden.py)."""

from __future__ import annotations

import json

import pytest
import torch
from make_dataflow_golden import CASES, GOLDEN, case_digests, platform_key

RECORD = json.loads(GOLDEN.read_text())


@pytest.mark.parametrize("name", sorted(CASES))
def test_dataflow_is_bitwise_unchanged(name: str) -> None:
    if RECORD["platform"] != platform_key():
        pytest.skip(f"digests recorded on {RECORD['platform']}, this is {platform_key()}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        got = case_digests(CASES[name]())
    finally:
        torch.set_num_threads(threads)
    want = RECORD["cases"][name]
    assert got.keys() == want.keys()
    differ = [f"{a}.{k}" for a in want for k in want[a] if got[a][k] != want[a][k]]
    assert not differ, f"{name}: digests differ: {differ}"


def test_the_record_covers_every_case() -> None:
    assert sorted(RECORD["cases"]) == sorted(CASES)
