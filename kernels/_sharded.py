"""The kernel operations on ``DTensor`` data (FSDP2's ``fully_shard``, ``distribute_tensor``):
the same masks, bit for bit, as the unsharded call, computed shard by shard.

Which shardings: the 2-D view of the data (``(shape[0], rest)``; 1-D data is one row) is
split over the processes of one mesh dimension into contiguous ranges of rows (``Shard(0)``
of data with two or more dims) or of columns (``Shard(1)``; ``Shard(0)`` of 1-D data), by
``torch.chunk``'s rule (what DTensor and ``fully_shard`` use: uneven, possibly empty
shards). Every other mesh dimension must be ``Replicate()``. Refused, with a ``ValueError``
naming the placement: ``Partial``, ``_StridedShard``, more than one sharded mesh dimension,
and ``Shard(d)`` for ``d >= 2`` (its columns of the 2-D view are not one range).

How, per call, with collectives over small data only:

1. **Halo.** A block is scored (summed element by element, row-major) by every rank that
   holds part of it, over the same elements in the same order as unsharded: a rank whose
   range cuts a block gets the missing ``b - 1`` lines (``b`` = the block's extent along
   the sharded axis) from its neighbours by one all-gather of every rank's first and last
   ``b - 1`` lines. Where no shard boundary cuts a block, nothing is exchanged.
2. **Ownership.** Each block belongs to the rank holding its first line; only owners
   count it in the selection.
3. **Selection.** ``k = round(level * n_blocks)`` over the whole tensor; the threshold is
   found by radix selection whose histograms (11/10/10-bit digits: 4096 int64 counts in
   all) are summed over the ranks by all-reduce; the non-finite flag rides on the first.
4. **Ties** at the threshold are pruned lowest global flat block index first: each rank
   learns how many tied blocks come before each of its block rows (row shards: one count
   per rank; column shards, whose ranks interleave within a block row: one count per
   block row per rank) by one all-gather.
5. **Mask.** Each rank runs its backend's ``block_mask_given`` on its (extended) shard
   with the common threshold and its tie offsets, and keeps its own lines.

One host sync at most per call (the public functions' NaN/inf raise); the collectives are
enqueued on the device. Outputs are DTensors on the input's mesh with its placements.

**Scale** (``check_scale``): replicated (a plain tensor or an all-``Replicate()`` DTensor, any
broadcast form of the whole 2-D view), each rank reading the lines of its extended shard; or a
DTensor of ``x``'s shape placed like ``x``, its halo exchanged beside the data's. Its checks
add one all-gather of each rank's outcome and one sync (the value check's), before step 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor, Partial, Replicate, Shard
from torch.distributed.tensor.placement_types import Placement

from blocksparsity.kernels import _collectives, _common
from blocksparsity.kernels._backend import Backend
from blocksparsity.kernels._common import PRUNE_ALL_BITS, Threshold, block_grid, cdiv, n_blocks, shape_2d
from blocksparsity.kernels.validation import SCALE_VALUES_MESSAGE, check_scale_tensor, scale_values_bad, scale_view


@dataclass(frozen=True)
class Layout:
    """How the 2-D view ``shape2d`` of a DTensor is split over the ranks of one mesh dim.

    ``axis`` is 0 (ranges of rows) or 1 (ranges of columns), ``None`` when every mesh
    dim replicates. ``starts[q]``, ``lengths[q]``: rank ``q``'s lines of the 2-D view.
    """

    shape2d: tuple[int, int]
    axis: int | None
    mesh_dim: int | None
    rank: int
    size: int
    starts: tuple[int, ...]
    lengths: tuple[int, ...]
    group: dist.ProcessGroup | None

    @property
    def start(self) -> int:
        return self.starts[self.rank]

    @property
    def length(self) -> int:
        return self.lengths[self.rank]

    @property
    def extent(self) -> int:
        """Lines along the sharded axis."""
        return self.shape2d[self.axis]


def chunk_split(n: int, size: int) -> list[tuple[int, int]]:
    """(start, length) of each of ``size`` ranks' parts of ``n`` lines by ``torch.chunk``'s rule
    (``ceil(n / size)`` each, the last ones shorter or empty), which DTensor and FSDP2 use."""
    chunk = cdiv(n, size)
    return [(min(q * chunk, n), max(0, min(n, (q + 1) * chunk) - min(q * chunk, n))) for q in range(size)]


def _placement_error(x: DTensor, what: str) -> ValueError:
    return ValueError(
        f"x is a DTensor with placements {tuple(x.placements)} on a mesh of shape {tuple(x.device_mesh.shape)}: {what}. "
        "kernels accept Shard(0) or Shard(1) on one mesh dimension (Replicate() on the others), as fully_shard "
        "and distribute_tensor make them"
    )


def layout(x: DTensor) -> Layout:
    """Check ``x``'s placements and work out which lines of its 2-D view each rank holds."""
    shape2d = shape_2d(x.shape)
    sharded = []
    for mesh_dim, p in enumerate(x.placements):
        if isinstance(p, Replicate):
            continue
        if isinstance(p, Partial):
            raise _placement_error(x, f"{p} (mesh dim {mesh_dim}) holds partial sums, not data; redistribute first")
        if type(p) is not Shard:  # _StridedShard and other Shard variants
            raise _placement_error(x, f"{p!r} (mesh dim {mesh_dim}) does not hold one contiguous range per rank")
        sharded.append((mesh_dim, p.dim % x.dim()))
    if not sharded:
        return Layout(shape2d, None, None, 0, 1, (0,), (shape2d[1],), None)
    if len(sharded) > 1:
        raise _placement_error(x, "it is sharded over more than one mesh dimension")
    mesh_dim, dim = sharded[0]
    if dim >= 2:
        raise _placement_error(
            x, f"Shard({dim}) of a {x.dim()}-D tensor gives each rank strided columns of the 2-D view (shape[0], rest), "
            "whose blocks no rank holds whole"
        )
    axis = 0 if dim == 0 and x.dim() >= 2 else 1
    unit = math.prod(x.shape[2:]) if dim == 1 else 1  # Shard(1) of N-D data: whole column ranges of the 2-D view
    size = x.device_mesh.size(mesh_dim)
    starts, lengths = zip(*chunk_split(x.shape[dim], size), strict=True)
    rank = x.device_mesh.get_local_rank(mesh_dim)
    local_shape = tuple(x.to_local().shape)
    expected = tuple(lengths[rank] if d == dim else s for d, s in enumerate(x.shape))
    if local_shape != expected:
        raise ValueError(
            f"x's local shard on this rank has shape {local_shape}, but torch.chunk's split of shape {tuple(x.shape)} "
            f"over {size} ranks (what DTensor and fully_shard use) gives {expected}; kernels cannot place it"
        )
    return Layout(
        shape2d, axis, mesh_dim, rank, size, tuple(s * unit for s in starts), tuple(n * unit for n in lengths),
        x.device_mesh.get_group(mesh_dim),
    )


def _lines(t: torch.Tensor, axis: int, start: int, length: int) -> torch.Tensor:
    return t.narrow(axis, start, length)


# ---------------------------------------------------------------- halo
@dataclass(frozen=True)
class Extended:
    """This rank's lines widened to whole blocks along the sharded axis: global lines
    ``[lo, lo + data.shape[axis])``; ``first_owned`` says whether its first block line starts here."""

    data: torch.Tensor
    lo: int
    first_owned: bool


def _block_range(lay: Layout, q: int, b: int) -> tuple[int, int]:
    """The lines of the block lines that rank ``q``'s range touches (empty range: (start, start))."""
    start, length = lay.starts[q], lay.lengths[q]
    if length == 0:
        return start, start
    return (start // b) * b, min(lay.extent, cdiv(start + length, b) * b)


def _needs_halo(lay: Layout, b: int) -> bool:
    return any(_block_range(lay, q, b) != (lay.starts[q], lay.starts[q] + lay.lengths[q]) for q in range(lay.size))


def extend(local2d: torch.Tensor, lay: Layout, b: int) -> Extended:
    """``local2d`` with the lines of neighbouring ranks that complete its cut blocks (one
    all-gather of every rank's first and last ``b - 1`` lines, only when a block is cut)."""
    lo, hi = _block_range(lay, lay.rank, b)
    first_owned = lo == lay.start
    if not _needs_halo(lay, b):
        return Extended(local2d, lo, first_owned)
    axis, m = lay.axis, b - 1
    shape = list(local2d.shape)
    shape[axis] = 2 * m
    edges = torch.zeros(shape, dtype=local2d.dtype, device=local2d.device)
    t = min(m, lay.length)
    _lines(edges, axis, 0, t).copy_(_lines(local2d, axis, 0, t))  # first lines, then last lines
    _lines(edges, axis, m, t).copy_(_lines(local2d, axis, lay.length - t, t))
    gathered = _collectives.all_gather(edges, lay.group, lay.size)
    before, after = [], []
    for q in range(lay.size):
        s, n = lay.starts[q], lay.lengths[q]
        if q < lay.rank and s + n > lo and n:  # a suffix of q's lines, within its last m
            take = s + n - max(lo, s)
            before.append(_lines(gathered[q], axis, m + min(m, n) - take, take))
        if q > lay.rank and s < hi and n:  # a prefix of q's lines, within its first m
            after.append(_lines(gathered[q], axis, 0, min(hi, s + n) - s))
    return Extended(torch.cat([*before, local2d, *after], dim=axis), lo, first_owned)


# ---------------------------------------------------------------- selection
class _SumOverRanks:
    """The ``reduce`` hook of radix selection: sums each pass's histogram over the ranks;
    the first pass also carries (and sums) the non-finite flag."""

    def __init__(self, group: dist.ProcessGroup, flag: torch.Tensor):
        self.group, self.flag, self.first = group, flag, True

    def __call__(self, hist: torch.Tensor) -> torch.Tensor:
        counts = hist.to(torch.int64)  # 2**31 blocks or more over all ranks: no wrap
        if self.first:
            counts = torch.cat([counts, self.flag.reshape(1).to(torch.int64)])
        _collectives.all_reduce_sum(counts, self.group)
        if self.first:
            self.flag, counts, self.first = counts[-1] != 0, counts[:-1], False
        return counts


def _owned(scores: torch.Tensor, ext: Extended, axis: int) -> torch.Tensor:
    return scores if ext.first_owned else scores.narrow(axis, 1, scores.shape[axis] - 1)


def _row_ties(scores: torch.Tensor, ext: Extended, lay: Layout, threshold: Threshold) -> torch.Tensor:
    """Per block row of ``scores`` (int64: 2**31 ties or more do not wrap): the global count of
    blocks tied at the threshold before the row's first block here, less the ties the running
    count here sees before it."""
    equal = (scores.view(torch.int32) == threshold.bits).to(torch.int64)
    owned = _owned(equal, ext, lay.axis)
    # The first block line here, when another rank owns it (and counts its ties).
    shared = equal.select(lay.axis, 0) if not ext.first_owned else equal.new_zeros(equal.shape[1 - lay.axis])
    if lay.axis == 0:  # block rows in rank order: one count per rank
        counts = _collectives.all_gather(owned.sum().reshape(1), lay.group, lay.size)[:, 0]
        before = counts[: lay.rank].sum() - shared.sum()
        return before.expand(scores.shape[0]).contiguous()
    # Column shards interleave within every block row: one count per block row and rank.
    counts = _collectives.all_gather(owned.sum(1), lay.group, lay.size)  # (ranks, block rows)
    per_row = counts.sum(0)
    here = equal.sum(1)
    return (per_row.cumsum(0) - per_row) + counts[: lay.rank].sum(0) - shared - (here.cumsum(0) - here)


def _backend_scores(impl: Backend, ext: Extended, lay: Layout, block_shape: tuple[int, int], norm: str,
                    scale: torch.Tensor | None = None):
    """Block scores of the extended shard and its local non-finite flag (empty shards: none);
    ``scale``: None, or the extended shard's part of the scale (``_extended_scale``)."""
    if ext.data.numel() == 0:
        return torch.empty(block_grid(ext.data.shape, block_shape), dtype=torch.float32, device=ext.data.device), torch.zeros(
            (), dtype=torch.bool, device=ext.data.device)
    if scale is None:
        return impl.block_norm(ext.data, block_shape, norm)
    return impl.block_norm(ext.data, block_shape, norm, scale=scale)


def _extended_local(x: DTensor, lay: Layout, block_shape: tuple[int, int]) -> tuple[torch.Tensor, Extended]:
    """This rank's lines of the 2-D view, and them extended to whole blocks."""
    local = x.to_local()
    local2d = local.reshape(lay.length, lay.shape2d[1]) if lay.axis == 0 else local.reshape(lay.shape2d[0], lay.length)
    return local2d, extend(local2d, lay, block_shape[lay.axis])


# ---------------------------------------------------------------- scale
def check_scale(scale: torch.Tensor, x: DTensor) -> torch.Tensor:
    """``validation.check_scale`` for a DTensor ``x``. Accepted:

    * a plain tensor, one of the broadcast forms of the 2-D view of the whole ``x`` (``(1, W)``,
      ``(W,)``, ``(H, 1)``, ``(H, W)``, one value), the same on every rank (replicated; each
      rank reads the lines its shard and halo need);
    * a DTensor on ``x``'s mesh, ``Replicate()`` on every mesh dim: its local tensor, as above;
    * a DTensor of ``x``'s shape placed like ``x`` (each rank holds the scale of its own shard).

    Returns the plain 2-D view broadcast to ``(H, W)`` (the first two), or the DTensor (the
    third). The checks of this rank run first, with no collective; then the ranks of the
    sharded mesh dim all-gather one (outcome, bad values) pair each and read it on the host
    (the one sync); a rank whose own scale was refused raises its own error, the others a
    ``ValueError``/``TypeError`` naming ``scale`` and the refusing ranks, so no rank is left
    waiting in a later collective. Replicated ``x`` (no sharded mesh dim): local checks only."""
    lay = layout(x)  # x's placement errors first: the same on every rank
    error: TypeError | ValueError | None = None
    checked, bad = None, torch.zeros((), dtype=torch.bool, device=x.device)
    try:
        checked, values = _scale_here(scale, x)
        bad = scale_values_bad(values)
    except (TypeError, ValueError) as err:
        error = err
    if lay.axis is None:
        if error is not None:
            raise error
        if bool(bad):
            raise ValueError(SCALE_VALUES_MESSAGE)
        return checked
    outcome = torch.stack([torch.tensor(_REFUSAL_CODES.get(type(error), 0), device=bad.device), bad.to(torch.int64)])
    outcomes = _collectives.all_gather(outcome, lay.group, lay.size).tolist()  # the one sync
    if error is not None:
        raise error
    refused = [q for q, (code, _) in enumerate(outcomes) if code]
    if refused:
        kind = TypeError if any(outcomes[q][0] == _REFUSAL_CODES[TypeError] for q in refused) else ValueError
        raise kind(f"scale was refused on rank(s) {refused} of x's sharded mesh dim {lay.mesh_dim} (see the error "
                   "there); every rank must pass a valid scale")
    holding = [q for q, (_, has_bad) in enumerate(outcomes) if has_bad]
    if holding:
        where = "" if not isinstance(scale, DTensor) or _replicated(scale) else f" (in the shards of rank(s) {holding})"
        raise ValueError(SCALE_VALUES_MESSAGE + where)
    return checked


_REFUSAL_CODES = {ValueError: 1, TypeError: 2}


def _replicated(t: DTensor) -> bool:
    return all(isinstance(p, Replicate) for p in t.placements)


def _scale_here(scale: torch.Tensor, x: DTensor) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's checks of a scale for DTensor ``x`` (no collective, no sync): the scale as
    ``check_scale`` returns it, and the values this rank checks (its local tensor)."""
    shape2d = shape_2d(x.shape)
    if not isinstance(scale, DTensor):
        return scale_view(scale, shape2d, x.device), scale
    if scale.device_mesh != x.device_mesh:
        raise ValueError(f"scale is a DTensor on mesh {scale.device_mesh}, but x is on mesh {x.device_mesh}; "
                         "a DTensor scale must be on x's mesh")
    local = scale.to_local()
    if _replicated(scale):
        return scale_view(local, shape2d, x.device), local
    if tuple(scale.placements) != tuple(x.placements) or scale.shape != x.shape:
        raise ValueError(
            f"scale is a DTensor of shape {tuple(scale.shape)} with placements {tuple(scale.placements)}; with a "
            f"DTensor x it must be of x's shape {tuple(x.shape)} placed like x {tuple(x.placements)}, or replicated "
            "(a plain tensor or Replicate() on every mesh dim) in one of the broadcast forms of the 2-D view "
            f"{shape2d}: (1, W), (H, 1), (H, W) or one value"
        )
    if local.shape != x.to_local().shape:
        raise ValueError(f"scale's local shard on this rank has shape {tuple(local.shape)}, but x's has "
                         f"{tuple(x.to_local().shape)}; a scale placed like x must be split like x")
    check_scale_tensor(local, x.device)
    return scale, local


def _extended_scale(scale: torch.Tensor | None, lay: Layout, ext: Extended,
                    block_shape: tuple[int, int]) -> torch.Tensor | None:
    """The scale of the extended shard's elements, broadcast to ``ext.data``'s shape (a view,
    or for a scale placed like ``x`` its local shard extended by the same halo as the data:
    one more all-gather, only where a shard boundary cuts a block)."""
    if scale is None:
        return None
    if not isinstance(scale, DTensor):  # the whole 2-D view, broadcast: read the lines needed
        return _lines(scale, lay.axis, ext.lo, ext.data.shape[lay.axis])
    local = scale.to_local()
    local2d = local.reshape(lay.length, lay.shape2d[1]) if lay.axis == 0 else local.reshape(lay.shape2d[0], lay.length)
    return extend(local2d, lay, block_shape[lay.axis]).data


def _ranked_data(data: torch.Tensor, scale: torch.Tensor | None, block_shape: tuple[int, int],
                 zeros_per_block: int) -> torch.Tensor:
    """What ``block_mask_given`` ranks inside the pruned blocks: the data, or with a scale
    ``t = float32(|x|) * float32(scale)`` (whose ``|t|`` orders as the scaled backends rank).
    ``block_mask_given`` takes no scale, so ``t`` is made as a float32 copy of the extended
    shard, and only where ranks matter (``0 < zeros_per_block < block size``)."""
    if scale is None or not 0 < zeros_per_block < block_shape[0] * block_shape[1]:
        return data
    return torch.mul(data, scale if scale.dtype == torch.float32 else scale.float()).abs_()


def block_mask(
    x: DTensor, k: int, block_shape: tuple[int, int], zeros_per_block: int, norm: str, impl: Backend,
    replicated: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], scale: torch.Tensor | None = None,
) -> tuple[DTensor, torch.Tensor]:
    """Keep-mask of ``x`` pruning its ``k`` lowest-scoring blocks (over the whole tensor), as a
    DTensor placed like ``x``, and the 0-dim bool non-finite flag of the whole tensor (not synced).
    ``replicated`` computes the mask of a whole local tensor (every mesh dim replicates; it
    applies the scale itself). ``scale``: None, or as ``check_scale`` returns it."""
    lay = layout(x)
    if lay.axis is None:
        mask, bad = replicated(x.to_local())
        return _like(x, mask), bad
    local2d, ext = _extended_local(x, lay, block_shape)
    ext_scale = _extended_scale(scale, lay, ext, block_shape)
    scores, bad = _backend_scores(impl, ext, lay, block_shape, norm, ext_scale)
    if 0 < k < n_blocks(lay.shape2d, block_shape):
        reduce = _SumOverRanks(lay.group, bad)
        threshold = impl.select_threshold(_owned(scores, ext, lay.axis), k, reduce)
        bad = reduce.flag
        row_ties = _row_ties(scores, ext, lay, threshold)
    else:
        bad = _collectives.all_reduce_sum(bad.to(torch.int32).reshape(1), lay.group)[0] != 0
        bits = torch.full((), PRUNE_ALL_BITS if k > 0 else 0, dtype=torch.int32, device=scores.device)
        threshold, row_ties = Threshold(bits, torch.zeros_like(bits)), None
    if zeros_per_block == 0 or ext.data.numel() == 0:
        mask2d = torch.ones(local2d.shape, dtype=torch.bool, device=local2d.device)
    else:
        ranked = _ranked_data(ext.data, ext_scale, block_shape, zeros_per_block)
        full = impl.block_mask_given(ranked, scores, threshold, row_ties, block_shape, zeros_per_block, norm)
        mask2d = _lines(full, lay.axis, lay.start - ext.lo, lay.length).contiguous()
    return _like(x, mask2d.reshape(x.to_local().shape)), bad


def block_norm(
    x: DTensor, block_shape: tuple[int, int], norm: str, impl: Backend,
    replicated: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], scale: torch.Tensor | None = None,
) -> tuple[DTensor, torch.Tensor]:
    """Block scores of ``x`` as a DTensor of the block grid's shape, and the non-finite flag.

    Sharded like ``x`` (``Shard(0)`` or ``Shard(1)`` of the grid) where the blocks each rank
    owns are ``torch.chunk``'s split of the grid (shard boundaries fall between blocks and
    split the grid evenly); otherwise replicated on every rank (one all-gather of the
    owned scores, a ``1/(bh*bw)`` of the data).
    """
    lay = layout(x)
    if lay.axis is None:
        scores, bad = replicated(x.to_local())
        return DTensor.from_local(scores, x.device_mesh, x.placements, run_check=False), bad
    _, ext = _extended_local(x, lay, block_shape)
    scores, bad = _backend_scores(impl, ext, lay, block_shape, norm, _extended_scale(scale, lay, ext, block_shape))
    bad = _collectives.all_reduce_sum(bad.to(torch.int32).reshape(1), lay.group)[0] != 0
    owned = _owned(scores, ext, lay.axis)
    b = block_shape[lay.axis]
    grid = block_grid(lay.shape2d, block_shape)
    owned_lines = [_owned_block_lines(lay, q, b) for q in range(lay.size)]
    chunked = chunk_split(grid[lay.axis], lay.size)
    if all(n == c_n and (n == 0 or s == c_s) for (s, n), (c_s, c_n) in zip(owned_lines, chunked, strict=True)):
        placements = list(x.placements)
        placements[lay.mesh_dim] = Shard(lay.axis)
        return _from_local(owned.contiguous(), x, placements, grid), bad
    most = max(n for _, n in owned_lines)
    padded = torch.zeros(_with(grid, lay.axis, most), dtype=torch.float32, device=scores.device)
    _lines(padded, lay.axis, 0, owned.shape[lay.axis]).copy_(owned)
    gathered = _collectives.all_gather(padded, lay.group, lay.size)
    full = torch.cat([_lines(gathered[q], lay.axis, 0, n) for q, (_, n) in enumerate(owned_lines)], dim=lay.axis)
    return _from_local(full, x, [Replicate()] * len(x.placements), grid), bad


def _owned_block_lines(lay: Layout, q: int, b: int) -> tuple[int, int]:
    """(first, count) of the block lines whose first line rank ``q`` holds."""
    start, length = lay.starts[q], lay.lengths[q]
    first = cdiv(start, b)
    return first, (max(0, cdiv(start + length, b) - first) if length else 0)


def _with(shape: Sequence[int], axis: int, n: int) -> list[int]:
    out = list(shape)
    out[axis] = n
    return out


def nonfinite(x: DTensor) -> torch.Tensor:
    """0-dim bool: does any shard of ``x`` hold NaN or infinity? (One small all-reduce; no sync.)"""
    lay = layout(x)
    bad = _common.nonfinite(x.to_local())
    if lay.axis is None:
        return bad
    return _collectives.all_reduce_sum(bad.to(torch.int32).reshape(1), lay.group)[0] != 0


def masked(x: DTensor, mask: DTensor, inplace: bool) -> DTensor:
    """``x * mask`` shard by shard (in place with ``inplace``), without a check."""
    local, keep = x.to_local(), mask.to_local()
    keep = keep if keep.dtype == torch.bool else keep != 0
    if inplace:
        local.mul_(keep)
        return x
    return _like(x, local * keep)


def check_same_placement(x: DTensor, mask: object) -> None:
    """``mask`` must be a DTensor on ``x``'s mesh with ``x``'s placements."""
    if not isinstance(mask, DTensor):
        raise TypeError(f"mask must be a DTensor like x (x is sharded: {tuple(x.placements)}); got {type(mask).__name__}")
    if mask.device_mesh != x.device_mesh or tuple(mask.placements) != tuple(x.placements):
        raise ValueError(
            f"mask must be placed like x: x has placements {tuple(x.placements)} on mesh {x.device_mesh}, "
            f"mask {tuple(mask.placements)} on mesh {mask.device_mesh}"
        )


def _contiguous_stride(shape: Sequence[int]) -> tuple[int, ...]:
    stride, step = [], 1
    for s in reversed(shape):
        stride.append(step)
        step *= max(s, 1)
    return tuple(reversed(stride))


def _from_local(local: torch.Tensor, like: DTensor, placements: Sequence[Placement], shape: Sequence[int]) -> DTensor:
    return DTensor.from_local(
        local, like.device_mesh, placements, run_check=False, shape=torch.Size(shape), stride=_contiguous_stride(shape)
    )


def _like(x: DTensor, local: torch.Tensor) -> DTensor:
    """``local`` (this rank's part of a tensor of ``x``'s shape) as a DTensor placed like ``x``."""
    return _from_local(local, x, x.placements, x.shape)
