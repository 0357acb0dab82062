"""PostTrainingDataSparsity's activation-aware scores and least-squares update: defaults
unchanged, statistics and masks against a hand computation, the update in the copy, resume,
bad options, and the sparsifier's scales."""

from __future__ import annotations

import io

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from blocksparsity import DataNormSparsifier, PostTrainingDataSparsity, kernels
from blocksparsity.weight_update import least_squares_update
from tests.helpers.lightning_models import HALF_BLOCKS_ARGS, TinyModule, loader, trainer

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
