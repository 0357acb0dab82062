"""The Triton group kernels (``_triton.block_mask_group``: one launch per stage for a whole
group of tensors) against per-tensor ``block_mask``, mask for mask, bit for bit. Without a GPU
they run on CPU tensors in Triton's interpreter: the tensors are small."""

from __future__ import annotations

import importlib

import pytest
import torch

from blocksparsity import kernels
from blocksparsity.kernels._common import n_blocks
from tests.helpers.devices import triton_devices

DEVICES = triton_devices()
pytestmark = pytest.mark.skipif(not DEVICES, reason="Triton backend unavailable (no GPU, no interpreter)")

if DEVICES:
    from blocksparsity.kernels import _triton
    group_module = importlib.import_module("blocksparsity.kernels._triton.block_mask_group")

# Groups: (block shape, already clipped to every member; member shapes). Partial edge blocks,
# 1xN and Nx1, one-element tensors, one-block tensors, tensors of several tiles (so that a
# tile's ties before it come from other tiles), 2-D blocks, the loop path (blocks over 16).
GROUPS = {
    "1x4": ((1, 4), [(9, 30), (1, 13), (24, 64), (4, 4), (3, 5)]),
    "flat": ((1, 4), [(16, 32), (2, 8), (1, 4), (40, 16)]),  # every member on the flat path
    "4x4": ((4, 4), [(20, 24), (4, 4), (9, 5)]),  # 16-element blocks: 16 per tile, 2 tiles
    "2x3": ((2, 3), [(13, 11), (2, 3), (5, 7)]),
    "1x1": ((1, 1), [(1, 1), (13, 1), (64, 64), (1, 5)]),  # 4096 blocks: 4 tiles, 2 selection programs
    "loop": ((1, 17), [(3, 40), (2, 17)]),
}
# Per-member levels, rotated per call so each member sees 0, 1 and levels between.
LEVELS = (0.0, 0.35, 1.0, 0.5, 0.8)


def data(shape, seed, kind="random", dtype=torch.float32, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    if kind == "ties":  # few distinct values, a third of the rows zero
        x = torch.randint(-2, 3, shape, generator=g).float()
        x[: max(1, shape[0] // 3)] = 0
    else:
        x = torch.randn(shape, generator=g)
    return x.to(dtype=dtype, device=device)


def members(name, kind, dtype, device, transpose_first=False):
    bs, shapes = GROUPS[name]
    xs = [data(s, seed=i, kind=kind, dtype=dtype, device=device) for i, s in enumerate(shapes)]
    if transpose_first:  # a strided view: (W, H) data seen as (H, W)
        xs[0] = data(shapes[0][::-1], seed=99, kind=kind, dtype=dtype, device=device).t()
    if name == "flat":  # a contiguous member whose address is not 16-byte aligned (no ALIGNED hint)
        h, w = shapes[-1]
        xs[-1] = data((h * w + 1,), seed=98, kind=kind, dtype=dtype, device=device)[1:].view(h, w)
    return bs, xs


def ks_for(xs, levels, bs, zpb):
    return [0 if zpb == 0 else round(level * n_blocks(x.shape, bs)) for x, level in zip(xs, levels, strict=True)]


def per_tensor(xs, levels, bs, zpb, norm, backend, scales=None):
    scales = scales or [None] * len(xs)
    return [kernels.block_mask(x, level, bs, zpb, norm, scale=s, backend=backend)
            for x, level, s in zip(xs, levels, scales, strict=True)]


def check_group(xs, levels, bs, zpb, norm, backend="torch", scales=None):
    expanded = None if scales is None else [None if s is None else s.expand(x.shape) for x, s in zip(xs, scales, strict=True)]
    masks, flags = _triton.block_mask_group(xs, ks_for(xs, levels, bs, zpb), bs, zpb, norm, expanded)
    assert flags.dtype == torch.bool and flags.shape == (len(xs),) and not flags.any()
    for i, (got, want) in enumerate(zip(masks, per_tensor(xs, levels, bs, zpb, norm, backend, scales), strict=True)):
        assert got.dtype == torch.bool and got.shape == xs[i].shape and got.is_contiguous()
        assert torch.equal(got, want), f"member {i} {tuple(xs[i].shape)} level {levels[i]} zpb {zpb} {norm}"


def zpb_classes(bs):
    size = bs[0] * bs[1]
    return sorted({0, max(1, size // 2), size})


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(GROUPS))
@pytest.mark.parametrize("kind", ["random", "ties"])
def test_group_equals_torch_backend(device, name, kind):
    if name == "loop" and kind == "random":
        pytest.skip("the loop path is slow in the interpreter: its tie-heavy run covers it")
    bs, xs = members(name, kind, torch.float32, device, transpose_first=name in ("1x4", "2x3"))
    for turn, zpb in enumerate(zpb_classes(bs)):
        norm = ("L1", "L2")[turn % 2]
        levels = [LEVELS[(i + turn) % len(LEVELS)] for i in range(len(xs))]
        check_group(xs, levels, bs, zpb, norm)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["1x4", "2x3"])
def test_half_precision(device, dtype, name):
    bs, xs = members(name, "random", dtype, device)
    for turn, norm in enumerate(("L1", "L2")):
        levels = [LEVELS[(i + turn) % len(LEVELS)] for i in range(len(xs))]
        check_group(xs, levels, bs, max(1, bs[0] * bs[1] // 2), norm)


@pytest.mark.parametrize("device", DEVICES)
def test_group_equals_per_tensor_triton(device, poisoned_outputs):
    """Equal to the per-tensor Triton kernels too, with every output buffer poisoned first
    (each mask element is written: the masks are fresh)."""
    bs, xs = members("1x4", "ties", torch.float32, device, transpose_first=True)
    levels = [0.35, 1.0, 0.5, 0.0, 0.8]
    for poison, zpb, norm in ((True, 2, "L1"), (False, 4, "L2")):
        poisoned_outputs(poison)
        check_group(xs, levels, bs, zpb, norm, backend="triton")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("norm", ["L1", "L2"])
def test_scales(device, norm):
    """Per-member scales of every form (per column, per row, full, one value), of mixed dtypes,
    and members without one, in one group: each mask equals the per-tensor call with its scale."""
    bs, xs = members("1x4", "ties", torch.float32, device)
    g = torch.Generator().manual_seed(3)

    def scale(shape, dtype):
        return (torch.rand(shape, generator=g) * 2).to(dtype=dtype, device=device)

    (h0, w0), (h1, _), (h2, _), _, (_, w4) = (x.shape for x in xs)
    mixed = [scale((1, w0), torch.float32), scale((h1, 1), torch.float16), None,
             scale((4, 4), torch.float64), scale((1, 1), torch.bfloat16)]
    same = [scale((h0, w0), torch.float16), None, scale((h2, 1), torch.float16), None, scale((1, w4), torch.float16)]
    for turn, scales in enumerate((mixed, same)):
        levels = [LEVELS[(i + turn) % len(LEVELS)] for i in range(len(xs))]
        check_group(xs, levels, bs, 2, norm, scales=scales)
    flat_bs, flat_xs = members("flat", "random", torch.float32, device)
    full = [scale(x.shape, torch.float32) for x in flat_xs]  # contiguous full scales: the flat path
    check_group(flat_xs, [0.5, 0.35, 1.0, 0.8], flat_bs, 4, norm, scales=full)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_sets_only_its_flag(device, bad):
    bs, xs = members("2x3", "random", torch.float32, device)
    xs[1] = xs[1].clone()
    xs[1][1, 2] = bad
    masks, flags = _triton.block_mask_group(xs, ks_for(xs, [0.5] * 3, bs, 6), bs, 6, "L1")
    assert flags.tolist() == [False, True, False]
    for i in (0, 2):  # the others' masks are still right
        assert torch.equal(masks[i], kernels.block_mask(xs[i], 0.5, bs, 6, "L1", backend="torch"))


@pytest.mark.parametrize("device", DEVICES)
def test_one_member_and_many(device):
    """A group of one runs the per-tensor kernels; the group kernels give the same for one
    tensor; a group of 19 tensors (the member table wider than a power of two's half)."""
    bs, xs = members("2x3", "ties", torch.float32, device)
    ks = ks_for(xs[:1], [0.5], bs, 3)
    (single,), flag = _triton.block_mask_group(xs[:1], ks, bs, 3, "L2")
    (grouped,), flags = group_module._block_mask_group(xs[:1], ks, bs, 3, "L2", None)
    expected = kernels.block_mask(xs[0], 0.5, bs, 3, "L2", backend="torch")
    assert torch.equal(single, expected) and torch.equal(grouped, expected)
    assert flag.shape == (1,) and flags.shape == (1,) and not flag.any() and not flags.any()
    many = [data((1 + i % 4, 3 + i), seed=i, kind="ties", device=device) for i in range(19)]
    check_group(many, [LEVELS[i % len(LEVELS)] for i in range(19)], (1, 3), 2, "L1")
