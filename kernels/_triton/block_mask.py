"""Fused mask-and-apply: recompute each block's score, decide it against the selected
threshold, rank the elements of pruned blocks, write the bool mask and, where asked,
the masked tensor (in place: only the zeroed elements are written)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels._triton import _config
from kernels._triton._blocks import (
    block_coordinates,
    block_scores,
    flag_clear,
    pruned_blocks,
    tile_offsets,
    tile_ranks,
)
from kernels._triton.block_norm import flat_layout, launch_scores
from kernels._triton.select import threshold


@triton.jit
def _store_kept(out_ptr, x, keep, m, APPLY: tl.constexpr, WRITE_KEPT: tl.constexpr):
    """out = x * keep where ``m``; in place (not WRITE_KEPT) only the zeroed elements."""
    if APPLY:
        y = x * keep.to(x.dtype)
        if WRITE_KEPT:
            tl.store(out_ptr, y, mask=m)
        else:
            tl.store(out_ptr, y, mask=m & ~keep)


@triton.jit
def _block_mask_kernel(
    x_ptr, out_ptr, mask_ptr, flag_ptr, state_ptr, ties_before_ptr,
    H, W, nbw, n_blocks, sxr, sxc, sor, soc, Z,
    L2: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr, P2: tl.constexpr, TILE: tl.constexpr,
    SMALL: tl.constexpr, FLAT: tl.constexpr, FULL: tl.constexpr, APPLY: tl.constexpr, WRITE_KEPT: tl.constexpr,
):
    pid = tl.program_id(0)
    b = pid.to(tl.int64) * TILE + tl.arange(0, TILE)
    data_ok = flag_clear(flag_ptr, TILE)  # nothing is written over bad data
    scores, _ = block_scores(x_ptr, b, H, W, nbw, n_blocks, sxr, sxc, L2, BH, BW, P2, SMALL, FLAT)
    pruned = pruned_blocks(scores, b, n_blocks, tl.load(state_ptr), tl.load(state_ptr + 1), tl.load(ties_before_ptr + pid))
    if SMALL:
        row, col, valid = tile_offsets(b, H, W, nbw, n_blocks, BH, BW, P2, FLAT)
        x = tl.load(x_ptr + row * sxr + col * sxc, mask=valid, other=0.0)
        if FULL:
            keep = tl.broadcast_to(~pruned[:, None], [TILE, P2])
        else:
            keep = ~pruned[:, None] | (tile_ranks(x, valid, P2) >= Z)
        tl.store(mask_ptr + row * W + col, keep, mask=valid)
        _store_kept(out_ptr + row * sor + col * soc, x, keep, valid & data_ok[:, None], APPLY, WRITE_KEPT)
    else:
        brow, bcol = block_coordinates(b, nbw)
        inside = b < n_blocks
        for i in range(BH * BW):
            row = brow * BH + i // BW
            col = bcol * BW + i % BW
            m = inside & (row < H) & (col < W)
            x = tl.load(x_ptr + row * sxr + col * sxc, mask=m, other=0.0)
            if FULL:
                keep = ~pruned
            else:
                mi = tl.abs(x.to(tl.float32))
                rank = tl.zeros(b.shape, tl.int32)
                for j in range(BH * BW):
                    rj = brow * BH + j // BW
                    cj = bcol * BW + j % BW
                    mj_ok = inside & (rj < H) & (cj < W)
                    mj = tl.abs(tl.load(x_ptr + rj * sxr + cj * sxc, mask=mj_ok, other=0.0).to(tl.float32))
                    rank += (mj_ok & ((mj < mi) | ((mj == mi) & (j < i)))).to(tl.int32)
                keep = ~pruned | (rank >= Z)
            tl.store(mask_ptr + row * W + col, keep, mask=m)
            _store_kept(out_ptr + row * sor + col * soc, x, keep, m & data_ok, APPLY, WRITE_KEPT)


def sparsify(
    x: torch.Tensor, k: int, block_shape: tuple[int, int], zeros_per_block: int, norm: str,
    out: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep-mask of ``x`` (2-D) pruning its ``k`` lowest-scoring blocks, and the 0-dim bool
    non-finite flag; with ``out``, also ``out = x * mask`` (``out`` may be ``x``), unless
    the data is bad."""
    h, w = x.shape
    bh, bw = block_shape
    nbw = triton.cdiv(w, bw)
    launch = _config.block_launch(block_shape)
    scores, flag = launch_scores(x, block_shape, norm)
    n_blocks = scores.numel()
    state, ties_before = threshold(scores, k if zeros_per_block > 0 else 0, launch.tile)
    mask = torch.empty(h, w, dtype=torch.bool, device=x.device)
    target = x if out is None else out
    _block_mask_kernel[(triton.cdiv(n_blocks, launch.tile),)](
        x, target, mask, flag, state, ties_before,
        h, w, nbw, n_blocks, x.stride(0), x.stride(1), target.stride(0), target.stride(1), zeros_per_block,
        L2=norm == "L2", BH=bh, BW=bw, P2=launch.p2, TILE=launch.tile, SMALL=launch.small,
        FLAT=flat_layout(x, block_shape, target), FULL=zeros_per_block >= bh * bw,
        APPLY=out is not None, WRITE_KEPT=out is not None and out.data_ptr() != x.data_ptr(),
        **_config.LAUNCH_OPTIONS,
    )
    return mask, (flag != 0).reshape(())


def block_mask(
    x: torch.Tensor, k: int, block_shape: tuple[int, int], zeros_per_block: int, norm: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep-mask of ``x`` (2-D) pruning its ``k`` lowest-scoring blocks, and the non-finite flag."""
    return sparsify(x, k, block_shape, zeros_per_block, norm, None)
