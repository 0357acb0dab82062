"""The torch backend's one device-dependent choice: may it read values on the host?

On the CPU, reading a value (``bool(t)``), giving a tensor a data-dependent shape
(``nonzero``), ``torch.bincount`` and numpy views of the data cost nothing extra, and a
few shortcuts use them: finite block sums settle the non-finite flag, a radix pass
gathers the few scores with the chosen prefix, the mask skips tie ranks when every tie
is pruned, large blocks are summed by numpy. On any other device each would stall it on
a host sync, so there the backend stays sync-free. Results are the same either way.

The policy is chosen once per backend call, from ``x``'s device (``for_device``), and
passed down explicitly. ``forced`` overrides that choice inside a ``with`` block: tests
run the sync-free code on the CPU with ``forced(SYNC_FREE)``.

Why a ``ContextVar`` and not a module global: the override is seen only by the thread (or
asyncio task) that set it, ``with`` blocks nest, and leaving one restores exactly the value
before it (``reset(token)``), even on an exception. Without an override,
``for_device(device)`` is just ``HOST_READS if device.type == "cpu" else SYNC_FREE``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Policy:
    """How one backend call may use the host. ``host_reads``: values may be read on the host
    (``bool(t)``, ``nonzero``, ``bincount``, numpy views), and the data is in host memory."""

    host_reads: bool


HOST_READS = Policy(host_reads=True)  # the CPU's
SYNC_FREE = Policy(host_reads=False)  # every other device's

# The policy ``forced`` set in this thread or task, or None: then the device decides.
_forced: ContextVar[Policy | None] = ContextVar("kernels_torch_policy", default=None)


def for_device(device: torch.device) -> Policy:
    """The policy for data on ``device``: ``HOST_READS`` on the CPU, else ``SYNC_FREE``;
    inside a ``forced(policy)`` block, that ``policy`` whatever the device."""
    forced_policy = _forced.get()
    if forced_policy is not None:
        return forced_policy
    return HOST_READS if device.type == "cpu" else SYNC_FREE


@contextlib.contextmanager
def forced(policy: Policy) -> Iterator[None]:
    """Use ``policy`` for every torch-backend call inside the block. ``HOST_READS`` is only
    valid for CPU data (its shortcuts use numpy views)."""
    token = _forced.set(policy)
    try:
        yield
    finally:
        _forced.reset(token)
