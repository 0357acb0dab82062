"""Block scores: one program per tile of blocks; also raises the non-finite flag."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from blocksparsity.kernels._common import block_grid
from blocksparsity.kernels._triton import _config, _device
from blocksparsity.kernels._triton._blocks import block_scores


@triton.jit(do_not_specialize=_config.DO_NOT_SPECIALIZE["_block_norm_kernel"])
def _block_norm_kernel(
    x_ptr, scores_ptr, flag_ptr, H, W, nbw, n_blocks, sxr, sxc,
    L2: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr, P2: tl.constexpr,
    TILE: tl.constexpr, SMALL: tl.constexpr, FLAT: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64) * TILE + tl.arange(0, TILE)
    scores, bad = block_scores(x_ptr, b, H, W, nbw, n_blocks, sxr, sxc, L2, BH, BW, P2, SMALL, FLAT)
    tl.store(scores_ptr + b, scores, mask=b < n_blocks)
    tl.store(flag_ptr, 1, mask=bad != 0)


def flat_layout(x: torch.Tensor, block_shape: tuple[int, int], *others: torch.Tensor) -> bool:
    """Can blocks be addressed as flat ranges (contiguous data, (1, bw) blocks tiling rows)?

    Flat addressing takes element ``i`` at offset ``i``: launch it with ``strides(t, True)``,
    never with ``t.stride()``, which for a size-1 dim may be anything (``torch.randn(1, 64).t()``
    is contiguous with strides (1, 64))."""
    return (
        block_shape[0] == 1
        and x.shape[1] % block_shape[1] == 0
        and all(t.is_contiguous() for t in (x, *others))
    )


def strides(t: torch.Tensor, flat: bool) -> tuple[int, int]:
    """(row, column) strides of 2-D ``t`` as the kernels address it: those of a dense
    row-major layout on the flat path (where ``t`` is contiguous, so they are its own in
    every dim longer than 1), else its own."""
    return (t.shape[1], 1) if flat else (t.stride(0), t.stride(1))


def launch_scores(x: torch.Tensor, block_shape: tuple[int, int], norm: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores as a flat float32 vector over the block grid, int32[1] non-finite flag)."""
    h, w = x.shape
    bh, bw = block_shape
    nbh, nbw = block_grid((h, w), block_shape)
    n_blocks = nbh * nbw
    launch = _config.block_launch(block_shape)
    scores = torch.empty(n_blocks, dtype=torch.float32, device=x.device)
    flag = torch.zeros(1, dtype=torch.int32, device=x.device)
    flat = flat_layout(x, block_shape)
    with _device.on_device(x):
        _block_norm_kernel[(triton.cdiv(n_blocks, launch.tile),)](
            x, scores, flag, h, w, nbw, n_blocks, *strides(x, flat),
            L2=norm == "L2", BH=bh, BW=bw, P2=launch.p2, TILE=launch.tile, SMALL=launch.small,
            FLAT=flat, **_config.LAUNCH_OPTIONS,
        )
    return scores, flag


def block_norm(x: torch.Tensor, block_shape: tuple[int, int], norm: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Block scores of ``x`` (2-D), shaped as the block grid, and the 0-dim bool non-finite flag."""
    scores, flag = launch_scores(x, block_shape, norm)
    return scores.view(block_grid(x.shape, block_shape)), (flag != 0).reshape(())
