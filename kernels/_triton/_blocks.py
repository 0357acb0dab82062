"""@triton.jit helpers shared by the block kernels: where a tile of blocks lies, each
block's score, the pruned-block decision and in-block ranks.

Vocabulary used by every block kernel and helper here:

- the data is a 2-D ``n_rows x n_cols`` tensor cut into ``BLOCK_ROWS x BLOCK_COLS`` blocks;
  the block grid has ``n_block_cols = cdiv(n_cols, BLOCK_COLS)`` columns and ``n_blocks``
  blocks in all; edge blocks may be partial;
- ``blocks`` is an int64 vector of ``BLOCKS_PER_PROGRAM`` consecutive flat block indices
  (row-major over the block grid: block ``(block_row, block_col)`` has index
  ``block_row * n_block_cols + block_col``); indices ``>= n_blocks`` are padding and are
  masked off everywhere;
- with ``HAS_SCALE``, a float scale of the same 2-D shape (strides 0 where it is broadcast)
  weighs each element: scores and in-block ranks use ``t = float32(|x|) * float32(scale)``
  (L1; ``t * t`` for L2) where they would use ``|x|`` (``x * x``);
- a *position* ``pos`` is the row-major index of an element inside its block:
  ``row = block_row * BLOCK_ROWS + pos // BLOCK_COLS``, ``col = block_col * BLOCK_COLS + pos % BLOCK_COLS``.

Two paths, chosen per block shape by ``_config.block_launch``:

- the *tile* path (``BLOCK_IN_REGISTERS``): each block is held whole as one row of a
  ``[BLOCKS_PER_PROGRAM, BLOCK_SIZE_POW2]`` register tile, ``BLOCK_SIZE_POW2`` being the block's
  element count rounded up to a power of two (the columns past the block size are padding);
- the *loop* path: the positions are walked one at a time with ``[BLOCKS_PER_PROGRAM]`` vectors.

Every score is summed in the same order as the torch backend and the reference's
``avg_pool2d``: one element at a time, row-major, in float32; then divided with
correct rounding. Launch these kernels with ``enable_fp_fusion=False`` so ``s + x*x``
is never contracted into an FMA, which would round differently.
"""

import triton
import triton.language as tl


@triton.jit
def block_coordinates(blocks, n_block_cols):
    """``(block_row, block_col)`` of flat block indices ``blocks``: ``divmod(blocks, n_block_cols)``
    (the remainder as ``blocks - block_row * n_block_cols``, saving a second division)."""
    block_row = blocks // n_block_cols
    return block_row, blocks - block_row * n_block_cols


@triton.jit
def block_counts(
    blocks, n_rows, n_cols, n_block_cols, n_blocks, BLOCK_ROWS: tl.constexpr, BLOCK_COLS: tl.constexpr,
):
    """Elements of each block inside the tensor, as float32 (1 for out-of-range blocks).

    ``min(n_rows - block_row * BLOCK_ROWS, BLOCK_ROWS) * min(n_cols - block_col * BLOCK_COLS, BLOCK_COLS)``:
    the divisor of ``avg_pool2d(..., ceil_mode=True)``. Padding blocks get 1, not 0, so that
    their (discarded) mean is not 0/0.
    """
    block_row, block_col = block_coordinates(blocks, n_block_cols)
    rows = tl.minimum(n_rows - block_row * BLOCK_ROWS, BLOCK_ROWS)
    cols = tl.minimum(n_cols - block_col * BLOCK_COLS, BLOCK_COLS)
    return tl.where(blocks < n_blocks, rows * cols, 1).to(tl.float32)


@triton.jit
def tile_offsets(
    blocks, n_rows, n_cols, n_block_cols, n_blocks,
    BLOCK_ROWS: tl.constexpr, BLOCK_COLS: tl.constexpr, BLOCK_SIZE_POW2: tl.constexpr, FLAT_ADDRESSING: tl.constexpr,
):
    """Row and column (``[BLOCKS_PER_PROGRAM, BLOCK_SIZE_POW2]``, int64) of every position of
    every block, and whether it holds data (an in-range block, a position below the block
    size, an element inside the tensor).

    ``FLAT_ADDRESSING``: the tensors are contiguous with ``(1, BLOCK_COLS)`` blocks that tile
    each row exactly (``n_cols % BLOCK_COLS == 0``), launched with the dense strides
    ``(n_cols, 1)``. Then the general offset ``row * n_cols + col``, with
    ``row = blocks // n_block_cols`` and ``col = (blocks % n_block_cols) * BLOCK_COLS + pos``,
    equals ``blocks * BLOCK_COLS + pos``: the path returns ``row = 0`` and that flat offset as
    ``col`` (so ``col`` may exceed ``n_cols``), a block's elements are one contiguous range and
    loads vectorise. No element can lie outside the tensor, so only padding is masked.
    """
    pos = tl.arange(0, BLOCK_SIZE_POW2)
    if FLAT_ADDRESSING:
        row = blocks[:, None] * 0  # int64 zeros of shape [BLOCKS_PER_PROGRAM, 1]
        col = blocks[:, None] * BLOCK_COLS + pos[None, :]
        valid = (blocks[:, None] < n_blocks) & (pos[None, :] < BLOCK_COLS)
    else:
        block_row, block_col = block_coordinates(blocks, n_block_cols)
        row = block_row[:, None] * BLOCK_ROWS + (pos // BLOCK_COLS)[None, :]
        col = block_col[:, None] * BLOCK_COLS + (pos % BLOCK_COLS)[None, :]
        valid = ((blocks[:, None] < n_blocks) & (pos[None, :] < BLOCK_ROWS * BLOCK_COLS)
                 & (row < n_rows) & (col < n_cols))
    return row, col, valid


@triton.jit
def load_scale(scale_ptr, offsets, m, HAS_SCALE: tl.constexpr):
    """The scale of each element (float32, shape of ``offsets``; ``scale_ptr + offsets`` where
    ``m``), or, without ``HAS_SCALE``, nothing read: a placeholder the helpers below ignore."""
    if HAS_SCALE:
        s = tl.load(scale_ptr + offsets, mask=m, other=0.0).to(tl.float32)
    else:
        s = 1.0
    return s


@triton.jit
def magnitudes(x, s, HAS_SCALE: tl.constexpr):
    """What in-block ranks order by, float32, elementwise: ``|float32(x)|``, or with
    ``HAS_SCALE`` ``t = |float32(x) * s|`` (``s``: float32 scale from ``load_scale``, ``>= 0``,
    so ``t == float32(|x|) * s`` bit for bit, and a zero is +0). Both norms rank by it."""
    xf = x.to(tl.float32)
    if HAS_SCALE:
        t = tl.abs(xf * s)
    else:
        t = tl.abs(xf)
    return t


@triton.jit
def element_values(x, s, L2_NORM: tl.constexpr, HAS_SCALE: tl.constexpr):
    """What a score averages, in float32: ``|float32(x)|`` (L1) or ``float32(x) * float32(x)``
    (``L2_NORM``), elementwise, any shape; with ``HAS_SCALE``, ``t`` or ``t * t`` instead
    (``t = magnitudes(x, s, True)``)."""
    if HAS_SCALE:
        t = magnitudes(x, s, True)
        if L2_NORM:
            v = t * t
        else:
            v = t
    else:
        xf = x.to(tl.float32)
        if L2_NORM:
            v = xf * xf
        else:
            v = tl.abs(xf)
    return v


@triton.jit
def flag_clear(flag_ptr, LENGTH: tl.constexpr):
    """``[LENGTH]`` bool, every entry ``flag == 0``: is the non-finite flag (int32[1] at
    ``flag_ptr``) still clear? (A vector load: Triton's interpreter mistypes a scalar comparison
    combined with a vector mask.)"""
    return tl.load(flag_ptr + tl.zeros([LENGTH], tl.int32)) == 0


@triton.jit
def is_nonfinite(x):
    """NaN or infinite, elementwise, judged in ``x``'s own dtype when it is float64 (a cast to
    float32 would turn finite values beyond float32's range, such as 1e300, into infinities).
    ``xf != xf`` is ``isnan(xf)``."""
    if x.dtype == tl.float64:
        xf = x
    else:
        xf = x.to(tl.float32)
    return (xf != xf) | (tl.abs(xf) == float("inf"))


@triton.jit
def tile_sums(
    x, s, valid, L2_NORM: tl.constexpr, HAS_SCALE: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    BLOCK_SIZE_POW2: tl.constexpr,
):
    """Sum of each block's values (``[BLOCKS_PER_PROGRAM, BLOCK_SIZE_POW2]`` tile ->
    ``[BLOCKS_PER_PROGRAM]`` float32), row-major, one at a time:
    ``(((v[:, 0] + v[:, 1]) + v[:, 2]) + ... + v[:, BLOCK_SIZE - 1])``.

    Column ``i`` is taken as ``tl.sum(tl.where(pos == i, v, 0.0), axis=1)``: a sum of one
    value and zeros, which is that value exactly (``v + 0.0 == v`` for every ``v >= +0``, in
    any reduction order), so the only rounding is that of the sequential additions.
    Invalid positions count as 0. ``s``: the tile's scales (``load_scale``).
    """
    v = tl.where(valid, element_values(x, s, L2_NORM, HAS_SCALE), 0.0)
    pos = tl.arange(0, BLOCK_SIZE_POW2)[None, :]
    total = tl.sum(tl.where(pos == 0, v, 0.0), axis=1)  # picking one value and adding zeros is exact
    for i in tl.static_range(1, BLOCK_SIZE):
        total = total + tl.sum(tl.where(pos == i, v, 0.0), axis=1)
    return total


@triton.jit
def position_in_block(block_row, block_col, inside, pos, n_rows, n_cols,
                      BLOCK_ROWS: tl.constexpr, BLOCK_COLS: tl.constexpr):
    """Row and column of position ``pos`` (row-major inside the block) of each block, and
    whether that element lies inside the tensor (``[BLOCKS_PER_PROGRAM]`` each; the loop path's
    way of walking a block: ``row = block_row * BLOCK_ROWS + pos // BLOCK_COLS``,
    ``col = block_col * BLOCK_COLS + pos % BLOCK_COLS``)."""
    row = block_row * BLOCK_ROWS + pos // BLOCK_COLS
    col = block_col * BLOCK_COLS + pos % BLOCK_COLS
    return row, col, inside & (row < n_rows) & (col < n_cols)


@triton.jit
def loop_sums(
    x_ptr, scale_ptr, blocks, n_rows, n_cols, n_block_cols, n_blocks, x_row_stride, x_col_stride,
    scale_row_stride, scale_col_stride,
    L2_NORM: tl.constexpr, HAS_SCALE: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK_COLS: tl.constexpr,
):
    """Sum of each block's values (``[BLOCKS_PER_PROGRAM]`` float32, positions in row-major
    order, one at a time) and whether each block holds a non-finite element, walking the
    positions (the loop path). ``x_ptr``: the data, element ``(row, col)`` at
    ``row * x_row_stride + col * x_col_stride``; ``scale_ptr``: with ``HAS_SCALE``, its scale at
    ``row * scale_row_stride + col * scale_col_stride``."""
    block_row, block_col = block_coordinates(blocks, n_block_cols)
    inside = blocks < n_blocks
    s = tl.zeros(blocks.shape, tl.float32)
    bad = tl.zeros(blocks.shape, tl.int1)
    for pos in range(BLOCK_ROWS * BLOCK_COLS):
        row, col, holds = position_in_block(block_row, block_col, inside, pos, n_rows, n_cols, BLOCK_ROWS, BLOCK_COLS)
        x = tl.load(x_ptr + row * x_row_stride + col * x_col_stride, mask=holds, other=0.0)
        scale = load_scale(scale_ptr, row * scale_row_stride + col * scale_col_stride, holds, HAS_SCALE)
        s = s + element_values(x, scale, L2_NORM, HAS_SCALE)
        bad = bad | (holds & is_nonfinite(x))
    return s, bad


@triton.jit
def block_scores(
    x_ptr, scale_ptr, blocks, n_rows, n_cols, n_block_cols, n_blocks, x_row_stride, x_col_stride,
    scale_row_stride, scale_col_stride, L2_NORM: tl.constexpr, HAS_SCALE: tl.constexpr, BLOCK_ROWS: tl.constexpr,
    BLOCK_COLS: tl.constexpr, BLOCK_SIZE_POW2: tl.constexpr,
    BLOCK_IN_REGISTERS: tl.constexpr, FLAT_ADDRESSING: tl.constexpr,
):
    """Each block's score (``[BLOCKS_PER_PROGRAM]`` float32) and whether any of the tile's data
    is non-finite (an int32 scalar, 0 or 1).

    The score is ``div_rn(sum, count)``: the row-major float32 sum of ``element_values`` over
    the block's elements inside the tensor, divided with correct rounding by their count
    (``block_counts``), as torch's float32 ``sum / count``. ``x_ptr``: the data, element
    ``(row, col)`` at ``row * x_row_stride + col * x_col_stride``. With ``HAS_SCALE`` the sums are
    of ``t`` or ``t * t`` (``element_values``), the scale of ``(row, col)`` at ``scale_ptr +
    row * scale_row_stride + col * scale_col_stride`` (0 strides for broadcast dimensions);
    without it ``scale_ptr`` is never read. ``BLOCK_IN_REGISTERS`` picks the tile path, else the
    loop path; ``FLAT_ADDRESSING`` (tile path only) as in ``tile_offsets``.
    """
    if BLOCK_IN_REGISTERS:
        row, col, valid = tile_offsets(blocks, n_rows, n_cols, n_block_cols, n_blocks, BLOCK_ROWS, BLOCK_COLS,
                                       BLOCK_SIZE_POW2, FLAT_ADDRESSING)
        x = tl.load(x_ptr + row * x_row_stride + col * x_col_stride, mask=valid, other=0.0)
        scale = load_scale(scale_ptr, row * scale_row_stride + col * scale_col_stride, valid, HAS_SCALE)
        s = tile_sums(x, scale, valid, L2_NORM, HAS_SCALE, BLOCK_ROWS * BLOCK_COLS, BLOCK_SIZE_POW2)
        bad = tl.max((valid & is_nonfinite(x)).to(tl.int32))
    else:
        s, bad_blocks = loop_sums(x_ptr, scale_ptr, blocks, n_rows, n_cols, n_block_cols, n_blocks, x_row_stride,
                                  x_col_stride, scale_row_stride, scale_col_stride, L2_NORM, HAS_SCALE,
                                  BLOCK_ROWS, BLOCK_COLS)
        bad = tl.max(bad_blocks.to(tl.int32))
    counts = block_counts(blocks, n_rows, n_cols, n_block_cols, n_blocks, BLOCK_ROWS, BLOCK_COLS)
    return tl.math.div_rn(s, counts), bad


@triton.jit
def pruned_blocks(scores, blocks, n_blocks, threshold_bits, ties_pruned, ties_before):
    """Which blocks are pruned (``[BLOCKS_PER_PROGRAM]`` bool): those whose score is below the
    threshold, and the first ``ties_pruned`` (lowest block index first, over the whole tensor)
    of those equal to it.

    Plain expression: ``score < t or (score == t and tie_rank <= ties_pruned)``, ``t`` the
    float32 whose bits are ``threshold_bits``, ``tie_rank`` the 1-based index of a block among
    all blocks scoring ``t`` (``ties_before``: the ties in earlier tiles, plus the inclusive
    running count of ties in this tile). Scores of finite data are ``>= +0`` (never ``-0``), and
    non-negative float32s order like their int32 bit patterns, so the comparisons are made on
    bits: that also lets ``threshold_bits = 0x7FFFFFFF`` (above +inf's bits) prune every block.

    ``threshold_bits``: int64 scalar; ``ties_before`` and ``ties_pruned`` are int64, so that counts
    past 2**31 blocks do not wrap.
    """
    inside = blocks < n_blocks
    bits = scores.to(tl.int32, bitcast=True)  # non-negative floats order like their bits
    equal = inside & (bits == threshold_bits)
    tie_rank = ties_before + tl.cumsum(equal.to(tl.int32), 0).to(tl.int64)  # 1-based
    return inside & ((bits < threshold_bits) | (equal & (tie_rank <= ties_pruned)))


@triton.jit
def tile_ranks(mag, valid, BLOCK_SIZE_POW2: tl.constexpr):
    """Rank of each element by its magnitude ``mag`` (``magnitudes``: ``|x|``, or ``t`` with a
    scale) inside its block (``[BLOCKS_PER_PROGRAM, BLOCK_SIZE_POW2]`` int32): its index in a
    stable ascending sort of the block by ``mag``,
    ``rank[i] = #{j : mag_j < mag_i or (mag_j == mag_i and j < i)}`` (ties: lower position first),
    by all ``BLOCK_SIZE_POW2**2`` pairwise comparisons. The ``zeros_per_block`` elements of rank
    below it are the ones zeroed.

    Padding positions hold +inf and so never rank ahead of (finite) data.
    """
    mag = tl.where(valid, mag, float("inf"))
    mag_i = mag[:, :, None]
    mag_j = mag[:, None, :]
    i = tl.arange(0, BLOCK_SIZE_POW2)[:, None]
    j = tl.arange(0, BLOCK_SIZE_POW2)[None, :]
    ahead = (mag_j < mag_i) | ((mag_j == mag_i) & (j < i))
    return tl.sum(ahead.to(tl.int32), axis=2)
