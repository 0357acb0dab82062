"""Sparse checkpoints back into Lightning: ``python -m blocksparsity.checkpoint``'s output on a real
Lightning ``.ckpt``, read by ``load_from_checkpoint`` and ``fit(ckpt_path=...)`` through
``load_lightning_checkpoint`` / ``write_lightning_checkpoint``, without the stale training-aware state."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from blocksparsity import DataNormSparsifier, StepSLScheduler, TrainingAwareDataSparsity
from blocksparsity.checkpoint import (
    CheckpointError,
    load_lightning_checkpoint,
    load_sparse,
    save_sparse,
    write_lightning_checkpoint,
)
from tests.helpers.lightning_models import TinyModule, fit_with_checkpoints, inplace_ramp, loader, ramp_ends_late, trainer

pytestmark = pytest.mark.slow  # each test runs the command line

ROOT = Path(__file__).resolve().parents[2]


def _sparse_from_lightning(tmp_path: Path, *options: str) -> tuple[Path, Path]:
    """A real Lightning checkpoint of an in-place run, and the command line's sparse file of it."""
    fit_with_checkpoints(lambda: [inplace_ramp()], tmp_path)
    last, out = tmp_path / "epoch=3-step=32.ckpt", tmp_path / "sparse.pt"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "blocksparsity.checkpoint", str(last), str(out), "--level", "0.75",
                           "--min-numel", "1", *options], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return last, out


@ramp_ends_late
def test_lightning_cannot_read_the_sparse_file_but_the_loader_gives_a_normal_checkpoint(tmp_path):
    last, out = _sparse_from_lightning(tmp_path, "--keep-optimizer")
    with pytest.raises(KeyError, match="pytorch-lightning_version"):
        TinyModule.load_from_checkpoint(out)  # the problem this solves
    original = torch.load(last, weights_only=True)
    assert "TrainingAwareDataSparsity" in original["callbacks"]

    ckpt = load_lightning_checkpoint(out)
    assert ckpt["pytorch-lightning_version"] == original["pytorch-lightning_version"]
    assert ckpt["epoch"] == original["epoch"] and ckpt["global_step"] == original["global_step"]
    assert "TrainingAwareDataSparsity" not in ckpt["callbacks"]  # stale: masks of the weights before pruning
    assert set(ckpt["callbacks"]) == set(original["callbacks"]) - {"TrainingAwareDataSparsity"}  # ModelCheckpoint's kept
    sparse = load_sparse(out)
    assert ckpt["state_dict"].keys() == sparse.keys()
    assert all(torch.equal(ckpt["state_dict"][k], sparse[k]) for k in sparse)
    assert "optimizer_states" in ckpt
    kept = load_lightning_checkpoint(out, callback_state="keep")
    assert kept["callbacks"].keys() == original["callbacks"].keys()

    dense = write_lightning_checkpoint(out, tmp_path / "dense.ckpt")
    module = TinyModule.load_from_checkpoint(dense)
    assert all(torch.equal(p.detach(), sparse["model." + n]) for n, p in module.model.named_parameters())
    assert (module.model.mlp[0].weight == 0).float().mean() >= 0.75

    # fit(ckpt_path=...) resumes from it: one more epoch, a fresh training-aware callback (its schedule from the start)
    ta = inplace_ramp()
    resumed = TinyModule(momentum=0.9)
    trainer(max_epochs=5, callbacks=[ta]).fit(resumed, loader(), ckpt_path=dense)
    assert resumed.training_steps == 8 and ta.updates_done == 4  # steps 34, 36, 38, 40: every 2 steps from step 32
    assert [round(h["training_aware_sparsity/level"], 6) for h in ta.history] == [0.0, 0.1, 0.2, 0.3]
    for name, mask in ta.masks.items():
        assert (resumed.model.get_parameter(name)[~mask] == 0).all(), name


def test_without_the_optimizer_state_load_from_checkpoint_works(tmp_path):
    _, out = _sparse_from_lightning(tmp_path)
    ckpt = load_lightning_checkpoint(out)
    assert "optimizer_states" not in ckpt and "TrainingAwareDataSparsity" not in ckpt["callbacks"]
    module = TinyModule.load_from_checkpoint(write_lightning_checkpoint(out, tmp_path / "dense.ckpt"))
    assert (module.model.embed.weight == 0).float().mean() >= 0.75


def test_bad_inputs(tmp_path):
    plain = tmp_path / "plain.pt"
    save_sparse({"w": torch.zeros(4, 4)}, plain)
    with pytest.raises(CheckpointError, match=r"not made from a Lightning checkpoint.*load_sparse"):
        load_lightning_checkpoint(plain)
    lightning = tmp_path / "lightning.pt"
    save_sparse({"model.w": torch.ones(4, 4)}, lightning, extra={"pytorch-lightning_version": "2.6.0", "callbacks": {
        "TrainingAwareDataSparsity{'name': 'emb'}": {}, "TrainingAwareDataSparsity": {}, "EarlyStopping{}": {"x": 1}}})
    assert load_lightning_checkpoint(lightning)["callbacks"] == {"EarlyStopping{}": {"x": 1}}
    with pytest.raises(ValueError, match="callback_state"):
        load_lightning_checkpoint(lightning, callback_state="refresh")
    with pytest.raises(CheckpointError, match="input file"):
        write_lightning_checkpoint(lightning, lightning)
    (tmp_path / "exists.ckpt").write_bytes(b"keep")
    with pytest.raises(CheckpointError, match="force"):
        write_lightning_checkpoint(lightning, tmp_path / "exists.ckpt")
    assert (tmp_path / "exists.ckpt").read_bytes() == b"keep"
    write_lightning_checkpoint(lightning, tmp_path / "exists.ckpt", force=True)
    assert torch.equal(torch.load(tmp_path / "exists.ckpt", weights_only=True)["state_dict"]["model.w"], torch.ones(4, 4))
    with pytest.raises(TypeError, match="force"):
        write_lightning_checkpoint(lightning, tmp_path / "other.ckpt", force="yes")


def test_the_loader_finds_the_training_aware_state_by_the_key_its_module_exports(tmp_path, monkeypatch):
    from blocksparsity.callbacks import training_aware
    from blocksparsity.callbacks.training_aware import SHARDED_MASKS_PREFIX, STATE_KEY, is_state_key

    named = TrainingAwareDataSparsity(DataNormSparsifier, {}, StepSLScheduler, {}, name="emb")
    assert TrainingAwareDataSparsity(DataNormSparsifier, {}, StepSLScheduler, {}).state_key == STATE_KEY
    assert is_state_key(STATE_KEY) and is_state_key(named.state_key) and is_state_key(TrainingAwareDataSparsity)
    assert not any(is_state_key(k) for k in ("PostTrainingDataSparsity", STATE_KEY + "X", "EarlyStopping{}", 3))
    path = tmp_path / "ck.pt"
    save_sparse({"model.w": torch.ones(4, 4), SHARDED_MASKS_PREFIX + "model.w": torch.ones(4, 4)}, path, extra={
        "pytorch-lightning_version": "2.6.0", "callbacks": {named.state_key: {}, "Other": {}}})
    loaded = load_lightning_checkpoint(path)
    assert loaded["callbacks"] == {"Other": {}} and list(loaded["state_dict"]) == ["model.w"]
    # the loader asks the callback's module, not a copy of its names
    monkeypatch.setattr(training_aware, "is_state_key", lambda key: key == "Other")
    monkeypatch.setattr(training_aware, "SHARDED_MASKS_PREFIX", "model.")
    loaded = load_lightning_checkpoint(path)
    assert loaded["callbacks"] == {named.state_key: {}} and list(loaded["state_dict"]) == [SHARDED_MASKS_PREFIX + "model.w"]
