"""``scale=`` on block_norm, block_mask and sparsify (issue 22, item 1): against the
definition (``blocksparsity.kernels.naive``) on random and tie-heavy data, every broadcast
form, partial edge blocks, fp16/bf16/fp32, both norms; ``scale=None`` and an all-ones scale
bit-equal to no scale; every bad ``scale`` refused, naming it, with the data untouched.
The Triton backend (under the interpreter on small tensors, or on CUDA) against the same
definition, masks and scores bit-equal, over its tile, flat and loop paths and strided layouts.

DTensor data with a scale: tests/kernels/test_sharded.py (2 ranks); one rank here."""

from __future__ import annotations

import pytest
import torch

from blocksparsity import kernels
from blocksparsity.kernels import naive
from tests.helpers.devices import triton_devices

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# (shape, block_shape, zeros_per_block values): partial edge blocks, 1-D and N-D data, a
# block larger than the pairwise-rank limit (sorted ranks), a clipped block.
CASES = [
    ((9, 30), (1, 4), (None, 2)),
    ((13, 11), (2, 3), (None, 2)),
    ((37,), (1, 4), (None, 2)),
    ((6, 3, 3, 3), (4, 4), (None, 5)),
    ((5, 40), (1, 17), (None, 9)),
    ((3, 5), (8, 8), (None, 2)),
]
FORMS = ("col", "col1d", "row", "full", "one")
# Triton: the tile path (strided, partial blocks), the flat path ((8, 24) with (1, 4): a full
# contiguous scale shares it, a broadcast one does not), 1-D data, the loop path (17-element
# blocks), a clipped block. Small: the interpreter is slow.
TRITON_CASES = [
    ((9, 30), (1, 4), (None, 2)),
    ((8, 24), (1, 4), (None, 2)),
    ((13, 11), (2, 3), (None, 2)),
    ((37,), (1, 4), (None, 2)),
    ((5, 40), (1, 17), (None, 9)),
    ((3, 5), (8, 8), (None, 2)),
]
TRITON_DEVICES = triton_devices()


def make_data(shape, kind: str, dtype: str, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # ties: small integers, many equal |x|, equal scores, exact sums
    x = torch.randint(-2, 3, shape, generator=g).float() if kind == "ties" else torch.randn(shape, generator=g)
    return x.to(DTYPES[dtype])


def make_scale(x: torch.Tensor, form: str, kind: str, seed: int, dtype=torch.float32) -> torch.Tensor:
    h, w = naive.as_2d(x).shape
    shape = {"col": (1, w), "col1d": (w,), "row": (h, 1), "full": (h, w), "one": ()}[form]
    g = torch.Generator().manual_seed(seed + 1)
    if kind == "ties":  # exact products, many ties, zeros included
        s = torch.tensor([0.0, 0.5, 1.0, 2.0, 3.0])[torch.randint(0, 5, shape, generator=g)]
    else:
        s = torch.rand(shape, generator=g) * 3
    return s.to(dtype)


@pytest.mark.parametrize("kind", ["random", "ties"])
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("norm", ["L1", "L2"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}")
def test_matches_naive(case, norm, dtype, form, kind):
    shape, block, zpbs = case
    x = make_data(shape, kind, dtype, seed=len(shape) + block[1])
    scale = make_scale(x, form, kind, seed=block[0])
    x_before = x.clone()
    if kind == "ties":  # exact scores: the float32 backend and float64 reference agree exactly
        torch.testing.assert_close(kernels.block_norm(x, block, norm, scale=scale, backend="torch"),
                                   naive.block_norm(x, block, norm, scale=scale).float(), rtol=0, atol=0)
    else:
        torch.testing.assert_close(kernels.block_norm(x, block, norm, scale=scale, backend="torch").double(),
                                   naive.block_norm(x, block, norm, scale=scale), rtol=1e-6, atol=0)
    for zpb in zpbs:
        for level in (0.0, 0.5, 1.0):
            want = naive.block_mask(x, level, block, zpb, norm, scale=scale)
            got = kernels.block_mask(x, level, block, zpb, norm, scale=scale, backend="torch")
            assert torch.equal(got, want), (zpb, level)
            out, mask = kernels.sparsify(x, level, block, zpb, norm, scale=scale, backend="torch")
            assert torch.equal(mask, want) and torch.equal(out, x * want)
    assert torch.equal(x, x_before)


def test_scale_changes_the_mask():
    """The scale is used at all: a per-column scale that favours the weak columns flips the choice."""
    x = torch.tensor([[1.0, 1.0, 1.0, 1.0, 4.0, 4.0, 4.0, 4.0]])
    scale = torch.tensor([[10.0] * 4 + [1.0] * 4])
    assert kernels.block_mask(x, 0.5).tolist() == [[False] * 4 + [True] * 4]
    assert kernels.block_mask(x, 0.5, scale=scale).tolist() == [[True] * 4 + [False] * 4]
    # in-block ranks use t too: |x| ranks position 0 first, t ranks position 3 first
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    scale = torch.tensor([[8.0, 4.0, 2.0, 0.5]])
    assert kernels.block_mask(x, 1.0, zeros_per_block=1, scale=scale).tolist() == [[True, True, True, False]]


def check_backend_against_naive(x: torch.Tensor, block, zpbs, scale: torch.Tensor, backend: str, exact: bool):
    """Scores (bit-equal to the torch backend's; to the definition's when ``exact``), masks of
    block_mask and sparsify equal to the definition's, data untouched."""
    x_before = x.clone()
    for norm in ("L1", "L2"):
        got = kernels.block_norm(x, block, norm, scale=scale, backend=backend)
        assert torch.equal(got, kernels.block_norm(x.cpu(), block, norm, scale=scale.cpu(), backend="torch").to(x.device))
        want_scores = naive.block_norm(x.cpu(), block, norm, scale=scale.cpu())
        if exact:
            assert torch.equal(got.cpu(), want_scores.float())
        else:
            torch.testing.assert_close(got.cpu().double(), want_scores, rtol=1e-6, atol=0)
        for zpb in zpbs:
            for level in (0.5, 1.0):
                want = naive.block_mask(x.cpu(), level, block, zpb, norm, scale=scale.cpu())
                assert torch.equal(kernels.block_mask(x, level, block, zpb, norm, scale=scale, backend=backend).cpu(),
                                   want), (norm, zpb, level)
            out, mask = kernels.sparsify(x, 0.5, block, zpb, norm, scale=scale, backend=backend)
            want = naive.block_mask(x.cpu(), 0.5, block, zpb, norm, scale=scale.cpu())
            assert torch.equal(mask.cpu(), want) and torch.equal(out.cpu(), x.cpu() * want)
    assert torch.equal(x, x_before)


# Every case meets every scale form and both kinds of data; the dtype turns with them, so each
# case and each form meets every dtype (the full product is 3x the interpreter's time).
TRITON_MATRIX = [
    pytest.param(case, list(DTYPES)[(i + j + k) % len(DTYPES)], form, kind, id=f"{case[0]}-{case[1]}-{form}-{kind}")
    for i, case in enumerate(TRITON_CASES) for j, form in enumerate(FORMS) for k, kind in enumerate(("random", "ties"))
]


@pytest.mark.parametrize("device", TRITON_DEVICES)
@pytest.mark.parametrize(("case", "dtype", "form", "kind"), TRITON_MATRIX)
def test_triton_matches_naive(case, dtype, form, kind, device):
    shape, block, zpbs = case
    x = make_data(shape, kind, dtype, seed=len(shape) + block[1]).to(device)
    scale = make_scale(x, form, kind, seed=block[0]).to(device)
    check_backend_against_naive(x, block, zpbs, scale, "triton", exact=kind == "ties")


@pytest.mark.parametrize("device", TRITON_DEVICES)
@pytest.mark.parametrize(("layout", "form", "dtype"), [
    (layout, form, ("fp32", "bf16")[(i + j) % 2])
    for i, layout in enumerate(["transposed", "column", "column-full-t"]) for j, form in enumerate(FORMS)
])
def test_triton_strided_layouts(layout, form, dtype, device):
    """Strided data and scales: transposed data, the (H, 1) column of a transposed row
    (strides (1, H)), and a transposed (non-contiguous) full scale."""
    if layout == "transposed":
        x = make_data((30, 9), "random", dtype, seed=5).t()
    else:
        x = make_data((1, 13), "random", dtype, seed=6).t()  # (13, 1), strides (1, 13)
    scale = make_scale(x, form, "random", seed=7)
    if layout == "column-full-t" and form == "full":
        scale = scale.t().contiguous().t()
    for block in ((1, 4), (2, 3), (4, 1)):
        check_backend_against_naive(x.to(device), block, (None, 2), scale.to(device), "triton", exact=False)


@pytest.mark.parametrize("norm", ["L1", "L2"])
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_larger_data_power_of_two_scale(norm, form, dtype):
    """Several chunks and the fused selection (over 2**18 blocks): with power-of-two scales,
    ``|x| * scale`` is exact, so the mask equals the unscaled mask of ``x * scale`` (fp32)."""
    x = make_data((600, 1800), "random", dtype, seed=3)
    g = torch.Generator().manual_seed(4)
    h, w = x.shape
    shape = {"col": (1, w), "col1d": (w,), "row": (h, 1), "full": (h, w), "one": ()}[form]
    scale = 2.0 ** torch.randint(-3, 4, shape, generator=g).float()
    xs = x.float() * scale
    for zpb in (None, 2):
        want = kernels.block_mask(xs, 0.5, (1, 4), zpb, norm, backend="torch")
        assert torch.equal(kernels.block_mask(x, 0.5, (1, 4), zpb, norm, scale=scale, backend="torch"), want)
    torch.testing.assert_close(kernels.block_norm(x, (2, 3), norm, scale=scale), kernels.block_norm(xs, (2, 3), norm),
                               rtol=0, atol=0)


@pytest.mark.parametrize("norm", ["L1", "L2"])
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}")
def test_none_and_ones_bit_equal_to_no_scale(case, dtype, norm):
    """``scale=None`` is the call without a scale; an all-ones scale (any form, float32 or
    float16) gives bit-equal scores and equal masks (|x| * 1.0 is exact in float32)."""
    shape, block, zpbs = case
    x = make_data(shape, "ties", dtype, seed=1) + make_data(shape, "random", dtype, seed=2)
    plain = kernels.block_norm(x, block, norm)
    assert torch.equal(kernels.block_norm(x, block, norm, scale=None), plain)
    for form in FORMS:
        ones = torch.ones_like(make_scale(x, form, "random", 0))
        for s in (ones, ones.half()):
            assert torch.equal(kernels.block_norm(x, block, norm, scale=s), plain), form
            for zpb in zpbs:
                want = kernels.block_mask(x, 0.5, block, zpb, norm)
                assert torch.equal(kernels.block_mask(x, 0.5, block, zpb, norm, scale=None), want)
                assert torch.equal(kernels.block_mask(x, 0.5, block, zpb, norm, scale=s), want), (form, zpb)


def test_scale_dtypes_are_cast_to_float32():
    """float64 and float16 scales score as their float32 values."""
    x = torch.randn(8, 24)
    s64 = torch.rand(1, 24, dtype=torch.float64) + 0.1
    assert torch.equal(kernels.block_norm(x, scale=s64), kernels.block_norm(x, scale=s64.float()))
    s16 = s64.half()
    assert torch.equal(kernels.block_mask(x, 0.5, scale=s16), kernels.block_mask(x, 0.5, scale=s16.float()))


BAD_SCALES = {
    "list": ([1.0, 2.0], TypeError),
    "int": (torch.ones(1, 8, dtype=torch.int32), TypeError),
    "bool": (torch.ones(1, 8, dtype=torch.bool), TypeError),
    "complex": (torch.ones(1, 8, dtype=torch.complex64), TypeError),
    "meta": (torch.ones(1, 8, device="meta"), TypeError),
    "sparse": (torch.ones(1, 8).to_sparse(), TypeError),
    "wide": (torch.ones(1, 9), ValueError),
    "tall": (torch.ones(5, 1), ValueError),
    "flat-rows": (torch.ones(4), ValueError),
    "3-d": (torch.ones(1, 4, 8), ValueError),
    "negative": (torch.tensor([[1.0] * 7 + [-1.0]]), ValueError),
    "nan": (torch.tensor([[1.0] * 7 + [float("nan")]]), ValueError),
    "inf": (torch.tensor([[1.0] * 7 + [float("inf")]]), ValueError),
    "beyond-float32": (torch.tensor([[1.0] * 7 + [1e300]], dtype=torch.float64), ValueError),
}


@pytest.mark.parametrize("op", ["block_norm", "block_mask", "sparsify", "block_mask_unchecked"])
@pytest.mark.parametrize("bad", list(BAD_SCALES))
def test_bad_scale(bad, op):
    x = torch.randn(4, 8)
    before = x.clone()
    scale, error = BAD_SCALES[bad]
    call = {
        "block_norm": lambda: kernels.block_norm(x, scale=scale),
        "block_mask": lambda: kernels.block_mask(x, 0.5, scale=scale),
        "sparsify": lambda: kernels.sparsify(x, 0.5, scale=scale, inplace=True),
        "block_mask_unchecked": lambda: kernels.block_mask_unchecked(x, 0.5, scale=scale),
    }[op]
    with pytest.raises(error, match="scale"):
        call()
    assert torch.equal(x, before)


def test_zero_and_negative_zero_scale_prune_first():
    """A zero scale (also -0.0, which is not negative) makes t = +0: those blocks go first."""
    x = torch.tensor([[5.0, 5.0, 5.0, 5.0, 1.0, 1.0, 1.0, 1.0]])
    scale = torch.tensor([[-0.0] * 4 + [1.0] * 4])
    assert kernels.block_mask(x, 0.5, scale=scale).tolist() == [[False] * 4 + [True] * 4]
    assert kernels.block_norm(x, scale=scale)[0, 0].item() == 0.0


def test_nonfinite_data_with_scale_still_raises_x():
    x = torch.randn(4, 8)
    x[1, 2] = float("nan")
    with pytest.raises(ValueError, match="x holds NaN"):
        kernels.block_mask(x, 0.5, scale=torch.ones(1, 8))


@pytest.mark.skipif("cpu" not in TRITON_DEVICES, reason="needs Triton (interpreter)")
def test_triton_scale_changes_the_mask():
    """The Triton kernels use the scale in scores and in in-block ranks (a kernel that ignored
    it, or ranked by |x|, fails here)."""
    x = torch.tensor([[1.0, 1.0, 1.0, 1.0, 4.0, 4.0, 4.0, 4.0]])
    scale = torch.tensor([[10.0] * 4 + [1.0] * 4])
    assert kernels.block_mask(x, 0.5, scale=scale, backend="triton").tolist() == [[True] * 4 + [False] * 4]
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    scale = torch.tensor([[8.0, 4.0, 2.0, 0.5]])
    for norm in ("L1", "L2"):
        got = kernels.block_mask(x, 1.0, zeros_per_block=1, norm=norm, scale=scale, backend="triton")
        assert got.tolist() == [[True, True, True, False]]


def test_auto_with_scale_runs():
    """``backend="auto"`` takes a scale (Triton on CUDA, torch on CPU), as without one."""
    x = torch.randn(4, 8)
    assert torch.equal(kernels.block_mask(x, 0.5, scale=torch.ones(1, 8), backend="auto"), kernels.block_mask(x, 0.5))


def test_dtensor_takes_scale_on_one_rank(tmp_path):
    """Sharded (DTensor) data takes a scale (one gloo rank here; two ranks, every form and the
    refusals on every rank: tests/kernels/test_sharded.py); a DTensor scale with plain data is refused."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    if dist.is_initialized():
        pytest.skip("a process group already exists")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    try:
        plain, scale = torch.randn(4, 8), torch.rand(1, 8)
        x = distribute_tensor(plain, init_device_mesh("cpu", (1,)), [Shard(0)])
        assert torch.equal(kernels.block_mask(x, 0.5, scale=scale).full_tensor(), kernels.block_mask(plain, 0.5, scale=scale))
        assert torch.equal(kernels.block_norm(x, scale=scale).full_tensor(), kernels.block_norm(plain, scale=scale))
        with pytest.raises(ValueError, match="scale"):
            kernels.block_mask(x, 0.5, scale=-scale)
        with pytest.raises(TypeError, match="scale"):
            kernels.block_mask(plain, 0.5, scale=distribute_tensor(torch.ones(4, 8), x.device_mesh, [Shard(0)]))
    finally:
        dist.destroy_process_group()
