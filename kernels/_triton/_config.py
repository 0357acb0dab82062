"""The only tuning numbers of the Triton backend, as one launch heuristic.

Kernels are memory-bound: each program moves a few thousand elements. Blocks of up to
``SMALL_BLOCK`` elements (after rounding up to a power of two) are held whole in
registers (the "tile" path, vectorised loads, pairwise in-block ranks); larger blocks are
walked one position at a time (the "loop" path).
"""

from __future__ import annotations

from typing import NamedTuple

import triton

SMALL_BLOCK = 16
ELEMENTS_PER_PROGRAM = 1024  # tile path: elements a program loads per tensor
RANK_PAIRS_PER_PROGRAM = 4096  # tile path: BLOCKS_PER_PROGRAM * BLOCK_SIZE_POW2**2 comparisons for in-block ranks
LOOP_TILE = 128  # loop path: blocks per program
SELECT_TILE = 2048  # radix selection: scores per program and step
SELECT_PROGRAMS = 528  # radix selection: at most this many programs (4 per SM of an H100/H200)
ELEMENTWISE_TILE = 2048  # apply_mask: elements per program
NUM_WARPS = 4
# Integer arguments: Triton compiles one variant per class of value (i32 or i64; == 1, a
# constant; divisible by 16, a hint), not per value. Arguments whose class gives the
# compiler nothing to use are not specialised (``do_not_specialize``, per kernel): n_rows
# (only in `row < n_rows` masks), n_block_cols (only a divisor), zeros_per_block (only
# compared with ranks), apply_mask's n_cols (only a divisor off the flat path). Sizes and
# strides that decide vectorised loads and stores (n_cols, n_blocks, n_elements, every stride:
# `== 1` makes a column contiguous) stay specialised.
DO_NOT_SPECIALIZE = {
    "_block_norm_kernel": ("n_rows", "n_block_cols"),
    "_block_mask_kernel": ("n_rows", "n_block_cols", "zeros_per_block"),
    "_apply_mask_kernel": ("n_cols",),
    # Group kernels (block_mask_group): n_tensors only sizes the member table; every size and
    # stride is read from that table, so none is specialised anyway.
    "_group_block_norm_kernel": ("n_tensors",),
    "_group_radix_histogram_kernel": ("n_tensors",),
    "_group_tie_count_kernel": ("n_tensors",),
    "_group_block_mask_kernel": ("n_tensors", "zeros_per_block"),
}
# enable_fp_fusion=False everywhere: score sums must never be contracted into FMAs.
LAUNCH_OPTIONS = {"num_warps": NUM_WARPS, "enable_fp_fusion": False}


class BlockLaunch(NamedTuple):
    """How the block kernels (scores, masks) are launched for one block shape."""

    blocks_per_program: int  # BLOCKS_PER_PROGRAM: blocks per program (a power of two)
    block_size_pow2: int  # BLOCK_SIZE_POW2: block size rounded up to a power of two
    in_registers: bool  # BLOCK_IN_REGISTERS: tile path (True) or loop path (False)


def block_launch(block_shape: tuple[int, int]) -> BlockLaunch:
    size_pow2 = triton.next_power_of_2(block_shape[0] * block_shape[1])
    if size_pow2 <= SMALL_BLOCK:
        tile = max(1, min(ELEMENTS_PER_PROGRAM // size_pow2, RANK_PAIRS_PER_PROGRAM // (size_pow2 * size_pow2)))
        return BlockLaunch(triton.next_power_of_2(tile), size_pow2, True)
    return BlockLaunch(LOOP_TILE, size_pow2, False)


def select_grid(n: int) -> int:
    return max(1, min(triton.cdiv(n, SELECT_TILE), SELECT_PROGRAMS))


def group_select_programs(n: int, group_total: int) -> int:
    """Histogram programs for ``n`` of the ``group_total`` scores that a group launch selects
    over: its share of ``SELECT_PROGRAMS`` (so the group launch has about as many as one
    per-tensor launch), at least 1, at most one per ``SELECT_TILE`` scores."""
    return max(1, min(triton.cdiv(n, SELECT_TILE), triton.cdiv(SELECT_PROGRAMS * n, group_total)))
