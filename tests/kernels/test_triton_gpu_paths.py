"""Triton-backend defects that only a GPU, or a tensor past 2**31 blocks, would show, caught
on the CPU (issue 20): every launch pinned to its tensor's device; counts in int64 (checked
with a cheap stand-in for 2**31 blocks: a ``reduce`` hook or tie offsets that say so); the
float64 non-finite check in float64."""

from __future__ import annotations

import contextlib
import importlib

import pytest
import torch

from blocksparsity import kernels
from blocksparsity.kernels import _torch
from blocksparsity.kernels._common import Threshold
from tests.helpers.devices import triton_devices

DEVICES = triton_devices()
pytestmark = pytest.mark.skipif(not DEVICES, reason="Triton backend unavailable (no GPU, no interpreter)")


def _triton():
    from blocksparsity.kernels import _triton

    return _triton


@pytest.mark.parametrize("device", DEVICES)
def test_every_launch_runs_inside_the_guard_of_its_tensors_device(device, monkeypatch):
    """Each kernel launch happens inside ``_device.on_device(t)`` for the tensor's device (on a
    GPU: that device made current, so the launch goes to it and to its stream)."""
    from blocksparsity.kernels._triton import _device

    # (The package's names apply_mask, block_mask, block_norm are its functions: import the modules.)
    modules = [importlib.import_module(f"blocksparsity.kernels._triton.{m}")
               for m in ("apply_mask", "block_mask", "block_norm", "select")]

    active: list[torch.device] = []
    launches: list[tuple[str, list[torch.device]]] = []
    real_guard = _device.on_device

    @contextlib.contextmanager
    def recording_guard(t):
        active.append(t.device)
        with real_guard(t):
            yield
        active.pop()

    class Launch:
        def __init__(self, kernel):
            self.kernel = kernel

        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                launches.append((self.kernel.fn.__name__, list(active)))
                return self.kernel[grid](*args, **kwargs)
            return launch

    monkeypatch.setattr(_device, "on_device", recording_guard)
    patched = set()
    for module in modules:
        for name in [n for n in vars(module) if n.startswith("_") and n.endswith("_kernel")]:
            monkeypatch.setattr(module, name, Launch(getattr(module, name)))
            patched.add(name)
    assert len(patched) == 6

    x = torch.randn(8, 12, generator=torch.Generator().manual_seed(0)).to(device)
    kernels.block_norm(x, (1, 4), backend="triton")
    mask = kernels.block_mask(x, 0.5, (1, 4), 2, backend="triton")
    kernels.sparsify(x, 0.5, (2, 2), backend="triton")
    kernels.sparsify(x.clone(), 0.5, (1, 4), 2, inplace=True, backend="triton")
    kernels.apply_mask(x, mask, backend="triton")
    kernels.apply_mask(x.clone(), mask, inplace=True, backend="triton")
    t = _triton()
    scores, _ = t.block_norm(x, (1, 4), "L1")
    threshold = t.select_threshold(scores, 5)
    t.block_mask_given(x, scores, threshold, None, (1, 4), 4, "L1")
    assert {name for name, _ in launches} == patched
    unguarded = [name for name, devices in launches if not devices or devices[-1] != x.device]
    assert not unguarded, f"launched outside on_device({x.device}): {unguarded}"


def test_the_guard_makes_the_cuda_device_current(monkeypatch):
    """On CUDA data the guard is ``torch.cuda.device(t.device)`` (checked without a GPU)."""
    from blocksparsity.kernels._triton import _device

    entered = []
    monkeypatch.setattr(torch.cuda, "device", lambda d: entered.append(d) or contextlib.nullcontext())
    with _device.on_device(torch.empty(0, device="meta")):
        pass
    assert entered == []

    class FakeCuda:
        device = torch.device("cuda", 1)

    with _device.on_device(FakeCuda()):
        pass
    assert entered == [torch.device("cuda", 1)]


def _replicated(factor: int):
    """A ``reduce`` hook standing in for ``factor`` shards that each hold the same scores:
    the selection then runs over ``factor`` times as many blocks (past 2**31) for the cost of one."""
    return lambda hist: hist * factor


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("fraction", [0.1, 0.55, 0.999])
def test_selection_counts_past_2_31_blocks(device, fraction):
    """Histograms, k and the ties pruned are counted past 2**31 without wrapping: the Triton
    selection over 2**23 stand-in copies of 512 scores (4.3e9 blocks) equals the torch
    backend's (int64 throughout) and the count worked out by hand."""
    g = torch.Generator().manual_seed(3)
    scores = torch.cat([torch.rand(448, generator=g), torch.full((64,), 0.25)]).to(device)  # ties at 0.25
    factor = 1 << 23
    total = scores.numel() * factor
    k = round(fraction * total)
    assert fraction < 0.5 or k >= 2**31
    got = _triton().select_threshold(scores, k, _replicated(factor))
    expected = _torch.select_threshold(scores, k, _replicated(factor))
    assert int(got.bits) == int(expected.bits) and int(got.ties_pruned) == int(expected.ties_pruned)
    bits = scores.view(torch.int32).cpu()
    t = int(got.bits)
    below = int((bits < t).sum()) * factor
    assert (bits == t).any() and below < k <= below + int((bits == t).sum()) * factor
    assert int(got.ties_pruned) == k - below


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bs", [(1, 4), (2, 3)])
def test_tie_ranks_past_2_31(device, bs):
    """The mask's tie ranks run past 2**31 (a shard whose block rows come after 2**31 ties held
    elsewhere): the Triton mask equals the torch backend's."""
    g = torch.Generator().manual_seed(4)
    x = torch.randint(-2, 3, (12, 24), generator=g).float()
    x[:4] = 0  # many blocks tied at score 0
    x = x.to(device)
    scores, _ = _torch.block_norm(x, bs, "L1")
    nbh = scores.shape[0]
    row_ties = (2**31 - 3 + 2 * torch.arange(nbh, dtype=torch.int64)).to(device)
    threshold = Threshold(torch.zeros((), dtype=torch.int32, device=device),
                          torch.tensor(2**31 + 4, dtype=torch.int64, device=device))
    expected = _torch.block_mask_given(x, scores, threshold, row_ties, bs, bs[0] * bs[1], "L1")
    got = _triton().block_mask_given(x, scores, threshold, row_ties, bs, bs[0] * bs[1], "L1")
    assert torch.equal(got, expected)
    assert 0 < int((~got).sum()) < int((x == 0).sum())  # some ties pruned, not all


@pytest.mark.parametrize("device", DEVICES)
def test_prune_count_of_2_31_or_more_is_not_an_error(device):
    """``k >= 2**31`` is a count like any other (it overflowed the old int32 state)."""
    scores = torch.rand(64, generator=torch.Generator().manual_seed(5)).to(device)
    k = 2**31 + 1
    got = _triton().select_threshold(scores, k, _replicated(1 << 26))
    expected = _torch.select_threshold(scores, k, _replicated(1 << 26))
    assert (int(got.bits), int(got.ties_pruned)) == (int(expected.bits), int(expected.ties_pruned))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("inplace", [False, True])
def test_float64_apply_mask_takes_finite_values_beyond_float32(device, inplace):
    x = torch.tensor([[1e300, -3e300, 2.0, 1e-310], [5e200, 7.0, -1e308, 0.5]], dtype=torch.float64, device=device)
    mask = torch.tensor([[True, False, True, False], [False, True, True, True]], device=device)
    expected = x * mask
    target = x.clone()
    out = kernels.apply_mask(target, mask, inplace=inplace, backend="triton")
    assert torch.equal(out, expected) and (out is target) == inplace
    with pytest.raises(ValueError, match="NaN or infinite"):
        kernels.apply_mask(torch.tensor([1e300, float("inf")], dtype=torch.float64, device=device),
                           torch.ones(2, dtype=torch.bool, device=device), backend="triton")
