"""Writes the 0.1.0 fixtures with the pre-rename code (run from the 0.1.0 checkout)."""
import shutil
import sys
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from sparsity import CubicSLScheduler, DataNormSparsifier, TrainingAwareDataSparsity, save_sparse, sparsify_state_dict
from tests.lightning_models import TinyModule, loader

warnings.filterwarnings("ignore")
out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
expected = {}

# 1. a sparse checkpoint (format "blocksparse.sparse_checkpoint", version 2)
g = torch.Generator().manual_seed(0)
sd = {"embed.weight": torch.randn(32, 16, generator=g), "mlp.0.weight": torch.randn(32, 16, generator=g).to(torch.bfloat16),
      "mlp.0.bias": torch.randn(32, generator=g)}
sparse, _ = sparsify_state_dict(sd, 0.5, (1, 4), min_numel=1)
save_sparse(sparse, out / "sparse_checkpoint_v2.pt", block_shape=(1, 4))
expected["sparse_checkpoint"] = {k: v.clone() for k, v in sparse.items()}

# 2. a Lightning checkpoint with two training-aware callbacks (unnamed, and name="emb")
class Recorder(pl.Callback):
    def __init__(self, cbs): self.cbs, self.masks = cbs, []
    def on_train_epoch_end(self, trainer, pl_module):
        self.masks.append([{n: m.clone() for n, m in cb.masks.items()} for cb in self.cbs])

sched = {"init_sl": 0.0, "init_t": 0, "delta_t": 1, "total_t": 3}
ta = TrainingAwareDataSparsity(DataNormSparsifier, {"sparsity_level": 0.5}, CubicSLScheduler, sched,
                               param_filter="*mlp*")
emb = TrainingAwareDataSparsity(DataNormSparsifier, {"sparsity_level": 0.5, "sparse_block_shape": (1, 4)}, CubicSLScheduler,
                                sched, inplace=True, name="emb", param_filter="*embed*")
rec = Recorder([ta, emb])
ck = ModelCheckpoint(dirpath=out / "lt", save_top_k=-1)
t = pl.Trainer(max_epochs=2, logger=False, callbacks=[ta, emb, rec, ck], enable_progress_bar=False,
               enable_model_summary=False, accelerator="cpu", devices=1)
t.fit(TinyModule(), loader())
(ckpt,) = (out / "lt").glob("epoch=1-*.ckpt")
shutil.move(ckpt, out / "lightning_two_callbacks.ckpt"); shutil.rmtree(out / "lt")
expected["lightning_masks"] = rec.masks[-1]  # [unnamed, emb] masks after epoch 1
print({k: list(v) for k, v in torch.load(out / "lightning_two_callbacks.ckpt", weights_only=True)["callbacks"].items()})
torch.save(expected, out / "expected.pt")
