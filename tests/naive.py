"""Brute-force statement of the semantics in DESIGN.md, block by block in Python (small
inputs only). Independent of the package: scores in float64, explicit sorts."""

from __future__ import annotations

import math

import torch


def as_2d(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(1, x.shape[0]) if x.dim() == 1 else x.reshape(x.shape[0], math.prod(x.shape[1:]))


def block_elements(h: int, w: int, bh: int, bw: int, i: int, j: int) -> list[tuple[int, int]]:
    """Row-major positions of block (i, j) that lie inside an h x w tensor."""
    return [(r, c) for r in range(i * bh, min(h, (i + 1) * bh)) for c in range(j * bw, min(w, (j + 1) * bw))]


def block_norm(x: torch.Tensor, block_shape=(1, 4), norm="L1") -> torch.Tensor:
    x2 = as_2d(x).double()
    h, w = x2.shape
    bh, bw = block_shape
    out = torch.empty(math.ceil(h / bh), math.ceil(w / bw), dtype=torch.float64)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            vals = [x2[r, c].item() for r, c in block_elements(h, w, bh, bw, i, j)]
            vals = [abs(v) for v in vals] if norm == "L1" else [v * v for v in vals]
            out[i, j] = sum(vals) / len(vals)
    return out


def block_mask(x: torch.Tensor, sparsity_level: float, block_shape=(1, 4), zeros_per_block=None, norm="L1") -> torch.Tensor:
    x2 = as_2d(x).double()
    h, w = x2.shape
    bh, bw = block_shape
    zpb = bh * bw if zeros_per_block is None else zeros_per_block
    scores = block_norm(x, block_shape, norm)
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
