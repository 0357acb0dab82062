"""Where a launch runs: every Triton launch is pinned to its tensor's device.

Triton launches on ``torch.cuda.current_device()`` and that device's current stream. Data on
another GPU (``cuda:1`` while the current device is 0: a model spread over GPUs) would be
read by a kernel on the wrong device, or, with peer access, unordered against the work
torch queued for it on its own device's stream. Each launcher therefore runs its launches
inside ``on_device(x)``, which makes ``x``'s device current (and with it its stream).
"""

from __future__ import annotations

import contextlib

import torch


def on_device(t: torch.Tensor) -> contextlib.AbstractContextManager:
    """Make ``t``'s CUDA device the current one for the ``with`` block (CPU data, which only
    Triton's interpreter runs: nothing to pin)."""
    if t.device.type == "cuda":
        return torch.cuda.device(t.device)
    return contextlib.nullcontext()
