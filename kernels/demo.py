"""Smallest honest demo of the kernel API: score, mask and sparsify one weight matrix.

    python -m kernels.demo
"""

from __future__ import annotations

import time

import torch

import kernels


def main() -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    weight = torch.randn(2048, 2048, device=device)
    print(f"device: {device}, backends here: {kernels.available_backends()}")

    scores = kernels.block_norm(weight, block_shape=(1, 4), norm="L1")
    print(f"block_norm: {tuple(scores.shape)} block scores, mean {scores.mean().item():.4f}")

    for zeros_per_block, label in ((4, "whole (1,4) blocks"), (2, "2:4 inside the pruned blocks")):
        start = time.perf_counter()
        sparse, mask = kernels.sparsify(weight, 0.5, (1, 4), zeros_per_block)
        if device == "cuda":
            torch.cuda.synchronize()
        took = (time.perf_counter() - start) * 1e3
        zeros = 1.0 - mask.float().mean().item()
        kept_energy = (sparse.norm() / weight.norm()).item()
        print(f"sparsify 50% of blocks, {label}: {zeros:.1%} zeros, {kept_energy:.1%} of the norm kept, {took:.1f} ms")

    print("2:4 everywhere (level 1.0, zeros_per_block=2):", end=" ")
    mask = kernels.block_mask(weight, 1.0, (1, 4), 2)
    per_group = (~mask).view(-1, 4).sum(1)
    print("every group of 4 has exactly 2 zeros:", bool((per_group == 2).all()))


if __name__ == "__main__":
    main()
