"""In-block ranks: which elements a pruned block keeps (all but its ``z`` smallest |x|,
ties: row-major order first), written into the mask before the blocks are decided.

Blocks of 2, 4 or 8 elements are ranked by pairwise integer compares packed one byte per
element in a word (the bytes of the bool mask), other small blocks pairwise, and blocks
of more than ``PAIRWISE_RANK_MAX`` elements by a stable sort."""

from __future__ import annotations

import torch

from blocksparsity.kernels._torch import _config
from blocksparsity.kernels._torch._blocks import LANES, Chunk, block_words, blocked, elements, lanes


def write_in_block_keep(
    in_block_keep: tuple[torch.Tensor, int],
    xf: torch.Tensor,
    chunk: Chunk,
    block_shape: tuple[int, int],
    by_position: torch.Tensor | None = None,
) -> None:
    """Write one chunk's keep-if-pruned map into ``mask`` (``in_block_keep = (mask, z)``).
    ``xf`` is the chunk in float32; ``by_position`` its ``lanes`` (zero-padded), if made."""
    mask, z = in_block_keep
    r0, r1, c0, c1 = chunk
    nr, nc = r1 - r0, c1 - c0
    bh, bw = block_shape
    n = bh * bw
    target = elements(mask, r0, r1, c0, c1, bh, bw)
    padded = xf.shape != (nr * bh, nc * bw)
    if n > _config.PAIRWISE_RANK_MAX:
        v = blocked(xf.abs(), nr, nc, bh, bw, float("inf")).permute(0, 2, 1, 3).reshape(nr, nc, n)
        keep = sorted_ranks(v) >= z
    else:
        if by_position is None or padded:
            by_position = lanes(blocked(xf, nr, nc, bh, bw, float("inf")))  # padding ranks last
        words = block_words(target, nr, nc, bh, bw)
        if words is not None:
            # The packed answers are the bytes of this part of the mask: write them there.
            packed_rank_at_least(by_position, z, out=words)
            return
        keep = in_block_keep_map(by_position, z)
    keep = keep.view(nr, nc, bh, bw).permute(0, 2, 1, 3).reshape(nr * bh, nc * bw)
    target.copy_(keep[: xf.shape[0], : xf.shape[1]])


def in_block_keep_map(by_position: torch.Tensor, zeros_per_block: int) -> torch.Tensor:
    """Keep-if-pruned map, (nr, nc, n) in block-major order, of the positions ``by_position``
    ((n, nr, nc), |x| with +inf in padding, which ranks last): False for the
    ``zeros_per_block`` smallest of each block."""
    n = by_position.shape[0]
    if n in LANES and n > 1:
        return packed_rank_at_least(by_position, zeros_per_block).view(torch.bool).view(*by_position.shape[1:], n)
    ranks = pairwise_ranks(by_position)
    return torch.stack([rank >= zeros_per_block for rank in ranks], -1)


def packed_rank_at_least(by_position: torch.Tensor, z: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """rank >= z for every position of blocks of 2, 4 or 8 (``by_position``: (n, ...) of |x|),
    with a block's answers packed one byte each in a 2-, 4- or 8-byte word: the bytes of
    the (..., n) bool map. One contiguous compare and one add per pair of positions."""
    n = by_position.shape[0]
    lane = LANES[n]
    ones = int.from_bytes(b"\x01" * n, "little")
    # |x| >= +0, so the values order like their bit patterns: integer compares, whose
    # 0/1 results come out in the word type, vectorised (a bool result would not be).
    bits = by_position.view(torch.int32)
    # Each byte will hold a rank r <= 7, plus 8 - z: bit 3 is set exactly when r >= z.
    # Byte i starts at n-1-i (the rank it would have if every later element were smaller).
    start = sum((n - 1 - i + 8 - z) << (8 * i) for i in range(n))
    shape = by_position.shape[1:]
    packed = torch.full(shape, start, dtype=lane, device=by_position.device) if out is None else out.fill_(start)
    i_first = torch.empty_like(packed)
    for i in range(n):
        for j in range(i + 1, n):
            torch.le(bits[i], bits[j], out=i_first)
            packed.add_(i_first, alpha=(1 << (8 * j)) - (1 << (8 * i)))
    return packed.bitwise_right_shift_(3).bitwise_and_(ones)


def pairwise_ranks(by_position: torch.Tensor) -> list[torch.Tensor]:
    """Each position's rank within its block (ties: lower position first), one uint8
    tensor per position of ``by_position`` (n, ...)."""
    n = by_position.shape[0]
    shape, device = by_position.shape[1:], by_position.device
    ranks = [torch.full(shape, n - 1 - i, dtype=torch.uint8, device=device) for i in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            i_first = torch.le(by_position[i], by_position[j]).view(torch.uint8)
            ranks[j] += i_first
            ranks[i] -= i_first
    return ranks


def sorted_ranks(v: torch.Tensor) -> torch.Tensor:
    """Each element's rank along the last dim of ``v`` (ties: lower index first), by a
    stable sort (for large blocks): one tensor, no step per position."""
    order = torch.sort(v, dim=-1, stable=True).indices
    indices = torch.arange(v.shape[-1], device=v.device).expand_as(order)
    return torch.empty_like(order).scatter_(-1, order, indices)
