"""What both callbacks share: argument checks, attaching the model's tensors to the
sparsifier, computing masks on the model's device, the sparsified copy, reporting."""

from __future__ import annotations

import inspect
import time
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.strategies import FSDPStrategy
from torch import nn

from sparsity.base_sparsifier import BaseDataSparsifier
from sparsity.callbacks import _model, _report
from sparsity.distributed import assert_masks_agree


def check_class(cls: object, base: type, what: str) -> type:
    """``cls`` must be a subclass of ``base`` (a class, not an instance)."""
    if not inspect.isclass(cls):
        raise TypeError(
            f"{what} must be a class (the callback builds the object itself); got an instance of {type(cls).__name__}"
        )
    if not issubclass(cls, base):
        raise TypeError(f"{what} must be a subclass of sparsity.{base.__name__}; got {cls.__name__}")
    return cls


def check_args(cls: type, args: object, what: str, reserved: tuple[str, ...]) -> dict[str, Any]:
    """``args`` must be a mapping that ``cls`` accepts as keyword arguments."""
    if args is None:
        args = {}
    if not isinstance(args, Mapping):
        raise TypeError(f"{what} must be a dict of keyword arguments; got {type(args).__name__}")
    args = dict(args)
    for key in reserved:
        if key in args:
            raise ValueError(f"{what} must not contain {key!r}: the callback passes it itself")
    try:
        inspect.signature(cls).bind(**dict.fromkeys(reserved), **args)
    except TypeError as err:
        raise TypeError(f"{what} do not fit {cls.__name__}: {err}") from None
    return args


def check_flag(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{what} must be True or False; got {value!r}")
    return value


def check_device(device: object, what: str) -> torch.device | None:
    """None, or something ``torch.device`` takes (checked now, not when the copy is made)."""
    if device is None:
        return None
    if not isinstance(device, str | int | torch.device) or isinstance(device, bool):
        raise TypeError(f"{what} must be a torch.device, a device string such as 'cpu', or None; got {device!r}")
    try:
        return torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"{what} must name a device such as 'cpu' or 'cuda:0'; got {device!r} ({err})") from None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class DataSparsityCallback(pl.Callback):
    """Base of the two callbacks (not used directly)."""

    def __init__(
        self,
        data_sparsifier_class: type[BaseDataSparsifier],
        data_sparsifier_args: Mapping[str, Any] | None,
        *,
        param_filter: _model.ParamFilter = None,
        sparsified_device: torch.device | str | None = None,
        verify_ranks: bool = True,
        print_table: bool = True,
    ):
        super().__init__()
        self.data_sparsifier_class = check_class(data_sparsifier_class, BaseDataSparsifier, "data_sparsifier_class")
        self.data_sparsifier_args = check_args(
            data_sparsifier_class, data_sparsifier_args, "data_sparsifier_args", ("data_list",)
        )
        self.data_sparsifier_class(**self.data_sparsifier_args)  # bad values fail now, not after training
        self._keep = _model.check_param_filter(param_filter)
        self.sparsified_device = check_device(sparsified_device, "sparsified_device")
        self.verify_ranks = check_flag(verify_ranks, "verify_ranks")
        self.print_table = check_flag(print_table, "print_table")
        self.data_sparsifier: BaseDataSparsifier | None = None
        self.sparsified: nn.Module | None = None
        self.history: list[dict[str, float]] = []  # metrics of every mask update
        self.seconds_in_callback = 0.0  # wall time spent in this callback's hooks
        self._masks: dict[str, torch.Tensor] = {}  # latest masks, on the model's device
        self._layers: list[_report.LayerSparsity] = []
        self._mask_seconds = 0.0

    # ---------------------------------------------------------------- tensors
    def _parameters(self, pl_module: pl.LightningModule) -> dict[str, nn.Parameter]:
        _model.refuse_flat_parameters(pl_module)
        params = _model.selected_parameters(_model.target_module(pl_module), self._keep)
        if not params:
            raise ValueError(
                f"{type(self).__name__} found no floating-point parameters to sparsify in "
                f"{type(_model.target_module(pl_module)).__name__} (check param_filter)"
            )
        return params

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if isinstance(trainer.strategy, FSDPStrategy):  # it wraps the model later, in FSDP1
            raise ValueError(f"{type(self).__name__}: {_model.FSDP1_MESSAGE}")
        if stage == "fit":
            self._parameters(pl_module)  # a module with nothing to sparsify fails before training

    def _new_sparsifier(self) -> BaseDataSparsifier:
        return self.data_sparsifier_class(**self.data_sparsifier_args)

    def _attach_live(self, params: dict[str, nn.Parameter]) -> None:
        """Point the sparsifier at the live weights (no copy), keeping configs and masks."""
        sparsifier = self.data_sparsifier
        for name, p in params.items():
            config = {"mask": self._masks[name]} if name in self._masks else {}
            sparsifier._add_data(name, p.detach(), True, False, config)

    # ---------------------------------------------------------------- masks
    def _update_masks(self, params: dict[str, nn.Parameter]) -> None:
        """Recompute every mask from the live weights, on their device; check that all
        ranks agree."""
        self._attach_live(params)
        device = next(iter(params.values())).device
        _sync(device)
        start = time.perf_counter()
        self.data_sparsifier.step()
        _sync(device)
        self._mask_seconds = time.perf_counter() - start
        self._masks = {name: self.data_sparsifier.get_mask(name) for name in params}
        self._layers = _report.measure(self._masks, self._levels())  # the levels these masks were made with
        if self.verify_ranks:
            assert_masks_agree(self._masks)

    def _levels(self) -> dict[str, float]:
        return {name: cfg.get("sparsity_level", float("nan")) for name, cfg in self.data_sparsifier.data_groups.items()}

    def _make_sparsified_copy(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> nn.Module:
        """A copy of the model on ``sparsified_device`` with the masks applied; the
        sparsifier ends holding the copy's tensors, squashed (as torch.ao's callbacks)."""
        module = _model.target_module(pl_module)
        copy = _model.copy_to(module, self.sparsified_device, skip=[trainer])
        copy_params = dict(copy.named_parameters())
        for name, mask in self._masks.items():
            target = copy_params[name]
            self.data_sparsifier._add_data(name, target.detach(), True, False, {"mask": mask.to(target.device)})
        self.data_sparsifier.squash_mask()
        return copy.eval()

    # ---------------------------------------------------------------- reporting
    def _report(self, trainer: pl.Trainer, prefix: str) -> None:
        metrics = _report.metrics(self._layers, self._mask_seconds, prefix)
        self.history.append(metrics)
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)

    def _print_table(self, trainer: pl.Trainer, title: str) -> None:
        if self.print_table and self._layers and trainer.is_global_zero:
            print(_report.table(self._layers, self._mask_seconds, title), flush=True)

    def _timed(self, hook, *args: Any) -> Any:
        start = time.perf_counter()
        try:
            return hook(*args)
        finally:
            self.seconds_in_callback += time.perf_counter() - start
