"""On a CUDA GPU: the compiled Triton kernels against the torch backend (on the GPU and
on the CPU), at sizes the interpreter cannot reach. Skipped without a GPU."""

from __future__ import annotations

import pytest
import torch

from blocksparsity import kernels
from tests.helpers.devices import requires_cuda

pytestmark = [requires_cuda, pytest.mark.cuda]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("bs, zpb", [((1, 4), 4), ((1, 4), 2), ((2, 2), 1), ((4, 4), 8), ((3, 5), None), ((8, 8), 32)])
@pytest.mark.parametrize("norm", ["L1", "L2"])
def test_triton_equals_torch_on_gpu(dtype, bs, zpb, norm):
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(1031, 2053, device="cuda", generator=g).to(dtype)
    x[:100] = 0  # massive ties
    x[200:300] = x[300:400]  # repeated rows
    for level in (0.0, 0.37, 0.5, 1.0):
        expected = kernels.block_mask(x, level, bs, zpb, norm, backend="torch")
        assert torch.equal(kernels.block_mask(x, level, bs, zpb, norm, backend="triton"), expected)
        assert torch.equal(expected.cpu(), kernels.block_mask(x.cpu(), level, bs, zpb, norm, backend="torch"))
    assert torch.equal(kernels.block_norm(x, bs, norm, backend="triton"), kernels.block_norm(x, bs, norm, backend="torch"))


@pytest.mark.parametrize("inplace", [False, True])
def test_sparsify_on_gpu(inplace):
    x = torch.randn(4096, 4096, device="cuda")
    expected_y, expected_mask = kernels.sparsify(x, 0.5, (1, 4), 2, backend="torch")
    target = x.clone()
    y, mask = kernels.sparsify(target, 0.5, (1, 4), 2, inplace=inplace, backend="triton")
    assert torch.equal(y, expected_y) and torch.equal(mask, expected_mask)
    assert (y is target) == inplace


def test_auto_backend_is_triton_on_cuda():
    assert kernels.available_backends() == ["torch", "triton"]
    x = torch.randn(64, 64, device="cuda")
    assert torch.equal(kernels.block_mask(x, 0.5), kernels.block_mask(x, 0.5, backend="triton"))


def test_nonfinite_on_gpu_leaves_data_untouched():
    x = torch.randn(256, 256, device="cuda")
    x[17, 3] = float("nan")
    before = x.clone()
    with pytest.raises(ValueError, match="NaN"):
        kernels.sparsify(x, 0.5, inplace=True)
    assert torch.equal(x.nan_to_num(), before.nan_to_num())


def test_no_sync_before_the_check():
    """The mask path queues its kernels without waiting for the GPU."""
    x = torch.randn(2048, 2048, device="cuda")
    torch.cuda.set_sync_debug_mode("error")
    try:
        kernels.block_mask_unchecked(x, 0.5, (1, 4), 2, backend="triton")
    finally:
        torch.cuda.set_sync_debug_mode("default")
