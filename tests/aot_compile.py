"""Compile every Triton kernel for NVIDIA GPUs without a GPU (run in its own process:
Triton's interpreter must be off). Catches code that the interpreter accepts but the
compiler rejects. Usage: python tests/aot_compile.py [ARCH ...]  (default: 90 80)."""

from __future__ import annotations

import os
import sys

os.environ["TRITON_INTERPRET"] = "0"

import triton
from triton.backends.compiler import GPUTarget

from blocksparsity.kernels._triton import _config
from blocksparsity.kernels._triton.apply_mask import _apply_mask_kernel
from blocksparsity.kernels._triton.block_mask import _block_mask_kernel
from blocksparsity.kernels._triton.block_norm import _block_norm_kernel
from blocksparsity.kernels._triton.select import (
    RADIX_DIGITS,
    _radix_histogram_kernel,
    _radix_pick_kernel,
    _tie_count_kernel,
)

DTYPES = ("fp32", "bf16", "fp16")
BLOCK_SHAPES = ((1, 4), (2, 2), (1, 8), (4, 4), (3, 5), (8, 8))


def _signature(names: list[str], types: dict[str, str], constexprs: dict[str, object]) -> dict[str, str]:
    return {n: ("constexpr" if n in constexprs else types.get(n, "i32")) for n in names}


def variants():
    """(kernel, signature types, constexprs) for each specialisation the launchers use."""
    for dt in DTYPES:
        for bs in BLOCK_SHAPES:
            launch = _config.block_launch(bs)
            shape = dict(BH=bs[0], BW=bs[1], P2=launch.p2, TILE=launch.tile, SMALL=launch.small)
            flat_options = (True, False) if bs[0] == 1 else (False,)
            for flat in flat_options:
                yield _block_norm_kernel, {"x_ptr": f"*{dt}", "scores_ptr": "*fp32", "flag_ptr": "*i32"}, dict(
                    L2=dt == "fp32", FLAT=flat, **shape)
                for full, apply, write_kept, row_ties in (
                    (True, False, False, False), (False, True, False, False), (False, True, True, False),
                    (True, False, False, True), (False, False, False, True),  # block_mask_given (sharded)
                ):
                    yield _block_mask_kernel, {
                        "x_ptr": f"*{dt}", "out_ptr": f"*{dt}", "mask_ptr": "*i1", "flag_ptr": "*i32",
                        "state_ptr": "*i32", "ties_before_ptr": "*i32", "row_ties_ptr": "*i32",
                    }, dict(L2=False, FLAT=flat, FULL=full, APPLY=apply, WRITE_KEPT=write_kept, ROW_TIES=row_ties, **shape)
        for check, write, gated in ((True, False, False), (False, True, True), (True, True, False)):
            for flat in (True, False):
                yield _apply_mask_kernel, {"x_ptr": f"*{dt}", "keep_ptr": "*i1", "out_ptr": f"*{dt}", "flag_ptr": "*i32"}, dict(
                    CHECK=check, WRITE=write, GATED=gated, FLAT=flat, TILE=_config.ELEMENTWISE_TILE)
    for shift, bits in RADIX_DIGITS:
        yield _radix_histogram_kernel, {"scores_ptr": "*fp32", "state_ptr": "*i32", "hist_ptr": "*i32"}, dict(
            SHIFT=shift, BITS=bits, TILE=_config.SELECT_TILE)
        yield _radix_pick_kernel, {"hist_ptr": "*i32", "state_ptr": "*i32"}, dict(SHIFT=shift, BITS=bits)
    yield _tie_count_kernel, {"scores_ptr": "*fp32", "counts_ptr": "*i32", "state_ptr": "*i32"}, dict(TILE=256)


def main(archs: list[int]) -> int:
    count = 0
    for arch in archs:
        target = GPUTarget("cuda", arch, 32)
        for kernel, types, constexprs in variants():
            src = triton.compiler.ASTSource(
                fn=kernel, signature=_signature(kernel.arg_names, types, constexprs), constexprs=constexprs
            )
            try:
                triton.compile(src, target=target, options=_config.LAUNCH_OPTIONS)
            except Exception as err:  # report which specialisation failed
                print(f"FAILED sm_{arch} {kernel.fn.__name__} {constexprs}: {err}", file=sys.stderr)
                return 1
            count += 1
    print(f"compiled {count} kernel specialisations for sm_{', sm_'.join(map(str, archs))}")
    return 0


if __name__ == "__main__":
    sys.exit(main([int(a) for a in sys.argv[1:]] or [90, 80]))
