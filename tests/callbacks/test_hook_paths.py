"""The per-batch and per-update paths of the in-place callback, taken without Lightning: each
masks (and counts) exactly what the general path does, bit for bit."""

from __future__ import annotations

import pytest
import torch

from blocksparsity import CubicSLScheduler, DataNormSparsifier, TrainingAwareDataSparsity, distributed
from blocksparsity.callbacks import _report
from blocksparsity.distributed import count_zeros


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().view(torch.int32)  # -0.0 and 0.0 differ here


def _inplace(interval: str = "epoch") -> tuple[TrainingAwareDataSparsity, list[torch.nn.Parameter]]:
    cb = TrainingAwareDataSparsity(DataNormSparsifier, {"sparsity_level": 0.5}, CubicSLScheduler, inplace=True,
                                   schedule_interval=interval)
    g = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(4, 8, generator=g)), torch.nn.Parameter(torch.randn(6, 4, generator=g))]
    cb._params = {"a": params[0], "b": params[1]}
    cb._masks = {name: torch.rand(p.shape, generator=g) > 0.5 for name, p in cb._params.items()}
    cb._remake_multipliers()
    return cb, params


@pytest.mark.parametrize("present", ["all", "some"])
def test_gradients_are_masked_exactly_with_every_or_some_gradient_present(present):
    cb, params = _inplace()
    grads = [torch.randn(p.shape, generator=torch.Generator().manual_seed(i)) for i, p in enumerate(params)]
    for p, g in zip(params, grads, strict=True):
        p.grad = g.clone()
    if present == "some":
        params[0].grad = None
    cb.on_after_backward(None, None)
    for i, (p, name) in enumerate(zip(params, ("a", "b"), strict=True)):
        if present == "some" and i == 0:
            assert p.grad is None
            continue
        assert torch.equal(_bits(p.grad), _bits(grads[i] * cb._masks[name].float()))  # negatives keep -0.0, as x * 0


def test_epoch_schedule_remasks_weights_after_each_batch_without_reading_the_step():
    """With schedule_interval="epoch" the batch end needs no step count: a trainer without one
    is enough, and the weights end exactly ``w * mask``."""
    cb, params = _inplace("epoch")
    before = [p.detach().clone() for p in params]
    cb.on_train_batch_end(object(), None, None, None, 0)
    for p, w, name in zip(params, before, ("a", "b"), strict=True):
        assert torch.equal(_bits(p), _bits(w * cb._masks[name].float()))


def test_gradients_of_a_copy_only_callback_are_left_alone():
    cb = TrainingAwareDataSparsity(DataNormSparsifier, {"sparsity_level": 0.5}, CubicSLScheduler)
    p = torch.nn.Parameter(torch.randn(4, 8))
    p.grad = torch.randn(4, 8)
    grad = p.grad.clone()
    cb._params = {"w": p}
    cb.on_after_backward(None, None)
    assert torch.equal(p.grad, grad)


def _torch_zeros(masks: dict[str, torch.Tensor]) -> list[int]:
    return [int((m == 0).sum()) for m in masks.values()]


def test_zero_counts_of_plain_cpu_bool_masks_come_from_the_host_and_equal_torchs():
    g = torch.Generator().manual_seed(0)
    masks = {"bool": torch.rand(37, 29, generator=g) > 0.4, "strided": (torch.rand(16, 16, generator=g) > 0.5)[::2, 1::3],
             "empty": torch.ones(0, 4, dtype=torch.bool), "none kept": torch.zeros(3, 7, dtype=torch.bool)}
    assert distributed._host_zeros(masks) == _torch_zeros(masks)
    assert count_zeros(masks) == _torch_zeros(masks)
    layers = _report.measure(masks, dict.fromkeys(masks, 0.5))
    assert [layer.zeros for layer in layers] == _torch_zeros(masks)


def test_zero_counts_of_other_masks_go_through_torch():
    masks = {"bool": torch.rand(4, 8) > 0.5, "int": torch.tensor([[0, 2], [1, 0]])}
    assert distributed._host_zeros(masks) is None
    assert [layer.zeros for layer in _report.measure(masks, dict.fromkeys(masks, 0.5))] == count_zeros(masks) == [
        int((masks["bool"] == 0).sum()), 2]
