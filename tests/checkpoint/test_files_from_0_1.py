"""Files written by 0.1.0 (the package was imported as ``sparsity`` and ``kernels`` then) still
load: a sparse checkpoint, a Lightning checkpoint holding two training-aware callbacks' state,
and a distributed checkpoint whose masks sit under ``_blocksparse_masks/``.

The fixtures in ``tests/data/v0_1_0/`` were written by the code at commit 1ef1d13, before the
rename (``make_fixtures.py`` there, and ``tests/callbacks/fsdp_worker.py`` of that commit for the
distributed checkpoint); ``expected.pt`` holds what that code computed. New files keep the
0.1.0 on-disk names, so 0.1.0 can read them too: the format header, the sharded-mask prefix and
the callbacks' state keys are identifiers of the file format, not of the import path.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from blocksparsity import CubicSLScheduler, DataNormSparsifier, TrainingAwareDataSparsity, load_sparse, save_sparse
from blocksparsity.callbacks.training_aware import SHARDED_MASKS_PREFIX, _load_sharded_masks
from blocksparsity.checkpoint._format import FORMAT_NAME
from tests.helpers.lightning_models import TinyModule, loader, ramp_ends_late

DATA = Path(__file__).resolve().parents[1] / "data" / "v0_1_0"
SCHEDULE = {"init_sl": 0.0, "init_t": 0, "delta_t": 1, "total_t": 3}


@pytest.fixture(scope="module")
def expected() -> dict:
    return torch.load(DATA / "expected.pt", weights_only=True)


def test_the_on_disk_names_are_those_of_0_1_0():
    assert FORMAT_NAME == "blocksparse.sparse_checkpoint"
    assert SHARDED_MASKS_PREFIX == "_blocksparse_masks/"
    assert TrainingAwareDataSparsity(DataNormSparsifier, {}, CubicSLScheduler, SCHEDULE).state_key == "TrainingAwareDataSparsity"


def test_a_sparse_checkpoint_of_0_1_0_loads(expected, tmp_path):
    loaded = load_sparse(DATA / "sparse_checkpoint_v2.pt")
    want = expected["sparse_checkpoint"]
    assert loaded.keys() == want.keys()
    for name, tensor in want.items():
        assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], tensor), name
    # and a file written today is the same format: same header, same bytes of data
    save_sparse(loaded, tmp_path / "again.pt")
    header = torch.load(tmp_path / "again.pt", weights_only=True)["format"]
    assert header == FORMAT_NAME


class _MasksAtTrainStart(pl.Callback):
    def __init__(self, callbacks: list[TrainingAwareDataSparsity]):
        self.callbacks, self.masks = callbacks, None

    def on_train_start(self, trainer, pl_module):
        self.masks = [{n: m.clone() for n, m in cb.masks.items()} for cb in self.callbacks]


@ramp_ends_late  # the 0.1.0 run's ramp (total_t=3), kept as it was
def test_a_lightning_checkpoint_of_0_1_0_resumes_both_callbacks(expected, tmp_path):
    """An unnamed callback and one with name="emb" each find their own state (by state key)."""
    ta = TrainingAwareDataSparsity(DataNormSparsifier, {"sparsity_level": 0.5}, CubicSLScheduler, SCHEDULE,
                                   param_filter="*mlp*", print_table=False)
    emb = TrainingAwareDataSparsity(DataNormSparsifier, {"sparsity_level": 0.5, "sparse_block_shape": (1, 4)},
                                    CubicSLScheduler, SCHEDULE, inplace=True, name="emb", param_filter="*embed*",
                                    print_table=False)
    seen = _MasksAtTrainStart([ta, emb])
    trainer = pl.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[ta, emb, seen], accelerator="cpu", devices=1,
                         default_root_dir=tmp_path)
    trainer.fit(TinyModule(seed=7), loader(), ckpt_path=DATA / "lightning_two_callbacks.ckpt")
    for restored, saved in zip(seen.masks, expected["lightning_masks"], strict=True):
        assert restored.keys() == saved.keys() and restored
        assert all(torch.equal(restored[n], saved[n]) for n in saved)
    assert ta.epochs_done == 3 and emb.epochs_done == 3  # resumed at 2, then one more epoch


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning")
def test_sharded_masks_of_0_1_0_load_from_a_distributed_checkpoint(expected):
    """The masks a 2-rank FSDP2 run saved in the model's sharded state dict, read back through
    the prefix its callback state names (whole tensors here, one process)."""
    checkpoint = DATA / "distributed.ckpt"
    meta = torch.load(checkpoint / "meta.pt", weights_only=True)
    state = meta["callbacks"]["TrainingAwareDataSparsity"]
    assert state["sharded_masks"] == "_blocksparse_masks/" and state["sparsifier"]["state"] == {}
    want = expected["distributed_masks"]
    params = {name: torch.nn.Parameter(torch.empty(mask.shape)) for name, mask in want.items()}
    loaded = _load_sharded_masks(str(checkpoint), state["sharded_masks"], params)
    assert loaded.keys() == want.keys()
    assert all(torch.equal(loaded[n]["mask"], want[n]) for n in want)
