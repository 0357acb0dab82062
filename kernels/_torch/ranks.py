"""In-block ranks: which elements a pruned block keeps (all but its ``zeros_per_block``
smallest |x|, ties: row-major order first), written into the mask before the blocks are
decided.

An element's rank in its block is ``rank[p] = #{q < p: |x[q]| <= |x[p]|} + #{q > p: |x[q]| < |x[p]|}``
(positions ``p``, ``q`` in row-major order): the number of elements that come before it once
the block is sorted by |x|, ties in position order; it is kept if ``rank >= zeros_per_block``.
Blocks of 2, 4 or 8 elements are ranked by pairwise integer compares packed one byte per
element in a word (the bytes of the bool mask), other small blocks pairwise, and blocks of
more than ``PAIRWISE_RANK_MAX`` elements by a stable sort."""

from __future__ import annotations

import torch

from blocksparsity.kernels._torch import _config
from blocksparsity.kernels._torch._blocks import WORD_TYPES, Chunk, abs_by_position, block_words, blocked, elements


def write_in_block_keep(
    in_block_keep: tuple[torch.Tensor, int],
    chunk_f32: torch.Tensor,
    chunk: Chunk,
    block_shape: tuple[int, int],
    by_position: torch.Tensor | None = None,
) -> None:
    """Write ``chunk``'s keep-if-pruned map into ``mask`` (``in_block_keep = (mask, zeros_per_block)``,
    ``mask`` bool H x W): ``mask[e] = rank(e) >= zeros_per_block`` for each element ``e`` of
    the chunk. ``chunk_f32``: the chunk's elements in float32 (2-D, clipped to the tensor; for
    blocks of at most ``PAIRWISE_RANK_MAX`` elements, x's own float16/bfloat16 also does);
    ``by_position``: its ``abs_by_position`` layout, zero-padded, where already made
    (reused only without partial blocks, which need +inf padding)."""
    mask, zeros_per_block = in_block_keep
    n_block_rows, n_block_cols = chunk.row_end - chunk.row_start, chunk.col_end - chunk.col_start
    block_rows, block_cols = block_shape
    block_size = block_rows * block_cols
    target = elements(mask, chunk, block_rows, block_cols)
    padded = chunk_f32.shape != (n_block_rows * block_rows, n_block_cols * block_cols)
    # Padding is +inf: it ranks after every element, so it never changes a real element's rank.
    if block_size > _config.PAIRWISE_RANK_MAX:
        blocks = blocked(chunk_f32.abs(), n_block_rows, n_block_cols, block_rows, block_cols, float("inf"))
        keep = sorted_ranks(blocks.permute(0, 2, 1, 3).reshape(n_block_rows, n_block_cols, block_size)) >= zeros_per_block
    else:
        if by_position is None or padded:
            by_position = abs_by_position(blocked(chunk_f32, n_block_rows, n_block_cols, block_rows, block_cols,
                                                  float("inf")))
        words = block_words(target, n_block_rows, n_block_cols, block_rows, block_cols)
        if words is not None:
            # The packed answers are the bytes of this part of the mask: write them there.
            packed_rank_at_least(by_position, zeros_per_block, out=words)
            return
        keep = in_block_keep_map(by_position, zeros_per_block)
    keep = keep.view(n_block_rows, n_block_cols, block_rows, block_cols).permute(0, 2, 1, 3)
    keep = keep.reshape(n_block_rows * block_rows, n_block_cols * block_cols)
    target.copy_(keep[: chunk_f32.shape[0], : chunk_f32.shape[1]])


def in_block_keep_map(by_position: torch.Tensor, zeros_per_block: int) -> torch.Tensor:
    """Keep-if-pruned map of the blocks in ``by_position`` (float32 (block_size, n_block_rows,
    n_block_cols), |x| by in-block position, +inf in padding): bool (n_block_rows,
    n_block_cols, block_size), block-major, ``rank >= zeros_per_block`` (False for each block's
    ``zeros_per_block`` smallest)."""
    block_size = by_position.shape[0]
    if block_size in WORD_TYPES and block_size > 1:
        packed = packed_rank_at_least(by_position, zeros_per_block)
        return packed.view(torch.bool).view(*by_position.shape[1:], block_size)
    ranks = pairwise_ranks(by_position)
    return torch.stack([rank >= zeros_per_block for rank in ranks], -1)


def packed_rank_at_least(by_position: torch.Tensor, zeros_per_block: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """``rank >= zeros_per_block`` for every position of blocks of 2, 4 or 8 elements, packed.

    ``by_position``: float32 (block_size, ...), |x| (>= +0, or +inf padding) by in-block
    position. Returns a ``WORD_TYPES[block_size]`` tensor of shape ``...`` (``out``, where
    given) whose byte ``p`` of each word is 1 or 0: the bytes of the bool map
    ``torch.stack([rank[p] >= zeros_per_block for p in range(block_size)], -1)`` (little-endian).
    Needs ``1 <= zeros_per_block <= block_size - 1``.

    The trick (one contiguous integer compare and one add per pair of positions):

    - |x| >= +0, so the values order like their int32 bit patterns: integer compares, whose
      0/1 results come out in the word type, vectorised (a bool result would not be);
    - byte ``p`` starts at ``block_size - 1 - p`` (the rank it would have if every later
      element were smaller); for each pair ``p < q`` with ``|x[p]| <= |x[q]|`` (``p`` comes
      first), one add of ``2**(8q) - 2**(8p)`` moves a rank unit from byte ``p`` to byte ``q``.
      A byte only loses units after it has gained all of its own, and ends at its rank, so no
      byte ever goes below 0 or above 15: there is never a carry or borrow between bytes;
    - every byte also starts with ``8 - zeros_per_block`` added, so it ends at
      ``rank + 8 - zeros_per_block`` in ``[0, 15]``, whose bit 3 is set exactly when
      ``rank >= zeros_per_block``: ``(word >> 3) & 0x0101...01`` is the packed answer.
    """
    block_size = by_position.shape[0]
    word_type = WORD_TYPES[block_size]
    ones = int.from_bytes(b"\x01" * block_size, "little")  # 0x0101...01: bit 0 of every byte
    bits = by_position.view(torch.int32)
    start = sum((block_size - 1 - p + 8 - zeros_per_block) << (8 * p) for p in range(block_size))
    shape = by_position.shape[1:]
    packed = torch.full(shape, start, dtype=word_type, device=by_position.device) if out is None else out.fill_(start)
    p_first = torch.empty_like(packed)
    for p in range(block_size):
        for q in range(p + 1, block_size):
            torch.le(bits[p], bits[q], out=p_first)
            packed.add_(p_first, alpha=(1 << (8 * q)) - (1 << (8 * p)))
    return packed.bitwise_right_shift_(3).bitwise_and_(ones)


def pairwise_ranks(by_position: torch.Tensor) -> list[torch.Tensor]:
    """Each position's rank within its block (ties: lower position first): one uint8 tensor of
    shape ``...`` per position of ``by_position`` (block_size, ..., any float dtype), counted by
    comparing every pair of positions (the module docstring's ``rank``)."""
    block_size = by_position.shape[0]
    shape, device = by_position.shape[1:], by_position.device
    ranks = [torch.full(shape, block_size - 1 - p, dtype=torch.uint8, device=device) for p in range(block_size)]
    for p in range(block_size):
        for q in range(p + 1, block_size):
            p_first = torch.le(by_position[p], by_position[q]).view(torch.uint8)
            ranks[q] += p_first
            ranks[p] -= p_first
    return ranks


def sorted_ranks(values: torch.Tensor) -> torch.Tensor:
    """Each element's rank along the last dim of ``values`` (any shape and float dtype; ties:
    lower index first), int64 of ``values``' shape, by one stable sort (for large blocks) and
    the inverse permutation: ``rank[order[i]] = i``. No step per position."""
    order = torch.sort(values, dim=-1, stable=True).indices
    indices = torch.arange(values.shape[-1], device=values.device).expand_as(order)
    return torch.empty_like(order).scatter_(-1, order, indices)
