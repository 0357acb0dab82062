"""The rules the kernel API checks its arguments by, stated once and public, so that
``blocksparsity`` (the sparsifiers, callbacks and checkpoint tools) checks by the same
rules and never reaches into private modules: the backend and norm names, the dtypes
that are scored, the block shape and ``zeros_per_block`` ranges, the 2-D view of N-D
data and the clipping of blocks to it, and the DTensor test.

Every check raises ``TypeError``/``ValueError`` naming the argument, and returns the
value as the kernels use it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

from blocksparsity.kernels._common import BACKENDS, block_grid, is_dtensor, local_tensor, shape_2d

__all__ = [
    "BACKENDS",
    "FLOAT64_REFUSED",
    "FLOAT_DTYPES",
    "NORMS",
    "SCORED_DTYPES",
    "block_grid",
    "check_backend",
    "check_block_shape",
    "check_bool",
    "check_data",
    "check_norm",
    "check_not_float64",
    "check_scale",
    "check_sparsity_level",
    "check_writable",
    "check_zeros_per_block",
    "clip_block",
    "dtype_name",
    "is_dtensor",
    "local_tensor",
    "shape_2d",
]

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# Dtypes the scoring functions take. float64 is refused: scores are float32, and torch.ao ranks
# float64 data in float64, so float32 scores would pick other blocks on close values, turn
# finite values beyond float32's range into inf and values near 1e-300 into 0.
SCORED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
NORMS = ("L1", "L2")
FLOAT64_REFUSED = (
    "block scores are float32, and torch.ao ranks float64 data in float64, so float32 scores could choose other blocks"
)


def check_data(x: object, name: str = "x", *, scored: bool = True) -> torch.Tensor:
    """``x`` must be a dense (strided) tensor with data, of at least 1 dim, in a dtype the
    operation takes: float16/bfloat16/float32 where it is scored, float64 too where not."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    if x.layout != torch.strided:
        raise TypeError(f"{name} must be a dense (strided) tensor; got layout {x.layout} (call .to_dense() first)")
    if x.is_meta:
        raise ValueError(f"{name} is a meta tensor: it has a shape but no data to score or mask")
    if scored:
        check_not_float64(x.dtype, name, f"cast it to float32 first (e.g. {name}.float())")
    if x.dtype not in (SCORED_DTYPES if scored else FLOAT_DTYPES):
        allowed = "float16, bfloat16 or float32" if scored else "float16, bfloat16, float32 or float64"
        raise TypeError(f"{name} must be {allowed}; got {x.dtype}")
    if x.dim() < 1:
        raise ValueError(f"{name} must have at least 1 dimension; got a 0-dim tensor")
    return x


def check_writable(x: torch.Tensor, name: str = "x") -> None:
    """In-place writes need every element of ``x`` at its own memory location: an expanded
    (stride-0) or otherwise self-overlapping tensor would be written through several
    elements at once and end up as something other than ``x * mask``."""
    if may_overlap(local_tensor(x)):
        raise ValueError(
            f"{name} has overlapping memory (e.g. from expand(); strides {tuple(x.stride())}), so it cannot be "
            f"written in place; pass inplace=False, or {name}.clone() first"
        )


def may_overlap(t: torch.Tensor) -> bool:
    """Could two elements of ``t`` share a memory location? Exact for stride-0 dims; otherwise
    True unless the strides, sorted, each step over everything the smaller ones reach."""
    dims = sorted((abs(st), sz) for st, sz in zip(t.stride(), t.shape, strict=True) if sz > 1)
    reach = 0  # the largest offset the dims so far reach
    for stride, size in dims:
        if stride <= reach:
            return True
        reach += stride * (size - 1)
    return False


def check_block_shape(block_shape: object) -> tuple[int, int]:
    # The common case, a tuple of two positive ints, without the ABC checks below.
    if type(block_shape) is tuple and len(block_shape) == 2 and all(type(b) is int and b >= 1 for b in block_shape):
        return block_shape  # type: ignore[return-value]
    if (
        not isinstance(block_shape, Sequence)
        or isinstance(block_shape, str | bytes | bytearray)
        or len(block_shape) != 2
        or not all(isinstance(b, numbers.Integral) and not isinstance(b, bool) for b in block_shape)
    ):
        raise TypeError(f"block_shape must be a pair of ints (rows, cols); got {block_shape!r}")
    bh, bw = (int(b) for b in block_shape)
    if bh < 1 or bw < 1:
        raise ValueError(f"block_shape must be positive; got {block_shape!r}")
    return bh, bw


def check_zeros_per_block(zeros_per_block: object, block_shape: tuple[int, int]) -> int:
    size = block_shape[0] * block_shape[1]
    if zeros_per_block is None:
        return size
    if not isinstance(zeros_per_block, numbers.Integral) or isinstance(zeros_per_block, bool):
        raise TypeError(f"zeros_per_block must be an int or None; got {zeros_per_block!r}")
    if not 0 <= zeros_per_block <= size:
        raise ValueError(
            f"zeros_per_block must be between 0 and the block size {size} (block_shape {block_shape}); "
            f"got {zeros_per_block}"
        )
    return int(zeros_per_block)


def check_sparsity_level(sparsity_level: object) -> float:
    if not isinstance(sparsity_level, numbers.Real) or isinstance(sparsity_level, bool):
        raise TypeError(f"sparsity_level must be a real number; got {sparsity_level!r}")
    level = float(sparsity_level)
    if not math.isfinite(level) or not 0.0 <= level <= 1.0:
        raise ValueError(f"sparsity_level must be between 0 and 1; got {sparsity_level!r}")
    return level


def check_backend(backend: object) -> str:
    """``backend`` must be one of ``BACKENDS`` (whether it can run here is ``_dispatch``'s question)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}; got {backend!r}")
    return backend  # type: ignore[return-value]


def check_norm(norm: object) -> str:
    if norm not in NORMS:
        raise ValueError(f"norm must be 'L1' or 'L2'; got {norm!r}")
    return norm  # type: ignore[return-value]


def check_bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False; got {value!r}")
    return value


def clip_block(shape2d: tuple[int, int], block_shape: tuple[int, int]) -> tuple[int, int]:
    """The block shape cut to the tensor's 2-D shape: a block larger than the tensor is one
    partial block, holding the same elements in the same order, so scores, ranks and masks
    are unchanged, and no backend pays (in work, memory or kernel size) for the absent part."""
    return min(block_shape[0], max(1, shape2d[0])), min(block_shape[1], max(1, shape2d[1]))


def dtype_name(dtype: torch.dtype) -> str:
    """A dtype as messages and records write it: ``"float32"``, not ``"torch.float32"``."""
    return str(dtype).removeprefix("torch.")


def check_not_float64(dtype: torch.dtype, name: str, how_to_cast: str) -> None:
    """Data that is scored must not be float64 (see ``FLOAT64_REFUSED``)."""
    if dtype == torch.float64:
        raise TypeError(f"{name} is float64; {how_to_cast}: {FLOAT64_REFUSED}")


_FLOAT32_MAX = torch.finfo(torch.float32).max


def check_scale(scale: object, x: torch.Tensor) -> torch.Tensor | None:
    """``scale`` (optional) weighs each element's magnitude in the scores and in-block ranks.

    It must be a dense float tensor (float16/bfloat16/float32/float64; the kernels use
    ``float32(scale)``) on ``x``'s device, broadcastable to the 2-D view ``(H, W)`` of ``x``:
    ``(1, W)`` or ``(W,)`` per column, ``(H, 1)`` per row, ``(H, W)`` per element, or one
    value (``()``, ``(1,)``, ``(1, 1)``); every value finite, ``>= 0`` and within float32's
    range. Returns ``scale`` as a 2-D view broadcast (``expand``, no copy) to ``(H, W)``, or
    None. The value check reads one flag on the host (one sync), before any data is read.

    For a DTensor ``x`` (``blocksparsity.kernels._sharded.check_scale``): ``scale`` is a plain
    tensor of one of the forms above, the same on every rank (replicated), or a DTensor on
    ``x``'s mesh that is either ``Replicate()`` on every mesh dim (any form above) or of
    ``x``'s shape and placed like ``x``. Every rank of the sharded mesh dim learns whether any
    rank's scale was refused (one small all-gather, then the one sync) and raises, so that no
    rank goes on to the collectives alone. A DTensor ``scale`` with a plain ``x`` is refused."""
    if scale is None:
        return None
    if not isinstance(scale, torch.Tensor):
        raise TypeError(f"scale must be a torch.Tensor or None; got {type(scale).__name__}")
    if is_dtensor(x):
        from blocksparsity.kernels import _sharded  # torch.distributed only where DTensors exist

        return _sharded.check_scale(scale, x)
    if is_dtensor(scale):
        raise TypeError("scale is a DTensor but x is not; pass a plain scale with a plain x")
    s2 = scale_view(scale, shape_2d(x.shape), x.device)
    if bool(scale_values_bad(scale)):
        raise ValueError(SCALE_VALUES_MESSAGE)
    return s2


SCALE_VALUES_MESSAGE = "scale must be finite, >= 0 and within float32's range; it holds a negative, NaN or inf value"


def scale_view(scale: torch.Tensor, shape2d: tuple[int, int], device: torch.device) -> torch.Tensor:
    """``check_scale``'s checks of everything but the values (a plain ``scale``, no sync):
    returns ``scale`` as a 2-D view broadcast to ``shape2d``."""
    check_scale_tensor(scale)
    h, w = shape2d
    s2 = scale.reshape((1,) * (2 - scale.dim()) + tuple(scale.shape)) if scale.dim() <= 2 else None
    if s2 is None or s2.shape[0] not in (1, h) or s2.shape[1] not in (1, w):
        raise ValueError(
            f"scale must broadcast to the 2-D view {(h, w)} of x: (1, {w}) per column, ({h}, 1) per row, "
            f"({h}, {w}) or one value; got shape {tuple(scale.shape)}"
        )
    if scale.device != device:
        raise ValueError(f"scale must be on x's device {device}; got {scale.device}")
    return s2.expand(h, w)


def check_scale_tensor(scale: torch.Tensor, device: torch.device | None = None) -> None:
    """A scale must be a dense float tensor with data (and, where ``device`` is given, on it)."""
    if scale.layout != torch.strided or scale.is_meta:
        raise TypeError(f"scale must be a dense tensor with data; got layout {scale.layout}, device {scale.device}")
    if scale.dtype not in FLOAT_DTYPES:
        raise TypeError(f"scale must be float16, bfloat16, float32 or float64; got {dtype_name(scale.dtype)}")
    if device is not None and scale.device != device:
        raise ValueError(f"scale must be on x's device {device}; got {scale.device}")


def scale_values_bad(scale: torch.Tensor) -> torch.Tensor:
    """0-dim bool (no sync): does ``scale`` (plain) hold a negative, NaN, inf or beyond-float32 value?"""
    if not scale.numel():
        return torch.zeros((), dtype=torch.bool, device=scale.device)
    return ~((scale >= 0) & (scale <= _FLOAT32_MAX)).all()
