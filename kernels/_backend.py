"""The contract every backend module (``blocksparsity.kernels._torch``, ``blocksparsity.kernels._triton``) fulfils.

``blocksparsity.kernels.api`` checks and normalises every argument before a backend sees it, so a
backend may assume: ``x`` is a non-empty 2-D view (H x W) of float16/bfloat16/float32 data
(float64 too for ``apply_mask``); ``block_shape`` is clipped to the tensor; ``norm`` is
``"L1"`` or ``"L2"``; ``0 <= zeros_per_block <= bh * bw``; ``0 <= k <= n_blocks``, and
``k == 0`` whenever ``zeros_per_block == 0`` (nothing is zeroed, so nothing is pruned).
Every function returns the non-finite flag as a 0-dim bool tensor on ``x``'s device
(the API layer reads it once, to raise).

Who syncs with the host, per backend (``SYNCS_BEFORE_WRITING``):

* ``block_norm``, ``block_mask``, ``block_mask_group``, ``select_threshold``, ``block_mask_given``: never on a
  GPU. (The torch backend reads a few values on the host when ``x`` is on the CPU, where
  that is free; see ``blocksparsity.kernels._torch._policy``.)
* ``sparsify``, ``apply_mask`` write data, and nothing may be written over bad data: the
  torch backend reads the flag on the host once before writing (``SYNCS_BEFORE_WRITING``
  is True); the Triton kernels gate the writes on the device flag (False: no sync).
"""

from __future__ import annotations

from typing import Protocol

import torch

from blocksparsity.kernels._common import Reduce, Threshold

Flag = torch.Tensor  # 0-dim bool: did the data hold NaN or infinity?


class Backend(Protocol):
    """The functions (and two constants) of a backend module; see the module docstring."""

    NAME: str  # one of blocksparsity.kernels._common.TORCH, TRITON
    SYNCS_BEFORE_WRITING: bool  # do sparsify/apply_mask read the flag on the host?

    def block_norm(self, x: torch.Tensor, block_shape: tuple[int, int], norm: str) -> tuple[torch.Tensor, Flag]:
        """Block scores (float32, the block grid's shape) and the flag."""

    def block_mask(
        self, x: torch.Tensor, k: int, block_shape: tuple[int, int], zeros_per_block: int, norm: str
    ) -> tuple[torch.Tensor, Flag]:
        """Bool keep-mask of ``x``'s shape pruning its ``k`` lowest-scoring blocks, and the flag."""

    def sparsify(
        self, x: torch.Tensor, k: int, block_shape: tuple[int, int], zeros_per_block: int, norm: str,
        out: torch.Tensor,
    ) -> tuple[torch.Tensor, Flag]:
        """``block_mask``, and ``out = x * mask`` (``out`` may be ``x``) unless the flag is set."""

    def apply_mask(self, x: torch.Tensor, keep: torch.Tensor, out: torch.Tensor) -> Flag:
        """``out = x * keep`` (bool ``keep`` of ``x``'s shape; ``out`` may be ``x``) unless ``x``
        holds NaN or infinity; returns the flag."""

    def select_threshold(self, scores: torch.Tensor, k: int, reduce: Reduce | None = None) -> Threshold:
        """The ``Threshold`` pruning the ``k`` lowest ``scores`` (``0 < k``; with ``reduce``,
        which sums each radix pass's histogram over the shards, of the scores of all shards)."""

    def block_mask_given(
        self, x: torch.Tensor, scores: torch.Tensor, threshold: Threshold, row_ties: torch.Tensor | None,
        block_shape: tuple[int, int], zeros_per_block: int, norm: str,
    ) -> torch.Tensor:
        """Keep-mask of ``x`` given its block ``scores`` and a ``threshold`` selected elsewhere;
        ``row_ties[block row]``: the ties before each block row that ``x`` does not hold."""

    def block_mask_group(
        self, xs: list[torch.Tensor], ks: list[int], block_shape: tuple[int, int], zeros_per_block: int, norm: str,
        scales: list[torch.Tensor | None] | None = None,
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``block_mask`` of many tensors in one call (``blocksparsity.kernels.foreach``): ``xs``
        are non-empty 2-D views, all on one device and of one dtype; ``block_shape`` is already
        clipped to every one of them and ``zeros_per_block`` is at most ``bh * bw`` for all
        (the caller groups by device, dtype, clipped block shape, effective ``zeros_per_block``
        and whether there is a scale); ``ks[i]`` as ``block_mask``'s ``k`` for ``xs[i]``;
        ``scales``: None, or one scale (broadcast to its x's 2-D shape) per x. Returns the bool
        masks (each of its x's shape, contiguous), equal bit for bit to ``block_mask``'s, and a
        1-D bool tensor of ``len(xs)`` non-finite flags on the device. No host sync on a GPU."""
