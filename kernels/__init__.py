"""Block-sparsity kernels: block norms, exact block masks, mask application.

Pure functions on tensors; ``backend="auto"`` runs the Triton kernels on CUDA tensors and
the vectorised torch implementation everywhere else. ``blocksparsity.kernels.validation``
holds the argument rules these functions check by (public, for callers that check first).
"""

from blocksparsity.kernels import validation
from blocksparsity.kernels.api import (
    apply_mask,
    available_backends,
    block_mask,
    block_mask_unchecked,
    block_norm,
    nonfinite,
    raise_if_nonfinite,
    sparsify,
)
from blocksparsity.kernels.foreach import foreach_block_mask, foreach_block_mask_unchecked

__all__ = [
    "apply_mask",
    "available_backends",
    "block_mask",
    "block_mask_unchecked",
    "block_norm",
    "foreach_block_mask",
    "foreach_block_mask_unchecked",
    "nonfinite",
    "raise_if_nonfinite",
    "sparsify",
    "validation",
]
