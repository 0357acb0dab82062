"""Cross-rank checks of masks under DDP or FSDP, each with one small collective.

``assert_masks_agree(masks)`` raises when ranks that should hold the same mask do not:
every rank, for plain tensors (DDP replicas); the ranks holding the same shard, for
``DTensor`` masks (the ``Replicate()`` mesh dims, as in HSDP). A mask sharded over a 1-D
mesh has one holder per shard: there is nothing to compare, and the exact sharded
selection of ``blocksparsity.kernels`` makes its shards consistent by construction.

``count_zeros(masks)`` counts the zeros of every mask over the whole tensor (summing the
shards of DTensor masks once each) with at most one all-reduce and one host sync.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping

import torch
import torch.distributed as dist

try:  # optional: counts the zeros of CPU masks without a torch op per mask
    import numpy as np
except ImportError:  # pragma: no cover - numpy comes with every torch install we test
    np = None

from blocksparsity.kernels.validation import is_dtensor, local_tensor

__all__ = ["assert_masks_agree", "count_zeros", "disagreeing_masks", "mask_fingerprint"]

_NONE = torch.iinfo(torch.int64).min  # a slot this rank does not hold: below every value


def _shard_slot(mask: torch.Tensor) -> tuple[int, int, bool]:
    """(this rank's shard index, number of shards, does this rank count the shard) of a mask:
    shards are indexed over the mesh dims that do not replicate; of the ranks holding a
    shard, the one at coordinate 0 of every replicating dim counts it."""
    if not is_dtensor(mask):
        return 0, 1, dist.get_rank() == 0 if _initialized() else True
    from torch.distributed.tensor import Replicate

    mesh, index, count, counts = mask.device_mesh, 0, 1, True
    for dim, placement in enumerate(mask.placements):
        if isinstance(placement, Replicate):
            counts = counts and mesh.get_local_rank(dim) == 0
        else:
            index, count = index * mesh.size(dim) + mesh.get_local_rank(dim), count * mesh.size(dim)
    return index, count, counts


def mask_fingerprint(masks: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Per mask, three int64 numbers (zeros, and row- and column-weighted zero counts) of the
    mask this rank holds (its shard, for a DTensor), on the first mask's device: they
    differ when masks differ in count or position (up to rare collisions)."""
    parts = []
    for m in masks.values():
        local = local_tensor(m)
        rows, cols = (local.shape[0], math.prod(local.shape[1:])) if local.dim() else (1, 1)
        z = (~local.bool()).reshape(rows, cols).to(torch.int64)
        rows = torch.arange(1, z.shape[0] + 1, device=z.device)
        cols = torch.arange(1, z.shape[1] + 1, device=z.device)
        parts.append(torch.stack([z.sum(), (z.sum(1) * rows).sum(), (z.sum(0) * cols).sum()]))
    if not parts:
        return torch.zeros(0, dtype=torch.int64)
    return torch.cat([p.to(parts[0].device) for p in parts])


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def _collective_device(group: dist.ProcessGroup | None) -> torch.device:
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def disagreeing_masks(masks: Mapping[str, torch.Tensor], group: dist.ProcessGroup | None = None) -> list[str]:
    """Names of the masks that ranks of ``group`` (default: all) hold differently; one
    all-reduce of 6 int64 per mask and shard, one host sync. Empty without a process group."""
    if not _initialized() or dist.get_world_size(group) == 1 or not masks:
        return []
    device = _collective_device(group)
    slots = [_shard_slot(m) for m in masks.values()]
    offsets = list(itertools.accumulate((count for _, count, _ in slots), initial=0))
    mine = torch.tensor([offsets[i] + index for i, (index, _, _) in enumerate(slots)], device=device)
    fingerprint = mask_fingerprint(masks).to(device).reshape(-1, 3)
    both = torch.full((2, offsets[-1], 3), _NONE, dtype=torch.int64, device=device)
    both[0, mine] = fingerprint
    both[1, mine] = -fingerprint
    dist.all_reduce(both, op=dist.ReduceOp.MAX, group=group)  # per slot: the max, and -(the min), over its holders
    agree = (both[0] == -both[1]).all(1).tolist()  # the one sync
    return [name for i, name in enumerate(masks) if not all(agree[offsets[i] : offsets[i + 1]])]


def assert_masks_agree(masks: Mapping[str, torch.Tensor], group: dist.ProcessGroup | None = None) -> None:
    """Raise ``RuntimeError`` naming the masks that ranks hold differently (see the module
    docstring for which ranks are compared). A no-op without a process group."""
    bad = disagreeing_masks(masks, group)
    if bad:
        shown = ", ".join(map(repr, bad[:8])) + (f" and {len(bad) - 8} more" if len(bad) > 8 else "")
        raise RuntimeError(f"ranks hold different masks for {shown}: their data differ (is every rank's model in sync?)")


def _zeros(mask: torch.Tensor) -> torch.Tensor:
    kept = mask.sum(dtype=torch.int64) if mask.dtype == torch.bool else torch.count_nonzero(mask).to(torch.int64)
    return mask.numel() - kept


def _host_zeros(masks: Mapping[str, torch.Tensor]) -> list[int] | None:
    """The zeros of each mask when every one is a plain bool tensor in CPU memory, counted by
    numpy on the mask's own memory (no copy, no sync); else None. The torch ops (a sum per
    mask, a stack, a read) cost several times more on small masks, which the callbacks count
    at every mask update of in-place training."""
    if np is None or not all(type(m) is torch.Tensor and m.dtype == torch.bool and m.device.type == "cpu"
                             for m in masks.values()):
        return None
    return [m.numel() - int(np.count_nonzero(m.numpy())) for m in masks.values()]


def count_zeros(masks: Mapping[str, torch.Tensor], group: dist.ProcessGroup | None = None) -> list[int]:
    """Zeros of each whole mask, one host sync: for DTensor masks the shards' counts summed
    over the ranks of ``group`` (default: all) by one all-reduce, each shard counted once;
    plain bool CPU masks by numpy (``_host_zeros``)."""
    if not masks:
        return []
    host = _host_zeros(masks)
    if host is not None:
        return host
    # numel - kept: no inverted copy of each mask (a non-bool mask counts nonzero as kept)
    local = [_zeros(local_tensor(m)) for m in masks.values()]
    counts = torch.stack([c.to(local[0].device) for c in local])
    sharded = [is_dtensor(m) for m in masks.values()]
    if any(sharded) and _initialized():
        counted = [s and slot[2] for s, slot in zip(sharded, map(_shard_slot, masks.values()), strict=True)]
        contribution = counts.to(_collective_device(group)) * torch.tensor(counted, device=_collective_device(group))
        dist.all_reduce(contribution, op=dist.ReduceOp.SUM, group=group)
        counts = torch.where(torch.tensor(sharded, device=counts.device), contribution.to(counts.device), counts)
    return [int(c) for c in counts.tolist()]
