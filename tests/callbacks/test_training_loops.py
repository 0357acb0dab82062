"""The callbacks in the loops and with the tools of a real Lightning run: mixed precision,
gradient accumulation, ``max_steps``, validation and test runs, CSV and TensorBoard loggers,
``ModelCheckpoint`` and resume, and ``python -m blocksparsity.checkpoint`` on the real ``.ckpt``."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from blocksparsity import (
    CubicSLScheduler,
    DataNormSparsifier,
    PostTrainingDataSparsity,
    StepSLScheduler,
    TrainingAwareDataSparsity,
    kernels,
)
from blocksparsity.checkpoint import load_sparse
from tests.helpers.lightning_models import TinyModule, fit_with_checkpoints, inplace_ramp, loader, ramp_ends_late, trainer

ROOT = Path(__file__).resolve().parents[2]
HALF_BLOCKS = {"sparsity_level": 0.5, "sparse_block_shape": (1, 4), "zeros_per_block": 4}
MATRICES = ("embed.weight", "mlp.0.weight", "mlp.2.weight")


def _post() -> PostTrainingDataSparsity:
    return PostTrainingDataSparsity(DataNormSparsifier, HALF_BLOCKS)


def _copying() -> TrainingAwareDataSparsity:
    return TrainingAwareDataSparsity(DataNormSparsifier, {**HALF_BLOCKS, "zeros_per_block": 2}, CubicSLScheduler,
                                     {"init_sl": 0.0, "init_t": 0, "delta_t": 1, "total_t": 3})


def _assert_live_masked(module: pl.LightningModule, ta: TrainingAwareDataSparsity) -> None:
    assert set(ta.masks) == set(MATRICES)
    for name, mask in ta.masks.items():
        assert (module.model.get_parameter(name)[~mask] == 0).all(), name


def _assert_post_training_masks(module: pl.LightningModule, pt: PostTrainingDataSparsity) -> None:
    assert set(pt.masks) == set(MATRICES)
    for name in MATRICES:
        w = module.model.get_parameter(name).detach()
        assert torch.equal(pt.masks[name], kernels.block_mask(w, 0.5, (1, 4), 4)), name
        assert torch.equal(pt.sparsified.get_parameter(name).detach(), w * pt.masks[name]), name


# ------------------------------------------------------------------ precision
@pytest.mark.parametrize("precision, dtype", [("bf16-mixed", torch.float32), ("16-mixed", torch.float32),
                                              ("bf16-true", torch.bfloat16), ("16-true", torch.float16)])
@ramp_ends_late
def test_precision(precision, dtype):
    pt, ta = _post(), inplace_ramp()
    module = TinyModule()
    trainer(max_epochs=2, precision=precision, callbacks=[pt, ta]).fit(module, loader())
    assert all(p.dtype == dtype for p in module.parameters())  # mixed: fp32 weights, low-precision compute
    assert all(p.dtype == dtype for p in pt.sparsified.parameters())
    _assert_live_masked(module, ta)
    _assert_post_training_masks(module, pt)
    assert ta.updates_done == 8 and torch.isfinite(torch.cat([p.flatten() for p in module.parameters()])).all()


# ------------------------------------------------------------------ loops
class StepRecorder(pl.Callback):
    """After every batch (after the training-aware callback's own hook): the optimizer step,
    the mask updates done, and the level of the current masks."""

    def __init__(self, ta: TrainingAwareDataSparsity):
        self.ta, self.rows = ta, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.rows.append((trainer.global_step, self.ta.updates_done, self.ta.layers[0].level if self.ta.layers else None))


@ramp_ends_late
def test_gradient_accumulation_moves_the_level_per_optimizer_step():
    ta = inplace_ramp(every_n_steps=1)
    recorder = StepRecorder(ta)
    module = TinyModule()
    trainer(max_epochs=2, accumulate_grad_batches=2, callbacks=[ta, recorder]).fit(module, loader())  # 16 batches
    steps = [0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8]  # an optimizer step every second batch
    assert [step for step, _, _ in recorder.rows] == steps
    assert [updates for _, updates, _ in recorder.rows] == steps  # one mask update per optimizer step
    assert recorder.rows[0][2] is None  # no mask before the first optimizer step
    # update k uses the level the linear ramp gives after k - 1 scheduler steps: 0.8 * (k - 1) / 8
    levels = [level for _, _, level in recorder.rows[1::2]]
    assert levels == pytest.approx([0.8 * k / 8 for k in range(8)], abs=1e-12)
    _assert_live_masked(module, ta)


@ramp_ends_late
def test_max_steps_instead_of_max_epochs():
    pt, ta = _post(), _copying()
    module = TinyModule()
    trainer(max_steps=5, callbacks=[pt, ta]).fit(module, loader())  # stops in the middle of the first epoch
    assert module.training_steps == 5
    assert ta.epochs_done == 1 and len(ta.history) == 1 and ta.sparsified is not None
    _assert_post_training_masks(module, pt)

    inplace = inplace_ramp(every_n_steps=2)
    module = TinyModule()
    trainer(max_steps=5, max_epochs=-1, callbacks=[inplace]).fit(module, loader())
    assert inplace.updates_done == 2
    _assert_live_masked(module, inplace)


class WithTestStep(TinyModule):
    def test_step(self, batch, batch_idx):
        idx, y = batch
        self.log("test_loss", torch.nn.functional.mse_loss(self(idx), y))


@ramp_ends_late
def test_validation_only_and_test_after_fit_do_not_sparsify_again():
    pt, ta = _post(), _copying()
    trainer(callbacks=[pt, ta]).validate(TinyModule(), loader(32))
    assert pt.sparsified is None and ta.sparsified is None and pt.history == ta.history == []

    pt, ta, inplace = _post(), _copying(), inplace_ramp()
    t = trainer(max_epochs=2, callbacks=[pt, ta])
    module = WithTestStep()
    t.fit(module, loader(), loader(32))
    copies, histories = (pt.sparsified, ta.sparsified), (list(pt.history), list(ta.history))
    weights = {n: p.detach().clone() for n, p in module.named_parameters()}
    t.validate(module, loader(32))
    t.test(module, loader(32))
    assert (pt.sparsified, ta.sparsified) == copies and (pt.history, ta.history) == histories
    assert all(torch.equal(p, weights[n]) for n, p in module.named_parameters())

    t = trainer(max_epochs=2, callbacks=[inplace])
    module = WithTestStep()
    t.fit(module, loader())
    masks, updates = dict(inplace.masks), inplace.updates_done
    (result,) = t.test(module, loader(32))
    assert inplace.updates_done == updates and all(inplace.masks[n] is m for n, m in masks.items())
    assert torch.isfinite(torch.tensor(result["test_loss"]))
    _assert_live_masked(module, inplace)


# ------------------------------------------------------------------ loggers
def test_csv_and_tensorboard_loggers_receive_the_documented_names(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    loggers = [CSVLogger(tmp_path, name="csv"), TensorBoardLogger(tmp_path, name="tb")]
    pt = _post()
    ta = TrainingAwareDataSparsity(DataNormSparsifier, HALF_BLOCKS, StepSLScheduler, {"gamma": 1.0})
    trainer(max_epochs=2, callbacks=[pt, ta], logger=loggers).fit(TinyModule(), loader())
    names = [f"{prefix}/{key}" for prefix in ("post_training_sparsity", "training_aware_sparsity")
             for key in (*MATRICES, "overall", "level", "mask_seconds")]
    logged = [*ta.history, *pt.history]  # in the order they were logged: two epochs, then post-training
    assert set().union(*logged) == set(names)

    with open(Path(loggers[0].log_dir) / "metrics.csv", newline="") as f:
        rows = [row for row in csv.DictReader(f) if any(row.get(n) for n in names)]
    assert set(names) <= set(rows[0])
    assert len(rows) == 3
    assert [row["step"] for row in rows] == ["8", "16", "16"]  # the global step at each epoch end, then at fit end
    for row, metrics in zip(rows, logged, strict=True):
        for name in names:
            if name in metrics:
                assert float(row[name]) == pytest.approx(metrics[name], rel=1e-6), name
            else:
                assert row[name] == "", name
    assert [float(r["training_aware_sparsity/mlp.0.weight"]) for r in rows[:2]] == [0.5, 0.5]

    events = EventAccumulator(loggers[1].log_dir)
    events.Reload()
    assert set(names) <= set(events.Tags()["scalars"])
    overall = [(e.step, e.value) for e in events.Scalars("training_aware_sparsity/overall")]
    assert [step for step, _ in overall] == [8, 16]
    assert [value for _, value in overall] == pytest.approx([h["training_aware_sparsity/overall"] for h in ta.history])
    (post,) = events.Scalars("post_training_sparsity/mlp.0.weight")
    assert post.step == 16 and post.value == 0.5


# ------------------------------------------------------------------ checkpoints and resume
@pytest.mark.parametrize("make", [lambda: [_post(), _copying()], lambda: [inplace_ramp()]], ids=["post+aware", "inplace"])
def test_resume_from_a_middle_epoch_gives_the_uninterrupted_masks(tmp_path, make):
    uninterrupted, module, middle = fit_with_checkpoints(make, tmp_path)
    resumed = make()
    resumed_module = TinyModule(seed=123, momentum=0.9)
    trainer(max_epochs=4, callbacks=resumed).fit(resumed_module, loader(), ckpt_path=str(middle))
    for before, after in zip(uninterrupted, resumed, strict=True):
        assert before.masks.keys() == after.masks.keys() == set(MATRICES)
        assert all(torch.equal(before.masks[n], after.masks[n]) for n in MATRICES)
        assert all(torch.equal(p, after.sparsified.get_parameter(n)) for n, p in before.sparsified.named_parameters())
    assert all(torch.equal(p, resumed_module.get_parameter(n)) for n, p in module.named_parameters())


@pytest.mark.slow
def test_the_checkpoint_tool_sparsifies_a_real_lightning_checkpoint(tmp_path):
    (ta,), _, _ = fit_with_checkpoints(lambda: [inplace_ramp()], tmp_path)
    last, out = tmp_path / "epoch=3-step=32.ckpt", tmp_path / "sparse.pt"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "blocksparsity.checkpoint", str(last), str(out), "--level", "0.75",
                           "--min-numel", "1"], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "lightning" in done.stdout and "pruned 3 of 5 tensors" in done.stdout
    assert "\r" not in done.stdout + done.stderr  # no progress-bar refreshes in a log
    saved = torch.load(last, map_location="cpu", weights_only=True)["state_dict"]
    sparse = load_sparse(out)
    assert sparse.keys() == saved.keys()
    for key, w in saved.items():
        if w.dim() < 2:
            assert torch.equal(sparse[key], w), key  # biases kept
            continue
        expected = w * kernels.block_mask(w, 0.75, (1, 4))
        assert torch.equal(sparse[key], expected) and (sparse[key] == 0).float().mean() >= 0.75, key
        name = key.removeprefix("model.")
        assert (sparse[key][~ta.masks[name]] == 0).all()  # the callback's zeros stay zero
