"""The torch backend's speed paths against the plain expressions they replace, bit for bit:
the mask applied as a bitwise AND on the data's bits (``_torch.apply_mask.multiply``), tie
indices found a word at a time, float16/bfloat16 laid out by position without a float32 copy."""

from __future__ import annotations

import pytest
import torch

from blocksparsity import kernels
from blocksparsity.kernels import naive
from blocksparsity.kernels._torch import _config as torch_config
from blocksparsity.kernels._torch import _policy
from blocksparsity.kernels._torch.apply_mask import multiply
from blocksparsity.kernels._torch.select import indices_equal

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("chunk", [1, 7, 1 << 18])
@pytest.mark.parametrize("layout", ["contiguous", "transposed", "sliced"])
def test_multiply_by_bool_mask_equals_the_product_bit_for_bit(dtype, chunk, layout, monkeypatch):
    """``out = x * mask`` by bits: kept elements unchanged, zeroed ones +0 or -0 by x's sign
    (the product's), subnormals and zeros of both signs included; out of place and in place."""
    monkeypatch.setattr(torch_config, "CHUNK_ELEMENTS", chunk)
    monkeypatch.setattr(torch_config, "SMALL_MAX_ELEMENTS", 0)
    g = torch.Generator().manual_seed(int(chunk) + len(layout))
    x = torch.randn(13, 22, generator=g).to(dtype)
    x[0, :4] = torch.tensor([0.0, -0.0, torch.finfo(dtype).tiny / 4, -torch.finfo(dtype).max], dtype=dtype)
    mask = torch.rand(13, 22, generator=g) > 0.5
    if layout == "transposed":
        x, mask = x.t(), mask.t()
    elif layout == "sliced":
        x, mask = x[1:, 3:], mask[1:, 3:]
    expected = x * mask
    out = torch.empty_like(x)
    multiply(x, mask, out)
    assert torch.equal(_bits(out), _bits(expected))
    inplace = x.clone()
    multiply(inplace, mask, inplace)
    assert torch.equal(_bits(inplace), _bits(expected))


@pytest.mark.parametrize("dtype", DTYPES)
def test_apply_mask_and_sparsify_keep_the_sign_of_zeroed_elements(dtype):
    x = -torch.rand(6, 8, generator=torch.Generator().manual_seed(1)).to(dtype) - 1
    mask = torch.zeros(6, 8, dtype=torch.bool)
    mask[:, ::2] = True
    out = kernels.apply_mask(x, mask, backend="torch")
    assert torch.equal(_bits(out), _bits(x * mask))
    if dtype != torch.float64:
        y, m = kernels.sparsify(x, 0.5, (1, 4), 2, backend="torch")
        assert torch.equal(_bits(y), _bits(x * m))


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 64, 1001])
@pytest.mark.parametrize("share", [0.0, 0.01, 0.5, 1.0])
def test_indices_equal_is_nonzero_of_the_compare(n, share):
    """The tie indices found 8 compares at a time (``select.indices_equal``) against the plain
    ``nonzero``: lengths that do and do not fill a word, no match, every value matching."""
    values = (torch.rand(n, generator=torch.Generator().manual_seed(n)) < share).to(torch.int32) * 5
    target = torch.tensor(5, dtype=torch.int32)
    assert torch.equal(indices_equal(values, target), (values == target).nonzero().squeeze(1))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(7, 13), (9, 30), (64, 64)])
@pytest.mark.parametrize("block_shape, zpb", [((1, 4), 2), ((2, 3), 4), ((4, 4), 5), ((1, 17), 9)])
def test_low_precision_ranks_cast_by_position_equal_naive(dtype, shape, block_shape, zpb, monkeypatch):
    """float16/bfloat16 chunks laid out by position straight from x (no float32 copy of the
    chunk) give naive's masks: small chunks, partial edge blocks, tie-heavy data."""
    monkeypatch.setattr(torch_config, "CHUNK_ELEMENTS", 16)
    monkeypatch.setattr(torch_config, "SMALL_MAX_ELEMENTS", 0)
    g = torch.Generator().manual_seed(shape[0] * 100 + zpb)
    for x in (torch.randn(shape, generator=g).to(dtype), torch.randint(-2, 3, shape, generator=g).to(dtype)):
        for norm in ("L1", "L2"):
            for level in (0.35, 1.0):
                expected = naive.block_mask(x.float(), level, block_shape, zpb, norm)
                assert torch.equal(kernels.block_mask(x, level, block_shape, zpb, norm, backend="torch"), expected)


@pytest.mark.parametrize("layout", ["contiguous", "transposed", "sliced"])
@pytest.mark.parametrize("block_shape", [(1, 4), (2, 2), (2, 3), (4, 4)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_abs_by_position_on_the_host_equals_the_torch_planes(layout, block_shape, dtype):
    """The host path (one numpy ``abs`` through the transposed view, float32 only) writes the
    same bits as the torch op per plane, zeros of both signs, subnormals and NaN included."""
    from blocksparsity.kernels._torch._blocks import abs_by_position, blocked

    g = torch.Generator().manual_seed(len(layout) + block_shape[1])
    x = torch.randn(24, 36, generator=g)
    x[0, :4] = torch.tensor([-0.0, 0.0, -torch.finfo(torch.float32).tiny / 8, float("nan")])
    x = x.to(dtype)
    if layout == "transposed":
        x = x.t()
    elif layout == "sliced":
        x = x[2:, 4:]
    rows, cols = block_shape
    blocks = blocked(x, x.shape[0] // rows, x.shape[1] // cols, rows, cols, 0.0)
    host, planes = abs_by_position(blocks, host_reads=True), abs_by_position(blocks)
    assert torch.equal(host.view(torch.int32), planes.view(torch.int32))
    plain = torch.stack([p.float().abs() for p in blocks.permute(1, 3, 0, 2).reshape(-1, *host.shape[1:])])
    assert torch.equal(host.view(torch.int32), plain.view(torch.int32))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", [(7, 13), (9, 30), (33, 40)])
@pytest.mark.parametrize("block_shape, zpb", [((1, 4), 2), ((2, 3), 4), ((4, 4), 5), ((1, 17), 9)])
@pytest.mark.parametrize("host_reads", [True, False])
def test_every_block_pruned_needs_no_scores_and_still_flags_bad_data(dtype, shape, block_shape, zpb, host_reads,
                                                                     monkeypatch):
    """Level 1 with part of each block zeroed (2:4): the mask is the in-block keep map alone,
    computed without block scores (``block_mask.every_block_pruned``). Naive's masks on random
    and tie-heavy data, small chunks and partial edge blocks; a NaN or inf in any chunk,
    the last (padded) one included, sets the flag (read on the host or not); finite data
    whose x*x overflows does not."""
    monkeypatch.setattr(torch_config, "CHUNK_ELEMENTS", 32)
    monkeypatch.setattr(torch_config, "SMALL_MAX_ELEMENTS", 0)
    g = torch.Generator().manual_seed(shape[1] * 10 + zpb)
    with _policy.forced(_policy.HOST_READS if host_reads else _policy.SYNC_FREE):
        for x in (torch.randn(shape, generator=g).to(dtype), torch.randint(-2, 3, shape, generator=g).to(dtype)):
            for norm in ("L1", "L2"):
                expected = naive.block_mask(x.float(), 1.0, block_shape, zpb, norm)
                mask, flag = kernels.block_mask_unchecked(x, 1.0, block_shape, zpb, norm, backend="torch")
                assert torch.equal(mask, expected)
                assert not flag
        big = torch.full(shape, torch.finfo(dtype).max / 2, dtype=dtype)  # x*x overflows; x is finite
        assert not kernels.block_mask_unchecked(big, 1.0, block_shape, zpb, "L2", backend="torch")[1]
        for bad in (float("nan"), float("inf"), float("-inf")):
            for row, col in ((0, 0), (shape[0] // 2, 1), (shape[0] - 1, shape[1] - 1)):
                x = torch.randn(shape, generator=g).to(dtype)
                x[row, col] = bad
                assert kernels.block_mask_unchecked(x, 1.0, block_shape, zpb, backend="torch")[1], (bad, row, col)
                with pytest.raises(ValueError, match="NaN or infinite"):
                    kernels.sparsify(x, 1.0, block_shape, zpb, backend="torch")
