"""In-place TrainingAwareDataSparsity makes its per-epoch ``.sparsified`` copy when read
(issue 23): the lazy copy equals the eager one bit for bit whenever it is read (at the epoch
end, in the middle of the next epoch after the live weights changed, after fit, after a
resume), and is not made at all when nobody reads it."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from blocksparsity import CubicSLScheduler, DataNormSparsifier, TrainingAwareDataSparsity
from tests.helpers.lightning_models import HALF_BLOCKS_ARGS, TinyModule, fit_with_checkpoints, loader, ramp_ends_late, trainer

RAMP = {"init_sl": 0.0, "init_t": 0, "delta_t": 1, "total_t": 3}


EAGER, LAZY = False, True  # eager: the copy made at every epoch end, as before issue 23


def _make(lazy: bool = LAZY) -> TrainingAwareDataSparsity:
    cb = TrainingAwareDataSparsity(DataNormSparsifier, HALF_BLOCKS_ARGS, CubicSLScheduler, RAMP, inplace=True,
                                   print_table=False)
    cb._lazy_copy = lazy  # one class: the same state key in checkpoints
    return cb


def _bits(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer, bit for bit (-0.0 and 0.0 differ), with its layout."""
    out = {}
    for name, t in (*module.named_parameters(), *module.named_buffers()):
        t = t.detach()
        out[name] = (t.clone().view(torch.int32) if t.dtype == torch.float32 else t.clone(), t.stride(), t.requires_grad)
    return out


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name][0], b[name][0]) and a[name][1:] == b[name][1:], name


class Reader(pl.Callback):
    """After the training-aware callback: reads ``.sparsified`` at the chosen moments."""

    def __init__(self, cb, when: str):
        self.cb, self.when, self.seen = cb, when, []

    def on_train_epoch_end(self, trainer, pl_module):
        if self.when == "epoch end":
            self.seen.append(_bits(self.cb.sparsified))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.when == "mid-epoch" and trainer.current_epoch >= 1 and batch_idx == 3:  # weights changed since
            self.seen.append(_bits(self.cb.sparsified))


def _run(lazy, when):
    cb = _make(lazy)
    reader = Reader(cb, when)
    module = TinyModule(momentum=0.9)
    trainer(max_epochs=4, callbacks=[cb, reader]).fit(module, loader())
    return cb, reader, module


@pytest.mark.parametrize("when", ["epoch end", "mid-epoch", "after fit only"])
def test_lazy_copy_equals_the_eager_copy(when):
    lazy, lazy_reader, module = _run(LAZY, when)
    eager, eager_reader, _ = _run(EAGER, when)
    assert len(lazy_reader.seen) == len(eager_reader.seen) == {"epoch end": 4, "mid-epoch": 3, "after fit only": 0}[when]
    for a, b in zip(lazy_reader.seen, eager_reader.seen, strict=True):
        _assert_same(a, b)
    assert lazy._live_snapshot.pending == (when != "epoch end")  # taken at the last epoch end, read or not
    copy = lazy.sparsified
    assert copy is lazy.sparsified and not lazy._live_snapshot.pending  # made once, on the first read
    _assert_same(_bits(copy), _bits(eager.sparsified))
    assert not copy.training and copy is not module.model
    assert all(p.data_ptr() != q.data_ptr() for p, q in zip(copy.parameters(), module.model.parameters(), strict=True))
    with torch.no_grad():  # the copy is the user's: changing the live model leaves it alone
        module.model["mlp"][0].weight.add_(1.0)
    _assert_same(_bits(copy), _bits(eager.sparsified))


def test_a_read_copy_keeps_its_values_through_later_epochs():
    """Saved tensors handed to a copy are never reused for the next epoch's snapshot."""
    cb = _make()
    first = {}

    class Keep(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            if trainer.current_epoch == 0:
                first["copy"] = cb.sparsified
                first["bits"] = _bits(cb.sparsified)

    trainer(max_epochs=4, callbacks=[cb, Keep()]).fit(TinyModule(momentum=0.9), loader())
    _assert_same(_bits(first["copy"]), first["bits"])
    assert cb.sparsified is not first["copy"]


@ramp_ends_late  # the resumed fit makes the last 2 of the 4 updates
def test_lazy_copy_after_resume_equals_the_eager_copy(tmp_path):
    (uninterrupted,), _, ckpt = fit_with_checkpoints(lambda: [_make(EAGER)], tmp_path)
    copies = []
    for lazy in (LAZY, EAGER):
        cb = _make(lazy)
        trainer(max_epochs=4, callbacks=[cb]).fit(TinyModule(seed=5, momentum=0.9), loader(), ckpt_path=str(ckpt))
        copies.append(_bits(cb.sparsified))
    _assert_same(copies[0], copies[1])
    _assert_same(copies[0], _bits(uninterrupted.sparsified))


def test_multipliers_follow_new_masks_and_replaced_parameters():
    """In place, every mask update writes the new masks into the last update's multipliers
    (same parameters, shapes, dtypes); a parameter cast or replaced gets new ones; the
    gradients are masked by the current masks."""
    from blocksparsity import CubicSLScheduler, DataNormSparsifier, TrainingAwareDataSparsity

    cb = TrainingAwareDataSparsity(DataNormSparsifier, {"sparsity_level": 0.5}, CubicSLScheduler, inplace=True)
    p = torch.nn.Parameter(torch.randn(4, 8))
    cb._params = {"w": p}
    for seed in range(3):
        cb._masks = {"w": torch.rand(4, 8, generator=torch.Generator().manual_seed(seed)) > 0.5}
        before = cb._multipliers[0] if cb._multipliers else None
        cb._remake_multipliers()
        assert cb._multipliers[0].dtype == torch.float32 and torch.equal(cb._multipliers[0], cb._masks["w"].float())
        assert before is None or cb._multipliers[0] is before  # refilled, not remade
        p.grad = torch.ones(4, 8)
        cb.on_after_backward(None, None)
        assert torch.equal(p.grad, cb._masks["w"].float())
    p.data = p.data.to(torch.bfloat16)
    cb._remake_multipliers()
    assert cb._multipliers[0].dtype == torch.bfloat16 and torch.equal(cb._multipliers[0].bool(), cb._masks["w"])
    q = torch.nn.Parameter(torch.randn(4, 8))
    cb._params = {"w": q}
    cb._remake_multipliers()
    assert cb._masked == [q]
    q.grad = None
    cb.on_after_backward(None, None)  # no gradient: nothing to mask, no error
