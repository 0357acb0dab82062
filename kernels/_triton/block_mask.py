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
    pruned_blocks,
    tile_offsets,
    tile_ranks,
)
from blocksparsity.kernels._triton.block_norm import flat_layout, launch_scores, strides
from blocksparsity.kernels._triton.select import threshold, tie_offsets


@triton.jit
def _store_kept(out_ptr, x, keep, m, APPLY: tl.constexpr, WRITE_KEPT: tl.constexpr):
    """out = x * keep where ``m``; in place (not WRITE_KEPT) only the zeroed elements."""
    if APPLY:
        y = x * keep.to(x.dtype)
        if WRITE_KEPT:
            tl.store(out_ptr, y, mask=m)
        else:
            tl.store(out_ptr, y, mask=m & ~keep)


@triton.jit(do_not_specialize=_config.DO_NOT_SPECIALIZE["_block_mask_kernel"])
def _block_mask_kernel(
    x_ptr, out_ptr, mask_ptr, flag_ptr, state_ptr, ties_before_ptr, row_ties_ptr,
    H, W, nbw, n_blocks, sxr, sxc, sor, soc, Z,
    L2: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr, P2: tl.constexpr, TILE: tl.constexpr,
    SMALL: tl.constexpr, FLAT: tl.constexpr, FULL: tl.constexpr, APPLY: tl.constexpr, WRITE_KEPT: tl.constexpr,
    ROW_TIES: tl.constexpr,
):
    pid = tl.program_id(0)
    b = pid.to(tl.int64) * TILE + tl.arange(0, TILE)
    data_ok = flag_clear(flag_ptr, TILE)  # nothing is written over bad data
    scores, _ = block_scores(x_ptr, b, H, W, nbw, n_blocks, sxr, sxc, L2, BH, BW, P2, SMALL, FLAT)
    ties_before = tl.load(ties_before_ptr + pid)
    if ROW_TIES:  # ties before each block row that the tensor does not hold (it is a shard)
        ties_before = ties_before + tl.load(row_ties_ptr + b // nbw, mask=b < n_blocks, other=0)
    pruned = pruned_blocks(scores, b, n_blocks, tl.load(state_ptr), tl.load(state_ptr + 1), ties_before)
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


def _launch(
    x: torch.Tensor, out: torch.Tensor | None, flag: torch.Tensor, state: torch.Tensor, ties_before: torch.Tensor,
    row_ties: torch.Tensor | None, block_shape: tuple[int, int], zeros_per_block: int, norm: str,
) -> torch.Tensor:
    """Run ``_block_mask_kernel`` over ``x`` (2-D); returns the mask."""
    h, w = x.shape
    bh, bw = block_shape
    nbh, nbw = block_grid((h, w), block_shape)
    n_blocks = nbh * nbw
    launch = _config.block_launch(block_shape)
    mask = torch.empty(h, w, dtype=torch.bool, device=x.device)
    target = x if out is None else out
    flat = flat_layout(x, block_shape, target)
    with _device.on_device(x):
        _block_mask_kernel[(triton.cdiv(n_blocks, launch.tile),)](
            x, target, mask, flag, state, ties_before, ties_before if row_ties is None else row_ties,
            h, w, nbw, n_blocks, *strides(x, flat), *strides(target, flat), zeros_per_block,
            L2=norm == "L2", BH=bh, BW=bw, P2=launch.p2, TILE=launch.tile, SMALL=launch.small,
            FLAT=flat, FULL=zeros_per_block >= bh * bw,
            APPLY=out is not None, WRITE_KEPT=out is not None and out.data_ptr() != x.data_ptr(),
            ROW_TIES=row_ties is not None, **_config.LAUNCH_OPTIONS,
        )
    return mask


def sparsify(
    x: torch.Tensor, k: int, block_shape: tuple[int, int], zeros_per_block: int, norm: str,
    out: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep-mask of ``x`` (2-D) pruning its ``k`` lowest-scoring blocks, and the 0-dim bool
    non-finite flag; with ``out``, also ``out = x * mask`` (``out`` may be ``x``), unless
    the data is bad."""
    scores, flag = launch_scores(x, block_shape, norm)
    state, ties_before = threshold(scores, k, _config.block_launch(block_shape).tile)
    mask = _launch(x, out, flag, state, ties_before, None, block_shape, zeros_per_block, norm)
    return mask, (flag != 0).reshape(())


def block_mask(
    x: torch.Tensor, k: int, block_shape: tuple[int, int], zeros_per_block: int, norm: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep-mask of ``x`` (2-D) pruning its ``k`` lowest-scoring blocks, and the non-finite flag."""
    return sparsify(x, k, block_shape, zeros_per_block, norm, None)


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
    ties_before = tie_offsets(scores.reshape(-1).contiguous(), state, _config.block_launch(block_shape).tile)
    flag = torch.zeros(1, dtype=torch.int32, device=x.device)
    row_ties = None if row_ties is None else row_ties.to(torch.int64).contiguous()
    return _launch(x, None, flag, state, ties_before, row_ties, block_shape, zeros_per_block, norm)
