"""The torch backend's speed paths against the plain expressions they replace, bit for bit:
the mask applied as a bitwise AND on the data's bits (``_torch.apply_mask.multiply``)."""

from __future__ import annotations

import pytest
import torch

from blocksparsity import kernels
from blocksparsity.kernels._torch import _config as torch_config
from blocksparsity.kernels._torch.apply_mask import multiply

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
