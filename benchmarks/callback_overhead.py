"""The callbacks' overhead per epoch on the demo model: time inside the callback over the
time of the epoch, for TrainingAwareDataSparsity (copy mode and in-place gradual pruning)
and PostTrainingDataSparsity (its one call at the end of fit, against one epoch).

    python -m benchmarks.callback_overhead [--epochs 3] [--samples 30000]
"""

from __future__ import annotations

import argparse
import time
import warnings

import lightning.pytorch as pl
from torch.utils.data import DataLoader

from blocksparsity import CubicSLScheduler, DataNormSparsifier, PostTrainingDataSparsity, TrainingAwareDataSparsity
from blocksparsity.demo import DemoModule, synthetic_data

TWO_FOUR = {"sparsity_level": 1.0, "sparse_block_shape": (1, 4), "zeros_per_block": 2}


class EpochTimer(pl.Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        self.seconds = getattr(self, "seconds", 0.0) + time.perf_counter() - self.start


def overhead(make_callback, epochs: int, samples: int) -> dict[str, float]:
    """Fraction of epoch time spent in the callback (the timer's epoch end comes after ours)."""
    train, _ = synthetic_data(samples)
    callback, timer = make_callback(epochs), EpochTimer()
    pl.seed_everything(0, verbose=False)
    trainer = pl.Trainer(max_epochs=epochs, callbacks=[callback, timer], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(DemoModule(), DataLoader(train, batch_size=256, shuffle=True))
    return {"callback_s": callback.seconds_in_callback, "epochs_s": timer.seconds,
            "overhead": callback.seconds_in_callback / timer.seconds, "by_hook": dict(callback.seconds_by_hook)}


def _eager_copy(callback: TrainingAwareDataSparsity) -> TrainingAwareDataSparsity:
    """In place, the per-epoch copy made at every epoch end (as before issue 23), not when read."""
    callback._lazy_copy = False
    return callback


CALLBACKS = {
    "TrainingAwareDataSparsity (copy)": lambda epochs: TrainingAwareDataSparsity(
        DataNormSparsifier, TWO_FOUR, CubicSLScheduler, {"delta_t": 1, "total_t": max(1, epochs - 1)}, print_table=False),
    "TrainingAwareDataSparsity (inplace, masks every 20 steps)": lambda epochs: TrainingAwareDataSparsity(
        DataNormSparsifier, TWO_FOUR, CubicSLScheduler, {"delta_t": 1, "total_t": max(1, 5 * epochs - 1)}, inplace=True,
        schedule_interval="step", every_n_steps=20, print_table=False),
    "TrainingAwareDataSparsity (inplace, masks every 20 steps, eager copy: before)": lambda epochs: _eager_copy(
        TrainingAwareDataSparsity(DataNormSparsifier, TWO_FOUR, CubicSLScheduler,
                                  {"delta_t": 1, "total_t": max(1, 5 * epochs - 1)}, inplace=True,
                                  schedule_interval="step", every_n_steps=20, print_table=False)),
    "TrainingAwareDataSparsity (inplace, masks every 100 steps)": lambda epochs: TrainingAwareDataSparsity(
        DataNormSparsifier, TWO_FOUR, CubicSLScheduler, {"delta_t": 1, "total_t": max(1, epochs - 1)}, inplace=True,
        schedule_interval="step", every_n_steps=100, print_table=False),
    "PostTrainingDataSparsity (once)": lambda epochs: PostTrainingDataSparsity(
        DataNormSparsifier, TWO_FOUR, print_table=False),
}


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=30000)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    results = {name: overhead(make, args.epochs, args.samples) for name, make in CALLBACKS.items()}
    print(f"| callback | time in callback | epoch time ({args.epochs} epochs) | overhead | by hook (ms) |")
    print("|---|---:|---:|---:|---|")
    for name, r in results.items():
        hooks = ", ".join(f"{h.removeprefix('on_')} {s * 1e3:.0f}" for h, s in sorted(r["by_hook"].items(), key=lambda i: -i[1]))
        print(f"| {name} | {r['callback_s'] * 1e3:.0f} ms | {r['epochs_s']:.2f} s | {r['overhead']:.2%} | {hooks} |")
    return results


if __name__ == "__main__":
    main()
