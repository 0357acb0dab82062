"""Median wall time of a call: CUDA events with the L2 cache flushed on a GPU
(``triton.testing.do_bench``), ``time.perf_counter`` on the CPU. Contenders are timed in
alternation, round by round, so a machine that speeds up or slows down during the run
affects every contender alike."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import torch


def _cpu_once(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def _cuda_median(run: Callable[[], object], repeats: int) -> float:
    import triton.testing

    return triton.testing.do_bench(run, warmup=25, rep=max(25, 5 * repeats), return_mode="median") / 1e3


def median_seconds(runs: Sequence[Callable[[], object]], device: str, repeats: int = 5) -> list[float]:
    """Median seconds per call of each run, measured in alternation after one warm-up each."""
    if device == "cuda":
        return [_cuda_median(run, repeats) for run in runs]
    for run in runs:
        run()
    samples: list[list[float]] = [[] for _ in runs]
    for _ in range(repeats):
        for i, run in enumerate(runs):
            samples[i].append(_cpu_once(run))
    return [statistics.median(s) for s in samples]


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()
