"""Several callbacks in one Trainer (per-layer groups, each with its own filter, arguments,
schedule, state and metric names), what the logs say after a mid-epoch resume and at every
mask update, and schedules that reach their final level by the end of fit."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from blocksparsity import (
    CubicSLScheduler,
    DataNormSparsifier,
    LinearSLScheduler,
    PostTrainingDataSparsity,
    StepSLScheduler,
    TrainingAwareDataSparsity,
    kernels,
)
from blocksparsity.callbacks import _report
from tests.helpers.lightning_models import TinyModule, loader, our_callbacks, ramp_ends_late, run_cli, trainer

HALF_BLOCKS = {"sparsity_level": 0.5, "sparse_block_shape": (1, 4), "zeros_per_block": 4}
TWO_FOUR = {"sparsity_level": 1.0, "sparse_block_shape": (1, 4), "zeros_per_block": 2}
LINEARS = ("mlp.0.weight", "mlp.2.weight")


def _groups() -> list[TrainingAwareDataSparsity]:
    """The per-layer example of docs/callbacks.md, on TinyModule: 50% of (1, 4) blocks on the embedding table, 2:4 on the
    linear layers, each with its own ramp."""
    embeddings = TrainingAwareDataSparsity(
        DataNormSparsifier, HALF_BLOCKS, CubicSLScheduler, {"init_sl": 0.0, "init_t": 0, "delta_t": 1, "total_t": 3},
        inplace=True, param_filter="embed.*", name="embeddings")
    linear = TrainingAwareDataSparsity(
        DataNormSparsifier, TWO_FOUR, LinearSLScheduler, {"init_sl": 0.5, "init_t": 0, "total_t": 2},
        inplace=True, param_filter="mlp.*.weight", name="linear")
    return [embeddings, linear]


def _rows(log_dir: str, column: str) -> list[dict[str, str]]:
    with open(Path(log_dir) / "metrics.csv", newline="") as f:
        return [row for row in csv.DictReader(f) if row.get(column)]


# ------------------------------------------------------------------ item 1: several instances
def test_two_named_callbacks_sparsify_their_own_groups_log_apart_and_resume_their_own_state(tmp_path):
    embeddings, linear = callbacks = _groups()
    assert embeddings.state_key != linear.state_key
    logger = CSVLogger(tmp_path, name="csv")
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, every_n_epochs=1)
    module = TinyModule(momentum=0.9)
    trainer(max_epochs=4, callbacks=[*callbacks, checkpoint], logger=logger, enable_checkpointing=True,
            default_root_dir=tmp_path).fit(module, loader())

    assert set(embeddings.masks) == {"embed.weight"} and set(linear.masks) == set(LINEARS)
    w = module.model.embed.weight.detach()
    assert (w == 0).float().mean() == 0.5  # the cubic ramp's final level (total_t = max_epochs - 1), blocks of 4
    for name in LINEARS:  # 2:4 in every block of 4 along the rows
        blocks = (module.model.get_parameter(name).detach() == 0).reshape(-1, 4).sum(1)
        assert (blocks >= 2).all(), name
    for cb, prefix in ((embeddings, "training_aware_sparsity/embeddings"), (linear, "training_aware_sparsity/linear")):
        names = {f"{prefix}/{key}" for key in (*cb.masks, "overall", "level", "mask_seconds")}
        assert set().union(*cb.history) == names and len(cb.history) == 4
    assert embeddings.history[-1]["training_aware_sparsity/embeddings/level"] == 0.5
    assert linear.history[-1]["training_aware_sparsity/linear/level"] == 1.0
    for group in ("embeddings", "linear"):  # each instance's own columns, at every epoch end
        rows = _rows(logger.log_dir, f"training_aware_sparsity/{group}/overall")
        assert [row["step"] for row in rows] == ["8", "16", "24", "32"], group

    state = torch.load(tmp_path / "epoch=1-step=16.ckpt", weights_only=False)["callbacks"]
    assert {embeddings.state_key, linear.state_key} <= set(state)
    assert set(state[embeddings.state_key]["sparsifier"]["state"]) == {"embed.weight"}

    resumed = _groups()
    resumed_module = TinyModule(seed=123, momentum=0.9)
    trainer(max_epochs=4, callbacks=resumed).fit(resumed_module, loader(), ckpt_path=str(tmp_path / "epoch=1-step=16.ckpt"))
    for before, after in zip(callbacks, resumed, strict=True):
        assert before.masks.keys() == after.masks.keys()
        assert all(torch.equal(before.masks[n], after.masks[n]) for n in before.masks)
        assert after.updates_done == 4
    assert all(torch.equal(p, resumed_module.get_parameter(n)) for n, p in module.named_parameters())


def test_an_unnamed_callback_keeps_its_state_key_and_metric_names():
    ta = TrainingAwareDataSparsity(DataNormSparsifier, HALF_BLOCKS, StepSLScheduler, {"gamma": 1.0})
    pt = PostTrainingDataSparsity(DataNormSparsifier, HALF_BLOCKS)
    assert ta.state_key == "TrainingAwareDataSparsity" and pt.state_key == "PostTrainingDataSparsity"
    trainer(max_epochs=1, callbacks=[ta, pt]).fit(TinyModule(), loader())
    assert "training_aware_sparsity/overall" in ta.history[0] and "post_training_sparsity/overall" in pt.history[0]
    named = TrainingAwareDataSparsity(DataNormSparsifier, HALF_BLOCKS, StepSLScheduler, name="emb")
    assert named.state_key == "TrainingAwareDataSparsity{'name': 'emb'}"


@pytest.mark.parametrize("name", ["", "a/b", 3])
def test_a_bad_name_is_refused(name):
    with pytest.raises(ValueError, match="name"):
        TrainingAwareDataSparsity(DataNormSparsifier, HALF_BLOCKS, StepSLScheduler, name=name)
    with pytest.raises(ValueError, match="name"):
        PostTrainingDataSparsity(DataNormSparsifier, HALF_BLOCKS, name=name)


def test_two_unnamed_stateful_callbacks_are_refused_by_lightning():
    make = lambda: TrainingAwareDataSparsity(DataNormSparsifier, HALF_BLOCKS, StepSLScheduler)
    with pytest.raises(RuntimeError, match="more than one stateful callback"):
        trainer(max_epochs=1, callbacks=[make(), make()])


def test_two_post_training_callbacks_need_distinct_names():
    make = lambda name=None: PostTrainingDataSparsity(DataNormSparsifier, HALF_BLOCKS, name=name)
    with pytest.raises(ValueError, match="same metric names: give each its own name="):
        trainer(max_epochs=1, callbacks=[make(), make()]).fit(TinyModule(), loader())
    with pytest.raises(ValueError, match="named 'a'"):
        trainer(max_epochs=1, callbacks=[make("a"), make("a")]).fit(TinyModule(), loader())
    half, quarter = make(), PostTrainingDataSparsity(DataNormSparsifier, {**HALF_BLOCKS, "sparsity_level": 0.25},
                                                     name="quarter")
    trainer(max_epochs=1, callbacks=[half, quarter]).fit(TinyModule(), loader())
    assert half.history[0]["post_training_sparsity/overall"] == 0.5
    assert quarter.history[0]["post_training_sparsity/quarter/overall"] == 0.25


@ramp_ends_late
def test_overlapping_in_place_groups_are_refused_at_setup_naming_the_tensor():
    embeddings, _ = _groups()
    everything = TrainingAwareDataSparsity(DataNormSparsifier, TWO_FOUR, StepSLScheduler, {"gamma": 1.0},
                                           inplace=True, name="all")
    module = TinyModule()
    with pytest.raises(ValueError, match=r"would both mask 'embed\.weight' .*param_filters that do not overlap"):
        trainer(max_epochs=1, callbacks=[embeddings, everything]).fit(module, loader())
    assert module.training_steps == 0 and (module.model.embed.weight != 0).all()
    # copies do not touch the live model: a post-training copy may cover what an in-place group masks
    embeddings, _ = _groups()
    pt = PostTrainingDataSparsity(DataNormSparsifier, HALF_BLOCKS, name="copy")
    trainer(max_epochs=1, callbacks=[embeddings, pt]).fit(TinyModule(), loader())
    assert set(pt.masks) == {"embed.weight", *LINEARS}


# ------------------------------------------------------------------ item 4: logs
def _step_wise() -> TrainingAwareDataSparsity:
    return TrainingAwareDataSparsity(DataNormSparsifier, {**HALF_BLOCKS, "sparsity_level": 0.8}, LinearSLScheduler,
                                     {"init_sl": 0.0, "init_t": 0, "total_t": 8}, inplace=True,
                                     schedule_interval="step", every_n_steps=5)


@ramp_ends_late
def test_every_step_interval_update_is_logged_at_its_step_with_the_scheduled_level(tmp_path):
    ta = _step_wise()
    logger = CSVLogger(tmp_path, name="csv")
    trainer(max_epochs=3, callbacks=[ta], logger=logger).fit(TinyModule(), loader())  # 24 steps: updates at 5, 10, 15, 20
    rows = _rows(logger.log_dir, "training_aware_sparsity/overall")
    assert [row["step"] for row in rows] == ["5", "10", "15", "20"]
    levels = [0.8 * k / 8 for k in range(4)]  # update k uses the level after k scheduler steps
    assert [float(row["training_aware_sparsity/level"]) for row in rows] == pytest.approx(levels)
    assert [h["training_aware_sparsity/level"] for h in ta.history] == pytest.approx(levels)
    # 128 + 128 + 8 blocks of 4 (1056 elements); round(level * blocks) of each tensor's zero
    expected = [(round(lv * 128) * 2 + round(lv * 8)) * 4 / 1056 for lv in levels]
    assert [float(row["training_aware_sparsity/overall"]) for row in rows] == pytest.approx(expected)


@ramp_ends_late
def test_a_mid_epoch_resume_reports_the_restored_masks(tmp_path, capsys):
    ta = _step_wise()
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, every_n_train_steps=12)
    trainer(max_epochs=3, callbacks=[ta, checkpoint], enable_checkpointing=True,
            default_root_dir=tmp_path).fit(TinyModule(), loader())
    middle = tmp_path / "epoch=1-step=12.ckpt"
    assert middle.exists()
    at_10 = ta.history[1]  # the update before the checkpoint

    resumed = _step_wise()
    module = TinyModule()
    logger = CSVLogger(tmp_path, name="resumed")
    trainer(max_steps=14, callbacks=[resumed], logger=logger).fit(module, loader(), ckpt_path=str(middle))
    assert resumed.updates_done == 2 and resumed.history == []  # no update between steps 12 and 14
    restored = _report.metrics(resumed.layers, 0.0, "training_aware_sparsity")
    assert restored["training_aware_sparsity/overall"] == at_10["training_aware_sparsity/overall"] > 0.05
    assert restored["training_aware_sparsity/level"] == at_10["training_aware_sparsity/level"] == pytest.approx(0.1)
    assert {k for k in restored if k.count(".")} == {f"training_aware_sparsity/{n}" for n in ("embed.weight", *LINEARS)}
    zeros = sum((p == 0).sum().item() for n, p in module.model.named_parameters() if n in resumed.masks)
    assert restored["training_aware_sparsity/overall"] == zeros / 1056  # what the model holds
    table = capsys.readouterr().out
    assert "Training-aware sparsity after" in table and "mlp.0.weight" in table  # the fit-end table has rows

    resumed = _step_wise()
    logger = CSVLogger(tmp_path, name="resumed_to_the_end")
    trainer(max_epochs=3, callbacks=[resumed], logger=logger).fit(TinyModule(), loader(), ckpt_path=str(middle))
    rows = _rows(logger.log_dir, "training_aware_sparsity/overall")
    assert [row["step"] for row in rows] == ["15", "20"]
    for row, before in zip(rows, ta.history[2:], strict=True):
        for key in ("overall", "level", *(n for n in ("embed.weight", *LINEARS))):
            assert float(row[f"training_aware_sparsity/{key}"]) == pytest.approx(before[f"training_aware_sparsity/{key}"])


# ------------------------------------------------------------------ item 5: schedules
def _cubic(total_t: int, **kwargs) -> TrainingAwareDataSparsity:
    return TrainingAwareDataSparsity(DataNormSparsifier, HALF_BLOCKS, CubicSLScheduler,
                                     {"init_sl": 0.0, "init_t": 0, "delta_t": 1, "total_t": total_t}, **kwargs)


def _masks_zero_fraction(masks: dict[str, torch.Tensor]) -> float:
    return sum((~m).sum().item() for m in masks.values()) / sum(m.numel() for m in masks.values())


@pytest.mark.parametrize("inplace", [False, True])
def test_the_documented_ramp_reaches_its_final_level_at_the_last_update(inplace):
    ta = _cubic(total_t=4 - 1, inplace=inplace)  # total_t = max_epochs - 1
    module = TinyModule()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer(max_epochs=4, callbacks=[ta]).fit(module, loader())
    assert not [w for w in caught if "mask updates" in str(w.message)]
    assert _masks_zero_fraction(ta.masks) == 0.5
    assert ta.history[-1]["training_aware_sparsity/level"] == 0.5
    for name, w in ta.sparsified.named_parameters():
        if name in ta.masks:
            live = module.model.get_parameter(name).detach()
            assert torch.equal(ta.masks[name], kernels.block_mask(live, 0.5, (1, 4), 4)) or inplace, name
            assert (w == 0).float().mean() == 0.5, name


def test_a_ramp_that_ends_too_late_warns_with_the_setting_to_use():
    ta = _cubic(total_t=4)  # total_t = max_epochs: the last update would use 0.4922, not 0.5
    with pytest.warns(UserWarning, match=r"4 mask updates .* t=3: 0\.4922 .* final 0\.5 .*total_t=3 with delta_t=1"):
        trainer(max_epochs=4, callbacks=[ta]).fit(TinyModule(), loader())
    assert _masks_zero_fraction(ta.masks) < 0.5

    step = TrainingAwareDataSparsity(DataNormSparsifier, HALF_BLOCKS, LinearSLScheduler,
                                     {"init_sl": 0.0, "init_t": 0, "total_t": 8}, inplace=True,
                                     schedule_interval="step", every_n_steps=4)  # 16 steps: 4 updates
    with pytest.warns(UserWarning, match=r"4 mask updates .*init_t \+ total_t <= 3, e\.g\. total_t=3"):
        trainer(max_steps=16, callbacks=[step]).fit(TinyModule(), loader())


def test_step_schedules_and_ramps_that_end_in_time_do_not_warn():
    for ta in (TrainingAwareDataSparsity(DataNormSparsifier, HALF_BLOCKS, StepSLScheduler, {"gamma": 2}),
               _cubic(total_t=2), _cubic(total_t=3, name="in_time")):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer(max_epochs=4, callbacks=[ta]).fit(TinyModule(), loader())
        assert not [w for w in caught if "mask updates" in str(w.message)]


def test_two_named_groups_from_a_lightning_cli_config(tmp_path):

    config = tmp_path / "groups.yaml"
    config.write_text("""\
trainer:
  callbacks:
    - class_path: blocksparsity.TrainingAwareDataSparsity
      init_args:
        data_sparsifier_class: blocksparsity.DataNormSparsifier
        data_sparsifier_args: {sparsity_level: 0.5, sparse_block_shape: [1, 4], zeros_per_block: 4}
        data_scheduler_class: blocksparsity.CubicSLScheduler
        data_scheduler_args: {init_sl: 0.0, init_t: 0, delta_t: 1, total_t: 1}
        inplace: true
        param_filter: embed.*
        name: embeddings
    - class_path: blocksparsity.TrainingAwareDataSparsity
      init_args:
        data_sparsifier_class: blocksparsity.DataNormSparsifier
        data_sparsifier_args: {sparsity_level: 1.0, sparse_block_shape: [1, 4], zeros_per_block: 2}
        data_scheduler_class: blocksparsity.StepSLScheduler
        data_scheduler_args: {gamma: 1.0}
        inplace: true
        param_filter: mlp.*.weight
        name: linear
""")
    embeddings, linear = our_callbacks(run_cli(["--config", str(config)]))  # 2 epochs
    assert (embeddings.name, linear.name) == ("embeddings", "linear")
    assert set(embeddings.masks) == {"embed.weight"} and set(linear.masks) == set(LINEARS)
    assert embeddings.history[-1]["training_aware_sparsity/embeddings/overall"] == 0.5
    assert linear.history[-1]["training_aware_sparsity/linear/overall"] == 0.5
