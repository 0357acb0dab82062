"""The only place ``blocksparsity.kernels`` talks to ``torch.distributed``: the few small collectives the
sharded operations need (``blocksparsity.kernels._sharded``), each counting the bytes it moves.

Bytes are counted as the payload of each collective's result on the calling rank: an
all-reduce of ``n`` bytes counts ``n``, an all-gather of ``n`` bytes from each of ``P``
ranks counts ``P * n``. ``count_traffic()`` exposes the running totals (benchmark, tests).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["Traffic", "all_gather", "all_reduce_sum", "count_traffic"]


@dataclass
class Traffic:
    """Collectives issued and bytes they returned, on this rank, inside ``count_traffic()``."""

    calls: int = 0
    bytes: int = 0


_active: list[Traffic] = []
# torch 2.13 renamed all_gather_into_tensor (same arguments) and warns on the old name; torch 2.8 has only the old one.
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


@contextlib.contextmanager
def count_traffic() -> Iterator[Traffic]:
    """Count the collectives (and their bytes) that sharded kernel calls issue inside the block."""
    traffic = Traffic()
    _active.append(traffic)
    try:
        yield traffic
    finally:
        _active.remove(traffic)


def _record(nbytes: int) -> None:
    for traffic in _active:
        traffic.calls += 1
        traffic.bytes += nbytes


def all_reduce_sum(t: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
    """Sum ``t`` (contiguous) over ``group``, in place; returns ``t``."""
    dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
    _record(t.numel() * t.element_size())
    return t


def all_gather(t: torch.Tensor, group: dist.ProcessGroup, size: int) -> torch.Tensor:
    """Every rank's ``t`` (same shape and dtype on all ``size`` ranks), stacked: ``(size, *t.shape)``.

    Moved as raw bytes, so any dtype works on any backend (gloo has no bfloat16 gather)."""
    flat = t.contiguous().reshape(-1).view(torch.uint8)
    out = torch.empty(size * flat.numel(), dtype=torch.uint8, device=t.device)
    _all_gather_single(out, flat, group=group)
    _record(out.numel())
    return out.view(t.dtype).reshape(size, *t.shape)
