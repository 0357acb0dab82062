"""The stand-alone measurement scripts, at tiny sizes: ``benchmarks.large_tensors`` (the
per-element cliff check past 2**31 elements) and ``benchmarks.accuracy.update_distance`` (the
update against the exact solution on the study's layers). Their arithmetic and the shape of
their reports are checked; timings are never asserted."""

from __future__ import annotations

import re

import pytest
import torch

from benchmarks import large_tensors
from benchmarks.accuracy import update_distance


def test_large_tensors_reports_every_op_with_per_element_ratios(monkeypatch):
    small, large = 2 * large_tensors.COLS, 5 * large_tensors.COLS
    seconds = iter([1.0, 2.0, 3.0, 5.0, 4.0, 12.0] * 2)  # per op and size, in the order measured
    clock = iter(t for s in seconds for t in (0.0, s))
    monkeypatch.setattr(large_tensors.time, "perf_counter", lambda: next(clock))
    medians = large_tensors.measure([small, large], repeats=1)
    assert medians == {"block_norm": {small: 1.0, large: 5.0}, "block_mask": {small: 2.0, large: 4.0},
                       "sparsify": {small: 3.0, large: 12.0}}
    text = large_tensors.report(medians, small, large, 1)
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| block") or
            line.startswith("| sparsify")}
    # per element: (5 / 5n) / (1 / 2n) = 2.0 -> missed; (4 / 5n) / (2 / 2n) = 0.8 -> met; 1.6 -> missed
    assert "| 2.00x | **missed** |" in rows["block_norm"]
    assert "| 0.80x | met |" in rows["block_mask"]
    assert "| 1.60x | **missed** |" in rows["sparsify"]


def test_large_tensor_inputs_are_seeded_bf16_rows():
    a, b = large_tensors._tensor(2 * large_tensors.COLS), large_tensors._tensor(2 * large_tensors.COLS)
    assert a.dtype == torch.bfloat16 and a.shape == (2, large_tensors.COLS)
    assert torch.equal(a, b) and a.float().std() > 0.5


@pytest.mark.slow
def test_update_distance_rows_cover_every_updatable_layer_and_level():
    rows = update_distance.rows(quick=True, seeds=1)
    # digits-mlp 3 Linear, digits-cnn 2 conv + 1 Linear, char-lm 2 Linear; 2 levels each
    assert len(rows) == 16
    for row in rows:
        distance, ratio = (float(v) for v in row.strip("| ").split("|")[-2:])
        assert 0 <= distance < 0.2, row
        assert 0.99 <= ratio < 1.05, row  # never much worse than exact (and never better, up to rounding)
    assert any(re.search(r"3\.weight \(32, 144\)", r) for r in rows)  # the conv's unfolded patches
