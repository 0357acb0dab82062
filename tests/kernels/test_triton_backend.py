"""The Triton backend against the torch backend, bit for bit. Without a GPU the kernels
run on CPU tensors in Triton's interpreter (slow: the tensors here are small)."""

from __future__ import annotations

import pytest
import torch

from blocksparsity import kernels
from tests.helpers.devices import triton_devices

DEVICES = triton_devices()
pytestmark = pytest.mark.skipif(not DEVICES, reason="Triton backend unavailable (no GPU, no interpreter)")

BITS = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float64: torch.int64}


def bit_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal to the bit (distinguishes -0.0 from 0.0)."""
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(BITS[a.dtype]), b.view(BITS[b.dtype]))


def data(shape, seed, kind="random", dtype=torch.float32, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    if kind == "ties":
        x = torch.randint(-2, 3, shape, generator=g).float()
        x.reshape(x.shape[0], -1)[: max(1, x.shape[0] // 3)] = 0
    else:
        x = torch.randn(shape, generator=g)
    return x.to(dtype=dtype, device=device)


# (shape, block_shape, zeros_per_block): (1, 4) flat rows, partial edges, strided 2-D
# blocks, blocks bigger than the tensor, and block sizes over 16 (the loop path).
CASES = [
    ((16, 32), (1, 4), None),
    ((16, 32), (1, 4), 2),
    ((9, 30), (1, 4), 3),
    ((13, 11), (2, 3), 4),
    ((12, 12), (2, 2), 1),
    ((7, 9), (3, 6), 5),
    ((5, 40), (1, 17), 9),
    ((3, 5), (4, 5), 2),
    ((37,), (1, 4), 1),
    ((6, 3, 3, 3), (1, 9), 4),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape, bs, zpb", CASES)
@pytest.mark.parametrize("kind", ["random", "ties"])
def test_masks_and_norms_equal_torch_backend(device, shape, bs, zpb, kind, poisoned_outputs):
    x = data(shape, seed=CASES.index((shape, bs, zpb)) * 2 + (kind == "ties"), kind=kind, device=device)  # fixed per case
    for norm in ("L1", "L2"):
        expected_norm = kernels.block_norm(x, bs, norm, backend="torch")
        for level in (0.0, 0.35, 0.5, 1.0):
            expected = kernels.block_mask(x, level, bs, zpb, norm, backend="torch")
            for poison in (True, False):
                poisoned_outputs(poison)
                assert torch.equal(kernels.block_mask(x, level, bs, zpb, norm, backend="triton"), expected)
            assert bit_equal(kernels.block_norm(x, bs, norm, backend="triton"), expected_norm)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("bs, zpb", [((1, 4), 2), ((2, 3), None), ((3, 6), 7)])
def test_precisions(device, dtype, bs, zpb):
    """Half-precision data: float32 scores to the bit, masks exactly (float64 is refused, see
    tests/kernels/test_edge_inputs.py).

    Masks, not masked bf16 outputs, are what is compared exactly: Triton's interpreter drops
    the sign of a bf16 ``-0.0`` in ``x * 0`` (a negative element times a False mask comes out
    ``+0.0``; not a bug of ours, and compiled kernels keep the sign), so on CPU a bit-exact
    comparison of sparsified bf16 tensors would fail on the sign of zeros alone."""
    x = data((10, 24), seed=5, dtype=dtype, device=device)
    for norm in ("L1", "L2"):
        assert bit_equal(kernels.block_norm(x, bs, norm, backend="triton"), kernels.block_norm(x, bs, norm, backend="torch"))
        for level in (0.25, 0.5):
            a = kernels.block_mask(x, level, bs, zpb, norm, backend="triton")
            assert torch.equal(a, kernels.block_mask(x, level, bs, zpb, norm, backend="torch"))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bs, zpb", [((1, 4), 2), ((1, 4), None), ((2, 2), 3), ((3, 6), 11)])
@pytest.mark.parametrize("layout", ["contiguous", "transposed", "permuted", "column"])
def test_sparsify_in_and_out_of_place(device, bs, zpb, layout, poisoned_outputs):
    base = data((8, 6, 4), seed=11, device=device)
    x = {"contiguous": base.reshape(16, 12), "transposed": base.reshape(12, 16).t(), "permuted": base.permute(2, 0, 1),
         "column": base.reshape(192, 1)[::4].reshape(1, 48).t()}[layout]
    expected_y, expected_mask = kernels.sparsify(x, 0.5, bs, zpb, backend="torch")
    poisoned_outputs(True)
    y, mask = kernels.sparsify(x, 0.5, bs, zpb, backend="triton")
    assert bit_equal(y, expected_y) and torch.equal(mask, expected_mask)
    z = x.clone()
    y2, mask2 = kernels.sparsify(z, 0.5, bs, zpb, inplace=True, backend="triton")
    assert y2 is z and bit_equal(z, expected_y) and torch.equal(mask2, expected_mask)


def column(device: str, seed: int, n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """A contiguous (n, 1) tensor whose stride(1) is not 1 (strides (1, n)), as ``x.t()`` of a
    row gives; and the larger tensor it lies in (so a kernel that reads or writes element i at
    i * stride(1) stays inside memory, and a test of old code fails instead of crashing)."""
    base = data((n, n), seed, device=device)
    x = base[:1].t()
    assert x.is_contiguous() and x.shape == (n, 1) and x.stride() == (1, n)
    return x, base


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("bs, zpb", [((1, 4), None), ((4, 1), 2), ((2, 2), 1), ((3, 3), None)])
def test_column_with_a_wide_stride_every_op(device, backend, bs, zpb, poisoned_outputs):
    """Every op on an (H, 1) tensor with strides (1, H), in and out of place, against the
    reference (the flat path once addressed element i at i * stride(1))."""
    from blocksparsity.kernels import naive

    x, base = column(device, seed=21)
    untouched = base[1:].clone()
    for norm in ("L1", "L2"):
        torch.testing.assert_close(kernels.block_norm(x, bs, norm, backend=backend).cpu().double(),
                                   naive.block_norm(x.cpu(), bs, norm), rtol=1e-6, atol=0)
        for level in (0.35, 1.0):
            assert torch.equal(kernels.block_mask(x, level, bs, zpb, norm, backend=backend).cpu(),
                               naive.block_mask(x.cpu(), level, bs, zpb, norm))
        expected_y, expected_mask = naive.sparsify(x.cpu(), 0.5, bs, zpb, norm)
        if backend == "triton":  # (the poison's int fill does not fit the torch backend's int16 words)
            poisoned_outputs(norm == "L1")
        y, mask = kernels.sparsify(x, 0.5, bs, zpb, norm, backend=backend)
        assert torch.equal(y.cpu(), expected_y) and torch.equal(mask.cpu(), expected_mask)
        assert torch.equal(kernels.apply_mask(x, mask, backend=backend).cpu(), expected_y)
        z, zbase = column(device, seed=21)
        zrest = zbase[1:].clone()
        y2, _ = kernels.sparsify(z, 0.5, bs, zpb, norm, inplace=True, backend=backend)
        assert y2 is z and torch.equal(z.cpu(), expected_y) and torch.equal(zbase[1:], zrest)
        z, zbase = column(device, seed=21)
        assert kernels.apply_mask(z, mask, inplace=True, backend=backend) is z
        assert torch.equal(z.cpu(), expected_y) and torch.equal(zbase[1:], zrest)
    assert torch.equal(base[1:], untouched)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("inplace", [False, True])
def test_apply_mask(device, inplace, poisoned_outputs):
    x = data((9, 13), seed=2, device=device).t()
    mask = torch.rand(x.shape, generator=torch.Generator().manual_seed(4)).to(device) > 0.5
    expected = x * mask
    poisoned_outputs(False)
    target = x.clone() if inplace else x
    out = kernels.apply_mask(target, mask, inplace=inplace, backend="triton")
    assert bit_equal(out, expected)
    assert (out is target) == inplace


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_finite_data_whose_squares_overflow_is_not_rejected(device):
    x = data((8, 16), seed=8, device=device) * 1e30
    for backend in ("torch", "triton"):
        kernels.block_norm(x, (1, 4), "L2", backend=backend)
    assert torch.equal(kernels.block_mask(x, 0.5, (1, 4), 2, "L2", backend="triton"),
                       kernels.block_mask(x, 0.5, (1, 4), 2, "L2", backend="torch"))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("kind", ["random", "ties"])
def test_masks_equal_the_reference(device, case, kind):
    """The Triton backend against ``blocksparsity.kernels.naive`` (the plain statement of the semantics),
    not only against the torch backend: masks exactly, scores to float32 rounding."""
    from blocksparsity.kernels import naive

    shape, bs, zpb = CASES[case]
    x = data(shape, seed=100 + case, kind=kind, device=device)
    for norm in ("L1", "L2"):
        torch.testing.assert_close(kernels.block_norm(x, bs, norm, backend="triton").cpu().double(),
                                   naive.block_norm(x.cpu(), bs, norm), rtol=1e-6, atol=0)
        for level in (0.35, 1.0):
            expected = naive.block_mask(x.cpu(), level, bs, zpb, norm)
            assert torch.equal(kernels.block_mask(x, level, bs, zpb, norm, backend="triton").cpu(), expected)
        y, mask = kernels.sparsify(x, 0.5, bs, zpb, norm, backend="triton")
        expected_y, expected_mask = naive.sparsify(x.cpu(), 0.5, bs, zpb, norm)
        assert torch.equal(mask.cpu(), expected_mask) and torch.equal(y.cpu(), expected_y)
