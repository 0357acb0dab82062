"""Both callbacks from LightningCLI: docs/callbacks.md's YAML config and its command line, run as
written (classes by import path, arguments as mappings, a filter function by import path)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import torch
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

from blocksparsity import (
    CubicSLScheduler,
    DataNormSparsifier,
    PostTrainingDataSparsity,
    StepSLScheduler,
    TrainingAwareDataSparsity,
)
from blocksparsity.callbacks import weight_matrices
from tests.helpers.lightning_models import TinyData, TinyModule, our_callbacks, ramp_ends_late, run_cli

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "docs" / "callbacks.md").read_text()  # the LightningCLI config and command line
MATRICES = {"embed.weight", "mlp.0.weight", "mlp.2.weight"}


def readme_command() -> list[str]:
    """The arguments of docs/callbacks.md's ``python train.py fit ...`` command line."""
    (block,) = re.findall(r"```bash\n(python train\.py fit .*?)```", README, flags=re.S)
    words = shlex.split(block.replace("\\\n", " "))
    assert words[:3] == ["python", "train.py", "fit"]
    return words[3:]


@ramp_ends_late
def test_the_readme_config(tmp_path):
    (config,) = re.findall(r"```yaml\n(.*?)```", README, flags=re.S)
    (tmp_path / "blocksparsity.yaml").write_text(config)
    run = tmp_path / "run"
    cli = run_cli(["--config", str(tmp_path / "blocksparsity.yaml"), f"--trainer.default_root_dir={run}"],
               save_config_callback=SaveConfigCallback)
    pt, ta = our_callbacks(cli)
    assert type(pt) is PostTrainingDataSparsity and type(ta) is TrainingAwareDataSparsity
    assert pt.data_sparsifier_class is DataNormSparsifier and ta.data_scheduler_class is CubicSLScheduler
    assert pt.data_sparsifier_args == {"sparsity_level": 0.5, "sparse_block_shape": [1, 4], "zeros_per_block": 4}
    assert pt.sparsified_device == torch.device("cpu") and ta.inplace and ta.param_filter is weight_matrices
    assert set(pt.masks) == set(ta.masks) == MATRICES and ta.epochs_done == 2
    for name, mask in ta.masks.items():
        assert (cli.model.model.get_parameter(name)[~mask] == 0).all(), name
    live = cli.model.model["mlp"][0].weight.detach()  # already 2:4 in place; post-training prunes it further
    assert torch.equal(pt.sparsified["mlp"][0].weight.detach(), live * pt.masks["mlp.0.weight"])
    assert (pt.sparsified["mlp"][0].weight == 0).float().mean() >= 0.5

    # the config LightningCLI saved (classes and the filter function by import path) runs again, to the same masks
    saved = (run / "config.yaml").read_text()
    assert "data_sparsifier_class: blocksparsity.DataNormSparsifier" in saved
    assert "param_filter: blocksparsity.callbacks.weight_matrices" in saved
    again = our_callbacks(LightningCLI(TinyModule, TinyData, args=["fit", "--config", str(run / "config.yaml")],
                               save_config_callback=None))
    for before, after in zip((pt, ta), again, strict=True):
        assert all(torch.equal(m, after.masks[n]) for n, m in before.masks.items())


def test_the_readme_command_line():
    cli = run_cli(readme_command())
    (pt,) = our_callbacks(cli)
    assert pt.data_sparsifier_class is DataNormSparsifier
    assert pt.data_sparsifier_args == {"sparsity_level": 0.5, "zeros_per_block": 4}
    assert set(pt.masks) == MATRICES and pt.sparsified is not None


def test_command_line_scheduler_and_filter_function_by_import_path():
    cli = run_cli(["--trainer.callbacks+=blocksparsity.TrainingAwareDataSparsity",
                "--trainer.callbacks.data_sparsifier_class=blocksparsity.DataNormSparsifier",
                "--trainer.callbacks.data_sparsifier_args={sparsity_level: 0.5}",
                "--trainer.callbacks.data_scheduler_class=blocksparsity.StepSLScheduler",
                "--trainer.callbacks.data_scheduler_args={gamma: 1.0}",
                "--trainer.callbacks.param_filter=tests.helpers.lightning_models.mlp_only"])
    (ta,) = our_callbacks(cli)
    assert ta.data_scheduler_class is StepSLScheduler and ta.data_scheduler_args == {"gamma": 1.0}
    assert set(ta.masks) == {"mlp.0.weight", "mlp.2.weight"}


def test_classes_by_import_path_in_python_and_bad_paths():
    pt = PostTrainingDataSparsity("blocksparsity.DataNormSparsifier", {"sparsity_level": 0.5})
    ta = TrainingAwareDataSparsity("blocksparsity.norm_sparsifier:DataNormSparsifier", {}, "blocksparsity.StepSLScheduler", {})
    assert pt.data_sparsifier_class is ta.data_sparsifier_class is DataNormSparsifier
    assert ta.data_scheduler_class is StepSLScheduler
    with pytest.raises(ValueError, match=r"data_sparsifier_class='blocksparsity.NoSuchSparsifier'.*no attribute"):
        PostTrainingDataSparsity("blocksparsity.NoSuchSparsifier", {})
    with pytest.raises(ValueError, match=r"data_scheduler_class='no_such_package.Scheduler'.*cannot import"):
        TrainingAwareDataSparsity(DataNormSparsifier, {}, "no_such_package.Scheduler", {})
    with pytest.raises(ValueError, match=r"data_sparsifier_class must be a class or its import path"):
        PostTrainingDataSparsity("DataNormSparsifier", {})
    with pytest.raises(TypeError, match=r"data_sparsifier_class must be a subclass of blocksparsity.BaseDataSparsifier"):
        PostTrainingDataSparsity("blocksparsity.StepSLScheduler", {})
    with pytest.raises(TypeError, match=r"data_scheduler_class must be a class"):
        TrainingAwareDataSparsity(DataNormSparsifier, {}, "blocksparsity.callbacks.weight_matrices", {})


def test_activation_scores_and_update_from_the_command_line():
    cli = run_cli(["--trainer.callbacks+=blocksparsity.PostTrainingDataSparsity",
                   "--trainer.callbacks.data_sparsifier_class=blocksparsity.DataNormSparsifier",
                   "--trainer.callbacks.data_sparsifier_args={sparsity_level: 0.5, zeros_per_block: 4}",
                   "--trainer.callbacks.scores=activation", "--trainer.callbacks.update_weights=true",
                   "--trainer.callbacks.calibration=val", "--trainer.callbacks.calibration_batches=2",
                   "--trainer.callbacks.damping=0.05"])
    (pt,) = our_callbacks(cli)
    options = pt.calibration_options
    assert (options.scores, options.update_weights, options.calibration, options.calibration_batches,
            options.damping) == ("activation", True, "val", 2, 0.05)
    assert pt.data_sparsifier.get_scale("mlp.0.weight") is not None and set(pt.masks) == MATRICES


def test_training_aware_calibration_options_from_the_command_line():
    cli = run_cli(["--trainer.callbacks+=blocksparsity.TrainingAwareDataSparsity",
                   "--trainer.callbacks.data_sparsifier_class=blocksparsity.DataNormSparsifier",
                   "--trainer.callbacks.data_sparsifier_args={sparsity_level: 0.5, zeros_per_block: 4}",
                   "--trainer.callbacks.data_scheduler_class=blocksparsity.StepSLScheduler",
                   "--trainer.callbacks.data_scheduler_args={gamma: 1}",
                   "--trainer.callbacks.scores=activation", "--trainer.callbacks.update_weights=true",
                   "--trainer.callbacks.calibration_batches=3", "--trainer.callbacks.damping=0.02",
                   "--trainer.callbacks.calibration_memory=4096"])
    (ta,) = our_callbacks(cli)
    options = ta.calibration_options
    assert (options.scores, options.update_weights, options.calibration, options.calibration_batches, options.damping,
            options.calibration_memory) == ("activation", True, "train", 3, 0.02, 4096)
    assert ta.updates_done == 2 and ta.data_sparsifier.get_scale("mlp.0.weight") is not None
    assert len(ta.calibrator.groups) == 2  # 4096 bytes: mlp.0's 16x16 float32 H, then mlp.2's
