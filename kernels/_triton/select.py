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
def add_digit_histogram(
    scores_ptr, n_scores, prefix, hist_ptr, program, n_programs,
    DIGIT_SHIFT: tl.constexpr, DIGIT_BITS: tl.constexpr, SCORES_PER_STEP: tl.constexpr,
):
    """One program's share of a radix digit's histogram, added atomically to ``hist_ptr``.

    Program ``program`` of ``n_programs`` (both int64 scalars) strides over the ``n_scores``
    float32 scores at ``scores_ptr`` ``SCORES_PER_STEP`` at a time, starting at
    ``program * SCORES_PER_STEP``, and adds once, to ``hist_ptr[d]`` (``[N_BINS]`` int64),
    ``#{i : bits_i >> PREFIX_SHIFT == prefix >> PREFIX_SHIFT and (bits_i >> DIGIT_SHIFT) & (N_BINS - 1) == d}``
    (``prefix``: int64 scalar, the digits chosen so far; see ``_radix_histogram_kernel``).
    """
    N_BINS: tl.constexpr = 1 << DIGIT_BITS
    PREFIX_SHIFT: tl.constexpr = DIGIT_SHIFT + DIGIT_BITS
    counts = tl.zeros([2 * N_BINS], tl.int64)
    for start in range(program * SCORES_PER_STEP, n_scores, n_programs * SCORES_PER_STEP):
        offs = start + tl.arange(0, SCORES_PER_STEP)
        inside = offs < n_scores
        bits = tl.load(scores_ptr + offs, mask=inside, other=0.0).to(tl.int32, bitcast=True)
        match = inside & ((bits >> PREFIX_SHIFT) == (prefix >> PREFIX_SHIFT))
        # Scores outside the chosen prefix land in bin N_BINS, in the upper half, which is dropped:
        # one fixed-size tl.histogram instead of a masked one.
        digit = tl.where(match, (bits >> DIGIT_SHIFT) & (N_BINS - 1), N_BINS)
        counts += tl.histogram(digit, 2 * N_BINS).to(tl.int64)
    bins = tl.arange(0, 2 * N_BINS)
    tl.atomic_add(hist_ptr + bins, counts, mask=bins < N_BINS)


@triton.jit
def pick_digit(hist_ptr, state_ptr, DIGIT_SHIFT: tl.constexpr, DIGIT_BITS: tl.constexpr):
    """Append the digit holding the k-th smallest score to the prefix in ``state_ptr``
    (``[2]`` int64: prefix bits, k remaining), from that digit's histogram ``hist_ptr``
    (``[N_BINS]`` int64); see ``_radix_pick_kernel``. With ``k == 0`` it changes nothing
    (digit 0, nothing before it): a selection with nothing left to prune stays as it is."""
    N_BINS: tl.constexpr = 1 << DIGIT_BITS
    bins = tl.arange(0, N_BINS)
    counts = tl.load(hist_ptr + bins)
    k = tl.load(state_ptr + 1)
    digit = tl.sum((tl.cumsum(counts, 0) < k).to(tl.int32), 0)  # first bin reaching k
    before = tl.sum(tl.where(bins < digit, counts, 0), 0)
    tl.store(state_ptr, tl.load(state_ptr) | (digit.to(tl.int64) << DIGIT_SHIFT))
    tl.store(state_ptr + 1, k - before)


@triton.jit
def count_ties(scores_ptr, first, n_scores, threshold_bits, BLOCKS_PER_PROGRAM: tl.constexpr):
    """How many of the scores ``[first, first + BLOCKS_PER_PROGRAM)`` (those below ``n_scores``;
    float32 at ``scores_ptr``) have the bits ``threshold_bits``: int64 scalar."""
    offs = first + tl.arange(0, BLOCKS_PER_PROGRAM)
    bits = tl.load(scores_ptr + offs, mask=offs < n_scores, other=0.0).to(tl.int32, bitcast=True)
    equal = (offs < n_scores) & (bits == threshold_bits)
    return tl.sum(equal.to(tl.int32), 0).to(tl.int64)


@triton.jit
def _radix_histogram_kernel(
    scores_ptr, n_scores, state_ptr, hist_ptr,
    DIGIT_SHIFT: tl.constexpr, DIGIT_BITS: tl.constexpr, SCORES_PER_STEP: tl.constexpr,
):
    """Histogram of one radix digit over the scores whose higher digits equal those chosen so far.

    With ``bits`` a score's int32 bit pattern and ``prefix`` the digits chosen so far:
    ``hist[d] += #{i : bits_i >> PREFIX_SHIFT == prefix >> PREFIX_SHIFT and
    (bits_i >> DIGIT_SHIFT) & (N_BINS - 1) == d}``, ``PREFIX_SHIFT = DIGIT_SHIFT + DIGIT_BITS``.

    Pointers:
      scores_ptr: ``[n_scores]`` float32, contiguous, every score ``>= +0``.
      state_ptr: ``[2]`` int64: the digits chosen so far (bits above ``PREFIX_SHIFT``; the
        lower bits are 0), and how many scores remain to prune (read by ``_radix_pick_kernel``).
      hist_ptr: ``[N_BINS]`` int64, zeroed by the caller; counts are added atomically.

    Grid: ``(min(cdiv(n_scores, SCORES_PER_STEP), SELECT_PROGRAMS),)``; each program strides over
    the scores ``SCORES_PER_STEP`` at a time and adds its counts once.

    Constexprs:
      DIGIT_SHIFT, DIGIT_BITS: this digit is bits ``[DIGIT_SHIFT, DIGIT_SHIFT + DIGIT_BITS)``.
      SCORES_PER_STEP: scores a program loads per step.
    """
    add_digit_histogram(scores_ptr, n_scores, tl.load(state_ptr), hist_ptr, tl.program_id(0).to(tl.int64),
                        tl.num_programs(0), DIGIT_SHIFT, DIGIT_BITS, SCORES_PER_STEP)


@triton.jit
def _radix_pick_kernel(hist_ptr, state_ptr, DIGIT_SHIFT: tl.constexpr, DIGIT_BITS: tl.constexpr):
    """Choose the digit holding the k-th smallest score and append it to the prefix.

    With ``k = state[1]`` and ``counts = hist``: ``digit`` = the first bin whose running count
    ``cumsum(counts)[digit]`` reaches ``k``, computed as ``#{d : cumsum(counts)[d] < k}``;
    then ``state = (state[0] | digit << DIGIT_SHIFT, k - sum(counts[:digit]))``: the
    remaining ``k`` counts only the scores inside the chosen bin. After the last digit,
    ``state`` is (the k-th smallest score's bits, how many scores equal to it are pruned).

    Pointers:
      hist_ptr: ``[N_BINS]`` int64, this digit's histogram over all scores (all shards).
      state_ptr: ``[2]`` int64, read and updated: (prefix bits, k remaining), ``1 <= k <= sum(hist)``.

    Grid: ``(1,)``. Constexprs: ``DIGIT_SHIFT``, ``DIGIT_BITS`` as in ``_radix_histogram_kernel``.
    """
    pick_digit(hist_ptr, state_ptr, DIGIT_SHIFT, DIGIT_BITS)


@triton.jit
def _tie_count_kernel(scores_ptr, n_scores, state_ptr, tie_counts_ptr, BLOCKS_PER_PROGRAM: tl.constexpr):
    """Scores equal to the threshold in each mask-kernel tile:
    ``tie_counts[p] = #{i in [p * BLOCKS_PER_PROGRAM, (p + 1) * BLOCKS_PER_PROGRAM) : bits_i == state[0]}``
    (the launcher's exclusive cumsum of it is ``_block_mask_kernel``'s ``ties_before``).

    Pointers:
      scores_ptr: ``[n_scores]`` float32, contiguous.
      state_ptr: ``[2]`` int64 (threshold bits, ties pruned); only the bits are read.
      tie_counts_ptr: ``[cdiv(n_scores, BLOCKS_PER_PROGRAM)]`` int64, one count per program.

    Grid: ``(cdiv(n_scores, BLOCKS_PER_PROGRAM),)``. Constexpr ``BLOCKS_PER_PROGRAM``: the mask
    kernel's blocks per program, so that program ``p`` counts exactly mask program ``p``'s blocks.
    """
    first = tl.program_id(0).to(tl.int64) * BLOCKS_PER_PROGRAM
    ties = count_ties(scores_ptr, first, n_scores, tl.load(state_ptr), BLOCKS_PER_PROGRAM)
    tl.store(tie_counts_ptr + tl.program_id(0), ties)


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
                    scores, n, state, part, DIGIT_SHIFT=shift, DIGIT_BITS=bits, SCORES_PER_STEP=_config.SELECT_TILE,
                    **_config.LAUNCH_OPTIONS,
                )
            if reduce is not None:
                part = reduce(part).to(torch.int64).contiguous()
            _radix_pick_kernel[(1,)](part, state, DIGIT_SHIFT=shift, DIGIT_BITS=bits, **_config.LAUNCH_OPTIONS)
            start += 1 << bits
    return state


def tie_offsets(scores: torch.Tensor, state: torch.Tensor, tile: int) -> torch.Tensor:
    """Each ``tile``-block tile's count of earlier scores equal to the threshold (int64)."""
    n = scores.numel()
    counts = torch.zeros(cdiv(n, tile), dtype=torch.int64, device=scores.device)
    if n:
        with _device.on_device(scores):
            _tie_count_kernel[(counts.numel(),)](
                scores, n, state, counts, BLOCKS_PER_PROGRAM=tile, **_config.LAUNCH_OPTIONS
            )
    return torch.cumsum(counts, 0) - counts  # exclusive prefix sum: ties in earlier tiles


def threshold(scores: torch.Tensor, k: int, tile: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``state`` (int64 [threshold bits, ties pruned]) for pruning the ``k`` lowest of the flat
    ``scores``, and each ``tile``-block tile's count of earlier ties (int64)."""
    n = scores.numel()
    if k <= 0 or k >= n:
        state = torch.zeros(2, dtype=torch.int64, device=scores.device)  # nothing is below 0, no tie pruned
        if k > 0:
            state[0] = PRUNE_ALL_BITS  # 0x7FFFFFFF: above every score's bits (+inf's too), all pruned
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
