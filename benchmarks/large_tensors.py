"""Is there a per-element cliff past 2**31 elements? The torch backend's time per element on a
bf16 tensor of 2**30 elements against one just past 2**31 (issue 20: 7x slower per element
there once; the goal is at most 1.5x), for ``block_norm``, ``block_mask`` and ``sparsify``.

    python -m benchmarks.large_tensors [--repeats 2] [--small-log2 30] [--threads 1]

Needs about 10 GB of memory at the larger size (the data, 4.3 GB in bf16, the bool mask and
the float32 block scores). The two sizes are timed in alternation, round by round, so a
machine that speeds up or slows down affects both alike; each figure is the median.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time

import torch

from benchmarks import machine
from blocksparsity import kernels

COLS = 8192  # rows of 8192 elements: (1, 4) blocks never straddle a row end
LARGE = 2**31 + 2**22  # just past 2**31 elements: flat indices and element counts no longer fit int32


def _tensor(n: int) -> torch.Tensor:
    """A bf16 (n // COLS, COLS) tensor of N(0, 1) values, made in row chunks (no float32 copy
    of the whole)."""
    x = torch.empty(n // COLS, COLS, dtype=torch.bfloat16)
    g = torch.Generator().manual_seed(n)
    for start in range(0, x.shape[0], 1 << 14):
        x[start:start + (1 << 14)] = torch.randn(x[start:start + (1 << 14)].shape, generator=g)
    return x


OPS = {
    "block_norm": lambda x: kernels.block_norm(x, (1, 4)),
    "block_mask": lambda x: kernels.block_mask(x, 0.5, (1, 4)),
    "sparsify": lambda x: kernels.sparsify(x, 0.5, (1, 4), 2, inplace=True),  # zeroes half of each pruned block
}


def measure(sizes: list[int], repeats: int) -> dict[str, dict[int, float]]:
    """Median seconds per op and size; sizes alternate within each round (one tensor alive at
    a time, remade per round: ``sparsify`` writes it)."""
    times: dict[str, dict[int, list[float]]] = {op: {n: [] for n in sizes} for op in OPS}
    warm = _tensor(COLS * 64)
    for run in OPS.values():  # first calls pay one-time costs (imports, allocator growth) on small data
        run(warm)
    for round_ in range(repeats):
        for n in sizes:
            x = _tensor(n)
            for op, run in OPS.items():
                start = time.perf_counter()
                out = run(x)
                times[op][n].append(time.perf_counter() - start)
                del out
                gc.collect()
                print(f"round {round_ + 1}/{repeats}: {op} on {n:,} elements: {times[op][n][-1]:.1f} s",
                      file=sys.stderr, flush=True)
            del x
            gc.collect()
    return {op: {n: statistics.median(v) for n, v in by_size.items()} for op, by_size in times.items()}


def report(medians: dict[str, dict[int, float]], small: int, large: int, repeats: int) -> str:
    host = machine.describe("cpu")
    lines = [f"### Per-element time past 2**31 elements: CPU: {host['cpu']}", "",
             f"{host['date']} · torch {host['torch']} · commit {host['commit']} · {host['memory_gib']} GiB · "
             f"load average {host['load_average']} at the start, {machine.load_average()} at the end", "",
             f"bf16 ({small // COLS:,} and {large // COLS:,}) x {COLS} tensors, (1, 4) blocks, level 0.5 (sparsify: "
             f"2 zeros per pruned block, in place); median of {repeats} calls per size, sizes in alternation. "
             "Goal (issue 20): at most 1.5x the per-element time at 2**30.", "",
             f"| op | {small:,} elements (s) | {large:,} elements (s) | ns per element | ratio per element | goal |",
             "|---|--:|--:|--:|--:|:-:|"]
    for op, by_size in medians.items():
        per_small, per_large = by_size[small] / small, by_size[large] / large
        ratio = per_large / per_small
        lines.append(f"| {op} | {by_size[small]:.2f} | {by_size[large]:.2f} | {per_small * 1e9:.2f} / "
                     f"{per_large * 1e9:.2f} | {ratio:.2f}x | {'met' if ratio <= 1.5 else '**missed**'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.large_tensors", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--small-log2", type=int, default=30, help="the baseline size is 2**N elements (default 30)")
    parser.add_argument("--large", type=int, default=LARGE, help=f"the large size in elements (default {LARGE:,})")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    small, large = 2**args.small_log2, args.large - args.large % COLS
    print(report(measure([small, large], args.repeats), small, large, args.repeats))


if __name__ == "__main__":
    main()
