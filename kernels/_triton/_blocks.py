"""@triton.jit helpers shared by the block kernels: where a tile of blocks lies, each
block's score, the pruned-block decision and in-block ranks.

A program owns ``TILE`` consecutive flat block indices ``b`` (row-major over the block
grid). The "tile" path holds each block whole as one row of a ``[TILE, P2]`` register
tile (position ``e`` = row-major index inside the block); the "loop" path walks the
positions one at a time and holds ``[TILE]`` vectors.

Every score is summed in the same order as the torch backend and the reference's
``avg_pool2d``: one element at a time, row-major, in float32; then divided with
correct rounding. Launch these kernels with ``enable_fp_fusion=False`` so ``s + x*x``
is never contracted into an FMA, which would round differently.
"""

import triton
import triton.language as tl


@triton.jit
def block_coordinates(b, nbw):
    brow = b // nbw
    return brow, b - brow * nbw


@triton.jit
def block_counts(b, H, W, nbw, n_blocks, BH: tl.constexpr, BW: tl.constexpr):
    """Elements of each block inside the tensor, as float32 (1 for out-of-range blocks)."""
    brow, bcol = block_coordinates(b, nbw)
    rows = tl.minimum(H - brow * BH, BH)
    cols = tl.minimum(W - bcol * BW, BW)
    return tl.where(b < n_blocks, rows * cols, 1).to(tl.float32)


@triton.jit
def tile_offsets(b, H, W, nbw, n_blocks, BH: tl.constexpr, BW: tl.constexpr, P2: tl.constexpr, FLAT: tl.constexpr):
    """Row and column ([TILE, P2], int64) of every position of every block, and validity.

    FLAT: the tensors are contiguous with (1, BW) blocks that tile each row exactly, so a
    block's elements are the flat range [b*BW, b*BW + BW) and loads vectorise.
    """
    e = tl.arange(0, P2)
    if FLAT:
        row = b[:, None] * 0
        col = b[:, None] * BW + e[None, :]
        valid = (b[:, None] < n_blocks) & (e[None, :] < BW)
    else:
        brow, bcol = block_coordinates(b, nbw)
        row = brow[:, None] * BH + (e // BW)[None, :]
        col = bcol[:, None] * BW + (e % BW)[None, :]
        valid = (b[:, None] < n_blocks) & (e[None, :] < BH * BW) & (row < H) & (col < W)
    return row, col, valid


@triton.jit
def element_values(x, L2: tl.constexpr):
    """|x| (L1) or x*x (L2) in float32."""
    xf = x.to(tl.float32)
    if L2:
        v = xf * xf
    else:
        v = tl.abs(xf)
    return v


@triton.jit
def flag_clear(flag_ptr, TILE: tl.constexpr):
    """[TILE] bool: is the non-finite flag still clear? (A vector load: Triton's interpreter
    mistypes a scalar comparison combined with a vector mask.)"""
    return tl.load(flag_ptr + tl.zeros([TILE], tl.int32)) == 0


@triton.jit
def is_nonfinite(x):
    """NaN or infinite, judged in ``x``'s own dtype when it is float64 (a cast to float32 would
    turn finite values beyond float32's range, such as 1e300, into infinities)."""
    if x.dtype == tl.float64:
        xf = x
    else:
        xf = x.to(tl.float32)
    return (xf != xf) | (tl.abs(xf) == float("inf"))


@triton.jit
def tile_sums(x, valid, L2: tl.constexpr, P: tl.constexpr, P2: tl.constexpr):
    """Sum of each block's values ([TILE, P2] tile -> [TILE]), row-major, one at a time."""
    v = tl.where(valid, element_values(x, L2), 0.0)
    e = tl.arange(0, P2)[None, :]
    s = tl.sum(tl.where(e == 0, v, 0.0), axis=1)  # picking one value and adding zeros is exact
    for i in tl.static_range(1, P):
        s = s + tl.sum(tl.where(e == i, v, 0.0), axis=1)
    return s


@triton.jit
def loop_sums(x_ptr, b, H, W, nbw, n_blocks, sxr, sxc, L2: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr):
    """Sum of each block's values and a non-finite flag per block, walking positions."""
    brow, bcol = block_coordinates(b, nbw)
    inside = b < n_blocks
    s = tl.zeros(b.shape, tl.float32)
    bad = tl.zeros(b.shape, tl.int1)
    for e in range(BH * BW):
        row = brow * BH + e // BW
        col = bcol * BW + e % BW
        m = inside & (row < H) & (col < W)
        x = tl.load(x_ptr + row * sxr + col * sxc, mask=m, other=0.0)
        s = s + element_values(x, L2)
        bad = bad | (m & is_nonfinite(x))
    return s, bad


@triton.jit
def block_scores(
    x_ptr, b, H, W, nbw, n_blocks, sxr, sxc,
    L2: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr, P2: tl.constexpr,
    SMALL: tl.constexpr, FLAT: tl.constexpr,
):
    """Each block's mean value ([TILE] float32) and whether any of the tile's data is non-finite."""
    if SMALL:
        row, col, valid = tile_offsets(b, H, W, nbw, n_blocks, BH, BW, P2, FLAT)
        x = tl.load(x_ptr + row * sxr + col * sxc, mask=valid, other=0.0)
        s = tile_sums(x, valid, L2, BH * BW, P2)
        bad = tl.max((valid & is_nonfinite(x)).to(tl.int32))
    else:
        s, bad_blocks = loop_sums(x_ptr, b, H, W, nbw, n_blocks, sxr, sxc, L2, BH, BW)
        bad = tl.max(bad_blocks.to(tl.int32))
    counts = block_counts(b, H, W, nbw, n_blocks, BH, BW)
    return tl.math.div_rn(s, counts), bad


@triton.jit
def pruned_blocks(scores, b, n_blocks, threshold_bits, ties_pruned, ties_before):
    """Blocks below the threshold, and the lowest-index ones equal to it.

    ``ties_before`` counts the blocks equal to the threshold in earlier tiles; it and
    ``ties_pruned`` are int64, so that counts past 2**31 blocks do not wrap.
    """
    inside = b < n_blocks
    bits = scores.to(tl.int32, bitcast=True)  # non-negative floats order like their bits
    equal = inside & (bits == threshold_bits)
    tie_rank = ties_before + tl.cumsum(equal.to(tl.int32), 0).to(tl.int64)  # 1-based
    return inside & ((bits < threshold_bits) | (equal & (tie_rank <= ties_pruned)))


@triton.jit
def tile_ranks(x, valid, P2: tl.constexpr):
    """Rank of each element by |x| inside its block ([TILE, P2]; ties: lower position first).

    Padding positions hold +inf and so never rank ahead of data.
    """
    m = tl.where(valid, tl.abs(x.to(tl.float32)), float("inf"))
    mi = m[:, :, None]
    mj = m[:, None, :]
    i = tl.arange(0, P2)[:, None]
    j = tl.arange(0, P2)[None, :]
    ahead = (mj < mi) | ((mj == mi) & (j < i))
    return tl.sum(ahead.to(tl.int32), axis=2)
