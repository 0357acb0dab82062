"""``DataNormSparsifier.step()`` on a model-sized set of tensors (eight 2048x2048 weights
and a 1,000,000x64 embedding table), against torch.ao's sparsifier on the same data, and
against calling ``blocksparsity.kernels.block_mask`` on the same tensors directly (the step overhead).

    python -m benchmarks.sparsifier_step [--repeats 3] [--scale 1.0]
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.timing import median_seconds
from blocksparsity import DataNormSparsifier, kernels

CONFIG = dict(sparsity_level=0.5, sparse_block_shape=(1, 4), zeros_per_block=2)


def model_tensors(scale: float = 1.0, device: str = "cpu") -> list[tuple[str, torch.Tensor]]:
    g = torch.Generator(device=device).manual_seed(0)
    side, rows = int(2048 * scale), int(1_000_000 * scale)
    tensors = [(f"layer{i}_weight", torch.randn(side, side, generator=g, device=device)) for i in range(8)]
    return [*tensors, ("embedding", torch.randn(rows, 64, generator=g, device=device))]


def measure(scale: float, repeats: int, device: str = "cpu") -> dict:
    data = model_tensors(scale, device)
    ours = DataNormSparsifier(data, **CONFIG)

    def direct() -> None:
        for _, x in data:
            kernels.block_mask(x, CONFIG["sparsity_level"], CONFIG["sparse_block_shape"], CONFIG["zeros_per_block"])

    runs = {"ours step()": ours.step, "blocksparsity.kernels.block_mask x9": direct}
    try:
        from torch.ao.pruning._experimental.data_sparsifier import DataNormSparsifier as Reference

        runs["torch.ao step()"] = Reference(data, **CONFIG).step
    except ImportError:
        pass
    times = dict(zip(runs, median_seconds(list(runs.values()), device, repeats), strict=True))
    result = {
        "elements": sum(x.numel() for _, x in data),
        "seconds": times,
        "step_overhead": times["ours step()"] / times["blocksparsity.kernels.block_mask x9"] - 1.0,
    }
    if "torch.ao step()" in times:
        result["speedup_vs_reference"] = times["torch.ao step()"] / times["ours step()"]
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0, help="shrink the tensors (e.g. 0.25 for a quick run)")
    args = parser.parse_args(argv)
    result = measure(args.scale, args.repeats)
    print(f"{result['elements'] / 1e6:.1f}M elements, (1, 4) blocks, level 0.5, zeros_per_block 2")
    for name, seconds in result["seconds"].items():
        print(f"  {name:24s} {seconds * 1e3:9.1f} ms")
    print(f"  step() overhead over direct kernel calls: {result['step_overhead']:+.1%}")
    if "speedup_vs_reference" in result:
        print(f"  speedup over torch.ao: {result['speedup_vs_reference']:.1f}x")
    return result


if __name__ == "__main__":
    main()
