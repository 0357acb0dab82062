"""Cross-rank agreement of masks, with one small all-reduce."""

from __future__ import annotations

import torch
import torch.distributed as dist


def mask_fingerprint(masks: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-tensor int64 fingerprint (zeros, and row- and column-weighted zero counts) that
    differs when masks differ in count or position (up to rare collisions)."""
    parts = []
    for m in masks.values():
        z = (~m).reshape(m.shape[0] if m.dim() else 1, -1).to(torch.int64)
        rows = torch.arange(1, z.shape[0] + 1, device=z.device)
        cols = torch.arange(1, z.shape[1] + 1, device=z.device)
        parts.append(torch.stack([z.sum(), (z.sum(1) * rows).sum(), (z.sum(0) * cols).sum()]))
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64)


def masks_agree(masks: dict[str, torch.Tensor]) -> bool:
    """Do all ranks hold the same masks? True without a process group."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return True
    fp = mask_fingerprint(masks)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    both = torch.cat([fp, -fp]).to(device)
    dist.all_reduce(both, op=dist.ReduceOp.MAX)
    n = fp.numel()
    return bool(torch.equal(both[:n], -both[n:]))  # max == min on every rank
