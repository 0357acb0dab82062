"""The backends' entry points for sharded data: a threshold selected with a histogram
``reduce`` hook, and masks built from a given threshold and per-block-row tie offsets.
The Triton backend (in Triton's interpreter without a GPU) against the torch backend, bit
for bit, on small tensors."""

from __future__ import annotations

import pytest
import torch

from blocksparsity import kernels
from blocksparsity.kernels._common import PRUNE_ALL_BITS, Threshold
from tests.helpers.devices import triton_devices

BACKENDS = ["torch"] + (["triton"] if triton_devices() else [])


def _impl(name: str):
    from blocksparsity.kernels import _dispatch

    return _dispatch.resolve(name, torch.device(triton_devices()[0] if name == "triton" else "cpu"))


def _data(shape, seed, ties):
    g = torch.Generator().manual_seed(seed)
    if ties:
        return torch.randint(-1, 2, shape, generator=g).float()
    return torch.randn(shape, generator=g)


CASES = [((6, 16), (1, 4), None), ((7, 9), (2, 2), 1), ((5, 12), (3, 5), 7), ((9, 8), (4, 4), 5)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape, bs, zpb", CASES)
@pytest.mark.parametrize("ties", [False, True])
def test_given_threshold_with_zero_offsets_is_block_mask(backend, shape, bs, zpb, ties):
    impl = _impl(backend)
    x = _data(shape, CASES.index((shape, bs, zpb)) * 2 + ties, ties)  # a fixed seed per case
    zpb_ = bs[0] * bs[1] if zpb is None else zpb
    scores, _ = impl.block_norm(x, bs, "L2")
    n = scores.numel()
    for k in (1, n // 3, n // 2, n - 1):
        threshold = impl.select_threshold(scores, k)
        rows = torch.zeros(scores.shape[0], dtype=torch.int32)
        got = impl.block_mask_given(x, scores, threshold, rows, bs, zpb_, "L2")
        assert torch.equal(got, kernels.block_mask(x, k / n, bs, zpb, "L2", backend="torch")), k
        assert torch.equal(impl.block_mask_given(x, scores, threshold, None, bs, zpb_, "L2"), got)


@pytest.mark.parametrize("shape, bs, zpb", CASES)
def test_triton_equals_torch_given_threshold_and_row_offsets(shape, bs, zpb):
    if "triton" not in BACKENDS:
        pytest.skip("Triton backend unavailable")
    x = _data(shape, 5, ties=True)
    zpb_ = bs[0] * bs[1] if zpb is None else zpb
    scores_t, _ = _impl("torch").block_norm(x, bs, "L1")
    scores_tr, _ = _impl("triton").block_norm(x, bs, "L1")
    assert torch.equal(scores_t, scores_tr)
    g = torch.Generator().manual_seed(1)
    for k in (2, scores_t.numel() // 2):
        th_t = _impl("torch").select_threshold(scores_t, k)
        th_tr = _impl("triton").select_threshold(scores_tr, k)
        assert int(th_t.bits) == int(th_tr.bits) and int(th_t.ties_pruned) == int(th_tr.ties_pruned)
        # Offsets as a shard would get them: any per-row count of earlier ties, even negative.
        rows = torch.randint(-3, 4, (scores_t.shape[0],), generator=g, dtype=torch.int32)
        for threshold in (th_t, Threshold(th_t.bits, th_t.ties_pruned + 2)):
            expected = _impl("torch").block_mask_given(x, scores_t, threshold, rows, bs, zpb_, "L1")
            assert torch.equal(_impl("triton").block_mask_given(x, scores_tr, threshold, rows, bs, zpb_, "L1"), expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_reduce_hook_selects_over_the_union(backend):
    """A ``reduce`` that doubles every pass's histogram selects as over the scores twice
    over (what two ranks holding the same scores would see)."""
    impl = _impl(backend)
    x = _data((8, 16), 3, ties=True)
    scores, _ = impl.block_norm(x, (1, 4), "L1")
    twice = torch.cat([scores, scores])
    for k in (1, 9, 32, 33, 63):
        passes = []

        def double(h, passes=passes):
            passes.append(1)
            return h * 2

        doubled = impl.select_threshold(scores, k, double)
        expected = impl.select_threshold(twice, k)
        assert len(passes) == 3  # every pass is reduced
        assert (int(doubled.bits), int(doubled.ties_pruned)) == (int(expected.bits), int(expected.ties_pruned))


@pytest.mark.parametrize("backend", BACKENDS)
def test_prune_none_and_all_thresholds(backend):
    impl = _impl(backend)
    x = _data((4, 8), 2, ties=False)
    scores, _ = impl.block_norm(x, (1, 4), "L1")
    none = Threshold(torch.zeros((), dtype=torch.int32), torch.zeros((), dtype=torch.int32))
    every = Threshold(torch.full((), PRUNE_ALL_BITS, dtype=torch.int32), torch.zeros((), dtype=torch.int32))
    assert impl.block_mask_given(x, scores, none, None, (1, 4), 4, "L1").all()
    assert not impl.block_mask_given(x, scores, every, None, (1, 4), 4, "L1").any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_shard_owning_no_scores_still_takes_part(backend):
    impl = _impl(backend)
    seen = []

    def reduce(h):
        seen.append(h.clone())
        return h + 1  # the other ranks' counts

    threshold = impl.select_threshold(torch.empty(0, dtype=torch.float32), 3, reduce)
    assert len(seen) == 3 and all(int(h.sum()) == 0 for h in seen)
    assert int(threshold.bits) == 2 << 20  # the third of the bins, one count each, at the first digit
