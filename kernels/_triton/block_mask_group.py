"""Masks of a group of tensors (one dtype, one device, one block shape, one ``zeros_per_block``)
with one launch per stage for the whole group, instead of one set of launches per tensor.

Stages, each one launch over every tensor of the group:

1. scores and non-finite flags (``_group_block_norm_kernel``), into one float32 buffer holding
   every tensor's block grid one after the other (each from a multiple of ``ALIGN`` elements);
2. each tensor's threshold: three radix passes, each a histogram launch and a pick launch
   (``_group_radix_histogram_kernel``, ``_group_radix_pick_kernel``), then the ties per mask
   tile (``_group_tie_count_kernel``) and one ``cumsum``;
3. the masks (``_group_block_mask_kernel``), into one bool buffer holding every mask (each
   from a multiple of ``ALIGN`` elements).

How a program finds its tensor: the launcher writes a small int64 *member table* on the
device, field-major (field ``f`` of tensor ``t`` at ``table[f * n_tensors + t]``): each
tensor's data address and its scale's (raw pointers, cast back to typed pointers in the
kernels, as Triton's grouped GEMM tutorial does), its sizes and strides, and where its blocks,
its mask elements, its tiles and its selection programs start in the group's buffers and
grids (prefix sums). Program ``p`` of a launch belongs to the last tensor whose first
tile (or first selection program) is ``<= p`` (``member``). After the table, the same
device buffer holds each tensor's selection ``state`` (``[n_tensors, 2]`` int64, as
``select.radix_state``'s).

Every rule (scores, flags, pruned blocks, in-block ranks, radix digits, ties) is the
per-tensor kernels' own ``@triton.jit`` helper (``_blocks``, ``select``, ``block_mask``), so
masks equal the per-tensor ``block_mask``'s bit for bit. A group of one tensor takes the
per-tensor path.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from blocksparsity.kernels._common import PRUNE_ALL_BITS, block_grid, cdiv
from blocksparsity.kernels._triton import _config, _device
from blocksparsity.kernels._triton._blocks import block_scores, pruned_blocks
from blocksparsity.kernels._triton.block_mask import _mask_loop, _mask_tile, sparsify
from blocksparsity.kernels._triton.block_norm import flat_layout, scale_operands, strides
from blocksparsity.kernels._triton.select import RADIX_DIGITS, add_digit_histogram, count_ties, pick_digit

# Fields of the member table (field-major: field f of tensor t at table[f * n_tensors + t]).
X_ADDRESS = tl.constexpr(0)  # x.data_ptr()
SCALE_ADDRESS = tl.constexpr(1)  # the scale's data_ptr() (x's without HAS_SCALE; never read then)
N_ROWS = tl.constexpr(2)
N_COLS = tl.constexpr(3)
N_BLOCK_COLS = tl.constexpr(4)
N_BLOCKS = tl.constexpr(5)
X_ROW_STRIDE = tl.constexpr(6)
X_COL_STRIDE = tl.constexpr(7)
SCALE_ROW_STRIDE = tl.constexpr(8)
SCALE_COL_STRIDE = tl.constexpr(9)
FIRST_BLOCK = tl.constexpr(10)  # offset of the tensor's scores in the group's score buffer (of ALIGN)
FIRST_ELEMENT = tl.constexpr(11)  # offset of the tensor's mask in the group's mask buffer (of ALIGN)
FIRST_TILE = tl.constexpr(12)  # the tensor's first program in the block launches (norm, ties, mask)
FIRST_SELECT_PROGRAM = tl.constexpr(13)  # the tensor's first program in the histogram launches
SELECT_PROGRAMS = tl.constexpr(14)  # its number of histogram programs (0: no selection needed)
N_FIELDS = 15
# Members' scores and masks start at multiples of ALIGN elements of the group's buffers, so
# that (the buffers being 16-byte aligned) their loads and stores may be vectorised.
ALIGN = 16


@triton.jit
def member(program, table_ptr, n_tensors, FIRST: tl.constexpr, TENSORS_POW2: tl.constexpr):
    """The tensor (int32 scalar) that program ``program`` (int64) of a group launch works on: the
    last ``t`` with ``table[FIRST, t] <= program`` (``FIRST``: a prefix-sum field,
    ``FIRST_TILE`` or ``FIRST_SELECT_PROGRAM``; a tensor with no programs shares its first with
    the next one, and so is never chosen). One vector load of the field, no search."""
    t = tl.arange(0, TENSORS_POW2)
    first = tl.load(table_ptr + FIRST * n_tensors + t, mask=t < n_tensors, other=0)
    return tl.sum(((t < n_tensors) & (first <= program)).to(tl.int32), 0) - 1


@triton.jit
def entry(table_ptr, n_tensors, t, FIELD: tl.constexpr):
    """Field ``FIELD`` of tensor ``t`` in the member table (int64 scalar)."""
    return tl.load(table_ptr + FIELD * n_tensors + t)


@triton.jit
def first_of(table_ptr, n_tensors, t, FIELD: tl.constexpr):
    """``FIRST_BLOCK`` or ``FIRST_ELEMENT`` of tensor ``t``, a multiple of ``ALIGN`` (16), with the hint."""
    return tl.multiple_of(entry(table_ptr, n_tensors, t, FIELD), 16)


@triton.jit
def member_layout(
    x_ptr, scale_ptr, table_ptr, n_tensors, t,
    HAS_SCALE: tl.constexpr, FLAT_ADDRESSING: tl.constexpr, ALIGNED: tl.constexpr,
):
    """Tensor ``t``'s data and scale pointers (typed as ``x_ptr`` and ``scale_ptr``, which are
    only read for their types) and its ``(n_rows, n_cols, n_block_cols, n_blocks, x_row_stride,
    x_col_stride, scale_row_stride, scale_col_stride)``, as the per-tensor kernels take them.
    With ``FLAT_ADDRESSING`` the column strides are the constant 1 (the flat path's dense
    strides, so that loads vectorise as in a per-tensor launch); with ``ALIGNED`` (every
    member's data and scale address is a multiple of 16 bytes) the pointers carry that hint,
    which a pointer read from a table lacks (Triton gives it to pointer arguments)."""
    x = entry(table_ptr, n_tensors, t, X_ADDRESS).to(x_ptr.dtype)
    if ALIGNED:
        x = tl.multiple_of(x, 16)
    if HAS_SCALE:
        scale = entry(table_ptr, n_tensors, t, SCALE_ADDRESS).to(scale_ptr.dtype)
        if ALIGNED:
            scale = tl.multiple_of(scale, 16)
    else:
        scale = x
    n_cols = entry(table_ptr, n_tensors, t, N_COLS)
    if FLAT_ADDRESSING:
        x_row_stride = n_cols
        x_col_stride = 1
        scale_row_stride = n_cols
        scale_col_stride = 1
    else:
        x_row_stride = entry(table_ptr, n_tensors, t, X_ROW_STRIDE)
        x_col_stride = entry(table_ptr, n_tensors, t, X_COL_STRIDE)
        scale_row_stride = entry(table_ptr, n_tensors, t, SCALE_ROW_STRIDE)
        scale_col_stride = entry(table_ptr, n_tensors, t, SCALE_COL_STRIDE)
    return (x, scale, entry(table_ptr, n_tensors, t, N_ROWS), n_cols, entry(table_ptr, n_tensors, t, N_BLOCK_COLS),
            entry(table_ptr, n_tensors, t, N_BLOCKS), x_row_stride, x_col_stride, scale_row_stride, scale_col_stride)


@triton.jit(do_not_specialize=_config.DO_NOT_SPECIALIZE["_group_block_norm_kernel"])
def _group_block_norm_kernel(
    x_ptr, scale_ptr, table_ptr, scores_ptr, flags_ptr, n_tensors,
    L2_NORM: tl.constexpr, HAS_SCALE: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK_COLS: tl.constexpr,
    BLOCK_SIZE_POW2: tl.constexpr, BLOCKS_PER_PROGRAM: tl.constexpr, BLOCK_IN_REGISTERS: tl.constexpr,
    FLAT_ADDRESSING: tl.constexpr, ALIGNED: tl.constexpr, TENSORS_POW2: tl.constexpr,
):
    """Stage 1: every block's score of every tensor of the group, and each tensor's non-finite
    flag (as ``_block_norm_kernel`` per tensor, bit for bit).

    Pointers:
      x_ptr: the first tensor's data (float32/float16/bfloat16): only its type is used; every
        tensor's data is at ``table[X_ADDRESS, t]``, element ``(row, col)`` at
        ``row * x_row_stride + col * x_col_stride`` (the table's strides; ``(n_cols, 1)`` with
        ``FLAT_ADDRESSING``).
      scale_ptr: with ``HAS_SCALE``, the first tensor's scale (only its type is used; float32,
        float16, bfloat16 or float64, one dtype for the group); each tensor's scale, broadcast
        to its shape, at ``table[SCALE_ADDRESS, t]`` with the table's scale strides (0 in a
        broadcast dimension). Without ``HAS_SCALE`` unread (the launcher passes ``x_ptr``).
      table_ptr: ``[N_FIELDS, n_tensors]`` int64, the member table (see the module docstring).
      scores_ptr: ``[total blocks]`` float32: tensor ``t``'s block grid, flattened row-major,
        at ``[table[FIRST_BLOCK, t], + n_blocks)``.
      flags_ptr: ``[n_tensors]`` int32, zeroed by the caller; entry ``t`` set to 1 when tensor
        ``t`` holds NaN or infinity.

    Grid: ``(total tiles,)``: tensor ``t`` owns programs ``[table[FIRST_TILE, t], + cdiv(n_blocks,
    BLOCKS_PER_PROGRAM))``; its ``i``-th program scores blocks ``[i * BLOCKS_PER_PROGRAM, (i + 1) *
    BLOCKS_PER_PROGRAM)``.

    Constexprs: as ``_block_norm_kernel``'s (``FLAT_ADDRESSING`` only when every tensor and scale
    of the group qualifies); ``ALIGNED``: every member's data (and scale) address is a multiple
    of 16 bytes; ``TENSORS_POW2``: ``n_tensors`` rounded up to a power of two.
    """
    pid = tl.program_id(0).to(tl.int64)
    t = member(pid, table_ptr, n_tensors, FIRST_TILE, TENSORS_POW2)
    (x, scale, n_rows, n_cols, n_block_cols, n_blocks, x_row_stride, x_col_stride, scale_row_stride,
     scale_col_stride) = member_layout(x_ptr, scale_ptr, table_ptr, n_tensors, t, HAS_SCALE, FLAT_ADDRESSING,
                                       ALIGNED)
    blocks = (pid - entry(table_ptr, n_tensors, t, FIRST_TILE)) * BLOCKS_PER_PROGRAM + tl.arange(0, BLOCKS_PER_PROGRAM)
    scores, bad = block_scores(x, scale, blocks, n_rows, n_cols, n_block_cols, n_blocks, x_row_stride, x_col_stride,
                               scale_row_stride, scale_col_stride, L2_NORM, HAS_SCALE, BLOCK_ROWS, BLOCK_COLS,
                               BLOCK_SIZE_POW2, BLOCK_IN_REGISTERS, FLAT_ADDRESSING)
    tl.store(scores_ptr + first_of(table_ptr, n_tensors, t, FIRST_BLOCK) + blocks, scores, mask=blocks < n_blocks)
    tl.store(flags_ptr + t, 1, mask=bad != 0)


@triton.jit(do_not_specialize=_config.DO_NOT_SPECIALIZE["_group_radix_histogram_kernel"])
def _group_radix_histogram_kernel(
    scores_ptr, table_ptr, state_ptr, hist_ptr, n_tensors,
    DIGIT_SHIFT: tl.constexpr, DIGIT_BITS: tl.constexpr, SCORES_PER_STEP: tl.constexpr, TENSORS_POW2: tl.constexpr,
):
    """Stage 2, one radix pass: each tensor's histogram of one digit over its scores matching
    the digits chosen so far (``select._radix_histogram_kernel`` per tensor).

    Pointers:
      scores_ptr: ``[total blocks]`` float32, the stage-1 scores (tensor ``t``'s at
        ``table[FIRST_BLOCK, t]``, ``table[N_BLOCKS, t]`` of them).
      table_ptr: ``[N_FIELDS, n_tensors]`` int64, the member table.
      state_ptr: ``[n_tensors, 2]`` int64: each tensor's (prefix bits, k remaining).
      hist_ptr: ``[n_tensors, N_BINS]`` int64, zeroed by the caller; counts added atomically.

    Grid: ``(total selection programs,)``: tensor ``t`` owns ``table[SELECT_PROGRAMS, t]`` programs
    from ``table[FIRST_SELECT_PROGRAM, t]`` (none when its mask needs no selection), which stride
    over its scores as one ``_radix_histogram_kernel`` launch would.

    Constexprs: ``DIGIT_SHIFT``, ``DIGIT_BITS``, ``SCORES_PER_STEP`` as ``_radix_histogram_kernel``'s;
    ``TENSORS_POW2`` as ``_group_block_norm_kernel``'s.
    """
    pid = tl.program_id(0).to(tl.int64)
    t = member(pid, table_ptr, n_tensors, FIRST_SELECT_PROGRAM, TENSORS_POW2)
    add_digit_histogram(scores_ptr + first_of(table_ptr, n_tensors, t, FIRST_BLOCK), entry(table_ptr, n_tensors, t, N_BLOCKS),
                        tl.load(state_ptr + 2 * t), hist_ptr + t.to(tl.int64) * (1 << DIGIT_BITS),
                        pid - entry(table_ptr, n_tensors, t, FIRST_SELECT_PROGRAM),
                        entry(table_ptr, n_tensors, t, SELECT_PROGRAMS), DIGIT_SHIFT, DIGIT_BITS, SCORES_PER_STEP)


@triton.jit
def _group_radix_pick_kernel(hist_ptr, state_ptr, DIGIT_SHIFT: tl.constexpr, DIGIT_BITS: tl.constexpr):
    """Stage 2, after each histogram: tensor ``program_id(0)``'s digit (``select._radix_pick_kernel``);
    a tensor with ``k == 0`` left (no selection needed) keeps its state.

    Pointers: hist_ptr: ``[n_tensors, N_BINS]`` int64; state_ptr: ``[n_tensors, 2]`` int64, updated.
    Grid: ``(n_tensors,)``. Constexprs as ``_radix_pick_kernel``'s."""
    t = tl.program_id(0).to(tl.int64)
    pick_digit(hist_ptr + t * (1 << DIGIT_BITS), state_ptr + 2 * t, DIGIT_SHIFT, DIGIT_BITS)


@triton.jit(do_not_specialize=_config.DO_NOT_SPECIALIZE["_group_tie_count_kernel"])
def _group_tie_count_kernel(
    scores_ptr, table_ptr, state_ptr, tie_counts_ptr, n_tensors,
    BLOCKS_PER_PROGRAM: tl.constexpr, TENSORS_POW2: tl.constexpr,
):
    """Stage 2, last: scores equal to their tensor's threshold in each mask tile
    (``select._tie_count_kernel`` per tensor).

    Pointers:
      scores_ptr: ``[total blocks]`` float32; table_ptr: the member table; state_ptr:
        ``[n_tensors, 2]`` int64 (threshold bits, ties pruned).
      tie_counts_ptr: ``[total tiles]`` int64, one count per program.

    Grid: ``(total tiles,)``, the programs of ``_group_block_norm_kernel`` and
    ``_group_block_mask_kernel``. Constexprs as theirs."""
    pid = tl.program_id(0).to(tl.int64)
    t = member(pid, table_ptr, n_tensors, FIRST_TILE, TENSORS_POW2)
    first = (pid - entry(table_ptr, n_tensors, t, FIRST_TILE)) * BLOCKS_PER_PROGRAM
    ties = count_ties(scores_ptr + first_of(table_ptr, n_tensors, t, FIRST_BLOCK), first,
                      entry(table_ptr, n_tensors, t, N_BLOCKS), tl.load(state_ptr + 2 * t), BLOCKS_PER_PROGRAM)
    tl.store(tie_counts_ptr + pid, ties)


@triton.jit(do_not_specialize=_config.DO_NOT_SPECIALIZE["_group_block_mask_kernel"])
def _group_block_mask_kernel(
    x_ptr, scale_ptr, table_ptr, scores_ptr, state_ptr, ties_before_ptr, mask_ptr, n_tensors, zeros_per_block,
    HAS_SCALE: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK_COLS: tl.constexpr, BLOCK_SIZE_POW2: tl.constexpr,
    BLOCKS_PER_PROGRAM: tl.constexpr, BLOCK_IN_REGISTERS: tl.constexpr, FLAT_ADDRESSING: tl.constexpr,
    PRUNE_WHOLE_BLOCKS: tl.constexpr, ALIGNED: tl.constexpr, TENSORS_POW2: tl.constexpr,
):
    """Stage 3: every tensor's keep-mask (``_block_mask_kernel`` per tensor, without ``out``).
    The block scores are read from stage 1's buffer (the same bits the per-tensor kernel
    recomputes); with ``PRUNE_WHOLE_BLOCKS`` the data is not read at all (the launcher also
    sets it for ``zeros_per_block == 0``, where ``k == 0`` prunes no block: no ranks needed).

    Pointers:
      x_ptr, scale_ptr, table_ptr: as ``_group_block_norm_kernel``'s.
      scores_ptr: ``[total blocks]`` float32, stage 1's scores.
      state_ptr: ``[n_tensors, 2]`` int64, each tensor's (threshold bits, ties pruned).
      ties_before_ptr: ``[total tiles]`` int64: the exclusive prefix sum, over the whole group,
        of ``_group_tie_count_kernel``'s counts; tensor ``t``'s ties before program ``p`` are
        ``ties_before[p] - ties_before[table[FIRST_TILE, t]]``.
      mask_ptr: ``[total elements]`` bool: tensor ``t``'s mask, ``[n_rows, n_cols]`` contiguous,
        at ``table[FIRST_ELEMENT, t]``. True = keep.

    Grid: ``(total tiles,)``, as ``_group_block_norm_kernel``'s.

    Constexprs: as ``_block_mask_kernel``'s and ``_group_block_norm_kernel``'s.
    """
    pid = tl.program_id(0).to(tl.int64)
    t = member(pid, table_ptr, n_tensors, FIRST_TILE, TENSORS_POW2)
    (x, scale, n_rows, n_cols, n_block_cols, n_blocks, x_row_stride, x_col_stride, scale_row_stride,
     scale_col_stride) = member_layout(x_ptr, scale_ptr, table_ptr, n_tensors, t, HAS_SCALE, FLAT_ADDRESSING,
                                       ALIGNED)
    first_tile = entry(table_ptr, n_tensors, t, FIRST_TILE)
    blocks = (pid - first_tile) * BLOCKS_PER_PROGRAM + tl.arange(0, BLOCKS_PER_PROGRAM)
    inside = blocks < n_blocks
    scores = tl.load(scores_ptr + first_of(table_ptr, n_tensors, t, FIRST_BLOCK) + blocks, mask=inside, other=0.0)
    ties_before = tl.load(ties_before_ptr + pid) - tl.load(ties_before_ptr + first_tile)
    pruned = pruned_blocks(scores, blocks, n_blocks, tl.load(state_ptr + 2 * t), tl.load(state_ptr + 2 * t + 1),
                           ties_before)
    masks = mask_ptr + first_of(table_ptr, n_tensors, t, FIRST_ELEMENT)
    # No `out` (WRITE_MASKED False): `x` stands in for it, `inside` for the unread flag test.
    if BLOCK_IN_REGISTERS:
        _mask_tile(x, scale, x, masks, blocks, pruned, inside, n_rows, n_cols, n_block_cols, n_blocks,
                   x_row_stride, x_col_stride, scale_row_stride, scale_col_stride, x_row_stride, x_col_stride,
                   zeros_per_block, HAS_SCALE, BLOCK_ROWS, BLOCK_COLS, BLOCK_SIZE_POW2, BLOCKS_PER_PROGRAM,
                   FLAT_ADDRESSING, PRUNE_WHOLE_BLOCKS, False, False)
    else:
        _mask_loop(x, scale, x, masks, blocks, pruned, inside, n_rows, n_cols, n_block_cols, n_blocks,
                   x_row_stride, x_col_stride, scale_row_stride, scale_col_stride, x_row_stride, x_col_stride,
                   zeros_per_block, HAS_SCALE, BLOCK_ROWS, BLOCK_COLS, PRUNE_WHOLE_BLOCKS, False, False)


def _group_scales(xs: list[torch.Tensor], scales: list[torch.Tensor | None] | None) -> list[torch.Tensor] | None:
    """One scale per tensor, all of one dtype, each broadcast to its tensor's 2-D shape, or None
    when no tensor has one. A tensor without a scale in a group with scales gets a broadcast
    1 (``|x| * 1 == |x|`` and ``t * t == x * x`` exactly: the unscaled scores and ranks). Scales
    of different dtypes are all cast to float32 (what the kernels read them as), the broadcast
    dimensions first cut to one line, so no broadcast scale is materialised."""
    if scales is None or all(s is None for s in scales):
        return None
    dtypes = {s.dtype for s in scales if s is not None}
    dtype = dtypes.pop() if len(dtypes) == 1 else torch.float32
    out = []
    for x, s in zip(xs, scales, strict=True):
        if s is None:
            s = torch.ones((1, 1), dtype=dtype, device=x.device)
        elif s.dtype != dtype:
            s = s.expand(x.shape)
            s = s[: 1 if s.stride(0) == 0 else None, : 1 if s.stride(1) == 0 else None].to(dtype)
        out.append(s.expand(x.shape))
    return out


def block_mask_group(
    xs: list[torch.Tensor],
    ks: list[int],
    block_shape: tuple[int, int],
    zeros_per_block: int,
    norm: str,
    scales: list[torch.Tensor | None] | None = None,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Keep-masks of a group of 2-D tensors (one dtype and device, ``block_shape`` clipped to
    each), ``xs[i]`` pruning its ``ks[i]`` lowest-scoring blocks, and the ``[len(xs)]`` bool
    non-finite flags, on the device; each mask equal to ``block_mask(xs[i], ks[i], ...,
    scale=scales[i])``. One launch per stage for the whole group; a group of one tensor runs the
    per-tensor kernels. The masks are views of one fresh buffer, each contiguous. No host sync."""
    if len(xs) == 1:
        mask, flag = sparsify(xs[0], ks[0], block_shape, zeros_per_block, norm, None,
                              scale=None if scales is None else scales[0])
        return [mask], flag.reshape(1)
    return _block_mask_group(xs, ks, block_shape, zeros_per_block, norm, scales)


def _block_mask_group(
    xs: list[torch.Tensor],
    ks: list[int],
    block_shape: tuple[int, int],
    zeros_per_block: int,
    norm: str,
    scales: list[torch.Tensor | None] | None,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """``block_mask_group`` through the group kernels, for any number of tensors."""
    device, n = xs[0].device, len(xs)
    bh, bw = block_shape
    launch = _config.block_launch(block_shape)
    bpp = launch.blocks_per_program
    group_scales = _group_scales(xs, scales)
    has_scale = group_scales is not None
    operands = group_scales or [None] * n
    flat = all(flat_layout(x, block_shape, *scale_operands(x, s)) for x, s in zip(xs, operands, strict=True))

    grids = [block_grid(x.shape, block_shape) for x in xs]
    n_blocks = [rows * cols for rows, cols in grids]
    selecting = [0 < k < nb for k, nb in zip(ks, n_blocks, strict=True)]
    selected_blocks = sum(nb for nb, sel in zip(n_blocks, selecting, strict=True) if sel)
    columns: list[list[int]] = [[] for _ in range(N_FIELDS)]
    states: list[int] = []
    first_block = first_element = first_tile = first_program = 0
    for x, k, s, (_, n_block_cols), nb, sel in zip(xs, ks, operands, grids, n_blocks, selecting, strict=True):
        programs = _config.group_select_programs(nb, selected_blocks) if sel else 0
        x_strides = strides(x, flat)
        s_strides = strides(s, flat) if s is not None else (0, 0)
        row = (x.data_ptr(), (x if s is None else s).data_ptr(), *x.shape, n_block_cols, nb, *x_strides, *s_strides,
               first_block, first_element, first_tile, first_program, programs)
        for column, value in zip(columns, row, strict=True):
            column.append(value)
        # (prefix bits, k left): a tensor pruning no block or every block needs no selection.
        states += [0, k] if sel else [PRUNE_ALL_BITS if k >= nb else 0, 0]
        first_block += cdiv(nb, ALIGN) * ALIGN
        first_element += cdiv(x.numel(), ALIGN) * ALIGN
        first_tile += cdiv(nb, bpp)
        first_program += programs
    host = torch.tensor([v for column in columns for v in column] + states, dtype=torch.int64)
    table = host.to(device, non_blocking=True)  # one small copy, no sync
    state = table[N_FIELDS * n :]
    total_blocks, total_tiles = first_block, first_tile

    scores = torch.empty(total_blocks, dtype=torch.float32, device=device)
    flags = torch.zeros(n, dtype=torch.int32, device=device)
    buffer = torch.empty(first_element, dtype=torch.bool, device=device)
    x_ptr = xs[0]
    scale_ptr = group_scales[0] if has_scale else x_ptr
    addresses = [x.data_ptr() for x in xs] + [s.data_ptr() for s in group_scales or ()]
    shape = {"BLOCK_ROWS": bh, "BLOCK_COLS": bw, "BLOCK_SIZE_POW2": launch.block_size_pow2,
             "BLOCKS_PER_PROGRAM": bpp, "BLOCK_IN_REGISTERS": launch.in_registers, "FLAT_ADDRESSING": flat,
             "ALIGNED": all(a % 16 == 0 for a in addresses), "TENSORS_POW2": triton.next_power_of_2(n)}
    with _device.on_device(xs[0]):
        _group_block_norm_kernel[(total_tiles,)](
            x_ptr, scale_ptr, table, scores, flags, n, L2_NORM=norm == "L2", HAS_SCALE=has_scale, **shape,
            **_config.LAUNCH_OPTIONS,
        )
        if first_program:  # some tensor prunes some but not all of its blocks
            hist = torch.zeros(n * sum(1 << bits for _, bits in RADIX_DIGITS), dtype=torch.int64, device=device)
            start = 0
            for digit_shift, digit_bits in RADIX_DIGITS:
                part = hist[start : start + n * (1 << digit_bits)]
                _group_radix_histogram_kernel[(first_program,)](
                    scores, table, state, part, n, DIGIT_SHIFT=digit_shift, DIGIT_BITS=digit_bits,
                    SCORES_PER_STEP=_config.SELECT_TILE, TENSORS_POW2=shape["TENSORS_POW2"], **_config.LAUNCH_OPTIONS,
                )
                _group_radix_pick_kernel[(n,)](
                    part, state, DIGIT_SHIFT=digit_shift, DIGIT_BITS=digit_bits, **_config.LAUNCH_OPTIONS,
                )
                start += n * (1 << digit_bits)
            tie_counts = torch.empty(total_tiles, dtype=torch.int64, device=device)
            _group_tie_count_kernel[(total_tiles,)](
                scores, table, state, tie_counts, n, BLOCKS_PER_PROGRAM=bpp, TENSORS_POW2=shape["TENSORS_POW2"],
                **_config.LAUNCH_OPTIONS,
            )
            ties_before = torch.cumsum(tie_counts, 0) - tie_counts  # exclusive, over the group
        else:  # thresholds prune nothing or everything: ties never decide
            ties_before = torch.zeros(total_tiles, dtype=torch.int64, device=device)
        _group_block_mask_kernel[(total_tiles,)](
            x_ptr, scale_ptr, table, scores, state, ties_before, buffer, n, zeros_per_block, HAS_SCALE=has_scale,
            PRUNE_WHOLE_BLOCKS=zeros_per_block >= bh * bw or zeros_per_block == 0, **shape, **_config.LAUNCH_OPTIONS,
        )
    masks, start = [], 0
    for x in xs:
        masks.append(buffer[start : start + x.numel()].view(x.shape))
        start += cdiv(x.numel(), ALIGN) * ALIGN
    return masks, flags != 0
