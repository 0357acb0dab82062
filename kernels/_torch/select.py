"""Selection: which ``k`` blocks are pruned. Those below the ``k``-th smallest score, plus
the lowest-index blocks equal to it, found by an exact radix selection on the score bits
(non-negative floats order like their bit patterns; up to ``KTHVALUE_MAX_BLOCKS`` scores,
``torch.kthvalue`` on the same bits finds the same threshold faster). No sort, and no host
sync unless the policy allows host reads.

The selection can be made elsewhere (over every shard of a larger tensor, see
``blocksparsity.kernels._sharded``): ``select_threshold`` sums each radix pass's histogram through a
``reduce`` hook, and ``PrunedBlocks`` takes per-block-row tie offsets."""

from __future__ import annotations

import torch

from blocksparsity.kernels._common import COMPACT_DIGITS, DIGITS, Reduce, Threshold
from blocksparsity.kernels._torch import _config, _policy
from blocksparsity.kernels._torch._policy import Policy


def count_into(hist: torch.Tensor, bins: torch.Tensor, policy: Policy, weights: torch.Tensor | None = None) -> None:
    """hist[b] += (weight of) each b in ``bins``; without a host sync unless ``policy.host_reads``
    (CUDA's bincount syncs; the CPU's is the fastest count)."""
    bins = bins.reshape(-1)
    if weights is None and policy.host_reads:
        hist += torch.bincount(bins, minlength=hist.numel())
        return
    if weights is None:
        weights = torch.ones((), dtype=hist.dtype, device=hist.device).expand(bins.numel())
    hist.index_add_(0, bins, weights.reshape(-1))


def count_matching(
    hist: torch.Tensor, values: torch.Tensor, shift: int, top: int, prefix: torch.Tensor, policy: Policy
) -> None:
    """hist[digit] += 1 for the digit (``values >> shift``, cut to ``hist``'s size) of each
    value whose bits from ``top`` up equal ``prefix``'s. With host reads the matching values
    (usually few) are gathered first; else every digit gets a weight of 0 or 1 (no
    data-dependent shapes, and no single hot bin, which would serialise the count)."""
    if policy.host_reads:
        digit = (with_prefix(values, top, prefix) >> shift) & (hist.numel() - 1)
        hist += torch.bincount(digit, minlength=hist.numel())
    else:
        match = (values >> top) == (prefix >> top)
        count_into(hist, (values >> shift) & (hist.numel() - 1), policy, match.to(hist.dtype))


def with_prefix(values: torch.Tensor, top: int, prefix: torch.Tensor) -> torch.Tensor:
    """The values (1-D int32) whose bits from ``top`` up equal ``prefix``'s, in order.

    A data-dependent gather, which is slow per element scanned, so it scans groups of
    ``MATCH_GROUP`` values first: those holding a match are gathered whole and filtered."""
    group = _config.MATCH_GROUP
    p = prefix >> top
    whole = values.numel() - values.numel() % group
    hit = (values[:whole] >> top).eq_(p).view(-1, group).amax(1)  # int32 compares vectorise
    groups = values[:whole].view(-1, group).index_select(0, hit.nonzero().squeeze(1))
    candidates = torch.cat([groups.reshape(-1), values[whole:]])
    return candidates[(candidates >> top) == p]


def first_reaching(counts: torch.Tensor, k: torch.Tensor | int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first bin whose cumulative count reaches ``k``, and ``k`` less the bins before it."""
    cum = counts.cumsum(0)
    k = torch.as_tensor(k, dtype=cum.dtype, device=cum.device).reshape(1)
    b = torch.searchsorted(cum, k).squeeze(0)
    return b, k.squeeze(0) - (cum[b] - counts[b])


def digit_histogram(scores: torch.Tensor, prefix: torch.Tensor, shift: int, bits: int, policy: Policy) -> torch.Tensor:
    """Counts (int64) of the ``bits``-bit digit at ``shift`` of the scores whose bits above
    it equal ``prefix``'s."""
    hist = torch.zeros(1 << bits, dtype=torch.int64, device=scores.device)
    flat = scores.reshape(-1).view(torch.int32)
    top = shift + bits
    for start in range(0, flat.numel(), _config.CHUNK_ELEMENTS):
        chunk = flat[start : start + _config.CHUNK_ELEMENTS]
        # Only scores with the prefix count. Above bit 30 (bit 31 is the sign, always 0)
        # every score matches.
        if top >= 31:
            count_into(hist, (chunk >> shift) & ((1 << bits) - 1), policy)
        else:
            count_matching(hist, chunk, shift, top, prefix, policy)
    return hist


def kth_smallest(
    scores: torch.Tensor,
    k: int,
    policy: Policy,
    first_histogram: torch.Tensor | None = None,
    digits: tuple[tuple[int, int], ...] = DIGITS,
    reduce: Reduce | None = None,
) -> Threshold:
    """Exact k-th smallest (1-based) score by radix passes over ``digits``: no sort.

    ``first_histogram`` is the first pass's, when already counted. ``reduce`` (say, an
    all-reduce over the shards of a larger score set) sums each pass's histogram before
    its digit is picked, so the result is the k-th smallest of the union.
    """
    prefix = torch.zeros((), dtype=torch.int32, device=scores.device)
    left: torch.Tensor | int = k
    for i, (shift, bits) in enumerate(digits):
        counted = first_histogram if i == 0 else None
        hist = counted if counted is not None else digit_histogram(scores, prefix, shift, bits, policy)
        if reduce is not None:
            hist = reduce(hist)
        digit, left = first_reaching(hist, left)
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
    scores: torch.Tensor, k: int, reduce: Reduce | None = None, *, policy: Policy | None = None
) -> Threshold:
    """The ``Threshold`` pruning the ``k`` lowest scores (``0 < k <=`` their number, or, with
    ``reduce``, the number of scores over all shards), by the compact 11/10/10-bit digits."""
    return kth_smallest(scores, k, policy or _policy.for_device(scores.device), None, COMPACT_DIGITS, reduce)


class PrunedBlocks:
    """Which blocks are pruned, handed out chunk by chunk in flat block order: those below
    the threshold, and the lowest-index ones equal to it.

    A block's tie rank is the running count of blocks equal to the threshold, plus
    ``row_ties[block row]`` where given: the ties before it that this score grid does
    not hold (a shard's grid within a larger one).
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
        """The ``k`` lowest of ``scores``: by the two 16-bit passes when the first one's
        histogram was counted while scoring, else by the compact digits."""
        if not 0 < k < scores.numel():
            return cls(scores, k, None, policy)
        if scores.numel() <= _config.KTHVALUE_MAX_BLOCKS:
            return cls(scores, k, kthvalue_threshold(scores, k), policy)
        if high_histogram is None:
            return cls(scores, k, kth_smallest(scores, k, policy, None, COMPACT_DIGITS), policy)
        return cls(scores, k, kth_smallest(scores, k, policy, high_histogram), policy)

    def defer_kept_ties(self) -> torch.Tensor | None:
        """Where only some of the blocks tied at the threshold are pruned and values may be
        read on the host: from now on ``kept`` prunes every tie (no tie ranks, no running
        count), and this returns the flat indices of the tied blocks that stay kept (those
        after the first ``ties_pruned``), for the caller to switch back on. Else None."""
        t = self.threshold
        if self._all_ties_pruned or t is None or t.ties is None or self.row_ties is not None or not self._host_reads:
            return None
        ties = (self.scores.reshape(-1).view(torch.int32) == t.bits).nonzero().squeeze(1)
        self._all_ties_pruned = True
        return ties[int(t.ties_pruned):]

    def kept(self, r0: int, r1: int, c0: int, c1: int, lane: torch.dtype = torch.bool,
             out: torch.Tensor | None = None) -> torch.Tensor:
        """Which blocks of rows r0:r1 and columns c0:c1 are kept: bool, or, for an integer
        ``lane`` type, words of that type with every byte 1 (kept) or 0 (pruned): a (1, bw)
        block of the bool mask, for the ``bw`` bytes of the word. ``out`` (int32 words, or
        None) may receive them."""
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
            above = torch.sub(t, bits, out=out if lane == torch.int32 else None).bitwise_right_shift_(31)
            return (above if lane == torch.int32 else above.to(lane)).bitwise_and_(ones)
        equal = bits == t
        tie_rank = equal.reshape(-1).cumsum(0).reshape(s.shape) + self._ties_before
        self._ties_before = tie_rank[-1, -1]
        if self.row_ties is not None:
            tie_rank = tie_rank + self.row_ties[r0:r1, None]
        kept = (bits > t) | (equal & (tie_rank > self.threshold.ties_pruned))  # tie_rank is 1-based
        return kept if lane == torch.bool else kept.to(lane) * ones
