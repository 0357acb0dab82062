"""TrainingAwareDataSparsity: a sparsified copy every epoch, the level set by a scheduler;
optionally the live model itself, kept sparse through training (gradual pruning)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from typing_extensions import override

from blocksparsity.base_sparsifier import BaseDataSparsifier
from blocksparsity.callbacks import _model
from blocksparsity.callbacks._base import DataSparsityCallback, check_args, check_class, timed_hook
from blocksparsity.callbacks._calibrate import DEFAULT_MEMORY, check_options
from blocksparsity.callbacks._snapshot import LiveSnapshot
from blocksparsity.kernels.validation import is_dtensor, local_tensor
from blocksparsity.schedulers import BaseDataScheduler
from blocksparsity.weight_update import DEFAULT_DAMPING

__all__ = ["SHARDED_MASKS_PREFIX", "STATE_KEY", "STATE_VERSION", "TrainingAwareDataSparsity", "is_state_key"]

# On-disk names (those of 0.1.0; identifiers of the file format, not of the import path):
STATE_VERSION = 1
STATE_KEY = "TrainingAwareDataSparsity"  # an unnamed instance's key in a checkpoint's "callbacks"
SHARDED_MASKS_PREFIX = "_blocksparse_masks/"  # keys of sharded masks in a distributed checkpoint's "state_dict"


def is_state_key(key: object) -> bool:
    """Does ``key`` (of a Lightning checkpoint's ``"callbacks"``) hold a ``TrainingAwareDataSparsity``
    state? ``STATE_KEY`` for an unnamed instance, ``STATE_KEY + "{'name': ...}"`` for a named one
    (Lightning's ``Callback._generate_state_key``); a class, as a key, by its qualified name."""
    key = key if isinstance(key, str) else getattr(key, "__qualname__", "")
    return key == STATE_KEY or key.startswith(STATE_KEY + "{")


def _saved_sharded(checkpoint: dict[str, Any]) -> bool:
    """Does Lightning save this checkpoint sharded (a distributed checkpoint)? Lightning has
    no public way to ask (``ModelParallelStrategy(save_distributed_checkpoint=...)`` keeps it
    private), so the model state dict it has put in the checkpoint tells: DTensors when it
    saves shards; whole tensors on rank 0 (and nothing on the others) when it gathers."""
    return any(is_dtensor(v) for v in checkpoint.get("state_dict", {}).values())


class TrainingAwareDataSparsity(DataSparsityCallback):
    """Sparsifies a copy of the model at every training-epoch end, at the level a scheduler sets.

    At setup the callback builds the sparsifier (one per fit) over the model's tensors and
    ``data_scheduler_class(data_sparsifier, **data_scheduler_args)``, so bad values fail
    before training; train start points them at the tensors as the strategy placed them.
    At every train-epoch end it computes masks from the current weights (on their device),
    steps the scheduler, and leaves a sparsified copy in ``.sparsified``; the model itself
    is not modified.

    Masks come first, then the scheduler steps (torch.ao's order): mask update ``k`` (0, 1,
    ...) uses the level after ``k`` scheduler steps, so the first uses the schedule's initial
    level and, for the last of ``N`` updates to use a ramp's final level,
    ``init_t + total_t * delta_t <= N - 1`` (e.g. ``CubicSLScheduler(init_t=0, delta_t=1,
    total_t=max_epochs - 1)``). At train start a ramp (``CubicSLScheduler``,
    ``LinearSLScheduler``) that would not reach its final level within the fit's
    ``max_epochs``/``max_steps`` gets a warning saying what to set.

    With ``inplace=True`` the live model is sparsified instead: its weights are masked,
    gradients are masked after every backward pass and weights re-masked after every
    batch, so training adapts to the sparsity (gradual magnitude pruning). Masks and
    schedule then advance every epoch, or every ``every_n_steps`` optimizer steps with
    ``schedule_interval="step"``.

    The callback is resumable: its ``state_dict`` (saved in Lightning checkpoints) holds
    the masks, configs and schedule, so a run resumed from a checkpoint produces the same
    masks as an uninterrupted one, whether the checkpoint was taken at train-epoch end or
    at validation end (Lightning then replays the epoch end, and this callback's step).

    Under FSDP2 (``ModelParallelStrategy``) the masks are DTensors sharded like the
    parameters. Lightning writes callback state from rank zero only, so in a sharded
    (distributed) checkpoint the masks travel with the model's sharded state dict instead,
    under keys ``"_blocksparse_masks/<name>"`` (each rank writes its shards; nothing is
    gathered), and are read back from ``ckpt_path`` on resume. With
    ``save_distributed_checkpoint=False`` (everything gathered to one file) the masks are
    gathered too.

    Args:
        data_sparsifier_class, data_sparsifier_args: as ``PostTrainingDataSparsity``.
        data_scheduler_class: a ``blocksparsity.BaseDataScheduler`` subclass (the class itself),
            or its import path (``"blocksparsity.CubicSLScheduler"``).
        data_scheduler_args: its keyword arguments (not ``data_sparsifier``).
        inplace: sparsify the live model (see above).
        schedule_interval: ``"epoch"`` or ``"step"`` (``"step"`` needs ``inplace=True``).
        every_n_steps: with ``schedule_interval="step"``, optimizer steps between updates.
        param_filter, sparsified_device, verify_ranks, print_table: as ``PostTrainingDataSparsity``.
        name: tells several instances in one Trainer apart (e.g. one per group of layers, each
            with its own ``param_filter``, sparsifier arguments and schedule): each has its own
            ``state_key`` (so each resumes its own state from a checkpoint) and logs under
            ``training_aware_sparsity/<name>/...``. Two in-place instances whose filters select
            the same tensor are refused at setup.
        scores: ``"magnitude"`` (default) or ``"activation"``: every mask update scores blocks on
            ``|w_ij| * ||X_j||_2`` as ``PostTrainingDataSparsity`` does, from the inputs of the
            training batches since the last update or the epoch's start, whichever is later
            (``calibration="train"``), or of the validation loader at the update (``"val"``).
        update_weights: copies only (``inplace=False``; refused with ``inplace=True``, where the
            optimizer would go on from weights it did not make and training adapts the kept
            weights itself): every epoch's ``.sparsified`` gets the least-squares update of its
            kept weights, as ``PostTrainingDataSparsity`` would make it from that epoch's weights
            and statistics. Costs the full ``H`` (``in x in`` per weight, one ``addmm`` per batch)
            in every epoch and one update per epoch (see docs/callbacks.md).
        calibration, calibration_batches, damping, calibration_memory: as
            ``PostTrainingDataSparsity``, per mask update (``calibration_batches``: at most this
            many batches per update).
    """

    _calibrates_every_epoch = True  # every mask update needs its own statistics
    _lazy_copy = True  # in place: the per-epoch copy is made when read (see _snapshot); False: at every epoch end

    def __init__(
        self,
        data_sparsifier_class: type[BaseDataSparsifier] | str,
        data_sparsifier_args: Mapping[str, Any] | None,
        data_scheduler_class: type[BaseDataScheduler] | str,
        data_scheduler_args: Mapping[str, Any] | None = None,
        *,
        inplace: bool = False,
        schedule_interval: str = "epoch",
        every_n_steps: int = 1,
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
        self.data_scheduler_class = check_class(data_scheduler_class, BaseDataScheduler, "data_scheduler_class")
        self.data_scheduler_args = check_args(
            self.data_scheduler_class, data_scheduler_args, "data_scheduler_args", ("data_sparsifier",)
        )
        if not isinstance(inplace, bool):
            raise TypeError(f"inplace must be True or False; got {inplace!r}")
        if schedule_interval not in ("epoch", "step"):
            raise ValueError(f"schedule_interval must be 'epoch' or 'step'; got {schedule_interval!r}")
        if schedule_interval == "step" and not inplace:
            raise ValueError("schedule_interval='step' needs inplace=True (only the live model changes between epochs)")
        if not isinstance(every_n_steps, int) or isinstance(every_n_steps, bool) or every_n_steps < 1:
            raise ValueError(f"every_n_steps must be a positive int; got {every_n_steps!r}")
        if update_weights and inplace:
            raise ValueError(
                "update_weights=True needs inplace=False: it updates the kept weights of each epoch's copy; in place "
                "it would overwrite the live weights under the optimizer (whose state refers to the old ones), and "
                "gradual pruning already trains the kept weights. For an updated final model, add a "
                "PostTrainingDataSparsity(update_weights=True)"
            )
        self.inplace = inplace
        self.schedule_interval = schedule_interval
        self.every_n_steps = every_n_steps
        self.data_scheduler: BaseDataScheduler | None = None
        self.epochs_done = 0  # epoch-end updates done (restored from checkpoints)
        self.updates_done = 0  # mask updates done
        self._first_step = 0  # the trainer's global_step when this callback's schedule began
        # A checkpoint's state, from load_state_dict until train start: Lightning restores callbacks
        # before the strategy places the weights (moved to their device, sharded), and the masks
        # must be placed like them (sharded masks are read from the checkpoint with their placement).
        self._checkpoint_state: dict[str, Any] | None = None
        self._params: dict[str, torch.nn.Parameter] = {}
        # In-place mode, remade at every mask update: the masked parameters, their local shards, and
        # their masks in their dtypes, so that each batch masks all of them in one multi-tensor
        # multiply instead of promoting every bool mask every time.
        self._masked: list[torch.nn.Parameter] = []
        self._masked_local: list[torch.Tensor] = []
        self._multipliers: list[torch.Tensor] = []
        self._plain = True  # no masked parameter is a DTensor

    def _masks_live_model(self) -> bool:
        return self.inplace

    # ---------------------------------------------------------------- lifecycle
    def _build(self, params: dict[str, torch.nn.Parameter]) -> None:
        """The sparsifier over the model's tensors and the scheduler over it (bad scheduler
        values fail here, before training)."""
        super()._build(params)
        self._attach_live(params)
        self.data_scheduler = self.data_scheduler_class(data_sparsifier=self.data_sparsifier, **self.data_scheduler_args)

    @override
    @timed_hook
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Point the sparsifier at the tensors as the strategy placed them (device, DTensor),
        restore a checkpoint's state, check the schedule, and mask the live model."""
        self._params = self._parameters(pl_module)
        if set(self.data_sparsifier.data_groups) != set(self._params):
            raise ValueError(
                f"{type(self).__name__}: the parameters selected at train start differ from those at setup: "
                f"{sorted(set(self.data_sparsifier.data_groups) ^ set(self._params))[:5]} (create and name every "
                "parameter before setup: in __init__, or configure_model for sharding only)"
            )
        self._masks = {}  # masks all kept, made anew for the placed tensors
        self._attach_live(self._params, fresh=True)
        state, self._checkpoint_state = self._checkpoint_state, None
        if state is not None:
            self._restore(state, trainer)
        elif self.updates_done == 0:  # a fresh schedule, also in a run resumed without this callback's state
            self._first_step = trainer.global_step
        self._check_schedule(trainer)
        if self.inplace:
            self._remake_multipliers()
            self._mask_live()

    @override
    @timed_hook
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.calibrator is not None:
            self.calibrator.end_epoch()
        updated = {}
        if self.schedule_interval == "epoch":
            updated = self._step_masks_and_schedule(trainer, pl_module)
        self.epochs_done += 1
        if self.inplace:
            self._mask_live()
        if self.inplace and self._lazy_copy and not any(is_dtensor(p) for p in self._params.values()):
            self._live_snapshot.take(_model.target_module(pl_module), self.sparsified_device, skip=(trainer,))
            self._sparsified = None
        else:
            self.sparsified = self._make_sparsified_copy(trainer, pl_module)
            self._write_updates(updated)

    @property
    def sparsified(self) -> torch.nn.Module | None:
        """The sparsified copy of the latest epoch end (``None`` before the first). In place
        it is made when first read, from the live model's tensors saved at that epoch end:
        equal to a copy made then, whenever it is read."""
        snapshot = self.__dict__.get("_live_snapshot")
        if snapshot is not None and snapshot.pending:
            self._sparsified = snapshot.materialize()
        return self.__dict__.get("_sparsified")

    @sparsified.setter
    def sparsified(self, value: torch.nn.Module | None) -> None:
        if "_live_snapshot" not in self.__dict__:
            self._live_snapshot = LiveSnapshot()
        self._live_snapshot.clear()
        self._sparsified = value

    def _step_masks_and_schedule(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, torch.Tensor]:
        """One mask update (scales and updated weights first, with calibration options),
        logged at once (at ``trainer.global_step``), then the scheduler's step. Returns the
        updated weights for the copy (``update_weights``), by name."""
        updated = self._calibrate(trainer, pl_module, self._params)
        self._update_masks(self._params)
        if self.inplace:
            self._remake_multipliers()
        self._report(trainer, "training_aware_sparsity")
        self.data_scheduler.step()
        self.updates_done += 1
        return updated

    # ---------------------------------------------------------------- schedule check
    def _updates_in_fit(self, trainer: pl.Trainer) -> int | None:
        """How many mask updates this fit makes in all (from its first epoch), or ``None``
        when unknown (no ``max_epochs``/``max_steps``, data of unknown length)."""
        try:
            steps = trainer.estimated_stepping_batches
        except MisconfigurationException:  # what Lightning raises when it cannot estimate them
            return None
        if not math.isfinite(steps) or steps < 0:
            return None
        if self.schedule_interval == "step":
            return (int(steps) - self._first_step) // self.every_n_steps
        batches = trainer.num_training_batches
        if not math.isfinite(batches) or batches < 1:
            return None
        per_epoch = max(1, math.ceil(batches / trainer.accumulate_grad_batches))
        return math.ceil(int(steps) / per_epoch) - trainer.current_epoch + self.epochs_done

    def _check_schedule(self, trainer: pl.Trainer) -> None:
        """Warn when the schedule would not reach its final level at the fit's last mask
        update (``BaseDataScheduler.shortfall_at``: ramps say so; other schedules have no end)."""
        updates = self._updates_in_fit(trainer)
        if updates is None or updates < 1:
            return
        scheduler = self.data_scheduler
        first_t = scheduler.last_epoch - self.updates_done  # the schedule's t at the first update of the fit
        last_t = first_t + updates - 1
        short = scheduler.shortfall_at(last_t)
        if short is not None:
            rank_zero_warn(
                f"{type(self).__name__}(name={self.name!r}): this fit makes {updates} mask updates and the last "
                f"uses {type(scheduler).__name__}'s level at t={last_t}: {short.value:.4g} for {short.name!r}, not its "
                f"final {short.final:.4g} (reached at t={short.final_t:g}). Masks are computed before the scheduler "
                f"steps, so update k uses t={first_t}+k: set the ramp to end by t={last_t} ({short.how_to_end}), "
                "or train longer",
                category=UserWarning,
            )

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        named = f" ({self.name})" if self.name else ""
        self._print_table(trainer, f"Training-aware sparsity{named} after {self.epochs_done} epochs")

    # ---------------------------------------------------------------- in-place mode
    def _remake_multipliers(self) -> None:
        """The masks (their local shards) as multipliers in their parameters' dtypes: written
        into the last update's buffers where they fit, else made anew."""
        names = [name for name in self._params if name in self._masks]
        masked = [self._params[name] for name in names]
        masked_local = [local_tensor(p) for p in masked]
        masks = [_as_bytes(local_tensor(self._masks[name])) for name in names]
        if self._multipliers_fit(masked, masked_local, masks):  # the same tensors: new values into the same buffers
            torch._foreach_copy_(self._multipliers, masks)
            return
        self._masked, self._masked_local = masked, masked_local
        self._multipliers = [m.to(p.dtype) for m, p in zip(masks, masked_local, strict=True)]
        self._plain = not any(is_dtensor(p) for p in masked)  # gradients are the parameters' own local tensors

    def _multipliers_fit(self, masked: list[torch.nn.Parameter], masked_local: list[torch.Tensor],
                         masks: list[torch.Tensor]) -> bool:
        """Can the multipliers of the last update take ``masks`` in place? Yes when they were made
        for the same parameters (objects and local tensors) and each has its mask's shape and
        device and its parameter's dtype."""
        if not masks or len(masked) != len(self._masked) or len(masks) != len(self._multipliers):
            return False
        return all(
            p is q and pl is ql and m.shape == mult.shape and m.device == mult.device and mult.dtype == pl.dtype
            for p, q, pl, ql, m, mult in zip(masked, self._masked, masked_local, self._masked_local, masks,
                                              self._multipliers, strict=True)
        )

    def _mask_live(self) -> None:
        """Multiply the masked weights by their masks: one multi-tensor multiply."""
        if self._masked_local:
            with torch.no_grad():
                torch._foreach_mul_(self._masked_local, self._multipliers)

    @override
    @timed_hook
    def on_after_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """In place: mask the gradients, so that the optimizer (and its state) moves no pruned
        weight. Every batch pays this hook: in the usual case (plain tensors, every gradient
        there) it is one multi-tensor multiply and nothing else."""
        if not self.inplace or not self._masked:
            return
        if self._plain:
            grads = [p.grad for p in self._masked]
            if all(g is not None for g in grads):
                with torch.no_grad():
                    torch._foreach_mul_(grads, self._multipliers)
                return
        self._mask_present_grads()

    def _mask_present_grads(self) -> None:
        """The gradients that exist (local shards of DTensor ones) multiplied by their masks."""
        pairs = [(local_tensor(p.grad), m) for p, m in zip(self._masked, self._multipliers, strict=True) if p.grad is not None]
        if pairs:
            with torch.no_grad():
                torch._foreach_mul_([g for g, _ in pairs], [m for _, m in pairs])

    @override
    @timed_hook
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        """Calibration's batch count; in place, the step schedule's mask update when it is due,
        then the live weights re-masked (optimizer steps, momentum and weight decay, revive
        masked weights)."""
        if self.calibrator is not None:
            self.calibrator.batch_done()
        if not self.inplace:
            return
        if self.schedule_interval == "step" and self._step_update_due(trainer):
            self._step_masks_and_schedule(trainer, pl_module)
            if self.calibrator is not None:
                self.calibrator.restart()  # the next update's statistics: the batches from here on
        self._mask_live()

    def _step_update_due(self, trainer: pl.Trainer) -> bool:
        """With ``schedule_interval="step"``: is a mask update due now (every ``every_n_steps``
        optimizer steps since the schedule began, once each)?"""
        steps = trainer.global_step - self._first_step
        return steps > 0 and steps % self.every_n_steps == 0 and steps // self.every_n_steps > self.updates_done

    # ---------------------------------------------------------------- checkpoints
    @override
    def state_dict(self) -> dict[str, Any]:
        if self.data_sparsifier is None:
            return {"version": STATE_VERSION, "sparsifier": None}
        sparsifier = self.data_sparsifier.state_dict(with_data=False)
        sparsifier["state"] = {name: {"mask": m if is_dtensor(m) else m.cpu()} for name, m in self._masks.items()}
        sparsifier["squashed"] = []
        return {
            "version": STATE_VERSION,
            "sparsifier": sparsifier,
            "scheduler": self.data_scheduler.state_dict(),
            "epochs_done": self.epochs_done,
            "updates_done": self.updates_done,
            "first_step": self._first_step,
            "mask_levels": {layer.name: layer.level for layer in self._layers},  # what the report shows after resume
        }

    @override
    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        """Sharded masks go where Lightning saves shards: the model's state dict of a
        distributed checkpoint (or, in a gathered checkpoint, gathered like the weights)."""
        state = checkpoint.get("callbacks", {}).get(self.state_key)
        if not state or state.get("sparsifier") is None:
            return
        masks = state["sparsifier"]["state"]
        if not any(is_dtensor(s["mask"]) for s in masks.values()):
            return
        if _saved_sharded(checkpoint):
            for name, s in masks.items():
                checkpoint["state_dict"][SHARDED_MASKS_PREFIX + name] = s["mask"]
            state["sparsifier"]["state"] = {}
            state["sharded_masks"] = SHARDED_MASKS_PREFIX
        else:
            state["sparsifier"]["state"] = {name: {"mask": s["mask"].full_tensor().cpu()} for name, s in masks.items()}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Check a checkpoint's state now; it is restored at train start (see ``_checkpoint_state``)."""
        if state_dict.get("version") != STATE_VERSION:
            raise ValueError(f"not a {type(self).__name__} state (version {state_dict.get('version')!r})")
        self._checkpoint_state = state_dict if state_dict.get("sparsifier") is not None else None

    def _restore(self, state: dict[str, Any], trainer: pl.Trainer) -> None:
        saved = state["sparsifier"]
        if state.get("sharded_masks") is not None:
            saved = {**saved, "state": _load_sharded_masks(trainer.ckpt_path, state["sharded_masks"], self._params)}
        if set(saved["state"]) != set(self._params):
            raise ValueError(
                "the checkpoint's sparsified tensors differ from this model's: "
                f"{sorted(set(saved['state']) ^ set(self._params))[:5]}"
            )
        self.data_sparsifier.load_state_dict(saved)
        self._masks = {name: self.data_sparsifier.get_mask(name) for name in self._params}
        if state["updates_done"]:  # masks were made: report them as they were
            levels = state.get("mask_levels") or {}
            self._measure({name: levels.get(name, float("nan")) for name in self._masks})
        self.data_scheduler.load_state_dict(state["scheduler"])
        self.epochs_done = state["epochs_done"]
        self.updates_done = state["updates_done"]
        self._first_step = state.get("first_step", 0)


def _as_bytes(mask: torch.Tensor) -> torch.Tensor:
    """A bool mask as a uint8 view of its bytes (0 or 1: the same values once cast); other
    masks as they are. torch casts uint8 to floating point several times faster than bool,
    and every in-place mask update casts every mask into its multiplier."""
    return mask.view(torch.uint8) if mask.dtype == torch.bool else mask


def _load_sharded_masks(path: str, prefix: str, params: dict[str, torch.nn.Parameter]) -> dict[str, dict[str, torch.Tensor]]:
    """Each rank's shards of the masks saved with the model's state dict in the distributed
    checkpoint at ``path``, placed like the parameters."""
    from torch.distributed.checkpoint import load

    masks = {prefix + name: torch.zeros_like(p.detach(), dtype=torch.bool) for name, p in params.items()}
    load({"state_dict": masks}, checkpoint_id=path)
    return {name: {"mask": masks[prefix + name]} for name in params}

