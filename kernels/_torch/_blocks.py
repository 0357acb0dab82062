"""Walking the block grid in chunks, and the layouts of a chunk's blocks: padded and
blocked, by in-block position, as packed words of a bool mask.

Vocabulary of the whole backend: the data is a 2-D ``n_rows x n_cols`` tensor cut into
``block_rows x block_cols`` blocks (edge blocks may be partial); a *chunk* is a rectangle
of whole blocks of the block grid, ``n_block_rows x n_block_cols`` of them; a *position*
is the row-major index of an element inside its block (``row * block_cols + col``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch
import torch.nn.functional as F

try:  # optional: ``abs_by_position``'s host path
    import numpy as np
except ImportError:  # pragma: no cover - numpy comes with every torch install we test
    np = None

from blocksparsity.kernels._common import block_grid
from blocksparsity.kernels._torch import _config

# Integer types as wide as 1, 2, 4 or 8 bools: a whole (1, block_cols) block of a bool mask
# read or written as one word (its bytes are the block's bools, 0 or 1, in column order).
WORD_TYPES = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


class Chunk(NamedTuple):
    """Block rows ``row_start:row_end`` and block columns ``col_start:col_end`` of the block
    grid (in blocks, not elements)."""

    row_start: int
    row_end: int
    col_start: int
    col_end: int


def chunks(n_rows: int, n_cols: int, block_rows: int, block_cols: int) -> Iterator[Chunk]:
    """Chunks covering the block grid of an ``n_rows x n_cols`` tensor in flat block order
    (row-major), each about ``CHUNK_ELEMENTS`` elements: whole rows of blocks where a block
    row fits, else pieces of one block row."""
    n_block_rows, n_block_cols = block_grid((n_rows, n_cols), (block_rows, block_cols))
    rows_per_chunk = max(1, _config.CHUNK_ELEMENTS // max(1, block_rows * n_cols))
    cols_per_chunk = n_block_cols if rows_per_chunk > 1 else max(1, _config.CHUNK_ELEMENTS // (block_rows * block_cols))
    for row_start in range(0, n_block_rows, rows_per_chunk):
        for col_start in range(0, n_block_cols, cols_per_chunk):
            yield Chunk(row_start, min(n_block_rows, row_start + rows_per_chunk),
                        col_start, min(n_block_cols, col_start + cols_per_chunk))


def elements(x: torch.Tensor, chunk: Chunk, block_rows: int, block_cols: int) -> torch.Tensor:
    """The view of ``x`` (2-D, any dtype and strides) holding ``chunk``'s blocks, clipped to
    the tensor: ``x[row_start*block_rows : row_end*block_rows, col_start*block_cols : col_end*block_cols]``."""
    return x[chunk.row_start * block_rows : chunk.row_end * block_rows,
             chunk.col_start * block_cols : chunk.col_end * block_cols]


def blocked(chunk_values: torch.Tensor, n_block_rows: int, n_block_cols: int, block_rows: int, block_cols: int,
            fill: float) -> torch.Tensor:
    """A chunk's elements (2-D, up to ``n_block_rows*block_rows x n_block_cols*block_cols``) as
    ``(n_block_rows, block_rows, n_block_cols, block_cols)``: element ``[i, r, j, c]`` is row
    ``r``, column ``c`` of block ``(i, j)``. Partial edge blocks are padded with ``fill`` (a
    copy); otherwise the result is a view (of a contiguous-rows input)."""
    pad_rows = n_block_rows * block_rows - chunk_values.shape[0]
    pad_cols = n_block_cols * block_cols - chunk_values.shape[1]
    if pad_rows or pad_cols:
        chunk_values = F.pad(chunk_values, (0, pad_cols, 0, pad_rows), value=fill)
    return chunk_values.reshape(n_block_rows, block_rows, n_block_cols, block_cols)


def positions(blocks: torch.Tensor) -> list[torch.Tensor]:
    """A blocked chunk ``blocks`` (n_block_rows, block_rows, n_block_cols, block_cols) as its
    ``block_rows*block_cols`` in-block positions in row-major order, each an
    (n_block_rows, n_block_cols) strided view: ``positions(blocks)[p] == blocks[:, p // block_cols, :, p % block_cols]``."""
    _, block_rows, _, block_cols = blocks.shape
    return [blocks[:, p // block_cols, :, p % block_cols] for p in range(block_rows * block_cols)]


def abs_by_position(blocks: torch.Tensor, host_reads: bool = False) -> torch.Tensor:
    """|x| of a blocked chunk ``blocks`` (n_block_rows, block_rows, n_block_cols, block_cols,
    any float dtype) as a new contiguous float32 tensor (block_rows*block_cols, n_block_rows,
    n_block_cols): ``torch.stack(positions(blocks)).abs().float()``, one contiguous plane per
    in-block position, so that every later op on a position (compares, sums) is a contiguous,
    vectorised one.

    With ``host_reads`` (data in host memory, numpy views allowed), float32: one numpy ``abs``
    reading the transposed view and writing every plane, about twice as fast as a torch op
    per plane on strided positions. (Float16/bfloat16 keep the torch casts per plane: a
    float32 copy first, for numpy, costs what the faster layout saves.)"""
    n_block_rows, block_rows, n_block_cols, block_cols = blocks.shape
    out = torch.empty(block_rows * block_cols, n_block_rows, n_block_cols, dtype=torch.float32, device=blocks.device)
    if host_reads and np is not None and blocks.dtype == torch.float32:
        np.abs(blocks.detach().numpy().transpose(1, 3, 0, 2),
               out=out.numpy().reshape(block_rows, block_cols, n_block_rows, n_block_cols))
        return out
    for plane, position in zip(out, positions(blocks), strict=True):
        if position.dtype == torch.float32:
            torch.abs(position, out=plane)
        else:  # float16/bfloat16: the exact cast into the plane, then |.| there (no float32 copy of the chunk)
            plane.copy_(position).abs_()
    return out


def counts_inside(n_blocks: int, block_size: int, size: int, first_block: int, device: torch.device) -> torch.Tensor:
    """How many rows (or columns) of each of ``n_blocks`` consecutive blocks, from block
    ``first_block`` on, lie inside a tensor of ``size`` rows (or columns): float32 of shape
    (n_blocks,), ``min(size - b * block_size, block_size)`` for each block index ``b``."""
    starts = torch.arange(first_block, first_block + n_blocks, device=device) * block_size
    return (size - starts).clamp(max=block_size).to(torch.float32)


def block_words(mask_chunk: torch.Tensor, n_block_rows: int, n_block_cols: int, block_rows: int,
                block_cols: int) -> torch.Tensor | None:
    """``mask_chunk`` (a chunk of a bool mask) reinterpreted as (n_block_rows, n_block_cols)
    integer words of ``block_cols`` bytes (``WORD_TYPES``), one per (1, block_cols) block, so
    that a whole block is read or written by one integer op: word ``[i, j]``'s byte ``c``
    is ``mask_chunk[i, j * block_cols + c]``. Only where the layout allows: one-row blocks of
    1, 2, 4 or 8 columns, no partial blocks, unit column stride and word-aligned rows; else None."""
    word_type = WORD_TYPES.get(block_cols)
    if block_rows > 1 or word_type is None or mask_chunk.shape != (n_block_rows, n_block_cols * block_cols):
        return None
    if mask_chunk.stride(-1) != 1 or mask_chunk.stride(0) % block_cols or mask_chunk.storage_offset() % block_cols:
        return None
    return mask_chunk.view(word_type)


def broadcast_blocks(block_map: torch.Tensor, block_rows: int, block_cols: int, out: torch.Tensor) -> torch.Tensor:
    """The block map ``block_map`` (n_block_rows, n_block_cols) spread over its blocks'
    elements and cropped to ``out``'s shape (partial edge blocks): ``block_map.repeat_interleave(
    block_rows, 0).repeat_interleave(block_cols, 1)[:out.shape[0], :out.shape[1]]``, as an
    expanded view where no crop is needed."""
    n_block_rows, n_block_cols = block_map.shape
    spread = block_map[:, None, :, None].expand(n_block_rows, block_rows, n_block_cols, block_cols)
    if out.shape == (n_block_rows * block_rows, n_block_cols * block_cols):
        return spread.reshape(out.shape)
    return spread.reshape(n_block_rows * block_rows, n_block_cols * block_cols)[: out.shape[0], : out.shape[1]]
