"""Schedulers that move one config value (usually ``sparsity_level``) of every tensor of a
data sparsifier over epochs (or steps), with torch.ao's ``BaseDataScheduler`` contract.

Call ``sparsifier.step()`` then ``scheduler.step()``: the scheduler warns when the order
is wrong, as torch.ao's does. Every scheduler is resumable: ``state_dict()`` holds plain
values only (no functions), and ``load_state_dict`` on a scheduler built over a restored
sparsifier continues the schedule exactly.
"""

from __future__ import annotations

import abc
import copy
import math
import numbers
import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence
from functools import wraps
from typing import Any, NamedTuple

from blocksparsity.base_sparsifier import BaseDataSparsifier

__all__ = [
    "BaseDataScheduler",
    "CubicSLScheduler",
    "LambdaSLScheduler",
    "LinearSLScheduler",
    "Shortfall",
    "StepSLScheduler",
]


def _with_step_counter(method: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a sparsifier's bound ``step`` so each call counts in ``_step_count``."""
    if getattr(method, "_with_counter", False):
        return method
    instance_ref = weakref.ref(method.__self__)
    func = method.__func__

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        instance = instance_ref()
        instance._step_count += 1
        return func(instance, *args, **kwargs)

    wrapper._with_counter = True  # type: ignore[attr-defined]
    return wrapper


class Shortfall(NamedTuple):
    """A group whose scheduled value at some epoch is not yet its final value
    (``BaseDataScheduler.shortfall_at``)."""

    name: str
    value: float  # the group's value at that epoch
    final: float  # its final value
    final_t: float  # the first epoch at which it has the final value
    how_to_end: str  # the arguments that end the schedule by that epoch, in words


class BaseDataScheduler(abc.ABC):
    """Varies ``schedule_param`` of every data group of ``data_sparsifier``.

    Args:
        data_sparsifier: a ``BaseDataSparsifier``.
        schedule_param: the config key to schedule (each group's current value is its base).
        last_epoch: the last epoch done, to resume (-1: start).
        verbose: print each change.

    Subclasses implement ``get_schedule_param()`` -> {name: value}.
    """

    def __init__(self, data_sparsifier: BaseDataSparsifier, schedule_param: str, last_epoch: int = -1,
                 verbose: bool = False):
        if not isinstance(data_sparsifier, BaseDataSparsifier):
            raise TypeError(f"data_sparsifier must be a BaseDataSparsifier; got {type(data_sparsifier).__name__}")
        if not isinstance(schedule_param, str):
            raise TypeError(f"schedule_param must be a config key (str); got {schedule_param!r}")
        missing = [name for name, cfg in data_sparsifier.data_groups.items() if schedule_param not in cfg]
        if missing or (not data_sparsifier.data_groups and schedule_param not in data_sparsifier.defaults):
            raise ValueError(
                f"schedule_param {schedule_param!r} is not in the config of {missing or 'the sparsifier defaults'}"
            )
        if not isinstance(last_epoch, int) or isinstance(last_epoch, bool) or last_epoch < -1:
            raise ValueError(f"last_epoch must be an int >= -1; got {last_epoch!r}")
        self.data_sparsifier = data_sparsifier
        self.schedule_param = schedule_param
        self.base_param = {name: cfg.get(schedule_param) for name, cfg in data_sparsifier.data_groups.items()}
        self.last_epoch = last_epoch
        data_sparsifier.step = _with_step_counter(data_sparsifier.step)  # type: ignore[method-assign]
        data_sparsifier._step_count = 0  # type: ignore[attr-defined]
        self._step_count = 0
        self.verbose = verbose
        self._get_sp_called_within_step = False
        self.step()

    @abc.abstractmethod
    def get_schedule_param(self) -> dict[str, Any]:
        """The value of ``schedule_param`` for each data group at ``last_epoch``."""

    def shortfall_at(self, t: int) -> Shortfall | None:
        """The first group whose value at epoch ``t`` is not yet its final value, with what
        to set so that it is; ``None`` when every group has its final value by then, or when
        the schedule has no final value (this base class, ``StepSLScheduler``,
        ``LambdaSLScheduler``). Changes nothing."""
        return None

    def get_last_param(self) -> dict[str, Any]:
        return self._last_param

    def _warn_if_outside_step(self) -> None:
        if not self._get_sp_called_within_step:
            warnings.warn("To get the last value computed by the scheduler, use `get_last_param()`.", UserWarning,
                          stacklevel=3)

    def step(self) -> None:
        """Advance one epoch and write the new values into the sparsifier's configs."""
        if self._step_count == 1:
            if not hasattr(self.data_sparsifier.step, "_with_counter"):
                warnings.warn(
                    "Seems like `data_sparsifier.step()` has been overridden after sparsity scheduler "
                    "initialization. Please, make sure to call `data_sparsifier.step()` before `scheduler.step()`.",
                    UserWarning, stacklevel=2,
                )
            elif self.data_sparsifier._step_count < 1:  # type: ignore[attr-defined]
                warnings.warn(
                    "Detected call of `scheduler.step()` before `data_sparsifier.step()`. You have to make sure "
                    "you run the data_sparsifier.step() BEFORE any calls to the scheduler.step().",
                    UserWarning, stacklevel=2,
                )
        self._step_count += 1
        self._get_sp_called_within_step = True
        try:
            self.last_epoch += 1
            values = self.get_schedule_param()
        finally:
            self._get_sp_called_within_step = False
        for name, value in values.items():
            self.data_sparsifier.data_groups[name][self.schedule_param] = value
            if self.verbose:
                print(f"Adjusting {self.schedule_param} for group {name} to {value}")
        self._last_param = {name: cfg.get(self.schedule_param) for name, cfg in self.data_sparsifier.data_groups.items()}
        self.data_sparsifier.enable_mask_update = True

    # Attributes that state_dict() leaves out: the sparsifier has its own state, and
    # functions can't be saved (subclasses holding some add them here).
    _not_saved: tuple[str, ...] = ("data_sparsifier",)

    def state_dict(self) -> dict[str, Any]:
        """Every attribute but the sparsifier (save and restore that first) and functions."""
        return {k: copy.deepcopy(v) for k, v in self.__dict__.items() if k not in self._not_saved}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Continue from a saved state. The last scheduled values are written back into the
        sparsifier's configs, so its next ``step()`` uses them, as it would have."""
        if not isinstance(state_dict, Mapping) or "last_epoch" not in state_dict:
            raise ValueError("state_dict must be a mapping from a scheduler's state_dict()")
        self.__dict__.update(copy.deepcopy({k: v for k, v in state_dict.items() if k not in self._not_saved}))
        for name, value in getattr(self, "_last_param", {}).items():
            if name in self.data_sparsifier.data_groups:
                self.data_sparsifier.data_groups[name][self.schedule_param] = value

    def __repr__(self) -> str:
        return (f"{type(self).__name__} (\nData Sparsifier {self.data_sparsifier}\n"
                f"    {self.schedule_param}: {self.base_param}\n)")


class StepSLScheduler(BaseDataScheduler):
    """Multiplies each group's value by ``gamma`` every ``step_size`` epochs (the semantics
    of torch.ao's Lightning tests: after epoch e the value is base * gamma**(e // step_size))."""

    def __init__(self, data_sparsifier: BaseDataSparsifier, schedule_param: str = "sparsity_level", step_size: int = 1,
                 gamma: float = 2, last_epoch: int = -1, verbose: bool = False):
        if not isinstance(step_size, int) or isinstance(step_size, bool) or step_size < 1:
            raise ValueError(f"step_size must be a positive int; got {step_size!r}")
        if not isinstance(gamma, numbers.Real) or isinstance(gamma, bool) or not math.isfinite(gamma) or gamma < 0:
            raise ValueError(f"gamma must be a finite number >= 0; got {gamma!r}")
        self.gamma = gamma
        self.step_size = step_size
        super().__init__(data_sparsifier, schedule_param, last_epoch, verbose)

    def get_schedule_param(self) -> dict[str, Any]:
        self._warn_if_outside_step()
        groups = self.data_sparsifier.data_groups
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return {name: cfg[self.schedule_param] for name, cfg in groups.items()}
        return {name: cfg[self.schedule_param] * self.gamma for name, cfg in groups.items()}


def _per_group(value: Any, names: Sequence[str], what: str) -> dict[str, Any]:
    """A value for each group: one for all, a sequence in group order, or a mapping by name."""
    if isinstance(value, Mapping):
        missing = [n for n in names if n not in value]
        if missing:
            raise ValueError(f"{what} has no value for {missing}")
        return {n: value[n] for n in names}
    if isinstance(value, (list, tuple)):
        if len(value) != len(names):
            raise ValueError(f"{what} has {len(value)} values for {len(names)} data groups")
        return dict(zip(names, value, strict=True))
    return dict.fromkeys(names, value)


class _RampScheduler(BaseDataScheduler):
    """Shared arguments of the ramps from ``init_sl`` (at ``init_t``) to each group's base."""

    def __init__(self, data_sparsifier: BaseDataSparsifier, schedule_param: str, init_sl: Any, init_t: Any,
                 total_t: Any, initially_zero: Any, last_epoch: int, verbose: bool, delta_t: Any = 1):
        names = list(data_sparsifier.data_groups)
        self.init_sl = _per_group(init_sl, names, "init_sl")
        self.init_t = _per_group(init_t, names, "init_t")
        self.delta_t = _per_group(delta_t, names, "delta_t")
        self.total_t = _per_group(total_t, names, "total_t")
        self.initially_zero = _per_group(initially_zero, names, "initially_zero")
        for name in names:
            for what, values in (("init_sl", self.init_sl), ("init_t", self.init_t), ("delta_t", self.delta_t),
                                 ("total_t", self.total_t)):
                _check_finite(values[name], what, name)
            if not self.init_sl[name] >= 0:
                raise ValueError(f"init_sl must be >= 0; got {self.init_sl[name]!r} for {name!r}")
            if self.delta_t[name] <= 0 or self.total_t[name] <= 0:
                raise ValueError(f"delta_t and total_t must be positive; got {self.delta_t[name]!r}, {self.total_t[name]!r}")
        super().__init__(data_sparsifier, schedule_param, last_epoch, verbose)

    @abc.abstractmethod
    def level(self, s_0: float, s_f: float, t: int, t_0: int, dt: float, n: float, initially_zero: bool) -> float:
        """The value at epoch ``t``."""

    def shortfall_at(self, t: int) -> Shortfall | None:
        for name, final in self.base_param.items():
            value = self._level_at(name, t)
            if abs(value - final) > 1e-9:
                return Shortfall(name, value, final, self._final_t(name), self._how_to_end_by(name, t))
        return None

    def _level_at(self, name: str, t: int) -> float:
        """Group ``name``'s value at epoch ``t`` (no state changes)."""
        return self.level(self.init_sl[name], self.base_param[name], t, self.init_t[name], self.delta_t[name],
                          self.total_t[name], self.initially_zero[name])

    def _final_t(self, name: str) -> float:
        """The first epoch at which group ``name`` has its final value (the group's base)."""
        return self.init_t[name] + self.total_t[name]

    def _how_to_end_by(self, name: str, t: int) -> str:
        """Arguments that make group ``name``'s ramp end at epoch ``t``, in words."""
        return f"init_t + total_t <= {t}, e.g. total_t={max(1, t - self.init_t[name])}"

    def get_schedule_param(self) -> dict[str, Any]:
        self._warn_if_outside_step()
        return {
            name: self.level(self.init_sl[name], base, self.last_epoch, self.init_t[name], self.delta_t[name],
                             self.total_t[name], self.initially_zero[name])
            for name, base in self.base_param.items()
        }


def _check_finite(value: Any, what: str, name: str) -> None:
    """A ramp argument must be a finite real number (NaN or inf would make every level NaN or 0)."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{what} must be a real number; got {value!r} for {name!r}")
    if not math.isfinite(value):
        raise ValueError(f"{what} must be finite; got {value!r} for {name!r}")


def _clamp(x: float, lo: float, hi: float) -> float:
    return max(lo, min(hi, x))


class CubicSLScheduler(_RampScheduler):
    r"""Zhu and Gupta's cubic ramp, the arguments and formula of ``torch.ao.pruning.scheduler.CubicSL``:

    .. math:: s_t = s_f + (s_0 - s_f) \left(1 - \frac{t - t_0}{n \Delta t}\right)^3,

    clamped between ``init_sl`` (:math:`s_0`) and the group's base value (:math:`s_f`);
    0 before ``init_t`` when ``initially_zero``. Each argument may be one value, a sequence
    (group order) or a mapping by name.
    """

    def __init__(self, data_sparsifier: BaseDataSparsifier, schedule_param: str = "sparsity_level", init_sl: Any = 0.0,
                 init_t: Any = 0, delta_t: Any = 10, total_t: Any = 100, initially_zero: Any = False,
                 last_epoch: int = -1, verbose: bool = False):
        super().__init__(data_sparsifier, schedule_param, init_sl, init_t, total_t, initially_zero, last_epoch, verbose,
                         delta_t=delta_t)

    @staticmethod
    def sparsity_compute_fn(s_0: float, s_f: float, t: int, t_0: int, dt: float, n: float,
                            initially_zero: bool = False) -> float:
        if initially_zero and t < t_0:
            return 0
        s_t = s_f + (s_0 - s_f) * (1.0 - (t - t_0) / (dt * n)) ** 3
        return _clamp(s_t, s_0, s_f)

    def level(self, s_0, s_f, t, t_0, dt, n, initially_zero):
        return self.sparsity_compute_fn(s_0, s_f, t, t_0, dt, n, initially_zero)

    def _final_t(self, name: str) -> float:
        return self.init_t[name] + self.total_t[name] * self.delta_t[name]

    def _how_to_end_by(self, name: str, t: int) -> str:
        span, dt = t - self.init_t[name], self.delta_t[name]
        if span >= dt:
            return f"init_t + total_t * delta_t <= {t}, e.g. total_t={int(span // dt)} with delta_t={dt}"
        return f"init_t + total_t * delta_t <= {t}, e.g. delta_t=1, total_t={max(1, span)}"


class LinearSLScheduler(_RampScheduler):
    """A straight ramp from ``init_sl`` at ``init_t`` to the group's base value at
    ``init_t + total_t``, then flat (0 before ``init_t`` when ``initially_zero``)."""

    def __init__(self, data_sparsifier: BaseDataSparsifier, schedule_param: str = "sparsity_level", init_sl: Any = 0.0,
                 init_t: Any = 0, total_t: Any = 100, initially_zero: Any = False, last_epoch: int = -1,
                 verbose: bool = False):
        super().__init__(data_sparsifier, schedule_param, init_sl, init_t, total_t, initially_zero, last_epoch, verbose)

    def level(self, s_0, s_f, t, t_0, dt, n, initially_zero):
        if initially_zero and t < t_0:
            return 0
        return s_0 + (s_f - s_0) * _clamp((t - t_0) / n, 0.0, 1.0)


class LambdaSLScheduler(BaseDataScheduler):
    """Each group's value is its base times ``sl_lambda(epoch)`` (one function for all
    groups, a sequence in group order, or a mapping by name), like torch.ao's LambdaSL.
    The functions are not saved in ``state_dict``: pass them again when resuming."""

    _not_saved = ("data_sparsifier", "sl_lambdas")

    def __init__(self, data_sparsifier: BaseDataSparsifier, sl_lambda: Any, schedule_param: str = "sparsity_level",
                 last_epoch: int = -1, verbose: bool = False):
        self.sl_lambdas = _per_group(sl_lambda, list(data_sparsifier.data_groups), "sl_lambda")
        for name, fn in self.sl_lambdas.items():
            if not callable(fn):
                raise TypeError(f"sl_lambda for {name!r} must be callable; got {type(fn).__name__}")
        super().__init__(data_sparsifier, schedule_param, last_epoch, verbose)

    def get_schedule_param(self) -> dict[str, Any]:
        self._warn_if_outside_step()
        return {name: base * self.sl_lambdas[name](self.last_epoch) for name, base in self.base_param.items()}
