"""Sharded masks (DTensor, as FSDP2 holds parameters) on 2 CPU processes (gloo): bytes the
collectives move per ``blocksparsity.kernels.block_mask`` call, as a fraction of the parameter's bytes,
and time per call against the unsharded call on the same data (one thread per process).

    python -m benchmarks.sharded [--size 4096] [--repeats 3] [--json out.json]

Bytes are counted at the collectives (``blocksparsity.kernels._collectives``): an all-reduce counts its
tensor, an all-gather its gathered result, on each rank.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from benchmarks.timing import median_seconds
from blocksparsity import kernels
from blocksparsity.kernels._collectives import count_traffic

WORLD = 2
# (label, block shape, zeros per block, shard dim): 2:4-style rows, square blocks, blocks that
# shard boundaries cut (a halo exchange), and column shards (ranks interleave in block rows).
CASES = [
    ("(1,4) z=2, Shard(0)", (1, 4), 2, 0),
    ("(1,4) z=2, Shard(1)", (1, 4), 2, 1),
    ("(4,4) full, Shard(0)", (4, 4), None, 0),
    ("(4,4) full, Shard(1)", (4, 4), None, 1),
    ("(3,5) full, Shard(0), cut", (3, 5), None, 0),
    ("(3,5) z=7, Shard(1), cut", (3, 5), 7, 1),
]


def _bench(rank: int, port: int, size: int, repeats: int, out: str | None) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    from torch.distributed.tensor import Shard, distribute_tensor, init_device_mesh

    mesh = init_device_mesh("cpu", (WORLD,))
    x = torch.randn(size, size, generator=torch.Generator().manual_seed(0))
    rows = []
    for label, bs, zpb, dim in CASES:
        d = distribute_tensor(x, mesh, [Shard(dim)], src_data_rank=None)
        with count_traffic() as traffic:
            sharded_mask = kernels.block_mask(d, 0.5, bs, zpb, backend="torch")
        same = torch.equal(sharded_mask.full_tensor(), kernels.block_mask(x, 0.5, bs, zpb, backend="torch"))
        (sharded,) = median_seconds([lambda d=d, bs=bs, zpb=zpb: kernels.block_mask(d, 0.5, bs, zpb, backend="torch")],
                                    "cpu", repeats)
        dist.barrier()
        unsharded = float("nan")
        if rank == 0:  # the same call on the whole tensor, in one process
            (unsharded,) = median_seconds([lambda bs=bs, zpb=zpb: kernels.block_mask(x, 0.5, bs, zpb, backend="torch")],
                                          "cpu", repeats)
        dist.barrier()
        rows.append({"case": label, "bytes": traffic.bytes, "collectives": traffic.calls,
                     "fraction": traffic.bytes / (x.numel() * x.element_size()),
                     "sharded_s": sharded, "unsharded_s": unsharded, "same_mask": same})
    if rank == 0:
        print(f"blocksparsity.kernels.block_mask, level 0.5, on a {size}x{size} fp32 tensor ({x.numel() * 4 / 2**20:.0f} MiB), "
              f"{WORLD} CPU processes (gloo), 1 thread each")
        print(f"{'case':<28} {'collectives':>11} {'bytes/rank':>11} {'of param':>9} {'sharded':>10} {'unsharded':>10} "
              f"{'speedup':>8}  same mask")
        for r in rows:
            print(f"{r['case']:<28} {r['collectives']:>11} {r['bytes']:>11,} {r['fraction']:>9.4%} "
                  f"{r['sharded_s'] * 1e3:>8.1f}ms {r['unsharded_s'] * 1e3:>8.1f}ms "
                  f"{r['unsharded_s'] / r['sharded_s']:>7.2f}x  {r['same_mask']}")
        if out:
            with open(out, "w") as f:
                json.dump({"size": size, "world": WORLD, "rows": rows}, f, indent=1)
    dist.destroy_process_group()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_bench, args=(port, args.size, args.repeats, args.json), nprocs=WORLD)


if __name__ == "__main__":
    main(sys.argv[1:])
