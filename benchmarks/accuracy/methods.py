"""The methods compared, as Lightning callbacks built for one task and level, with how to
get the final model from each and the seconds it spent in sparsity work.

Every method prunes the same tensors (``tasks.pruned``: ndim >= 2). Methods that do not
change training (a sparsified copy at the end, or every epoch) ride together on a second run
of the dense training ("shared"); the others get a run of their own.
"""

from __future__ import annotations

import copy
import time
import types
from collections.abc import Callable
from dataclasses import dataclass

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelPruning
from torch import nn

from benchmarks.accuracy.tasks import pruned
from blocksparsity import CubicSLScheduler, DataNormSparsifier, PostTrainingDataSparsity, TrainingAwareDataSparsity

BLOCK = (1, 4)
EVERY_N_STEPS = 5  # in-place pruning: masks and level move every 5 optimizer steps (4-6 times per digits/LM epoch)
RAMP_FRACTION = 2 / 3  # gradual methods reach the final level after 2/3 of training, then train on at it


@dataclass(frozen=True)
class Level:
    name: str  # "50%", ..., "2:4"
    sparsity_level: float  # fraction of (1, 4) blocks pruned
    zeros_per_block: int
    expected: float  # the element sparsity it means

    @property
    def two_four(self) -> bool:
        return self.zeros_per_block == 2


LEVELS = {f"{round(s * 100)}%": Level(f"{round(s * 100)}%", s, 4, s) for s in (0.5, 0.75, 0.9)}
LEVELS["2:4"] = Level("2:4", 1.0, 2, 0.5)
DENSE = Level("dense", 0.0, 4, 0.0)


def cubic(final: float, t: float) -> float:
    """Zhu & Gupta's ramp at training fraction ``t`` of the ramp (0 -> 0, >= 1 -> final)."""
    t = min(max(t, 0.0), 1.0)
    return final * (1.0 - (1.0 - t) ** 3)


@dataclass
class Plan:
    """How long a run is, for the schedules."""

    epochs: int
    steps_per_epoch: int

    @property
    def steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def ramp_epochs(self) -> int:
        return max(1, round(RAMP_FRACTION * self.epochs))

    def ramp_updates(self) -> int:
        """``total_t`` for the in-place callback: it computes a mask, then steps the scheduler,
        so update ``u`` (1-based) uses the level of ``t = u - 1``; the final level is reached at
        update ``total_t + 1``, at RAMP_FRACTION of the training steps."""
        updates = self.steps // EVERY_N_STEPS
        return max(1, round(RAMP_FRACTION * updates) - 1)


def _sparsifier_args(level: Level) -> dict:
    return {"sparsity_level": level.sparsity_level, "sparse_block_shape": BLOCK, "zeros_per_block": level.zeros_per_block}


def modelpruning_amount(final: float, plan: Plan) -> Callable[[int], float]:
    """ModelPruning's ``amount(epoch)``: each call prunes that fraction of the weights still
    unpruned, so the cumulative targets ``s_e`` (the cubic ramp, per epoch end) become
    ``(s_e - s_{e-1}) / (1 - s_{e-1})``."""

    def target(epoch: int) -> float:
        return cubic(final, (epoch + 1) / plan.ramp_epochs) if epoch >= 0 else 0.0

    def amount(epoch: int) -> float:
        before, after = target(epoch - 1), target(epoch)
        return 0.0 if after <= before else (after - before) / (1.0 - before)

    return amount


class TimedModelPruning(ModelPruning):
    """Lightning's ModelPruning with the wall time of its hooks counted (as our callbacks'
    ``seconds_in_callback``). Its forward pre-hooks (weight = weight_orig * mask, every
    forward) run inside the training step and are not counted."""

    seconds_in_callback = 0.0

    def _time(self, hook, *args):
        start = time.perf_counter()
        try:
            return hook(*args)
        finally:
            self.seconds_in_callback += time.perf_counter() - start

    def setup(self, trainer, pl_module, stage):
        self._time(super().setup, trainer, pl_module, stage)

    def on_train_epoch_end(self, trainer, pl_module):
        self._time(super().on_train_epoch_end, trainer, pl_module)

    def on_train_end(self, trainer, pl_module):
        self._time(super().on_train_end, trainer, pl_module)


class _PrunedWeights(nn.Module):
    """The pruned tensors of a model (the same Parameter objects) and nothing else: what
    torch.ao's callbacks are given, since they take every parameter of ``pl_module.model``
    and crash on 1-D ones (biases)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.names = [n for n, p in model.named_parameters() if pruned(n, p)]
        for name in self.names:
            self.register_parameter(name.replace(".", "__"), model.get_parameter(name))


class TorchAOCallback(pl.Callback):
    """Runs one of torch.ao's callbacks (which subclass ``pytorch_lightning``'s Callback) in a
    ``lightning.pytorch`` Trainer on ``_PrunedWeights`` of the model, timing its hooks; the
    final model is a copy of the network with torch.ao's sparsified tensors put in."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.seconds_in_callback = 0.0
        self._view = None

    def _call(self, hook: str, trainer, pl_module):
        fn = getattr(self.inner, hook, None)
        if fn is None:
            return
        if self._view is None:
            self._view = types.SimpleNamespace(model=_PrunedWeights(pl_module.model))
        start = time.perf_counter()
        try:
            fn(trainer, self._view)
        finally:
            self.seconds_in_callback += time.perf_counter() - start

    def on_train_start(self, trainer, pl_module):
        self._call("on_train_start", trainer, pl_module)

    def on_train_epoch_start(self, trainer, pl_module):
        self._call("on_train_epoch_start", trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module):
        self._call("on_train_epoch_end", trainer, pl_module)

    def on_train_end(self, trainer, pl_module):
        self._call("on_train_end", trainer, pl_module)

    def on_fit_end(self, trainer, pl_module):
        self._call("on_fit_end", trainer, pl_module)

    def final(self, pl_module) -> nn.Module:
        model = copy.deepcopy(pl_module.model).eval()
        sparsified = self.inner.sparsified
        for name in self._view.model.names:
            model.get_parameter(name).data.copy_(sparsified.get_parameter(name.replace(".", "__")).data)
        return model


def _torch_ao_cubic(plan: Plan):
    """A torch.ao data scheduler on the cubic ramp, reaching the final level at the last
    epoch's mask (its callback, like ours, computes masks before stepping the scheduler)."""
    from torch.ao.pruning._experimental.data_scheduler import BaseDataScheduler

    class CubicRamp(BaseDataScheduler):
        def get_schedule_param(self):
            t = self.last_epoch / max(1, plan.epochs - 1)
            return {name: cubic(base, t) for name, base in self.base_param.items()}

    return CubicRamp


@dataclass(frozen=True)
class Method:
    key: str
    label: str
    shared: bool  # does not change training: rides on the dense run
    make: Callable[[Level, Plan, pl.LightningModule], pl.Callback]
    final: Callable[[pl.Callback, pl.LightningModule], nn.Module]
    unit: Callable[[Level], str]  # what "one block" of its reached sparsity is: "block", "element", "slice"
    not_applicable: Callable[[str, Level, nn.Module], str | None] = lambda task, level, model: None


def _ours_post(level, plan, module):
    # One instance per level rides on the same run: each needs its own name (state key, metrics).
    return PostTrainingDataSparsity(DataNormSparsifier, _sparsifier_args(level), param_filter=pruned, print_table=False,
                                    name=level.name)


def _ours_post_activation(update: bool):
    """Post-training with activation-aware scores (Wanda's |w| * ||x||), optionally with the
    least-squares update of the kept weights; statistics from the last training epoch."""

    def make(level, plan, module):
        return PostTrainingDataSparsity(DataNormSparsifier, _sparsifier_args(level), param_filter=pruned,
                                        print_table=False, name=f"{level.name}-act{'-upd' if update else ''}",
                                        scores="activation", update_weights=update)

    return make


def _ours_copy(level, plan, module):
    return TrainingAwareDataSparsity(DataNormSparsifier, _sparsifier_args(level), CubicSLScheduler,
                                     {"init_sl": 0.0, "init_t": 0, "delta_t": 1, "total_t": max(1, plan.epochs - 1)},
                                     param_filter=pruned, print_table=False, name=level.name)


def _ours_inplace(level, plan, module):
    return TrainingAwareDataSparsity(DataNormSparsifier, _sparsifier_args(level), CubicSLScheduler,
                                     {"init_sl": 0.0, "init_t": 0, "delta_t": 1, "total_t": plan.ramp_updates()},
                                     inplace=True, schedule_interval="step", every_n_steps=EVERY_N_STEPS,
                                     param_filter=pruned, print_table=False)


def _ours_inplace_per_epoch(level, plan, module):
    """In place with one mask update per epoch, the cadence of ``ModelPruning``: the row that
    compares what each costs at the same number of updates."""
    return TrainingAwareDataSparsity(DataNormSparsifier, _sparsifier_args(level), CubicSLScheduler,
                                     {"init_sl": 0.0, "init_t": 0, "delta_t": 1, "total_t": max(1, plan.ramp_epochs - 1)},
                                     inplace=True, param_filter=pruned, print_table=False)


def _targets(model: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(m, n) for m in model.modules() for n, p in m.named_parameters(recurse=False) if pruned(n, p)]


def _modelpruning(fn: str, **kwargs):
    def make(level, plan, module):
        return TimedModelPruning(fn, parameters_to_prune=_targets(module.model), amount=modelpruning_amount(level.expected, plan),
                                 use_global_unstructured=False, make_pruning_permanent=True, verbose=0, **kwargs)

    return make


def _torch_ao_post(level, plan, module):
    from torch.ao.pruning._experimental.data_sparsifier import DataNormSparsifier as AONorm
    from torch.ao.pruning._experimental.data_sparsifier.lightning.callbacks.data_sparsity import (
        PostTrainingDataSparsity as AOPost,
    )

    return TorchAOCallback(AOPost(AONorm, _sparsifier_args(level)))


def _torch_ao_copy(level, plan, module):
    from torch.ao.pruning._experimental.data_sparsifier import DataNormSparsifier as AONorm
    from torch.ao.pruning._experimental.data_sparsifier.lightning.callbacks.data_sparsity import (
        TrainingAwareDataSparsity as AOTraining,
    )

    scheduler_args = {"schedule_param": "sparsity_level"}
    return TorchAOCallback(AOTraining(AONorm, _sparsifier_args(level), _torch_ao_cubic(plan), scheduler_args))


def _not_2_4(task, level, model):
    return "2:4 is not a ModelPruning method" if level.two_four else None


def _ln_structured_na(task, level, model):
    if level.two_four:
        return "2:4 is not a ModelPruning method"
    thin = [n for n, p in model.named_parameters() if pruned(n, p) and p.shape[1] < 4]
    if thin:
        return f"{thin[0]} has {model.get_parameter(thin[0]).shape[1]} input channel(s): dim 1 cannot reach the level"
    return None


def _torch_ao_na(task, level, model):
    try:
        import torch.ao.pruning._experimental.data_sparsifier.lightning.callbacks.data_sparsity  # noqa: F401
    except ImportError as e:  # it imports pytorch_lightning
        return f"torch.ao's callbacks do not import ({e})"
    nd = [n for n, p in model.named_parameters() if pruned(n, p) and p.ndim > 2]
    if nd:
        return f"torch.ao's DataNormSparsifier only supports 2-D data ({nd[0]} is {model.get_parameter(nd[0]).ndim}-D)"
    return None


def _copy_final(cb, module):
    return cb.sparsified


def _live_final(cb, module):
    return module.model


METHODS = [
    Method("dense", "dense", True, lambda level, plan, module: None, _live_final, lambda level: "element"),
    Method("post", "ours: PostTrainingDataSparsity", True, _ours_post, _copy_final, lambda level: "block"),
    Method("post-act", "ours: PostTrainingDataSparsity(scores='activation')", True, _ours_post_activation(False),
           _copy_final, lambda level: "block"),
    Method("post-act-upd", "ours: PostTrainingDataSparsity(scores='activation', update_weights=True)", True,
           _ours_post_activation(True), _copy_final, lambda level: "block"),
    Method("copy", "ours: TrainingAwareDataSparsity (copy per epoch)", True, _ours_copy, _copy_final, lambda level: "block"),
    Method("inplace", "ours: TrainingAwareDataSparsity(inplace=True), cubic per step", False, _ours_inplace, _live_final,
           lambda level: "block"),
    Method("inplace-epoch", "ours: TrainingAwareDataSparsity(inplace=True), cubic per epoch", False,
           _ours_inplace_per_epoch, _live_final, lambda level: "block"),
    Method("mp-l1", "Lightning ModelPruning l1_unstructured", False, _modelpruning("l1_unstructured"), _live_final,
           lambda level: "element", _not_2_4),
    Method("mp-ln", "Lightning ModelPruning ln_structured (L1, dim 1)", False,
           _modelpruning("ln_structured", pruning_norm=1, pruning_dim=1), _live_final, lambda level: "slice",
           _ln_structured_na),
    Method("ao-post", "torch.ao PostTrainingDataSparsity", True, _torch_ao_post, lambda cb, module: cb.final(module),
           lambda level: "block", _torch_ao_na),
    Method("ao-copy", "torch.ao TrainingAwareDataSparsity (copy per epoch)", True, _torch_ao_copy,
           lambda cb, module: cb.final(module), lambda level: "block", _torch_ao_na),
]
METHODS_BY_KEY = {m.key: m for m in METHODS}
