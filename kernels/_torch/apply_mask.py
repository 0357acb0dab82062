"""out = x * mask, chunk by chunk, after the one host read of the non-finite flag."""

from __future__ import annotations

import torch

from blocksparsity.kernels._common import nonfinite
from blocksparsity.kernels._torch._blocks import chunks

# Integer types of each float width: ``x * mask`` as a bitwise AND on x's bits (``multiply``).
_BITS = {torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float32: torch.int32,
         torch.float64: torch.int64}


def multiply(x: torch.Tensor, mask: torch.Tensor, out: torch.Tensor) -> None:
    """``out = x * mask`` for finite ``x`` and ``out`` (H x W, the same float dtype, any
    strides; ``out`` may be ``x``) and ``mask`` (H x W, bool or x's dtype), chunk by chunk.
    ``x * 0`` keeps a zeroed negative element's sign (``-0.0``), as ``x * mask`` does.

    A bool mask is applied to x's bits, the same bits as the product for finite data
    (``x * 1 == x``; ``x * 0`` is a zero with x's sign): ``bits(x) & where(mask, ~0, sign
    bit)``, whose operand is made per chunk from the mask by integer ops (no float convert,
    no type promotion in the product, which is several times slower, most for bf16/fp16).
    Callers check the data finite first (``x * 0`` of NaN or inf is NaN, not a zero)."""
    n_rows, n_cols = x.shape
    bits_type = _BITS.get(x.dtype) if mask.dtype == torch.bool else None
    operand = None
    for row_start, row_end, col_start, col_end in chunks(n_rows, n_cols, 1, 1):  # 1 x 1 blocks: elements
        rows, cols = slice(row_start, row_end), slice(col_start, col_end)
        if bits_type is None:
            torch.mul(x[rows, cols], mask[rows, cols], out=out[rows, cols])
            continue
        mask_chunk = mask[rows, cols]
        if operand is None or operand.numel() < mask_chunk.numel():
            operand = torch.empty(mask_chunk.numel(), dtype=bits_type, device=x.device)
        keep = operand[: mask_chunk.numel()].view(mask_chunk.shape)
        keep.copy_(mask_chunk)  # 1 (keep) or 0
        keep.neg_().bitwise_or_(torch.iinfo(bits_type).min)  # every bit (keep) or the sign bit alone
        torch.bitwise_and(x[rows, cols].view(bits_type), keep, out=out[rows, cols].view(bits_type))


def apply_mask(x: torch.Tensor, keep: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out = x * keep`` unless ``x`` holds NaN or inf; returns that non-finite flag (0-dim
    bool, on x's device). ``x``: H x W float16/bfloat16/float32/float64, any strides; ``keep``:
    bool, H x W; ``out``: like ``x`` (may be ``x``: in place). Reads the flag on the host once,
    before writing (the one sync): nothing is written over bad data."""
    nonfinite_flag = nonfinite(x).cpu()
    if not nonfinite_flag:
        multiply(x, keep, out)
    return nonfinite_flag
