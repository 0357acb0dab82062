"""The first benchmark: ``kernels.block_mask`` (torch backend) against torch.ao's
``DataNormSparsifier.step()`` on the same 4096x4096 fp32 tensor, (1, 4) blocks, L1,
sparsity 0.5, with ``zeros_per_block`` 4 and 2: time ratio and peak extra memory.

    python -m benchmarks.vs_reference [--size 4096] [--repeats 5]
"""

from __future__ import annotations

import argparse

from benchmarks.cases import Case
from benchmarks.contenders import CONTENDERS
from benchmarks.memory import peak_extra_bytes
from benchmarks.timing import median_seconds


def compare(case: Case, repeats: int, device: str = "cpu") -> dict:
    x_ref, x_ours = case.make_input(device), case.make_input(device)
    reference = CONTENDERS["reference"](case, x_ref)
    ours = CONTENDERS["ours-torch"](case, x_ours)
    t_ref, t_ours = median_seconds([reference, ours], device, repeats)
    return {
        "case": case.name,
        "reference_ms": t_ref * 1e3,
        "ours_ms": t_ours * 1e3,
        "speedup": t_ref / t_ours,
        "reference_peak_x": peak_extra_bytes("reference", case, device) / case.input_bytes,
        "ours_peak_x": peak_extra_bytes("ours-torch", case, device) / case.input_bytes,
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="side of the square fp32 tensor")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per contender (median)")
    args = parser.parse_args(argv)
    rows = []
    print("| case | reference ms | ours (torch) ms | speedup | reference peak extra | ours peak extra |")
    print("|---|---:|---:|---:|---:|---:|")
    for zpb in (4, 2):
        row = compare(Case("block_mask", (args.size, args.size), zeros_per_block=zpb), args.repeats)
        rows.append(row)
        print(f"| {row['case']} | {row['reference_ms']:.1f} | {row['ours_ms']:.1f} | {row['speedup']:.1f}x "
              f"| {row['reference_peak_x']:.2f}x input | {row['ours_peak_x']:.2f}x input |", flush=True)
    return rows


if __name__ == "__main__":
    main()
