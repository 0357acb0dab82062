"""The benchmark's eager-torch contender (``naive`` in the tables): the version a user would
write in a few lines (and, compiled with ``torch.compile``, a second contender,
``naive-compiled``). Not the test suite's brute-force reference of the semantics:
this one is timed.

Only ``(1, bw)`` blocks on 2-D data whose width is a multiple of ``bw``; that covers every
benchmark case. It computes the same masks as ``blocksparsity.kernels`` wherever the result is unique:

* block scores: ``|x|`` (L1) or ``x*x`` (L2) in float32, viewed as ``(n_blocks, bw)`` and
  averaged. ``mean`` may add a block's elements in another order than ours (which adds
  them one by one, left to right), so a score can differ in its last bit, and two blocks
  whose scores are within one rounding of each other may swap;
* selection: ``topk`` of the ``k = round(level * n_blocks)`` smallest scores, pruned by
  index, so exactly ``k`` blocks, like ours. Among blocks with equal scores ``topk``
  picks arbitrary ones, where ours takes the lowest block index first;
* inside a pruned block (``zeros_per_block < bw``): ``topk`` of the ``zeros_per_block``
  smallest ``|x|`` in each row of the ``(n_blocks, bw)`` view; again arbitrary among equal
  magnitudes, where ours takes the earlier element;
* ``repeat_interleave`` spreads the block decision over the block's elements.

On tie-free data the masks are therefore equal to ours (``tests/benchmarks/test_harness.py``
checks it); on inputs with ties (the all-ties case) they differ, which does not matter
for timing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch


def _values(x: torch.Tensor, bw: int, norm: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(``|x|``, ``|x|`` or ``x*x``) in float32, each viewed as (n_blocks, bw)."""
    magnitude = x.float().abs().view(-1, bw)
    return magnitude, (magnitude if norm == "L1" else magnitude * magnitude)


def block_norm(x: torch.Tensor, bw: int = 4, norm: str = "L1") -> torch.Tensor:
    """Mean of |x| or x*x per (1, bw) block, float32 of shape (H, W // bw)."""
    return _values(x, bw, norm)[1].mean(dim=1).view(x.shape[0], -1)


def block_mask(x: torch.Tensor, k: int, bw: int = 4, zeros_per_block: int = 4, norm: str = "L1") -> torch.Tensor:
    """Bool keep-mask of ``x`` with its ``k`` lowest-scoring (1, bw) blocks pruned."""
    magnitude, v = _values(x, bw, norm)
    scores = v.mean(dim=1)
    pruned = torch.zeros(scores.shape, dtype=torch.bool, device=x.device)
    if k > 0:
        pruned[torch.topk(scores, k, largest=False, sorted=False).indices] = True
    drop = pruned.repeat_interleave(bw).view(-1, bw)  # every element of a pruned block
    if zeros_per_block < bw:  # ours ranks by |x| for L2 as well
        smallest = torch.zeros(v.shape, dtype=torch.bool, device=x.device)
        smallest.scatter_(1, torch.topk(magnitude, zeros_per_block, dim=1, largest=False).indices, True)
        drop &= smallest
    return (~drop).view(x.shape)


def sparsify(
    x: torch.Tensor, k: int, bw: int = 4, zeros_per_block: int = 4, norm: str = "L1"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``block_mask`` then ``x *= mask`` in place; returns ``(x, mask)``."""
    mask = block_mask(x, k, bw, zeros_per_block, norm)
    x.mul_(mask)
    return x, mask


OPS: dict[str, Callable] = {"block_norm": block_norm, "block_mask": block_mask, "sparsify": sparsify}


@functools.cache
def compiled(op: str) -> Callable:
    """``torch.compile`` of one naive op, shared by every case that uses it. Shapes and
    ``k`` are dynamic, so sizes reuse one graph; norm, ``zeros_per_block`` and dtype each
    compile their own."""
    return torch.compile(OPS[op], dynamic=True)
