"""Run both callbacks under DDP on 2 CPU processes (gloo); each rank saves what it saw.
Usage: python tests/callbacks/ddp_worker.py OUT_DIR   (Lightning relaunches this script for rank 1)."""

from __future__ import annotations

import sys

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import Logger

from blocksparsity import DataNormSparsifier, PostTrainingDataSparsity, StepSLScheduler, TrainingAwareDataSparsity
from blocksparsity.distributed import disagreeing_masks
from tests.helpers import warning_filters
from tests.helpers.lightning_models import TinyModule, loader

warning_filters.apply()  # Lightning's notices ignored; this package's warnings fail the run


class FileLogger(Logger):
    """Records every log_metrics call on this rank (no rank-zero filtering of its own)."""

    def __init__(self):
        super().__init__()
        self.calls: list[dict] = []

    name = "file"
    version = 0

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=None):
        self.calls.append(dict(metrics))


class AgreementProbe(pl.Callback):
    """While the process group is up: do identical masks agree, and different ones not?"""

    def on_train_end(self, trainer, pl_module):
        same = {"m": torch.arange(64).reshape(8, 8) % 3 == 0}
        different = {"m": torch.arange(64).reshape(8, 8) % (3 + trainer.global_rank) == 0}
        self.result = (not disagreeing_masks(same), not disagreeing_masks(different))


def main(out_dir: str) -> None:
    args = {"sparsity_level": 0.5, "sparse_block_shape": (1, 4), "zeros_per_block": 2}
    pt = PostTrainingDataSparsity(DataNormSparsifier, args, param_filter="*")  # biases (1-D) too
    ta = TrainingAwareDataSparsity(DataNormSparsifier, {**args, "sparsity_level": 0.2}, StepSLScheduler, {"gamma": 1.5},
                                   param_filter="*")
    # activation-aware scores and the update: statistics summed over both ranks' batches
    pu = PostTrainingDataSparsity(DataNormSparsifier, args, name="upd", scores="activation", update_weights=True)
    probe, logger = AgreementProbe(), FileLogger()
    trainer = pl.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_epochs=2, logger=logger, enable_checkpointing=False,
        callbacks=[pt, ta, pu, probe],
        enable_progress_bar=False, enable_model_summary=False,
    )
    module = TinyModule()
    trainer.fit(module, loader())
    torch.save({
        "weights": {n: p.detach() for n, p in module.model.named_parameters()},
        "ta_masks": dict(ta.masks), "pt_masks": dict(pt.masks),
        "pt_copy": {n: p.detach() for n, p in pt.sparsified.named_parameters()},
        "pu_masks": dict(pu.masks), "pu_copy": {n: p.detach() for n, p in pu.sparsified.named_parameters()},
        "pu_counts": dict(pu.calibrator.stats.counts),
        "logged": [c for c in logger.calls if any("sparsity" in k for k in c)],
        "agreement": probe.result,
    }, f"{out_dir}/rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    main(sys.argv[1])
