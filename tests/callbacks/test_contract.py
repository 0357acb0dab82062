"""Lightning callbacks: torch.ao's contract, which tensors, resume, logging, in-place mode,
bad arguments. DDP is in test_callbacks_ddp.py."""

from __future__ import annotations

import copy
import re
import time

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from blocksparsity import (
    BaseDataSparsifier,
    CubicSLScheduler,
    DataNormSparsifier,
    LinearSLScheduler,
    PostTrainingDataSparsity,
    StepSLScheduler,
    TrainingAwareDataSparsity,
    kernels,
)
from blocksparsity.callbacks import _model, timed_hook
from tests.helpers.lightning_models import CaptureLogger, TinyModule, loader, ramp_ends_late, trainer

SPARSIFIER_ARGS = {"sparsity_level": 0.5, "sparse_block_shape": (1, 4), "zeros_per_block": 4}


def weights(module: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


class Recorder(pl.Callback):
    """Records the training-aware callback's masks after each of its epoch-end steps."""

    def __init__(self, ta: TrainingAwareDataSparsity):
        self.ta, self.masks = ta, []

    def on_train_epoch_end(self, trainer, pl_module):
        self.masks.append({n: m.clone() for n, m in self.ta.masks.items()})


# ------------------------------------------------------------------ the contract
def test_post_training_contract():
    pt = PostTrainingDataSparsity(data_sparsifier_class=DataNormSparsifier, data_sparsifier_args=SPARSIFIER_ARGS)
    module = TinyModule()
    trainer(max_epochs=2, callbacks=[pt]).fit(module, loader())
    trained = weights(module.model)
    for key, value in SPARSIFIER_ARGS.items():
        assert pt.data_sparsifier.defaults[key] == value
    copy_weights = dict(pt.sparsified.named_parameters())
    assert set(copy_weights) == set(trained)
    assert set(pt.data_sparsifier.data_groups) == {"embed.weight", "mlp.0.weight", "mlp.2.weight"}  # ndim >= 2
    for name in ("mlp.0.bias", "mlp.2.bias"):  # the default filter leaves biases dense
        assert torch.equal(copy_weights[name].detach(), trained[name])
    for name, w in trained.items():
        if w.dim() < 2:
            continue
        expected_mask = kernels.block_mask(w, 0.5, (1, 4), 4)
        assert torch.equal(pt.data_sparsifier.get_mask(name), expected_mask), name
        assert torch.equal(copy_weights[name].detach(), w * expected_mask)
        assert torch.equal(pt.data_sparsifier.get_data(name, return_original=False), w * expected_mask)
    assert torch.equal(weights(module.model)["mlp.0.weight"], trained["mlp.0.weight"])  # the model is untouched
    assert (module.model["mlp"][0].weight == 0).sum() == 0
    assert not pt.sparsified.training


def test_training_aware_contract_levels_and_masks():
    ta = TrainingAwareDataSparsity(
        data_sparsifier_class=DataNormSparsifier,
        data_sparsifier_args={**SPARSIFIER_ARGS, "sparsity_level": 0.1},
        data_scheduler_class=StepSLScheduler,
        data_scheduler_args={"gamma": 2, "step_size": 1},
    )
    recorder = Recorder(ta)
    module = TinyModule()
    trainer(max_epochs=4, callbacks=[ta, recorder]).fit(module, loader())
    overall = [h["training_aware_sparsity/overall"] for h in ta.history]
    assert overall == sorted(overall) and len(overall) == 4
    assert ta.data_scheduler.get_last_param()["mlp.0.weight"] == pytest.approx(0.1 * 2**4)
    assert set(recorder.masks[-1]) == {"embed.weight", "mlp.0.weight", "mlp.2.weight"}
    for name, w in weights(module.model).items():
        if w.dim() < 2:
            continue
        assert torch.equal(recorder.masks[-1][name], kernels.block_mask(w, min(1.0, 0.1 * 2**3), (1, 4), 4))
        assert torch.equal(dict(ta.sparsified.named_parameters())[name].detach(), w * recorder.masks[-1][name])
        assert (w == 0).sum() == 0  # the live model is not modified


# ------------------------------------------------------------------ which tensors
@pytest.mark.parametrize("param_filter, expected", [
    (None, {"embed.weight", "mlp.0.weight", "mlp.2.weight"}),  # the default: 2+ dims
    ("*", {"embed.weight", "mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias"}),
    (_model.weight_matrices, {"embed.weight", "mlp.0.weight", "mlp.2.weight"}),
    ("*.weight", {"embed.weight", "mlp.0.weight", "mlp.2.weight"}),
    (re.compile(r"^mlp\.\d\.weight$"), {"mlp.0.weight", "mlp.2.weight"}),
    (["embed.*", "mlp.2.*"], {"embed.weight", "mlp.2.weight", "mlp.2.bias"}),
    (lambda name, p: p.dim() == 2 and p.shape[0] >= 32, {"embed.weight", "mlp.0.weight"}),
])
def test_param_filter(param_filter, expected):
    pt = PostTrainingDataSparsity(DataNormSparsifier, SPARSIFIER_ARGS, param_filter=param_filter)
    trainer(max_epochs=1, callbacks=[pt]).fit(TinyModule(), loader())
    assert set(pt.data_sparsifier.data_groups) == expected


def test_module_without_model_attribute_and_dotted_names_do_not_collide():
    class Clash(TinyModule):
        def __init__(self):
            super().__init__(with_model_attr=False)
            self.a = nn.Module()
            self.a.b = nn.Linear(8, 8)
            self.a_b = nn.Linear(8, 8)

    pt = PostTrainingDataSparsity(DataNormSparsifier, SPARSIFIER_ARGS, param_filter="a*")
    trainer(max_epochs=1, callbacks=[pt]).fit(Clash(), loader())
    assert {"a.b.weight", "a_b.weight"} <= set(pt.data_sparsifier.data_groups)
    assert pt.sparsified._trainer is None  # the copy does not drag the trainer along


def test_copy_is_made_directly_on_the_target_device():
    module = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8))
    moved = _model.copy_to(module, "meta")
    assert all(t.device.type == "meta" for t in (*moved.parameters(), *moved.buffers()))
    assert all(t.device.type == "cpu" for t in (*module.parameters(), *module.buffers()))


# ------------------------------------------------------------------ resume
@ramp_ends_late
@pytest.mark.parametrize("save_on_train_epoch_end", [True, False])
def test_resumed_run_gives_the_same_masks(tmp_path, save_on_train_epoch_end):
    def callbacks():
        ta = TrainingAwareDataSparsity(DataNormSparsifier, {**SPARSIFIER_ARGS, "zeros_per_block": 2},
                                       CubicSLScheduler, {"init_sl": 0.0, "init_t": 0, "delta_t": 1, "total_t": 4})
        return ta, Recorder(ta)

    ta, uninterrupted = callbacks()
    trainer(max_epochs=5, callbacks=[ta, uninterrupted]).fit(TinyModule(), loader(), loader(32))

    # At validation end the checkpoint comes before the callback's epoch-end step; Lightning
    # replays the epoch end on resume.
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, save_on_train_epoch_end=save_on_train_epoch_end)
    ta, first = callbacks()
    trainer(max_epochs=3, callbacks=[ta, first, checkpoint], enable_checkpointing=True, default_root_dir=tmp_path).fit(
        TinyModule(), loader(), loader(32))
    ta, resumed = callbacks()
    trainer(max_epochs=5, callbacks=[ta, resumed], enable_checkpointing=False, default_root_dir=tmp_path).fit(
        TinyModule(seed=123), loader(), loader(32), ckpt_path=str(tmp_path / "epoch=1-step=16.ckpt"))
    replayed = 2 if save_on_train_epoch_end else 1  # a validation-end checkpoint replays epoch 1's end
    assert len(resumed.masks) == 5 - replayed
    for expected, got in zip(uninterrupted.masks[replayed:], resumed.masks, strict=True):
        assert expected.keys() == got.keys()
        assert all(torch.equal(expected[n], got[n]) for n in expected)
    assert ta.epochs_done == 5


# ------------------------------------------------------------------ observability
def test_metrics_go_to_the_loggers_and_the_table_is_printed(capsys):
    logger = CaptureLogger()
    pt = PostTrainingDataSparsity(DataNormSparsifier, SPARSIFIER_ARGS)
    ta = TrainingAwareDataSparsity(DataNormSparsifier, SPARSIFIER_ARGS, StepSLScheduler, {"gamma": 1.0})
    trainer(max_epochs=2, callbacks=[pt, ta], logger=logger).fit(TinyModule(), loader())
    ours = [m for m in logger.metrics if any(k.endswith("sparsity/overall") for k in m)]
    assert len(ours) == 3  # two epochs, then post-training
    last = ours[-1]
    assert last["post_training_sparsity/overall"] == pytest.approx(0.5, abs=0.02)
    assert last["post_training_sparsity/mlp.0.weight"] == 0.5
    assert last["post_training_sparsity/mask_seconds"] > 0
    out = capsys.readouterr().out
    assert "Post-training sparsity" in out and "mlp.0.weight" in out and "Training-aware sparsity after 2 epochs" in out


# ------------------------------------------------------------------ in-place mode
@ramp_ends_late
@pytest.mark.parametrize("interval", ["epoch", "step"])
def test_inplace_mode_keeps_the_live_model_sparse(interval):
    ta = TrainingAwareDataSparsity(
        DataNormSparsifier, {**SPARSIFIER_ARGS, "sparsity_level": 0.6}, LinearSLScheduler,
        {"init_sl": 0.0, "init_t": 1, "total_t": 2 if interval == "epoch" else 6}, inplace=True,
        schedule_interval=interval, every_n_steps=2,
        param_filter="*.weight",
    )
    module = TinyModule(momentum=0.9, weight_decay=0.01)  # both would revive masked weights

    class CheckGradients(pl.Callback):
        def __init__(self):
            self.checked = 0

        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            for name, p in pl_module.model.named_parameters():
                if name in ta.masks and p.grad is not None:
                    assert (p.grad[~ta.masks[name]] == 0).all()
                    self.checked += 1

    check = CheckGradients()
    trainer(max_epochs=3, callbacks=[ta, check]).fit(module, loader())
    assert check.checked > 0
    live = weights(module.model)
    for name, mask in ta.masks.items():
        assert (live[name][~mask] == 0).all(), name
    assert ta.updates_done >= 2
    levels = [h["training_aware_sparsity/overall"] for h in ta.history]
    assert levels[-1] > 0.2


# ------------------------------------------------------------------ bad arguments
def test_bad_arguments_fail_at_construction():
    with pytest.raises(TypeError, match="instance"):
        PostTrainingDataSparsity(DataNormSparsifier(), SPARSIFIER_ARGS)
    with pytest.raises(TypeError, match="subclass"):
        PostTrainingDataSparsity(nn.Linear, {})
    with pytest.raises(TypeError, match="sparsity_lvl"):
        PostTrainingDataSparsity(DataNormSparsifier, {"sparsity_lvl": 0.5})
    with pytest.raises(ValueError, match="data_list"):
        PostTrainingDataSparsity(DataNormSparsifier, {"data_list": []})
    with pytest.raises(ValueError, match="sparsity_level"):
        PostTrainingDataSparsity(DataNormSparsifier, {"sparsity_level": -1})
    with pytest.raises(TypeError, match="instance"):
        TrainingAwareDataSparsity(DataNormSparsifier, {}, StepSLScheduler(DataNormSparsifier([("a", torch.ones(4))])), {})
    with pytest.raises(TypeError, match="gama"):
        TrainingAwareDataSparsity(DataNormSparsifier, {}, StepSLScheduler, {"gama": 2})
    with pytest.raises(ValueError, match="data_sparsifier"):
        TrainingAwareDataSparsity(DataNormSparsifier, {}, StepSLScheduler, {"data_sparsifier": None})
    with pytest.raises(ValueError, match="inplace"):
        TrainingAwareDataSparsity(DataNormSparsifier, {}, StepSLScheduler, {}, schedule_interval="step")
    with pytest.raises(TypeError, match="param_filter"):
        PostTrainingDataSparsity(DataNormSparsifier, {}, param_filter=3)


class CountingSparsifier(DataNormSparsifier):
    """Counts the sparsifiers built (a class attribute: the callbacks build them themselves)."""

    built = 0

    def __init__(self, *args, **kwargs):
        type(self).built += 1
        super().__init__(*args, **kwargs)


def test_one_sparsifier_per_fit_built_at_setup():
    """Construction checks the sparsifier arguments by building one and keeps none; each fit
    builds its own sparsifier and scheduler at setup, once, and its hooks use those."""
    CountingSparsifier.built = 0
    ta = TrainingAwareDataSparsity(CountingSparsifier, SPARSIFIER_ARGS, StepSLScheduler, {"gamma": 1.0})
    pt = PostTrainingDataSparsity(CountingSparsifier, SPARSIFIER_ARGS)
    assert CountingSparsifier.built == 2 and ta.data_sparsifier is None and pt.data_sparsifier is None
    assert not any(isinstance(v, BaseDataSparsifier) for cb in (ta, pt) for v in vars(cb).values())
    module = TinyModule()
    seen = _SparsifierAtEachHook(ta, pt)
    trainer(max_epochs=2, callbacks=[ta, pt, seen]).fit(module, loader())
    assert CountingSparsifier.built == 4
    first = ta.data_sparsifier, ta.data_scheduler, pt.data_sparsifier
    assert seen.ids == {tuple(map(id, first))}  # the objects setup built, at every hook
    assert ta.data_scheduler.data_sparsifier is first[0] and set(ta.masks) == set(pt.masks) == set(first[0].data_groups)
    for name, p in module.model.named_parameters():
        if name in ta.masks:
            assert torch.equal(pt.masks[name], kernels.block_mask(p.detach(), 0.5, (1, 4), 4)), name
    trainer(max_epochs=1, callbacks=[ta, pt]).fit(module, loader())
    assert CountingSparsifier.built == 6
    assert ta.data_sparsifier is not first[0] and ta.data_scheduler is not first[1] and pt.data_sparsifier is not first[2]


class _SparsifierAtEachHook(pl.Callback):
    """Records the ids of the callbacks' sparsifiers and scheduler at each training hook."""

    def __init__(self, ta, pt):
        self.ta, self.pt, self.ids = ta, pt, set()

    def _see(self, *args):
        self.ids.add((id(self.ta.data_sparsifier), id(self.ta.data_scheduler), id(self.pt.data_sparsifier)))

    on_train_start = on_train_batch_end = on_train_epoch_end = _see


def test_timed_hook_adds_the_hooks_wall_time_also_when_it_raises():
    class Slow(PostTrainingDataSparsity):
        @timed_hook
        def on_validation_end(self, trainer, pl_module):
            time.sleep(0.02)
            if pl_module == "raise":
                raise RuntimeError("boom")
            return "done"

    cb = Slow(DataNormSparsifier, SPARSIFIER_ARGS)
    assert cb.seconds_in_callback == 0.0
    assert cb.on_validation_end(None, None) == "done" and Slow.on_validation_end.__name__ == "on_validation_end"
    assert 0.02 <= cb.seconds_in_callback < 1.0
    with pytest.raises(RuntimeError, match="boom"):
        cb.on_validation_end(None, "raise")
    assert cb.seconds_in_callback >= 0.04


def test_every_lightning_hook_is_marked_override_and_timed_where_it_works():
    for cls in (PostTrainingDataSparsity, TrainingAwareDataSparsity):
        for name in dir(cls):
            if name.startswith("on_") or name in ("setup", "state_dict", "load_state_dict"):
                hook = getattr(cls, name)
                if hook is not getattr(pl.Callback, name):
                    assert getattr(hook, "__override__", False), f"{cls.__name__}.{name}"
    timed = {"on_train_start", "on_train_epoch_end", "on_after_backward", "on_train_batch_end"}
    for name in timed:
        assert hasattr(getattr(TrainingAwareDataSparsity, name), "__wrapped__"), name


def test_masks_and_layers_are_read_only_views():
    pt = PostTrainingDataSparsity(DataNormSparsifier, SPARSIFIER_ARGS, print_table=False)
    assert dict(pt.masks) == {} and pt.layers == ()
    trainer(max_epochs=1, callbacks=[pt]).fit(TinyModule(), loader())
    assert set(pt.masks) == {"embed.weight", "mlp.0.weight", "mlp.2.weight"}
    assert [layer.name for layer in pt.layers] == list(pt.masks)
    with pytest.raises(TypeError):
        pt.masks["embed.weight"] = None  # type: ignore[index]


def test_nothing_to_sparsify_and_bad_scheduler_values_fail_before_training():
    for cb in (
        PostTrainingDataSparsity(DataNormSparsifier, SPARSIFIER_ARGS, param_filter="nothing.matches"),
        TrainingAwareDataSparsity(DataNormSparsifier, SPARSIFIER_ARGS, StepSLScheduler, {"step_size": 0}),
    ):
        module = TinyModule()
        with pytest.raises(ValueError, match=r"param_filter|step_size"):
            trainer(max_epochs=1, callbacks=[cb]).fit(module, loader())
        assert module.training_steps == 0


def test_lazy_modules_are_refused_before_training_with_what_to_do():
    class Lazy(TinyModule):
        def __init__(self):
            super().__init__()
            self.model["mlp"][0] = nn.LazyLinear(32)

    module = Lazy()
    with pytest.raises(ValueError, match=r"'mlp.0.weight' is not initialized yet.*forward pass"):
        trainer(max_epochs=1, callbacks=[PostTrainingDataSparsity(DataNormSparsifier, SPARSIFIER_ARGS)]).fit(module, loader())
    assert module.training_steps == 0
    module = Lazy()
    module(torch.zeros(1, dtype=torch.long))  # materialized: now it works
    pt = PostTrainingDataSparsity(DataNormSparsifier, SPARSIFIER_ARGS)
    trainer(max_epochs=1, callbacks=[pt]).fit(module, loader())
    assert set(pt.masks) == {"embed.weight", "mlp.0.weight", "mlp.2.weight"}


def test_callback_copy_is_independent_of_later_training():
    pt = PostTrainingDataSparsity(DataNormSparsifier, SPARSIFIER_ARGS)
    module = TinyModule()
    trainer(max_epochs=1, callbacks=[pt]).fit(module, loader())
    snapshot = copy.deepcopy(dict(pt.sparsified.named_parameters()))
    with torch.no_grad():
        for p in module.parameters():
            p.add_(1.0)
    assert all(torch.equal(snapshot[n], p) for n, p in pt.sparsified.named_parameters())
