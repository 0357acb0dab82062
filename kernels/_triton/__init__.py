"""Triton backend: the same operations as ``blocksparsity.kernels._torch`` (the contract in
``blocksparsity.kernels._backend``), on CUDA tensors (or CPU tensors under ``TRITON_INTERPRET=1``), masks
equal to the torch backend's bit for bit. No function syncs with the host: writes over
bad data are gated on the device flag."""

from blocksparsity.kernels._common import TRITON
from blocksparsity.kernels._triton.apply_mask import apply_mask
from blocksparsity.kernels._triton.block_mask import block_mask, block_mask_given, sparsify
from blocksparsity.kernels._triton.block_mask_group import block_mask_group
from blocksparsity.kernels._triton.block_norm import block_norm
from blocksparsity.kernels._triton.select import select_threshold

NAME = TRITON
SYNCS_BEFORE_WRITING = False  # sparsify, apply_mask gate their writes on the device flag

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
