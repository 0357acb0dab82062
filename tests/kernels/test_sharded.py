"""Sharded (DTensor / FSDP2) data on 2 CPU processes (gloo): masks, norms, sparsify and
apply_mask equal the unsharded calls bit for bit (row and column shards, uneven and empty
shards, blocks straddling shard boundaries, ties, levels 0 to 1, fp32 and bf16, with and
without ``scale=``, whose bad values every rank refuses); the
sparsifier over a fully_shard-ed model; refused placements; the cross-rank mask check;
and the bytes the collectives move. One subprocess runs every case (tests/kernels/sharded_worker.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(out: Path, device: str) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("TRITON_INTERPRET", None)
    worker = Path(__file__).parent / "sharded_worker.py"
    done = subprocess.run(
        [sys.executable, "-X", "faulthandler", str(worker), str(out), str(_free_port()), device],
        env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[:2000] + "\n...\n" + done.stderr[-4000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("sharded"), "cpu")


@pytest.mark.slow
def test_every_sharded_result_equals_the_unsharded_one(ranks):
    for rank in ranks:
        assert rank["failures"] == []
        counts = rank["counts"]
        assert counts["block_mask"] >= 800 and counts["fully_shard"] >= 200
        for topic in ("block_norm", "sparsify", "apply_mask", "block_norm_placement", "replicate", "sparsifier_mask",
                      "sparsifier_data", "sparsifier_state", "sparsifier_nan", "squash"):
            assert counts[topic] > 0, topic


@pytest.mark.slow
def test_scaled_sharded_results_equal_the_unsharded_ones(ranks):
    """``scale=`` on DTensor data: every broadcast form (plain, replicated DTensor) and a DTensor
    scale placed like x, Shard(0)/Shard(1), uneven and empty shards, cut blocks, ties, fp32/bf16
    data, fp16/bf16/fp32/fp64 scales: masks, scores and sparsify equal the unsharded calls with
    the same scale, and the masks on tie-heavy data equal the reference ``naive``."""
    for rank in ranks:
        assert rank["failures"] == []
        counts = rank["counts"]
        assert counts["scale_block_mask"] >= 300 and counts["scale_naive"] >= 150
        assert counts["scale_block_norm"] >= 100 and counts["scale_sparsify"] >= 100 and counts["scale_replicate"] == 2


@pytest.mark.slow
def test_bad_scale_with_sharded_data_raises_on_every_rank(ranks):
    """Bad scales (shape, dtype, meta, not a tensor, negative, NaN, inf, beyond float32, a DTensor
    placed otherwise or on another mesh, a NaN in one rank's shard, and a bad scale on one rank
    only) raise TypeError/ValueError naming scale on both ranks, through block_mask, block_norm
    and sparsify(inplace=True), with the data untouched; the next call still pairs its collectives."""
    for rank in ranks:
        assert rank["failures"] == [] and rank["counts"]["scale_refusal"] == 2 * (16 * 3 + 1) + 1


@pytest.mark.slow
def test_refused_placements_and_the_cross_rank_check(ranks):
    for rank in ranks:
        assert rank["counts"]["refusal"] == 4 and rank["counts"]["agree"] == 3 and rank["counts"]["count_zeros"] == 1


@pytest.mark.slow
def test_counts_over_ranks_past_2_31_do_not_wrap(ranks):
    """Histograms and tie counts summed over the ranks are int64 (stand-ins: see check_wide_counts)."""
    for rank in ranks:
        assert rank["failures"] == [] and rank["counts"]["wide_counts"] == 3


@pytest.mark.slow
def test_bytes_communicated(ranks):
    traffic = ranks[0]["traffic"]
    assert traffic == ranks[1]["traffic"]
    histograms = (2048 + 1024 + 1024) * 8 + 8  # three radix passes, int64 counts, the flag on the first
    # row shards, no block cut: the histograms and one tie count (int64) per rank
    assert traffic["(64, 64)/(1, 4)/Shard(0)"] == {"calls": 4, "bytes": histograms + 2 * 8, "param_bytes": 64 * 64 * 4}
    # column shards: one tie count per block row (16) per rank
    assert traffic["(64, 64)/(4, 4)/Shard(1)"]["bytes"] == histograms + 2 * 16 * 8
    # 63 rows split 32 + 31: the boundary falls between (4, 4) blocks, so no halo is exchanged
    assert traffic["(63, 64)/(4, 4)/Shard(0)"]["bytes"] == histograms + 2 * 8
    # 62 rows split 31 + 31 cut a block row: one all-gather of each rank's first and last 3 rows
    assert traffic["(62, 64)/(4, 4)/Shard(0)"] == {"calls": 5, "bytes": histograms + 2 * 8 + 2 * 6 * 64 * 4,
                                                   "param_bytes": 62 * 64 * 4}
    # a scale adds one all-gather of every rank's check outcome (two int64 each) ...
    assert traffic["(64, 64)/(1, 4)/Shard(0)/scale=col"] == {"calls": 5, "bytes": histograms + 2 * 8 + 2 * 16,
                                                             "param_bytes": 64 * 64 * 4}
    # ... and, placed like x where a boundary cuts blocks, the halo of the scale too
    assert traffic["(62, 64)/(4, 4)/Shard(0)/scale=like_x"] == {
        "calls": 7, "bytes": histograms + 2 * 8 + 2 * 16 + 2 * (2 * 6 * 64 * 4), "param_bytes": 62 * 64 * 4}


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")
def test_on_two_gpus_with_nccl_and_triton(tmp_path):
    for rank in _run(tmp_path, "cuda"):
        assert rank["failures"] == [] and rank["counts"]["block_mask"] >= 800
