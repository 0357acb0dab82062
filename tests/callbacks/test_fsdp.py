"""The callbacks under FSDP. FSDP2 through Lightning's ModelParallelStrategy runs on 2 CPU
processes (gloo) here, and on CUDA GPUs (NCCL, Triton kernels) where present; Lightning's
FSDPStrategy (FSDP1), which needs CUDA, is refused (on CPU: at ``setup``, without a run)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from blocksparsity import DataNormSparsifier, PostTrainingDataSparsity
from tests.helpers.devices import requires_cuda
from tests.helpers.lightning_models import TinyModule

ROOT = Path(__file__).resolve().parents[2]


def _run(tmp_path: Path, accelerator: str, devices: int) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("TRITON_INTERPRET", None)
    worker = Path(__file__).parent / "fsdp_worker.py"
    done = subprocess.run([sys.executable, str(worker), str(tmp_path), accelerator, str(devices)],
                          env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    return [torch.load(tmp_path / f"rank{r}.pt", map_location="cpu", weights_only=False) for r in range(devices)]


def _check(ranks: list[dict], sharded: bool) -> None:
    first = ranks[0]
    for rank in ranks:
        for name, w in first["weights"].items():
            # post-training masks of the sharded weights are the masks of the whole weights
            assert torch.equal(rank["pt_masks"][name], first["pt_expected"][name]), name
            assert torch.equal(rank["pt_copy"][name], w * rank["pt_masks"][name]), name
        # the sparsified copy stays sharded like the live model: DTensors, same shards
        assert rank["copy_sharded"] and rank["copy_local_shapes"] == rank["live_local_shapes"]
        # resumed from a distributed checkpoint: the saved masks come back, and the next
        # update equals the uninterrupted run's
        assert all(torch.equal(rank["restored_masks"][n], first["ta_masks"][1][n]) for n in first["weights"])
        assert len(rank["resumed_masks"]) == 1
        assert all(torch.equal(rank["resumed_masks"][0][n], first["ta_masks"][2][n]) for n in first["weights"])
        saved, restored, resumed = rank["gathered_checkpoint"]  # save_distributed_checkpoint=False
        assert all(torch.equal(restored[n], saved[0][n]) and torch.equal(resumed[0][n], saved[1][n]) for n in restored)
    if sharded:
        shapes = first["live_local_shapes"]
        assert shapes["embed.weight"] == (16, 16) and ranks[1]["live_local_shapes"]["mlp.2.weight"] == (0, 32)
    # masks travel in the model's sharded state dict; rank zero's callback state holds none
    masks = [k for k in first["checkpoint_keys"] if "_blocksparse_masks/" in k]
    assert len(masks) == len(first["weights"])
    (state,) = [v for k, v in first["callback_state"].items() if k.startswith("TrainingAwareDataSparsity")]
    assert state["sparsifier"]["state"] == {} and state["sharded_masks"] == "_blocksparse_masks/"


@pytest.mark.slow
def test_model_parallel_strategy_on_cpu(tmp_path):
    _check(_run(tmp_path, "cpu", 2), sharded=True)


@pytest.mark.cuda
@requires_cuda
def test_model_parallel_strategy_on_gpus(tmp_path):
    devices = min(2, torch.cuda.device_count())
    ranks = _run(tmp_path, "cuda", devices)
    _check(ranks, sharded=devices == 2)
    for rank in ranks:
        assert "FSDP1" in rank["fsdp1_error"] and "ModelParallelStrategy" in rank["fsdp1_error"]


def test_fsdp1_strategy_is_refused_at_setup():
    from lightning.pytorch.strategies import FSDPStrategy

    callback = PostTrainingDataSparsity(DataNormSparsifier, {"sparsity_level": 0.5})
    with pytest.raises(ValueError, match=r"FSDP1.*ModelParallelStrategy"):
        callback.setup(SimpleNamespace(strategy=FSDPStrategy()), TinyModule(), "fit")
