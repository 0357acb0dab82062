"""PostTrainingDataSparsity: sparsify a copy of the model once ``fit`` ends."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from typing_extensions import override

from blocksparsity.base_sparsifier import BaseDataSparsifier
from blocksparsity.callbacks import _model
from blocksparsity.callbacks._base import DataSparsityCallback, check_class, timed_hook
from blocksparsity.callbacks._calibrate import DEFAULT_MEMORY, check_options
from blocksparsity.weight_update import DEFAULT_DAMPING


class PostTrainingDataSparsity(DataSparsityCallback):
    """Sparsifies a copy of the model after training; the model itself is not modified.

    At the end of ``fit`` the callback takes its ``data_sparsifier_class(**data_sparsifier_args)``
    (checked when the callback is made, so bad values fail before training; built at
    ``setup``, one per fit), computes masks from the trained weights on their device (Triton kernels on CUDA),
    and leaves the sparsified copy in ``.sparsified`` (on ``sparsified_device``, default:
    the model's). The sparsifier stays in ``.data_sparsifier``.

    Under FSDP2 (Lightning's ``ModelParallelStrategy`` with ``fully_shard``) masks are
    computed shard by shard, exactly as for the whole weights, and ``.sparsified`` is a
    sharded copy (the module tree without FSDP's hooks, DTensor parameters on the same
    mesh). FSDP1 (``FSDPStrategy``) is refused before training.

    Args:
        data_sparsifier_class: a ``blocksparsity.BaseDataSparsifier`` subclass (the class itself),
            or its import path (``"blocksparsity.DataNormSparsifier"``, as a LightningCLI config gives it).
        data_sparsifier_args: its keyword arguments (not ``data_list``).
        param_filter: which parameters of ``pl_module.model`` (or of the LightningModule when
            it has no ``.model``; under ``torch.compile``, of the module it wraps). Default:
            those of two or more dimensions (weight matrices, conv kernels, embedding tables),
            not biases and norm scales; ``"*"``: every floating-point one. Else a glob on the
            dotted name, a compiled regex, a list of those, or ``f(name, param) -> bool``
            (from LightningCLI: its import path). A tied parameter is taken once, under its
            first name, when any of its names matches.
        sparsified_device: where the copy lives (``"cpu"`` keeps a big model off the GPU).
            Under FSDP2 the copy stays sharded on the model's mesh (leave this ``None``).
        verify_ranks: under DDP, check with one small all-reduce that all ranks agree
            (under FSDP: the ranks holding the same shard; see ``blocksparsity.distributed``).
        print_table: print the per-layer table at the end of fit (rank zero).
        name: tells several instances in one Trainer apart: metrics are logged under
            ``post_training_sparsity/<name>/...`` (unnamed: ``post_training_sparsity/...``).
        scores: ``"magnitude"`` (default: torch.ao's scores, ``|w|``) or ``"activation"``:
            ``|w_ij| * ||X_j||_2`` (Wanda), ``||X_j||_2 = sqrt(diag H)`` of the inputs of the
            layer reading the weight over calibration data, passed to the sparsifier's
            ``set_scale`` (so the masks are the kernels' ``block_mask(scale=...)``). ``nn.Linear``,
            GPT-2's ``Conv1D`` and ``nn.Conv1d/2d/3d`` (``groups=1``) weights; embedding tables
            keep magnitude scores (see ``blocksparsity.calibration``).
        update_weights: after the masks, set each kept weight of every pruned Linear/Conv weight
            of the copy to the least-squares solution that best reproduces the layer's outputs
            on the calibration inputs (``blocksparsity.weight_update``: SparseGPT's column sweep
            refined to the exact per-row solution); masks unchanged, pruned weights exactly 0.
            Needs the full ``H`` (``in x in`` per weight) instead of its diagonal.
        calibration: where the statistics come from: ``"train"`` (default) the fit's last
            training epoch (forward hooks, paused during validation); ``"val"``: the
            validation loader after fit. ``"train"`` falls back to the validation loader
            (else the training loader) when no last epoch ran in this fit.
        calibration_batches: at most this many batches (default: the whole epoch or loader).
        damping: the update's ridge ``lambda`` as a fraction of ``mean(diag H)`` (default 0.01).
        calibration_memory: bytes of statistics buffers held at once (default 1 GiB; None: no
            limit): weights beyond it are calibrated in further groups, each from its own pass
            over the validation (else training) loader after fit.
    """

    def __init__(
        self,
        data_sparsifier_class: type[BaseDataSparsifier] | str,
        data_sparsifier_args: Mapping[str, Any] | None = None,
        *,
        param_filter: _model.ParamFilter = None,
        sparsified_device: torch.device | str | None = None,
        verify_ranks: bool = True,
        print_table: bool = True,
        name: str | None = None,
        scores: str = "magnitude",
        update_weights: bool = False,
        calibration: str = "train",
        calibration_batches: int | None = None,
        damping: float = DEFAULT_DAMPING,
        calibration_memory: int | None = DEFAULT_MEMORY,
    ):
        super().__init__(
            data_sparsifier_class, data_sparsifier_args, param_filter=param_filter,
            sparsified_device=sparsified_device, verify_ranks=verify_ranks, print_table=print_table, name=name,
            calibration_options=check_options(scores, update_weights, calibration, calibration_batches, damping,
                                              calibration_memory, check_class(data_sparsifier_class, BaseDataSparsifier,
                                                                              "data_sparsifier_class")),
        )

    @override
    @timed_hook
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if self.calibrator is not None:
            self.calibrator.batch_done()

    @override
    @timed_hook
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.calibrator is not None:
            self.calibrator.end_epoch()

    @override
    @timed_hook
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        params = self._parameters(pl_module)
        updated = self._calibrate(trainer, pl_module, params)
        self._update_masks(params)
        self.sparsified = self._make_sparsified_copy(trainer, pl_module)
        self._write_updates(updated)
        self._report(trainer, "post_training_sparsity")
        self._print_table(trainer, "Post-training sparsity" + (f" ({self.name})" if self.name else ""))
