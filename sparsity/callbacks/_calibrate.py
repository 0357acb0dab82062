"""Activation-aware scores and the least-squares update for the callbacks: their options,
checked once, the collection of calibration statistics from the passes Lightning makes, and
their use (scales into the sparsifier, updated weights into the copy), said once for both
callbacks.

Statistics (``blocksparsity.calibration``) are summed by forward pre-hooks during training
(``calibration="train"``). ``PostTrainingDataSparsity`` collects in the fit's last training
epoch (the epoch that ``max_epochs`` makes the last; every epoch, restarted at each, when the
fit ends by ``max_steps`` or has no ``max_epochs``); ``TrainingAwareDataSparsity`` in every
epoch, restarted at each epoch start and after each mask update (``every_epoch=True``). Hooks
are paused while validation runs, optionally over its first ``calibration_batches`` batches. When
no such epoch ran in this fit (resumed at its end, stopped early) or the user asks
(``calibration="val"``), and for the weight groups beyond the first when the buffers exceed
``calibration_memory``, they come from ``calibration_batches`` batches (default: all) of the
validation loader after fit (else of the training loader): ``validation_step`` (or
``training_step``) runs in eval mode under ``no_grad``, its ``self.log`` calls dropped.
Buffers are summed over DDP ranks (one all-reduce per weight).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn

from blocksparsity.base_sparsifier import BaseDataSparsifier
from blocksparsity.calibration import InputStatistics, Target, find_targets, plan_groups
from blocksparsity.kernels.validation import check_bool, is_dtensor
from blocksparsity.weight_update import DEFAULT_DAMPING, check_damping, least_squares_update

SCORES = ("magnitude", "activation")
SOURCES = ("train", "val")
DEFAULT_MEMORY = 2**30  # bytes of statistics buffers held at once


@dataclass(frozen=True)
class CalibrationOptions:
    """The checked options (configuration, not state)."""

    scores: str = "magnitude"
    update_weights: bool = False
    calibration: str = "train"
    calibration_batches: int | None = None
    damping: float = DEFAULT_DAMPING
    calibration_memory: int | None = DEFAULT_MEMORY

    @property
    def needed(self) -> bool:
        """Whether any statistics are collected (the default collects none)."""
        return self.scores == "activation" or self.update_weights


def check_options(scores: object, update_weights: object, calibration: object, calibration_batches: object,
                  damping: object, calibration_memory: object, sparsifier_class: type) -> CalibrationOptions:
    if scores not in SCORES:
        raise ValueError(f"scores must be one of {list(SCORES)}; got {scores!r}")
    check_bool(update_weights, "update_weights")
    if calibration not in SOURCES:
        raise ValueError(f"calibration must be one of {list(SOURCES)}; got {calibration!r}")
    if calibration_batches is not None and (not isinstance(calibration_batches, int) or isinstance(calibration_batches, bool)
                                            or calibration_batches < 1):
        raise ValueError(f"calibration_batches must be a positive int or None (all); got {calibration_batches!r}")
    damping = check_damping(damping)
    if calibration_memory is not None and (not isinstance(calibration_memory, int) or isinstance(calibration_memory, bool)
                                           or calibration_memory < 1):
        raise ValueError(f"calibration_memory must be a positive int (bytes) or None (no limit); got {calibration_memory!r}")
    if scores == "activation" and not callable(getattr(sparsifier_class, "set_scale", None)):
        raise TypeError(f"scores='activation' needs a sparsifier with set_scale(name, scale) (DataNormSparsifier); "
                        f"{sparsifier_class.__name__} has none")
    return CalibrationOptions(scores, update_weights, calibration, calibration_batches, damping, calibration_memory)


SHARDED_MESSAGE = ("scores='activation' and update_weights=True do not support sharded (FSDP2/DTensor) parameters "
                   "yet; use DDP, or leave the defaults (scores='magnitude', update_weights=False)")


def refuse_sharding(trainer: pl.Trainer | None, params: dict[str, nn.Parameter]) -> None:
    """The statistics and the update need whole weights: refuse FSDP2 (``ModelParallelStrategy``,
    which shards after ``setup``) and parameters that are already DTensors."""
    from lightning.pytorch.strategies import ModelParallelStrategy

    if (trainer is not None and isinstance(trainer.strategy, ModelParallelStrategy)) or any(
            is_dtensor(p) for p in params.values()):
        raise ValueError(SHARDED_MESSAGE)


def _first_loader(loaders: Any) -> Any:
    if isinstance(loaders, list | tuple):
        return loaders[0] if loaders else None
    if isinstance(loaders, dict):
        return next(iter(loaders.values()), None)
    return loaders


@contextlib.contextmanager
def _quiet_logging(pl_module: pl.LightningModule) -> Iterator[None]:
    """``self.log``/``self.log_dict`` do nothing (the step runs outside Lightning's loops)."""
    pl_module.log = lambda *args, **kwargs: None  # type: ignore[method-assign]
    pl_module.log_dict = lambda *args, **kwargs: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        del pl_module.log, pl_module.log_dict


class Calibrator:
    """One fit's statistics: built at ``setup``, fed by the hooks, used at fit end."""

    def __init__(self, options: CalibrationOptions, module: nn.Module, params: dict[str, nn.Parameter], *,
                 every_epoch: bool = False):
        refuse_sharding(None, params)
        self.options = options
        self.every_epoch = every_epoch  # collect in every epoch (training-aware), not only the last
        self.targets: dict[str, Target] = find_targets(module, params)
        self.stats = InputStatistics(self.targets, full=options.update_weights)
        item = torch.finfo(self.stats.dtype).bits // 8
        self.groups = plan_groups(self.targets, full=options.update_weights, itemsize=item,
                                  max_bytes=options.calibration_memory)
        self.epoch_done = False  # group 0's statistics cover a whole (last) training epoch
        self._hooks: contextlib.ExitStack | None = None
        self._batches = 0
        self._paused = False

    # ---------------------------------------------------------------- during training
    @staticmethod
    def may_be_last_epoch(trainer: pl.Trainer) -> bool:
        max_epochs = trainer.max_epochs
        if max_epochs is None or max_epochs < 0 or trainer.max_steps not in (-1, None):
            return True
        return trainer.current_epoch >= max_epochs - 1

    def start_epoch(self, trainer: pl.Trainer) -> None:
        self.stop()
        self.epoch_done = False
        if self.every_epoch or self.may_be_last_epoch(trainer):
            self.restart()

    def restart(self) -> None:
        """Statistics of group 0 start anew from the next training batch (``calibration="train"``)."""
        self.stop()
        self.epoch_done = False
        if self.options.calibration != "train" or not self.groups:
            return
        self.stats.reset(self.groups[0])
        self._batches = 0
        self._hooks = contextlib.ExitStack()
        self._hooks.enter_context(self.stats.collecting(self.groups[0], active=lambda: not self._paused))

    def pause(self, paused: bool) -> None:
        self._paused = paused

    def batch_done(self) -> None:
        if self._hooks is None:
            return
        self._batches += 1
        if self.options.calibration_batches is not None and self._batches >= self.options.calibration_batches:
            self.stop()
            self.epoch_done = True

    def end_epoch(self) -> None:
        if self._hooks is not None:
            self.stop()
            self.epoch_done = self._batches > 0

    def stop(self) -> None:
        if self._hooks is not None:
            self._hooks.close()
            self._hooks = None

    # ---------------------------------------------------------------- after fit
    def _pass(self, trainer: pl.Trainer, pl_module: pl.LightningModule, names: list[str]) -> None:
        """Statistics of ``names`` from batches of the validation (else training) loader."""
        loader, step = None, None
        if self.options.calibration == "val" or not self.epoch_done:
            loader, step = _first_loader(trainer.val_dataloaders), pl_module.validation_step
        if loader is None:
            loader, step = _first_loader(trainer.train_dataloader), pl_module.training_step
        if loader is None:
            raise RuntimeError("calibration: no validation or training loader to collect statistics from "
                               "(give trainer.fit a val_dataloaders, or set calibration='train')")
        self.stats.reset(names)
        was_training = pl_module.training
        pl_module.eval()
        try:
            with self.stats.collecting(names), torch.no_grad(), _quiet_logging(pl_module):
                for i, batch in enumerate(loader):
                    if self.options.calibration_batches is not None and i >= self.options.calibration_batches:
                        break
                    step(pl_module.transfer_batch_to_device(batch, pl_module.device, 0), i)
        finally:
            pl_module.train(was_training)

    def groups_of_statistics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Iterator[list[str]]:
        """Each group's names once its statistics are complete (summed over ranks); the
        buffers of a group are freed when the next is collected."""
        for i, names in enumerate(self.groups):
            if not (i == 0 and self.epoch_done and self.options.calibration == "train"):
                self._pass(trainer, pl_module, names)
            self.stats.all_reduce(names)
            yield names
            for name in names:
                self.stats.sums.pop(name, None)

    def calibrate(self, trainer: pl.Trainer, pl_module: pl.LightningModule, sparsifier: BaseDataSparsifier,
                  params: dict[str, nn.Parameter], device: torch.device | None) -> dict[str, torch.Tensor]:
        """Scales into ``sparsifier`` (attached to the live ``params``) and, with
        ``update_weights``, the updated weights by name (on ``device``, default: the weights'),
        group by group: each group's masks made from its scales, as ``step()`` makes them."""
        refuse_sharding(None, params)
        self.stop()
        updated: dict[str, torch.Tensor] = {}
        for names in self.groups_of_statistics(trainer, pl_module):
            for name in names:
                if self.options.scores == "activation":
                    sparsifier.set_scale(name, self.stats.scale(name))
                if self.options.update_weights and self.targets[name].updatable:
                    sparsifier.update_mask(name, params[name].detach(), **sparsifier.data_groups[name])
                    new = self.updated_weight(name, sparsifier.get_mask(name))
                    updated[name] = new.to(device) if device is not None else new
        return updated

    def updated_weight(self, name: str, mask: torch.Tensor) -> torch.Tensor | None:
        """The least-squares update of ``name``'s weight for ``mask`` (the weight's shape and
        dtype, on its device), or None when it is not updatable."""
        target = self.targets[name]
        if not self.options.update_weights or not target.updatable:
            return None
        w2 = target.view_2d(target.weight.detach())
        m2 = target.view_2d(mask)
        new = least_squares_update(w2, m2, self.stats.sums[name], damping=self.options.damping)
        new = new.t() if target.axis == "row" else new
        return new.reshape(target.weight.shape).to(target.weight.dtype)
