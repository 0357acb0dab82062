"""The reference the tests compare against lives in the package: ``blocksparsity.kernels.naive``."""

from blocksparsity.kernels.naive import as_2d, block_elements, block_mask, block_norm, sparsify

__all__ = ["as_2d", "block_elements", "block_mask", "block_norm", "sparsify"]
