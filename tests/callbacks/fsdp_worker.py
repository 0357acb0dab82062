"""Both callbacks under Lightning's ModelParallelStrategy (FSDP2 ``fully_shard``) on 2 CPU
processes (gloo), or on CUDA GPUs (NCCL, Triton kernels): masks of the sharded weights,
the sharded ``.sparsified`` copy, and a run resumed from a distributed checkpoint; on
CUDA also Lightning's FSDPStrategy (FSDP1), which the callbacks refuse. Each rank saves
what it saw (masks gathered here, for the test only).
Usage: python tests/callbacks/fsdp_worker.py OUT_DIR [cpu|cuda] [DEVICES]
(Lightning relaunches this script for the other ranks)."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import ModelParallelStrategy
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.tensor import DTensor

from blocksparsity import CubicSLScheduler, DataNormSparsifier, PostTrainingDataSparsity, TrainingAwareDataSparsity, kernels
from tests.helpers import warning_filters
from tests.helpers.lightning_models import ShardedTinyModule, loader

warning_filters.apply()  # Lightning's notices ignored; this package's warnings fail the run
# expected: the ramp spans 3 updates, and the 2-epoch runs (the gathered checkpoint) stop before its end
warnings.filterwarnings("ignore", message=".*this fit makes .* mask updates and the last uses", category=UserWarning)
ARGS = {"sparsity_level": 0.5, "sparse_block_shape": (2, 4), "zeros_per_block": 3}
ACCELERATOR = sys.argv[2] if len(sys.argv) > 2 else "cpu"
DEVICES = int(sys.argv[3]) if len(sys.argv) > 3 else 2


class Recorder(pl.Callback):
    """The training-aware masks at train start (restored ones, on resume) and after each
    epoch-end update, gathered whole."""

    def __init__(self, ta: TrainingAwareDataSparsity):
        self.ta, self.masks, self.at_start = ta, [], None

    def on_train_start(self, trainer, pl_module):
        self.at_start = {n: m.full_tensor() for n, m in self.ta.masks.items()}

    def on_train_epoch_end(self, trainer, pl_module):
        self.masks.append({n: m.full_tensor() for n, m in self.ta.masks.items()})


def callbacks(checkpoint_dir: str | None):
    ta = TrainingAwareDataSparsity(DataNormSparsifier, ARGS, CubicSLScheduler,
                                   {"init_sl": 0.0, "init_t": 0, "delta_t": 1, "total_t": 3}, inplace=True,
                                   param_filter="*")  # biases too: 1-D shards
    extra = [ModelCheckpoint(dirpath=checkpoint_dir, save_top_k=-1)] if checkpoint_dir else []
    return ta, Recorder(ta), extra


def trainer(max_epochs: int, callbacks: list, checkpointing: bool, distributed_checkpoint: bool = True) -> pl.Trainer:
    strategy = ModelParallelStrategy(data_parallel_size=DEVICES, tensor_parallel_size=1,
                                     save_distributed_checkpoint=distributed_checkpoint)
    return pl.Trainer(accelerator=ACCELERATOR, devices=DEVICES, strategy=strategy, max_epochs=max_epochs, logger=False,
                      enable_checkpointing=checkpointing, callbacks=callbacks, enable_progress_bar=False,
                      enable_model_summary=False)


def fsdp1_refusal() -> str:
    """Lightning's FSDPStrategy (FSDP1): the callbacks refuse it before training."""
    from lightning.pytorch.strategies import FSDPStrategy

    t = pl.Trainer(accelerator="cuda", devices=DEVICES, strategy=FSDPStrategy(), max_epochs=1, logger=False,
                   enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                   callbacks=[PostTrainingDataSparsity(DataNormSparsifier, ARGS)])
    try:
        t.fit(ShardedTinyModule(), loader())
    except ValueError as err:
        return str(err)
    return "no error"


def main(out_dir: str) -> None:
    pt = PostTrainingDataSparsity(DataNormSparsifier, ARGS, param_filter="*")  # biases too: 1-D shards
    ta, recorder, extra = callbacks(f"{out_dir}/ckpt")
    t = trainer(3, [pt, ta, recorder, *extra], True)
    module = ShardedTinyModule()
    t.fit(module, loader())
    weights = {n: p.detach().full_tensor() for n, p in module.model.named_parameters()}
    copy = dict(pt.sparsified.named_parameters())
    result = {
        "weights": weights,
        "ta_masks": recorder.masks,
        "pt_masks": {n: m.full_tensor() for n, m in pt.masks.items()},
        "pt_expected": {n: kernels.block_mask(w, 0.5, (2, 4), 3) for n, w in weights.items()},
        "pt_copy": {n: p.detach().full_tensor() for n, p in copy.items()},
        "copy_sharded": all(isinstance(p, DTensor) and p.placements == module.model.get_parameter(n).placements
                            for n, p in copy.items()),
        "copy_local_shapes": {n: tuple(p.to_local().shape) for n, p in copy.items()},
        "live_local_shapes": {n: tuple(p.to_local().shape) for n, p in module.model.named_parameters()},
    }
    # Resume from the end of epoch 1 (a distributed checkpoint) and run epoch 2 again.
    ta, resumed, _ = callbacks(None)
    (checkpoint,) = Path(out_dir, "ckpt").glob("epoch=1-*.ckpt")  # a folder of shards
    result["checkpoint_keys"] = sorted(FileSystemReader(checkpoint).read_metadata().state_dict_metadata)
    result["callback_state"] = torch.load(checkpoint / "meta.pt", weights_only=False)["callbacks"]
    trainer(3, [ta, resumed], False).fit(ShardedTinyModule(seed=123), loader(), ckpt_path=str(checkpoint))
    result["resumed_masks"] = resumed.masks
    # A gathered (single-file) checkpoint: the masks are gathered with the weights. (Momentum:
    # Lightning 2.6 fails to load a gathered checkpoint whose optimizer state is empty.)
    ta, first, extra = callbacks(f"{out_dir}/full")
    trainer(2, [ta, first, *extra], True, distributed_checkpoint=False).fit(ShardedTinyModule(momentum=0.9), loader())
    ta, again, _ = callbacks(None)
    trainer(2, [ta, again], False, distributed_checkpoint=False).fit(
        ShardedTinyModule(seed=5, momentum=0.9), loader(), ckpt_path=str(next(Path(out_dir, "full").glob("epoch=0-*.ckpt"))))
    result["gathered_checkpoint"] = (first.masks, again.at_start, again.masks)
    result["restored_masks"] = resumed.at_start
    result["fsdp1_error"] = fsdp1_refusal() if ACCELERATOR == "cuda" else None  # FSDPStrategy needs CUDA
    torch.save(result, f"{out_dir}/rank{t.global_rank}.pt")


if __name__ == "__main__":
    main(sys.argv[1])
