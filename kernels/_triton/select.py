"""Exact k-th smallest block score without a sort or a host sync.

Scores are non-negative floats, so their int32 bit patterns order like their values.
Every count (histograms, ``k``, ties) is int64: a tensor may hold 2**31 blocks or more.
Three radix passes (11, 10, 10 bits) each histogram the next digit of the scores that
match the digits chosen so far; a one-program kernel then picks the digit where the
running count reaches k. The result, in a 2-element int64 device tensor ``state``, is the
threshold's bits and how many scores equal to it are pruned. A last pass counts, per
mask-kernel tile, the scores equal to the threshold, so each tile knows how many come
before it (ties are pruned lowest block index first).

For a tensor sharded over processes, ``select_threshold`` takes a ``reduce`` hook (an
all-reduce) that sums each pass's histogram over the shards before its digit is picked.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from blocksparsity.kernels._common import COMPACT_DIGITS, PRUNE_ALL_BITS, Reduce, Threshold, cdiv
from blocksparsity.kernels._triton import _config, _device

# (shift, bits) of each radix digit, most significant first: the compact digits, shared with
# the torch backend's sharded selection (bit 31, the sign, is always 0).
RADIX_DIGITS = COMPACT_DIGITS


@triton.jit
def _radix_histogram_kernel(scores_ptr, n, state_ptr, hist_ptr, SHIFT: tl.constexpr, BITS: tl.constexpr, TILE: tl.constexpr):
    NB: tl.constexpr = 1 << BITS
    HIGH: tl.constexpr = SHIFT + BITS
    prefix = tl.load(state_ptr)
    counts = tl.zeros([2 * NB], tl.int64)
    for start in range(tl.program_id(0).to(tl.int64) * TILE, n, tl.num_programs(0) * TILE):
        offs = start + tl.arange(0, TILE)
        inside = offs < n
        bits = tl.load(scores_ptr + offs, mask=inside, other=0.0).to(tl.int32, bitcast=True)
        match = inside & ((bits >> HIGH) == (prefix >> HIGH))
        # Scores outside the chosen prefix land in the upper half, which is dropped.
        digit = tl.where(match, (bits >> SHIFT) & (NB - 1), NB)
        counts += tl.histogram(digit, 2 * NB).to(tl.int64)
    bins = tl.arange(0, 2 * NB)
    tl.atomic_add(hist_ptr + bins, counts, mask=bins < NB)


@triton.jit
def _radix_pick_kernel(hist_ptr, state_ptr, SHIFT: tl.constexpr, BITS: tl.constexpr):
    NB: tl.constexpr = 1 << BITS
    bins = tl.arange(0, NB)
    counts = tl.load(hist_ptr + bins)
    k = tl.load(state_ptr + 1)
    digit = tl.sum((tl.cumsum(counts, 0) < k).to(tl.int32), 0)  # first bin reaching k
    before = tl.sum(tl.where(bins < digit, counts, 0), 0)
    tl.store(state_ptr, tl.load(state_ptr) | (digit.to(tl.int64) << SHIFT))
    tl.store(state_ptr + 1, k - before)


@triton.jit
def _tie_count_kernel(scores_ptr, n, state_ptr, counts_ptr, TILE: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * TILE + tl.arange(0, TILE)
    bits = tl.load(scores_ptr + offs, mask=offs < n, other=0.0).to(tl.int32, bitcast=True)
    equal = (offs < n) & (bits == tl.load(state_ptr))
    tl.store(counts_ptr + tl.program_id(0), tl.sum(equal.to(tl.int32), 0).to(tl.int64))



def radix_state(scores: torch.Tensor, k: int, reduce: Reduce | None = None) -> torch.Tensor:
    """``state`` (int64 [threshold bits, ties pruned]) for pruning the ``k`` lowest of the flat
    ``scores`` (``0 < k <=`` their number, or with ``reduce`` their number over all shards)."""
    n = scores.numel()
    state = torch.zeros(2, dtype=torch.int64, device=scores.device)
    state[1] = k
    hist = torch.zeros(sum(1 << bits for _, bits in RADIX_DIGITS), dtype=torch.int64, device=scores.device)
    start = 0
    with _device.on_device(scores):
        for shift, bits in RADIX_DIGITS:
            part = hist[start : start + (1 << bits)]
            if n:  # a shard may own no scores, and still takes part in the reduction
                _radix_histogram_kernel[(_config.select_grid(n),)](
                    scores, n, state, part, SHIFT=shift, BITS=bits, TILE=_config.SELECT_TILE, **_config.LAUNCH_OPTIONS
                )
            if reduce is not None:
                part = reduce(part).to(torch.int64).contiguous()
            _radix_pick_kernel[(1,)](part, state, SHIFT=shift, BITS=bits, **_config.LAUNCH_OPTIONS)
            start += 1 << bits
    return state


def tie_offsets(scores: torch.Tensor, state: torch.Tensor, tile: int) -> torch.Tensor:
    """Each ``tile``-block tile's count of earlier scores equal to the threshold (int64)."""
    n = scores.numel()
    counts = torch.zeros(cdiv(n, tile), dtype=torch.int64, device=scores.device)
    if n:
        with _device.on_device(scores):
            _tie_count_kernel[(counts.numel(),)](scores, n, state, counts, TILE=tile, **_config.LAUNCH_OPTIONS)
    return torch.cumsum(counts, 0) - counts


def threshold(scores: torch.Tensor, k: int, tile: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``state`` (int64 [threshold bits, ties pruned]) for pruning the ``k`` lowest of the flat
    ``scores``, and each ``tile``-block tile's count of earlier ties (int64)."""
    n = scores.numel()
    if k <= 0 or k >= n:
        state = torch.zeros(2, dtype=torch.int64, device=scores.device)  # nothing is below 0, no tie pruned
        if k > 0:
            state[0] = PRUNE_ALL_BITS
        return state, torch.zeros(cdiv(n, tile), dtype=torch.int64, device=scores.device)
    state = radix_state(scores, k)
    return state, tie_offsets(scores, state, tile)


def select_threshold(
    scores: torch.Tensor, k: int, reduce: Reduce | None = None
) -> Threshold:
    """The ``Threshold`` (0-dim int32 bits, int64 ties pruned) pruning the ``k`` lowest ``scores``
    (``0 < k``; with ``reduce``, of the scores of all shards)."""
    state = radix_state(scores.reshape(-1).contiguous(), k, reduce)
    return Threshold(state[0].to(torch.int32), state[1])
