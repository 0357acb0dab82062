"""Median wall time of a call.

On the CPU, ``time.perf_counter`` around each call, the contenders timed in alternation,
round by round, so a machine that speeds up or slows down during the run affects every
contender alike. On a GPU, CUDA events around each call after warm-up, with the L2 cache
flushed before every timed call (what ``triton.testing.do_bench`` does; written out here
so that an untimed ``setup``, such as restoring an input that the call overwrites, can run
before each call).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import torch

Call = Callable[[], object]
# Zeroing this buffer evicts everything else from a GPU's L2 cache (H100/H200: 50 MB).
L2_FLUSH_BYTES = 256 << 20


def nothing() -> None:
    """The setup of a call that needs none."""


def once(run: Call, setup: Call = nothing, device: str = "cpu") -> float:
    """Seconds of one call of ``run`` by ``perf_counter``, after an untimed ``setup``; on a
    GPU the device is synchronized before and after, so the time covers the call's kernels
    (one call's wall time, as the harness's first calls need; ``sample_seconds`` times GPUs by
    CUDA events)."""
    setup()
    synchronize(device)
    start = time.perf_counter()
    run()
    synchronize(device)
    return time.perf_counter() - start


def _cuda_samples(run: Call, setup: Call, repeats: int, warmup: int) -> list[float]:
    flush = torch.empty(L2_FLUSH_BYTES, dtype=torch.int8, device="cuda")
    for _ in range(warmup):
        setup()
        run()
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
    for start, end in zip(starts, ends, strict=True):
        setup()
        flush.zero_()
        start.record()
        run()
        end.record()
    torch.cuda.synchronize()
    return [s.elapsed_time(e) / 1e3 for s, e in zip(starts, ends, strict=True)]


def sample_seconds(
    runs: Sequence[Call], device: str, repeats: int = 5, setup: Call | None = None, warmup: int = 1
) -> list[list[float]]:
    """Seconds of each of ``repeats`` calls of each run, after ``warmup`` untimed calls of each.

    ``setup`` (untimed) runs before every call, warm-ups included.
    """
    setup = setup or nothing
    if device == "cuda":
        return [_cuda_samples(run, setup, repeats, max(1, warmup)) for run in runs]
    for _ in range(warmup):
        for run in runs:
            setup()
            run()
    samples: list[list[float]] = [[] for _ in runs]
    for _ in range(repeats):
        for i, run in enumerate(runs):
            samples[i].append(once(run, setup))
    return samples


def median_seconds(
    runs: Sequence[Call], device: str, repeats: int = 5, setup: Call | None = None, warmup: int = 1
) -> list[float]:
    """Median seconds per call of each run (see ``sample_seconds``)."""
    return [statistics.median(s) for s in sample_seconds(runs, device, repeats, setup, warmup)]


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()
