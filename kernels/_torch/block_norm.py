"""Block scores: each block's float32 sum of |x| or x*x over its elements taken one by one
in row-major order, divided (IEEE, correctly rounded) by the number of its elements inside
the tensor, exactly what the reference's ``avg_pool2d(ceil_mode=True)`` computes; and the
non-finite flag, from the same pass.

While a chunk is in cache, ``block_scores`` can also count the first radix pass's
histogram and write the in-block keep map (``ranks``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from blocksparsity.kernels._common import DIGITS, HIGH_BINS, block_grid, nonfinite
from blocksparsity.kernels._torch import _config, _policy
from blocksparsity.kernels._torch._blocks import blocked, chunks, counts_inside, elements, lanes, positions
from blocksparsity.kernels._torch._policy import Policy
from blocksparsity.kernels._torch.ranks import write_in_block_keep
from blocksparsity.kernels._torch.select import count_into

try:  # optional: its float32 accumulate sums large blocks in order, vectorised (see blocked_sums)
    import numpy as np
except ImportError:  # pragma: no cover - numpy comes with every torch install we test
    np = None


def block_sums(by_position: Sequence[torch.Tensor]) -> torch.Tensor:
    """Sum blocks given their elements by in-block position (row-major), each (nr, nc), one
    position at a time in that order: the order ``avg_pool2d`` (the reference) and the
    Triton kernels use, so all three agree to the bit."""
    if len(by_position) == 1:
        return by_position[0].contiguous()
    total = by_position[0] + by_position[1]
    for part in by_position[2:]:
        total.add_(part)
    return total


def blocked_sums(v: torch.Tensor, policy: Policy) -> torch.Tensor:
    """``block_sums`` of a blocked chunk ``v`` (nr, bh, nc, bw), the same bits.

    Large blocks in host memory: each block's elements laid out as one row, row-major, and
    summed by ``numpy.add.accumulate``, which adds one element at a time, in order, in
    float32 (torch's CPU cumsum accumulates in float64, and sums reduce pairwise), so
    the cost is the data's, not a Python step per in-block position."""
    nr, bh, nc, bw = v.shape
    if bh * bw <= _config.SEQUENTIAL_SUM_MIN or np is None or not policy.host_reads or v.dtype != torch.float32:
        return block_sums(positions(v))
    rows = v.permute(0, 2, 1, 3).reshape(nr * nc, bh * bw).contiguous()  # v is a temporary: overwrite it
    a = rows.numpy()
    np.add.accumulate(a, axis=1, out=a)
    return rows[:, -1].reshape(nr, nc).contiguous()


def nonfinite_chunk(xc: torch.Tensor, sums: torch.Tensor, policy: Policy) -> torch.Tensor:
    """``nonfinite(xc)``, given the block sums of its |x| or x*x. A NaN or inf in the data
    makes its block's sum one, so finite sums (a reduction 1/(bh*bw) the size of the data)
    settle it; a sum can also overflow with finite data, which the data itself then
    decides. Reading the first answer needs ``policy.host_reads``; else the data is checked."""
    if policy.host_reads and bool(torch.isfinite(sums.amax())):
        return torch.zeros((), dtype=torch.bool, device=xc.device)
    return nonfinite(xc)


class _Scratch:
    """Chunk-sized float32 buffers, allocated once per call and reused by every chunk (so
    they stay in cache): the chunk's |x| or x*x, and its block sums."""

    def __init__(self, device: torch.device):
        self.device = device
        self.buffers: dict[str, torch.Tensor] = {}

    def take(self, name: str, n: int) -> torch.Tensor:
        """The first ``n`` elements of buffer ``name``, grown where it is too small."""
        buf = self.buffers.get(name)
        if buf is None or buf.numel() < n:
            buf = self.buffers[name] = torch.empty(n, dtype=torch.float32, device=self.device)
        return buf[:n]

    def magnitudes(self, xc: torch.Tensor, norm: str) -> torch.Tensor:
        """|x| or x*x of the chunk ``xc`` in float32 (the exact cast, then the op), in the buffer."""
        out = self.take("values", xc.numel()).view(xc.shape)
        if xc.dtype == torch.float32:
            return torch.abs(xc, out=out) if norm == "L1" else torch.mul(xc, xc, out=out)
        out.copy_(xc)
        return out.abs_() if norm == "L1" else out.mul_(out)

    def block_sums(self, v: torch.Tensor, policy: Policy) -> torch.Tensor:
        """``blocked_sums`` of the blocked chunk ``v``, small (1, bw) blocks into the buffer."""
        nr, bh, nc, bw = v.shape
        if bh * bw == 1 or bh * bw > _config.SEQUENTIAL_SUM_MIN:
            return blocked_sums(v, policy)
        total = self.take("sums", nr * nc).view(nr, nc)
        parts = positions(v)
        torch.add(parts[0], parts[1], out=total)
        for part in parts[2:]:
            total.add_(part)
        return total


def _chunk_sums(xc: torch.Tensor, xf: torch.Tensor | None, scratch: _Scratch, norm: str, grid: tuple[int, int, int, int],
                policy: Policy, by_position: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A chunk's block sums, and its ``lanes`` (|x| by in-block position) where asked.
    ``xf``: the chunk in float32, where already made."""
    nr, nc, bh, bw = grid
    if by_position:
        laid_out = lanes(blocked(xc.float() if xf is None else xf, nr, nc, bh, bw, 0.0))
        return block_sums((laid_out if norm == "L1" else laid_out * laid_out).unbind(0)), laid_out
    if xc.shape != (nr * bh, nc * bw):  # partial edge blocks: padded copies
        xf = xc.float() if xf is None else xf
        return blocked_sums(blocked(xf.abs() if norm == "L1" else xf * xf, nr, nc, bh, bw, 0.0), policy), None
    return scratch.block_sums(blocked(scratch.magnitudes(xc, norm), nr, nc, bh, bw, 0.0), policy), None


def block_scores(
    x: torch.Tensor,
    block_shape: tuple[int, int],
    norm: str,
    policy: Policy,
    high_histogram: bool = False,
    in_block_keep: tuple[torch.Tensor, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Mean of |x| or x*x per block (float32, the block grid's shape) and the non-finite flag.

    While each chunk is in cache it can also count the histogram of the scores' high 16
    bits (the first radix-selection pass), and write into ``in_block_keep = (mask, z)``
    which elements a pruned block would keep (all but its ``z`` smallest |x|).
    """
    h, w = x.shape
    bh, bw = block_shape
    scores = torch.empty(block_grid((h, w), block_shape), dtype=torch.float32, device=x.device)
    bad = torch.zeros((), dtype=torch.bool, device=x.device)
    hist = torch.zeros(HIGH_BINS, dtype=torch.int64, device=x.device) if high_histogram else None
    full = torch.full((), float(bh * bw), device=x.device)
    # In-block ranks of small blocks compare each pair of positions: lay the chunk out by
    # position once (``lanes``) and sum the scores from that layout too.
    by_position = in_block_keep is not None and bh * bw <= _config.PAIRWISE_RANK_MAX
    scratch = _Scratch(x.device)
    for r0, r1, c0, c1 in chunks(h, w, bh, bw):
        xc = elements(x, r0, r1, c0, c1, bh, bw)
        nr, nc = r1 - r0, c1 - c0
        xf = xc.float() if in_block_keep is not None else None
        sums, laid_out = _chunk_sums(xc, xf, scratch, norm, (nr, nc, bh, bw), policy, by_position)
        bad |= nonfinite_chunk(xc, sums, policy)
        count = full
        if xc.shape[0] < nr * bh or xc.shape[1] < nc * bw:
            count = counts_inside(nr, bh, h, r0, x.device)[:, None] * counts_inside(nc, bw, w, c0, x.device)
        out = scores[r0:r1, c0:c1]
        torch.div(sums, count, out=out)
        if hist is not None:
            count_into(hist, out.view(torch.int32) >> DIGITS[0][0], policy)
        if in_block_keep is not None:
            write_in_block_keep(in_block_keep, xf, (r0, r1, c0, c1), block_shape, laid_out)
    return scores, bad, hist


def block_norm(
    x: torch.Tensor, block_shape: tuple[int, int], norm: str, *, policy: Policy | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Block scores and the non-finite flag."""
    scores, bad, _ = block_scores(x, block_shape, norm, policy or _policy.for_device(x.device))
    return scores, bad
