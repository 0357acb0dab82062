"""The reference: a plain, block-by-block statement of the semantics (``docs/kernels.md``, "Semantics"), for
tests of both backends. Small inputs only: Python loops, scores in float64, explicit
sorts; it shares no code with the backends.

* the 2-D view: 1-D data is one row, N-D data is ``(shape[0], rest)``;
* a block's score is the mean of ``|x|`` (L1) or ``x*x`` (L2) over its elements inside
  the tensor (partial edge blocks average what they hold);
* with ``scale`` (broadcastable to the 2-D view), ``t = float32(|x|) * float32(scale)`` (the
  float32 product) replaces ``|x|``: scores are means of ``t`` (L1) or ``t*t`` (L2), and the
  in-block ranking orders by ``t`` (which orders as ``t*t``: both norms rank alike, as
  without a scale, where both rank by ``|x|``);
* ``round(sparsity_level * n_blocks)`` blocks are pruned, lowest score first (ties: lowest
  flat block index first);
* inside a pruned block, its ``zeros_per_block`` elements of smallest ``|x|`` (ties:
  row-major order first; default: all) are zeroed.

The backends sum scores in float32, so on data whose float64 and float32 scores order
differently (near-ties) the masks may differ; tests use integer-valued or tie-free data.
"""

from __future__ import annotations

import math

import torch


def as_2d(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(1, x.shape[0]) if x.dim() == 1 else x.reshape(x.shape[0], math.prod(x.shape[1:]))


def block_elements(h: int, w: int, bh: int, bw: int, i: int, j: int) -> list[tuple[int, int]]:
    """Row-major positions of block (i, j) that lie inside an h x w tensor."""
    return [(r, c) for r in range(i * bh, min(h, (i + 1) * bh)) for c in range(j * bw, min(w, (j + 1) * bw))]


def magnitudes(x: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
    """The 2-D view's ``|x|`` (float64, exact), or with ``scale`` the float32 product
    ``float32(|x|) * float32(scale)`` (broadcast to the 2-D view), as float64."""
    x2 = as_2d(x)
    if scale is None:
        return x2.double().abs()
    # float32 |x| (exact: every scored dtype fits) times float32 scale: one IEEE float32 product
    # per element, broadcast as torch broadcasts; then float64 (exact) for the sums below.
    return (x2.float().abs() * scale.float()).double()


def block_norm(x: torch.Tensor, block_shape=(1, 4), norm="L1", scale: torch.Tensor | None = None) -> torch.Tensor:
    """Each block's mean of |x| or x*x (with ``scale``: of t or t*t), float64, of the block grid's shape."""
    x2 = magnitudes(x, scale)
    h, w = x2.shape
    bh, bw = block_shape
    out = torch.empty(math.ceil(h / bh), math.ceil(w / bw), dtype=torch.float64)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            vals = [x2[r, c].item() for r, c in block_elements(h, w, bh, bw, i, j)]
            vals = [abs(v) for v in vals] if norm == "L1" else [v * v for v in vals]
            out[i, j] = sum(vals) / len(vals)
    return out


def block_mask(x: torch.Tensor, sparsity_level: float, block_shape=(1, 4), zeros_per_block=None, norm="L1",
               scale: torch.Tensor | None = None) -> torch.Tensor:
    """Bool keep-mask of ``x``'s shape."""
    x2 = magnitudes(x, scale)
    h, w = x2.shape
    bh, bw = block_shape
    zpb = bh * bw if zeros_per_block is None else zeros_per_block
    scores = block_norm(x, block_shape, norm, scale)
    nbw = scores.shape[1]
    order = sorted(range(scores.numel()), key=lambda b: (scores.view(-1)[b].item(), b))
    k = round(sparsity_level * scores.numel())
    mask = torch.ones(h, w, dtype=torch.bool)
    for b in order[:k]:
        elems = block_elements(h, w, bh, bw, b // nbw, b % nbw)
        ranked = sorted(range(len(elems)), key=lambda e: (abs(x2[elems[e]].item()), e))
        for e in ranked[:zpb]:
            mask[elems[e]] = False
    return mask.reshape(x.shape)


def sparsify(x: torch.Tensor, sparsity_level: float, block_shape=(1, 4), zeros_per_block=None, norm="L1",
             scale: torch.Tensor | None = None):
    """``(x * mask, mask)``."""
    mask = block_mask(x, sparsity_level, block_shape, zeros_per_block, norm, scale)
    return x * mask, mask
