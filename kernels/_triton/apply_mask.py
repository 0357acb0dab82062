"""out = x * mask, with the non-finite check in the same pass (in place: a check pass
first, then a write pass that does nothing if the check failed)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from blocksparsity.kernels._triton import _config, _device
from blocksparsity.kernels._triton._blocks import flag_clear, is_nonfinite


@triton.jit(do_not_specialize=_config.DO_NOT_SPECIALIZE["_apply_mask_kernel"])
def _apply_mask_kernel(
    x_ptr, keep_ptr, out_ptr, flag_ptr, n_elements, n_cols, x_row_stride, x_col_stride, out_row_stride, out_col_stride,
    CHECK_FINITE: tl.constexpr, WRITE_OUT: tl.constexpr, GATE_ON_FLAG: tl.constexpr, FLAT_ADDRESSING: tl.constexpr,
    ELEMENTS_PER_PROGRAM: tl.constexpr,
):
    """``out = x * keep`` elementwise (``x * 1 == x``, ``x * 0 == ±0``), and/or the non-finite check.

    Element ``i`` (row-major over ``[n_elements // n_cols, n_cols]``) is ``(row, col) = divmod(i, n_cols)``.

    Pointers:
      x_ptr: the data, ``[n_rows, n_cols]``, any float dtype (float64 too), element ``(row, col)``
        at ``row * x_row_stride + col * x_col_stride``.
      keep_ptr: ``[n_rows, n_cols]`` bool, contiguous (element ``i`` at ``i``).
      out_ptr: ``[n_rows, n_cols]``, ``x``'s dtype, strides ``(out_row_stride, out_col_stride)``; may be ``x_ptr``.
      flag_ptr: ``[1]`` int32, zeroed by the caller; set to 1 when ``x`` holds NaN or inf.

    Grid: ``(cdiv(n_elements, ELEMENTS_PER_PROGRAM),)``; program ``p`` handles elements
    ``[p * ELEMENTS_PER_PROGRAM, (p + 1) * ELEMENTS_PER_PROGRAM)``.

    Constexprs:
      CHECK_FINITE: raise the flag on non-finite ``x``.
      WRITE_OUT: store ``out``.
      GATE_ON_FLAG: store only while the flag is clear (the in-place write pass, launched after
        a whole check pass, so that bad data is never overwritten).
      FLAT_ADDRESSING: ``x`` and ``out`` are both contiguous, so element ``i`` lies at offset ``i``
        in both (``row * n_cols + col == i``) and the strides are not read.
      ELEMENTS_PER_PROGRAM: elements per program.
    """
    offs = tl.program_id(0).to(tl.int64) * ELEMENTS_PER_PROGRAM + tl.arange(0, ELEMENTS_PER_PROGRAM)
    inside = offs < n_elements
    if FLAT_ADDRESSING:
        x_offs = offs
        out_offs = offs
    else:
        row = offs // n_cols
        col = offs - row * n_cols  # offs % n_cols
        x_offs = row * x_row_stride + col * x_col_stride
        out_offs = row * out_row_stride + col * out_col_stride
    x = tl.load(x_ptr + x_offs, mask=inside, other=0.0)
    if CHECK_FINITE:
        tl.store(flag_ptr, 1, mask=tl.max((inside & is_nonfinite(x)).to(tl.int32)) != 0)
    if WRITE_OUT:
        store = inside
        if GATE_ON_FLAG:
            store = store & flag_clear(flag_ptr, ELEMENTS_PER_PROGRAM)
        keep = tl.load(keep_ptr + offs, mask=inside, other=0)
        tl.store(out_ptr + out_offs, x * keep.to(x.dtype), mask=store)


def apply_mask(x: torch.Tensor, keep: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out = x * keep`` for 2-D ``x`` unless ``x`` holds NaN or inf (``out`` may be ``x``);
    returns the 0-dim bool non-finite flag."""
    keep = keep.contiguous()
    n_elements, n_cols = x.numel(), x.shape[1]
    flag = torch.zeros(1, dtype=torch.int32, device=x.device)
    flat = x.is_contiguous() and out.is_contiguous()
    args = (x, keep, out, flag, n_elements, n_cols, x.stride(0), x.stride(1), out.stride(0), out.stride(1))
    grid = (triton.cdiv(n_elements, _config.ELEMENTWISE_TILE),)
    common = dict(FLAT_ADDRESSING=flat, ELEMENTS_PER_PROGRAM=_config.ELEMENTWISE_TILE, **_config.LAUNCH_OPTIONS)
    with _device.on_device(x):
        if out.data_ptr() == x.data_ptr():  # in place: never write before the whole check is done
            _apply_mask_kernel[grid](*args, CHECK_FINITE=True, WRITE_OUT=False, GATE_ON_FLAG=False, **common)
            _apply_mask_kernel[grid](*args, CHECK_FINITE=False, WRITE_OUT=True, GATE_ON_FLAG=True, **common)
        else:
            _apply_mask_kernel[grid](*args, CHECK_FINITE=True, WRITE_OUT=True, GATE_ON_FLAG=False, **common)
    return (flag != 0).reshape(())
