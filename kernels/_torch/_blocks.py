"""Walking the block grid in chunks, and the layouts of a chunk's blocks: padded and
blocked, by in-block position, as packed words of a bool mask."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from blocksparsity.kernels._common import block_grid
from blocksparsity.kernels._torch import _config

# Integer types as wide as 1, 2, 4 or 8 bools: a whole (1, bw) block of a mask in one word.
LANES = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}

Chunk = tuple[int, int, int, int]  # block rows r0:r1, block columns c0:c1


def chunks(h: int, w: int, bh: int, bw: int) -> Iterator[Chunk]:
    """(block_row0, block_row1, block_col0, block_col1) ranges covering the block grid in
    flat block order, each about ``CHUNK_ELEMENTS`` elements."""
    nbh, nbw = block_grid((h, w), (bh, bw))
    rows_per_chunk = max(1, _config.CHUNK_ELEMENTS // max(1, bh * w))
    cols_per_chunk = nbw if rows_per_chunk > 1 else max(1, _config.CHUNK_ELEMENTS // (bh * bw))
    for r0 in range(0, nbh, rows_per_chunk):
        for c0 in range(0, nbw, cols_per_chunk):
            yield r0, min(nbh, r0 + rows_per_chunk), c0, min(nbw, c0 + cols_per_chunk)


def elements(x: torch.Tensor, r0: int, r1: int, c0: int, c1: int, bh: int, bw: int) -> torch.Tensor:
    """The elements of block rows r0:r1 and block columns c0:c1 (clipped to the tensor)."""
    return x[r0 * bh : r1 * bh, c0 * bw : c1 * bw]


def blocked(v: torch.Tensor, nb_rows: int, nb_cols: int, bh: int, bw: int, fill: float) -> torch.Tensor:
    """View a chunk as (nb_rows, bh, nb_cols, bw), padding partial edge blocks with ``fill``."""
    pad_h, pad_w = nb_rows * bh - v.shape[0], nb_cols * bw - v.shape[1]
    if pad_h or pad_w:
        v = F.pad(v, (0, pad_w, 0, pad_h), value=fill)
    return v.reshape(nb_rows, bh, nb_cols, bw)


def positions(v: torch.Tensor) -> list[torch.Tensor]:
    """A blocked chunk ``v`` (nr, bh, nc, bw) as its bh*bw in-block positions, row-major,
    each a (nr, nc) view."""
    _, bh, _, bw = v.shape
    return [v[:, e // bw, :, e % bw] for e in range(bh * bw)]


def lanes(v: torch.Tensor) -> torch.Tensor:
    """|x| of a blocked chunk ``v`` (nr, bh, nc, bw) as (bh*bw, nr, nc): one contiguous row
    per in-block position, so that every later op on a position is a contiguous one."""
    nr, bh, nc, bw = v.shape
    out = torch.empty(bh * bw, nr, nc, dtype=torch.float32, device=v.device)
    for lane, position in zip(out, positions(v), strict=True):
        torch.abs(position, out=lane)
    return out


def counts_inside(n: int, block: int, size: int, first_block: int, device: torch.device) -> torch.Tensor:
    """How many of each of ``n`` blocks' rows (or columns) lie inside the tensor."""
    starts = torch.arange(first_block, first_block + n, device=device) * block
    return (size - starts).clamp(max=block).to(torch.float32)


def block_words(out: torch.Tensor, nr: int, nc: int, bh: int, bw: int) -> torch.Tensor | None:
    """``out`` (a chunk of a bool mask) as (nr, nc) words of ``bw`` bytes, one per (1, bw)
    block, where its layout allows; else None."""
    lane = LANES.get(bw)
    if bh > 1 or lane is None or out.shape != (nr, nc * bw) or out.stride(-1) != 1:
        return None
    if out.stride(0) % bw or out.storage_offset() % bw:
        return None
    return out.view(lane)


def broadcast_blocks(p: torch.Tensor, bh: int, bw: int, out: torch.Tensor) -> torch.Tensor:
    """The block map ``p`` (nr, nc) spread over its elements, cropped to ``out``'s shape."""
    nr, nc = p.shape
    if out.shape == (nr * bh, nc * bw):
        return p[:, None, :, None].expand(nr, bh, nc, bw).reshape(out.shape)
    return p[:, None, :, None].expand(nr, bh, nc, bw).reshape(nr * bh, nc * bw)[: out.shape[0], : out.shape[1]]
