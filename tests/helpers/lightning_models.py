"""Small LightningModules, data, a capturing logger and the runs several test areas share
(callbacks, checkpoints, LightningCLI, the worker scripts)."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import Logger
from torch import nn

from blocksparsity import DataNormSparsifier, LinearSLScheduler, PostTrainingDataSparsity, TrainingAwareDataSparsity


class TinyModule(pl.LightningModule):
    """An embedding table and an MLP under ``.model``, as the demo's."""

    def __init__(self, seed: int = 0, with_model_attr: bool = True, lr: float = 0.05, momentum: float = 0.0,
                 weight_decay: float = 0.0):
        super().__init__()
        torch.manual_seed(seed)
        net = nn.ModuleDict({
            "embed": nn.Embedding(32, 16),
            "mlp": nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 1)),
        })
        if with_model_attr:
            self.model = net
        else:
            self.net = net
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.training_steps = 0

    def _net(self) -> nn.ModuleDict:
        return self.model if hasattr(self, "model") else self.net

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        net = self._net()
        return net["mlp"](net["embed"](idx)).squeeze(-1)

    def training_step(self, batch, batch_idx):
        self.training_steps += 1
        idx, y = batch
        return nn.functional.mse_loss(self(idx), y)

    def validation_step(self, batch, batch_idx):
        idx, y = batch
        self.log("val_loss", nn.functional.mse_loss(self(idx), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)


def loader(n: int = 128, batch_size: int = 16, seed: int = 1) -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, 32, (n,), generator=g)
    y = torch.sin(idx.float()) + 0.1 * torch.randn(n, generator=g)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(idx, y), batch_size=batch_size, shuffle=False)


def trainer(**kwargs) -> pl.Trainer:
    options = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False, deterministic=True)
    return pl.Trainer(**{**options, **kwargs})


class ShardedTinyModule(TinyModule):
    """``TinyModule`` sharded by FSDP2 (``fully_shard`` per layer and at the root) in
    ``configure_model``, as Lightning's ``ModelParallelStrategy`` expects."""

    def configure_model(self):
        from torch.distributed.fsdp import FSDPModule, fully_shard

        if isinstance(self, FSDPModule):
            return
        mesh = self.device_mesh["data_parallel"]
        for layer in (self.model["embed"], self.model["mlp"][0], self.model["mlp"][2]):
            fully_shard(layer, mesh=mesh)
        fully_shard(self, mesh=mesh)


class TinyData(pl.LightningDataModule):
    """``loader()``'s data as a datamodule, for LightningCLI."""

    def __init__(self, n: int = 128, batch_size: int = 16):
        super().__init__()
        self.n, self.batch_size = n, batch_size

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        return loader(self.n, self.batch_size)

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        return loader(32, self.batch_size, seed=2)


def mlp_only(name: str, param: torch.Tensor) -> bool:
    """A ``param_filter`` to name by import path in a config: the MLP's weight matrices."""
    return name.startswith("mlp.") and param.dim() >= 2


def ramp_ends_late(test: Callable[..., Any]) -> Callable[..., Any]:
    """For a test whose ramp deliberately ends after its fit: the warning saying so is expected.
    (A filter inside the test: a function's filterwarnings mark would lose to the module's.)"""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*this fit makes .* mask updates and the last uses",
                                    category=UserWarning)
            return test(*args, **kwargs)

    return run


class CaptureLogger(Logger):
    """A logger that keeps every ``log_metrics`` call."""

    def __init__(self):
        super().__init__()
        self.metrics: list[dict] = []

    @property
    def name(self):
        return "capture"

    @property
    def version(self):
        return 0

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=None):
        self.metrics.append(dict(metrics))


HALF_BLOCKS_ARGS = {"sparsity_level": 0.5, "sparse_block_shape": (1, 4), "zeros_per_block": 4}


def inplace_ramp(every_n_steps: int = 2, total_t: int = 8, level: float = 0.8) -> TrainingAwareDataSparsity:
    """In-place gradual pruning by optimizer step, (1, 4) blocks, a linear ramp to ``level``."""
    return TrainingAwareDataSparsity(DataNormSparsifier, {**HALF_BLOCKS_ARGS, "sparsity_level": level}, LinearSLScheduler,
                                     {"init_sl": 0.0, "init_t": 0, "total_t": total_t}, inplace=True,
                                     schedule_interval="step", every_n_steps=every_n_steps)


def fit_with_checkpoints(make, tmp_path: Path) -> tuple[list[pl.Callback], TinyModule, Path]:
    """An uninterrupted 4-epoch run that saves a checkpoint every epoch."""
    callbacks = make()
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, every_n_epochs=1)
    module = TinyModule(momentum=0.9)
    trainer(max_epochs=4, callbacks=[*callbacks, checkpoint], enable_checkpointing=True,
            default_root_dir=tmp_path).fit(module, loader())
    assert sorted(p.name for p in tmp_path.glob("*.ckpt")) == [f"epoch={e}-step={8 * (e + 1)}.ckpt" for e in range(4)]
    return callbacks, module, tmp_path / "epoch=1-step=16.ckpt"


CLI_QUIET = ["--trainer.max_epochs=2", "--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.logger=false",
         "--trainer.enable_checkpointing=false", "--trainer.enable_progress_bar=false",
         "--trainer.enable_model_summary=false"]


def run_cli(args: list[str], **kwargs) -> LightningCLI:
    """LightningCLI's ``fit`` on TinyModule and TinyData: 2 quiet CPU epochs, then ``args``."""
    return LightningCLI(TinyModule, TinyData, args=["fit", *args, *CLI_QUIET], **{"save_config_callback": None, **kwargs})


def our_callbacks(cli: LightningCLI) -> list:
    """This package's callbacks among the CLI trainer's."""
    return [cb for cb in cli.trainer.callbacks if isinstance(cb, PostTrainingDataSparsity | TrainingAwareDataSparsity)]
