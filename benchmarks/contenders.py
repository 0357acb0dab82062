"""The implementations being compared. Each contender turns a case and its input into a
zero-argument callable that runs the operation once (setup done outside it), or None
where it cannot run the case."""

from __future__ import annotations

from collections.abc import Callable

import torch

import kernels
from benchmarks.cases import Case

Runner = Callable[[], object]


def reference(case: Case, x: torch.Tensor) -> Runner | None:
    """torch.ao's DataNormSparsifier.step() (2-D block masks only)."""
    try:
        from torch.ao.pruning._experimental.data_sparsifier import DataNormSparsifier
    except ImportError:
        return None
    if case.op != "block_mask" or x.dim() != 2:
        return None
    sparsifier = DataNormSparsifier(
        sparsity_level=case.sparsity_level, sparse_block_shape=case.block_shape,
        zeros_per_block=case.zeros_per_block, norm=case.norm,
    )
    sparsifier.add_data("x", x)
    return sparsifier.step


def _ours(backend: str) -> Callable[[Case, torch.Tensor], Runner | None]:
    def make(case: Case, x: torch.Tensor) -> Runner | None:
        if backend not in kernels.available_backends() or (backend == "triton" and x.device.type != "cuda"):
            return None
        if case.op == "block_norm":
            return lambda: kernels.block_norm(x, case.block_shape, case.norm, backend=backend)
        if case.op == "block_mask":
            return lambda: kernels.block_mask(
                x, case.sparsity_level, case.block_shape, case.zeros_per_block, case.norm, backend=backend)
        if case.op == "sparsify":
            return lambda: kernels.sparsify(
                x, case.sparsity_level, case.block_shape, case.zeros_per_block, case.norm, inplace=True, backend=backend)
        raise ValueError(f"unknown op {case.op!r}")

    make.__doc__ = f"this package, backend={backend!r}"
    return make


CONTENDERS: dict[str, Callable[[Case, torch.Tensor], Runner | None]] = {
    "reference": reference,
    "ours-torch": _ours("torch"),
    "ours-triton": _ours("triton"),
}
