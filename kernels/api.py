"""Public kernel API: check arguments once, flatten to 2-D, dispatch, reshape back.
(The checks and the rules they state live in ``blocksparsity.kernels.validation``.)

Every function here validates all of its arguments before it touches data, so bad input
raises ``TypeError``/``ValueError`` naming the argument and leaves the data unchanged.
Non-finite data is detected inside the same pass that reads it; the functions sync with
the device at most once, at the end, to raise. They run under ``torch.no_grad()``: masks
are not differentiable, and ``sparsify``/``apply_mask`` edit weights, so their results carry
no autograd history (parameters that require grad are fine, in place too).

``DTensor`` data (sharded by FSDP2's ``fully_shard`` or ``distribute_tensor``) is routed,
after the same checks, to ``blocksparsity.kernels._sharded``: the same masks as the unsharded call,
computed shard by shard with small collectives, returned as DTensors placed like the data.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from types import ModuleType
from typing import NamedTuple

import torch

from blocksparsity.kernels import _common, _dispatch
from blocksparsity.kernels._backend import Backend
from blocksparsity.kernels._common import block_grid, is_dtensor, n_blocks, shape_2d
from blocksparsity.kernels.validation import (  # noqa: F401  (FLOAT_DTYPES..., may_overlap: this module's names before)
    FLOAT_DTYPES,
    NORMS,
    SCORED_DTYPES,
    check_backend,
    check_block_shape,
    check_bool,
    check_data,
    check_norm,
    check_scale,
    check_sparsity_level,
    check_writable,
    check_zeros_per_block,
    clip_block,
    may_overlap,
)

__all__ = [
    "apply_mask",
    "available_backends",
    "block_mask",
    "block_mask_unchecked",
    "block_norm",
    "check_writable",
    "nonfinite",
    "raise_if_nonfinite",
    "sparsify",
]

available_backends = _dispatch.available_backends


def as_2d(x: torch.Tensor) -> torch.Tensor:
    """1-D data as (1, N); N-D data as (shape[0], rest). A view where strides allow; 2-D
    data itself (no new view object: foreach calls take this for every tensor)."""
    return x if x.dim() == 2 else x.reshape(shape_2d(x.shape))


def _sharded() -> ModuleType:
    from blocksparsity.kernels import _sharded

    return _sharded


def blocks_to_prune(shape: tuple[int, int], block_shape: tuple[int, int], sparsity_level: float,
                    zeros_per_block: int) -> int:
    """round(sparsity_level * n_blocks), Python's round (half to even), as the reference; 0
    when ``zeros_per_block`` is 0 (nothing is zeroed, so no block counts as pruned). The
    one place ``k`` is worked out: every backend and the sharded path take it as given."""
    return round(sparsity_level * n_blocks(shape, block_shape)) if zeros_per_block > 0 else 0


def nonfinite(x: torch.Tensor) -> torch.Tensor:
    """0-dim bool tensor: does ``x`` (plain, or a DTensor: any shard) hold NaN or infinity?
    No host sync, so that callers checking many tensors sync once (``raise_if_nonfinite``)."""
    if is_dtensor(x):
        return _sharded().nonfinite(x)
    return _common.nonfinite(x)


def raise_if_nonfinite(flag: torch.Tensor | bool, name: str = "x") -> None:
    """Raise ``ValueError`` if ``flag`` (from ``block_mask_unchecked``) is set. One host sync."""
    if bool(flag):
        raise ValueError(f"{name} holds NaN or infinite values; its block scores would be meaningless")


def _scale_kw(scale: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """The backend keyword for a scale: none at all without one (``scale=None`` calls the
    backends exactly as before)."""
    return {} if scale is None else {"scale": scale}


# ---------------------------------------------------------------- operations
@torch.no_grad()
def block_norm(
    x: torch.Tensor, block_shape: Sequence[int] = (1, 4), norm: str = "L1", *, scale: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Each block's mean of ``|x|`` (L1) or ``x*x`` (L2), as float32 of shape
    ``(ceil(H / bh), ceil(W / bw))``; partial edge blocks average the elements they hold.
    With ``scale`` (see ``validation.check_scale``), of ``t = float32(|x|) * float32(scale)``
    (L1) or ``t*t`` (L2) instead."""
    x = check_data(x)
    bs = clip_block(shape_2d(x.shape), check_block_shape(block_shape))
    norm = check_norm(norm)
    s2 = check_scale(scale, x)
    impl = _dispatch.resolve(backend, x.device)
    if is_dtensor(x):
        scores, bad = _sharded().block_norm(x, bs, norm, impl, lambda local: _block_norm(local, bs, norm, impl, s2),
                                            scale=s2)
    else:
        scores, bad = _block_norm(x, bs, norm, impl, s2)
    raise_if_nonfinite(bad)
    return scores


def _block_norm(x: torch.Tensor, bs: tuple[int, int], norm: str, impl: Backend,
                scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    x2 = as_2d(x)
    if x2.numel() == 0:
        return torch.empty(block_grid(x2.shape, bs), dtype=torch.float32, device=x.device), torch.zeros((), dtype=torch.bool)
    return impl.block_norm(x2, bs, norm, **_scale_kw(scale))


class _MaskCall(NamedTuple):
    """A checked mask request: the data, how many blocks to prune, and the config."""

    x: torch.Tensor
    k: int
    block_shape: tuple[int, int]
    zeros_per_block: int
    norm: str
    impl: Backend
    scale: torch.Tensor | None = None  # broadcast (a view) to x's 2-D shape; or a DTensor placed like a DTensor x


def _mask_call(x: object, sparsity_level: object, block_shape: object, zeros_per_block: object, norm: object,
               backend: str, scale: object = None) -> _MaskCall:
    """Check every argument of a mask request (before anything is read or written)."""
    x = check_data(x)
    level = check_sparsity_level(sparsity_level)
    bs = check_block_shape(block_shape)
    zpb = check_zeros_per_block(zeros_per_block, bs)
    norm = check_norm(norm)
    s2 = check_scale(scale, x)
    impl = _dispatch.resolve(backend, x.device)
    k = blocks_to_prune(shape_2d(x.shape), bs, level, zpb)
    # A block beyond the tensor holds only its in-tensor elements: zeroing more of them than
    # it holds zeroes them all, as in the unclipped block.
    bs = clip_block(shape_2d(x.shape), bs)
    return _MaskCall(x, k, bs, min(zpb, bs[0] * bs[1]), norm, impl, s2)


def _local_masks(call: _MaskCall, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The keep-mask and non-finite flag of ``x``, a plain tensor (the request's data, or one
    rank's shard of it) under the request's configuration."""
    x2 = as_2d(x)
    if x2.numel() == 0:
        return torch.ones(x.shape, dtype=torch.bool, device=x.device), torch.zeros((), dtype=torch.bool)
    mask, bad = call.impl.block_mask(x2, call.k, call.block_shape, call.zeros_per_block, call.norm,
                                     **_scale_kw(call.scale))
    return mask.reshape(x.shape), bad


def _masks(call: _MaskCall) -> tuple[torch.Tensor, torch.Tensor]:
    """The keep-mask and non-finite flag of a request, sharded or not."""
    if is_dtensor(call.x):
        return _sharded().block_mask(call.x, call.k, call.block_shape, call.zeros_per_block, call.norm, call.impl,
                                     functools.partial(_local_masks, call), scale=call.scale)
    return _local_masks(call, call.x)


@torch.no_grad()
def block_mask_unchecked(
    x: torch.Tensor,
    sparsity_level: float,
    block_shape: Sequence[int] = (1, 4),
    zeros_per_block: int | None = None,
    norm: str = "L1",
    *,
    scale: torch.Tensor | None = None,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """As ``block_mask``, without the host sync: also returns the 0-dim bool flag that is set
    when ``x`` held NaN or infinity (the mask is then meaningless). For callers that check
    many tensors with one sync (``raise_if_nonfinite``). For a DTensor ``x`` the flag is a
    plain tensor on the local device, set on every rank when any shard is bad."""
    return _masks(_mask_call(x, sparsity_level, block_shape, zeros_per_block, norm, backend, scale))


@torch.no_grad()
def block_mask(
    x: torch.Tensor,
    sparsity_level: float,
    block_shape: Sequence[int] = (1, 4),
    zeros_per_block: int | None = None,
    norm: str = "L1",
    *,
    scale: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Bool keep-mask (shape of ``x``) pruning ``round(sparsity_level * n_blocks)`` blocks.

    The blocks with the lowest ``block_norm`` are pruned (ties: lowest block index first);
    inside each, the ``zeros_per_block`` elements of smallest ``|x|`` are zeroed (ties:
    row-major order first; default: the whole block). 1-D data is one row; N-D data is
    ``(shape[0], rest)``.

    A ``DTensor`` ``x`` (``Shard(0)``/``Shard(1)`` on one mesh dim, ``Replicate()`` on the
    others) gets the same mask as the whole tensor would, as a DTensor placed like ``x``,
    computed shard by shard with collectives over small data (see ``blocksparsity.kernels._sharded``).

    ``scale`` (optional; ``validation.check_scale`` states its forms): scores and in-block
    ranks use ``t = float32(|x|) * float32(scale)`` (L1) or ``t*t`` (L2) in place of ``|x|``
    or ``x*x``, computed chunk by chunk or tile by tile (no scaled copy of ``x``); every backend takes it,
    and DTensor data (a replicated scale of the whole tensor, or a DTensor scale placed like ``x``).
    """
    mask, bad = _masks(_mask_call(x, sparsity_level, block_shape, zeros_per_block, norm, backend, scale))
    raise_if_nonfinite(bad)
    return mask


@torch.no_grad()
def sparsify(
    x: torch.Tensor,
    sparsity_level: float,
    block_shape: Sequence[int] = (1, 4),
    zeros_per_block: int | None = None,
    norm: str = "L1",
    *,
    scale: torch.Tensor | None = None,
    inplace: bool = False,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused ``block_mask`` + ``apply_mask``: returns ``(x * mask, mask)`` (``scale``: as in ``block_mask``).

    With ``inplace=True`` the first element is ``x`` itself, masked in place; the Triton
    backend then writes only the elements it zeroes. On bad data nothing is written.
    """
    call = _mask_call(x, sparsity_level, block_shape, zeros_per_block, norm, backend, scale)
    check_bool(inplace, "inplace")
    x = call.x
    if inplace:
        check_writable(x)
    if is_dtensor(x):
        mask, bad = _masks(call)
        raise_if_nonfinite(bad)
        return _sharded().masked(x, mask, inplace), mask
    x2 = as_2d(x)
    if x2.numel() == 0:
        return (x if inplace else x.clone()), torch.ones(x.shape, dtype=torch.bool, device=x.device)
    # In place, x2 is x itself or (where no 2-D view exists) a private copy to write back.
    work = x2 if inplace else torch.empty_like(x2)
    mask, bad = call.impl.sparsify(x2, call.k, call.block_shape, call.zeros_per_block, call.norm, work,
                                   **_scale_kw(call.scale))
    raise_if_nonfinite(bad)
    if inplace and not _is_view_of(x2, x):
        x.copy_(work.reshape(x.shape))
    return (x if inplace else work.reshape(x.shape)), mask.reshape(x.shape)


@torch.no_grad()
def apply_mask(
    x: torch.Tensor, mask: torch.Tensor, *, inplace: bool = False, backend: str = "auto"
) -> torch.Tensor:
    """``x * mask`` (zeros where ``mask`` is False), in place with ``inplace=True``.

    ``mask`` is bool (or an integer type, nonzero = keep) of ``x``'s shape and device.
    Non-finite ``x`` raises ``ValueError`` before anything is written. For a DTensor ``x``,
    ``mask`` is a DTensor placed like it (as ``block_mask`` returns); the check spans all shards.
    """
    x = check_data(x, scored=False)
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a torch.Tensor; got {type(mask).__name__}")
    if mask.layout != torch.strided or mask.is_meta:
        raise TypeError(f"mask must be a dense tensor with data; got layout {mask.layout}, device {mask.device}")
    if is_dtensor(mask) and not is_dtensor(x):
        raise TypeError("mask is a DTensor but x is not; pass both as DTensors placed alike, or both plain")
    if mask.dtype.is_floating_point or mask.dtype.is_complex:
        raise TypeError(f"mask must be bool (or an integer type, nonzero = keep); got {mask.dtype}")
    if mask.shape != x.shape:
        raise ValueError(f"mask must have the shape of x {tuple(x.shape)}; got {tuple(mask.shape)}")
    if mask.device != x.device:
        raise ValueError(f"mask must be on x's device {x.device}; got {mask.device}")
    check_bool(inplace, "inplace")
    if inplace:
        check_writable(x)
    impl = _dispatch.resolve(backend, x.device)
    if is_dtensor(x):
        _sharded().check_same_placement(x, mask)
        raise_if_nonfinite(_sharded().nonfinite(x))
        return _sharded().masked(x, mask, inplace)
    if x.numel() == 0:
        return x if inplace else x.clone()
    keep = as_2d(mask if mask.dtype == torch.bool else mask != 0)
    x2 = as_2d(x)
    writes_through = inplace and _is_view_of(x2, x)
    out = x2 if writes_through else torch.empty_like(x2)
    bad = impl.apply_mask(x2, keep, out)
    raise_if_nonfinite(bad)
    if inplace and not writes_through:
        x.copy_(out.reshape(x.shape))
        return x
    return x if inplace else out.reshape(x.shape)


def _is_view_of(view: torch.Tensor, base: torch.Tensor) -> bool:
    """Does writing ``view`` write ``base``'s elements (same storage, same start)?"""
    return view.untyped_storage().data_ptr() == base.untyped_storage().data_ptr() and (
        view.storage_offset() == base.storage_offset()
    )
