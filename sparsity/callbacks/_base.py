"""What both callbacks share: argument checks, attaching the model's tensors to the
sparsifier, computing masks on the model's device, the sparsified copy, reporting.

The lifecycle, in the shape of Lightning's own callbacks: ``__init__`` checks every argument
(and keeps no object it built to do so); ``setup("fit")`` checks the model and builds the
fit's sparsifier (and scheduler): the one place they are built; the hooks then use them.
Hooks whose wall time counts in ``seconds_in_callback`` are marked ``@timed_hook``.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.strategies import FSDPStrategy
from torch import nn
from typing_extensions import override

from blocksparsity.base_sparsifier import BaseDataSparsifier
from blocksparsity.callbacks import _model, _report
from blocksparsity.callbacks._calibrate import CalibrationOptions, Calibrator, refuse_sharding
from blocksparsity.distributed import assert_masks_agree
from blocksparsity.kernels.validation import check_bool


def check_class(cls: object, base: type, what: str) -> type:
    """``cls`` must be a subclass of ``base`` (a class, not an instance), or its import path
    (``"blocksparsity.DataNormSparsifier"``, as a config file gives it)."""
    if isinstance(cls, str):
        cls = import_class(cls, what)
    if not inspect.isclass(cls):
        raise TypeError(
            f"{what} must be a class (the callback builds the object itself); got an instance of {type(cls).__name__}"
        )
    if not issubclass(cls, base):
        raise TypeError(f"{what} must be a subclass of blocksparsity.{base.__name__}; got {cls.__name__}")
    return cls


def import_class(path: str, what: str) -> object:
    """The object at import path ``path`` (``"package.module.Name"`` or ``"package.module:Name"``)."""
    module_name, sep, attr = path.rpartition(":") if ":" in path else path.rpartition(".")
    if not sep or not module_name or not attr:
        raise ValueError(f"{what} must be a class or its import path such as 'blocksparsity.DataNormSparsifier'; got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"{what}={path!r}: cannot import module {module_name!r} ({err})") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ValueError(f"{what}={path!r}: module {module_name!r} has no attribute {attr!r}") from None


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


def timed_hook(hook: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a callback hook so that its wall time (also when it raises) is added to the
    callback's ``seconds_in_callback``, and to ``seconds_by_hook[hook name]``."""

    @functools.wraps(hook)
    def timed(self: DataSparsityCallback, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return hook(self, *args, **kwargs)
        finally:
            seconds = time.perf_counter() - start
            self.seconds_in_callback += seconds
            self.seconds_by_hook[hook.__name__] = self.seconds_by_hook.get(hook.__name__, 0.0) + seconds

    return timed


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class DataSparsityCallback(pl.Callback):
    """Base of the two callbacks (not used directly)."""

    #: whether calibration statistics are collected in every training epoch (training-aware:
    #: every mask update needs them) or only in the fit's last (post-training)
    _calibrates_every_epoch = False

    def __init__(
        self,
        data_sparsifier_class: type[BaseDataSparsifier] | str,
        data_sparsifier_args: Mapping[str, Any] | None,
        *,
        param_filter: _model.ParamFilter = None,
        sparsified_device: torch.device | str | None = None,
        verify_ranks: bool = True,
        print_table: bool = True,
        name: str | None = None,
        calibration_options: CalibrationOptions | None = None,
    ):
        super().__init__()
        if name is not None and (not isinstance(name, str) or not name or "/" in name):
            raise ValueError(f"name must be None or a non-empty str without '/'; got {name!r}")
        self.name = name
        self.data_sparsifier_class = check_class(data_sparsifier_class, BaseDataSparsifier, "data_sparsifier_class")
        self.data_sparsifier_args = check_args(
            self.data_sparsifier_class, data_sparsifier_args, "data_sparsifier_args", ("data_list",)
        )
        self.data_sparsifier_class(**self.data_sparsifier_args)  # bad values fail now; setup builds the fit's own
        self._keep = _model.check_param_filter(param_filter)
        self.sparsified_device = check_device(sparsified_device, "sparsified_device")
        self.verify_ranks = check_bool(verify_ranks, "verify_ranks")
        self.print_table = check_bool(print_table, "print_table")
        self.calibration_options = calibration_options or CalibrationOptions()  # checked by the subclass
        self.calibrator: Calibrator | None = None  # the fit's statistics, built at setup when options ask for them
        self._target: nn.Module | None = None
        self.data_sparsifier: BaseDataSparsifier | None = None
        self.sparsified: nn.Module | None = None
        self.history: list[dict[str, float]] = []  # metrics of every mask update
        self.seconds_in_callback = 0.0  # wall time spent in this callback's hooks
        self.seconds_by_hook: dict[str, float] = {}  # the same, by hook name (where the time goes)
        self._masks: dict[str, torch.Tensor] = {}  # latest masks, on the model's device
        self._layers: list[_report.LayerSparsity] = []
        self._mask_seconds = 0.0

    @property
    def masks(self) -> Mapping[str, torch.Tensor]:
        """The latest masks by parameter name (bool, the parameter's shape, on the model's
        device; DTensors under FSDP2), read-only; empty before the first mask update."""
        return MappingProxyType(self._masks)

    @property
    def layers(self) -> tuple[_report.LayerSparsity, ...]:
        """The rows of the per-layer table of the latest masks (name, shape, the level they
        were made with, zeros, numel, sparsity); empty before the first mask update."""
        return tuple(self._layers)

    # ---------------------------------------------------------------- identity
    @property
    @override
    def state_key(self) -> str:
        """Where Lightning keeps this callback's state in a checkpoint: the class name (as
        before) for an unnamed callback, ``"TrainingAwareDataSparsity{'name': 'emb'}"`` for
        ``name="emb"``. Distinct names let several instances share one Trainer and each
        resume its own state."""
        if self.name is None:
            return type(self).__qualname__
        return self._generate_state_key(name=self.name)

    def _prefix(self, base: str) -> str:
        """The metric prefix: ``base`` for an unnamed callback, ``base/<name>`` otherwise."""
        return base if self.name is None else f"{base}/{self.name}"

    def _masks_live_model(self) -> bool:
        """Whether this callback masks the model being trained (not only a copy of it)."""
        return False

    def _refuse_overlaps(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Two callbacks of one class and one name would log under the same metric names, and
        two masking the same live tensor would multiply their masks (and each report only its
        own): refuse both at setup, naming the tensor."""
        for other in trainer.callbacks:
            if other is not self and type(other) is type(self) and other.name == self.name:
                raise ValueError(
                    f"two {type(self).__name__} callbacks named {self.name!r} would log under the same metric names: "
                    "give each its own name="
                )
        if not self._masks_live_model():
            return
        mine = {id(p): name for name, p in self._parameters(pl_module).items()}
        for other in trainer.callbacks:
            if other is self or not isinstance(other, DataSparsityCallback) or not other._masks_live_model():
                continue
            shared = [mine[id(p)] for p in other._parameters(pl_module).values() if id(p) in mine]
            if shared:
                raise ValueError(
                    f"{type(self).__name__}(name={self.name!r}) and {type(other).__name__}(name={other.name!r}) "
                    f"would both mask {shared[0]!r}" + (f" (and {len(shared) - 1} more)" if len(shared) > 1 else "")
                    + " in the live model: give them param_filters that do not overlap"
                )

    # ---------------------------------------------------------------- tensors
    @property
    def param_filter(self) -> Callable[[str, torch.Tensor], bool]:
        """The predicate on (name, parameter) that ``param_filter=`` became (the default:
        ``blocksparsity.callbacks.weight_matrices``)."""
        return self._keep

    def _parameters(self, pl_module: pl.LightningModule) -> dict[str, nn.Parameter]:
        _model.refuse_flat_parameters(pl_module)
        params = _model.selected_parameters(_model.target_module(pl_module), self._keep)
        if not params:
            raise ValueError(
                f"{type(self).__name__} found no floating-point parameters to sparsify in "
                f"{type(_model.target_module(pl_module)).__name__} (check param_filter: the default takes parameters "
                "of 2+ dims; a str is a glob on the dotted names; a function goes by its import path from a config)"
            )
        return params

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Before a fit: refuse what cannot work (FSDP1, a module with nothing to sparsify,
        overlapping callbacks), then build the fit's sparsifier (``_build``)."""
        if isinstance(trainer.strategy, FSDPStrategy):  # it wraps the model later, in FSDP1
            raise ValueError(f"{type(self).__name__}: {_model.FSDP1_MESSAGE}")
        if stage == "fit":
            params = self._parameters(pl_module)
            self._refuse_overlaps(trainer, pl_module)
            self._target = _model.target_module(pl_module)
            if self.calibration_options.needed:
                refuse_sharding(trainer, params)
            self._build(params)

    def _build(self, params: dict[str, nn.Parameter]) -> None:
        """The one place a fit's sparsifier (and calibrator, where the options ask for one) is
        built (one per fit; subclasses add what goes with it); it has no masks yet."""
        self.data_sparsifier = self.data_sparsifier_class(**self.data_sparsifier_args)
        self._masks = {}
        self.calibrator = None
        if self.calibration_options.needed:
            self.calibrator = Calibrator(self.calibration_options, self._target, params,
                                         every_epoch=self._calibrates_every_epoch)

    # ---------------------------------------------------------------- calibration hooks
    @override
    @timed_hook
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.calibrator is not None:
            self.calibrator.start_epoch(trainer)

    @override
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.calibrator is not None:
            self.calibrator.pause(True)

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.calibrator is not None:
            self.calibrator.pause(False)

    @override
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if self.calibrator is not None:
            self.calibrator.stop()

    def _calibrate(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                   params: dict[str, nn.Parameter]) -> dict[str, torch.Tensor]:
        """Before a mask update: the calibrator's scales into the sparsifier (pointed at the
        live weights) and, with ``update_weights``, the updated weights by name (on
        ``sparsified_device``); nothing without a calibrator."""
        if self.calibrator is None:
            return {}
        self._attach_live(params)
        return self.calibrator.calibrate(trainer, pl_module, self.data_sparsifier, params, self.sparsified_device)

    def _write_updates(self, updated: dict[str, torch.Tensor]) -> None:
        """The updated kept weights into ``.sparsified`` (masked: pruned weights stay exactly 0)."""
        if not updated:
            return
        copy_params = _model.named_parameters(self.sparsified)
        with torch.no_grad():
            for name, new in updated.items():
                copy_params[name].copy_(new * self._masks[name].to(new.device))

    def _attach_live(self, params: dict[str, nn.Parameter], fresh: bool = False) -> None:
        """Point the sparsifier at the live weights (no copy), keeping configs. Masks are
        this callback's latest where it has one, else kept (``fresh``: all kept, made anew)."""
        for name, p in params.items():
            self.data_sparsifier.attach(name, p.detach(), mask=self._masks.get(name), reuse_mask=not fresh)

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
        self._measure(self._levels())  # the levels these masks were made with
        if self.verify_ranks:
            assert_masks_agree(self._masks)

    def _measure(self, levels: dict[str, float]) -> None:
        """The report rows of the current masks, made with ``levels``."""
        self._layers = _report.measure(self._masks, levels)

    def _levels(self) -> dict[str, float]:
        return {name: cfg.get("sparsity_level", float("nan")) for name, cfg in self.data_sparsifier.data_groups.items()}

    def _make_sparsified_copy(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> nn.Module:
        """A copy of the model on ``sparsified_device`` with the masks applied; the
        sparsifier ends holding the copy's tensors, squashed (as torch.ao's callbacks)."""
        module = _model.target_module(pl_module)
        copy = _model.without_compile_wrappers(_model.copy_to(module, self.sparsified_device, skip=[trainer]))
        copy_params = _model.named_parameters(copy)  # ties are kept: a tied weight is masked once, at both ends
        for name, mask in self._masks.items():
            target = copy_params[name]
            self.data_sparsifier.attach(name, target.detach(), mask=mask.to(target.device))
        self.data_sparsifier.squash_mask()
        return copy.eval()

    # ---------------------------------------------------------------- reporting
    def _report(self, trainer: pl.Trainer, prefix: str) -> None:
        metrics = _report.metrics(self._layers, self._mask_seconds, self._prefix(prefix))
        self.history.append(metrics)
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)

    def _print_table(self, trainer: pl.Trainer, title: str) -> None:
        if self.print_table and self._layers and trainer.is_global_zero:
            print(_report.table(self._layers, self._mask_seconds, title), flush=True)
