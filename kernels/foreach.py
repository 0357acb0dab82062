"""Multi-tensor masks: ``foreach_block_mask`` computes the masks of many tensors in one call,
exactly equal to ``block_mask`` on each, as torch's ``_foreach_*`` functions do for their ops.

Why one call: a model's step updates the masks of many tensors, most of them small, where a
per-tensor call is mostly fixed cost (argument checks, dispatch, a host sync to raise). Here
every argument of every tensor is checked first (errors name the argument and the tensor's
index, ``tensors[3]``), nothing is computed before all are good, and tensors that share a
configuration go to the backend together (``block_mask_group``: scores of a group from one
pass, thresholds from one batched selection). The non-finite check is one host sync for all
tensors (``foreach_block_mask``), or none (``foreach_block_mask_unchecked``).

Grouping key: (backend, device, dtype, block shape clipped to the tensor, effective
``zeros_per_block``, has a scale); ``norm`` is one value for the call. DTensor inputs go
through the per-tensor sharded path, one call each.
"""

from __future__ import annotations

import functools
import numbers
import weakref
from collections.abc import Sequence
from typing import NamedTuple

import torch

from blocksparsity.kernels import _dispatch
from blocksparsity.kernels._backend import Backend
from blocksparsity.kernels._common import is_dtensor, shape_2d
from blocksparsity.kernels.api import _MaskCall, _masks, as_2d, blocks_to_prune
from blocksparsity.kernels.validation import (
    SCALE_VALUES_MESSAGE,
    check_backend,
    check_block_shape,
    check_data,
    check_norm,
    check_scale,
    check_sparsity_level,
    check_zeros_per_block,
    clip_block,
    scale_values_bad,
    scale_view,
)

__all__ = ["foreach_block_mask", "foreach_block_mask_unchecked"]


# ---------------------------------------------------------------- arguments: one value or one per tensor
def _per_tensor(value: object, n: int, name: str, is_one: bool) -> list[object]:
    """``value`` as a list of ``n`` entries: repeated when it is one value (``is_one``), else
    a sequence of exactly ``n`` entries."""
    if is_one:
        return [value] * n
    if not isinstance(value, Sequence) or isinstance(value, str | bytes | bytearray):
        raise TypeError(f"{name} must be one value for all tensors or a sequence with one per tensor; got {value!r}")
    if len(value) != n:
        raise ValueError(f"{name} has {len(value)} entries; tensors has {n} (one value, or one per tensor)")
    return list(value)


def _is_one_block_shape(block_shapes: object) -> bool:
    """A block shape is one value when its first element is an int (``(1, 4)``), a sequence of
    them when it is not (``[(1, 4), (2, 2)]``)."""
    return (isinstance(block_shapes, Sequence) and len(block_shapes) > 0
            and isinstance(block_shapes[0], numbers.Integral)) or not isinstance(block_shapes, Sequence)


def _at(index: int, err: Exception) -> Exception:
    """``err`` (a ``TypeError``/``ValueError`` from a per-tensor check) naming the tensor's index."""
    return type(err)(f"tensors[{index}]: {err}")


# ---------------------------------------------------------------- scale values: checked once per version
class _CheckedScales:
    """Scales whose values (finite, >= 0, within float32's range) were checked, with the
    tensor's version counter at the time: an unchanged scale is not checked again (its check
    is a host sync). Keyed by ``id``, with a weak reference to tell a live tensor from a reused
    id; an in-place change to the scale (or a view of it) bumps its version and so re-checks."""

    def __init__(self) -> None:
        self._seen: dict[int, tuple[weakref.ref, int]] = {}

    def known_good(self, scale: torch.Tensor) -> bool:
        entry = self._seen.get(id(scale))
        return entry is not None and entry[0]() is scale and entry[1] == scale._version

    def remember(self, scale: torch.Tensor) -> None:
        key = id(scale)
        self._seen[key] = (weakref.ref(scale, lambda _ref, key=key: self._seen.pop(key, None)), scale._version)


_checked_scales = _CheckedScales()


def _check_scale_values(scales: list[tuple[int, torch.Tensor]]) -> None:
    """Raise ``ValueError`` naming the first ``tensors[i]`` whose scale (of ``(i, scale)``,
    plain tensors) holds a bad value: one host sync for all scales not known good, none when
    every one is."""
    todo = [(i, s) for i, s in scales if not _checked_scales.known_good(s)]
    if not todo:
        return
    flags = torch.stack([scale_values_bad(s).to(todo[0][1].device) for _, s in todo]).tolist()  # the one sync
    for (i, _), bad in zip(todo, flags, strict=True):
        if bad:
            raise _at(i, ValueError(SCALE_VALUES_MESSAGE))
    for _, s in todo:
        _checked_scales.remember(s)


# ---------------------------------------------------------------- checking
def _checked_config(level: object, block_shape: object, zeros_per_block: object,
                    shape2d: tuple[int, int]) -> tuple[int, tuple[int, int], int]:
    """One tensor's level, block shape and ``zeros_per_block`` checked against its 2-D shape:
    ``k`` (blocks to prune), the block shape clipped to the tensor, the effective
    ``zeros_per_block``, as ``block_mask`` works them out."""
    level = check_sparsity_level(level)
    bs, zpb, clipped, effective = _block_config(block_shape, zeros_per_block, shape2d)
    return blocks_to_prune(shape2d, bs, level, zpb), clipped, effective


def _checked_block_config(block_shape: object, zeros_per_block: object, shape2d: tuple[int, int]
                          ) -> tuple[tuple[int, int], int, tuple[int, int], int]:
    """The block shape and ``zeros_per_block`` checked, and as they apply to a tensor of 2-D
    shape ``shape2d``: (block shape, ``zeros_per_block``, the block shape clipped to the
    tensor, the effective ``zeros_per_block``)."""
    bs = check_block_shape(block_shape)
    zpb = check_zeros_per_block(zeros_per_block, bs)
    clipped = clip_block(shape2d, bs)
    return bs, zpb, clipped, min(zpb, clipped[0] * clipped[1])


_cached_block_config = functools.lru_cache(maxsize=1024)(
    lambda block_shape, zpb_type, zpb, shape2d: _checked_block_config(block_shape, zpb, shape2d))


def _block_config(block_shape: object, zeros_per_block: object, shape2d: tuple[int, int]
                  ) -> tuple[tuple[int, int], int, tuple[int, int], int]:
    """``_checked_block_config``, remembered for arguments of plain types (a tuple of two ints,
    an int or None): a model's step asks the same of the same shapes at every mask update,
    while a schedule moves the level (checked, and ``k`` worked out, at every call: both
    cost little). Keys carry the types (``True == 1``), so a value is answered from the cache
    only after the same value of the same type passed every check; a refused argument
    raises every time (a failed call caches nothing)."""
    if (type(block_shape) is tuple and len(block_shape) == 2
            and type(block_shape[0]) is int and type(block_shape[1]) is int
            and (zeros_per_block is None or type(zeros_per_block) is int)):
        return _cached_block_config(block_shape, type(zeros_per_block), zeros_per_block, shape2d)
    return _checked_block_config(block_shape, zeros_per_block, shape2d)


class _Group(NamedTuple):
    """Tensors (by index) that one backend call handles together."""

    impl: Backend
    block_shape: tuple[int, int]
    zeros_per_block: int
    indices: list[int]


def _checked_calls(tensors: object, sparsity_levels: object, block_shapes: object, zeros_per_block: object,
                   norm: object, scales: object, backend: object) -> list[_MaskCall]:
    """Every argument of every tensor checked (nothing read before all are good): one
    ``_MaskCall`` per tensor, as ``block_mask`` would make it."""
    if not isinstance(tensors, Sequence) or isinstance(tensors, str | bytes | bytearray | torch.Tensor):
        raise TypeError(f"tensors must be a list or tuple of tensors; got {type(tensors).__name__}")
    n = len(tensors)
    norm = check_norm(norm)
    backend = check_backend(backend)
    levels = _per_tensor(sparsity_levels, n, "sparsity_levels", isinstance(sparsity_levels, numbers.Real))
    shapes = _per_tensor(block_shapes, n, "block_shapes", _is_one_block_shape(block_shapes))
    zpbs = _per_tensor(zeros_per_block, n, "zeros_per_block",
                       zeros_per_block is None or isinstance(zeros_per_block, numbers.Integral))
    scale_list = _per_tensor(scales, n, "scales", scales is None or isinstance(scales, torch.Tensor))
    calls, plain_scales = [], []
    impls: dict[torch.device, Backend] = {}  # the backend, resolved once per device
    for i, x in enumerate(tensors):
        x = check_data(x, f"tensors[{i}]")
        try:
            x2d = shape_2d(x.shape)
            k, bs, zpb = _checked_config(levels[i], shapes[i], zpbs[i], x2d)
            scale = scale_list[i]
            if scale is None:
                s2 = None
            elif not is_dtensor(x) and isinstance(scale, torch.Tensor) and not is_dtensor(scale):
                s2 = scale_view(scale, x2d, x.device)  # values: below, one sync for all
                plain_scales.append((i, scale))
            else:
                s2 = check_scale(scale, x)
            impl = impls.get(x.device)
            if impl is None:
                impl = impls[x.device] = _dispatch.resolve(backend, x.device)
        except (TypeError, ValueError) as err:
            raise _at(i, err) from None
        calls.append(_MaskCall(x, k, bs, zpb, norm, impl, s2))
    _check_scale_values(plain_scales)
    return calls


def _groups(calls: list[_MaskCall]) -> tuple[list[_Group], list[int]]:
    """The plain, non-empty tensors grouped by what a backend call shares; and the indices
    of the rest (DTensors, empty tensors), which are handled one by one."""
    groups: dict[tuple, _Group] = {}
    alone: list[int] = []
    for i, call in enumerate(calls):
        if is_dtensor(call.x) or call.x.numel() == 0:
            alone.append(i)
            continue
        key = (call.impl.NAME, call.x.device, call.x.dtype, call.block_shape, call.zeros_per_block,
               call.scale is not None)
        group = groups.setdefault(key, _Group(call.impl, call.block_shape, call.zeros_per_block, []))
        group.indices.append(i)
    return list(groups.values()), alone


def _run_group(group: _Group, calls: list[_MaskCall], norm: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The masks (2-D) and flags of one group, by the backend's ``block_mask_group``."""
    members = [calls[i] for i in group.indices]
    scales = [c.scale for c in members] if members[0].scale is not None else None
    masks, flags = group.impl.block_mask_group(
        [as_2d(c.x) for c in members], [c.k for c in members], group.block_shape, group.zeros_per_block, norm, scales)
    return masks, list(flags.unbind(0))


# ---------------------------------------------------------------- public
@torch.no_grad()
def foreach_block_mask_unchecked(
    tensors: Sequence[torch.Tensor],
    sparsity_levels: float | Sequence[float],
    block_shapes: Sequence[int] | Sequence[Sequence[int]] = (1, 4),
    zeros_per_block: int | Sequence[int | None] | None = None,
    norm: str = "L1",
    *,
    scales: torch.Tensor | Sequence[torch.Tensor | None] | None = None,
    backend: str = "auto",
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """As ``foreach_block_mask``, without the host sync: returns the masks and, per tensor,
    the 0-dim bool flag set when it held NaN or infinity (its mask is then meaningless), for
    callers that check them with their own one sync. Scales are value-checked here (one host
    sync for all scales not seen unchanged before)."""
    calls = _checked_calls(tensors, sparsity_levels, block_shapes, zeros_per_block, norm, scales, backend)
    masks: list[torch.Tensor | None] = [None] * len(calls)
    flags: list[torch.Tensor | None] = [None] * len(calls)
    groups, alone = _groups(calls)
    for i in alone:
        masks[i], flags[i] = _masks(calls[i])
    for group in groups:
        group_masks, group_flags = _run_group(group, calls, norm)
        for i, mask, flag in zip(group.indices, group_masks, group_flags, strict=True):
            shape = calls[i].x.shape
            masks[i], flags[i] = mask if mask.shape == shape else mask.reshape(shape), flag
    return masks, flags  # type: ignore[return-value]


@torch.no_grad()
def foreach_block_mask(
    tensors: Sequence[torch.Tensor],
    sparsity_levels: float | Sequence[float],
    block_shapes: Sequence[int] | Sequence[Sequence[int]] = (1, 4),
    zeros_per_block: int | Sequence[int | None] | None = None,
    norm: str = "L1",
    *,
    scales: torch.Tensor | Sequence[torch.Tensor | None] | None = None,
    backend: str = "auto",
) -> list[torch.Tensor]:
    """``[block_mask(x, ...) for x in tensors]``, the same masks, in one call.

    ``sparsity_levels``, ``block_shapes``, ``zeros_per_block`` and ``scales`` are each one
    value for every tensor or a sequence with one entry per tensor (a block shape is one
    value when its first element is an int). Every argument of every tensor is checked
    before any work; errors name the argument and the tensor (``tensors[3]``). NaN or
    infinity in any tensor raises ``ValueError`` naming each such tensor, after one host sync
    for all of them. An empty ``tensors`` gives ``[]``.
    """
    masks, flags = foreach_block_mask_unchecked(tensors, sparsity_levels, block_shapes, zeros_per_block, norm,
                                                scales=scales, backend=backend)
    raise_if_any_nonfinite(flags)
    return masks


def raise_if_any_nonfinite(flags: Sequence[torch.Tensor], names: Sequence[str] | None = None) -> None:
    """Raise ``ValueError`` naming each tensor whose flag (from
    ``foreach_block_mask_unchecked``) is set; one host sync for all of them. ``names``: how to
    call the tensors (default ``tensors[i]``)."""
    if not flags:
        return
    device = flags[0].device
    bad = [i for i, b in enumerate(torch.stack([f.to(device) for f in flags]).tolist()) if b]  # the one sync
    if bad:
        listed = ", ".join(names[i] if names is not None else f"tensors[{i}]" for i in bad)
        raise ValueError(f"{listed} hold NaN or infinite values; their block scores would be meaningless")
