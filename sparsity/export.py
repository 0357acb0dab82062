"""N:M validation and export of 2:4-sparse ``nn.Linear`` weights to semi-structured tensors.

Zeros in a dense weight make nothing faster. Sparse tensor cores (NVIDIA Ampere, sm80, and
newer) do run 2:4 weights (at most 2 nonzeros in every 4 consecutive elements of a row)
faster, through ``torch.sparse.to_sparse_semi_structured``. ``to_semi_structured`` swaps a
model's qualifying ``nn.Linear`` weights for such tensors and leaves every other layer dense
with a logged reason. It never prunes: a weight that is not already exactly 2:4 stays dense
("not 2:4"). Make weights 2:4 first, e.g. with ``DataNormSparsifier`` (or
``blocksparsity.kernels.sparsify``) with ``(1, 4)`` blocks, ``zeros_per_block=2`` and ``sparsity_level=1.0``,
then squash the mask into the weights.

A weight qualifies when it is 2:4 along its rows (the input dimension of ``(out, in)``), lies
on a CUDA device of compute capability 8.0 or newer, is float16, bfloat16 or int8, and both
its dimensions are multiples of (and at least) the backend's minimum sizes, read from
``torch.sparse``'s own constraint tables: (16, 16) for fp16/bf16 and (32, 32) for int8 with
cuSPARSELt; (32, 64) for fp16/bf16 and (16, 128) for int8 with CUTLASS, which torch uses
where cuSPARSELt is absent (or ``SparseSemiStructuredTensor._FORCE_CUTLASS`` is set).

Hugging Face's GPT-2 family uses ``transformers.pytorch_utils.Conv1D``: a linear layer whose
weight is stored transposed, ``(in, out)``, computing ``x @ weight + bias``. Its input
dimension runs down the stored weight's columns, so it is 2:4 for sparse tensor cores only
when every 4 consecutive elements of a *column* hold at most 2 nonzeros: prune it with
``sparse_block_shape=(4, 1)`` and ``zeros_per_block=2``. Such a layer is exported as an
``nn.Linear`` (same input, output and bias) holding the transposed semi-structured weight;
one pruned along its rows (``(1, 4)`` blocks, the output dimension) is refused by name.

The exported model is for inference: the new weights do not require grad.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from blocksparsity.kernels.validation import dtype_name

__all__ = ["ExportRecord", "format_export_report", "is_n_m_sparse", "is_transposed_linear", "to_semi_structured"]

logger = logging.getLogger(__name__)

# dtypes the issue asks for: the tensor-core 2:4 formats (float32 would run as TF32 on CUTLASS only).
EXPORT_DTYPES = (torch.float16, torch.bfloat16, torch.int8)
MIN_CAPABILITY = (8, 0)


# ---------------------------------------------------------------- N:M validation
def _check_n_m(n: object, m: object) -> tuple[int, int]:
    for name, value in (("n", n), ("m", m)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool):
            raise TypeError(f"{name} must be an int; got {value!r}")
    if m < 1:
        raise ValueError(f"m must be at least 1; got {m}")
    if not 0 <= n <= m:
        raise ValueError(f"n must be between 0 and m={m}; got {n}")
    return int(n), int(m)


def n_m_violation(tensor: torch.Tensor, n: int = 2, m: int = 4) -> str | None:
    """Why ``tensor`` is not N:M sparse along its last dimension, or None when it is.

    One host sync. ``-0.0`` counts as zero, NaN as nonzero.
    """
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"tensor must be a torch.Tensor; got {type(tensor).__name__}")
    if tensor.dim() < 1:
        raise ValueError("tensor must have at least 1 dimension; got a 0-dim tensor")
    n, m = _check_n_m(n, m)
    width = tensor.shape[-1]
    if width % m:
        return f"last dimension {width} is not a multiple of {m}"
    if tensor.numel() == 0:
        return None
    nonzeros = (tensor.reshape(-1, m) != 0).sum(dim=1, dtype=torch.int32)
    bad = int((nonzeros > n).sum())  # the one sync
    if bad:
        return f"{bad} of {nonzeros.numel()} groups of {m} hold more than {n} nonzeros"
    return None


def is_n_m_sparse(tensor: torch.Tensor, n: int = 2, m: int = 4) -> bool:
    """True when every group of ``m`` consecutive elements along the last dimension holds at
    most ``n`` nonzero elements (for a weight ``(out, in)``: along each row, the input
    dimension, which is how sparse tensor cores read 2:4).

    A last dimension that is not a multiple of ``m`` is not N:M (False). ``-0.0`` counts as
    zero and NaN as nonzero; bool and integer tensors (masks) work too, True/nonzero meaning
    kept. Bad arguments raise ``TypeError``/``ValueError`` naming them.
    """
    return n_m_violation(tensor, n, m) is None


# ---------------------------------------------------------------- export
@dataclass(frozen=True)
class ExportRecord:
    """What ``to_semi_structured`` did with one ``nn.Linear`` (or GPT-2 ``Conv1D``) layer.

    ``shape`` is the weight as stored (``(in, out)`` for a ``Conv1D``).

    ``is_2_4`` is whether its weight (or given mask) is 2:4; ``reason`` says why the layer
    stayed dense, or how it was exported.
    """

    name: str
    exported: bool
    reason: str
    shape: tuple[int, ...]
    dtype: str
    device: str
    is_2_4: bool


def _backend() -> tuple[str, type]:
    """The semi-structured class ``torch.sparse.to_sparse_semi_structured`` would use here."""
    from torch.sparse import SparseSemiStructuredTensor, SparseSemiStructuredTensorCUSPARSELT, SparseSemiStructuredTensorCUTLASS

    if SparseSemiStructuredTensor._FORCE_CUTLASS or not torch.backends.cusparselt.is_available():
        return "cutlass", SparseSemiStructuredTensorCUTLASS
    return "cusparselt", SparseSemiStructuredTensorCUSPARSELT


def hardware_reason(
    shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, capability: tuple[int, int] | None, backend: str
) -> str | None:
    """Why a 2:4 weight of this shape/dtype/device cannot become semi-structured with
    ``backend`` ("cusparselt" or "cutlass") on a device of compute ``capability``, or None."""
    if device.type != "cuda":
        return f"device {device.type}: semi-structured sparsity needs a CUDA GPU (compute capability 8.0+)"
    if capability is None or tuple(capability) < MIN_CAPABILITY:
        return f"compute capability {capability} < 8.0: no sparse tensor cores"
    if dtype not in EXPORT_DTYPES:
        return f"dtype {dtype_name(dtype)} not supported (float16, bfloat16 or int8)"
    from torch.sparse import SparseSemiStructuredTensorCUSPARSELT, SparseSemiStructuredTensorCUTLASS

    cls = SparseSemiStructuredTensorCUSPARSELT if backend == "cusparselt" else SparseSemiStructuredTensorCUTLASS
    limits = cls._DTYPE_SHAPE_CONSTRAINTS.get(dtype)
    if limits is None:
        return f"dtype {dtype_name(dtype)} not supported by {backend}"
    rows, cols = limits.sparse_min_rows, limits.sparse_min_cols
    out_f, in_f = shape
    if out_f < rows or out_f % rows or in_f < cols or in_f % cols:
        return f"shape {tuple(shape)} not supported by {backend}: both sizes must be multiples of (and at least) ({rows}, {cols})"
    return None


def _capability(device: torch.device) -> tuple[int, int] | None:
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_capability(device)


def _mask_for(masks: Mapping[str, torch.Tensor] | None, name: str) -> torch.Tensor | None:
    if masks is None:
        return None
    key = f"{name}.weight" if name else "weight"
    return masks.get(key, masks.get(name))


def is_transposed_linear(layer: nn.Module) -> bool:
    """Is ``layer`` a Hugging Face ``Conv1D`` (GPT-2's linear layer, weight stored ``(in, out)``)?

    Recognised by its class name and its ``nx``/``nf`` sizes, so transformers need not be installed."""
    weight = getattr(layer, "weight", None)
    return (
        type(layer).__name__ == "Conv1D"
        and isinstance(weight, torch.Tensor)
        and weight.dim() == 2
        and tuple(weight.shape) == (getattr(layer, "nx", None), getattr(layer, "nf", None))
    )


def _conv1d_reason(weight: torch.Tensor, mask: torch.Tensor | None) -> str | None:
    """Why a ``Conv1D`` weight ``(in, out)`` is not 2:4 along its input dimension, or None."""
    why = _mask_shape_reason(weight, mask)
    if why is not None:
        return why
    why = _n_m_reason(weight.t(), None if mask is None else mask.t())
    if why is None:
        return None
    if mask is None and n_m_violation(weight, 2, 4) is None:
        why = "not 2:4: it is 2:4 along its rows, the output dimension, which sparse tensor cores cannot use"
    return (
        f"{why} (Conv1D stores its weight as (in, out): 2:4 groups must run down its columns; "
        "prune it with sparse_block_shape=(4, 1), zeros_per_block=2)"
    )


def _mask_shape_reason(weight: torch.Tensor, mask: object) -> str | None:
    """Why ``mask`` cannot be ``weight``'s mask (not a tensor of its shape), or None."""
    if mask is None or (isinstance(mask, torch.Tensor) and mask.shape == weight.shape):
        return None
    shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
    return f"not 2:4: mask must have the weight's shape {tuple(weight.shape)}; got {shape}"


def _n_m_reason(weight: torch.Tensor, mask: torch.Tensor | None) -> str | None:
    """Why ``weight`` (checked against ``mask`` when one is given) is not 2:4, or None."""
    if mask is None:
        why = n_m_violation(weight, 2, 4)
        return None if why is None else f"not 2:4: {why}"
    why = _mask_shape_reason(weight, mask)
    if why is not None:
        return why
    keep = mask.to(weight.device) != 0
    why = n_m_violation(keep, 2, 4)
    if why is not None:
        return f"not 2:4: mask: {why}"
    stray = int(((weight != 0) & ~keep).sum())
    if stray:
        return f"not 2:4: {stray} weights are nonzero where the mask is False (apply or squash the mask first)"
    return None


def _export_one(
    name: str, layer: nn.Module, mask: torch.Tensor | None, backend: str, cls: type, dry_run: bool
) -> tuple[ExportRecord, nn.Linear | None]:
    """Validate one layer and, unless ``dry_run``, swap in its semi-structured weight; a
    ``Conv1D`` is not changed but comes back with the ``nn.Linear`` that replaces it."""
    from torch.nn.utils import parametrize
    from torch.sparse import SparseSemiStructuredTensor

    transposed = is_transposed_linear(layer)
    weight = layer.weight
    record = dict(name=name, shape=tuple(weight.shape), dtype=dtype_name(weight.dtype), device=str(weight.device))
    if isinstance(weight, SparseSemiStructuredTensor):
        return ExportRecord(**record, exported=False, reason="already semi-structured", is_2_4=True), None
    if parametrize.is_parametrized(layer, "weight"):
        return ExportRecord(**record, exported=False, reason="weight is parametrized: squash the mask first", is_2_4=False), None
    data = weight.detach()
    why = _conv1d_reason(data, mask) if transposed else _n_m_reason(data, mask)
    if why is not None:
        return ExportRecord(**record, exported=False, reason=why, is_2_4=False), None
    linear_weight = data.t() if transposed else data  # (out, in), as F.linear reads it
    why = hardware_reason(tuple(linear_weight.shape), data.dtype, data.device, _capability(data.device), backend)
    if why is None and transposed and not name:
        why = "the module passed in is itself a Conv1D, which cannot be replaced in place: pass its parent module"
    if why is not None:
        return ExportRecord(**record, exported=False, reason=why, is_2_4=True), None
    if dry_run:
        return ExportRecord(**record, exported=False, reason=f"qualifies ({backend}); dry run", is_2_4=True), None
    try:
        sparse = cls.from_dense(linear_weight.contiguous())
    except (RuntimeError, ValueError, NotImplementedError) as err:
        return ExportRecord(**record, exported=False, reason=f"{backend} refused it: {err}", is_2_4=True), None
    if transposed:
        reason = f"exported ({backend}) as nn.Linear, weight transposed"
        return ExportRecord(**record, exported=True, reason=reason, is_2_4=True), _as_linear(layer, sparse)
    layer.weight = nn.Parameter(sparse, requires_grad=False)
    return ExportRecord(**record, exported=True, reason=f"exported ({backend})", is_2_4=True), None


def _as_linear(conv1d: nn.Module, weight: torch.Tensor) -> nn.Linear:
    """An ``nn.Linear`` computing what ``conv1d`` computes, holding ``weight`` (its transposed, semi-structured weight)."""
    bias = getattr(conv1d, "bias", None)
    linear = nn.Linear(conv1d.nx, conv1d.nf, bias=bias is not None, device="meta")
    linear.weight = nn.Parameter(weight, requires_grad=False)
    if bias is not None:
        linear.bias = nn.Parameter(bias.detach(), requires_grad=False)
    return linear


def _replace(module: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(module.get_submodule(parent_name), child, new)


def to_semi_structured(
    module: nn.Module, masks: Mapping[str, torch.Tensor] | None = None, *, dry_run: bool = False
) -> list[ExportRecord]:
    """Swap the weights of ``module``'s 2:4-sparse ``nn.Linear`` layers for semi-structured
    sparse tensors, in place, where device, dtype and shape qualify (see the module docstring).
    A Hugging Face ``Conv1D`` (GPT-2) that is 2:4 along its input dimension is replaced by an
    equivalent ``nn.Linear`` holding its transposed semi-structured weight.

    Args:
        module: the model; every ``nn.Linear`` and ``Conv1D`` in it (itself included) is considered.
        masks: optional keep-masks by layer name (``"fc1"``) or weight name (``"fc1.weight"``),
            e.g. a sparsifier's masks, in the shape of the stored weight. A layer with a mask
            qualifies only when the mask is 2:4 and the weight is zero wherever the mask is
            False; the weight is not modified. Without a mask, the weight itself must be 2:4.
        dry_run: validate and report, change nothing.

    Returns:
        One ``ExportRecord`` per ``nn.Linear`` or ``Conv1D`` layer, in ``named_modules`` order.
        Each record is logged (exported: INFO; 2:4 but left dense: WARNING; not 2:4: INFO). On
        a CPU nothing changes: every record says why.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module; got {type(module).__name__}")
    if masks is not None and not isinstance(masks, Mapping):
        raise TypeError(f"masks must be a mapping of names to tensors or None; got {type(masks).__name__}")
    if not isinstance(dry_run, bool):
        raise TypeError(f"dry_run must be True or False; got {dry_run!r}")
    backend, cls = _backend()
    report, replacements = [], []
    for name, layer in module.named_modules():
        if not (isinstance(layer, nn.Linear) or is_transposed_linear(layer)):
            continue
        record, linear = _export_one(name, layer, _mask_for(masks, name), backend, cls, dry_run)
        if linear is not None:
            replacements.append((name, linear))
        left_dense = record.is_2_4 and not record.exported and not dry_run and record.reason != "already semi-structured"
        level = logging.WARNING if left_dense else logging.INFO
        logger.log(level, "%s %s %s: %s", record.name or "<module>", record.shape, record.dtype, record.reason)
        report.append(record)
    for name, linear in replacements:  # after the walk: named_modules must not see the tree change under it
        _replace(module, name, linear)
    return report


def format_export_report(report: list[ExportRecord]) -> str:
    """A plain-text table of ``to_semi_structured``'s records."""
    rows = [("layer", "shape", "dtype", "device", "2:4", "exported", "reason")]
    for r in report:
        shape = "x".join(map(str, r.shape))
        yes_no = ("yes" if r.is_2_4 else "no", "yes" if r.exported else "no")
        rows.append((r.name or "<module>", shape, r.dtype, r.device, *yes_no, r.reason))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1] for row in rows]
    return "\n".join(lines)
