"""Under DDP (2 CPU processes, gloo) every rank gets identical masks and only rank zero logs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from blocksparsity import kernels

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_ddp_ranks_agree_and_only_rank_zero_logs(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("TRITON_INTERPRET", None)
    done = subprocess.run([sys.executable, str(Path(__file__).parent / "ddp_worker.py"), str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for name, w in rank0["weights"].items():
        assert torch.equal(w, rank1["weights"][name])  # DDP kept the replicas in sync
        for key in ("ta_masks", "pt_masks"):
            assert torch.equal(rank0[key][name], rank1[key][name]), (key, name)
        assert torch.equal(rank0["pt_masks"][name], kernels.block_mask(w, 0.5, (1, 4), 2))
        assert torch.equal(rank0["pt_copy"][name], rank1["pt_copy"][name])
    for name, mask in rank0["pu_masks"].items():  # activation-aware scores and the update: the same on both ranks
        assert torch.equal(mask, rank1["pu_masks"][name]), name
    for name, w in rank0["pu_copy"].items():
        assert torch.equal(w, rank1["pu_copy"][name]), name
    assert rank0["pu_counts"] == rank1["pu_counts"] and rank0["pu_counts"]["mlp.0.weight"] == 128  # both ranks' halves
    assert len(rank0["logged"]) == 4 and rank1["logged"] == []
    assert rank0["agreement"] == (True, False) and rank1["agreement"] == (True, False)
