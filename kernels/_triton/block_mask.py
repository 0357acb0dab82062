"""Fused mask-and-apply: recompute each block's score, decide it against the selected
threshold, rank the elements of pruned blocks, write the bool mask and, where asked,
the masked tensor (in place: only the zeroed elements are written).

The threshold may also come from elsewhere (``block_mask_given``: a selection over all
shards of a larger tensor), with per-block-row offsets for the ties this tensor's
blocks do not see."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from blocksparsity.kernels._common import Threshold, block_grid
from blocksparsity.kernels._triton import _config, _device
from blocksparsity.kernels._triton._blocks import (
    block_coordinates,
    block_scores,
    flag_clear,
    load_scale,
    magnitudes,
    position_in_block,
    pruned_blocks,
    tile_offsets,
    tile_ranks,
)
from blocksparsity.kernels._triton.block_norm import flat_layout, launch_scores, scale_args, scale_operands, strides
from blocksparsity.kernels._triton.select import threshold, tie_offsets


@triton.jit
def _store_kept(out_ptr, x, keep, m, WRITE_MASKED: tl.constexpr, WRITE_KEPT: tl.constexpr):
    """``out = x * keep`` where ``m`` (any shape; ``out_ptr`` already offset per element), if
    ``WRITE_MASKED``. In place (not ``WRITE_KEPT``) only the zeroed elements are stored: a kept
    element already holds ``x * 1 == x``. ``x * keep.to(x.dtype)`` is ``where(keep, x, x * 0)``,
    which keeps the sign of a zeroed ``-x`` as ``-0`` (as ``x * mask`` in torch)."""
    if WRITE_MASKED:
        y = x * keep.to(x.dtype)
        if WRITE_KEPT:
            tl.store(out_ptr, y, mask=m)
        else:
            tl.store(out_ptr, y, mask=m & ~keep)


@triton.jit
def _mask_tile(
    x_ptr, scale_ptr, out_ptr, mask_ptr, blocks, pruned, data_ok, n_rows, n_cols, n_block_cols, n_blocks,
    x_row_stride, x_col_stride, scale_row_stride, scale_col_stride, out_row_stride, out_col_stride, zeros_per_block,
    HAS_SCALE: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK_COLS: tl.constexpr, BLOCK_SIZE_POW2: tl.constexpr,
    BLOCKS_PER_PROGRAM: tl.constexpr, FLAT_ADDRESSING: tl.constexpr, PRUNE_WHOLE_BLOCKS: tl.constexpr,
    WRITE_MASKED: tl.constexpr, WRITE_KEPT: tl.constexpr,
):
    """The tile path of ``_block_mask_kernel``: mask (and ``out``) of a tile of whole blocks
    held as a ``[BLOCKS_PER_PROGRAM, BLOCK_SIZE_POW2]`` register tile. An element is kept when
    its block is not pruned or its in-block rank (``tile_ranks`` of ``magnitudes``: ``|x|``, or
    ``t`` with ``HAS_SCALE``) is ``>= zeros_per_block``."""
    row, col, valid = tile_offsets(blocks, n_rows, n_cols, n_block_cols, n_blocks, BLOCK_ROWS, BLOCK_COLS,
                                   BLOCK_SIZE_POW2, FLAT_ADDRESSING)
    x = tl.load(x_ptr + row * x_row_stride + col * x_col_stride, mask=valid, other=0.0)
    if PRUNE_WHOLE_BLOCKS:
        keep = tl.broadcast_to(~pruned[:, None], [BLOCKS_PER_PROGRAM, BLOCK_SIZE_POW2])
    else:
        scale = load_scale(scale_ptr, row * scale_row_stride + col * scale_col_stride, valid, HAS_SCALE)
        mag = magnitudes(x, scale, HAS_SCALE)
        keep = ~pruned[:, None] | (tile_ranks(mag, valid, BLOCK_SIZE_POW2) >= zeros_per_block)
    tl.store(mask_ptr + row * n_cols + col, keep, mask=valid)
    _store_kept(out_ptr + row * out_row_stride + col * out_col_stride, x, keep, valid & data_ok[:, None],
                WRITE_MASKED, WRITE_KEPT)


@triton.jit
def _mask_loop(
    x_ptr, scale_ptr, out_ptr, mask_ptr, blocks, pruned, data_ok, n_rows, n_cols, n_block_cols, n_blocks,
    x_row_stride, x_col_stride, scale_row_stride, scale_col_stride, out_row_stride, out_col_stride, zeros_per_block,
    HAS_SCALE: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK_COLS: tl.constexpr, PRUNE_WHOLE_BLOCKS: tl.constexpr,
    WRITE_MASKED: tl.constexpr, WRITE_KEPT: tl.constexpr,
):
    """The loop path of ``_block_mask_kernel``: mask (and ``out``) one position of every block
    of the tile at a time. The rank of position ``i`` is counted by reloading every position
    ``j`` of its block: ``#{j inside the tensor : |x_j| < |x_i| or (|x_j| == |x_i| and j < i)}``
    (as ``tile_ranks``; with ``HAS_SCALE``, ``t`` in place of ``|x|``, the scales reloaded too); kept
    when the block is not pruned or ``rank >= zeros_per_block``."""
    block_row, block_col = block_coordinates(blocks, n_block_cols)
    inside = blocks < n_blocks
    for i in range(BLOCK_ROWS * BLOCK_COLS):
        row, col, holds = position_in_block(block_row, block_col, inside, i, n_rows, n_cols, BLOCK_ROWS, BLOCK_COLS)
        x = tl.load(x_ptr + row * x_row_stride + col * x_col_stride, mask=holds, other=0.0)
        if PRUNE_WHOLE_BLOCKS:
            keep = ~pruned
        else:
            mag_i = magnitudes(x, load_scale(scale_ptr, row * scale_row_stride + col * scale_col_stride, holds,
                                             HAS_SCALE), HAS_SCALE)
            rank = tl.zeros(blocks.shape, tl.int32)
            for j in range(BLOCK_ROWS * BLOCK_COLS):
                row_j, col_j, holds_j = position_in_block(block_row, block_col, inside, j, n_rows, n_cols,
                                                          BLOCK_ROWS, BLOCK_COLS)
                x_j = tl.load(x_ptr + row_j * x_row_stride + col_j * x_col_stride, mask=holds_j, other=0.0)
                s_j = load_scale(scale_ptr, row_j * scale_row_stride + col_j * scale_col_stride, holds_j, HAS_SCALE)
                mag_j = magnitudes(x_j, s_j, HAS_SCALE)
                rank += (holds_j & ((mag_j < mag_i) | ((mag_j == mag_i) & (j < i)))).to(tl.int32)
            keep = ~pruned | (rank >= zeros_per_block)
        tl.store(mask_ptr + row * n_cols + col, keep, mask=holds)
        _store_kept(out_ptr + row * out_row_stride + col * out_col_stride, x, keep, holds & data_ok,
                    WRITE_MASKED, WRITE_KEPT)


@triton.jit(do_not_specialize=_config.DO_NOT_SPECIALIZE["_block_mask_kernel"])
def _block_mask_kernel(
    x_ptr, scale_ptr, out_ptr, mask_ptr, flag_ptr, threshold_ptr, ties_before_ptr, row_ties_ptr, n_rows, n_cols,
    n_block_cols, n_blocks, x_row_stride, x_col_stride, scale_row_stride, scale_col_stride, out_row_stride, out_col_stride,
    zeros_per_block, L2_NORM: tl.constexpr, HAS_SCALE: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK_COLS: tl.constexpr,
    BLOCK_SIZE_POW2: tl.constexpr, BLOCKS_PER_PROGRAM: tl.constexpr, BLOCK_IN_REGISTERS: tl.constexpr, HAS_ROW_TIES: tl.constexpr,
    FLAT_ADDRESSING: tl.constexpr, PRUNE_WHOLE_BLOCKS: tl.constexpr, WRITE_MASKED: tl.constexpr, WRITE_KEPT: tl.constexpr,
):
    """Keep-mask of every element, and optionally ``out = x * mask``, given the threshold.

    Each block's score is recomputed (as ``_block_norm_kernel``, bit for bit); a block is pruned
    when ``_blocks.pruned_blocks`` says so; inside a pruned block the ``zeros_per_block``
    elements of smallest ``|x|`` (with ``HAS_SCALE``: ``t``, as the scores; ties: earlier position) are dropped.

    Pointers:
      x_ptr: the data, ``[n_rows, n_cols]``, float32/float16/bfloat16, element ``(row, col)`` at
        ``row * x_row_stride + col * x_col_stride``.
      scale_ptr: with ``HAS_SCALE``, the scale, strides ``(scale_row_stride, scale_col_stride)`` (0 where
        broadcast), as in ``_block_norm_kernel``; otherwise unread (the launcher passes ``x_ptr``).
      out_ptr: ``[n_rows, n_cols]``, ``x``'s dtype, strides ``(out_row_stride, out_col_stride)``;
        written only with ``WRITE_MASKED`` (and then only while the flag is clear); may be
        ``x_ptr`` itself (in place). Without ``WRITE_MASKED`` the launcher passes ``x_ptr``.
      mask_ptr: ``[n_rows, n_cols]`` bool, contiguous (element at ``row * n_cols + col``): True = keep.
      flag_ptr: ``[1]`` int32 non-finite flag (set by ``_block_norm_kernel``), only read.
      threshold_ptr: ``[2]`` int64: the threshold score's float32 bits, and how many blocks
        scoring exactly the threshold are pruned (see ``select``).
      ties_before_ptr: ``[n_programs]`` int64: blocks scoring the threshold before program
        ``p``'s first block.
      row_ties_ptr: with ``HAS_ROW_TIES``, ``[cdiv(n_rows, BLOCK_ROWS)]`` int64: ties before each
        block row held by other shards of a larger tensor, added to ``ties_before``; otherwise
        unread (the launcher passes ``ties_before_ptr``).

    Grid: ``(cdiv(n_blocks, BLOCKS_PER_PROGRAM),)``, as the tie offsets were counted.

    Constexprs: ``L2_NORM``, ``HAS_SCALE``, ``BLOCK_ROWS``, ``BLOCK_COLS``, ``BLOCK_SIZE_POW2``,
    ``BLOCKS_PER_PROGRAM``, ``BLOCK_IN_REGISTERS``, ``FLAT_ADDRESSING`` as in ``_block_norm_kernel``;
      PRUNE_WHOLE_BLOCKS: ``zeros_per_block >= BLOCK_ROWS * BLOCK_COLS``: no ranks needed.
      WRITE_MASKED: also write ``out``.
      WRITE_KEPT: write every element of ``out`` (out of place); else only the zeroed ones (in place).
      HAS_ROW_TIES: read ``row_ties_ptr``.
    """
    pid = tl.program_id(0)
    blocks = pid.to(tl.int64) * BLOCKS_PER_PROGRAM + tl.arange(0, BLOCKS_PER_PROGRAM)
    data_ok = flag_clear(flag_ptr, BLOCKS_PER_PROGRAM)  # nothing is written over bad data
    scores, _ = block_scores(x_ptr, scale_ptr, blocks, n_rows, n_cols, n_block_cols, n_blocks, x_row_stride,
                             x_col_stride, scale_row_stride, scale_col_stride, L2_NORM, HAS_SCALE, BLOCK_ROWS, BLOCK_COLS,
                             BLOCK_SIZE_POW2, BLOCK_IN_REGISTERS, FLAT_ADDRESSING)
    ties_before = tl.load(ties_before_ptr + pid)
    if HAS_ROW_TIES:  # ties before each block row that the tensor does not hold (it is a shard)
        ties_before = ties_before + tl.load(row_ties_ptr + blocks // n_block_cols, mask=blocks < n_blocks, other=0)
    pruned = pruned_blocks(scores, blocks, n_blocks, tl.load(threshold_ptr), tl.load(threshold_ptr + 1), ties_before)
    if BLOCK_IN_REGISTERS:
        _mask_tile(x_ptr, scale_ptr, out_ptr, mask_ptr, blocks, pruned, data_ok, n_rows, n_cols, n_block_cols,
                   n_blocks, x_row_stride, x_col_stride, scale_row_stride, scale_col_stride, out_row_stride,
                   out_col_stride, zeros_per_block, HAS_SCALE, BLOCK_ROWS, BLOCK_COLS, BLOCK_SIZE_POW2, BLOCKS_PER_PROGRAM,
                   FLAT_ADDRESSING, PRUNE_WHOLE_BLOCKS, WRITE_MASKED, WRITE_KEPT)
    else:
        _mask_loop(x_ptr, scale_ptr, out_ptr, mask_ptr, blocks, pruned, data_ok, n_rows, n_cols, n_block_cols,
                   n_blocks, x_row_stride, x_col_stride, scale_row_stride, scale_col_stride, out_row_stride,
                   out_col_stride, zeros_per_block, HAS_SCALE, BLOCK_ROWS, BLOCK_COLS, PRUNE_WHOLE_BLOCKS, WRITE_MASKED,
                   WRITE_KEPT)


def _launch(
    x: torch.Tensor, out: torch.Tensor | None, flag: torch.Tensor, state: torch.Tensor, ties_before: torch.Tensor,
    row_ties: torch.Tensor | None, block_shape: tuple[int, int], zeros_per_block: int, norm: str,
    scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run ``_block_mask_kernel`` over ``x`` (2-D); returns the mask. ``scale``: None, or float
    broadcastable to ``x``."""
    n_rows, n_cols = x.shape
    bh, bw = block_shape
    n_block_rows, n_block_cols = block_grid((n_rows, n_cols), block_shape)
    n_blocks = n_block_rows * n_block_cols
    launch = _config.block_launch(block_shape)
    mask = torch.empty(n_rows, n_cols, dtype=torch.bool, device=x.device)
    target = x if out is None else out
    flat = flat_layout(x, block_shape, target, *scale_operands(x, scale))
    scale_ptr, *scale_strides = scale_args(x, scale, flat)
    with _device.on_device(x):
        _block_mask_kernel[(triton.cdiv(n_blocks, launch.blocks_per_program),)](
            x, scale_ptr, target, mask, flag, state, ties_before, ties_before if row_ties is None else row_ties,
            n_rows, n_cols, n_block_cols, n_blocks, *strides(x, flat), *scale_strides, *strides(target, flat),
            zeros_per_block, L2_NORM=norm == "L2", HAS_SCALE=scale is not None, BLOCK_ROWS=bh, BLOCK_COLS=bw,
            BLOCK_SIZE_POW2=launch.block_size_pow2,
            BLOCKS_PER_PROGRAM=launch.blocks_per_program, BLOCK_IN_REGISTERS=launch.in_registers,
            FLAT_ADDRESSING=flat, PRUNE_WHOLE_BLOCKS=zeros_per_block >= bh * bw,
            WRITE_MASKED=out is not None, WRITE_KEPT=out is not None and out.data_ptr() != x.data_ptr(),
            HAS_ROW_TIES=row_ties is not None, **_config.LAUNCH_OPTIONS,
        )
    return mask


def sparsify(
    x: torch.Tensor, k: int, block_shape: tuple[int, int], zeros_per_block: int, norm: str,
    out: torch.Tensor | None, *, scale: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep-mask of ``x`` (2-D) pruning its ``k`` lowest-scoring blocks, and the 0-dim bool
    non-finite flag; with ``out``, also ``out = x * mask`` (``out`` may be ``x``), unless
    the data is bad. ``scale``: None, or float broadcastable to ``x`` (scores and in-block
    ranks of ``t = float32(|x|) * float32(scale)``)."""
    scores, flag = launch_scores(x, block_shape, norm, scale)
    state, ties_before = threshold(scores, k, _config.block_launch(block_shape).blocks_per_program)
    mask = _launch(x, out, flag, state, ties_before, None, block_shape, zeros_per_block, norm, scale)
    return mask, (flag != 0).reshape(())


def block_mask(
    x: torch.Tensor, k: int, block_shape: tuple[int, int], zeros_per_block: int, norm: str,
    *, scale: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep-mask of ``x`` (2-D) pruning its ``k`` lowest-scoring blocks, and the non-finite flag
    (``scale`` as in ``sparsify``)."""
    return sparsify(x, k, block_shape, zeros_per_block, norm, None, scale=scale)


def block_mask_given(
    x: torch.Tensor,
    scores: torch.Tensor,
    threshold: Threshold,
    row_ties: torch.Tensor | None,
    block_shape: tuple[int, int],
    zeros_per_block: int,
    norm: str,
) -> torch.Tensor:
    """Keep-mask of ``x`` (2-D) given its block ``scores`` and a threshold selected elsewhere,
    with ``row_ties[block row]`` ties before each block row that ``x`` does not hold (as the
    torch backend's ``block_mask_given``)."""
    state = torch.stack([threshold.bits.to(torch.int64), threshold.ties_pruned.to(torch.int64)])
    ties_before = tie_offsets(scores.reshape(-1).contiguous(), state, _config.block_launch(block_shape).blocks_per_program)
    flag = torch.zeros(1, dtype=torch.int32, device=x.device)
    row_ties = None if row_ties is None else row_ties.to(torch.int64).contiguous()
    return _launch(x, None, flag, state, ties_before, row_ties, block_shape, zeros_per_block, norm)
