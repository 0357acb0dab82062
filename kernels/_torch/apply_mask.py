"""out = x * mask, chunk by chunk, after the one host read of the non-finite flag."""

from __future__ import annotations

import torch

from blocksparsity.kernels._common import nonfinite
from blocksparsity.kernels._torch._blocks import chunks


def multiply(x: torch.Tensor, mask: torch.Tensor, out: torch.Tensor) -> None:
    """out = x * mask, chunk by chunk: a bool mask is promoted to x's dtype for the product,
    and only a chunk's worth of it may exist at a time."""
    h, w = x.shape
    for r0, r1, c0, c1 in chunks(h, w, 1, 1):
        torch.mul(x[r0:r1, c0:c1], mask[r0:r1, c0:c1], out=out[r0:r1, c0:c1])


def apply_mask(x: torch.Tensor, keep: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out = x * keep`` unless ``x`` holds NaN or inf (``out`` may be ``x``); returns the flag.
    Reads the flag on the host once, before writing (the one sync)."""
    bad = nonfinite(x).cpu()  # the one sync: nothing may be written when the data is bad
    if not bad:
        multiply(x, keep, out)
    return bad
