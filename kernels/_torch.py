"""Torch twin of every kernel: the fallback that runs anywhere and the ground truth.

All functions take a 2-D view ``x`` (H x W) and an already validated configuration;
``kernels.api`` does the checking, flattening and dispatch. Nothing here syncs with
the device: the non-finite flag comes back as a 0-dim bool tensor.

The work is done in chunks of whole blocks (about ``CHUNK_ELEMENTS`` elements each),
so temporaries stay cache-sized and peak memory stays near the size of the outputs.
The number of chunks grows with the tensor's size; nothing loops per row or per block.

Bit-exactness with the Triton backend rests on three shared definitions:

* a block's score is the float32 sum of ``|x|`` or ``x*x`` over its elements taken one
  by one in row-major order (see ``_block_sums``), divided (IEEE, correctly rounded)
  by the number of its elements that lie inside the tensor: exactly what the
  reference's ``avg_pool2d(ceil_mode=True)`` computes;
* the ``k`` pruned blocks are those below the ``k``-th smallest score plus the
  lowest-index blocks equal to it, found by an exact radix selection on the score bits
  (non-negative floats order like their bit patterns; up to ``KTHVALUE_MAX_BLOCKS``
  scores, ``torch.kthvalue`` on the same bits finds the same threshold faster);
* the selection can be made elsewhere (over every shard of a larger tensor, see
  ``kernels._sharded``) and handed in: ``select_threshold`` sums each radix pass's
  histogram through a ``reduce`` hook, and ``block_mask_given`` builds the mask from a
  given ``Threshold`` and per-block-row tie offsets;
* inside a pruned block, elements are ranked by ``|x|`` (ties: row-major order) and
  the ``zeros_per_block`` lowest are zeroed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

try:  # optional: its float32 accumulate sums large blocks in order, vectorised (see _blocked_sums)
    import numpy as np
except ImportError:  # pragma: no cover - numpy comes with every torch install we test
    np = None

CHUNK_ELEMENTS = 1 << 20
# In-block ranks are counted pairwise up to this block size, by a stable sort above it.
PAIRWISE_RANK_MAX = 16
# Blocks of more elements than this are summed by numpy's sequential accumulate (CPU), not
# one in-block position at a time (a Python loop as long as the block).
SEQUENTIAL_SUM_MIN = 64
# Radix selection: scores are >= +0, so the sign bit is clear and the high 16 bits are < 2**15.
HIGH_BINS = 1 << 15
# (shift, bits) of each radix digit, most significant first. One process: two 16-bit passes,
# the first counted while scoring. Shards: three small digits (4096 counts in all), since
# every pass's histogram is summed over the shards.
DIGITS = ((16, 15), (0, 16))
COMPACT_DIGITS = ((20, 11), (10, 10), (0, 10))
FUSED_SELECTION_MIN_BLOCKS = 1 << 18
# Up to this many scores, torch.kthvalue on the score bits beats the radix passes (about 25 us
# against 260 us at 2048 scores on one CPU thread; even at 8192, slower from about 32768).
KTHVALUE_MAX_BLOCKS = 1 << 14
# A radix pass gathers the scores with the current prefix by groups of this many (CPU).
MATCH_GROUP = 16
PRUNE_ALL_BITS = 0x7FFFFFFF  # above +inf's bits: a threshold below which every score lies
# Integer types as wide as 1, 2, 4 or 8 bools: a whole (1, bw) block of a mask in one word.
_LANES = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _chunks(h: int, w: int, bh: int, bw: int) -> Iterator[tuple[int, int, int, int]]:
    """(block_row0, block_row1, block_col0, block_col1) ranges covering the block grid in
    flat block order, each about ``CHUNK_ELEMENTS`` elements."""
    nbh, nbw = -(-h // bh), -(-w // bw)
    rows_per_chunk = max(1, CHUNK_ELEMENTS // max(1, bh * w))
    cols_per_chunk = nbw if rows_per_chunk > 1 else max(1, CHUNK_ELEMENTS // (bh * bw))
    for r0 in range(0, nbh, rows_per_chunk):
        for c0 in range(0, nbw, cols_per_chunk):
            yield r0, min(nbh, r0 + rows_per_chunk), c0, min(nbw, c0 + cols_per_chunk)


def n_blocks(shape: tuple[int, int], block_shape: tuple[int, int]) -> int:
    return -(-shape[0] // block_shape[0]) * -(-shape[1] // block_shape[1])


def _elements(x: torch.Tensor, r0: int, r1: int, c0: int, c1: int, bh: int, bw: int) -> torch.Tensor:
    """The elements of block rows r0:r1 and block columns c0:c1 (clipped to the tensor)."""
    return x[r0 * bh : r1 * bh, c0 * bw : c1 * bw]


def _blocked(v: torch.Tensor, nb_rows: int, nb_cols: int, bh: int, bw: int, fill: float) -> torch.Tensor:
    """View a chunk as (nb_rows, bh, nb_cols, bw), padding partial edge blocks with ``fill``."""
    pad_h, pad_w = nb_rows * bh - v.shape[0], nb_cols * bw - v.shape[1]
    if pad_h or pad_w:
        v = F.pad(v, (0, pad_w, 0, pad_h), value=fill)
    return v.reshape(nb_rows, bh, nb_cols, bw)


def _block_sums(positions: Sequence[torch.Tensor]) -> torch.Tensor:
    """Sum blocks given their elements by in-block position (row-major), each (nr, nc), one
    position at a time in that order: the order ``avg_pool2d`` (the reference) and the
    Triton kernels use, so all three agree to the bit."""
    if len(positions) == 1:
        return positions[0].contiguous()
    total = positions[0] + positions[1]
    for part in positions[2:]:
        total.add_(part)
    return total


def _blocked_sums(v: torch.Tensor) -> torch.Tensor:
    """``_block_sums`` of a blocked chunk ``v`` (nr, bh, nc, bw), the same bits.

    Large blocks on the CPU: each block's elements laid out as one row, row-major, and
    summed by ``numpy.add.accumulate``, which adds one element at a time, in order, in
    float32 (torch's CPU cumsum accumulates in float64, and sums reduce pairwise), so
    the cost is the data's, not a Python step per in-block position."""
    nr, bh, nc, bw = v.shape
    if bh * bw <= SEQUENTIAL_SUM_MIN or np is None or v.device.type != "cpu" or v.dtype != torch.float32:
        return _block_sums(_positions(v))
    rows = v.permute(0, 2, 1, 3).reshape(nr * nc, bh * bw).contiguous()  # v is a temporary: overwrite it
    a = rows.numpy()
    np.add.accumulate(a, axis=1, out=a)
    return rows[:, -1].reshape(nr, nc).contiguous()


def _positions(v: torch.Tensor) -> list[torch.Tensor]:
    """A blocked chunk ``v`` (nr, bh, nc, bw) as its bh*bw in-block positions, row-major,
    each a (nr, nc) view."""
    _, bh, _, bw = v.shape
    return [v[:, e // bw, :, e % bw] for e in range(bh * bw)]


def nonfinite(x: torch.Tensor) -> torch.Tensor:
    """0-dim bool: does ``x`` hold a NaN or an infinity? One reduction, no temporaries."""
    if x.numel() == 0:
        return torch.zeros((), dtype=torch.bool, device=x.device)
    return ~torch.isfinite(torch.stack(torch.aminmax(x))).all()


def _nonfinite_chunk(xc: torch.Tensor, sums: torch.Tensor) -> torch.Tensor:
    """``nonfinite(xc)``, given the block sums of its |x| or x*x. A NaN or inf in the data
    makes its block's sum one, so finite sums (a reduction 1/(bh*bw) the size of the data)
    settle it; a sum can also overflow with finite data, which the data itself then
    decides. Reading the first answer is free on the CPU; elsewhere the data is checked."""
    if host_reads_are_free(xc.device) and bool(torch.isfinite(sums.amax())):
        return torch.zeros((), dtype=torch.bool, device=xc.device)
    return nonfinite(xc)


def _counts_inside(n: int, block: int, size: int, first_block: int, device: torch.device) -> torch.Tensor:
    """How many of each of ``n`` blocks' rows (or columns) lie inside the tensor."""
    starts = torch.arange(first_block, first_block + n, device=device) * block
    return (size - starts).clamp(max=block).to(torch.float32)


def _count_into(hist: torch.Tensor, bins: torch.Tensor, weights: torch.Tensor | None = None) -> None:
    """hist[b] += (weight of) each b in ``bins``, without a device sync."""
    bins = bins.reshape(-1)
    if weights is None and bins.device.type == "cpu":
        hist += torch.bincount(bins, minlength=hist.numel())  # CUDA's bincount syncs
        return
    if weights is None:
        weights = torch.ones((), dtype=hist.dtype, device=hist.device).expand(bins.numel())
    hist.index_add_(0, bins, weights.reshape(-1))


def host_reads_are_free(device: torch.device) -> bool:
    """Can values be read on the host, and shapes depend on data, without stalling a device?
    True on the CPU, where a few shortcuts below use it; elsewhere the code stays sync-free."""
    return device.type == "cpu"


def _count_matching(hist: torch.Tensor, values: torch.Tensor, shift: int, top: int, prefix: torch.Tensor) -> None:
    """hist[digit] += 1 for the digit (``values >> shift``, cut to ``hist``'s size) of each
    value whose bits from ``top`` up equal ``prefix``'s. On the CPU the matching values
    (usually few) are gathered first; elsewhere every digit gets a weight of 0 or 1 (no
    data-dependent shapes, and no single hot bin, which would serialise the count)."""
    if host_reads_are_free(values.device):
        digit = (_with_prefix(values, top, prefix) >> shift) & (hist.numel() - 1)
        hist += torch.bincount(digit, minlength=hist.numel())
    else:
        match = (values >> top) == (prefix >> top)
        _count_into(hist, (values >> shift) & (hist.numel() - 1), match.to(hist.dtype))


def _with_prefix(values: torch.Tensor, top: int, prefix: torch.Tensor) -> torch.Tensor:
    """The values (1-D int32) whose bits from ``top`` up equal ``prefix``'s, in order.

    A data-dependent gather, which is slow per element scanned, so it scans groups of
    ``MATCH_GROUP`` values first: those holding a match are gathered whole and filtered."""
    p = prefix >> top
    whole = values.numel() - values.numel() % MATCH_GROUP
    hit = (values[:whole] >> top).eq_(p).view(-1, MATCH_GROUP).amax(1)  # int32 compares vectorise
    groups = values[:whole].view(-1, MATCH_GROUP).index_select(0, hit.nonzero().squeeze(1))
    candidates = torch.cat([groups.reshape(-1), values[whole:]])
    return candidates[(candidates >> top) == p]


def _lanes(v: torch.Tensor) -> torch.Tensor:
    """|x| of a blocked chunk ``v`` (nr, bh, nc, bw) as (bh*bw, nr, nc): one contiguous row
    per in-block position, so that every later op on a position is a contiguous one."""
    nr, bh, nc, bw = v.shape
    lanes = torch.empty(bh * bw, nr, nc, dtype=torch.float32, device=v.device)
    for lane, position in zip(lanes, _positions(v), strict=True):
        torch.abs(position, out=lane)
    return lanes


def _in_block_keep(lanes: torch.Tensor, zeros_per_block: int) -> torch.Tensor:
    """Keep-if-pruned map, (nr, nc, n) in block-major order, of the positions ``lanes``
    ((n, nr, nc), |x| with +inf in padding, which ranks last): False for the
    ``zeros_per_block`` smallest of each block."""
    n = lanes.shape[0]
    if n in _LANES and n > 1:
        return _packed_rank_at_least(lanes, zeros_per_block).view(torch.bool).view(*lanes.shape[1:], n)
    ranks = _pairwise_ranks(lanes)
    return torch.stack([rank >= zeros_per_block for rank in ranks], -1)


def _packed_rank_at_least(lanes: torch.Tensor, z: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """rank >= z for every position of blocks of 2, 4 or 8 (``lanes``: (n, ...) of |x|),
    with a block's answers packed one byte each in a 2-, 4- or 8-byte word: the bytes of
    the (..., n) bool map. One contiguous compare and one add per pair of positions."""
    n = lanes.shape[0]
    lane = _LANES[n]
    ones = int.from_bytes(b"\x01" * n, "little")
    # |x| >= +0, so the values order like their bit patterns: integer compares, whose
    # 0/1 results come out in the word type, vectorised (a bool result would not be).
    bits = lanes.view(torch.int32)
    # Each byte will hold a rank r <= 7, plus 8 - z: bit 3 is set exactly when r >= z.
    # Byte i starts at n-1-i (the rank it would have if every later element were smaller).
    start = sum((n - 1 - i + 8 - z) << (8 * i) for i in range(n))
    packed = torch.full(lanes.shape[1:], start, dtype=lane, device=lanes.device) if out is None else out.fill_(start)
    i_first = torch.empty_like(packed)
    for i in range(n):
        for j in range(i + 1, n):
            torch.le(bits[i], bits[j], out=i_first)
            packed.add_(i_first, alpha=(1 << (8 * j)) - (1 << (8 * i)))
    return packed.bitwise_right_shift_(3).bitwise_and_(ones)


def block_scores(
    x: torch.Tensor,
    block_shape: tuple[int, int],
    norm: str,
    high_histogram: bool = False,
    in_block_keep: tuple[torch.Tensor, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Mean of |x| or x*x per block (float32, (ceil(H/bh), ceil(W/bw))) and the non-finite flag.

    While each chunk is in cache it can also count the histogram of the scores' high 16
    bits (the first radix-selection pass), and write into ``in_block_keep = (mask, z)``
    which elements a pruned block would keep (all but its ``z`` smallest |x|).
    """
    h, w = x.shape
    bh, bw = block_shape
    scores = torch.empty(-(-h // bh), -(-w // bw), dtype=torch.float32, device=x.device)
    bad = torch.zeros((), dtype=torch.bool, device=x.device)
    hist = torch.zeros(HIGH_BINS, dtype=torch.int64, device=x.device) if high_histogram else None
    full = torch.full((), float(bh * bw), device=x.device)
    # In-block ranks of small blocks compare each pair of positions: lay the chunk out by
    # position once (``_lanes``) and sum the scores from that layout too.
    by_position = in_block_keep is not None and bh * bw <= PAIRWISE_RANK_MAX
    for r0, r1, c0, c1 in _chunks(h, w, bh, bw):
        xc = _elements(x, r0, r1, c0, c1, bh, bw)
        nr, nc = r1 - r0, c1 - c0
        xf = xc.float()
        lanes = _lanes(_blocked(xf, nr, nc, bh, bw, 0.0)) if by_position else None
        if lanes is not None:
            sums = _block_sums((lanes if norm == "L1" else lanes * lanes).unbind(0))
        else:
            sums = _blocked_sums(_blocked(xf.abs() if norm == "L1" else xf * xf, nr, nc, bh, bw, 0.0))
        bad |= _nonfinite_chunk(xc, sums)
        count = full
        if xc.shape[0] < nr * bh or xc.shape[1] < nc * bw:
            count = _counts_inside(nr, bh, h, r0, x.device)[:, None] * _counts_inside(nc, bw, w, c0, x.device)
        out = scores[r0:r1, c0:c1]
        torch.div(sums, count, out=out)
        if hist is not None:
            _count_into(hist, out.view(torch.int32) >> 16)
        if in_block_keep is not None:
            _write_in_block_keep(in_block_keep, xf, (r0, r1, c0, c1), block_shape, lanes)
    return scores, bad, hist


def _write_in_block_keep(
    in_block_keep: tuple[torch.Tensor, int],
    xf: torch.Tensor,
    chunk: tuple[int, int, int, int],
    block_shape: tuple[int, int],
    lanes: torch.Tensor | None = None,
) -> None:
    """Write one chunk's keep-if-pruned map into ``mask`` (``in_block_keep = (mask, z)``).
    ``xf`` is the chunk in float32; ``lanes`` its ``_lanes`` (zero-padded), if made."""
    mask, z = in_block_keep
    r0, r1, c0, c1 = chunk
    nr, nc = r1 - r0, c1 - c0
    bh, bw = block_shape
    n = bh * bw
    target = _elements(mask, r0, r1, c0, c1, bh, bw)
    padded = xf.shape != (nr * bh, nc * bw)
    if n > PAIRWISE_RANK_MAX:
        v = _blocked(xf.abs(), nr, nc, bh, bw, float("inf")).permute(0, 2, 1, 3).reshape(nr, nc, n)
        keep = _sorted_ranks(v) >= z
    else:
        if lanes is None or padded:
            lanes = _lanes(_blocked(xf, nr, nc, bh, bw, float("inf")))  # padding ranks last
        words = _block_words(target, nr, nc, bh, bw)
        if words is not None:
            # The packed answers are the bytes of this part of the mask: write them there.
            _packed_rank_at_least(lanes, z, out=words)
            return
        keep = _in_block_keep(lanes, z)
    keep = keep.view(nr, nc, bh, bw).permute(0, 2, 1, 3).reshape(nr * bh, nc * bw)
    target.copy_(keep[: xf.shape[0], : xf.shape[1]])


class Threshold(NamedTuple):
    """The k-th smallest score (as bits), how many scores equal to it are pruned, and (when
    known) how many there are."""

    bits: torch.Tensor
    ties_pruned: torch.Tensor
    ties: torch.Tensor | None = None


def _first_reaching(counts: torch.Tensor, k: torch.Tensor | int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first bin whose cumulative count reaches ``k``, and ``k`` less the bins before it."""
    cum = counts.cumsum(0)
    k = torch.as_tensor(k, dtype=cum.dtype, device=cum.device).reshape(1)
    b = torch.searchsorted(cum, k).squeeze(0)
    return b, k.squeeze(0) - (cum[b] - counts[b])


def digit_histogram(scores: torch.Tensor, prefix: torch.Tensor, shift: int, bits: int) -> torch.Tensor:
    """Counts (int64) of the ``bits``-bit digit at ``shift`` of the scores whose bits above
    it equal ``prefix``'s."""
    hist = torch.zeros(1 << bits, dtype=torch.int64, device=scores.device)
    flat = scores.reshape(-1).view(torch.int32)
    top = shift + bits
    for start in range(0, flat.numel(), CHUNK_ELEMENTS):
        chunk = flat[start : start + CHUNK_ELEMENTS]
        # Only scores with the prefix count. Above bit 30 (bit 31 is the sign, always 0)
        # every score matches.
        if top >= 31:
            _count_into(hist, (chunk >> shift) & ((1 << bits) - 1))
        else:
            _count_matching(hist, chunk, shift, top, prefix)
    return hist


def kth_smallest(
    scores: torch.Tensor,
    k: int,
    first_histogram: torch.Tensor | None = None,
    digits: tuple[tuple[int, int], ...] = DIGITS,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Threshold:
    """Exact k-th smallest (1-based) score by radix passes over ``digits``: no sort, no sync.

    ``first_histogram`` is the first pass's, when already counted. ``reduce`` (say, an
    all-reduce over the shards of a larger score set) sums each pass's histogram before
    its digit is picked, so the result is the k-th smallest of the union.
    """
    prefix = torch.zeros((), dtype=torch.int32, device=scores.device)
    left: torch.Tensor | int = k
    for i, (shift, bits) in enumerate(digits):
        hist = first_histogram if i == 0 and first_histogram is not None else digit_histogram(scores, prefix, shift, bits)
        if reduce is not None:
            hist = reduce(hist)
        digit, left = _first_reaching(hist, left)
        prefix = prefix | (digit.to(torch.int32) << shift)
    # The digits cover every bit but the (clear) sign bit, so the last bin holds exactly the
    # scores equal to the threshold.
    return Threshold(prefix, left, hist[digit])


def kthvalue_threshold(scores: torch.Tensor, k: int) -> Threshold:
    """The same ``Threshold`` as ``kth_smallest``, by ``torch.kthvalue`` on the score bits
    (non-negative floats order like their bits): exact, and faster for a few thousand scores."""
    bits = scores.reshape(-1).view(torch.int32)
    t = bits.kthvalue(k).values
    return Threshold(t, k - (bits < t).sum(), (bits == t).sum())


def select_threshold(
    scores: torch.Tensor, k: int, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> Threshold:
    """The ``Threshold`` pruning the ``k`` lowest scores (``0 < k <=`` their number, or, with
    ``reduce``, the number of scores over all shards), by the compact 11/10/10-bit digits."""
    return kth_smallest(scores, k, None, COMPACT_DIGITS, reduce)


class PrunedBlocks:
    """Which blocks are pruned, handed out chunk by chunk in flat block order: those below
    the threshold, and the lowest-index ones equal to it.

    A block's tie rank is the running count of blocks equal to the threshold, plus
    ``row_ties[block row]`` where given: the ties before it that this score grid does
    not hold (a shard's grid within a larger one).
    """

    def __init__(self, scores: torch.Tensor, k: int, threshold: Threshold | None, row_ties: torch.Tensor | None = None):
        self.scores, self.k, self.threshold, self.row_ties = scores, k, threshold, row_ties
        self._ties_before = torch.zeros((), dtype=torch.int32, device=scores.device)
        # Usually every score equal to the threshold is pruned (with continuous data, the
        # threshold's own); then "pruned" is just "at most the threshold", with no tie ranks.
        # Finding out reads two numbers: free on the CPU, a device sync elsewhere (not done).
        # (Not for a shard's grid, whose ``row_ties`` count ties held elsewhere.)
        self._all_ties_pruned = (
            threshold is not None and threshold.ties is not None and row_ties is None
            and host_reads_are_free(scores.device) and bool(threshold.ties_pruned == threshold.ties)
        )

    @classmethod
    def select(cls, scores: torch.Tensor, k: int, high_histogram: torch.Tensor | None = None) -> PrunedBlocks:
        """The ``k`` lowest of ``scores``: by the two 16-bit passes when the first one's
        histogram was counted while scoring, else by the compact digits."""
        if not 0 < k < scores.numel():
            return cls(scores, k, None)
        if scores.numel() <= KTHVALUE_MAX_BLOCKS:
            return cls(scores, k, kthvalue_threshold(scores, k))
        if high_histogram is None:
            return cls(scores, k, select_threshold(scores, k))
        return cls(scores, k, kth_smallest(scores, k, high_histogram))

    def kept(self, r0: int, r1: int, c0: int, c1: int, lane: torch.dtype = torch.bool) -> torch.Tensor:
        """Which blocks of rows r0:r1 and columns c0:c1 are kept: bool, or, for an integer
        ``lane`` type, words of that type with every byte 1 (kept) or 0 (pruned): a (1, bw)
        block of the bool mask, for the ``bw`` bytes of the word."""
        s = self.scores[r0:r1, c0:c1]
        ones = int.from_bytes(b"\x01" * lane.itemsize, "little")
        if self.threshold is None:  # k is 0 or every block
            return torch.full(s.shape, ones if self.k == 0 else 0, dtype=lane, device=s.device)
        bits, t = s.view(torch.int32), self.threshold.bits
        if self._all_ties_pruned:
            if lane == torch.bool:
                return bits > t
            # Both are in [0, 2**31): t - bits is negative, its sign filling the word
            # after the shift, exactly where the score is above the threshold.
            above = (t - bits) >> 31
            return (above if lane == torch.int32 else above.to(lane)) & ones
        equal = bits == t
        tie_rank = equal.reshape(-1).cumsum(0, dtype=torch.int32).reshape(s.shape) + self._ties_before
        self._ties_before = tie_rank[-1, -1]
        if self.row_ties is not None:
            tie_rank = tie_rank + self.row_ties[r0:r1, None]
        kept = (bits > t) | (equal & (tie_rank > self.threshold.ties_pruned))  # tie_rank is 1-based
        return kept if lane == torch.bool else kept.to(lane) * ones


def _pairwise_ranks(lanes: torch.Tensor) -> list[torch.Tensor]:
    """Each position's rank within its block (ties: lower position first), one uint8
    tensor per position of ``lanes`` (n, ...)."""
    n = lanes.shape[0]
    ranks = [torch.full(lanes.shape[1:], n - 1 - i, dtype=torch.uint8, device=lanes.device) for i in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            i_first = torch.le(lanes[i], lanes[j]).view(torch.uint8)
            ranks[j] += i_first
            ranks[i] -= i_first
    return ranks


def _sorted_ranks(v: torch.Tensor) -> torch.Tensor:
    """Each element's rank along the last dim of ``v`` (ties: lower index first), by a
    stable sort (for large blocks): one tensor, no step per position."""
    order = torch.sort(v, dim=-1, stable=True).indices
    positions = torch.arange(v.shape[-1], device=v.device).expand_as(order)
    return torch.empty_like(order).scatter_(-1, order, positions)


def _broadcast_blocks(p: torch.Tensor, bh: int, bw: int, out: torch.Tensor) -> torch.Tensor:
    """The block map ``p`` (nr, nc) spread over its elements, cropped to ``out``'s shape."""
    nr, nc = p.shape
    if out.shape == (nr * bh, nc * bw):
        return p[:, None, :, None].expand(nr, bh, nc, bw).reshape(out.shape)
    return p[:, None, :, None].expand(nr, bh, nc, bw).reshape(nr * bh, nc * bw)[: out.shape[0], : out.shape[1]]


def _block_words(out: torch.Tensor, nr: int, nc: int, bh: int, bw: int) -> torch.Tensor | None:
    """``out`` (a chunk of a bool mask) as (nr, nc) words of ``bw`` bytes, one per (1, bw)
    block, where its layout allows; else None."""
    lane = _LANES.get(bw)
    if bh > 1 or lane is None or out.shape != (nr, nc * bw) or out.stride(-1) != 1:
        return None
    if out.stride(0) % bw or out.storage_offset() % bw:
        return None
    return out.view(lane)


def _spread_blocks(out: torch.Tensor, blocks: PrunedBlocks, chunk: tuple[int, int, int, int], bh: int, bw: int,
                   combine: bool) -> None:
    """Write (or OR, with ``combine``) the kept blocks of ``chunk`` over the elements of ``out``."""
    r0, r1, c0, c1 = chunk
    nr, nc = r1 - r0, c1 - c0
    words = _block_words(out, nr, nc, bh, bw)
    if words is not None:
        spread = blocks.kept(r0, r1, c0, c1, words.dtype)
    elif out.shape == (nr * bh, nc * bw) and out.stride(-1) == 1:
        words = out.unflatten(1, (nc, bw)).unflatten(0, (nr, bh))
        spread = blocks.kept(r0, r1, c0, c1)[:, None, :, None]
    else:
        words, spread = out, _broadcast_blocks(blocks.kept(r0, r1, c0, c1), bh, bw, out)
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
    for r0, r1, c0, c1 in _chunks(h, w, bh, bw):
        _spread_blocks(_elements(mask, r0, r1, c0, c1, bh, bw), blocks, (r0, r1, c0, c1), bh, bw, combine=partial)
    return mask


def block_mask(
    x: torch.Tensor, k: int, block_shape: tuple[int, int], zeros_per_block: int, norm: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bool keep-mask of ``x`` with its ``k`` lowest-scoring blocks pruned, and the non-finite flag."""
    bh, bw = block_shape
    n = n_blocks(x.shape, block_shape)
    # Many blocks: count the first 16-bit radix pass while scoring. Few: the compact digits'
    # small histograms (a 2**15-bin one costs more than scoring a small tensor).
    select = zeros_per_block > 0 and 0 < k < n and n >= FUSED_SELECTION_MIN_BLOCKS
    mask = torch.empty(x.shape, dtype=torch.bool, device=x.device)
    in_block = (mask, zeros_per_block) if 0 < zeros_per_block < bh * bw else None
    scores, bad, hist = block_scores(x, block_shape, norm, high_histogram=select, in_block_keep=in_block)
    blocks = PrunedBlocks.select(scores, k if zeros_per_block > 0 else 0, hist)
    return keep_mask(x, blocks, block_shape, zeros_per_block, mask), bad


def block_mask_given(
    x: torch.Tensor,
    scores: torch.Tensor,
    threshold: Threshold,
    row_ties: torch.Tensor | None,
    block_shape: tuple[int, int],
    zeros_per_block: int,
    norm: str,
) -> torch.Tensor:
    """Bool keep-mask of ``x`` given its block ``scores`` and a ``threshold`` selected
    elsewhere (``Threshold(0, 0)`` prunes nothing, ``Threshold(PRUNE_ALL_BITS, 0)`` every
    block); ``row_ties`` as ``PrunedBlocks``. ``norm`` is unused: the scores are given."""
    bh, bw = block_shape
    mask = torch.empty(x.shape, dtype=torch.bool, device=x.device)
    if 0 < zeros_per_block < bh * bw:
        for r0, r1, c0, c1 in _chunks(x.shape[0], x.shape[1], bh, bw):
            xf = _elements(x, r0, r1, c0, c1, bh, bw).float()
            _write_in_block_keep((mask, zeros_per_block), xf, (r0, r1, c0, c1), block_shape)
    blocks = PrunedBlocks(scores, 1, threshold, row_ties)  # k only matters without a threshold
    return keep_mask(x, blocks, block_shape, zeros_per_block, mask)


def block_norm(x: torch.Tensor, block_shape: tuple[int, int], norm: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Block scores and the non-finite flag."""
    scores, bad, _ = block_scores(x, block_shape, norm)
    return scores, bad


def _multiply(x: torch.Tensor, mask: torch.Tensor, out: torch.Tensor) -> None:
    """out = x * mask, chunk by chunk: a bool mask is promoted to x's dtype for the product,
    and only a chunk's worth of it may exist at a time."""
    h, w = x.shape
    for r0, r1, c0, c1 in _chunks(h, w, 1, 1):
        torch.mul(x[r0:r1, c0:c1], mask[r0:r1, c0:c1], out=out[r0:r1, c0:c1])


def sparsify(
    x: torch.Tensor, k: int, block_shape: tuple[int, int], zeros_per_block: int, norm: str, out: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``block_mask``, then ``out = x * mask`` unless the data was bad (``out`` may be ``x``)."""
    mask, bad = block_mask(x, k, block_shape, zeros_per_block, norm)
    bad = bad.cpu()  # the one sync: nothing may be written when the data is bad
    if not bad:
        _multiply(x, mask, out)
    return mask, bad


def apply_mask(x: torch.Tensor, mask: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out = x * mask`` unless ``x`` holds NaN or inf (``out`` may be ``x``); returns the flag."""
    bad = nonfinite(x).cpu()  # the one sync: nothing may be written when the data is bad
    if not bad:
        _multiply(x, mask, out)
    return bad
