"""The element keep-mask: the pruned blocks (``select``) spread over their elements, with
the in-block keep map (``ranks``) inside pruned blocks when only some of their elements are
zeroed; and ``sparsify``, the mask then applied."""

from __future__ import annotations

import torch

from blocksparsity.kernels._common import INF_BITS, Threshold, n_blocks, nonfinite
from blocksparsity.kernels._torch import _config, _policy, small
from blocksparsity.kernels._torch._blocks import (
    Chunk,
    abs_by_position,
    block_words,
    blocked,
    broadcast_blocks,
    chunks,
    elements,
)
from blocksparsity.kernels._torch._policy import Policy
from blocksparsity.kernels._torch.apply_mask import multiply
from blocksparsity.kernels._torch.block_norm import block_scores
from blocksparsity.kernels._torch.ranks import write_in_block_keep
from blocksparsity.kernels._torch.select import PrunedBlocks, samples


def _spread_blocks(mask_chunk: torch.Tensor, blocks: PrunedBlocks, chunk: Chunk, block_rows: int, block_cols: int,
                   combine: bool) -> None:
    """Write ``blocks.kept(chunk)`` over the elements of ``mask_chunk`` (bool, the chunk's view
    of the mask): ``mask_chunk = broadcast(kept)``, or with ``combine``
    ``mask_chunk |= broadcast(kept)`` (a kept block keeps every element; a pruned one keeps
    the in-block keep map already written there).

    Words written for whole blocks: where ``block_words`` can view the mask as one integer
    word per (1, block_cols) block, ``kept`` hands out words with every byte 0 or 1 and each
    block is written (or OR-ed) by one integer op; int32 words are written in place. Else the
    mask is viewed as (n_block_rows, block_rows, n_block_cols, block_cols) and the block map
    broadcast over it, or, for partial edge blocks, spread and cropped."""
    n_block_rows, n_block_cols = chunk.row_end - chunk.row_start, chunk.col_end - chunk.col_start
    words = block_words(mask_chunk, n_block_rows, n_block_cols, block_rows, block_cols)
    if words is not None and not combine and words.dtype == torch.int32:
        spread = blocks.kept(chunk, words.dtype, out=words)  # written in place, mostly
        if spread is not words:
            words.copy_(spread)
        return
    if words is not None:
        spread = blocks.kept(chunk, words.dtype)
    elif mask_chunk.shape == (n_block_rows * block_rows, n_block_cols * block_cols) and mask_chunk.stride(-1) == 1:
        words = mask_chunk.unflatten(1, (n_block_cols, block_cols)).unflatten(0, (n_block_rows, block_rows))
        spread = blocks.kept(chunk)[:, None, :, None]
    else:
        words, spread = mask_chunk, broadcast_blocks(blocks.kept(chunk), block_rows, block_cols, mask_chunk)
    words.bitwise_or_(spread) if combine else words.copy_(spread)


def keep_mask(
    x: torch.Tensor,
    blocks: PrunedBlocks,
    block_shape: tuple[int, int],
    zeros_per_block: int,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The element keep-mask (True = keep), bool H x W like ``x`` (2-D; only its shape and
    device are used), chunk by chunk from the pruned blocks: an element is kept when its block
    is kept or, inside a pruned block, when the in-block keep map says so.

    With ``0 < zeros_per_block < block_rows*block_cols`` and some block pruned, ``mask`` (bool
    H x W, contiguous rows) must already hold the keep-if-pruned map (written by
    ``block_scores`` or ``write_in_block_keep``), which the kept blocks are OR-ed over (none
    when every block is pruned); else it is overwritten (or allocated, when None). Returns
    ``mask``.
    """
    n_rows, n_cols = x.shape
    block_rows, block_cols = block_shape
    partial = 0 < zeros_per_block < block_rows * block_cols
    if mask is None:
        mask = torch.empty(n_rows, n_cols, dtype=torch.bool, device=x.device)
    if zeros_per_block == 0 or (blocks.threshold is None and blocks.k == 0):  # nothing pruned
        return mask.fill_(True)
    if partial and blocks.threshold is None:  # every block pruned: the mask is the in-block keep map
        return mask
    # Blocks as words of the mask: the ties that stay kept are switched on after the rest, by
    # index (``PrunedBlocks.defer_kept_ties``: no running tie count). Each index is one block,
    # one word: filling it with 0x0101...01 sets all of the block's bools.
    words = block_words(mask, *blocks.scores.shape, block_rows, block_cols)
    kept_ties = blocks.defer_kept_ties() if words is not None else None
    for chunk in chunks(n_rows, n_cols, block_rows, block_cols):
        _spread_blocks(elements(mask, chunk, block_rows, block_cols), blocks, chunk, block_rows, block_cols,
                       combine=partial)
    if kept_ties is not None:
        words.view(-1).index_fill_(0, kept_ties, int.from_bytes(b"\x01" * words.dtype.itemsize, "little"))
    return mask


def every_block_pruned(x: torch.Tensor, block_shape: tuple[int, int], zeros_per_block: int, policy: Policy,
                       mask: torch.Tensor) -> torch.Tensor:
    """The keep-mask when every block is pruned, each keeping all but its ``zeros_per_block``
    smallest |x| (``0 < zeros_per_block < block size``; level 1, as in 2:4): the in-block keep
    map alone, written chunk by chunk into ``mask`` (bool H x W, contiguous); returns the
    non-finite flag (0-dim bool). No block scores: with every block pruned they decide
    nothing, and the flag comes from the |x| the ranks read (``x``: 2-D H x W
    float16/bfloat16/float32, any strides)."""
    n_rows, n_cols = x.shape
    block_rows, block_cols = block_shape
    nonfinite_flag = torch.zeros((), dtype=torch.bool, device=x.device)
    for chunk in chunks(n_rows, n_cols, block_rows, block_cols):
        x_chunk = elements(x, chunk, block_rows, block_cols)
        if block_rows * block_cols > _config.PAIRWISE_RANK_MAX:  # sorted ranks, from float32
            nonfinite_flag |= nonfinite(x_chunk)
            write_in_block_keep((mask, zeros_per_block), x_chunk.float(), chunk, block_shape)
            continue
        # |x| by position, +0 in padding: a chunk holds a NaN or inf iff its largest bits do.
        grid = (chunk.row_end - chunk.row_start, chunk.col_end - chunk.col_start, block_rows, block_cols)
        laid_out = abs_by_position(blocked(x_chunk, *grid, 0.0), policy.host_reads)
        largest = laid_out.view(torch.int32).amax()
        if not policy.host_reads:
            nonfinite_flag |= largest >= INF_BITS
        elif largest.item() >= INF_BITS:  # read on the host: no tensor op for a finite chunk
            nonfinite_flag.fill_(True)
        write_in_block_keep((mask, zeros_per_block), x_chunk, chunk, block_shape, laid_out)
    return nonfinite_flag


def block_mask(
    x: torch.Tensor, k: int, block_shape: tuple[int, int], zeros_per_block: int, norm: str,
    *, policy: Policy | None = None, scale: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bool keep-mask of ``x``'s shape pruning its ``k`` lowest-scoring blocks (ties: lowest
    flat block index first; ``zeros_per_block`` smallest |x| of each pruned block zeroed), and
    the non-finite flag (0-dim bool). ``x``: 2-D H x W float16/bfloat16/float32, any strides;
    ``norm``: ``"L1"`` or ``"L2"``; ``scale``: None, or float broadcast to H x W (scores and
    ranks of ``float32(|x|) * float32(scale)``). The mask is contiguous."""
    policy = policy or _policy.for_device(x.device)
    if small.fits(x, block_shape):
        masks, flags = small.block_masks([x], [k], block_shape, zeros_per_block, norm,
                                         None if scale is None else [scale], policy)
        return masks[0], flags[0]
    block_rows, block_cols = block_shape
    # Many blocks: count the first 16-bit radix pass while scoring, unless a sample will find the
    # threshold (host reads, ``select.samples``). Few: the compact digits' small histograms
    # (``_config.FUSED_SELECTION_MIN_BLOCKS``).
    blocks_total = n_blocks(x.shape, block_shape)
    fused = (0 < k < blocks_total and blocks_total >= _config.FUSED_SELECTION_MIN_BLOCKS
             and not samples(blocks_total, policy))
    mask = torch.empty(x.shape, dtype=torch.bool, device=x.device)
    partial = 0 < zeros_per_block < block_rows * block_cols
    if partial and k == blocks_total and scale is None:
        return mask, every_block_pruned(x, block_shape, zeros_per_block, policy, mask)
    # The in-block keep map only where some block is pruned (at k = 0 the mask keeps everything).
    in_block = (mask, zeros_per_block) if partial and k > 0 else None
    scores, nonfinite_flag, high_histogram = block_scores(x, block_shape, norm, policy, high_histogram=fused,
                                                          in_block_keep=in_block, scale=scale)
    blocks = PrunedBlocks.select(scores, k, policy, high_histogram)
    return keep_mask(x, blocks, block_shape, zeros_per_block, mask), nonfinite_flag


def block_mask_given(
    x: torch.Tensor,
    scores: torch.Tensor,
    threshold: Threshold,
    row_ties: torch.Tensor | None,
    block_shape: tuple[int, int],
    zeros_per_block: int,
    norm: str,
    *,
    policy: Policy | None = None,
) -> torch.Tensor:
    """Bool keep-mask of ``x`` (2-D H x W float16/bfloat16/float32, any strides) given its
    block ``scores`` (float32, the block grid's shape) and a ``threshold`` selected elsewhere
    (``Threshold(0, 0)`` prunes nothing, ``Threshold(PRUNE_ALL_BITS, 0)`` every block);
    ``row_ties`` (int64, (n_block_rows,), or None) as in ``PrunedBlocks``. ``norm`` is unused:
    the scores are given. Returns a contiguous bool H x W mask."""
    policy = policy or _policy.for_device(x.device)
    block_rows, block_cols = block_shape
    mask = torch.empty(x.shape, dtype=torch.bool, device=x.device)
    if 0 < zeros_per_block < block_rows * block_cols:
        for chunk in chunks(x.shape[0], x.shape[1], block_rows, block_cols):
            chunk_f32 = elements(x, chunk, block_rows, block_cols).float()
            write_in_block_keep((mask, zeros_per_block), chunk_f32, chunk, block_shape)
    blocks = PrunedBlocks(scores, 1, threshold, policy, row_ties)  # k only matters without a threshold
    return keep_mask(x, blocks, block_shape, zeros_per_block, mask)


def sparsify(
    x: torch.Tensor, k: int, block_shape: tuple[int, int], zeros_per_block: int, norm: str, out: torch.Tensor,
    *, policy: Policy | None = None, scale: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``block_mask``, then ``out = x * mask`` (``out``: like ``x``, may be ``x``: in place)
    unless the data was bad; returns the mask and the flag. Reads the flag on the host once,
    before writing (the one sync): nothing is written over bad data."""
    mask, nonfinite_flag = block_mask(x, k, block_shape, zeros_per_block, norm, policy=policy, scale=scale)
    nonfinite_flag = nonfinite_flag.cpu()
    if not nonfinite_flag:
        multiply(x, mask, out)
    return mask, nonfinite_flag
