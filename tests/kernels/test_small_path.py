"""The torch backend's small-tensor path (``_torch.small``) against the reference ``naive`` and
against the chunked path (``SMALL_MAX_ELEMENTS`` at 0), on edge shapes, ties, partial blocks,
scales, both policies (numpy on the CPU's host reads, torch ops sync-free), and batched."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from blocksparsity import kernels
from blocksparsity.kernels import naive
from blocksparsity.kernels._torch import _config as torch_config
from blocksparsity.kernels._torch import _policy

POLICIES = [_policy.HOST_READS, _policy.SYNC_FREE]


@st.composite
def configs(draw):
    shape = draw(st.sampled_from([(1,), (5,), (1, 1), (3, 5), (4, 8), (7, 9), (16, 16), (2, 3, 5), (9, 1)]))
    block = draw(st.sampled_from([(1, 1), (1, 2), (1, 4), (2, 2), (1, 8), (2, 3), (3, 3), (4, 4), (2, 4)]))
    size = block[0] * block[1]
    zpb = draw(st.one_of(st.none(), st.integers(0, size)))
    level = draw(st.sampled_from([0.0, 0.25, 0.5, 0.7, 1.0]))
    return shape, block, zpb, level, draw(st.sampled_from(["L1", "L2"])), draw(st.integers(0, 2**31 - 1))


def _data(shape, seed, kind):
    g = torch.Generator().manual_seed(seed)
    if kind == "ties":
        return torch.randint(-2, 3, shape, generator=g).float()
    return torch.randn(shape, generator=g)


@settings(max_examples=80, deadline=None)
@given(configs(), st.sampled_from(["random", "ties"]), st.sampled_from(POLICIES),
       st.sampled_from([torch.float32, torch.float16, torch.bfloat16]), st.booleans())
def test_small_path_equals_naive_and_the_chunked_path(config, kind, policy, dtype, scaled):
    shape, bs, zpb, level, norm, seed = config
    x = _data(shape, seed, kind).to(dtype)
    w = x.shape[-1] if x.dim() == 1 else x[0].numel()
    scale = torch.rand(w, generator=torch.Generator().manual_seed(seed)) * 2 if scaled else None
    with _policy.forced(policy):
        small = kernels.block_mask(x, level, bs, zpb, norm, scale=scale, backend="torch")
        with pytest.MonkeyPatch.context() as m:
            m.setattr(torch_config, "SMALL_MAX_ELEMENTS", 0)
            chunked = kernels.block_mask(x, level, bs, zpb, norm, scale=scale, backend="torch")
    assert torch.equal(small, chunked)
    if kind == "ties" and not scaled:  # integer data: float32 sums are exact, the reference agrees
        assert torch.equal(small, naive.block_mask(x.float(), level, bs, zpb, norm))


@pytest.mark.parametrize("policy", POLICIES)
def test_batched_small_path_equals_one_by_one(policy):
    g = torch.Generator().manual_seed(5)
    xs = [torch.randint(-3, 4, shape, generator=g).float() for shape in [(8, 8), (5, 7), (1, 3), (12, 4), (9, 9)]]
    levels = [0.5, 1.0, 0.0, 0.3, 0.8]
    with _policy.forced(policy):
        masks = kernels.foreach_block_mask(xs, levels, (2, 2), 3)
        for x, level, m in zip(xs, levels, masks, strict=True):
            assert torch.equal(m, naive.block_mask(x, level, (2, 2), 3))


def test_masks_do_not_share_memory_and_data_is_untouched():
    xs = [torch.randn(8, 8) for _ in range(3)]
    before = [x.clone() for x in xs]
    masks = kernels.foreach_block_mask(xs, 0.5, (1, 4), 2, scales=torch.full((8,), 2.0))
    assert all(torch.equal(a, b) for a, b in zip(xs, before, strict=True))
    assert len({m.untyped_storage().data_ptr() for m in masks}) == 3
    assert all(m.untyped_storage().nbytes() == m.numel() for m in masks)


@pytest.mark.parametrize("policy", POLICIES)
def test_overflowing_sums_of_finite_data_are_not_flagged(policy):
    x = torch.full((4, 8), 3e38)
    x[1, 2] = float("nan")
    with _policy.forced(policy):
        _, flags = kernels.foreach_block_mask_unchecked([torch.full((4, 8), 3e38), x], 0.5, (1, 4), 2, "L2")
    assert [bool(f) for f in flags] == [False, True]


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("zeros_per_block", [4, 2])
def test_runs_of_same_shaped_tensors_with_and_without_ties_at_the_threshold(policy, zeros_per_block):
    # Runs of tensors with one size and level are selected together (one partition per run on
    # the CPU): in each run some tensors have ties straddling their k-th score and some do not;
    # a run at level 0 and a run of another size sit between them, and the data is not touched.
    g = torch.Generator().manual_seed(11)
    tied = torch.zeros(6, 8)  # every score equal: the first k blocks by index are pruned
    stepped = torch.arange(48, dtype=torch.float32).reshape(6, 8) % 3  # three score values, many ties
    distinct = torch.randn(6, 8, generator=g)
    other_size = torch.randn(5, 12, generator=g)
    xs = [tied, distinct, stepped, distinct.clone(), tied.clone(), other_size, distinct.neg(), stepped.flip(0)]
    levels = [0.5, 0.5, 0.5, 0.0, 0.0, 0.5, 0.75, 0.75]
    before = [x.clone() for x in xs]
    with _policy.forced(policy):
        masks = kernels.foreach_block_mask(xs, levels, (1, 4), zeros_per_block, backend="torch")
    for x, level, mask in zip(xs, levels, masks, strict=True):
        assert torch.equal(mask, naive.block_mask(x, level, (1, 4), zeros_per_block))
    assert all(torch.equal(a, b) for a, b in zip(xs, before, strict=True))
