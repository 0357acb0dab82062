"""The compact sparse checkpoint format, version 1: encoding and decoding, no file I/O.

A checkpoint is one ``torch.save`` file holding only tensors, strings, numbers, lists and
dicts, so it loads with ``torch.load(..., weights_only=True)``::

    {"format": "blocksparse.sparse_checkpoint", "version": 1,
     "tensors": {name: entry, ...},     # the state dict, in its order
     "extra": {...}}                    # other checkpoint entries (Lightning's hyper_parameters, ...), as loaded

Every float16/bfloat16/float32/float64 tensor is stored in the smallest of three encodings
(exact byte counts compared, plus a per-tensor-file allowance); everything else as it is.
An element is *stored* unless it equals zero (NaN is stored); ``values`` are the stored
elements in row-major order. Zeros keep their sign: masking by multiplication (``x * mask``,
as the kernels and ``torch.ao`` do) leaves ``-0.0`` where a negative weight was pruned, so
when a tensor holds any ``-0.0``, its entry also has ``neg_zero_bits``: one bit per zero
element (row-major), 1 = ``-0.0``. Decoding thus gives back the same bits, always.

``{"kind": "dense", "tensor": t}``
    the tensor as it is (non-float tensors, and float tensors with too few zeros to gain).
``{"kind": "bitmap", "shape": [...], "values": v, "bits": b}``
    ``b``: uint8, one bit per element (row-major, least significant bit first), 1 = stored.
``{"kind": "blocks", "shape": [...], "block": [bh, bw], "values": v, "block_bits": o, "partial_bits": p, "elem_bits": e}``
    the tensor seen as 2-D, ``(shape[0], rest)`` (1-D as ``(1, N)``), padded with ``+0.0`` to
    whole ``bh x bw`` blocks. ``o``: one bit per block (row-major) — the block holds a stored
    element; ``p``: one bit per such occupied block — only some of its elements are stored;
    ``e``: for each such partial block in order, one bit per element of the block (row-major
    inside the block). Fully stored blocks need no element bits and empty blocks need
    nothing, so whole-block sparsity costs 1 bit per block plus 1 per kept block.
``{"kind": "alias", "of": name}``
    the same tensor (same storage, offset, shape, strides) as an earlier entry (tied weights).
``{"kind": "object", "value": v}``
    a non-tensor state-dict value, as loaded.

Byte counts of the payload, n elements of s bytes, half of them zero: dense ``n*s``;
50% (1, 4)-block sparse: ``n*s/2 + n/32 + n/64``; 2:4: ``n*s/2 + n/8`` (bitmap); plus
``n/16`` where the zeros are signed.
Decoding allocates the dense size a file declares; no code runs while decoding.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from sparsity.checkpoint._bits import pack_bits, packed_size, unpack_bits

FORMAT_NAME = "blocksparse.sparse_checkpoint"
FORMAT_VERSION = 1
# Rough cost of one more tensor in a torch.save zip (local + central headers, 64-byte alignment).
TENSOR_FILE_BYTES = 160
KINDS = ("dense", "bitmap", "blocks", "alias", "object")
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)  # encoded sparsely; other dtypes as they are
INT_DTYPES = (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


class CheckpointError(ValueError):
    """A file that is not a readable checkpoint of the expected kind, or is corrupt."""


@dataclass(frozen=True)
class TensorRecord:
    """How one state-dict entry was stored: ``dense_bytes`` is its raw size, ``stored_bytes``
    the payload written for it (0 for aliases), ``zeros`` the fraction of elements equal to 0."""

    name: str
    kind: str
    shape: tuple[int, ...]
    dtype: str
    zeros: float
    dense_bytes: int
    stored_bytes: int


def as_2d_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """The 2-D view the kernels use: 1-D as (1, N), N-D as (shape[0], rest)."""
    if len(shape) == 1:
        return 1, shape[0]
    return shape[0], math.prod(shape[1:])


def _block_view(keep2d: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    """(n_blocks, bh*bw) bool: each block's elements, blocks row-major, zero-padded at the edges."""
    (h, w), (bh, bw) = keep2d.shape, block
    nbh, nbw = -(-h // bh), -(-w // bw)
    padded = torch.zeros(nbh * bh, nbw * bw, dtype=torch.bool, device=keep2d.device)
    padded[:h, :w] = keep2d
    return padded.view(nbh, bh, nbw, bw).permute(0, 2, 1, 3).reshape(nbh * nbw, bh * bw)


def _unblock(blocks: torch.Tensor, shape2d: tuple[int, int], block: tuple[int, int]) -> torch.Tensor:
    (h, w), (bh, bw) = shape2d, block
    nbh, nbw = -(-h // bh), -(-w // bw)
    return blocks.view(nbh, nbw, bh, bw).permute(0, 2, 1, 3).reshape(nbh * bh, nbw * bw)[:h, :w]


def _cpu(t: torch.Tensor) -> torch.Tensor:
    """A CPU tensor that owns exactly its elements (torch.save writes whole storages)."""
    t = t.detach().to("cpu").contiguous()
    return t.clone() if t.untyped_storage().nbytes() != t.nbytes else t


def encode_tensor(t: torch.Tensor, block: tuple[int, int], kind: str | None = None) -> tuple[dict[str, Any], int, float]:
    """Encode one tensor in its smallest encoding (or in ``kind``, for tests of float tensors):
    ``(entry, stored_bytes, zero_fraction)``."""
    t = t.detach()
    n = t.numel()
    if t.dtype not in FLOAT_DTYPES or t.dim() == 0 or n == 0:
        zeros = float((t == 0).sum()) / n if n and t.dtype in FLOAT_DTYPES + INT_DTYPES else 0.0
        return {"kind": "dense", "tensor": _cpu(t)}, t.nbytes, zeros
    shape2d = as_2d_shape(tuple(t.shape))
    x2 = t.reshape(shape2d)
    keep = x2 != 0  # NaN is stored too
    neg_zero = (~keep & torch.signbit(x2)).reshape(-1)
    blocks = _block_view(keep, block)
    occupied = blocks.any(dim=1)
    partial = occupied & ~blocks.all(dim=1)
    counts = torch.stack([keep.sum(), occupied.sum(), partial.sum(), neg_zero.sum()]).tolist()
    n_keep, n_occupied, n_partial, n_neg_zero = (int(c) for c in counts)
    # Values, plus the signs of the zeros where any zero is -0.0.
    common = n_keep * t.element_size() + (packed_size(n - n_keep) + TENSOR_FILE_BYTES if n_neg_zero else 0)
    sizes = {
        "dense": t.nbytes,
        "bitmap": common + packed_size(n) + TENSOR_FILE_BYTES,
        "blocks": common + packed_size(blocks.shape[0]) + packed_size(n_occupied)
        + packed_size(n_partial * blocks.shape[1]) + 3 * TENSOR_FILE_BYTES,
    }
    kind = kind or min(sizes, key=lambda k: (sizes[k], KINDS.index(k)))
    zeros = (n - n_keep) / n
    if kind == "dense":
        return {"kind": "dense", "tensor": _cpu(t)}, t.nbytes, zeros
    entry: dict[str, Any] = {"kind": kind, "shape": list(t.shape), "values": _cpu(x2[keep])}
    if kind == "bitmap":
        entry["bits"] = _cpu(pack_bits(keep.reshape(-1)))
    else:
        entry["block"] = list(block)
        entry["block_bits"] = _cpu(pack_bits(occupied))
        entry["partial_bits"] = _cpu(pack_bits(partial[occupied]))
        entry["elem_bits"] = _cpu(pack_bits(blocks[partial].reshape(-1)))
    if n_neg_zero:
        entry["neg_zero_bits"] = _cpu(pack_bits(neg_zero[~keep.reshape(-1)]))
    stored = sum(v.nbytes for v in entry.values() if isinstance(v, torch.Tensor))
    return entry, stored, zeros


def _alias_key(t: torch.Tensor) -> tuple:
    return (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)


def encode_state_dict(
    state_dict: Mapping[str, Any],
    block: tuple[int, int],
    wrap: Callable[[Iterable], Iterable] = lambda it: it,
) -> tuple[dict[str, dict[str, Any]], list[TensorRecord]]:
    """Encode every entry of ``state_dict``; ``wrap`` may wrap the item iterator (a progress bar)."""
    entries: dict[str, dict[str, Any]] = {}
    records: list[TensorRecord] = []
    seen: dict[tuple, str] = {}
    for name, value in wrap(state_dict.items()):
        if not isinstance(name, str):
            raise TypeError(f"state_dict keys must be strings; got {name!r}")
        if not isinstance(value, torch.Tensor):
            entries[name] = {"kind": "object", "value": value}
            continue
        key = _alias_key(value) if value.numel() else None
        if key in seen:
            entries[name] = {"kind": "alias", "of": seen[key]}
            records.append(TensorRecord(name, "alias", tuple(value.shape), _dtype(value.dtype), float("nan"), value.nbytes, 0))
            continue
        if key is not None:
            seen[key] = name
        entry, stored, zeros = encode_tensor(value, block)
        entries[name] = entry
        records.append(TensorRecord(name, entry["kind"], tuple(value.shape), _dtype(value.dtype), zeros, value.nbytes, stored))
    return entries, records


def _dtype(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# ---------------------------------------------------------------- decoding (untrusted input)
def _need(cond: bool, name: str, what: str) -> None:
    if not cond:
        raise CheckpointError(f"corrupt sparse checkpoint: tensor {name!r}: {what}")


def _bits_field(entry: Mapping[str, Any], field: str, count: int, name: str) -> torch.Tensor:
    bits = entry.get(field)
    _need(isinstance(bits, torch.Tensor) and bits.dtype == torch.uint8 and bits.dim() == 1, name, f"{field} must be 1-D uint8")
    _need(bits.numel() == packed_size(count), name, f"{field} holds {bits.numel()} bytes, expected {packed_size(count)}")
    return unpack_bits(bits, count)


def _shape_field(entry: Mapping[str, Any], name: str) -> tuple[int, ...]:
    shape = entry.get("shape")
    ok = isinstance(shape, list | tuple) and len(shape) >= 1 and all(type(s) is int and s >= 0 for s in shape)
    _need(ok, name, f"shape must be a list of sizes; got {shape!r}")
    return tuple(shape)


def decode_entry(name: str, entry: Any, decoded: Mapping[str, Any]) -> Any:
    """Decode one entry (``decoded``: the entries before it, for aliases), checking every field."""
    _need(isinstance(entry, dict), name, "entry must be a dict")
    kind = entry.get("kind")
    if kind == "object":
        return entry.get("value")
    if kind == "alias":
        _need(isinstance(entry.get("of"), str) and isinstance(decoded.get(entry["of"]), torch.Tensor), name, "alias of nothing")
        return decoded[entry["of"]]
    if kind == "dense":
        _need(isinstance(entry.get("tensor"), torch.Tensor), name, "dense entry without a tensor")
        return entry["tensor"]
    _need(kind in ("bitmap", "blocks"), name, f"unknown kind {kind!r}")
    shape = _shape_field(entry, name)
    values = entry.get("values")
    ok = isinstance(values, torch.Tensor) and values.dtype in FLOAT_DTYPES and values.dim() == 1
    _need(ok, name, "values must be a 1-D float16, bfloat16, float32 or float64 tensor")
    n = math.prod(shape)
    if kind == "bitmap":
        keep = _bits_field(entry, "bits", n, name)
    else:
        block = entry.get("block")
        ok = isinstance(block, list | tuple) and len(block) == 2 and all(type(b) is int and b >= 1 for b in block)
        _need(ok, name, f"block must be two positive ints; got {block!r}")
        shape2d = as_2d_shape(shape)
        n_blocks = -(-shape2d[0] // block[0]) * -(-shape2d[1] // block[1])
        occupied = _bits_field(entry, "block_bits", n_blocks, name)
        partial = _bits_field(entry, "partial_bits", int(occupied.sum()), name)
        size = block[0] * block[1]
        elems = _bits_field(entry, "elem_bits", int(partial.sum()) * size, name)
        blocks = torch.zeros(n_blocks, size, dtype=torch.bool)
        blocks[occupied] = True
        blocks[occupied.nonzero().reshape(-1)[partial]] = elems.reshape(-1, size)
        keep = _unblock(blocks, shape2d, tuple(block)).reshape(-1)
    n_keep = int(keep.sum())
    _need(n_keep == values.numel(), name, f"{values.numel()} values for {n_keep} stored elements")
    out = torch.zeros(n, dtype=values.dtype)
    out[keep] = values
    if "neg_zero_bits" in entry:
        neg_zero = _bits_field(entry, "neg_zero_bits", n - n_keep, name)
        out[(~keep).nonzero().reshape(-1)[neg_zero]] = -0.0
    return out.reshape(shape)


def make_payload(entries: dict[str, dict[str, Any]], extra: Mapping[str, Any] | None) -> dict[str, Any]:
    return {"format": FORMAT_NAME, "version": FORMAT_VERSION, "tensors": entries, "extra": dict(extra or {})}


def is_sparse_payload(obj: Any) -> bool:
    """Does a loaded object claim to be this format (a dict with our ``format`` header)?"""
    return isinstance(obj, dict) and obj.get("format") == FORMAT_NAME


def decode_payload(obj: Any, source: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(state_dict, extra)`` from a loaded payload; ``CheckpointError`` for anything else."""
    if not is_sparse_payload(obj):
        raise CheckpointError(
            f"{source} is not a blocksparse sparse checkpoint (no {FORMAT_NAME!r} format header); "
            "a plain state dict or Lightning checkpoint loads with torch.load"
        )
    version = obj.get("version")
    if type(version) is not int or not 1 <= version <= FORMAT_VERSION:
        raise CheckpointError(f"{source}: format version {version!r} is not supported (this reader knows 1 to {FORMAT_VERSION})")
    tensors, extra = obj.get("tensors"), obj.get("extra", {})
    if not isinstance(tensors, dict) or not isinstance(extra, dict):
        raise CheckpointError(f"corrupt sparse checkpoint {source}: 'tensors' and 'extra' must be dicts")
    state_dict: dict[str, Any] = {}
    for name, entry in tensors.items():
        state_dict[name] = decode_entry(name, entry, state_dict)
    return state_dict, extra
