"""Post-training sparsification of a state dict, tensor by tensor, with ``blocksparsity.kernels.sparsify``.

Which tensors are pruned (the eligibility rule): floating-point tensors (float16, bfloat16,
float32; float64 is kept as it is, since the kernels score in float32 and refuse it) with
at least ``min_ndim`` dimensions (default 2: weight matrices,
embedding tables, conv kernels, but not biases or norm scales) and at least ``min_numel``
elements (default 1024), whose name matches one of the ``include`` glob patterns (default
all) and none of the ``exclude`` patterns. Everything else is kept as it is. Each tensor is
pruned on its own, as ``blocksparsity.kernels.sparsify`` defines (1-D as (1, N), N-D as (shape[0], rest)).
Pruned elements are ``+0.0`` (masking by multiplication would leave ``-0.0`` where a weight
was negative, and the sparse format would then spend a bit per zero on its sign).
"""

from __future__ import annotations

import fnmatch
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm import tqdm

from blocksparsity import kernels
from blocksparsity.kernels.validation import (
    FLOAT_DTYPES,
    check_block_shape,
    check_norm,
    check_sparsity_level,
    check_zeros_per_block,
    dtype_name,
)

__all__ = ["PruneRecord", "sparsify_state_dict"]


@dataclass(frozen=True)
class PruneRecord:
    """One state-dict tensor: whether it was pruned (``reason`` says why not), and the
    fraction of its elements equal to zero before and after."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    pruned: bool
    zeros_before: float
    zeros_after: float
    reason: str


def _int_at_least(value: object, name: str, low: int) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int; got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be at least {low}; got {value}")
    return int(value)


def _patterns(value: object, name: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence) or not all(isinstance(p, str) for p in value):
        raise TypeError(f"{name} must be a sequence of glob patterns (strings); got {value!r}")
    return tuple(value)


def _zeros(t: torch.Tensor) -> float:
    return float((t == 0).sum()) / t.numel() if t.numel() else 0.0


def _why_not(name: str, t: Any, min_ndim: int, min_numel: int, include: tuple[str, ...], exclude: tuple[str, ...]) -> str | None:
    if not isinstance(t, torch.Tensor):
        return "not a tensor"
    if t.dtype == torch.float64:
        return "dtype float64 (scores are float32: cast to float32 to prune it)"
    if t.dtype not in FLOAT_DTYPES:
        return f"dtype {dtype_name(t.dtype)}"
    if t.dim() < min_ndim:
        return f"{t.dim()}-D < min_ndim {min_ndim}"
    if t.numel() < min_numel:
        return f"{t.numel()} elements < min_numel {min_numel}"
    if not any(fnmatch.fnmatchcase(name, p) for p in include):
        return "not included"
    if any(fnmatch.fnmatchcase(name, p) for p in exclude):
        return "excluded"
    return None


def sparsify_state_dict(
    state_dict: Mapping[str, Any],
    sparsity_level: float,
    block_shape: Sequence[int] = (1, 4),
    zeros_per_block: int | None = None,
    norm: str = "L1",
    *,
    min_ndim: int = 2,
    min_numel: int = 1024,
    include: Sequence[str] = ("*",),
    exclude: Sequence[str] = (),
    backend: str = "auto",
    progress: bool = False,
) -> tuple[dict[str, Any], list[PruneRecord]]:
    """Prune the eligible tensors of ``state_dict`` (see the module docstring) by block norm.

    Returns a new state dict (pruned tensors are new; the others are the input's objects;
    tied tensors stay tied) and one ``PruneRecord`` per tensor. The input is not modified.
    A tensor holding NaN or infinity raises ``ValueError`` naming it.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping of names to tensors; got {type(state_dict).__name__}")
    level = check_sparsity_level(sparsity_level)
    block = check_block_shape(block_shape)
    check_zeros_per_block(zeros_per_block, block)
    check_norm(norm)
    min_ndim = _int_at_least(min_ndim, "min_ndim", 1)
    min_numel = _int_at_least(min_numel, "min_numel", 0)
    include, exclude = _patterns(include, "include"), _patterns(exclude, "exclude")

    plan = {name: _why_not(name, t, min_ndim, min_numel, include, exclude) for name, t in state_dict.items()}
    total = sum(t.nbytes for name, t in state_dict.items() if plan[name] is None)
    out: dict[str, Any] = {}
    records: list[PruneRecord] = []
    done: dict[tuple, torch.Tensor] = {}  # tied tensors: prune once
    with tqdm(total=total, desc="sparsify", unit="B", unit_scale=True, disable=not progress, leave=False) as bar:
        for name, t in state_dict.items():
            why = plan[name]
            if not isinstance(t, torch.Tensor):
                out[name] = t
                continue
            dtype = dtype_name(t.dtype)
            if why is not None:
                out[name] = t
                zeros = _zeros(t) if not t.is_complex() else 0.0
                records.append(PruneRecord(name, tuple(t.shape), dtype, False, zeros, zeros, why))
                continue
            key = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
            if key not in done:
                try:
                    sparse, mask = kernels.sparsify(t.detach(), level, block, zeros_per_block, norm, backend=backend)
                except ValueError as err:
                    raise ValueError(f"tensor {name!r}: {err}") from None
                done[key] = sparse.masked_fill_(~mask, 0.0)  # x * mask leaves -0.0 for negative x
                bar.update(t.nbytes)
            out[name] = done[key]
            records.append(PruneRecord(name, tuple(t.shape), dtype, True, _zeros(t), _zeros(out[name]), "pruned"))
    return out, records
