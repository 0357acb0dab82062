"""Block scores: one program per tile of blocks; also raises the non-finite flag."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from blocksparsity.kernels._common import block_grid
from blocksparsity.kernels._triton import _config, _device
from blocksparsity.kernels._triton._blocks import block_scores


@triton.jit(do_not_specialize=_config.DO_NOT_SPECIALIZE["_block_norm_kernel"])
def _block_norm_kernel(
    x_ptr, scale_ptr, scores_ptr, flag_ptr, n_rows, n_cols, n_block_cols, n_blocks, x_row_stride, x_col_stride,
    scale_row_stride, scale_col_stride,
    L2_NORM: tl.constexpr, HAS_SCALE: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK_COLS: tl.constexpr,
    BLOCK_SIZE_POW2: tl.constexpr,
    BLOCKS_PER_PROGRAM: tl.constexpr, BLOCK_IN_REGISTERS: tl.constexpr, FLAT_ADDRESSING: tl.constexpr,
):
    """Score of every block: ``scores[b]`` = mean of ``|x|`` (L1) or ``x*x`` (L2) over block
    ``b``'s elements inside the tensor, in float32 (``avg_pool2d(..., ceil_mode=True)`` bit for
    bit); with ``HAS_SCALE``, of ``t = float32(|x|) * float32(scale)`` (L1) or ``t*t`` (L2);
    sets the flag if any element of ``x`` is NaN or infinite.

    Pointers:
      x_ptr: the data, ``[n_rows, n_cols]``, float32/float16/bfloat16, element ``(row, col)`` at
        ``row * x_row_stride + col * x_col_stride`` (any strides; ``(n_cols, 1)`` with
        ``FLAT_ADDRESSING``).
      scale_ptr: with ``HAS_SCALE``, the scale broadcast to ``[n_rows, n_cols]``,
        float32/float16/bfloat16/float64 (used as float32), element ``(row, col)`` at
        ``row * scale_row_stride + col * scale_col_stride``: stride 0 in a broadcast dimension
        (``(0, 1)`` for a ``(1, W)`` scale, ``(1, 0)`` for ``(H, 1)``, ``(0, 0)`` for one value);
        ``(n_cols, 1)`` with ``FLAT_ADDRESSING`` (only a contiguous full scale takes that path).
        Without ``HAS_SCALE`` never read (the launcher passes ``x_ptr`` and strides 0).
      scores_ptr: ``[n_blocks]`` float32, contiguous: the block grid
        ``[cdiv(n_rows, BLOCK_ROWS), n_block_cols]`` flattened row-major.
      flag_ptr: ``[1]`` int32, zeroed by the caller; set to 1 when the data is not finite.

    Grid: ``(cdiv(n_blocks, BLOCKS_PER_PROGRAM),)``; program ``p`` scores blocks
    ``[p * BLOCKS_PER_PROGRAM, (p + 1) * BLOCKS_PER_PROGRAM)``.

    Constexprs:
      L2_NORM: score ``x*x`` (L2) instead of ``|x|`` (L1).
      HAS_SCALE: read ``scale_ptr`` and score ``t`` (``t*t``); False compiles to the unscaled kernel.
      BLOCK_ROWS, BLOCK_COLS: the block shape.
      BLOCK_SIZE_POW2: ``BLOCK_ROWS * BLOCK_COLS`` rounded up to a power of two (tile width).
      BLOCKS_PER_PROGRAM: blocks per program (a power of two).
      BLOCK_IN_REGISTERS: the tile path (each block one row of a register tile), else the loop path.
      FLAT_ADDRESSING: blocks are flat ranges ``[b * BLOCK_COLS, (b + 1) * BLOCK_COLS)`` (see
        ``_blocks.tile_offsets``).
    """
    blocks = tl.program_id(0).to(tl.int64) * BLOCKS_PER_PROGRAM + tl.arange(0, BLOCKS_PER_PROGRAM)
    scores, bad = block_scores(x_ptr, scale_ptr, blocks, n_rows, n_cols, n_block_cols, n_blocks, x_row_stride,
                               x_col_stride, scale_row_stride, scale_col_stride, L2_NORM, HAS_SCALE, BLOCK_ROWS,
                               BLOCK_COLS, BLOCK_SIZE_POW2, BLOCK_IN_REGISTERS, FLAT_ADDRESSING)
    tl.store(scores_ptr + blocks, scores, mask=blocks < n_blocks)
    tl.store(flag_ptr, 1, mask=bad != 0)


def flat_layout(x: torch.Tensor, block_shape: tuple[int, int], *others: torch.Tensor) -> bool:
    """Can blocks be addressed as flat ranges (contiguous data, (1, bw) blocks tiling rows)?

    Flat addressing takes element ``i`` at offset ``i``: launch it with ``strides(t, True)``,
    never with ``t.stride()``, which for a size-1 dim may be anything (``torch.randn(1, 64).t()``
    is contiguous with strides (1, 64))."""
    return (
        block_shape[0] == 1
        and x.shape[1] % block_shape[1] == 0
        and all(t.is_contiguous() for t in (x, *others))
    )


def scale_operands(x: torch.Tensor, scale: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    """The scale, broadcast to ``x``'s shape, as one more operand for ``flat_layout`` (none
    without one): a broadcast scale is not contiguous, so it keeps the kernels off the flat
    path, where an element's row is not known; a contiguous full scale may share it."""
    return () if scale is None else (scale.expand(x.shape),)


def strides(t: torch.Tensor, flat: bool) -> tuple[int, int]:
    """(row, column) strides of 2-D ``t`` as the kernels address it: those of a dense
    row-major layout on the flat path (where ``t`` is contiguous, so they are its own in
    every dim longer than 1), else its own."""
    return (t.shape[1], 1) if flat else (t.stride(0), t.stride(1))


def scale_args(x: torch.Tensor, scale: torch.Tensor | None, flat: bool) -> tuple:
    """``(scale_ptr, scale_row_stride, scale_col_stride)`` for a launch over ``x``: the scale
    (broadcast to ``x``'s shape by ``expand``, so a broadcast dimension has stride 0) and its
    strides as the kernels address it, or, without one, ``x`` and strides 0 (never read)."""
    if scale is None:
        return x, 0, 0
    return (scale, *strides(scale.expand(x.shape), flat))


def launch_scores(
    x: torch.Tensor, block_shape: tuple[int, int], norm: str, scale: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores as a flat float32 vector over the block grid, int32[1] non-finite flag); ``scale``:
    None, or float broadcastable to ``x`` (2-D)."""
    n_rows, n_cols = x.shape
    bh, bw = block_shape
    n_block_rows, n_block_cols = block_grid((n_rows, n_cols), block_shape)
    n_blocks = n_block_rows * n_block_cols
    launch = _config.block_launch(block_shape)
    scores = torch.empty(n_blocks, dtype=torch.float32, device=x.device)
    flag = torch.zeros(1, dtype=torch.int32, device=x.device)
    flat = flat_layout(x, block_shape, *scale_operands(x, scale))
    scale_ptr, *scale_strides = scale_args(x, scale, flat)
    with _device.on_device(x):
        _block_norm_kernel[(triton.cdiv(n_blocks, launch.blocks_per_program),)](
            x, scale_ptr, scores, flag, n_rows, n_cols, n_block_cols, n_blocks, *strides(x, flat), *scale_strides,
            L2_NORM=norm == "L2", HAS_SCALE=scale is not None, BLOCK_ROWS=bh, BLOCK_COLS=bw,
            BLOCK_SIZE_POW2=launch.block_size_pow2,
            BLOCKS_PER_PROGRAM=launch.blocks_per_program, BLOCK_IN_REGISTERS=launch.in_registers,
            FLAT_ADDRESSING=flat, **_config.LAUNCH_OPTIONS,
        )
    return scores, flag


def block_norm(
    x: torch.Tensor, block_shape: tuple[int, int], norm: str, *, scale: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Block scores of ``x`` (2-D), shaped as the block grid, and the 0-dim bool non-finite flag;
    ``scale``: None, or float broadcastable to ``x`` (scores of ``t``, see ``_block_norm_kernel``)."""
    scores, flag = launch_scores(x, block_shape, norm, scale)
    return scores.view(block_grid(x.shape, block_shape)), (flag != 0).reshape(())
