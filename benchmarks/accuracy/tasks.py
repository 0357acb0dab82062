"""The three tasks: an MLP and a small CNN on digits, a character-level language model on
stdlib source. Each builds a seeded LightningModule (the network in ``.model``, as the
callbacks expect), a seeded training loader and the held-out evaluation.

Every weight matrix, conv kernel and embedding table (``ndim >= 2``) is pruned; biases stay
dense. Shapes are chosen so that every pruned tensor's rows (its 2-D view ``(shape[0], rest)``)
are a whole number of (1, 4) blocks: the element sparsity then equals the block level and
every row can be 2:4.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset

from benchmarks.accuracy import data

LR = 3e-3
DIGITS_BATCH = 64
LM_CONTEXT, LM_EMBED, LM_HIDDEN, LM_BATCH = 8, 32, 256, 128


def pruned(name: str, p: torch.Tensor) -> bool:
    """The ``param_filter`` given to every method: weight matrices, conv kernels and
    embedding tables; biases (1-D) stay dense."""
    return p.ndim >= 2


class Module(pl.LightningModule):
    """A classifier (or next-byte predictor) trained with Adam and cross entropy."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.model(x), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=LR)


class CharLM(nn.Module):
    """Bengio-style MLP language model: the embeddings of the last ``LM_CONTEXT`` bytes, one
    hidden layer, logits over the vocabulary."""

    def __init__(self, vocab: int):
        super().__init__()
        self.embedding = nn.Embedding(vocab, LM_EMBED)
        self.hidden = nn.Linear(LM_CONTEXT * LM_EMBED, LM_HIDDEN)
        self.out = nn.Linear(LM_HIDDEN, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(self.embedding(ids).flatten(1))))


def _loader(dataset: TensorDataset, batch: int, seed: int, num_samples: int | None = None) -> DataLoader:
    """Whole batches indexed at once (``dataset[list]``): no per-sample collation."""
    sampler = RandomSampler(dataset, num_samples=num_samples, generator=torch.Generator().manual_seed(seed))
    return DataLoader(dataset, batch_size=None, sampler=BatchSampler(sampler, batch, drop_last=False))


@dataclass(frozen=True)
class Task:
    name: str
    metric: str  # "accuracy" (%, higher is better) or "loss" (nats per byte, lower is better)
    epochs: int
    description: str
    make_module: Callable[[], Module]
    make_loader: Callable[[int], DataLoader]
    evaluate: Callable[[nn.Module], float]

    @property
    def higher_is_better(self) -> bool:
        return self.metric == "accuracy"


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return 100.0 * (model(x).argmax(1) == y).float().mean().item()


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))


def _cnn() -> nn.Module:
    # 1x8x8 -> 16x9x9 -> 16x4x4 -> 32x4x4 -> 32x2x2 -> 10; kernels (16, 1*4*4) and (32, 16*3*3): rows of 16 and 144
    return nn.Sequential(nn.Conv2d(1, 16, 4, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(128, 10))


def tasks(quick: bool) -> list[Task]:
    """The tasks with their epochs (``quick``: fewer epochs, a smaller text epoch)."""
    digits = data.digits()
    text = data.text()
    train_digits = TensorDataset(digits.x_train, digits.y_train)
    n_digits = f"load_digits: {len(digits.y_train)} train / {len(digits.y_test)} test images, stratified, random_state=0"
    windows = text.train.unfold(0, LM_CONTEXT + 1, 1)
    held = text.held_out.unfold(0, LM_CONTEXT + 1, 1)
    lm_dataset = TensorDataset(windows[:, :-1], windows[:, -1])
    lm_batches = 8 if quick else 32  # batches per epoch (a random sample of the windows)

    def lm_loss(model: nn.Module) -> float:
        model.eval()
        with torch.no_grad():
            total = sum(nn.functional.cross_entropy(model(chunk[:, :-1]), chunk[:, -1], reduction="sum").item()
                        for chunk in held.split(4096))
        return total / len(held)

    digit_epochs = 6 if quick else 30
    return [
        Task("digits-mlp", "accuracy", digit_epochs, f"MLP 64-128-128-10; {n_digits}", lambda: Module(_mlp()),
             lambda seed: _loader(train_digits, DIGITS_BATCH, seed),
             lambda m: _accuracy(m, digits.x_test, digits.y_test)),
        Task("digits-cnn", "accuracy", digit_epochs, f"CNN conv4x4(16)-pool-conv3x3(32)-pool-linear; {n_digits}",
             lambda: Module(_cnn()), lambda seed: _loader(train_digits, DIGITS_BATCH, seed),
             lambda m: _accuracy(m, digits.x_test, digits.y_test)),
        Task("char-lm", "loss", 4 if quick else 12,
             f"byte MLP LM (embedding {text.vocab}x{LM_EMBED}, context {LM_CONTEXT}, hidden {LM_HIDDEN}); "
             f"{lm_batches} batches of {LM_BATCH} windows per epoch; {text.description}",
             lambda: Module(CharLM(text.vocab)), lambda seed: _loader(lm_dataset, LM_BATCH, seed, lm_batches * LM_BATCH),
             lm_loss),
    ]
