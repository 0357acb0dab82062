"""Save a state dict in the compact sparse format, load it back exactly, and read any
supported checkpoint (plain state dict, Lightning checkpoint, sparse checkpoint) safely."""

from __future__ import annotations

import io
import numbers
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from tqdm import tqdm

from blocksparsity.checkpoint._files import PathLike, load_untrusted, write_atomically
from blocksparsity.checkpoint._format import (
    CheckpointError,
    TensorRecord,
    decode_payload,
    encode_state_dict,
    is_sparse_payload,
    make_payload,
)
from blocksparsity.kernels.validation import check_block_shape

__all__ = ["default_max_bytes", "load_sparse", "load_sparse_checkpoint", "read_checkpoint", "save_sparse"]

# Decoding limit: a genuine sparse checkpoint decodes to a few times its size (1 / density
# for the values; 128x for an all-zero fp32 tensor in (1, 4) blocks), but a crafted entry of
# a few bytes can declare any dense size. So by default decoding may allocate 256 times the
# file's size, and at least 1 GiB; pass max_bytes= to allow more for a file you trust.
MAX_BYTES_FLOOR = 1 << 30
MAX_EXPANSION = 256


def default_max_bytes(path: PathLike) -> int:
    """The default decoding limit for the file at ``path``: max(1 GiB, 256 x its size)."""
    try:
        size = os.stat(path).st_size
    except OSError:
        size = 0
    return max(MAX_BYTES_FLOOR, MAX_EXPANSION * size)


def _check_max_bytes(max_bytes: object, path: PathLike) -> int:
    if max_bytes is None:
        return default_max_bytes(path)
    if not isinstance(max_bytes, numbers.Integral) or isinstance(max_bytes, bool):
        raise TypeError(f"max_bytes must be an int (bytes) or None for the default; got {max_bytes!r}")
    if max_bytes < 0:
        raise ValueError(f"max_bytes must be >= 0; got {max_bytes}")
    return int(max_bytes)


def _check_loadable(state_dict: Mapping[str, Any], extra: Mapping[str, Any]) -> None:
    """Refuse at save time what ``load_sparse`` would refuse: values (in ``extra``, or
    non-tensor state-dict entries) that ``torch.load(weights_only=True)`` does not build."""
    objects = {name: value for name, value in state_dict.items() if not isinstance(value, torch.Tensor)}
    for where, group in (("extra", extra), ("state_dict", objects)):
        for key, value in group.items():
            if isinstance(value, torch.Tensor | str | int | float | bool | type(None)):
                continue
            buffer = io.BytesIO()
            try:
                torch.save(value, buffer)
                buffer.seek(0)
                torch.load(buffer, weights_only=True)
            except Exception:  # any refusal by the safe loader (its message advises unsafe loading)
                raise TypeError(
                    f"{where}[{key!r}] cannot be saved: load_sparse reads files with torch.load(weights_only=True), "
                    f"which would refuse it (it holds a {type(value).__name__} or an object inside it that is not a "
                    "tensor, number, string, list or dict); convert it to those first"
                ) from None


def save_sparse(
    state_dict: Mapping[str, Any],
    path: PathLike,
    *,
    block_shape: Sequence[int] = (1, 4),
    extra: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> list[TensorRecord]:
    """Write ``state_dict`` to ``path`` in the compact sparse format, atomically.

    Each floating-point tensor is stored as its nonzero values plus a bit-packed mask, 1 bit
    per element or, where whole ``block_shape`` blocks are zero, 1 bit per block (see
    ``blocksparsity.checkpoint``'s docstring), whichever is smaller, or as it is when neither
    saves bytes. Other entries (integer buffers, non-tensor values) are stored as they are;
    tied tensors are stored once. ``extra`` holds other checkpoint entries to keep (they
    must load under ``torch.load(weights_only=True)``). ``progress`` shows a bar on stderr.

    Returns one ``TensorRecord`` per tensor: its encoding, zero fraction and bytes.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping of names to tensors; got {type(state_dict).__name__}")
    if extra is not None and not isinstance(extra, Mapping):
        raise TypeError(f"extra must be a mapping or None; got {type(extra).__name__}")
    block = check_block_shape(block_shape)
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be True or False; got {progress!r}")
    _check_loadable(state_dict, extra or {})

    def wrap(items):
        return tqdm(items, total=len(state_dict), desc="encode", unit="tensor", disable=not progress, leave=False)

    entries, records = encode_state_dict(state_dict, block, wrap)
    payload = make_payload(entries, extra)
    write_atomically(path, lambda tmp: torch.save(payload, tmp))
    return records


def load_sparse_checkpoint(path: PathLike, *, max_bytes: int | None = None) -> dict[str, Any]:
    """A sparse checkpoint as a Lightning-shaped dict: ``{"state_dict": ..., **extra}``.

    Tensors come back dense, bit for bit as saved (dtype, shape, ``-0.0`` and NaN
    included), contiguous, on the CPU; tied tensors come back as one tensor. The file is
    loaded with ``torch.load(weights_only=True)``; a file of another kind, a newer version or
    a corrupt one raises ``CheckpointError`` (a ``ValueError``), naming the tensor: every
    entry's SHA-256 is verified (format version 2; version 1 files load with an
    ``UncheckedCheckpointWarning``), and every declared size is checked against the bytes
    stored before anything is allocated. Decoding allocates at most ``max_bytes`` (default
    ``default_max_bytes(path)``: max(1 GiB, 256 x the file's size)); more is refused.
    """
    max_bytes = _check_max_bytes(max_bytes, path)
    state_dict, extra = decode_payload(load_untrusted(path), str(path), max_bytes)
    return {"state_dict": state_dict, **extra}


def load_sparse(path: PathLike, *, max_bytes: int | None = None) -> dict[str, Any]:
    """The dense state dict saved by ``save_sparse`` (see ``load_sparse_checkpoint``), ready for
    ``model.load_state_dict``."""
    return load_sparse_checkpoint(path, max_bytes=max_bytes)["state_dict"]


def _is_state_dict(obj: Any) -> bool:
    """Names to tensors (``*_extra_state`` entries may hold anything), at least one tensor."""
    if not isinstance(obj, dict) or not obj or not all(isinstance(k, str) for k in obj):
        return False
    tensors = [isinstance(v, torch.Tensor) for v in obj.values()]
    return any(tensors) and all(t or k.endswith("_extra_state") for k, t in zip(obj, tensors, strict=True))


def read_checkpoint(
    path: PathLike, *, key: str | None = None, max_bytes: int | None = None
) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Load any supported checkpoint safely: ``(state_dict, extra, kind)``.

    ``kind`` is ``"sparse"`` (this package's format), ``"lightning"`` (a dict with a
    ``"state_dict"`` entry: the other entries come back as ``extra``) or ``"state_dict"``
    (a plain ``{name: tensor}`` dict). ``key`` names the entry holding the state dict in
    other dicts (e.g. ``"model"``). Anything else raises ``CheckpointError``. The file is
    memory-mapped: tensors of a plain or Lightning checkpoint are read from disk as they are
    used (copy them before changing the file in place). ``max_bytes`` as ``load_sparse_checkpoint``.
    """
    source = str(path)
    max_bytes = _check_max_bytes(max_bytes, path)
    obj = load_untrusted(path, mmap=True)
    if is_sparse_payload(obj):
        state_dict, extra = decode_payload(obj, source, max_bytes)
        return state_dict, extra, "sparse"
    if not isinstance(obj, dict):
        raise CheckpointError(f"{source}: expected a checkpoint dict; the file holds a {type(obj).__name__}")
    if key is None and "state_dict" in obj:
        key = "state_dict"
    if key is not None:
        if key not in obj:
            raise CheckpointError(f"{source}: no entry {key!r}; top-level entries: {_keys(obj)}")
        if not _is_state_dict(obj[key]):
            raise CheckpointError(f"{source}: entry {key!r} is not a state dict (names to tensors)")
        extra = {k: v for k, v in obj.items() if k != key}
        return obj[key], extra, "lightning" if key == "state_dict" else f"entry {key!r}"
    if _is_state_dict(obj):
        return obj, {}, "state_dict"
    raise CheckpointError(
        f"{source}: no state dict found: expected names mapped to tensors, or a Lightning checkpoint with a "
        f"'state_dict' entry (name another entry with key=/--key); top-level entries: {_keys(obj)}"
    )


def _keys(obj: dict) -> str:
    names = [repr(k) for k in list(obj)[:10]]
    return ", ".join(names) + (", ..." if len(obj) > 10 else "")

