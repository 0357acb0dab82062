"""The compact sparse checkpoint format, version 2: encoding and decoding, no file I/O.

A checkpoint is one ``torch.save`` file holding only tensors, strings, numbers, lists and
dicts, so it loads with ``torch.load(..., weights_only=True)``::

    {"format": "blocksparse.sparse_checkpoint", "version": 2,
     "tensors": {name: entry, ...},     # the state dict, in its order
     "extra": {...},                    # other checkpoint entries (Lightning's hyper_parameters, ...), as loaded
     "extra_sha256": hex}               # checksum of "extra"

Version 2 adds integrity: every entry carries ``"sha256"``, the SHA-256 of its canonical
content (``digest``: its fields in order, each tensor's dtype, shape and bytes), verified on
load, so a flipped bit or an edited shape is refused naming the tensor (torch.load checks no
zip CRCs). Version 1 files (no checksums) still load, with an ``UncheckedCheckpointWarning``.
Decoding checks every declared size against the bytes stored (bit fields, value counts, the
padding bits of partial edge blocks) before it allocates, and refuses a file whose tensors
would decode to more than ``max_bytes``.

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
No code runs while decoding.
"""

from __future__ import annotations

import hashlib
import math
import struct
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from blocksparsity.checkpoint._bits import pack_bits, packed_size, unpack_bits
from blocksparsity.kernels.validation import block_grid, clip_block, dtype_name, shape_2d

FORMAT_NAME = "blocksparse.sparse_checkpoint"
FORMAT_VERSION = 2
CHECKSUM_VERSION = 2  # the first version with checksums
DECODE_CHUNK = 1 << 20  # elements of a block map built at a time
# Rough cost of one more tensor in a torch.save zip (local + central headers, 64-byte alignment).
TENSOR_FILE_BYTES = 160
KINDS = ("dense", "bitmap", "blocks", "alias", "object")
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)  # encoded sparsely; other dtypes as they are
INT_DTYPES = (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


class CheckpointError(ValueError):
    """A file that is not a readable checkpoint of the expected kind, or is corrupt."""


class UncheckedCheckpointWarning(UserWarning):
    """A sparse checkpoint of format version 1 loaded: it has no checksums, so damage to it
    cannot be detected. Re-save it with ``save_sparse`` to add them."""


# ---------------------------------------------------------------- checksums
def digest(obj: Any) -> str:
    """SHA-256 (hex) of ``obj``'s canonical content: what ``torch.load(weights_only=True)``
    gives back (tensors by dtype, shape and bytes; containers in order; plain values), so the
    digest of a loaded entry equals the digest of the entry that was saved."""
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def _feed(h: Any, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)};".encode())
        raw = t.reshape(-1).view(torch.uint8) if t.dtype != torch.uint8 else t.reshape(-1)
        try:
            h.update(raw.numpy())
        except (RuntimeError, TypeError):  # no numpy, or a dtype it does not view
            h.update(bytes(raw.tolist()))
    elif obj is None or isinstance(obj, bool):
        h.update(f"{obj!r};".encode())
    elif isinstance(obj, int):
        h.update(f"I{obj};".encode())
    elif isinstance(obj, float):
        h.update(b"F" + struct.pack("<d", obj))
    elif isinstance(obj, str):
        data = obj.encode("utf-8", "surrogatepass")
        h.update(f"S{len(data)};".encode() + data)
    elif isinstance(obj, bytes | bytearray):
        h.update(f"B{len(obj)};".encode() + bytes(obj))
    elif isinstance(obj, Mapping):
        h.update(f"D{len(obj)};".encode())
        for key, value in obj.items():
            _feed(h, key)
            _feed(h, value)
    elif isinstance(obj, list | tuple | set | frozenset):
        items = sorted(obj, key=repr) if isinstance(obj, set | frozenset) else obj
        h.update(f"L{len(items)};".encode())
        for item in items:
            _feed(h, item)
    else:  # dtypes, devices, complex numbers, ...
        text = f"{type(obj).__module__}.{type(obj).__qualname__}:{obj!r}".encode()
        h.update(f"O{len(text)};".encode() + text)


def _with_checksum(entry: dict[str, Any]) -> dict[str, Any]:
    return {**entry, "sha256": digest(entry)}


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


def _block_view(keep2d: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    """(n_blocks, bh*bw) bool: each block's elements, blocks row-major, zero-padded at the edges."""
    (h, w), (bh, bw) = keep2d.shape, block
    nbh, nbw = block_grid((h, w), (bh, bw))
    padded = torch.zeros(nbh * bh, nbw * bw, dtype=torch.bool, device=keep2d.device)
    padded[:h, :w] = keep2d
    return padded.view(nbh, bh, nbw, bw).permute(0, 2, 1, 3).reshape(nbh * nbw, bh * bw)


def _unblock(blocks: torch.Tensor, shape2d: tuple[int, int], block: tuple[int, int]) -> torch.Tensor:
    (h, w), (bh, bw) = shape2d, block
    nbh, nbw = block_grid((h, w), (bh, bw))
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
    shape2d = shape_2d(tuple(t.shape))
    # A block larger than the tensor is one partial block: store it as the tensor's size
    # (the same grid), so an absurd block shape costs no padding.
    block = clip_block(shape2d, block)
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
        shape, dtype = tuple(value.shape), dtype_name(value.dtype)
        if key in seen:
            entries[name] = {"kind": "alias", "of": seen[key]}
            records.append(TensorRecord(name, "alias", shape, dtype, float("nan"), value.nbytes, 0))
            continue
        if key is not None:
            seen[key] = name
        entry, stored, zeros = encode_tensor(value, block)
        entries[name] = entry
        records.append(TensorRecord(name, entry["kind"], shape, dtype, zeros, value.nbytes, stored))
    return entries, records


# ---------------------------------------------------------------- decoding (untrusted input)
def _need(cond: bool, name: str, what: str) -> None:
    if not cond:
        raise CheckpointError(f"corrupt sparse checkpoint: tensor {name!r}: {what}")


def _stored_tensor(t: Any, name: str, field: str) -> bool:
    """A loaded tensor that holds exactly its own elements (as ``_cpu`` wrote it): a declared
    size edited to fewer elements would otherwise view part of a larger stored buffer."""
    return isinstance(t, torch.Tensor) and t.untyped_storage().nbytes() == t.nbytes and t.storage_offset() == 0


def _bits_field(entry: Mapping[str, Any], field: str, count: int, name: str) -> torch.Tensor:
    bits = entry.get(field)
    _need(isinstance(bits, torch.Tensor) and bits.dtype == torch.uint8 and bits.dim() == 1, name, f"{field} must be 1-D uint8")
    _need(bits.numel() == packed_size(count), name, f"{field} holds {bits.numel()} bytes, expected {packed_size(count)}")
    _need(_stored_tensor(bits, name, field), name, f"{field} does not match its stored size")
    if count % 8:
        _need(int(bits[-1]) >> (count % 8) == 0, name, f"{field} has bits set beyond its {count} entries")
    return unpack_bits(bits, count)


def _shape_field(entry: Mapping[str, Any], name: str) -> tuple[int, ...]:
    shape = entry.get("shape")
    ok = isinstance(shape, list | tuple) and len(shape) >= 1 and all(type(s) is int and s >= 0 for s in shape)
    _need(ok, name, f"shape must be a list of sizes; got {shape!r}")
    return tuple(shape)


class Budget:
    """Bytes that decoding may still allocate (``max_bytes`` less what earlier tensors took)."""

    def __init__(self, max_bytes: int | None):
        self.max_bytes, self.used = max_bytes, 0

    def take(self, nbytes: int, name: str, what: str) -> None:
        if self.max_bytes is not None and self.used + nbytes > self.max_bytes:
            raise CheckpointError(
                f"refused: tensor {name!r} declares {what}, {nbytes:,} bytes, which with the tensors before it "
                f"({self.used:,} bytes) exceeds max_bytes={self.max_bytes:,}; pass a larger max_bytes if you trust "
                "this file"
            )
        self.used += nbytes


def _block_keep(entry: Mapping[str, Any], name: str, shape2d: tuple[int, int], n_values: int) -> torch.Tensor:
    """The stored-element map (h*w bool, row-major) of a "blocks" entry, built chunk by chunk
    from the block grid without materialising padding; every size is checked first against
    the bits and values actually stored."""
    block = entry.get("block")
    ok = isinstance(block, list | tuple) and len(block) == 2 and all(type(b) is int and b >= 1 for b in block)
    _need(ok, name, f"block must be two positive ints; got {block!r}")
    (h, w), (bh, bw) = shape2d, block
    nbh, nbw = block_grid((h, w), (bh, bw))
    occupied = _bits_field(entry, "block_bits", nbh * nbw, name)
    occupied_index = occupied.nonzero().reshape(-1)
    partial = _bits_field(entry, "partial_bits", occupied_index.numel(), name)
    n_partial = int(partial.sum())
    size = bh * bw
    elems = _bits_field(entry, "elem_bits", n_partial * size, name).view(n_partial, size)
    full_index, partial_index = occupied_index[~partial], occupied_index[partial]
    # A whole block is stored whole: it must lie inside the tensor (edge blocks with padding
    # are always partial). A partial block's padding positions hold no stored element.
    inside = ((full_index // nbw + 1) * bh <= h) & ((full_index % nbw + 1) * bw <= w)
    _need(bool(inside.all()), name, "a whole stored block reaches beyond the tensor (shape or block edited?)")
    if n_partial:
        rows = (h - (partial_index // nbw) * bh).clamp(max=bh)
        cols = (w - (partial_index % nbw) * bw).clamp(max=bw)
        e = torch.arange(size)
        outside = ((e // bw)[None, :] >= rows[:, None]) | ((e % bw)[None, :] >= cols[:, None])
        _need(not bool((elems & outside).any()), name, "a partial block stores elements beyond the tensor")
    n_keep = full_index.numel() * size + int(elems.sum())
    _need(n_keep == n_values, name, f"{n_values} values for {n_keep} stored elements")
    full = torch.zeros(nbh, nbw, dtype=torch.bool)
    full.view(-1)[full_index] = True
    which = torch.full((nbh, nbw), -1, dtype=torch.int64)
    which.view(-1)[partial_index] = torch.arange(n_partial)
    keep = torch.empty(h, w, dtype=torch.bool)
    col_block = torch.arange(w) // bw
    col_pos = torch.arange(w) % bw
    rows_per_chunk = max(1, DECODE_CHUNK // max(1, w))
    for r0 in range(0, h, rows_per_chunk):
        r = torch.arange(r0, min(h, r0 + rows_per_chunk))
        out = keep[r0 : r0 + r.numel()]
        torch.index_select(full[r // bh], 1, col_block, out=out)
        if n_partial:
            p = torch.index_select(which[r // bh], 1, col_block)
            hit = p >= 0
            pos = ((r % bh) * bw)[:, None] + col_pos[None, :]
            out[hit] = elems.reshape(-1)[p[hit] * size + pos[hit]]
    return keep.reshape(-1)


def decode_entry(name: str, entry: Any, decoded: Mapping[str, Any], budget: Budget | None = None) -> Any:
    """Decode one entry (``decoded``: the entries before it, for aliases), checking every field
    and every declared size before allocating (``budget``: the bytes decoding may still take)."""
    budget = budget or Budget(None)
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
    _need(_stored_tensor(values, name, "values"), name, "values does not match its stored size")
    n = math.prod(shape)
    budget.take(n * (values.element_size() + 1), name, f"shape {list(shape)} of {dtype_name(values.dtype)}")
    try:
        if kind == "bitmap":
            keep = _bits_field(entry, "bits", n, name)
            n_keep = int(keep.sum())
            _need(n_keep == values.numel(), name, f"{values.numel()} values for {n_keep} stored elements")
        else:
            keep = _block_keep(entry, name, shape_2d(shape), values.numel())
            n_keep = values.numel()
        out = torch.zeros(n, dtype=values.dtype)
        out[keep] = values
        if "neg_zero_bits" in entry:
            neg_zero = _bits_field(entry, "neg_zero_bits", n - n_keep, name)
            out[(~keep).nonzero().reshape(-1)[neg_zero]] = -0.0
    except (RuntimeError, MemoryError) as err:  # out of memory below max_bytes
        raise CheckpointError(f"tensor {name!r}: cannot decode shape {list(shape)}: {type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''}") from None
    return out.reshape(shape)


def make_payload(entries: dict[str, dict[str, Any]], extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """The file's content: every entry and the extras with their checksums (version 2)."""
    extra = dict(extra or {})
    return {"format": FORMAT_NAME, "version": FORMAT_VERSION,
            "tensors": {name: _with_checksum(entry) for name, entry in entries.items()},
            "extra": extra, "extra_sha256": digest(extra)}


def is_sparse_payload(obj: Any) -> bool:
    """Does a loaded object claim to be this format (a dict with our ``format`` header)?"""
    return isinstance(obj, dict) and obj.get("format") == FORMAT_NAME


def decode_payload(obj: Any, source: str, max_bytes: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(state_dict, extra)`` from a loaded payload; ``CheckpointError`` for anything else.

    Version 2: each entry's checksum is verified before it is decoded. Version 1 has none
    (an ``UncheckedCheckpointWarning`` says so). ``max_bytes`` bounds what decoding allocates."""
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
    checked = version >= CHECKSUM_VERSION
    if checked and obj.get("extra_sha256") != digest(extra):
        raise CheckpointError(f"corrupt sparse checkpoint {source}: 'extra' does not match its checksum")
    if not checked:
        warnings.warn(
            f"{source}: sparse checkpoint format version {version} has no checksums, so damage to it cannot be "
            "detected; re-save it with save_sparse to add them",
            UncheckedCheckpointWarning,
            stacklevel=3,
        )
    budget = Budget(max_bytes)
    state_dict: dict[str, Any] = {}
    for name, entry in tensors.items():
        if checked:
            _need(isinstance(entry, dict) and isinstance(entry.get("sha256"), str), name, "no checksum")
            content = {k: v for k, v in entry.items() if k != "sha256"}
            _need(digest(content) == entry["sha256"], name,
                  "checksum mismatch: the file was changed or damaged after it was written")
            entry = content
        state_dict[name] = decode_entry(name, entry, state_dict, budget)
    return state_dict, extra
