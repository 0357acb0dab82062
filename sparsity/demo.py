"""The main job: train a small recommender-style model (an embedding table and an MLP) on
synthetic data with both sparsity callbacks, then compare dense and sparsified models.

    python -m blocksparsity.demo [--epochs 4] [--samples 20000]

Runs on the CPU, or on CUDA when present (where the masks come from the Triton kernels).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from blocksparsity import CubicSLScheduler, DataNormSparsifier, PostTrainingDataSparsity, TrainingAwareDataSparsity

N_ITEMS, EMBED_DIM, N_FEATURES = 1000, 32, 16


class Recommender(nn.Module):
    def __init__(self):
        super().__init__()
        self.items = nn.Embedding(N_ITEMS, EMBED_DIM)
        self.mlp = nn.Sequential(nn.Linear(EMBED_DIM + N_FEATURES, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                                 nn.Linear(128, 1))

    def forward(self, item: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat([self.items(item), features], dim=-1)).squeeze(-1)


class DemoModule(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.model = Recommender()

    def training_step(self, batch, batch_idx):
        item, features, y = batch
        loss = nn.functional.mse_loss(self.model(item, features), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        item, features, y = batch
        self.log("val_loss", nn.functional.mse_loss(self.model(item, features), y), prog_bar=True)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=3e-3)


def synthetic_data(samples: int, seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    """A per-item effect plus a smooth function of the features, plus noise."""
    g = torch.Generator().manual_seed(seed)
    item_effect = torch.randn(N_ITEMS, generator=g)
    w1, w2 = torch.randn(N_FEATURES, 8, generator=g) / N_FEATURES**0.5, torch.randn(8, generator=g)
    item = torch.randint(0, N_ITEMS, (samples,), generator=g)
    features = torch.randn(samples, N_FEATURES, generator=g)
    y = item_effect[item] + torch.tanh(features @ w1) @ w2 + 0.1 * torch.randn(samples, generator=g)
    split = int(0.9 * samples)
    return (TensorDataset(item[:split], features[:split], y[:split]),
            TensorDataset(item[split:], features[split:], y[split:]))


@torch.no_grad()
def validation_loss(model: nn.Module, data: TensorDataset, device: torch.device) -> float:
    model = model.to(device).eval()
    item, features, y = (t.to(device) for t in data.tensors)
    return nn.functional.mse_loss(model(item, features), y).item()


def _fit(callbacks: list[pl.Callback], train: TensorDataset, val: TensorDataset, epochs: int, progress: bool
         ) -> tuple[DemoModule, float]:
    pl.seed_everything(0, verbose=False)
    module = DemoModule()
    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="auto", devices=1, callbacks=callbacks, logger=False,
        enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=progress,
    )
    start = time.perf_counter()
    trainer.fit(module, DataLoader(train, batch_size=256, shuffle=True), DataLoader(val, batch_size=1024))
    return module, time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--samples", type=int, default=30000)
    parser.add_argument("--no-progress-bar", action="store_true", help="no progress bar (there is none when stdout "
                        "is not a terminal: in a log each refresh would be a line of its own)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", module="lightning")
    train, val = synthetic_data(args.samples)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ramp = {"init_sl": 0.0, "init_t": 0, "delta_t": 1, "total_t": max(1, args.epochs - 1)}
    two_four = {"sparsity_level": 1.0, "sparse_block_shape": (1, 4), "zeros_per_block": 2}

    print("1) dense training; the callbacks sparsify copies (the model is untouched)")
    post = PostTrainingDataSparsity(
        DataNormSparsifier, {"sparsity_level": 0.5, "sparse_block_shape": (1, 4), "zeros_per_block": 4},
        param_filter="*.weight", sparsified_device="cpu",
    )
    aware = TrainingAwareDataSparsity(DataNormSparsifier, two_four, CubicSLScheduler, ramp,
                                      param_filter="*.weight", sparsified_device="cpu")
    progress = not args.no_progress_bar and sys.stdout.isatty()  # Lightning's bar writes to stdout
    dense, fit_seconds = _fit([post, aware], train, val, args.epochs, progress)

    print("\n2) gradual magnitude pruning: the live model is kept 2:4-sparse as the level ramps up")
    updates_per_epoch = max(1, len(train) // 256 // 20)  # a mask update every 20 optimizer steps
    step_ramp = {**ramp, "total_t": updates_per_epoch * max(1, args.epochs - 1)}
    gradual = TrainingAwareDataSparsity(DataNormSparsifier, two_four, CubicSLScheduler, step_ramp, inplace=True,
                                        schedule_interval="step", every_n_steps=20, param_filter="*.weight")
    pruned, gradual_seconds = _fit([gradual], train, val, args.epochs, progress)

    results = {
        "dense": validation_loss(dense.model, val, device),
        "post-training copy, 50% of (1,4) blocks": validation_loss(post.sparsified, val, device),
        "training-aware copy, 2:4 (cubic ramp)": validation_loss(aware.sparsified, val, device),
        "gradual pruning in training, 2:4": validation_loss(pruned.model, val, device),
    }
    print("\nValidation loss (MSE); the sparsified models have 50% zeros in every weight")
    for name, loss in results.items():
        print(f"  {name:<42} {loss:.4f}")
    callbacks = (post, aware, gradual)
    mask_seconds = sum(h[k] for cb in callbacks for h in cb.history for k in h if k.endswith("mask_seconds"))
    callback_seconds = sum(cb.seconds_in_callback for cb in callbacks)
    total = fit_seconds + gradual_seconds
    print(f"\nMask computation: {mask_seconds * 1e3:.1f} ms in total on {device.type}; time in the callbacks "
          f"{callback_seconds:.2f} s of {total:.1f} s of training ({callback_seconds / total:.1%})")
    return results


if __name__ == "__main__":
    main()
