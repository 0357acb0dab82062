"""out = x * mask, chunk by chunk, after the one host read of the non-finite flag."""

from __future__ import annotations

import torch

from blocksparsity.kernels._common import nonfinite
from blocksparsity.kernels._torch._blocks import chunks


def multiply(x: torch.Tensor, mask: torch.Tensor, out: torch.Tensor) -> None:
    """``out = x * mask`` for ``x`` and ``out`` (H x W, the same float dtype, any strides;
    ``out`` may be ``x``) and ``mask`` (H x W, bool or x's dtype), chunk by chunk: a bool mask
    is promoted to x's dtype for the product, and only a chunk's worth of that copy exists at
    a time. ``x * 0`` keeps a zeroed negative element's sign (``-0.0``), as ``x * mask`` does."""
    n_rows, n_cols = x.shape
    for row_start, row_end, col_start, col_end in chunks(n_rows, n_cols, 1, 1):  # 1 x 1 blocks: elements
        rows, cols = slice(row_start, row_end), slice(col_start, col_end)
        torch.mul(x[rows, cols], mask[rows, cols], out=out[rows, cols])


def apply_mask(x: torch.Tensor, keep: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out = x * keep`` unless ``x`` holds NaN or inf; returns that non-finite flag (0-dim
    bool, on x's device). ``x``: H x W float16/bfloat16/float32/float64, any strides; ``keep``:
    bool, H x W; ``out``: like ``x`` (may be ``x``: in place). Reads the flag on the host once,
    before writing (the one sync): nothing is written over bad data."""
    nonfinite_flag = nonfinite(x).cpu()
    if not nonfinite_flag:
        multiply(x, keep, out)
    return nonfinite_flag

