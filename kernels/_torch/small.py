"""The small-tensor path: the masks of one or many small tensors (at most
``_config.SMALL_MAX_ELEMENTS`` elements each, blocks of at most ``PAIRWISE_RANK_MAX``
elements) by a short sequence of whole-batch ops, with no chunks and no radix passes, whose
fixed cost (a few hundred us of Python and small ops per tensor) is most of the time there.

The tensors of a batch are laid out by in-block position, as one ``(block_size, n_blocks_total)``
matrix: row ``p`` holds element ``p`` (row-major within the block) of every block, blocks in
flat order, tensor after tensor (partial edge blocks padded), so that every op below reads
and writes contiguous rows. Then, for the whole batch:

* scores: the float32 sums of |x| (or x*x, or the scaled ``t``) one in-block position at a
  time, in order (padding adds +0, which changes no sum), over the elements inside: the same
  bits as ``block_norm``;
* selection: a tensor's ``k`` lowest blocks by score, ties by block index: those at most its
  ``k``-th smallest int64 key ``score bits << 32 | block index`` (``torch.kthvalue``), or, on
  the CPU, below its ``k``-th smallest score (``numpy.partition``) plus the first tied ones;
* in-block ranks as ``ranks`` computes them (padding ranks last: +inf);
* the mask: a pruned block keeps its in-block keep map, a kept block every element.

Same masks as the chunked path, bit for bit (``tests/kernels/test_small_path.py``)."""

from __future__ import annotations

import torch

from blocksparsity.kernels._common import block_grid, nonfinite
from blocksparsity.kernels._torch import _config
from blocksparsity.kernels._torch._blocks import blocked, counts_inside
from blocksparsity.kernels._torch._policy import Policy
from blocksparsity.kernels._torch.ranks import in_block_keep_map

try:  # optional: numpy's introselect finds a tensor's k-th key faster than torch.kthvalue on the CPU
    import numpy as np
except ImportError:  # pragma: no cover - numpy comes with every torch install we test
    np = None

_NO_PRUNE = torch.iinfo(torch.int64).min  # a key below every block's: prunes nothing


def fits(x: torch.Tensor, block_shape: tuple[int, int]) -> bool:
    """Does ``x`` (2-D) take the small path with ``block_shape``?"""
    return x.numel() <= _config.SMALL_MAX_ELEMENTS and block_shape[0] * block_shape[1] <= _config.PAIRWISE_RANK_MAX


def _rows(x: torch.Tensor, block_shape: tuple[int, int], fill: float) -> torch.Tensor:
    """``x`` (2-D) as (n_blocks, block_size): one row per block in flat block order, its
    elements in row-major order, partial blocks padded with ``fill``. A view where it can be."""
    (n_rows, n_cols), (block_rows, block_cols) = x.shape, block_shape
    if block_rows == 1 and n_cols % block_cols == 0:
        return x.reshape(n_rows * (n_cols // block_cols), block_cols)
    n_block_rows, n_block_cols = block_grid(x.shape, block_shape)
    blocks = blocked(x, n_block_rows, n_block_cols, block_rows, block_cols, fill)
    return blocks.permute(0, 2, 1, 3).reshape(n_block_rows * n_block_cols, block_rows * block_cols)


def _by_position(ts: list[torch.Tensor], block_shape: tuple[int, int], fill: float) -> torch.Tensor:
    """The batch layout of ``ts`` (2-D, one dtype): ``(block_size, n_blocks_total)``, column
    ``j`` the elements of the batch's block ``j`` (``_rows`` of each tensor, transposed, side
    by side). Always a new contiguous tensor (``cat`` copies), never a view of the data."""
    return torch.cat([_rows(t, block_shape, fill).t() for t in ts], dim=1)


def _host_magnitudes(xs: list[torch.Tensor], block_shape: tuple[int, int]) -> torch.Tensor:
    """``_by_position(xs, ...).abs()`` of float32 CPU tensors, by numpy: one ``abs`` per
    tensor, read through the transposed view and written into its columns (no ``cat`` copy
    and no second pass). Padding +0. A new float32 tensor."""
    rows = [_rows(x.detach(), block_shape, 0.0) for x in xs]
    out = torch.empty(rows[0].shape[1], sum(r.shape[0] for r in rows), dtype=torch.float32)
    target, start = out.numpy(), 0
    for r in rows:
        np.abs(r.numpy().T, out=target[:, start : start + r.shape[0]])
        start += r.shape[0]
    return out

def _unrows(rows: torch.Tensor, shape: tuple[int, int], block_shape: tuple[int, int], owned: bool) -> torch.Tensor:
    """The inverse of ``_rows`` for one tensor's rows of a mask: bool ``shape``, contiguous, its
    own memory (``owned``: ``rows`` is already a contiguous buffer of its own)."""
    (n_rows, n_cols), (block_rows, block_cols) = shape, block_shape
    if block_rows == 1 and n_cols % block_cols == 0:
        mask = rows.reshape(n_rows, n_cols)
        return mask if owned and rows.is_contiguous() else mask.clone()
    n_block_rows, n_block_cols = block_grid(shape, block_shape)
    grid = rows.reshape(n_block_rows, n_block_cols, block_rows, block_cols).permute(0, 2, 1, 3)
    return grid.reshape(n_block_rows * block_rows, n_block_cols * block_cols)[:n_rows, :n_cols].contiguous()


def _kept_blocks(bits: np.ndarray, sizes: list[int], ks: list[int]) -> np.ndarray:
    """Which blocks each tensor keeps (bool, one per block of the batch): all but its ``k``
    lowest scores, ties by block index (``bits``: int32 score bits, tensor after tensor).

    Each tensor's ``k``-th smallest score by ``numpy.partition`` (introselect, no sort), one
    call for each run of tensors of the same size and ``k`` (the common case: a model's
    same-shaped layers at one level); a block is kept when its score is above it. Where more
    blocks than ``k`` are at most the threshold (ties at it), the tied blocks after the first
    ``k - #below`` by index are kept too: the rule of the int64 ``bits << 32 | index`` keys."""
    kept = np.empty(bits.shape, dtype=np.bool_)
    first = start = 0
    while first < len(sizes):
        n, k = sizes[first], ks[first]
        last = first + 1
        while last < len(sizes) and sizes[last] == n and ks[last] == k:
            last += 1
        run, run_kept = (a[start : start + n * (last - first)].reshape(last - first, n) for a in (bits, kept))
        if k == 0:
            run_kept[:] = True
        else:
            threshold = np.partition(run, k - 1, axis=1)[:, k - 1 : k]
            np.greater(run, threshold, out=run_kept)
            # Each tensor keeps at most n - k blocks here (its k-th smallest and all below are
            # out); all of them keep exactly n - k unless ties at a threshold pruned more.
            if np.count_nonzero(run_kept) < (n - k) * (last - first):
                for i in np.flatnonzero(run_kept.sum(axis=1) < n - k):
                    tied = np.flatnonzero(run[i] == threshold[i])
                    run_kept[i, tied[k - (n - len(tied) - np.count_nonzero(run_kept[i])):]] = True
        start += n * (last - first)
        first = last
    return kept


def _numpy_keep(by_position: torch.Tensor, valid: torch.Tensor | None, counts: torch.Tensor | None, norm: str,
                sizes: list[int], ks: list[int], zeros_per_block: int) -> tuple[torch.Tensor, bool]:
    """The CPU's core of ``block_masks`` in numpy (whose small ops cost a fraction of torch's):
    the keep map (bool (n_blocks, block_size), block-major) and whether every score is finite.
    ``by_position``: float32 (block_size, n_blocks), |x| (or ``t``) in the batch layout, padding
    +0; ``valid``: bool, the same layout, False on padding (or None: no partial block). The
    same float32 ops in the same order as the torch core (``_torch_keep``): the same bits."""
    m = by_position.numpy()
    block_size, n_blocks = m.shape
    values = m if norm == "L1" else m * m
    sums = values[0].copy()
    for p in range(1, block_size):
        sums += values[p]
    scores = sums / (np.float32(block_size) if counts is None else counts.numpy())
    bits = scores.view(np.int32)
    finite = bool(bits.view(np.uint32).max() < 0x7F800000)  # no NaN, inf or negative score (sign bit)
    kept = _kept_blocks(bits, sizes, ks)
    word = {1: np.uint8, 2: np.int16, 4: np.int32, 8: np.int64}.get(block_size)
    ones = int.from_bytes(b"\x01" * block_size, "little")  # 1 in every byte of a word
    if word is not None:  # a kept block as one word: 1 in each of its bools
        kept_words = np.multiply(kept, word(ones), dtype=word)
    if not 0 < zeros_per_block < block_size:
        if word is None:
            return torch.from_numpy(np.broadcast_to(kept[:, None], (n_blocks, block_size)).copy()), finite
        return torch.from_numpy(kept_words.view(np.bool_).reshape(n_blocks, block_size)), finite
    if valid is not None:  # padding ranks after every element
        m = np.where(valid.numpy(), m, np.float32(np.inf))
    rank_bits = m.view(np.int32)  # |x| >= +0 (or +inf): ordered like its int32 bits
    if word is not None:  # ``ranks.packed_rank_at_least``: byte p of each word ends at rank + 8 - zeros_per_block
        packed = np.full(n_blocks, sum((block_size - 1 - p + 8 - zeros_per_block) << (8 * p)
                                       for p in range(block_size)), dtype=word)
        for p in range(block_size):
            for q in range(p + 1, block_size):
                packed += np.multiply(rank_bits[p] <= rank_bits[q], (1 << (8 * q)) - (1 << (8 * p)), dtype=word)
        packed >>= 3
        packed &= word(ones)
        packed |= kept_words  # a kept block keeps every element
        return torch.from_numpy(packed.view(np.bool_).reshape(n_blocks, block_size)), finite
    ranks = np.empty((block_size, n_blocks), dtype=np.int16)  # ``ranks.pairwise_ranks``, by position
    ranks[:] = np.arange(block_size - 1, -1, -1, dtype=np.int16)[:, None]
    for p in range(block_size):
        for q in range(p + 1, block_size):
            p_first = rank_bits[p] <= rank_bits[q]
            ranks[q] += p_first
            ranks[p] -= p_first
    keep = np.ascontiguousarray((ranks >= zeros_per_block).T)
    keep |= kept[:, None]
    return torch.from_numpy(keep), finite


def _torch_keep(by_position: torch.Tensor, valid: torch.Tensor | None, counts: torch.Tensor | None, norm: str,
                sizes: list[int], ks: list[int], zeros_per_block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The core of ``block_masks`` in torch ops, with no host sync: the keep map (bool
    (n_blocks, block_size)) and the scores (float32 (n_blocks,)). Arguments as ``_numpy_keep``."""
    block_size, n_blocks = by_position.shape
    values = by_position if norm == "L1" else by_position * by_position
    sums = values[0].clone()
    for p in range(1, block_size):
        sums.add_(values[p])
    scores = sums.div_(float(block_size) if counts is None else counts)
    keys = scores.view(torch.int32).to(torch.int64).bitwise_left_shift_(32)
    keys.add_(torch.arange(n_blocks, device=keys.device))
    per_tensor = torch.stack([
        part.kthvalue(k).values if k > 0 else torch.full((), _NO_PRUNE, dtype=torch.int64, device=keys.device)
        for part, k in zip(torch.split(keys, sizes), ks, strict=True)])
    kept = keys > per_tensor.repeat_interleave(torch.tensor(sizes, device=keys.device), output_size=n_blocks)
    if not 0 < zeros_per_block < block_size:
        return kept[:, None].expand(n_blocks, block_size), scores
    if valid is not None:  # padding ranks after every element
        by_position = by_position.masked_fill(~valid, float("inf"))
    keep = in_block_keep_map(by_position, zeros_per_block).reshape(n_blocks, block_size)
    return keep.bitwise_or_(kept[:, None]), scores


def block_masks(
    xs: list[torch.Tensor], ks: list[int], block_shape: tuple[int, int], zeros_per_block: int, norm: str,
    scales: list[torch.Tensor | None] | None, policy: Policy,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The bool keep-masks (contiguous, each of its x's shape) and the 1-D bool non-finite
    flags of ``xs`` (non-empty 2-D, one device and dtype, each ``fits``), exactly as
    ``block_mask.block_mask`` on each. ``scales``: None, or one float scale per x, broadcast
    to its shape (every entry given: the caller groups by having a scale)."""
    block_rows, block_cols = block_shape
    grids = [block_grid(x.shape, block_shape) for x in xs]
    sizes = [n * m for n, m in grids]

    on_host = policy.host_reads and np is not None and xs[0].device.type == "cpu"
    if scales is None and on_host and xs[0].dtype == torch.float32:
        magnitudes = _host_magnitudes(xs, block_shape)  # numpy's small ops cost less
    else:  # a copy (``cat``): the ops below write into it
        raw = _by_position(xs, block_shape, 0.0).detach()
        magnitudes = raw.float()
        if scales is not None:  # t = float32(|x|) * float32(scale)
            magnitudes.mul_(_by_position(scales, block_shape, 0.0).float())
        magnitudes.abs_()  # |x| (or t) in float32: exact
    counts = valid = None
    # Partial edge blocks divide by the elements inside; padding (0 in the sums) ranks last.
    if any(n_br * block_rows != x.shape[0] or n_bc * block_cols != x.shape[1]
           for x, (n_br, n_bc) in zip(xs, grids, strict=True)):
        counts = torch.cat([
            (counts_inside(n_br, block_rows, x.shape[0], 0, x.device)[:, None]
             * counts_inside(n_bc, block_cols, x.shape[1], 0, x.device)).reshape(-1)
            for x, (n_br, n_bc) in zip(xs, grids, strict=True)])
        valid = _by_position([torch.ones(x.shape, dtype=torch.bool, device=x.device) for x in xs], block_shape, 0.0)
    if on_host:
        with np.errstate(all="ignore"):  # overflow to inf, NaN compares: as in torch, and flagged
            keep, finite = _numpy_keep(magnitudes, valid, counts, norm, sizes, ks, zeros_per_block)
        flags = torch.zeros(len(xs), dtype=torch.bool) if finite else torch.stack([nonfinite(x) for x in xs])
    else:
        keep, _ = _torch_keep(magnitudes, valid, counts, norm, sizes, ks, zeros_per_block)
        flags = torch.stack([nonfinite(x) for x in xs])  # exact, from the data (a sum can overflow)
    masks, start = [], 0
    for x, n in zip(xs, sizes, strict=True):
        masks.append(_unrows(keep[start : start + n], x.shape, block_shape, owned=len(xs) == 1))
        start += n
    return masks, flags
