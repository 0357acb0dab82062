"""Small LightningModules and data for the callback tests (and the DDP script)."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn


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


# ---------------------------------------------------------------- warning filters
# The Lightning test modules' filters (``pytestmark = pytest.mark.filterwarnings(*WARNING_FILTERS)``):
# the notices Lightning and jsonargparse give about these tiny runs are ignored one by one, by
# message, and this package's own warnings fail the test (a test that expects one says so with
# ``pytest.warns`` or ``@ramp_ends_late``). Later entries win over earlier ones.
LIGHTNING_NOTICES = (
    "ignore:The number of training batches .* is smaller than the logging interval:UserWarning",
    "ignore:You defined a `validation_step` but have no `val_dataloader`:UserWarning",
    "ignore:.*does not have many workers:UserWarning",
    r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated",
    "ignore:No seed found, seed set to 0",
    "ignore:Checkpoint directory .* exists and is not empty:UserWarning",
    "ignore:Be aware that when using `ckpt_path`, callbacks used to create the checkpoint:UserWarning",
    "ignore:You're resuming from a checkpoint that ended before the epoch ended:UserWarning",
    r"ignore:You passed `Trainer\(accelerator='cpu', precision='16-mixed'\)`:UserWarning",
    "ignore:LightningCLI's args parameter is intended to run from within Python:UserWarning",
    r"ignore:\s*By default only one JsonargparseDeprecationWarning per type is shown",
    r"ignore:\s*``ArgumentParser.add_instantiator`` was deprecated",
    r"ignore:\s*``instantiate_classes`` was deprecated",
    r"ignore:\s*skip_none parameter was deprecated",
    r"ignore:\s*Unable to serialize instance",
)
OUR_WARNINGS = (
    r"error:Detected call of `scheduler.step\(\)` before `data_sparsifier.step\(\)`:UserWarning",
    r"error:Seems like `data_sparsifier.step\(\)` has been overridden:UserWarning",
    "error:.*this fit makes .* mask updates and the last uses:UserWarning",
    "error:sparsity_level .* is above 1:UserWarning",
)
WARNING_FILTERS = LIGHTNING_NOTICES + OUR_WARNINGS


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
