"""The element keep-mask: the pruned blocks (``select``) spread over their elements, with
the in-block keep map (``ranks``) inside pruned blocks when only some of their elements are
zeroed; and ``sparsify``, the mask then applied."""

from __future__ import annotations

import torch

from blocksparsity.kernels._common import Threshold, n_blocks
from blocksparsity.kernels._torch import _config, _policy
from blocksparsity.kernels._torch._blocks import Chunk, block_words, broadcast_blocks, chunks, elements
from blocksparsity.kernels._torch._policy import Policy
from blocksparsity.kernels._torch.apply_mask import multiply
from blocksparsity.kernels._torch.block_norm import block_scores
from blocksparsity.kernels._torch.ranks import write_in_block_keep
from blocksparsity.kernels._torch.select import PrunedBlocks


def _spread_blocks(out: torch.Tensor, blocks: PrunedBlocks, chunk: Chunk, bh: int, bw: int, combine: bool) -> None:
    """Write (or OR, with ``combine``) the kept blocks of ``chunk`` over the elements of ``out``."""
    r0, r1, c0, c1 = chunk
    nr, nc = r1 - r0, c1 - c0
    words = block_words(out, nr, nc, bh, bw)
    if words is not None and not combine and words.dtype == torch.int32:
        spread = blocks.kept(r0, r1, c0, c1, words.dtype, out=words)  # written in place, mostly
        if spread is not words:
            words.copy_(spread)
        return
    if words is not None:
        spread = blocks.kept(r0, r1, c0, c1, words.dtype)
    elif out.shape == (nr * bh, nc * bw) and out.stride(-1) == 1:
        words = out.unflatten(1, (nc, bw)).unflatten(0, (nr, bh))
        spread = blocks.kept(r0, r1, c0, c1)[:, None, :, None]
    else:
        words, spread = out, broadcast_blocks(blocks.kept(r0, r1, c0, c1), bh, bw, out)
    words.bitwise_or_(spread) if combine else words.copy_(spread)


def keep_mask(
    x: torch.Tensor,
    blocks: PrunedBlocks,
    block_shape: tuple[int, int],
    zeros_per_block: int,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The element keep-mask (True = keep), chunk by chunk from the pruned blocks.

    With ``0 < zeros_per_block < bh*bw``, ``mask`` must already hold the keep-if-pruned
    map written by ``block_scores``; kept blocks are then switched back on.
    """
    h, w = x.shape
    bh, bw = block_shape
    partial = 0 < zeros_per_block < bh * bw
    if mask is None:
        mask = torch.empty(h, w, dtype=torch.bool, device=x.device)
    if zeros_per_block == 0:
        return mask.fill_(True)
    # Blocks as words of the mask: the ties that stay kept are switched on after the
    # rest, by index (no running tie count).
    words = block_words(mask, *blocks.scores.shape, bh, bw)
    kept_ties = blocks.defer_kept_ties() if words is not None else None
    for r0, r1, c0, c1 in chunks(h, w, bh, bw):
        _spread_blocks(elements(mask, r0, r1, c0, c1, bh, bw), blocks, (r0, r1, c0, c1), bh, bw, combine=partial)
    if kept_ties is not None:
        words.view(-1).index_fill_(0, kept_ties, int.from_bytes(b"\x01" * words.dtype.itemsize, "little"))
    return mask


def block_mask(
    x: torch.Tensor, k: int, block_shape: tuple[int, int], zeros_per_block: int, norm: str,
    *, policy: Policy | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bool keep-mask of ``x`` with its ``k`` lowest-scoring blocks pruned, and the non-finite flag."""
    policy = policy or _policy.for_device(x.device)
    bh, bw = block_shape
    # Many blocks: count the first 16-bit radix pass while scoring. Few: the compact digits'
    # small histograms (a 2**15-bin one costs more than scoring a small tensor).
    n = n_blocks(x.shape, block_shape)
    fused = 0 < k < n and n >= _config.FUSED_SELECTION_MIN_BLOCKS
    mask = torch.empty(x.shape, dtype=torch.bool, device=x.device)
    in_block = (mask, zeros_per_block) if 0 < zeros_per_block < bh * bw else None
    scores, bad, hist = block_scores(x, block_shape, norm, policy, high_histogram=fused, in_block_keep=in_block)
    blocks = PrunedBlocks.select(scores, k, policy, hist)
    return keep_mask(x, blocks, block_shape, zeros_per_block, mask), bad


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
    """Bool keep-mask of ``x`` given its block ``scores`` and a ``threshold`` selected
    elsewhere (``Threshold(0, 0)`` prunes nothing, ``Threshold(PRUNE_ALL_BITS, 0)`` every
    block); ``row_ties`` as ``PrunedBlocks``. ``norm`` is unused: the scores are given."""
    policy = policy or _policy.for_device(x.device)
    bh, bw = block_shape
    mask = torch.empty(x.shape, dtype=torch.bool, device=x.device)
    if 0 < zeros_per_block < bh * bw:
        for r0, r1, c0, c1 in chunks(x.shape[0], x.shape[1], bh, bw):
            xf = elements(x, r0, r1, c0, c1, bh, bw).float()
            write_in_block_keep((mask, zeros_per_block), xf, (r0, r1, c0, c1), block_shape)
    blocks = PrunedBlocks(scores, 1, threshold, policy, row_ties)  # k only matters without a threshold
    return keep_mask(x, blocks, block_shape, zeros_per_block, mask)


def sparsify(
    x: torch.Tensor, k: int, block_shape: tuple[int, int], zeros_per_block: int, norm: str, out: torch.Tensor,
    *, policy: Policy | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``block_mask``, then ``out = x * mask`` unless the data was bad (``out`` may be ``x``).
    Reads the flag on the host once, before writing (the one sync)."""
    mask, bad = block_mask(x, k, block_shape, zeros_per_block, norm, policy=policy)
    bad = bad.cpu()  # the one sync: nothing may be written when the data is bad
    if not bad:
        multiply(x, mask, out)
    return mask, bad
