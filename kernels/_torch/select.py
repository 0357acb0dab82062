"""Selection: which ``k`` blocks are pruned. Those below the ``k``-th smallest score, plus
the lowest-index blocks equal to it, found by an exact radix selection on the score bits
(up to ``KTHVALUE_MAX_BLOCKS`` scores, ``torch.kthvalue`` on the same bits finds the same
threshold faster). No sort, and no host sync unless the policy allows host reads.

Score keys: scores are float32 ``>= +0`` (means of |x| or x*x), so their int32 bit patterns
order exactly like their values (``a < b == a.view(int32) < b.view(int32)``; IEEE floats of
one sign are sign-magnitude, with the exponent above the mantissa), with the sign bit clear.
Every comparison and radix digit below works on ``scores.view(torch.int32)``: integer
compares and shifts, exact, no float ties to think about (``-0.0`` cannot occur: a sum of
``+0``/positive terms divided by a positive count is ``+0`` or positive).

The selection can be made elsewhere (over every shard of a larger tensor, see
``blocksparsity.kernels._sharded``): ``select_threshold`` sums each radix pass's histogram through a
``reduce`` hook, and ``PrunedBlocks`` takes per-block-row tie offsets."""

from __future__ import annotations

import math

import torch

from blocksparsity.kernels._common import COMPACT_DIGITS, DIGITS, Reduce, Threshold
from blocksparsity.kernels._torch import _config, _policy
from blocksparsity.kernels._torch._blocks import Chunk
from blocksparsity.kernels._torch._policy import Policy

try:  # optional: the sampled selection's passes and partition (host reads only)
    import numpy as np
except ImportError:  # pragma: no cover - numpy comes with every torch install we test
    np = None


def count_into(histogram: torch.Tensor, bins: torch.Tensor, policy: Policy, weights: torch.Tensor | None = None) -> None:
    """``histogram[b] += 1`` (or the element's weight) for each ``b`` in ``bins``.

    ``histogram``: int64 (n_bins,); ``bins``: int64/int32 of any shape, each in
    ``[0, n_bins)``; ``weights``: ``histogram``'s dtype, ``bins``' shape. Without a host sync
    unless ``policy.host_reads`` (CUDA's ``bincount`` syncs to size its output; the CPU's is
    the fastest count); the sync-free way is ``index_add_`` of the weights (or of ones)."""
    bins = bins.reshape(-1)
    if weights is None and policy.host_reads:
        histogram += torch.bincount(bins, minlength=histogram.numel())
        return
    if weights is None:
        weights = torch.ones((), dtype=histogram.dtype, device=histogram.device).expand(bins.numel())
    histogram.index_add_(0, bins, weights.reshape(-1))


def count_matching(
    histogram: torch.Tensor, values: torch.Tensor, shift: int, top: int, prefix: torch.Tensor, policy: Policy
) -> None:
    """``histogram[(v >> shift) & (n_bins - 1)] += 1`` for each ``v`` of ``values`` (int32, 1-D:
    score bits) with ``v >> top == prefix >> top`` (its bits from ``top`` up equal
    ``prefix``'s, a 0-dim int32). With host reads the matching values (usually few) are
    gathered first (``with_prefix``); else every digit is counted with a weight of 0 or 1 (no
    data-dependent shapes, and no single hot bin, which would serialise the count)."""
    if policy.host_reads:
        digit = (with_prefix(values, top, prefix) >> shift) & (histogram.numel() - 1)
        histogram += torch.bincount(digit, minlength=histogram.numel())
    else:
        match = (values >> top) == (prefix >> top)
        count_into(histogram, (values >> shift) & (histogram.numel() - 1), policy, match.to(histogram.dtype))


def with_prefix(values: torch.Tensor, top: int, prefix: torch.Tensor) -> torch.Tensor:
    """``values[(values >> top) == (prefix >> top)]``: the values (1-D int32) whose bits from
    ``top`` up equal ``prefix``'s, in order (host reads only: the shape depends on the data).

    A data-dependent gather is slow per element scanned, so it scans groups of
    ``MATCH_GROUP`` values first (one int32 compare and a max per group, vectorised): only
    groups holding a match are gathered whole, then filtered; the tail that does not fill a
    group is always a candidate. Same result as the plain expression, in the same order."""
    group = _config.MATCH_GROUP
    prefix_top = prefix >> top
    whole = values.numel() - values.numel() % group
    group_hit = (values[:whole] >> top).eq_(prefix_top).view(-1, group).amax(1)  # int32 compares vectorise
    groups = values[:whole].view(-1, group).index_select(0, group_hit.nonzero().squeeze(1))
    candidates = torch.cat([groups.reshape(-1), values[whole:]])
    return candidates[(candidates >> top) == prefix_top]


def indices_equal(values: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``(values == target).nonzero().squeeze(1)``: the indices (int64, 1-D, ascending) of the
    values (1-D int32) equal to ``target`` (0-dim int32), host reads only. The compare's bools
    are read 8 at a time as int64 words, and only the words holding a match are searched:
    ``nonzero`` costs far more per element scanned than the compare, and ties are few."""
    equal = values == target
    whole = values.numel() - values.numel() % 8
    words = equal[:whole].view(torch.int64).nonzero().squeeze(1)
    candidates = torch.cat([(words[:, None] * 8 + torch.arange(8, device=values.device)).reshape(-1),
                            torch.arange(whole, values.numel(), device=values.device)])
    return candidates[equal[candidates]]


def first_reaching(counts: torch.Tensor, k: torch.Tensor | int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first bin whose cumulative count reaches ``k`` (``counts``: int64 (n_bins,); ``k``
    >= 1, an int or 0-dim tensor), and ``k`` less the counts of the bins before it (how many of
    that bin's values are still to take): 0-dim int64 tensors, no host sync."""
    cumulative = counts.cumsum(0)
    k = torch.as_tensor(k, dtype=cumulative.dtype, device=cumulative.device).reshape(1)
    bin_index = torch.searchsorted(cumulative, k).squeeze(0)
    return bin_index, k.squeeze(0) - (cumulative[bin_index] - counts[bin_index])


def digit_histogram(scores: torch.Tensor, prefix: torch.Tensor, shift: int, bits: int, policy: Policy) -> torch.Tensor:
    """One radix pass: counts (int64, (2**bits,)) of the ``bits``-bit digit at ``shift`` of the
    scores (float32, any shape, contiguous) whose bits above it (from ``shift + bits`` up)
    equal ``prefix``'s (0-dim int32), chunk by chunk."""
    histogram = torch.zeros(1 << bits, dtype=torch.int64, device=scores.device)
    flat = scores.reshape(-1).view(torch.int32)
    top = shift + bits
    for start in range(0, flat.numel(), _config.CHUNK_ELEMENTS):
        score_bits = flat[start : start + _config.CHUNK_ELEMENTS]
        # Only scores with the prefix count. Above bit 30 (bit 31 is the sign, always 0)
        # every score matches.
        if top >= 31:
            count_into(histogram, (score_bits >> shift) & ((1 << bits) - 1), policy)
        else:
            count_matching(histogram, score_bits, shift, top, prefix, policy)
    return histogram


def kth_smallest(
    scores: torch.Tensor,
    k: int,
    policy: Policy,
    first_histogram: torch.Tensor | None = None,
    digits: tuple[tuple[int, int], ...] = DIGITS,
    reduce: Reduce | None = None,
) -> Threshold:
    """Exact k-th smallest (1-based) of ``scores`` (float32 >= 0, any shape, contiguous) by
    radix passes over ``digits`` ((shift, bits) pairs, most significant first, covering bits
    0..30): no sort. Returns ``Threshold(bits, ties_pruned, ties)`` with 0-dim tensors.

    Each pass counts the digit of the scores that share the prefix chosen so far, picks the
    digit whose cumulative count reaches the ``k`` still to take, and appends it to the prefix.
    ``first_histogram`` is the first pass's, when already counted (while scoring). ``reduce``
    (say, an all-reduce over the shards of a larger score set) sums each pass's histogram
    before its digit is picked, so the result is the k-th smallest of the union.
    """
    prefix = torch.zeros((), dtype=torch.int32, device=scores.device)
    left: torch.Tensor | int = k
    for i, (shift, bits) in enumerate(digits):
        counted = first_histogram if i == 0 else None
        histogram = counted if counted is not None else digit_histogram(scores, prefix, shift, bits, policy)
        if reduce is not None:
            histogram = reduce(histogram)
        digit, left = first_reaching(histogram, left)
        prefix = prefix | (digit.to(torch.int32) << shift)
    # The digits cover every bit but the (clear) sign bit, so the last bin holds exactly the
    # scores equal to the threshold.
    return Threshold(prefix, left, histogram[digit])


def kthvalue_threshold(scores: torch.Tensor, k: int) -> Threshold:
    """The same ``Threshold`` as ``kth_smallest`` (``scores``: float32 >= 0, contiguous), by
    ``torch.kthvalue`` on the score bits: ``bits.kthvalue(k)``, then how many below it and
    equal to it. Exact, and faster for a few thousand scores (``KTHVALUE_MAX_BLOCKS``)."""
    bits = scores.reshape(-1).view(torch.int32)
    threshold_bits = bits.kthvalue(k).values
    return Threshold(threshold_bits, k - (bits < threshold_bits).sum(), (bits == threshold_bits).sum())


def sampled_threshold(scores: torch.Tensor, k: int) -> Threshold | None:
    """The same ``Threshold`` as ``kth_smallest`` (``scores``: float32 >= 0, contiguous, in
    host memory; ``0 < k <`` their number), found from a sample, or None where the sample's
    window misses the k-th (then the radix passes find it). Exact either way: the sample only
    decides how much is gathered.

    An evenly strided sample (``SAMPLE_SCORES`` scores, or one in ``SAMPLE_EVERY``), sorted,
    gives bounds ``lo <= hi`` around the rank ``k`` would have in it (``SAMPLE_MARGIN_SIGMAS``
    standard deviations of a sample quantile each side; a window reaching past the sample's
    ends reaches 0 or the largest bits). One pass over the score bits, in cache-sized chunks,
    counts those below ``lo`` and gathers those in ``[lo, hi]`` (one unsigned compare of
    ``bits - lo``: both are in [0, 2**31), so the difference cannot overflow, and a value
    below ``lo`` wraps to above the span). When the k-th lies in the window, it is the
    ``k - below``-th smallest gathered score (``numpy.partition``), and every score equal to
    it was gathered, so the tie counts are exact too. A window holding more than one score in
    ``SAMPLE_WINDOW_MAX_SHARE`` (wide runs of equal scores: a zeroed table, low-precision data)
    is given up (None) as soon as it is seen, in the sample where it shows there: the radix
    passes' cost does not depend on ties, a gathered copy and its partition would."""
    bits = scores.reshape(-1).view(torch.int32).numpy()
    n = bits.size
    m = max(_config.SAMPLE_SCORES, n // _config.SAMPLE_EVERY)
    sample = np.sort(bits[:: n // m][:m])
    rank = k * m // n
    margin = math.ceil(_config.SAMPLE_MARGIN_SIGMAS * math.sqrt(m)) + 1
    # A window reaching past the sample's ends reaches the ends of the bits' range.
    lo = int(sample[rank - margin]) if rank - margin > 0 else 0
    hi = int(sample[rank + margin]) if rank + margin < m - 1 else 0x7FFFFFFF
    # The sample's share inside the window estimates the scores' share: runs of ties there
    # (equal values past the margin's indices) say the window would be too full. No pass made.
    in_window = np.searchsorted(sample, hi, "right") - np.searchsorted(sample, lo, "left")
    if in_window * _config.SAMPLE_WINDOW_MAX_SHARE > m:
        return None
    span = np.uint32(hi - lo)
    below, window, gathered_so_far = 0, [], 0
    offsets = np.empty(min(n, _config.CHUNK_ELEMENTS), dtype=np.int32)
    for start in range(0, n, _config.CHUNK_ELEMENTS):
        chunk = bits[start : start + _config.CHUNK_ELEMENTS]
        offset = offsets[: chunk.size]
        np.subtract(chunk, np.int32(lo), out=offset)
        below += int(np.count_nonzero(offset < 0))
        window.append(chunk[offset.view(np.uint32) <= span])
        gathered_so_far += window[-1].size
        if gathered_so_far > n // _config.SAMPLE_WINDOW_MAX_SHARE:  # ties fill the window: leave it to the radix passes
            return None
    gathered = np.concatenate(window)
    need = k - below  # the k-th overall is the need-th smallest gathered score
    if not 0 < need <= gathered.size:
        return None
    kth = gathered[need - 1] if gathered.size == 1 else np.partition(gathered, need - 1)[need - 1]
    device = scores.device
    return Threshold(torch.tensor(int(kth), dtype=torch.int32, device=device),
                     torch.tensor(need - int(np.count_nonzero(gathered < kth)), dtype=torch.int64, device=device),
                     torch.tensor(int(np.count_nonzero(gathered == kth)), dtype=torch.int64, device=device))


def select_threshold(
    scores: torch.Tensor, k: int, reduce: Reduce | None = None, *, policy: Policy | None = None
) -> Threshold:
    """The ``Threshold`` pruning the ``k`` lowest ``scores`` (float32 >= 0, any shape,
    contiguous; ``0 < k <=`` their number, or, with ``reduce``, the number of scores over all
    shards), by the compact 11/10/10-bit digits (``_common.COMPACT_DIGITS``, small histograms
    to reduce)."""
    return kth_smallest(scores, k, policy or _policy.for_device(scores.device), None, COMPACT_DIGITS, reduce)


def samples(n_scores: int, policy: Policy) -> bool:
    """Does the selection over ``n_scores`` scores try ``sampled_threshold`` first? Where values
    may be read on the host (numpy views of the scores) and there are enough for a sample."""
    return policy.host_reads and np is not None and n_scores >= _config.SAMPLED_SELECTION_MIN_BLOCKS


class PrunedBlocks:
    """Which blocks are pruned, handed out chunk by chunk in flat block order: those whose
    score is below the threshold, and the lowest-index ones equal to it.

    ``scores``: float32 >= 0, the block grid's shape (n_block_rows, n_block_cols),
    contiguous. ``threshold``: the selection (None when ``k`` is 0 or every block).
    A block's tie rank is the running count (1-based, flat block order) of blocks equal to
    the threshold, plus ``row_ties[block row]`` (int64, (n_block_rows,)) where given: the
    ties before that block row that this score grid does not hold (a shard's grid within a
    larger one). A block is pruned when ``bits < threshold.bits``, or ``bits == threshold.bits``
    and its tie rank ``<= threshold.ties_pruned``.
    """

    def __init__(self, scores: torch.Tensor, k: int, threshold: Threshold | None, policy: Policy,
                 row_ties: torch.Tensor | None = None):
        self.scores, self.k, self.threshold, self.row_ties = scores, k, threshold, row_ties
        self._host_reads = policy.host_reads
        self._ties_before = torch.zeros((), dtype=torch.int64, device=scores.device)  # 2**31 blocks or more: no wrap
        # Usually every score equal to the threshold is pruned (with continuous data, the
        # threshold's own); then "pruned" is just "at most the threshold", with no tie ranks.
        # Finding out reads two numbers on the host: only where the policy allows.
        # (Not for a shard's grid, whose ``row_ties`` count ties held elsewhere.)
        self._all_ties_pruned = (
            threshold is not None and threshold.ties is not None and row_ties is None
            and policy.host_reads and bool(threshold.ties_pruned == threshold.ties)
        )

    @classmethod
    def select(cls, scores: torch.Tensor, k: int, policy: Policy,
               high_histogram: torch.Tensor | None = None) -> PrunedBlocks:
        """The ``k`` lowest of ``scores`` (float32 >= 0, the block grid): by ``torch.kthvalue``
        up to ``KTHVALUE_MAX_BLOCKS`` scores; else from a sample (``samples``), or by the two
        16-bit passes when the first one's histogram (``high_histogram``, int64
        (``HIGH_BINS``,)) was counted while scoring or a sample gave up (ties: two passes over
        them beat three, with one fewer prefix gather), or by the compact digits."""
        if not 0 < k < scores.numel():
            return cls(scores, k, None, policy)
        if scores.numel() <= _config.KTHVALUE_MAX_BLOCKS:
            return cls(scores, k, kthvalue_threshold(scores, k), policy)
        digits = COMPACT_DIGITS if high_histogram is None else DIGITS
        if samples(scores.numel(), policy):
            threshold = sampled_threshold(scores, k)
            if threshold is not None:
                return cls(scores, k, threshold, policy)
            digits = DIGITS
        return cls(scores, k, kth_smallest(scores, k, policy, high_histogram, digits), policy)

    def defer_kept_ties(self) -> torch.Tensor | None:
        """Tie switch-back by index: where only some of the blocks tied at the threshold are
        pruned and values may be read on the host, from now on ``kept`` prunes every tie (no
        tie ranks, no running count: "kept" is just ``bits > threshold.bits``), and this
        returns the flat indices (int64, 1-D) of the tied blocks that must stay kept (those
        after the first ``ties_pruned``), for the caller to switch back on once the mask is
        written. The result equals the tie-rank rule: ``kept = bits > t | (bits == t &
        tie_rank > ties_pruned)``, with ``tie_rank`` the 1-based index among
        ``nonzero(bits == t)``. Else (nothing to defer, or no host reads) None."""
        threshold = self.threshold
        if (self._all_ties_pruned or threshold is None or threshold.ties is None or self.row_ties is not None
                or not self._host_reads):
            return None
        ties = indices_equal(self.scores.reshape(-1).view(torch.int32), threshold.bits)
        self._all_ties_pruned = True
        return ties[int(threshold.ties_pruned):]

    def kept(self, chunk: Chunk, word_type: torch.dtype = torch.bool, out: torch.Tensor | None = None) -> torch.Tensor:
        """Which blocks of ``chunk`` are kept, (n_block_rows, n_block_cols) of the chunk: bool,
        or, for an integer ``word_type`` (``_blocks.WORD_TYPES``), words of that type with every
        byte 1 (kept) or 0 (pruned): ``kept.to(word_type) * 0x0101...01``, a (1, block_cols)
        block of the bool mask, for the ``block_cols`` bytes of the word. ``out`` (int32 words,
        contiguous, or None) may receive them. Chunks must be asked for in flat block order
        (the running tie count)."""
        chunk_scores = self.scores[chunk.row_start : chunk.row_end, chunk.col_start : chunk.col_end]
        ones = int.from_bytes(b"\x01" * word_type.itemsize, "little")  # 1 in every byte of the word
        if self.threshold is None:  # k is 0 or every block
            return torch.full(chunk_scores.shape, ones if self.k == 0 else 0, dtype=word_type, device=chunk_scores.device)
        bits, threshold_bits = chunk_scores.view(torch.int32), self.threshold.bits
        if self._all_ties_pruned:
            if word_type == torch.bool:
                return bits > threshold_bits
            # Sign-shift: ``(threshold_bits - bits) >> 31`` is -1 (every bit set) exactly where
            # ``bits > threshold_bits`` and 0 elsewhere: both are in [0, 2**31), so the
            # difference cannot overflow, and the arithmetic shift fills the word with its
            # sign. ``& ones`` then leaves 1 in each byte: ``(bits > threshold_bits) * ones``
            # in two in-place integer ops, with no bool temporary and no multiply.
            above = torch.sub(threshold_bits, bits, out=out if word_type == torch.int32 else None)
            above = above.bitwise_right_shift_(31)
            return (above if word_type == torch.int32 else above.to(word_type)).bitwise_and_(ones)
        equal = bits == threshold_bits
        tie_rank = equal.reshape(-1).cumsum(0).reshape(chunk_scores.shape) + self._ties_before
        self._ties_before = tie_rank[-1, -1]
        if self.row_ties is not None:
            tie_rank = tie_rank + self.row_ties[chunk.row_start : chunk.row_end, None]
        kept = (bits > threshold_bits) | (equal & (tie_rank > self.threshold.ties_pruned))  # tie_rank is 1-based
        return kept if word_type == torch.bool else kept.to(word_type) * ones
