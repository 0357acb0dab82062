"""``block_mask_group``: the masks of many tensors of one configuration in one call
(``blocksparsity.kernels._backend``): the small ones batched (``small``), in batches of about
``_config.SMALL_BATCH_ELEMENTS`` elements, the large ones one by one (``block_mask``), where
a call's fixed cost is small beside its work."""

from __future__ import annotations

import torch

from blocksparsity.kernels._torch import _config, _policy, small
from blocksparsity.kernels._torch.block_mask import block_mask


def _batches(indices: list[int], xs: list[torch.Tensor]) -> list[list[int]]:
    """``indices`` cut into runs of about ``SMALL_BATCH_ELEMENTS`` elements of ``xs``."""
    batches, current, size = [], [], 0
    for i in indices:
        if current and size + xs[i].numel() > _config.SMALL_BATCH_ELEMENTS:
            batches.append(current)
            current, size = [], 0
        current.append(i)
        size += xs[i].numel()
    return [*batches, current] if current else batches


def block_mask_group(
    xs: list[torch.Tensor], ks: list[int], block_shape: tuple[int, int], zeros_per_block: int, norm: str,
    scales: list[torch.Tensor | None] | None = None,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """``block_mask`` of each of ``xs`` (non-empty 2-D views of one device and dtype, the
    block shape clipped to each): the masks and a 1-D bool tensor of their non-finite flags."""
    policy = _policy.for_device(xs[0].device)
    masks: list[torch.Tensor | None] = [None] * len(xs)
    flags: list[torch.Tensor | None] = [None] * len(xs)
    batched = [i for i, x in enumerate(xs) if small.fits(x, block_shape)]
    for batch in _batches(batched, xs):
        batch_masks, batch_flags = small.block_masks(
            [xs[i] for i in batch], [ks[i] for i in batch], block_shape, zeros_per_block, norm,
            None if scales is None else [scales[i] for i in batch], policy)
        for i, mask, flag in zip(batch, batch_masks, batch_flags.unbind(0), strict=True):
            masks[i], flags[i] = mask, flag
    for i, x in enumerate(xs):
        if masks[i] is None:
            masks[i], flags[i] = block_mask(x, ks[i], block_shape, zeros_per_block, norm, policy=policy,
                                            scale=None if scales is None else scales[i])
    return masks, torch.stack(flags)  # type: ignore[return-value, arg-type]
