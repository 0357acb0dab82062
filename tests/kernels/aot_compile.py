"""Compile every Triton kernel for NVIDIA GPUs without a GPU (run in its own process:
Triton's interpreter must be off), with the specialisations real launches get. Catches
code that the interpreter accepts but the compiler rejects.

The launches are not written out by hand: the real launchers (``blocksparsity.kernels._triton``)
run on CPU tensors (and on meta tensors of more than 2**31 elements) with every kernel
replaced by a recorder, over dtypes, layouts (contiguous, transposed, (H, 1) columns,
misaligned slices), the block shapes ``clip_block`` makes (1-2 elements too), both norms,
every ``zeros_per_block`` class, float64 ``apply_mask``, and ``scale=`` (``HAS_SCALE``) in each
broadcast form (per column, per row, full, one value; float32 and float16 scales). Each recorded launch is then
specialised exactly as ``JITFunction.run`` would specialise it (Triton's own binder: i32 or
i64 per value, ``== 1`` as a constant, divisibility by 16 as an attribute, pointer
alignment), and every distinct specialisation is compiled.

Usage: python tests/kernels/aot_compile.py [ARCH ...]  (default: 90 80)."""

from __future__ import annotations

import importlib
import os
import sys

os.environ["TRITON_INTERPRET"] = "0"

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import make_backend
from triton.runtime.jit import create_function_from_signature

from blocksparsity.kernels._common import Threshold, shape_2d
from blocksparsity.kernels.api import clip_block

MODULES = ("apply_mask", "block_mask", "block_mask_group", "block_norm", "select")
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# Every block shape in float32; in 16-bit types the ones that exercise something else
# (1-2 element blocks from clip_block, a flat (1, 4), 2-D tiles, the loop path).
BLOCK_SHAPES = ((1, 4), (1, 1), (1, 2), (2, 1), (2, 2), (1, 8), (2, 3), (4, 4), (3, 5), (1, 17), (8, 8))
HALF_BLOCK_SHAPES = ((1, 4), (1, 1), (1, 2), (2, 3), (1, 17))
HALF_LAYOUTS = ("contiguous", "column", "misaligned", "huge")
SCALED_BLOCK_SHAPES = ((1, 4), (2, 3), (1, 17))  # flat/tile, 2-D tile, loop path


class Recorder:
    """Stands in for a kernel: ``kernel[grid](*args, **kwargs)`` records the launch."""

    def __init__(self, kernel, log: list):
        self.kernel, self.log = kernel, log

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.log.append((self.kernel, args, kwargs))


def layouts(dtype: torch.dtype):
    """2-D inputs as the API hands them to a backend: (name, tensor)."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(64, 80, generator=g).to(dtype)
    yield "contiguous", base  # every size and stride divisible by 16
    yield "odd", base[:13, :11]  # strided, odd sizes
    yield "transposed", base.t()
    yield "row", base.reshape(1, -1)[:, :37]  # 1-D data: H == 1
    yield "column", base[:1].t()  # (H, 1), strides (1, H)
    yield "misaligned", base.reshape(-1)[1:1 + 40 * 24].view(40, 24)  # data_ptr not 16-byte aligned
    # More than 2**31 elements (meta: no memory): i64 sizes, strides and block counts.
    yield "huge", torch.empty(1 << 16, (1 << 15) + 16, dtype=dtype, device="meta")
    yield "huge-row", torch.empty(1, (1 << 31) + 64, dtype=dtype, device="meta")


def scales(x: torch.Tensor, dtype: torch.dtype):
    """The scale forms the API hands a backend (broadcast to ``x`` by ``expand``): per column,
    per row, full (contiguous: the flat path), one value."""
    h, w = x.shape
    for shape in ((1, w), (h, 1), (h, w), (1, 1)):
        yield torch.ones(shape, dtype=dtype, device=x.device).expand(h, w)


def record_scaled(x: torch.Tensor, dtype: torch.dtype) -> None:
    """Scaled launches (``HAS_SCALE``) of ``block_norm``, ``block_mask`` and ``sparsify`` over ``x``."""
    from blocksparsity.kernels import _triton

    for requested in SCALED_BLOCK_SHAPES:
        bs = clip_block(shape_2d(x.shape), requested)
        size = bs[0] * bs[1]
        for scale in scales(x, torch.float32 if dtype == torch.float32 else torch.float16):
            for norm in ("L1", "L2"):
                _triton.block_norm(x, bs, norm, scale=scale)
                for zpb in {size, max(1, size // 2)}:
                    _triton.block_mask(x, 7, bs, zpb, norm, scale=scale)
                    _triton.sparsify(x, 7, bs, zpb, norm, x, scale=scale)


def record_groups(dtype: torch.dtype) -> None:
    """Group launches (``block_mask_group``: the member-table kernels) over groups of the
    layouts above: all of them (strided, so not flat) and the contiguous ones alone (flat for
    (1, bw) blocks tiling rows), members grouped by the block shape ``clip_block`` gives them,
    every ``zeros_per_block`` class (0, part, whole), both norms, with and without selection,
    and scaled groups (one scale dtype; mixed dtypes, cast to float32; members without one)."""
    from blocksparsity.kernels import _triton

    named = {name: x for name, x in layouts(dtype) if not x.is_meta}
    groups = (list(named.values()), [named["contiguous"], named["misaligned"]])
    for requested in (BLOCK_SHAPES if dtype == torch.float32 else HALF_BLOCK_SHAPES):
        for members in groups:
            by_shape: dict = {}
            for x in members:
                by_shape.setdefault(clip_block(shape_2d(x.shape), requested), []).append(x)
            for bs, xs in by_shape.items():
                xs = xs if len(xs) > 1 else xs * 2  # a group of one takes the per-tensor path
                size = bs[0] * bs[1]
                ks = [max(1, x.numel() // size // 2) for x in xs]
                for norm in ("L1", "L2"):
                    for zpb in {size, max(1, size // 2)}:
                        _triton.block_mask_group(xs, ks, bs, zpb, norm)
                _triton.block_mask_group(xs, [0] * len(xs), bs, 0, "L1")  # no selection
                if requested in SCALED_BLOCK_SHAPES:
                    for scale_dtypes in ((torch.float32,), (torch.float16,), (torch.float16, torch.float64, None)):
                        group_scales = []
                        for i, x in enumerate(xs):  # member i: the i-th form (per column, per row, full, one value)
                            h, w = x.shape
                            scale_dtype = scale_dtypes[i % len(scale_dtypes)]
                            form = ((1, w), (h, 1), (h, w), (1, 1))[i % 4]
                            group_scales.append(None if scale_dtype is None else
                                                torch.ones(form, dtype=scale_dtype, device=x.device).expand(h, w))
                        _triton.block_mask_group(xs, ks, bs, max(1, size // 2), "L2", group_scales)


def record_launches() -> list:
    """Every launch the launchers make over the configurations above (kernels not run)."""
    log: list = []
    for name in MODULES:
        module = importlib.import_module(f"blocksparsity.kernels._triton.{name}")
        for attr in [a for a in vars(module) if a.startswith("_") and a.endswith("_kernel")]:
            setattr(module, attr, Recorder(getattr(module, attr), log))
    from blocksparsity.kernels import _triton

    for dtype in DTYPES:
        for layout, x in layouts(dtype):
            huge = x.is_meta
            if dtype != torch.float32 and layout not in HALF_LAYOUTS:
                continue
            shapes = BLOCK_SHAPES if dtype == torch.float32 else HALF_BLOCK_SHAPES
            for requested in shapes if not huge else ((1, 4), (1, 1), (2, 3)):
                bs = clip_block(shape_2d(x.shape), requested)
                size = bs[0] * bs[1]
                for norm in ("L1", "L2"):
                    _triton.block_norm(x, bs, norm)
                    for zpb in {size, max(1, size // 2)}:
                        _triton.block_mask(x, 7, bs, zpb, norm)
                        _triton.sparsify(x, 7, bs, zpb, norm, torch.empty_like(x))
                        _triton.sparsify(x, 7, bs, zpb, norm, x)
                if not huge:
                    scores, _ = _triton.block_norm(x, bs, "L1")
                    threshold = _triton.select_threshold(scores, 3)
                    _triton.block_mask_given(x, scores, threshold, None, bs, size, "L1")
                    row_ties = torch.zeros(scores.shape[0], dtype=torch.int64)
                    t = Threshold(torch.zeros((), dtype=torch.int32), torch.zeros((), dtype=torch.int64))
                    _triton.block_mask_given(x, scores, t, row_ties, bs, max(1, size // 2), "L1")
            record_scaled(x, dtype)
            keep = torch.ones(x.shape, dtype=torch.bool, device=x.device)
            _triton.apply_mask(x, keep, torch.empty_like(x))
            _triton.apply_mask(x, keep, x)
    for dtype in DTYPES:
        record_groups(dtype)
    for _, x in layouts(torch.float64):  # float64: apply_mask only
        keep = torch.ones(x.shape, dtype=torch.bool, device=x.device)
        _triton.apply_mask(x, keep, torch.empty_like(x))
        _triton.apply_mask(x, keep, x)
    return log


def specialisations(log: list, backend) -> dict:
    """Each distinct (kernel, signature, constexprs, attrs, options) the launches would compile,
    found by Triton's own binder as ``JITFunction.run`` finds it."""
    found: dict = {}
    binders: dict = {}
    for kernel, args, kwargs in log:
        binder = binders.setdefault(kernel, create_function_from_signature(kernel.signature, kernel.params, backend))
        bound_args, specialization, options = binder(*args, **kwargs)
        options, signature, constexprs, attrs = kernel._pack_args(backend, kwargs, bound_args, specialization, options)
        key = (kernel.fn.__name__, repr(sorted(signature.items())), repr(sorted(constexprs.items(), key=str)),
               repr(sorted(attrs.items())), repr(options))
        found.setdefault(key, (kernel, signature, constexprs, attrs, options))
    return found


SHAPE_CONSTEXPRS = ("BLOCK_ROWS", "BLOCK_COLS", "BLOCK_SIZE_POW2", "BLOCKS_PER_PROGRAM", "ELEMENTS_PER_PROGRAM",
                    "SCORES_PER_STEP", "BLOCK_IN_REGISTERS", "DIGIT_SHIFT", "DIGIT_BITS", "TENSORS_POW2")


def covering(found: dict) -> list:
    """A subset of the specialisations holding, for each kernel: every block shape (the shape
    constexprs) with every pointer-type combination; every combination of the other
    constexprs (L2_NORM, FLAT_ADDRESSING, PRUNE_WHOLE_BLOCKS, WRITE_MASKED, ...) with every
    pointer-type combination and each of the tile and loop paths; and every class (i32/i64, ``== 1``, divisibility hint) of every
    integer argument. Compiling every product of these would take an hour; a variant
    compiles or fails by these parts."""
    chosen, seen = [], set()
    for key in sorted(found):
        kernel, signature, constexprs, attrs, _ = found[key]
        name = kernel.fn.__name__
        pointers = tuple((n, v) for n, v in sorted(signature.items()) if v.startswith("*"))
        given = {kernel.arg_names[p[0]]: v for p, v in constexprs.items() if kernel.params[p[0]].is_constexpr}
        shape = tuple((n, v) for n, v in sorted(given.items()) if n in SHAPE_CONSTEXPRS)
        flags = tuple((n, v) for n, v in sorted(given.items()) if n not in SHAPE_CONSTEXPRS or n == "BLOCK_IN_REGISTERS")
        features = {(name, "shape", pointers, shape), (name, "flags", pointers, flags)}
        for i, param in enumerate(kernel.params):
            if param.is_constexpr or signature[param.name].startswith("*"):
                continue
            value = constexprs.get((i,), None) if signature[param.name] == "constexpr" else None
            features.add((name, param.name, signature[param.name], repr(value), repr(attrs.get((i,), []))))
        if features - seen:
            seen |= features
            chosen.append(found[key])
    return chosen


def main(archs: list[int]) -> int:
    log = record_launches()
    count = 0
    for arch in archs:
        target = GPUTarget("cuda", arch, 32)
        backend = make_backend(target)
        found = specialisations(log, backend)
        chosen = covering(found)
        for kernel, signature, constexprs, attrs, options in chosen:
            src = triton.compiler.ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=attrs)
            try:
                triton.compile(src, target=target, options=options.__dict__)
            except Exception as err:  # report which specialisation failed
                print(f"FAILED sm_{arch} {kernel.fn.__name__} {signature} {constexprs} {attrs}: {err}", file=sys.stderr)
                return 1
            count += 1
        kinds: dict[str, int] = {}
        for kernel, *_ in chosen:
            kinds[kernel.fn.__name__] = kinds.get(kernel.fn.__name__, 0) + 1
        print(f"sm_{arch}: {len(log)} launches, {len(found)} distinct specialisations, {len(chosen)} compiled "
              f"(covering every block shape, flag combination and integer class): {kinds}")
    print(f"compiled {count} kernel specialisations for sm_{', sm_'.join(map(str, archs))}")
    return 0


if __name__ == "__main__":
    sys.exit(main([int(a) for a in sys.argv[1:]] or [90, 80]))
