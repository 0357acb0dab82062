"""The small-tensor path: the masks of one or many small tensors (at most
``_config.SMALL_MAX_ELEMENTS`` elements each, blocks of at most ``PAIRWISE_RANK_MAX``
elements) by a short sequence of whole-batch ops, with no chunks and no radix passes, whose
fixed cost (a few hundred us of Python and small ops per tensor) is most of the time there.

The tensors of a batch are laid out as one ``(n_blocks_total, block_size)`` matrix, each row a
block's elements in row-major order (partial edge blocks padded), then, for the whole batch:

* scores: the float32 sums of |x| (or x*x, or the scaled ``t``) one in-block position at a
  time, in order (padding adds +0, which changes no sum), over the elements inside: the same
  bits as ``block_norm``;
* selection: a unique int64 key per block, ``score bits << 32 | block index``, orders blocks by
  score, ties by index; a tensor's ``k`` lowest are those whose key is at most its ``k``-th
  smallest key (``numpy.partition`` per tensor on the CPU, ``torch.kthvalue`` elsewhere);
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
    n_block_rows, n_block_cols = block_grid(x.shape, block_shape)
    if block_rows == 1 and n_cols % block_cols == 0:
        return x.reshape(n_rows * n_block_cols, block_cols)
    blocks = blocked(x, n_block_rows, n_block_cols, block_rows, block_cols, fill)
    return blocks.permute(0, 2, 1, 3).reshape(n_block_rows * n_block_cols, block_rows * block_cols)


def _unrows(rows: torch.Tensor, shape: tuple[int, int], block_shape: tuple[int, int], owned: bool) -> torch.Tensor:
    """The inverse of ``_rows`` for one tensor's rows of a mask: bool ``shape``, contiguous, its
    own memory (``owned``: ``rows`` is already a contiguous buffer of its own)."""
    (n_rows, n_cols), (block_rows, block_cols) = shape, block_shape
    n_block_rows, n_block_cols = block_grid(shape, block_shape)
    if block_rows == 1 and n_cols % block_cols == 0:
        mask = rows.reshape(n_rows, n_cols)
        return mask if owned and rows.is_contiguous() else mask.clone()
    grid = rows.reshape(n_block_rows, n_block_cols, block_rows, block_cols).permute(0, 2, 1, 3)
    return grid.reshape(n_block_rows * block_rows, n_block_cols * block_cols)[:n_rows, :n_cols].contiguous()


def _partial(x: torch.Tensor, block_shape: tuple[int, int]) -> bool:
    return x.shape[0] % block_shape[0] != 0 or x.shape[1] % block_shape[1] != 0


def _numpy_keep(magnitudes: torch.Tensor, valid: torch.Tensor | None, counts: torch.Tensor | None, norm: str,
                sizes: list[int], ks: list[int], zeros_per_block: int) -> tuple[torch.Tensor, bool]:
    """The CPU's core of ``block_masks`` in numpy (whose small ops cost a fraction of torch's):
    the keep map (bool (n_blocks, block_size), block-major) and whether every score is finite.
    The same float32 ops in the same order as the torch core (``_torch_keep``): the same bits."""
    m = magnitudes.numpy()
    n_blocks, block_size = m.shape
    values = m if norm == "L1" else m * m
    sums = values[:, 0].copy()
    for p in range(1, block_size):
        sums += values[:, p]
    scores = sums / (np.float32(block_size) if counts is None else counts.numpy())
    bits = scores.view(np.int32)
    finite = bool(bits.max() < 0x7F800000) and bool(bits.min() >= 0)
    keys = bits.astype(np.int64)
    keys <<= 32
    keys += np.arange(n_blocks, dtype=np.int64)
    thresholds, start = [], 0
    for n, k in zip(sizes, ks, strict=True):
        thresholds.append(_NO_PRUNE if k == 0 else int(np.partition(keys[start : start + n], k - 1)[k - 1]))
        start += n
    kept = keys > (thresholds[0] if len(sizes) == 1 else np.repeat(np.array(thresholds, dtype=np.int64), sizes))
    word = {1: np.uint8, 2: np.int16, 4: np.int32, 8: np.int64}.get(block_size)
    ones = int.from_bytes(b"\x01" * block_size, "little")  # 1 in every byte of a word
    if not 0 < zeros_per_block < block_size:
        if word is None:
            return torch.from_numpy(np.broadcast_to(kept[:, None], (n_blocks, block_size)).copy()), finite
        return torch.from_numpy((kept.astype(word) * word(ones)).view(np.bool_).reshape(n_blocks, block_size)), finite
    if valid is not None:  # padding ranks after every element
        m = np.where(valid.numpy(), m, np.float32(np.inf))
    by_position = np.ascontiguousarray(m.T).view(np.int32)  # one contiguous row per in-block position
    if word is not None:  # ``ranks.packed_rank_at_least``: byte p of each word ends at rank + 8 - zeros_per_block
        packed = np.full(n_blocks, sum((block_size - 1 - p + 8 - zeros_per_block) << (8 * p)
                                       for p in range(block_size)), dtype=word)
        for p in range(block_size):
            for q in range(p + 1, block_size):
                packed += np.multiply(by_position[p] <= by_position[q], (1 << (8 * q)) - (1 << (8 * p)), dtype=word)
        packed >>= 3
        packed &= word(ones)
        keep = packed.view(np.bool_).reshape(n_blocks, block_size)
    else:  # ``ranks.pairwise_ranks``
        ranks = np.empty((n_blocks, block_size), dtype=np.int16)
        ranks[:] = np.arange(block_size - 1, -1, -1, dtype=np.int16)
        for p in range(block_size):
            for q in range(p + 1, block_size):
                p_first = by_position[p] <= by_position[q]
                ranks[:, q] += p_first
                ranks[:, p] -= p_first
        keep = ranks >= zeros_per_block
    keep |= kept[:, None]
    return torch.from_numpy(keep), finite


def _torch_keep(magnitudes: torch.Tensor, valid: torch.Tensor | None, counts: torch.Tensor | None, norm: str,
                sizes: list[int], ks: list[int], zeros_per_block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The core of ``block_masks`` in torch ops, with no host sync: the keep map (bool
    (n_blocks, block_size)) and the scores (float32 (n_blocks,))."""
    n_blocks, block_size = magnitudes.shape
    values = magnitudes if norm == "L1" else magnitudes * magnitudes
    sums = values[:, 0].clone()
    for p in range(1, block_size):
        sums.add_(values[:, p])
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
        magnitudes = magnitudes.masked_fill(~valid, float("inf"))
    keep = in_block_keep_map(magnitudes.t().contiguous(), zeros_per_block).reshape(n_blocks, block_size)
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

    def rows(ts: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([_rows(t, block_shape, 0.0) for t in ts]) if len(ts) > 1 else _rows(ts[0], block_shape, 0.0)

    raw = rows(xs).detach()
    on_host = policy.host_reads and np is not None and raw.device.type == "cpu"
    if scales is not None:  # t = float32(|x|) * float32(scale); a new tensor (``raw`` may be a view of x)
        magnitudes = torch.mul(raw, rows(scales).float()).abs_()
    elif on_host and raw.dtype == torch.float32:
        magnitudes = torch.from_numpy(np.abs(raw.numpy()))  # |x|: a new array (numpy's small ops cost less)
    else:
        magnitudes = raw.float().abs()  # |x| in float32: exact; a new tensor
    partial = [_partial(x, block_shape) for x in xs]
    counts = valid = None
    if any(partial):  # edge blocks divide by the elements inside; padding (0 in the sums) ranks last
        counts = torch.cat([
            (counts_inside(n_br, block_rows, x.shape[0], 0, x.device)[:, None]
             * counts_inside(n_bc, block_cols, x.shape[1], 0, x.device)).reshape(-1)
            for x, (n_br, n_bc) in zip(xs, grids, strict=True)])
        valid = rows([torch.ones(x.shape, dtype=torch.bool, device=x.device) for x in xs])
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
