"""The only tuning numbers of the torch backend (none of them changes a result)."""

from __future__ import annotations

# Work is done in chunks of whole blocks of about this many elements, so temporaries stay
# cache-sized and peak memory stays near the size of the outputs.
CHUNK_ELEMENTS = 1 << 18
# In-block ranks are counted pairwise up to this block size, by a stable sort above it.
PAIRWISE_RANK_MAX = 16
# Blocks of more elements than this are summed by numpy's sequential accumulate (CPU), not
# one in-block position at a time (a Python loop as long as the block).
SEQUENTIAL_SUM_MIN = 64
# From this many blocks on, the first 16-bit radix pass is counted while scoring; below,
# the compact digits' small histograms (a 2**15-bin one costs more than scoring a small tensor).
FUSED_SELECTION_MIN_BLOCKS = 1 << 18
# Up to this many scores, torch.kthvalue on the score bits beats the radix passes (about 25 us
# against 260 us at 2048 scores on one CPU thread; even at 8192, slower from about 32768).
KTHVALUE_MAX_BLOCKS = 1 << 14
# A radix pass gathers the scores with the current prefix by groups of this many (CPU).
MATCH_GROUP = 16
