"""Edge inputs to the kernel API an adversarial user tries: float64 data (refused where it would be
scored, masked by ``apply_mask``), in-place writes to overlapping memory, blocks far larger than
the data, sparse and meta tensors, bytes as a block shape. Each error is ours (``TypeError``/
``ValueError`` naming the argument) and leaves the data untouched; where the sparsifier passes
the input on, its error names the tensor."""

from __future__ import annotations

import math

import pytest
import torch

from blocksparsity import DataNormSparsifier, kernels
from blocksparsity.kernels import naive
from tests.helpers.devices import triton_devices

BACKENDS = ["torch"] + (["triton"] if "cpu" in triton_devices() else [])


DATA_OPS = {
    "block_norm": lambda x, b: kernels.block_norm(x, (1, 4), backend=b),
    "block_mask": lambda x, b: kernels.block_mask(x, 0.5, (1, 4), backend=b),
    "block_mask_unchecked": lambda x, b: kernels.block_mask_unchecked(x, 0.5, (1, 4), backend=b),
    "sparsify": lambda x, b: kernels.sparsify(x, 0.5, (1, 4), backend=b),
}


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- 3. float64 is refused, by name
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", sorted(DATA_OPS))
def test_float64_is_refused_by_the_scoring_functions(op, backend):
    x = torch.tensor([[1 + 1e-12, 1.0, 5.0, 6.0], [2.0, 3.0, 4.0, 1e300]], dtype=torch.float64)
    before = x.clone()
    with pytest.raises(TypeError, match=r"x is float64; cast it to float32.*torch\.ao ranks float64"):
        DATA_OPS[op](x, backend)
    assert torch.equal(x, before)


def test_float64_is_masked_by_apply_mask():
    """apply_mask scores nothing, so float64 is fine there: x * mask exactly."""
    x = rand(4, 8).double()
    mask = rand(4, 8, seed=1) > 0
    assert torch.equal(kernels.apply_mask(x, mask), x * mask)


# ---------------------------------------------------------------- 4. in place on overlapping memory
@pytest.mark.parametrize("backend", BACKENDS)
def test_in_place_on_an_expanded_tensor_is_refused(backend):
    base = rand(1, 8)
    x = base.expand(4, 8)
    with pytest.raises(ValueError, match=r"^x has overlapping memory"):
        kernels.sparsify(x, 0.25, (1, 4), inplace=True, backend=backend)
    with pytest.raises(ValueError, match=r"^x has overlapping memory"):
        kernels.apply_mask(x, torch.ones(4, 8, dtype=torch.bool), inplace=True, backend=backend)
    assert torch.equal(base, rand(1, 8))
    y, mask = kernels.sparsify(x, 0.25, (1, 4), backend=backend)  # out of place is fine
    assert torch.equal(y, x * mask) and torch.equal(mask, kernels.block_mask(x.contiguous(), 0.25, (1, 4)))


def test_overlap_detection():
    t = rand(6, 8)
    strided = torch.empty(100).as_strided((3, 4), (2, 3))  # offsets 0..14, 6 = 2*3 = 3*2 collide
    woven = torch.empty(100).as_strided((2, 3), (1, 2))  # 0, 2, 4 and 1, 3, 5: no overlap
    interleaved = torch.empty(100).as_strided((3, 2), (2, 3))  # 0, 3; 2, 5; 4, 7: distinct, but not provably
    assert not any(kernels.api.may_overlap(v) for v in (t, t.t(), t[:, ::2], t[::3], t[1:, 2:], t.unsqueeze(1), woven))
    assert all(kernels.api.may_overlap(v) for v in (t[:1].expand(3, 8), t[:, :1].expand(6, 5), strided))
    assert kernels.api.may_overlap(interleaved)  # refused conservatively (as_strided only)
    assert not kernels.api.may_overlap(torch.empty(1, 1).expand(1, 1))


# ---------------------------------------------------------------- 6. blocks far larger than the data
@pytest.mark.parametrize("shape, bs", [((4, 8), (1000, 1000)), ((512, 512), (512, 512)), ((4, 8), (10**5, 10**5)),
                                       ((3, 70), (2, 10**9)), ((37,), (5, 100))])
def test_block_larger_than_the_tensor_is_one_partial_block(shape, bs):
    """Cost bounded by the data (these ran for seconds or asked for 40 GB before); results
    as the brute force defines them: one block per dim it covers, mean over its elements."""
    x = rand(*shape, seed=sum(shape))
    if x.numel() <= 4096:
        for norm in ("L1", "L2"):  # the brute force scores in float64
            torch.testing.assert_close(kernels.block_norm(x, bs, norm, backend="torch").double(),
                                       naive.block_norm(x, bs, norm), rtol=1e-5, atol=0)
    h, w = naive.as_2d(x).shape
    clipped = (min(bs[0], h), min(bs[1], w))
    scores = kernels.block_norm(x, bs, backend="torch")
    assert scores.shape == (math.ceil(h / bs[0]), math.ceil(w / bs[1]))
    assert torch.equal(scores, kernels.block_norm(x, clipped, backend="torch"))
    for zpb in (None, 3, 1000):
        zpb = None if zpb is not None and zpb > bs[0] * bs[1] else zpb
        for level in (0.0, 0.5, 1.0):
            mask = kernels.block_mask(x, level, bs, zpb, backend="torch")
            if x.numel() <= 4096:
                assert torch.equal(mask, naive.block_mask(x, level, bs, zpb, "L1"))
            z = None if zpb is None else min(zpb, clipped[0] * clipped[1])
            assert torch.equal(mask, kernels.block_mask(x, level, clipped, z, backend="torch"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_huge_block_on_every_backend(backend):
    """The API clips the block before any backend: Triton compiles a kernel for the tensor's
    size, not for 10**10 positions (its int32 loop bound would overflow)."""
    x = rand(3, 5, seed=4)
    expected = naive.block_mask(x, 1.0, (3, 5), 4, "L1")
    assert torch.equal(kernels.block_mask(x, 1.0, (10**5, 10**5), 4, backend=backend), expected)
    y, mask = kernels.sparsify(x, 1.0, (10**5, 10**5), 4, backend=backend)
    assert torch.equal(mask, expected) and torch.equal(y, x * expected)


@pytest.mark.parametrize("bs", [(8, 9), (16, 16), (3, 40), (64, 64)])
def test_large_blocks_sum_in_order(bs):
    """Blocks of more than SEQUENTIAL_SUM_MIN elements are summed another way (numpy's
    float32 accumulate): the same bits as the one-position-at-a-time sum, partial edges too."""
    from blocksparsity.kernels._common import block_grid
    from blocksparsity.kernels._torch import _blocks, _policy
    from blocksparsity.kernels._torch.block_norm import block_sums, blocked_sums

    x = rand(150, 170, seed=9) * torch.linspace(1e-3, 1e3, 170)
    h, w = x.shape
    for norm in ("L1", "L2"):
        v = x.abs() if norm == "L1" else x * x
        blocked = _blocks.blocked(v, *block_grid((h, w), bs), *bs, 0.0)
        loop = block_sums(_blocks.positions(blocked))
        assert torch.equal(blocked_sums(blocked.clone(), _policy.HOST_READS).view(torch.int32), loop.view(torch.int32))
        count = (_blocks.counts_inside(blocked.shape[0], bs[0], h, 0, x.device)[:, None]
                 * _blocks.counts_inside(blocked.shape[2], bs[1], w, 0, x.device))
        assert torch.equal(kernels.block_norm(x, bs, norm, backend="torch"), loop / count)


# ---------------------------------------------------------------- 9. our errors, at the call that receives the input
def _sparse_and_meta():
    x = rand(4, 8)
    return {"coo": x.to_sparse(), "csr": x.to_sparse_csr(), "meta": torch.empty(4, 8, device="meta")}


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["coo", "csr", "meta"])
def test_sparse_and_meta_tensors(kind, backend):
    x = _sparse_and_meta()[kind]
    error, match = (ValueError, "x is a meta tensor") if kind == "meta" else (TypeError, "x must be a dense")
    for op in DATA_OPS.values():
        with pytest.raises(error, match=match):
            op(x, backend)
    with pytest.raises(error, match=match):
        kernels.apply_mask(x, torch.ones(4, 8, dtype=torch.bool), backend=backend)
    if kind != "meta":
        with pytest.raises(TypeError, match="mask must be a dense"):
            kernels.apply_mask(rand(4, 8), torch.ones(4, 8, dtype=torch.bool).to_sparse(), backend=backend)
    error, match = (ValueError, "data 'w' is a meta tensor") if kind == "meta" else (TypeError, "data 'w' must be a dense")
    with pytest.raises(error, match=match):
        DataNormSparsifier().add_data("w", x)


@pytest.mark.parametrize("block_shape", [b"\x01\x04", bytearray(b"\x01\x04")])
def test_bytes_are_not_a_block_shape(block_shape):
    with pytest.raises(TypeError, match="block_shape must be a pair of ints"):
        kernels.block_mask(rand(4, 8), 0.5, block_shape)
    with pytest.raises(TypeError, match="sparse_block_shape"):
        DataNormSparsifier(sparse_block_shape=block_shape)
