"""Sharded (DTensor / FSDP2) kernels and sparsifier on 2 CPU processes (gloo), against the
same calls on the unsharded tensors, bit for bit (with and without ``scale=``). Each rank writes what it checked and
every mismatch to OUT_DIR/rank<r>.json. With ``cuda``: 2 GPUs (NCCL), the sharded calls
on the default backend (Triton) against the torch backend on the whole tensors.
Usage: python tests/kernels/sharded_worker.py OUT_DIR PORT [cpu|cuda]"""

from __future__ import annotations

import copy
import itertools
import json
import os
import sys
import traceback

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor, Partial, Replicate, Shard, distribute_tensor, init_device_mesh
from torch.distributed.tensor.placement_types import _StridedShard

from blocksparsity import DataNormSparsifier, kernels
from blocksparsity.distributed import assert_masks_agree, count_zeros, disagreeing_masks
from blocksparsity.kernels import naive
from blocksparsity.kernels._collectives import count_traffic
from tests.helpers import warning_filters

WORLD = 2
DEVICE = sys.argv[3] if len(sys.argv) > 3 else "cpu"
BACKEND = "torch" if DEVICE == "cpu" else "auto"  # what the sharded calls run; expected: always torch
SHAPES = [(5, 12), (7, 9), (1, 10), (2, 10), (9, 3, 2), (13,), (6, 8)]  # uneven, a rank with 0 or 1 rows, N-D, 1-D
BLOCKS = [(1, 4), (2, 2), (3, 5), (4, 4)]  # blocks that straddle shard boundaries, and longer than a shard
LEVELS = [0.0, 0.3, 0.5, 1.0]


class Checks:
    """Counts checks per topic and records failures (with enough context to reproduce)."""

    def __init__(self):
        self.counts: dict[str, int] = {}
        self.failures: list[str] = []

    def check(self, topic: str, ok: bool, what: object) -> None:
        self.counts[topic] = self.counts.get(topic, 0) + 1
        if not ok and len(self.failures) < 50:
            self.failures.append(f"{topic}: {what}")


def data(shape, seed: int, kind: str, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "ties":  # few distinct values, and all-zero rows: ties everywhere
        x = torch.randint(-1, 2, shape, generator=g).float()
        x.reshape(x.shape[0], -1)[: max(1, x.shape[0] // 3)] = 0
    else:
        x = torch.randn(shape, generator=g)
    return x.to(dtype=dtype, device=DEVICE)


def check_kernels(checks: Checks, mesh) -> None:

    seed = 0
    for shape, bs, kind in itertools.product(SHAPES, BLOCKS, ("random", "ties")):
        for dim in range(min(2, len(shape))):
            seed += 1
            dtype = torch.bfloat16 if seed % 5 == 0 else torch.float32
            x = data(shape, seed, kind, dtype)
            d = distribute_tensor(x, mesh, [Shard(dim)], src_data_rank=None)
            case = (shape, bs, kind, f"Shard({dim})", dtype)
            for level, zpb in itertools.product(LEVELS, (None, 1) if seed % 3 else (None, bs[0] * bs[1] - 1)):
                norm = ("L1", "L2")[(seed + int(level * 10)) % 2]
                expected = kernels.block_mask(x, level, bs, zpb, norm, backend="torch")
                got = kernels.block_mask(d, level, bs, zpb, norm, backend=BACKEND)
                checks.check("block_mask", got.placements == d.placements and torch.equal(got.full_tensor(), expected),
                             (*case, level, zpb, norm))
            expected = kernels.block_norm(x, bs, "L2", backend="torch")
            got = kernels.block_norm(d, bs, "L2", backend=BACKEND)
            checks.check("block_norm", torch.equal(got.full_tensor(), expected), case)
            sparse, mask = kernels.sparsify(d, 0.5, bs, 1, backend=BACKEND)
            expected_sparse, expected_mask = kernels.sparsify(x, 0.5, bs, 1, backend="torch")
            checks.check("sparsify", torch.equal(mask.full_tensor(), expected_mask)
                         and torch.equal(sparse.full_tensor(), expected_sparse), case)
            applied = kernels.apply_mask(d, mask, backend=BACKEND)
            kernels.apply_mask(d, mask, inplace=True, backend=BACKEND)
            checks.check("apply_mask", torch.equal(applied.full_tensor(), expected_sparse)
                         and torch.equal(d.full_tensor(), expected_sparse), case)
    # block_norm's placement: sharded like the data where block boundaries are shard boundaries
    x = data((8, 16), 1, "random")
    aligned = kernels.block_norm(distribute_tensor(x, mesh, [Shard(0)], src_data_rank=None), (3, 4))
    columns = kernels.block_norm(distribute_tensor(x, mesh, [Shard(1)], src_data_rank=None), (2, 4))
    # Shard(1) of (2, 3, 8): ranks hold 16 and 8 columns of the 2-D view, 4 and 2 blocks of 4,
    # where torch.chunk would split the 6 block columns 3 and 3
    uneven = kernels.block_norm(distribute_tensor(data((2, 3, 8), 1, "random"), mesh, [Shard(1)], src_data_rank=None), (1, 4))
    checks.check("block_norm_placement", aligned.placements == (Shard(0),) and columns.placements == (Shard(1),)
                 and uneven.placements == (Replicate(),), (aligned.placements, columns.placements, uneven.placements))
    # replicated data: the local call
    r = distribute_tensor(x, mesh, [Replicate()], src_data_rank=None)
    got, expected = kernels.block_mask(r, 0.5, (2, 2)), kernels.block_mask(x, 0.5, (2, 2))
    checks.check("replicate", got.placements == (Replicate(),) and torch.equal(got.to_local(), expected), "replicate")


SCALE_FORMS = ("col", "col1d", "row", "full", "one", "replicated", "like_x")
SCALE_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


def scale_for(x: torch.Tensor, form: str, kind: str, seed: int, dtype: torch.dtype) -> torch.Tensor:
    """A plain scale of ``form`` for (the whole) ``x``: "like_x" has x's own shape (N-D too),
    "replicated" is per row or per column; ties: exact products, zeros included."""
    h, w = naive.as_2d(x).shape
    shape = {"col": (1, w), "col1d": (w,), "row": (h, 1), "full": (h, w), "one": (), "like_x": tuple(x.shape),
             "replicated": (h, 1) if seed % 2 else (1, w)}[form]
    g = torch.Generator().manual_seed(seed + 1000)
    if kind == "ties":
        s = torch.tensor([0.0, 0.5, 1.0, 2.0, 3.0])[torch.randint(0, 5, shape, generator=g)]
    else:
        s = torch.rand(shape, generator=g) * 3
    return s.to(dtype=dtype, device=DEVICE)


def placed_scale(s: torch.Tensor, form: str, mesh, placement) -> torch.Tensor:
    """The scale as the sharded call takes it: plain, replicated, or placed like x."""
    if form == "replicated":
        return distribute_tensor(s, mesh, [Replicate()], src_data_rank=None)
    if form == "like_x":
        return distribute_tensor(s, mesh, [placement], src_data_rank=None)
    return s


def check_scale(checks: Checks, mesh) -> None:
    """``scale=`` on sharded data: every form, against the unsharded call with the same scale
    (and, on tie-heavy data with exact products, the reference ``naive``)."""
    seed = 0
    for shape, bs, kind in itertools.product(SHAPES, BLOCKS, ("random", "ties")):
        for dim in range(min(2, len(shape))):
            seed += 1
            dtype = torch.bfloat16 if seed % 3 == 0 else torch.float32
            x = data(shape, seed, kind, dtype)
            d = distribute_tensor(x, mesh, [Shard(dim)], src_data_rank=None)
            h, w = naive.as_2d(x).shape
            for i in range(seed, seed + 3):  # 3 of the 7 forms per case, rotating: each form meets every case kind
                form = SCALE_FORMS[i % len(SCALE_FORMS)]
                s = scale_for(x, form, kind, i, SCALE_DTYPES[(i + seed // 7) % 4])
                given = placed_scale(s, form, mesh, Shard(dim))
                plain = s.reshape(h, w) if form == "like_x" else s
                level = LEVELS[(i + seed // 4) % 4]
                zpb = (None, 1, bs[0] * bs[1] - 1)[(i + seed // 3) % 3]
                norm = ("L1", "L2")[(i + seed // 2) % 2]
                case = (shape, bs, kind, f"Shard({dim})", dtype, form, s.dtype, level, zpb, norm)
                expected = kernels.block_mask(x, level, bs, zpb, norm, scale=plain, backend="torch")
                got = kernels.block_mask(d, level, bs, zpb, norm, scale=given, backend=BACKEND)
                checks.check("scale_block_mask", got.placements == d.placements
                             and torch.equal(got.full_tensor(), expected), case)
                if kind == "ties":
                    reference = naive.block_mask(x.cpu(), level, bs, zpb, norm, plain.cpu())
                    checks.check("scale_naive", torch.equal(got.full_tensor().cpu(), reference), case)
                if i == seed:
                    expected = kernels.block_norm(x, bs, norm, scale=plain, backend="torch")
                    got = kernels.block_norm(d, bs, norm, scale=given, backend=BACKEND)
                    checks.check("scale_block_norm", torch.equal(got.full_tensor(), expected), case)
            # sparsify in place, with the scale placed like x
            s = scale_for(x, "like_x", kind, seed, torch.float32)
            expected_sparse, expected_mask = kernels.sparsify(x, 0.5, bs, 1, scale=s.reshape(h, w), backend="torch")
            _, mask = kernels.sparsify(d, 0.5, bs, 1, scale=placed_scale(s, "like_x", mesh, Shard(dim)),
                                       inplace=True, backend=BACKEND)
            checks.check("scale_sparsify", torch.equal(mask.full_tensor(), expected_mask)
                         and torch.equal(d.full_tensor(), expected_sparse), (shape, bs, kind, dim))
    # every mesh dim replicates: the local call, with a plain or a replicated scale
    x = data((8, 16), 2, "random")
    r = distribute_tensor(x, mesh, [Replicate()], src_data_rank=None)
    s = scale_for(x, "col", "random", 2, torch.float32)
    expected = kernels.block_mask(x, 0.5, (2, 2), 1, scale=s)
    for given in (s, distribute_tensor(s, mesh, [Replicate()], src_data_rank=None)):
        got = kernels.block_mask(r, 0.5, (2, 2), 1, scale=given)
        checks.check("scale_replicate", got.placements == (Replicate(),) and torch.equal(got.to_local(), expected), "")


def refuses(fn, kinds) -> str | None:
    """None when ``fn()`` raises one of ``kinds`` naming ``scale``; else what happened."""
    try:
        fn()
    except kinds as err:
        return None if "scale" in str(err) else f"{type(err).__name__} not naming scale: {err}"
    except Exception as err:  # reported as a failure
        return f"{type(err).__name__}: {err}"
    return "no error"


def check_bad_scale(checks: Checks, mesh) -> None:
    """A bad scale with DTensor data: TypeError/ValueError naming ``scale`` on every rank (also
    where only one rank's scale is bad), the data untouched, and the next call still in step."""
    rank = dist.get_rank()
    mesh2 = init_device_mesh(DEVICE, (WORLD, 1))
    for dim in (0, 1):
        x = data((7, 10), 21 + dim, "random")
        d = distribute_tensor(x, mesh, [Shard(dim)], src_data_rank=None)
        ones = torch.ones(1, 10, device=DEVICE)
        full = torch.rand(7, 10, device=DEVICE)
        other = Shard(1 - dim)
        one_rank_nan = full.clone()
        one_rank_nan[6, 9] = float("nan")  # in rank 1's shard for both placements
        cases = {
            "shape": (ones[:, :9], ValueError),
            "int dtype": (torch.ones(1, 10, dtype=torch.int32, device=DEVICE), TypeError),
            "complex": (torch.ones(1, 10, dtype=torch.complex64, device=DEVICE), TypeError),
            "meta": (torch.ones(1, 10, device="meta"), TypeError),
            "not a tensor": ([1.0] * 10, TypeError),
            "negative": (-ones, ValueError),
            "nan": (ones * float("nan"), ValueError),
            "inf": (ones * float("inf"), ValueError),
            "beyond float32": (torch.full((1, 10), 1e39, dtype=torch.float64, device=DEVICE), ValueError),
            "placement": (distribute_tensor(full, mesh, [other], src_data_rank=None), ValueError),
            "sharded broadcast form": (distribute_tensor(ones, mesh, [Shard(1)], src_data_rank=None), ValueError),
            "other mesh": (distribute_tensor(full, mesh2, [Shard(dim), Replicate()], src_data_rank=None), ValueError),
            "nan in one rank's shard": (distribute_tensor(one_rank_nan, mesh, [Shard(dim)], src_data_rank=None),
                                        ValueError),
            "only rank 1 negative": (-ones if rank == 1 else ones, ValueError),
            "only rank 0 wrong shape": (ones[:, :9] if rank == 0 else ones, ValueError),
            "only rank 1 int dtype": (ones.int() if rank == 1 else ones, TypeError),
        }
        before = d.to_local().clone()
        for what, (scale, kind) in cases.items():
            for name, call in (
                ("block_mask", lambda d=d, scale=scale: kernels.block_mask(d, 0.5, (2, 2), 1, scale=scale,
                                                                           backend=BACKEND)),
                ("block_norm", lambda d=d, scale=scale: kernels.block_norm(d, (2, 2), scale=scale, backend=BACKEND)),
                ("sparsify", lambda d=d, scale=scale: kernels.sparsify(d, 0.5, (2, 2), 1, scale=scale, inplace=True,
                                                                       backend=BACKEND)),
            ):
                problem = refuses(call, kind)
                checks.check("scale_refusal", problem is None and torch.equal(d.to_local(), before),
                             (f"Shard({dim})", what, name, problem))
        # still in step: the next call's collectives pair up
        got = kernels.block_mask(d, 0.5, (2, 2), 1, scale=ones, backend=BACKEND)
        checks.check("scale_refusal", torch.equal(got.full_tensor(), kernels.block_mask(x, 0.5, (2, 2), 1, scale=ones)),
                     "after the refusals")
    problem = refuses(lambda: kernels.block_mask(data((4, 8), 1, "random"), 0.5,
                                                 scale=distribute_tensor(torch.ones(4, 8, device=DEVICE), mesh,
                                                                         [Shard(0)], src_data_rank=None)), TypeError)
    checks.check("scale_refusal", problem is None, ("DTensor scale with plain x", problem))


def check_fully_shard(checks: Checks, mesh) -> None:
    """Parameters sharded by FSDP2 (dim 0 by default; dim 1 through shard_placement_fn)."""

    for placement in (None, Shard(1)):  # fully_shard shards dim 1 evenly only
        torch.manual_seed(3)
        model = nn.Sequential(nn.Linear(10, 7), nn.Linear(12, 3), nn.Embedding(9, 6)).to(DEVICE)
        reference = copy.deepcopy(model)
        fully_shard(model, mesh=mesh, shard_placement_fn=None if placement is None else (lambda p: Shard(p.dim() - 1)))
        for (name, p), (_, ref) in zip(model.named_parameters(), reference.named_parameters(), strict=True):
            for bs, level, zpb in itertools.product(BLOCKS, (0.0, 0.5, 1.0), (None, 2)):
                zpb = min(zpb or bs[0] * bs[1], bs[0] * bs[1])
                expected = kernels.block_mask(ref.detach(), level, bs, zpb, "L1", backend="torch")
                got = kernels.block_mask(p.detach(), level, bs, zpb, "L1", backend=BACKEND)
                checks.check("fully_shard", torch.equal(got.full_tensor(), expected), (name, p.placements, bs, level, zpb))


def check_sparsifier(checks: Checks, mesh) -> None:
    """DataNormSparsifier.step() over a fully_shard-ed model, its state dict, and squash."""


    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(13, 11), nn.Linear(11, 5), nn.Embedding(7, 12)).to(DEVICE)
    with torch.no_grad():
        model[2].weight[1:3] = 0.0  # tied scores
    reference = copy.deepcopy(model)
    fully_shard(model, mesh=mesh)

    def sparsifier(m: nn.Module, backend: str) -> DataNormSparsifier:
        s = DataNormSparsifier(sparsity_level=0.5, sparse_block_shape=(2, 2), zeros_per_block=3, norm="L2", backend=backend)
        s.add_data("fc0", m[0].weight)
        s.add_data("fc1", m[1].weight, sparse_block_shape=(3, 5), zeros_per_block=None, sparsity_level=1.0)
        s.add_data("embed", m[2], sparse_block_shape=(1, 4), sparsity_level=0.5)
        s.add_data("bias", m[0].bias, sparse_block_shape=(1, 4), sparsity_level=0.0)
        return s

    sharded, plain = sparsifier(model, BACKEND), sparsifier(reference, "torch")
    sharded.step()
    plain.step()
    for name in plain.data_groups:
        mask = sharded.get_mask(name)
        checks.check("sparsifier_mask", isinstance(mask, DTensor) and torch.equal(mask.full_tensor(), plain.get_mask(name)), name)
        masked = sharded.get_data(name, return_original=False)
        checks.check("sparsifier_data", torch.equal(masked.full_tensor(), plain.get_data(name, return_original=False)), name)
    state = sharded.state_dict()
    checks.check("sparsifier_state", all(isinstance(s["mask"], DTensor) for s in state["state"].values())
                 and all(isinstance(t, DTensor) for t in state["_container"].values()), "state dict stays sharded")
    restored = DataNormSparsifier(backend="torch")
    restored.load_state_dict(state)
    same = all(torch.equal(restored.get_mask(n).full_tensor(), plain.get_mask(n)) for n in plain.data_groups)
    checks.check("sparsifier_state", same, "state dict round trip")
    # a NaN on one rank only: both ranks raise and keep their masks
    before = {n: sharded.get_mask(n).to_local().clone() for n in plain.data_groups}
    poisoned = model[0].weight.to_local()
    kept = poisoned[0, 0].item()
    with torch.no_grad():
        if dist.get_rank() == 1:
            poisoned[0, 0] = float("nan")
    try:
        sharded.step()
        raised = False
    except ValueError as err:
        raised = "fc0" in str(err)
    checks.check("sparsifier_nan", raised and all(torch.equal(before[n], sharded.get_mask(n).to_local()) for n in before),
                 "NaN on one rank")
    with torch.no_grad():
        poisoned[0, 0] = kept
    sharded.step()
    plain.step()
    sharded.squash_mask()
    plain.squash_mask()
    for (name, p), (_, ref) in zip(model.named_parameters(), reference.named_parameters(), strict=True):
        checks.check("squash", torch.equal(p.full_tensor(), ref.detach()), name)


def check_refusals(checks: Checks, mesh) -> None:

    x = data((6, 4, 4), 0, "random")
    mesh2 = init_device_mesh(DEVICE, (WORLD, 1))
    cases = {
        "Shard(2)": distribute_tensor(x, mesh, [Shard(2)], src_data_rank=None),
        "Partial": DTensor.from_local(x, mesh, [Partial()], run_check=False),
        "_StridedShard": DTensor.from_local(x[:3], mesh, [_StridedShard(0, split_factor=2)], run_check=False),
        "more than one mesh dimension": distribute_tensor(x, mesh2, [Shard(0), Shard(1)], src_data_rank=None),
    }
    for needle, d in cases.items():
        try:
            kernels.block_mask(d, 0.5, (2, 2))
            checks.check("refusal", False, f"{needle}: no error")
        except ValueError as err:
            checks.check("refusal", needle in str(err) or needle.lower() in str(err).lower(), f"{needle}: {err}")


def check_agreement(checks: Checks, mesh) -> None:


    rank = dist.get_rank()
    same = torch.arange(48, device=DEVICE).reshape(6, 8) % 3 == 0
    differs = torch.arange(48, device=DEVICE).reshape(6, 8) % (3 + rank) == 0
    sharded = distribute_tensor(same, mesh, [Shard(0)], src_data_rank=None)
    one_row = distribute_tensor(same[:1], mesh, [Shard(0)], src_data_rank=None)  # rank 1 holds nothing
    replicas = DTensor.from_local(differs, mesh, [Replicate()], run_check=False)
    checks.check("agree", disagreeing_masks({"a": same, "s": sharded, "one": one_row}) == [], "identical masks agree")
    checks.check("agree", disagreeing_masks({"a": same, "b": differs, "s": sharded, "r": replicas}) == ["b", "r"],
                 disagreeing_masks({"a": same, "b": differs, "s": sharded, "r": replicas}))
    try:
        assert_masks_agree({"a": same, "b": differs})
        checks.check("agree", False, "assert_masks_agree did not raise")
    except RuntimeError as err:
        checks.check("agree", "'b'" in str(err) and "'a'" not in str(err), str(err))
    zeros = count_zeros({"a": same, "s": sharded, "one": one_row})
    checks.check("count_zeros", zeros == [32, 32, 5], zeros)


def check_wide_counts(checks: Checks, mesh) -> None:
    """Counts summed over the ranks past 2**31 do not wrap (cheap stand-ins for 2**31 blocks):
    the histograms of the selection's all-reduce, and the tie counts before each block row
    (the all-gather made to say that rank 0 holds 2**31 more ties than it does)."""
    from blocksparsity.kernels import _sharded
    from blocksparsity.kernels import _torch as impl

    reduce = _sharded._SumOverRanks(mesh.get_group(), torch.tensor(dist.get_rank() == 1))
    summed = reduce(torch.full((8,), 2**30 + 5, dtype=torch.int64, device=DEVICE))
    checks.check("wide_counts", summed.tolist() == [2**31 + 10] * 8 and bool(reduce.flag), summed.tolist())
    gather = _sharded._collectives.all_gather

    def more_ties_on_rank0(t, group, size):
        out = gather(t, group, size)
        out[0] += 2**31
        return out

    for dim in (0, 1):
        x = data((8, 16), 11, "ties")
        d = distribute_tensor(x, mesh, [Shard(dim)], src_data_rank=None)
        lay = _sharded.layout(d)
        _, ext = _sharded._extended_local(d, lay, (2, 2))
        scores, _ = _sharded._backend_scores(impl, ext, lay, (2, 2), "L1")
        threshold = impl.select_threshold(_sharded._owned(scores, ext, lay.axis), 10,
                                          _sharded._SumOverRanks(lay.group, torch.tensor(False)))
        plain = _sharded._row_ties(scores, ext, lay, threshold).to(torch.int64)
        _sharded._collectives.all_gather = more_ties_on_rank0
        try:
            wide = _sharded._row_ties(scores, ext, lay, threshold)
        finally:
            _sharded._collectives.all_gather = gather
        rows = torch.arange(scores.shape[0], device=DEVICE)
        extra = (lay.rank if dim == 0 else rows + lay.rank) * 2**31  # rank 0's ties come before
        checks.check("wide_counts", torch.equal(wide, plain + extra), (dim, wide.tolist(), plain.tolist()))


def measure_traffic(checks: Checks, mesh) -> dict:
    """Bytes communicated per call (counted at the collectives) for a few shapes."""

    out = {}
    for shape, bs, dim in (((64, 64), (1, 4), 0), ((64, 64), (4, 4), 1), ((63, 64), (4, 4), 0), ((62, 64), (4, 4), 0)):
        x = data(shape, 7, "random")
        d = distribute_tensor(x, mesh, [Shard(dim)], src_data_rank=None)
        with count_traffic() as traffic:
            kernels.block_mask(d, 0.5, bs, backend=BACKEND)
        out[f"{shape}/{bs}/Shard({dim})"] = {"calls": traffic.calls, "bytes": traffic.bytes,
                                             "param_bytes": x.numel() * x.element_size()}
    # with a scale: replicated per column, and placed like x where the boundary cuts blocks
    for shape, bs, form in (((64, 64), (1, 4), "col"), ((62, 64), (4, 4), "like_x")):
        x = data(shape, 7, "random")
        d = distribute_tensor(x, mesh, [Shard(0)], src_data_rank=None)
        scale = placed_scale(scale_for(x, form, "random", 7, torch.float32), form, mesh, Shard(0))
        with count_traffic() as traffic:
            kernels.block_mask(d, 0.5, bs, scale=scale, backend=BACKEND)
        out[f"{shape}/{bs}/Shard(0)/scale={form}"] = {"calls": traffic.calls, "bytes": traffic.bytes,
                                                      "param_bytes": x.numel() * x.element_size()}
    return out


def run(rank: int, out_dir: str, port: str) -> None:
    warning_filters.apply()  # this package's warnings fail the run
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    if DEVICE == "cuda":
        torch.cuda.set_device(rank)
    dist.init_process_group("gloo" if DEVICE == "cpu" else "nccl", rank=rank, world_size=WORLD)

    mesh = init_device_mesh(DEVICE, (WORLD,))
    checks, traffic = Checks(), {}
    try:
        for step in (check_kernels, check_scale, check_bad_scale, check_fully_shard, check_sparsifier, check_refusals,
                     check_agreement, check_wide_counts):
            step(checks, mesh)
        traffic = measure_traffic(checks, mesh)
    except Exception:
        checks.failures.append(traceback.format_exc())
    with open(f"{out_dir}/rank{rank}.json", "w") as f:
        json.dump({"counts": checks.counts, "failures": checks.failures, "traffic": traffic}, f, indent=1)
    dist.destroy_process_group()


if __name__ == "__main__":
    mp.spawn(run, args=(sys.argv[1], sys.argv[2]), nprocs=WORLD)  # DEVICE is read from argv by each process
