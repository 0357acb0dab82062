"""Hashes of the torch backend's results over a fixed set of configurations, so that a
change meant to be speed-only can be shown to leave every mask, sparsified tensor and
score unchanged (and equal to ``blocksparsity.kernels.naive`` where that is affordable).

    python -m benchmarks.mask_hashes > before.json      # on the old code
    python -m benchmarks.mask_hashes --compare before.json   # on the new code: exit 1 on any difference

Configurations: shapes with partial edge blocks and 1-D/N-D data, (1, 4)/(2, 3)/(4, 4)/(1, 17)
and clipped blocks, every ``zeros_per_block`` class, levels 0..1, L1/L2, fp32/bf16/fp16,
random and tie-heavy data, sizes on both sides of the torch backend's fused-selection and
kthvalue thresholds, and a non-contiguous view.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys

import torch

from blocksparsity import kernels

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
SHAPES = [(37,), (9, 30), (13, 11), (64, 64), (6, 3, 3, 3), (3, 5), (300, 1000), (1030, 1024)]
BLOCKS = [((1, 4), (None, 2, 0)), ((2, 3), (None, 4)), ((4, 4), (None, 5)), ((1, 17), (None, 9)), ((8, 64), (None,))]
LEVELS = (0.0, 0.35, 0.5, 1.0)
NAIVE_MAX = 2000  # elements: above this the plain reference is too slow to run everywhere


def data(shape, kind: str, dtype: str, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "ties":
        x = torch.randint(-2, 3, shape, generator=g).float()
        x.reshape(x.shape[0], -1)[: max(1, x.shape[0] // 3)] = 0
    else:
        x = torch.randn(shape, generator=g)
    return x.to(DTYPES[dtype])


def digest(t: torch.Tensor) -> str:
    t = t.contiguous()
    raw = t.view(torch.uint8) if t.dtype != torch.bool else t.to(torch.uint8)
    return hashlib.sha256(raw.numpy().tobytes() + str(tuple(t.shape)).encode()).hexdigest()[:16]


def configurations():
    seed = 0
    for shape in SHAPES:
        for dtype in DTYPES:
            for kind in ("random", "ties"):
                seed += 1
                if dtype != "fp32" and len(shape) != 2:
                    continue
                for bs, zpbs in BLOCKS:
                    for zpb in zpbs:
                        for norm in ("L1", "L2"):
                            yield shape, dtype, kind, seed, bs, zpb, norm


def hashes(check_naive: bool) -> dict[str, str]:
    from blocksparsity.kernels import naive

    out: dict[str, str] = {}
    mismatches = 0
    for shape, dtype, kind, seed, bs, zpb, norm in configurations():
        x = data(shape, kind, dtype, seed)
        key = f"{shape} {dtype} {kind} {bs} zpb={zpb} {norm}"
        out[f"norm {key}"] = digest(kernels.block_norm(x, bs, norm, backend="torch"))
        for level in LEVELS:
            mask = kernels.block_mask(x, level, bs, zpb, norm, backend="torch")
            out[f"mask {key} level={level}"] = digest(mask)
            naive_size = check_naive and x.numel() <= NAIVE_MAX and dtype == "fp32" and level in (0.35, 1.0)
            if naive_size and not torch.equal(mask, naive.block_mask(x, level, bs, zpb, norm)):
                mismatches += 1
                print(f"differs from kernels.naive: {key} level={level}", file=sys.stderr)
        y, _ = kernels.sparsify(x, 0.5, bs, zpb, norm, backend="torch")
        out[f"sparsify {key}"] = digest(y)
        z = x.clone()
        kernels.sparsify(z, 0.5, bs, zpb, norm, inplace=True, backend="torch")
        out[f"sparsify-inplace {key}"] = digest(z)
        if len(shape) == 2 and shape[0] > 1:  # a transposed (non-contiguous) view
            xt = x.t()
            out[f"mask-t {key}"] = digest(kernels.block_mask(xt, 0.5, bs, zpb, norm, backend="torch"))
    if mismatches:
        out["naive mismatches"] = str(mismatches)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", help="a JSON file of hashes from an earlier run: report every difference")
    parser.add_argument("--no-naive", action="store_true", help="skip the comparison with kernels.naive")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    now = hashes(check_naive=not args.no_naive)
    if not args.compare:
        print(json.dumps(now, indent=0, sort_keys=True))
        return int("naive mismatches" in now)
    with open(args.compare) as f:
        before = json.load(f)
    differ = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
    for k in differ:
        print(f"DIFFERS: {k}: {before.get(k)} -> {now.get(k)}")
    print(f"{len(now)} hashes, {len(differ)} differ from {args.compare}")
    return int(bool(differ))


if __name__ == "__main__":
    sys.exit(main())
