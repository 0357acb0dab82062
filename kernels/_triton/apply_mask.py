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
    x_ptr, keep_ptr, out_ptr, flag_ptr, n, W, sxr, sxc, sor, soc,
    CHECK: tl.constexpr, WRITE: tl.constexpr, GATED: tl.constexpr, FLAT: tl.constexpr, TILE: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * TILE + tl.arange(0, TILE)
    inside = offs < n
    if FLAT:
        x_offs = offs
        out_offs = offs
    else:
        row = offs // W
        col = offs - row * W
        x_offs = row * sxr + col * sxc
        out_offs = row * sor + col * soc
    x = tl.load(x_ptr + x_offs, mask=inside, other=0.0)
    if CHECK:
        tl.store(flag_ptr, 1, mask=tl.max((inside & is_nonfinite(x)).to(tl.int32)) != 0)
    if WRITE:
        m = inside
        if GATED:
            m = m & flag_clear(flag_ptr, TILE)
        keep = tl.load(keep_ptr + offs, mask=inside, other=0)
        tl.store(out_ptr + out_offs, x * keep.to(x.dtype), mask=m)


def apply_mask(x: torch.Tensor, keep: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out = x * keep`` for 2-D ``x`` unless ``x`` holds NaN or inf (``out`` may be ``x``);
    returns the 0-dim bool non-finite flag."""
    keep = keep.contiguous()
    n, w = x.numel(), x.shape[1]
    flag = torch.zeros(1, dtype=torch.int32, device=x.device)
    flat = x.is_contiguous() and out.is_contiguous()
    args = (x, keep, out, flag, n, w, x.stride(0), x.stride(1), out.stride(0), out.stride(1))
    grid = (triton.cdiv(n, _config.ELEMENTWISE_TILE),)
    common = dict(FLAT=flat, TILE=_config.ELEMENTWISE_TILE, **_config.LAUNCH_OPTIONS)
    with _device.on_device(x):
        if out.data_ptr() == x.data_ptr():  # in place: never write before the whole check is done
            _apply_mask_kernel[grid](*args, CHECK=True, WRITE=False, GATED=False, **common)
            _apply_mask_kernel[grid](*args, CHECK=False, WRITE=True, GATED=True, **common)
        else:
            _apply_mask_kernel[grid](*args, CHECK=True, WRITE=True, GATED=False, **common)
    return (flag != 0).reshape(())
