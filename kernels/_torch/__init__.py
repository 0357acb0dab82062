"""Torch backend: every op in plain torch, on any device; masks equal to the Triton
backend's, and to the reference ``blocksparsity.kernels.naive``, bit for bit.

Laid out like ``blocksparsity.kernels._triton``, one module per op: ``block_norm`` (scores),
``select`` (which blocks are pruned), ``ranks`` (in-block ranks), ``block_mask`` (the
mask, and ``sparsify``), ``group`` (many tensors' masks in one call), ``apply_mask``; chunk and layout helpers in ``_blocks``, the
tuning numbers in ``_config``, the one device-dependent choice in ``_policy``.

All functions take a 2-D view ``x`` (H x W) and an already validated configuration
(see ``blocksparsity.kernels._backend``); ``blocksparsity.kernels.api`` does the checking, flattening and dispatch.
The work is done in chunks of whole blocks (about ``_config.CHUNK_ELEMENTS`` elements), so
temporaries stay cache-sized; nothing loops per row or per block.

Host syncs: ``sparsify`` and ``apply_mask`` read the non-finite flag on the host once,
before writing (nothing is written over bad data). The others never sync on a GPU; on the
CPU they read a few values on the host where that is free (``_policy``: chosen once per
call from the device, and passed down).
"""

from blocksparsity.kernels._common import TORCH
from blocksparsity.kernels._torch.apply_mask import apply_mask
from blocksparsity.kernels._torch.block_mask import block_mask, block_mask_given, sparsify
from blocksparsity.kernels._torch.block_norm import block_norm
from blocksparsity.kernels._torch.group import block_mask_group
from blocksparsity.kernels._torch.select import select_threshold

NAME = TORCH
SYNCS_BEFORE_WRITING = True  # sparsify, apply_mask: the flag is read before anything is written

__all__ = [
    "NAME",
    "SYNCS_BEFORE_WRITING",
    "apply_mask",
    "block_mask",
    "block_mask_given",
    "block_mask_group",
    "block_norm",
    "select_threshold",
    "sparsify",
]
