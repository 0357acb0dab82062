"""Triton backend: the same operations as ``kernels._torch``, on CUDA tensors (or CPU
tensors under ``TRITON_INTERPRET=1``), masks equal to the torch twin's bit for bit."""

from kernels._triton.apply_mask import apply_mask
from kernels._triton.block_mask import block_mask, block_mask_given, sparsify
from kernels._triton.block_norm import block_norm
from kernels._triton.select import select_threshold

__all__ = ["apply_mask", "block_mask", "block_mask_given", "block_norm", "select_threshold", "sparsify"]
