"""Block scores: each block's float32 sum of |x| or x*x over its elements taken one by one
in row-major order, divided (IEEE, correctly rounded) by the number of its elements inside
the tensor, exactly what the reference's ``avg_pool2d(ceil_mode=True)`` computes; and the
non-finite flag, from the same pass.

While a chunk is in cache, ``block_scores`` can also count the first radix pass's
histogram and write the in-block keep map (``ranks``)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from blocksparsity.kernels._common import DIGITS, HIGH_BINS, block_grid, nonfinite
from blocksparsity.kernels._torch import _config, _policy
from blocksparsity.kernels._torch._blocks import (
    Chunk,
    abs_by_position,
    blocked,
    chunks,
    counts_inside,
    elements,
    positions,
)
from blocksparsity.kernels._torch._policy import Policy
from blocksparsity.kernels._torch.ranks import write_in_block_keep
from blocksparsity.kernels._torch.select import count_into

try:  # optional: its float32 accumulate sums large blocks in order, vectorised (see blocked_sums)
    import numpy as np
except ImportError:  # pragma: no cover - numpy comes with every torch install we test
    np = None


def block_sums(by_position: Sequence[torch.Tensor]) -> torch.Tensor:
    """Block sums given the blocks' elements by in-block position (row-major), each an
    (n_block_rows, n_block_cols) float32 tensor: ``((p0 + p1) + p2) + ...``, one position at a
    time in that order, the order ``avg_pool2d`` (the reference) and the Triton kernels use,
    so all three agree to the bit. A new contiguous float32 tensor."""
    if len(by_position) == 1:
        return by_position[0].contiguous()
    total = by_position[0] + by_position[1]
    for part in by_position[2:]:
        total.add_(part)
    return total


def blocked_sums(blocks: torch.Tensor, policy: Policy) -> torch.Tensor:
    """``block_sums(positions(blocks))`` of a blocked chunk ``blocks`` (n_block_rows,
    block_rows, n_block_cols, block_cols), float32 (n_block_rows, n_block_cols): the same bits.

    Large blocks (over ``SEQUENTIAL_SUM_MIN`` elements) of float32 in host memory: each
    block's elements laid out as one row, row-major, and summed by ``numpy.add.accumulate``,
    which adds one element at a time, in order, in float32 (torch's CPU cumsum accumulates in
    float64, and its sums reduce pairwise: other bits), so the cost is the data's, not a
    Python step per in-block position. ``blocks`` may be overwritten (it is a temporary)."""
    n_block_rows, block_rows, n_block_cols, block_cols = blocks.shape
    block_size = block_rows * block_cols
    if block_size <= _config.SEQUENTIAL_SUM_MIN or np is None or not policy.host_reads or blocks.dtype != torch.float32:
        return block_sums(positions(blocks))
    rows = blocks.permute(0, 2, 1, 3).reshape(n_block_rows * n_block_cols, block_size).contiguous()
    as_numpy = rows.numpy()
    np.add.accumulate(as_numpy, axis=1, out=as_numpy)  # in place: the last column is each block's sum
    return rows[:, -1].reshape(n_block_rows, n_block_cols).contiguous()


def nonfinite_chunk(x_chunk: torch.Tensor, sums: torch.Tensor, policy: Policy) -> torch.Tensor | None:
    """``nonfinite(x_chunk)`` (0-dim bool), given the block sums (float32) of its |x| or x*x;
    or None where the chunk is proven finite (nothing to add to the flag).

    Shortcut: a NaN or inf in the data makes its block's sum NaN or inf, so a finite
    ``sums.amax()`` (a reduction 1/(block size) the size of the data, read on the host as a
    Python float: no further tensor op) proves the chunk finite; a sum can also overflow with
    finite data, so a non-finite sum leaves it to the data itself. Reading the shortcut's
    answer needs ``policy.host_reads``; without it the data is always checked
    (``nonfinite(x_chunk)``, the plain expression)."""
    if policy.host_reads and math.isfinite(sums.amax().item()):
        return None
    return nonfinite(x_chunk)


class _Scratch:
    """Chunk-sized reused buffers: float32 buffers allocated once per call and reused by every
    chunk (so they stay in cache and the allocator is not asked again per chunk): ``values``,
    the chunk's |x| or x*x, and ``sums``, its block sums. What they hold equals the plain
    ``x_chunk.float().abs()`` (L1, or ``x_chunk.float() * x_chunk.float()``, L2) and ``block_sums(...)``; only
    the memory is reused. A buffer's contents are valid until the next chunk."""

    def __init__(self, device: torch.device):
        self.device = device
        self.buffers: dict[str, torch.Tensor] = {}

    def take(self, name: str, n_elements: int) -> torch.Tensor:
        """The first ``n_elements`` of float32 buffer ``name`` (1-D), grown where too small."""
        buffer = self.buffers.get(name)
        if buffer is None or buffer.numel() < n_elements:
            buffer = self.buffers[name] = torch.empty(n_elements, dtype=torch.float32, device=self.device)
        return buffer[:n_elements]

    def magnitudes(self, x_chunk: torch.Tensor, norm: str) -> torch.Tensor:
        """|x| (L1) or x*x (L2) of the chunk ``x_chunk`` (2-D, any float dtype and strides) in
        float32 (the exact cast, then the op), in the ``values`` buffer, of x_chunk's shape."""
        out = self.take("values", x_chunk.numel()).view(x_chunk.shape)
        if x_chunk.dtype == torch.float32:
            return torch.abs(x_chunk, out=out) if norm == "L1" else torch.mul(x_chunk, x_chunk, out=out)
        out.copy_(x_chunk)
        return out.abs_() if norm == "L1" else out.mul_(out)

    def block_sums(self, blocks: torch.Tensor, policy: Policy) -> torch.Tensor:
        """``blocked_sums`` of the blocked chunk ``blocks``; small blocks (2 to
        ``SEQUENTIAL_SUM_MIN`` elements) summed into the ``sums`` buffer."""
        n_block_rows, block_rows, n_block_cols, block_cols = blocks.shape
        if block_rows * block_cols == 1 or block_rows * block_cols > _config.SEQUENTIAL_SUM_MIN:
            return blocked_sums(blocks, policy)
        total = self.take("sums", n_block_rows * n_block_cols).view(n_block_rows, n_block_cols)
        parts = positions(blocks)
        torch.add(parts[0], parts[1], out=total)
        for part in parts[2:]:
            total.add_(part)
        return total


def _chunk_sums(x_chunk: torch.Tensor, chunk_f32: torch.Tensor | None, scratch: _Scratch, norm: str,
                grid: tuple[int, int, int, int], policy: Policy, by_position: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A chunk's block sums of |x| or x*x (float32 (n_block_rows, n_block_cols)), and, where
    ``by_position``, its |x| by position (``abs_by_position``, zero-padded), which the in-block
    ranks reuse. ``x_chunk``: the chunk's elements (2-D, clipped); ``chunk_f32``: the same in
    float32, where already made (or, ``by_position``, x's own elements: cast by position);
    ``grid``: (n_block_rows, n_block_cols, block_rows, block_cols)."""
    n_block_rows, n_block_cols, block_rows, block_cols = grid
    if by_position:
        laid_out = abs_by_position(blocked(x_chunk.float() if chunk_f32 is None else chunk_f32,
                                           n_block_rows, n_block_cols, block_rows, block_cols, 0.0), policy.host_reads)
        return block_sums((laid_out if norm == "L1" else laid_out * laid_out).unbind(0)), laid_out
    if x_chunk.shape != (n_block_rows * block_rows, n_block_cols * block_cols):  # partial edge blocks: padded copies
        chunk_f32 = x_chunk.float() if chunk_f32 is None else chunk_f32
        magnitudes = chunk_f32.abs() if norm == "L1" else chunk_f32 * chunk_f32
        return blocked_sums(blocked(magnitudes, n_block_rows, n_block_cols, block_rows, block_cols, 0.0), policy), None
    magnitudes = scratch.magnitudes(x_chunk, norm)
    return scratch.block_sums(blocked(magnitudes, n_block_rows, n_block_cols, block_rows, block_cols, 0.0), policy), None


def scaled_magnitudes(x_chunk: torch.Tensor, scale_chunk: torch.Tensor, scratch: _Scratch) -> torch.Tensor:
    """``t = float32(|x|) * float32(scale)`` of a chunk (2-D, clipped; ``scale_chunk`` the
    same elements of the broadcast scale), float32 in the reused ``scaled`` buffer: one
    float32 multiply (scale >= 0, so ``|x * s| == |x| * s`` bit for bit), then ``abs`` (so a
    zero is +0, as the rank compares on int32 bits need). Chunk-sized: no scaled copy of ``x``."""
    out = scratch.take("scaled", x_chunk.numel()).view(x_chunk.shape)
    scale_f32 = scale_chunk if scale_chunk.dtype == torch.float32 else scale_chunk.float()
    return torch.mul(x_chunk, scale_f32, out=out).abs_()


def _scaled_chunk_sums(t: torch.Tensor, scratch: _Scratch, norm: str, grid: tuple[int, int, int, int],
                       policy: Policy, by_position: bool, keep_t: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``_chunk_sums`` of the scaled magnitudes ``t`` (float32 >= +0, from
    ``scaled_magnitudes``): the block sums of ``t`` (L1) or ``t*t`` (L2). ``keep_t``: ``t`` is
    read again later (the in-block ranks), so the sums must not overwrite it."""
    n_block_rows, n_block_cols, block_rows, block_cols = grid
    if by_position or t.shape != (n_block_rows * block_rows, n_block_cols * block_cols):
        return _chunk_sums(t, t, scratch, norm, grid, policy, by_position)
    if norm == "L1" and not keep_t:
        magnitudes = t  # |t| == t; the sums may overwrite it
    else:
        magnitudes = scratch.take("values", t.numel()).view(t.shape)
        torch.abs(t, out=magnitudes) if norm == "L1" else torch.mul(t, t, out=magnitudes)
    return scratch.block_sums(blocked(magnitudes, n_block_rows, n_block_cols, block_rows, block_cols, 0.0), policy), None


def _chunk_means(sums: torch.Tensor, chunk: Chunk, block_shape: tuple[int, int], shape: tuple[int, int],
                 full: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Step 2 of a chunk: its scores, ``sums / (elements of each block inside the tensor)``,
    correctly rounded (IEEE division), written into the chunk's part of ``scores`` (float32,
    the block grid) and returned as that (n_block_rows, n_block_cols) view. ``full``: the
    0-dim block size, the divisor of every block when the chunk has no partial block;
    ``shape``: the tensor's (H, W)."""
    (block_rows, block_cols), (n_rows, n_cols) = block_shape, shape
    n_block_rows, n_block_cols = chunk.row_end - chunk.row_start, chunk.col_end - chunk.col_start
    count = full
    if (chunk.row_end * block_rows > n_rows) or (chunk.col_end * block_cols > n_cols):  # partial edge blocks
        count = (counts_inside(n_block_rows, block_rows, n_rows, chunk.row_start, sums.device)[:, None]
                 * counts_inside(n_block_cols, block_cols, n_cols, chunk.col_start, sums.device))
    out = scores[chunk.row_start : chunk.row_end, chunk.col_start : chunk.col_end]
    torch.div(sums, count, out=out)
    return out


def _count_high_digits(histogram: torch.Tensor, chunk_scores: torch.Tensor, policy: Policy) -> None:
    """Step 4 of a chunk (optional): the first radix pass of the selection, counted while the
    scores are in cache: ``histogram[bits >> 16] += 1`` for the int32 bits of each score of
    ``chunk_scores`` (float32 >= 0; ``histogram``: int64 (``HIGH_BINS``,), bits 16..30)."""
    count_into(histogram, chunk_scores.view(torch.int32) >> DIGITS[0][0], policy)


def block_scores(
    x: torch.Tensor,
    block_shape: tuple[int, int],
    norm: str,
    policy: Policy,
    high_histogram: bool = False,
    in_block_keep: tuple[torch.Tensor, int] | None = None,
    scale: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Mean of |x| or x*x per block (float32, the block grid's shape, contiguous), the
    non-finite flag (0-dim bool), and the high-digit histogram (or None). ``x``: 2-D H x W
    float16/bfloat16/float32, any strides.

    One pass over the data, chunk by chunk, each chunk in named steps while it is in cache:
    1. block sums (``_chunk_sums``); 2. scores, the sums over the counts inside
    (``_chunk_means``); 3. the non-finite flag (``nonfinite_chunk``); where asked,
    4. the histogram (int64, ``HIGH_BINS``) of the scores' high bits, the first
    radix-selection pass (``_count_high_digits``), and 5. into ``in_block_keep = (mask,
    zeros_per_block)``, which elements a pruned block would keep, all but its
    ``zeros_per_block`` smallest |x| (``ranks.write_in_block_keep``; ``mask``: bool H x W).

    ``scale`` (float, broadcast to H x W, a view, or None): each chunk's
    ``t = float32(|x|) * float32(scale)`` (``scaled_magnitudes``) replaces |x| in steps 1
    and 5; the non-finite check still reads ``x``.
    """
    n_rows, n_cols = x.shape
    block_rows, block_cols = block_shape
    scores = torch.empty(block_grid((n_rows, n_cols), block_shape), dtype=torch.float32, device=x.device)
    nonfinite_flag = torch.zeros((), dtype=torch.bool, device=x.device)
    histogram = torch.zeros(HIGH_BINS, dtype=torch.int64, device=x.device) if high_histogram else None
    full = torch.full((), float(block_rows * block_cols), device=x.device)
    # In-block ranks of small blocks compare each pair of positions: lay the chunk out by
    # position once (``abs_by_position``) and sum the scores from that layout too.
    by_position = in_block_keep is not None and block_rows * block_cols <= _config.PAIRWISE_RANK_MAX
    scratch = _Scratch(x.device)
    for chunk in chunks(n_rows, n_cols, block_rows, block_cols):
        x_chunk = elements(x, chunk, block_rows, block_cols)
        grid = (chunk.row_end - chunk.row_start, chunk.col_end - chunk.col_start, block_rows, block_cols)
        if scale is None:
            # Small blocks are laid out by position straight from x (``abs_by_position`` casts
            # each position exactly): no float32 copy of the chunk first.
            chunk_f32 = (x_chunk if by_position else x_chunk.float()) if in_block_keep is not None else None
            sums, laid_out = _chunk_sums(x_chunk, chunk_f32, scratch, norm, grid, policy, by_position)
        else:
            chunk_f32 = scaled_magnitudes(x_chunk, elements(scale, chunk, block_rows, block_cols), scratch)
            sums, laid_out = _scaled_chunk_sums(chunk_f32, scratch, norm, grid, policy, by_position,
                                                keep_t=in_block_keep is not None)
        chunk_scores = _chunk_means(sums, chunk, block_shape, (n_rows, n_cols), full, scores)
        chunk_flag = nonfinite_chunk(x_chunk, sums, policy)
        if chunk_flag is not None:
            nonfinite_flag |= chunk_flag
        if histogram is not None:
            _count_high_digits(histogram, chunk_scores, policy)
        if in_block_keep is not None:
            write_in_block_keep(in_block_keep, chunk_f32, chunk, block_shape, laid_out)
    return scores, nonfinite_flag, histogram


def block_norm(
    x: torch.Tensor, block_shape: tuple[int, int], norm: str, *, policy: Policy | None = None,
    scale: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Block scores (float32 (ceil(H/block_rows), ceil(W/block_cols)), contiguous) of ``x``
    (2-D H x W float16/bfloat16/float32, any strides), and the non-finite flag (0-dim bool).
    ``scale``: None, or float broadcast to H x W (see ``block_scores``)."""
    scores, nonfinite_flag, _ = block_scores(x, block_shape, norm, policy or _policy.for_device(x.device),
                                             scale=scale)
    return scores, nonfinite_flag
