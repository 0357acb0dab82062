"""Activation-aware scores and the least-squares update: PostTrainingDataSparsity's (defaults
unchanged, statistics and masks against a hand computation, the update in the copy, resume,
bad options, and the sparsifier's scales) and TrainingAwareDataSparsity's (every epoch's copy
as post-training would make it, in-place statistics per update period, resume, refusals)."""

from __future__ import annotations

import io

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import ModelParallelStrategy

from blocksparsity import DataNormSparsifier, PostTrainingDataSparsity, StepSLScheduler, TrainingAwareDataSparsity, kernels
from blocksparsity.weight_update import least_squares_update
from tests.helpers.lightning_models import HALF_BLOCKS_ARGS, TinyModule, inplace_ramp, loader, trainer

MLP = ("model.mlp.0.weight",)


def _fit(*callbacks, epochs=2, module=None, val=True, **kwargs):
    module = module or TinyModule()
    trainer(max_epochs=epochs, callbacks=list(callbacks), **kwargs).fit(module, loader(), loader(32) if val else None)
    return module


def _last_epoch_inputs(module_seed=0, epochs=2):
    """The inputs of mlp.0 over the last training epoch, recorded by a plain forward hook."""
    module = TinyModule(module_seed)
    seen = []
    state = {"epoch": 0}

    class Record(PostTrainingDataSparsity):  # only to know the epoch; its own options are the defaults
        def on_train_epoch_start(self, trainer, pl_module):
            state["epoch"] = trainer.current_epoch

    layer = module.model["mlp"][0]
    layer.register_forward_pre_hook(lambda m, a: seen.append((state["epoch"], m.training, a[0].detach().clone())))
    _fit(Record(DataNormSparsifier, HALF_BLOCKS_ARGS, print_table=False), module=module, epochs=epochs)
    x = torch.cat([x for e, training, x in seen if e == epochs - 1 and training])
    return module, x


def test_default_options_give_todays_masks_and_copy():
    plain = PostTrainingDataSparsity(DataNormSparsifier, HALF_BLOCKS_ARGS, print_table=False, name="plain")
    spelled = PostTrainingDataSparsity(DataNormSparsifier, HALF_BLOCKS_ARGS, print_table=False, name="spelled",
                                       scores="magnitude", update_weights=False)
    module = _fit(plain, spelled)
    for name, p in module.model.named_parameters():
        if p.dim() >= 2:
            assert torch.equal(plain.masks[name], kernels.block_mask(p.detach(), 0.5, (1, 4), 4))
    assert all(torch.equal(a, b) for a, b in zip(plain.sparsified.parameters(), spelled.sparsified.parameters(), strict=True))
    assert plain.calibrator is None and "scales" not in plain.data_sparsifier.state_dict()


def test_activation_scores_and_update_from_the_last_training_epoch():
    """Statistics over the last epoch's training batches (not validation), masks from
    block_mask(scale=sqrt(diag H)), kept weights of Linear layers updated, embedding left as is."""
    _, x = _last_epoch_inputs()
    act = PostTrainingDataSparsity(DataNormSparsifier, HALF_BLOCKS_ARGS, print_table=False, name="act",
                                   scores="activation")
    upd = PostTrainingDataSparsity(DataNormSparsifier, HALF_BLOCKS_ARGS, print_table=False, name="upd",
                                   scores="activation", update_weights=True)
    module = _fit(act, upd)
    w = module.model["mlp"][0].weight.detach()
    h = x.T @ x
    mask = kernels.block_mask(w, 0.5, (1, 4), 4, scale=h.diagonal().sqrt().reshape(1, -1))
    assert torch.equal(act.masks["mlp.0.weight"], mask) and torch.equal(upd.masks["mlp.0.weight"], mask)
    torch.testing.assert_close(upd.calibrator.stats.counts["mlp.0.weight"], x.shape[0])
    expected = least_squares_update(w, mask, h)
    torch.testing.assert_close(upd.sparsified["mlp"][0].weight.detach(), expected, rtol=1e-4, atol=1e-5)
    assert bool((upd.sparsified["mlp"][0].weight[~mask] == 0).all())
    assert torch.equal(act.sparsified["mlp"][0].weight, w * mask)  # scores alone: no update
    emb = module.model["embed"].weight.detach()  # magnitude scores, no update
    assert torch.equal(upd.masks["embed.weight"], kernels.block_mask(emb, 0.5, (1, 4), 4))
    assert torch.equal(upd.sparsified["embed"].weight, emb * upd.masks["embed.weight"])
    assert torch.equal(module.model["mlp"][0].weight, w)  # the live model is untouched


def test_validation_calibration_and_groups():
    val = PostTrainingDataSparsity(DataNormSparsifier, HALF_BLOCKS_ARGS, print_table=False, name="val",
                                   scores="activation", update_weights=True, calibration="val", calibration_batches=1)
    grouped = PostTrainingDataSparsity(DataNormSparsifier, HALF_BLOCKS_ARGS, print_table=False, name="grouped",
                                       scores="activation", update_weights=True, calibration="val",
                                       calibration_batches=1, calibration_memory=1)
    module = _fit(val, grouped)
    assert len(grouped.calibrator.groups) == 2 and len(val.calibrator.groups) == 1
    batch = next(iter(loader(32)))[0][:16]
    x = module.model["embed"](batch).detach()
    w = module.model["mlp"][0].weight.detach()
    mask = kernels.block_mask(w, 0.5, (1, 4), 4, scale=(x * x).sum(0).sqrt().reshape(1, -1))
    for cb in (val, grouped):
        assert torch.equal(cb.masks["mlp.0.weight"], mask)
        torch.testing.assert_close(cb.sparsified["mlp"][0].weight.detach(), least_squares_update(w, mask, x.T @ x),
                                   rtol=1e-4, atol=1e-5)


def test_without_a_last_epoch_statistics_come_from_the_validation_loader():
    cb = PostTrainingDataSparsity(DataNormSparsifier, HALF_BLOCKS_ARGS, print_table=False, scores="activation",
                                  calibration_batches=2)
    _fit(cb, epochs=0)  # nothing trained in this fit
    assert cb.calibrator.stats.counts == {} or not cb.calibrator.epoch_done
    assert cb.data_sparsifier.get_scale("mlp.0.weight") is not None


def test_resumed_run_gives_the_same_masks_and_weights(tmp_path):
    def make():
        return PostTrainingDataSparsity(DataNormSparsifier, HALF_BLOCKS_ARGS, print_table=False, scores="activation",
                                        update_weights=True)

    whole = make()
    _fit(whole, epochs=3)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, save_on_train_epoch_end=True)
    _fit(make(), checkpoint, epochs=2, enable_checkpointing=True, default_root_dir=tmp_path)
    resumed = make()
    trainer(max_epochs=3, callbacks=[resumed]).fit(TinyModule(seed=7), loader(), loader(32),
                                                  ckpt_path=str(tmp_path / "epoch=1-step=16.ckpt"))
    for name, mask in whole.masks.items():
        assert torch.equal(mask, resumed.masks[name])
    for a, b in zip(whole.sparsified.parameters(), resumed.sparsified.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"scores": "wanda"}, ValueError, "scores"),
    ({"update_weights": 1}, TypeError, "update_weights"),
    ({"calibration": "test"}, ValueError, "calibration"),
    ({"calibration_batches": 0}, ValueError, "calibration_batches"),
    ({"calibration_batches": True}, ValueError, "calibration_batches"),
    ({"damping": -0.1}, ValueError, "damping"),
    ({"damping": float("nan")}, ValueError, "damping"),
    ({"calibration_memory": 0}, ValueError, "calibration_memory"),
])
def test_bad_options_fail_at_construction_naming_the_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        PostTrainingDataSparsity(DataNormSparsifier, HALF_BLOCKS_ARGS, **kwargs)


def test_sparsifier_scales_round_trip_through_state_dict_with_weights_only():
    w = torch.randn(8, 16)
    sparsifier = DataNormSparsifier([("w", w)], sparsity_level=0.5, zeros_per_block=4)
    scale = torch.rand(1, 16)
    sparsifier.set_scale("w", scale)
    sparsifier.step()
    assert torch.equal(sparsifier.get_mask("w"), kernels.block_mask(w, 0.5, (1, 4), 4, scale=scale))
    buffer = io.BytesIO()
    torch.save(sparsifier.state_dict(), buffer)
    buffer.seek(0)
    loaded = DataNormSparsifier(sparsity_level=0.5)
    loaded.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(loaded.get_scale("w"), scale)
    loaded.step()
    assert torch.equal(loaded.get_mask("w"), sparsifier.get_mask("w"))
    with pytest.raises(ValueError, match="scale"):
        sparsifier.set_scale("w", -scale)
    with pytest.raises(ValueError, match="scale"):
        sparsifier.set_scale("w", torch.rand(1, 15))
    assert torch.equal(sparsifier.get_scale("w"), scale)  # unchanged by the bad calls
    sparsifier.set_scale("w", None)
    assert sparsifier.get_scale("w") is None and "scales" not in sparsifier.state_dict()


# ---------------------------------------------------------------- training-aware
CONSTANT = {"gamma": 1, "step_size": 1}  # StepSLScheduler that keeps the level: copies comparable to post-training


def _training_aware(**kwargs):
    return TrainingAwareDataSparsity(DataNormSparsifier, HALF_BLOCKS_ARGS, StepSLScheduler, CONSTANT,
                                     print_table=False, **kwargs)


class _EpochRecorder(pl.Callback):
    """Before the callbacks after it: the weights at each epoch end, and mlp.0's training inputs by epoch."""

    def __init__(self, module):
        self.weights, self.inputs, self.epoch = [], {}, 0
        layer = module.model["mlp"][0]
        layer.register_forward_pre_hook(
            lambda m, a: self.inputs.setdefault(self.epoch, []).append(a[0].detach().clone()) if m.training else None)

    def on_train_epoch_start(self, trainer, pl_module):
        self.epoch = trainer.current_epoch

    def on_train_epoch_end(self, trainer, pl_module):
        self.weights.append(pl_module.model["mlp"][0].weight.detach().clone())


class _CopyRecorder(pl.Callback):
    """After the training-aware callback: its masks and copy of mlp.0 at each epoch end."""

    def __init__(self, cb):
        self.cb, self.masks, self.copies = cb, [], []

    def on_train_epoch_end(self, trainer, pl_module):
        self.masks.append(self.cb.masks["mlp.0.weight"].clone())
        self.copies.append(self.cb.sparsified["mlp"][0].weight.detach().clone())


def test_training_aware_copies_use_each_epochs_statistics_and_update():
    """Every epoch's copy: masks from that epoch's weights scaled by that epoch's training inputs,
    kept weights updated from that epoch's H; the last copy equals post-training's, bit for bit."""
    module = TinyModule()
    ta = _training_aware(scores="activation", update_weights=True, name="ta")
    pt = PostTrainingDataSparsity(DataNormSparsifier, HALF_BLOCKS_ARGS, print_table=False, scores="activation",
                                  update_weights=True, name="pt")
    before, after = _EpochRecorder(module), _CopyRecorder(ta)
    _fit(before, ta, after, pt, module=module, epochs=2)
    assert len(after.masks) == 2
    for e in range(2):
        x = torch.cat(before.inputs[e])
        h = x.T @ x
        mask = kernels.block_mask(before.weights[e], 0.5, (1, 4), 4, scale=h.diagonal().sqrt().reshape(1, -1))
        assert torch.equal(after.masks[e], mask)
        torch.testing.assert_close(after.copies[e], least_squares_update(before.weights[e], mask, h), rtol=1e-4, atol=1e-5)
        assert bool((after.copies[e][~mask] == 0).all())
    assert not torch.equal(after.masks[0], after.masks[1])  # each epoch its own statistics
    for name in pt.masks:
        assert torch.equal(ta.masks[name], pt.masks[name])
    for a, b in zip(ta.sparsified.parameters(), pt.sparsified.parameters(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(module.model["mlp"][0].weight, before.weights[-1])  # the live model is untouched


def test_training_aware_in_place_statistics_restart_after_each_update():
    """In place, by step: each update's statistics are the batches since the previous update
    or the epoch's start (8 batches of 16 per epoch, an update every 3 steps: at steps 3, 6 | 9, 12, 15)."""
    counts = []

    class Counting(TrainingAwareDataSparsity):
        def _calibrate(self, trainer, pl_module, params):
            counts.append(self.calibrator.stats.counts["mlp.0.weight"])
            return super()._calibrate(trainer, pl_module, params)

    ramp = inplace_ramp(every_n_steps=3, total_t=4)
    cb = Counting(DataNormSparsifier, ramp.data_sparsifier_args, ramp.data_scheduler_class, ramp.data_scheduler_args,
                  inplace=True, schedule_interval="step", every_n_steps=3, print_table=False, scores="activation")
    module = TinyModule()
    before = _EpochRecorder(module)
    _fit(before, cb, module=module, epochs=2)
    assert counts == [48, 48, 16, 48, 48]
    assert cb.data_sparsifier.get_scale("mlp.0.weight") is not None


def test_training_aware_in_place_activation_masks_by_epoch():
    module = TinyModule()
    cb = TrainingAwareDataSparsity(DataNormSparsifier, HALF_BLOCKS_ARGS, StepSLScheduler, CONSTANT, inplace=True,
                                   print_table=False, scores="activation", calibration_batches=3)
    before = _EpochRecorder(module)
    _fit(before, cb, module=module, epochs=2)
    x = torch.cat(before.inputs[1][:3])  # the last epoch's first 3 batches
    mask = kernels.block_mask(before.weights[1], 0.5, (1, 4), 4, scale=(x * x).sum(0).sqrt().reshape(1, -1))
    assert torch.equal(cb.masks["mlp.0.weight"], mask)
    assert torch.equal(module.model["mlp"][0].weight, before.weights[1] * mask)


def test_training_aware_resumed_run_gives_the_same_masks_and_copy(tmp_path):
    def make():
        return _training_aware(scores="activation", update_weights=True)

    whole = make()
    _fit(whole, epochs=3)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, save_on_train_epoch_end=True)
    _fit(make(), checkpoint, epochs=2, enable_checkpointing=True, default_root_dir=tmp_path)
    resumed = make()
    trainer(max_epochs=3, callbacks=[resumed]).fit(TinyModule(seed=7), loader(), loader(32),
                                                  ckpt_path=str(tmp_path / "epoch=1-step=16.ckpt"))
    assert resumed.updates_done == whole.updates_done == 3
    for name, mask in whole.masks.items():
        assert torch.equal(mask, resumed.masks[name])
    for a, b in zip(whole.sparsified.parameters(), resumed.sparsified.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"scores": "wanda"}, ValueError, "scores"),
    ({"update_weights": "yes"}, TypeError, "update_weights"),
    ({"update_weights": True, "inplace": True}, ValueError, r"update_weights=True needs inplace=False"),
    ({"calibration": "test"}, ValueError, "calibration"),
    ({"calibration_batches": -1}, ValueError, "calibration_batches"),
    ({"damping": "0.1"}, (TypeError, ValueError), "damping"),
    ({"calibration_memory": 1.5}, ValueError, "calibration_memory"),
])
def test_training_aware_bad_options_fail_at_construction(kwargs, error, match):
    with pytest.raises(error, match=match):
        _training_aware(**kwargs)


@pytest.mark.parametrize("make", [
    lambda: PostTrainingDataSparsity(DataNormSparsifier, HALF_BLOCKS_ARGS, scores="activation"),
    lambda: _training_aware(update_weights=True),
])
def test_sharded_strategy_is_refused_at_setup(make):
    """FSDP2 (ModelParallelStrategy shards after setup): refused at setup, before training."""
    cb = make()
    strategy = ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1)
    t = pl.Trainer(accelerator="cpu", devices=2, strategy=strategy, callbacks=[cb], logger=False)
    with pytest.raises(ValueError, match=r"do not support sharded \(FSDP2/DTensor\) parameters"):
        cb.setup(t, TinyModule(), "fit")
    assert cb.calibrator is None
