"""``block_mask_group``: the masks of many tensors of one configuration in one call
(``blocksparsity.kernels._backend``)."""

from __future__ import annotations

import torch

from blocksparsity.kernels._torch.block_mask import block_mask


def block_mask_group(
    xs: list[torch.Tensor], ks: list[int], block_shape: tuple[int, int], zeros_per_block: int, norm: str,
    scales: list[torch.Tensor | None] | None = None,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """``block_mask`` of each of ``xs`` (non-empty 2-D views of one device and dtype, the
    block shape clipped to each): the masks and a 1-D bool tensor of their non-finite flags."""
    masks, flags = [], []
    for i, (x, k) in enumerate(zip(xs, ks, strict=True)):
        mask, bad = block_mask(x, k, block_shape, zeros_per_block, norm, scale=None if scales is None else scales[i])
        masks.append(mask)
        flags.append(bad)
    return masks, torch.stack(flags).to(xs[0].device)
