"""Bytes an operation must move, and this machine's copy bandwidth: the two numbers behind
the GB/s and "% of copy bandwidth" columns.

The one definition of "bytes the operation must move" (``bytes_moved``), per op, for
``x`` of ``n`` elements of ``s`` bytes (mask: bool, 1 byte per element):

* ``block_norm``: read ``x`` once, write the float32 scores: ``n*s + 4*n_blocks``.
* ``block_mask``: read ``x`` for the scores, and a second time for the in-block ranks
  when ``0 < zeros_per_block < block size`` (a pruned block then keeps some elements, so
  which ones depends on ``x`` again); write the mask: ``reads*n*s + n``.
* ``sparsify`` (fused mask-and-apply, in place): ``block_mask``'s traffic plus writing
  ``x``: ``reads*n*s + n + n*s``. (The Triton kernel writes only the elements it zeroes;
  the whole of ``x`` is counted, as the operation's contract allows any of it to change.)
* ``weight_update`` (``x`` is the layer's ``(out, in)`` weight, float32): read ``x``, the mask
  and ``H`` (``in x in`` float32), write ``x``: ``2*n*s + n + 4*in*in``. The update is bound
  by arithmetic (a Cholesky factorisation and ``O(out * in^2)`` products), not memory: its
  "% of copy bandwidth" says little; its seconds per layer are the figure.

Not counted: the scores' round trip inside ``block_mask``/``sparsify`` (written, then read
back for the selection: 4 bytes per block), the selection's histograms and the non-finite
flag. So the figure is a lower bound on any implementation's traffic, and "% of copy
bandwidth" is how close an implementation comes to the fastest conceivable one.

Copy bandwidth: ``dst.copy_(src)`` of one large buffer, timed like the contenders in the
same run; it moves ``2 * size`` bytes (read ``src``, write ``dst``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from benchmarks.cases import Case
from benchmarks.timing import median_seconds


def bytes_moved(case: Case) -> int:
    """The bytes ``case``'s operation must move (see the module docstring)."""
    x = case.input_bytes
    if case.op == "block_norm":
        return x + 4 * case.n_blocks
    reads = 2 if 0 < case.zeros_per_block < case.block_size else 1
    mask = case.numel
    if case.op == "block_mask":
        return reads * x + mask
    if case.op == "sparsify":
        return reads * x + mask + x
    if case.op == "weight_update":
        features = case.numel // case.shape[0]
        return 2 * x + mask + 4 * features * features
    raise ValueError(f"unknown op {case.op!r}")


@dataclass(frozen=True)
class CopyBandwidth:
    """``dst.copy_(src)`` of ``buffer_bytes``: median seconds and GB/s (10^9 bytes/s, 2x the buffer)."""

    buffer_bytes: int
    seconds: float

    @property
    def gbps(self) -> float:
        return 2 * self.buffer_bytes / self.seconds / 1e9

    def to_dict(self) -> dict:
        return {**asdict(self), "gbps": self.gbps}


def copy_bandwidth(device: str, buffer_bytes: int, repeats: int = 5) -> CopyBandwidth:
    """Time ``dst.copy_(src)`` of two ``buffer_bytes`` buffers (large enough to miss every cache)."""
    src = torch.ones(buffer_bytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    [seconds] = median_seconds([lambda: dst.copy_(src)], device, repeats)
    return CopyBandwidth(buffer_bytes, seconds)
