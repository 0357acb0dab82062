"""Definitions every part of ``blocksparsity.kernels`` shares, stated once: the backend names, the 2-D view
and its block grid, the DTensor test and its local shard, the non-finite check, and the threshold that a
selection hands to a mask (with the radix digits that find it).

Plain Python and torch only: every backend, the API layer, the sharded path and
``blocksparsity`` (which may import from here, never the other way) use these.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch

# ---------------------------------------------------------------- backend names
TORCH = "torch"
TRITON = "triton"
BACKENDS = ("auto", TRITON, TORCH)  # what ``backend=`` takes


# ---------------------------------------------------------------- the 2-D view and its block grid
def cdiv(n: int, d: int) -> int:
    """``ceil(n / d)`` for ints (``d > 0``), exactly (no float)."""
    return -(-n // d)


def shape_2d(shape: Sequence[int]) -> tuple[int, int]:
    """The 2-D shape data of ``shape`` is treated as: (1, N) for 1-D, (shape[0], rest) for N-D."""
    return (1, shape[0]) if len(shape) == 1 else (shape[0], math.prod(shape[1:]))


def block_grid(shape2d: Sequence[int], block_shape: Sequence[int]) -> tuple[int, int]:
    """(block rows, block columns) of a 2-D shape: partial edge blocks count as blocks."""
    return cdiv(shape2d[0], block_shape[0]), cdiv(shape2d[1], block_shape[1])


def n_blocks(shape2d: Sequence[int], block_shape: Sequence[int]) -> int:
    """How many blocks (partial edge blocks included) tile a 2-D shape."""
    rows, cols = block_grid(shape2d, block_shape)
    return rows * cols


# ---------------------------------------------------------------- tensors
def is_dtensor(x: object) -> bool:
    """Is ``x`` a ``DTensor``? (None can exist before ``torch.distributed.tensor`` is imported,
    so plain tensors never pay for that import.)"""
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(x, module.DTensor)


def local_tensor(t: torch.Tensor) -> torch.Tensor:
    """A DTensor's local shard (in-place ops on it change the DTensor), else ``t`` itself."""
    return t.to_local() if is_dtensor(t) else t


def nonfinite(x: torch.Tensor) -> torch.Tensor:
    """0-dim bool: does ``x`` (a plain tensor) hold a NaN or an infinity? One reduction, no
    temporaries, no host sync."""
    if x.numel() == 0:
        return torch.zeros((), dtype=torch.bool, device=x.device)
    return ~torch.isfinite(torch.stack(torch.aminmax(x))).all()


# ---------------------------------------------------------------- selection
class Threshold(NamedTuple):
    """The selection handed to a mask: the k-th smallest score (as int32 bits), how many
    scores equal to it are pruned (lowest block index first), and (when known) how many
    there are. ``Threshold(0, 0)`` prunes nothing, ``Threshold(PRUNE_ALL_BITS, 0)`` every block."""

    bits: torch.Tensor
    ties_pruned: torch.Tensor
    ties: torch.Tensor | None = None


# A hook summing a radix pass's histogram over the shards of a larger score set.
Reduce = Callable[[torch.Tensor], torch.Tensor]

PRUNE_ALL_BITS = 0x7FFFFFFF  # above +inf's bits: a threshold below which every score lies
INF_BITS = 0x7F800000  # +inf's int32 bits: a float32 >= +0 is NaN or inf iff its bits are at least this
# Scores are >= +0: their int32 bits order like their values, and the sign bit is clear.
# (shift, bits) of each radix digit, most significant first, covering bits 0..30.
# Two 16-bit passes (the torch backend's, the first counted while scoring; the high digit
# has 15 bits since bit 31 is clear):
DIGITS = ((16, 15), (0, 16))
HIGH_BINS = 1 << DIGITS[0][1]
# Three small digits (4096 counts in all): what the Triton kernels and every sharded
# selection use, since each pass's histogram is summed over the shards.
COMPACT_DIGITS = ((20, 11), (10, 10), (0, 10))
