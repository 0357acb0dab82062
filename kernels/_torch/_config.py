"""The only tuning numbers of the torch backend. None of them changes a result (every path
they choose between gives the same bits); each trades one cost against another, as said
beside it. Tests lower some of them to run every path on small inputs."""

from __future__ import annotations

# Elements per chunk: the work is done in chunks of whole blocks of about this many elements
# (1 MiB of float32). Smaller: more Python steps and kernel launches per call. Larger: the
# chunk's temporaries (|x|, block sums, in-block ranks) fall out of the CPU cache, and peak
# memory grows past the size of the outputs.
CHUNK_ELEMENTS = 1 << 18
# Largest block (elements) whose in-block ranks are counted by comparing every pair of
# positions: block_size * (block_size - 1) / 2 whole-chunk compares, cheap for small blocks. Above it, one
# stable sort per chunk (``ranks.sorted_ranks``), whose fixed cost is higher but which does
# not grow with the square of the block size.
PAIRWISE_RANK_MAX = 16
# Smallest block (elements) summed by numpy's sequential ``add.accumulate`` (CPU, float32,
# ``block_norm.blocked_sums``) rather than one in-block position at a time: the latter is a
# Python step per position, which costs more than the permuted copy that numpy needs once
# the block is this large.
SEQUENTIAL_SUM_MIN = 64
# Fewest blocks for which the first radix pass (a 2**15-bin histogram of the scores' high
# bits, ``_common.DIGITS``) is counted while scoring, each chunk's scores still in cache.
# Below it, selection uses the compact 11/10/10-bit digits after scoring: zeroing and
# scanning a 2**15-bin histogram costs more than scoring a small tensor.
FUSED_SELECTION_MIN_BLOCKS = 1 << 18
# Selection by sampling (CPU, host reads): from an evenly strided sample of at least
# ``SAMPLE_SCORES`` scores and at least one in ``SAMPLE_EVERY``, a window of ranks around the
# k-th, ``SAMPLE_MARGIN_SIGMAS`` standard deviations of a sample quantile wide on each side;
# then one pass counts the scores below the window and gathers those inside, where the k-th
# is found. The window holds about ``2 * SAMPLE_MARGIN_SIGMAS / sqrt(sample)`` of the scores
# (4.4% at 2**15, 0.6% at 2**21: a sample growing with the scores keeps the gathered copy
# small beside them). Larger samples: a narrower window for more sorting. A wider margin:
# fewer fallbacks to the radix passes (when the k-th falls outside the window), more scores
# gathered. Used from ``SAMPLED_SELECTION_MIN_BLOCKS`` scores (below it the sample would be
# most of them).
SAMPLE_SCORES = 1 << 15
SAMPLE_EVERY = 256
# At most one score in this many is gathered (a window normally holds 4.4% or less): a window
# holding more (ties: runs of equal scores around the k-th) is left to the radix passes, so
# the copy stays small.
SAMPLE_WINDOW_MAX_SHARE = 8
SAMPLE_MARGIN_SIGMAS = 4.0
SAMPLED_SELECTION_MIN_BLOCKS = 1 << 17
# Most scores for which ``torch.kthvalue`` on the score bits finds the threshold instead of
# the radix passes: its cost grows faster with the count, the passes' fixed cost is higher
# (about 25 us against 260 us at 2048 scores on one CPU thread; still faster at 8192,
# slower from about 32768).
KTHVALUE_MAX_BLOCKS = 1 << 14
# Radix pass with host reads (CPU): scores are tested for the current prefix in groups of
# this many, and only groups holding a match are gathered (``select.with_prefix``). Larger
# groups: fewer group flags to scan, but more non-matching scores gathered with each match.
MATCH_GROUP = 16
# Largest tensor (elements) that takes the small-tensor path (``_torch.small``): a few whole-
# tensor ops, no chunks, the threshold from one sort (batched over a group of tensors). Above
# it the chunked path with the radix selection: its fixed cost (a few hundred us of Python
# and small ops) is then small beside the work, and its temporaries stay cache-sized.
SMALL_MAX_ELEMENTS = 1 << 16
# Elements per batch of the small-tensor path over a group of tensors: larger batches pay the
# fixed cost of its ops fewer times, smaller ones keep their temporaries (about 40 bytes an
# element) in cache.
SMALL_BATCH_ELEMENTS = 1 << 18
