"""The implementations being compared. Each contender turns a case and its input into a
zero-argument callable that runs the operation once (setup done outside it), or says why
it cannot run the case (``Contender.unsupported``)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

import torch

from benchmarks import eager_contender, weight_update
from benchmarks.cases import Case
from blocksparsity import kernels
from blocksparsity.weight_update import least_squares_update

Runner = Callable[[], object]


@dataclass(frozen=True)
class Contender:
    """One implementation. ``devices``: where it runs at all (elsewhere it is left out of the
    run); ``memory_factor``: a generous bound on its peak extra memory as a multiple of the
    input, used to skip cases that would not fit before a measurement says better;
    ``compiles``: its first call compiles (so a slow first call says nothing of the rest)."""

    name: str
    description: str
    build: Callable[[Case, torch.Tensor], Runner]
    why_not: Callable[[Case], str | None]
    devices: tuple[str, ...] = ("cpu", "cuda")
    memory_factor: float = 2.0
    compiles: bool = False

    def unsupported(self, case: Case, device: str) -> str | None:
        """Why this contender cannot run ``case`` on ``device`` ("n/a: ..."), or None."""
        if device not in self.devices:
            return f"n/a: {'/'.join(self.devices)} only"
        reason = self.why_not(case)
        return None if reason is None else f"n/a: {reason}"

    def __call__(self, case: Case, x: torch.Tensor) -> Runner | None:
        """The runner for ``case`` on ``x``, or None where it cannot run."""
        return None if self.unsupported(case, x.device.type) else self.build(case, x)


# ---------------------------------------------------------------- torch.ao's reference
def _reference_why_not(case: Case) -> str | None:
    if importlib.util.find_spec("torch.ao.pruning._experimental.data_sparsifier") is None:
        return "torch.ao data sparsifier not installed"
    if case.op != "block_mask":
        return "the reference only computes masks"
    if case.scale:
        return "the reference takes no scale"
    return None if len(case.shape) == 2 else "the reference takes 2-D data only"


def _reference(case: Case, x: torch.Tensor) -> Runner:
    from torch.ao.pruning._experimental.data_sparsifier import DataNormSparsifier

    sparsifier = DataNormSparsifier(
        sparsity_level=case.sparsity_level, sparse_block_shape=case.block_shape,
        zeros_per_block=case.zeros_per_block, norm=case.norm,
    )
    sparsifier.add_data("x", x)
    return sparsifier.step


# ---------------------------------------------------------------- naive eager torch (and compiled)
def _naive_why_not(case: Case) -> str | None:
    bh, bw = case.block_shape
    if case.op == "weight_update":
        return "the naive version has no weight update"
    if case.scale:
        return "the naive version takes no scale"
    if len(case.shape) != 2 or bh != 1 or case.shape[1] % bw:
        return "the naive version takes (1, bw) blocks of 2-D data with bw dividing the width"
    return None


def _naive(compile_it: bool) -> Callable[[Case, torch.Tensor], Runner]:
    def build(case: Case, x: torch.Tensor) -> Runner:
        bw, k = case.block_shape[1], round(case.sparsity_level * case.n_blocks)
        if compile_it:
            _allow_many_graphs()
            fn = eager_contender.compiled(case.op)
        else:
            fn = eager_contender.OPS[case.op]
        if case.op == "block_norm":
            return lambda: fn(x, bw, case.norm)
        return lambda: fn(x, k, bw, case.zeros_per_block, case.norm)

    return build


def _allow_many_graphs() -> None:
    """One compiled function serves every case of its op; each norm, zeros_per_block and
    dtype is a graph of its own. Raise dynamo's recompile limit (8) so that it never falls
    back to eager silently, and keep square and non-square shapes in one graph (no "duck
    sizing" guard that height == width)."""
    import torch._dynamo
    import torch.fx.experimental._config as fx_config

    if hasattr(fx_config, "use_duck_shape"):
        fx_config.use_duck_shape = False
    for name in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit", "accumulated_cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(256, getattr(torch._dynamo.config, name)))


# ---------------------------------------------------------------- this package
def _ours(backend: str) -> Callable[[Case, torch.Tensor], Runner]:
    def build(case: Case, x: torch.Tensor) -> Runner:
        scale = case.make_scale(x)
        if case.op == "block_norm":
            return lambda: kernels.block_norm(x, case.block_shape, case.norm, scale=scale, backend=backend)
        if case.op == "block_mask":
            return lambda: kernels.block_mask(
                x, case.sparsity_level, case.block_shape, case.zeros_per_block, case.norm, scale=scale, backend=backend)
        if case.op == "sparsify":
            return lambda: kernels.sparsify(x, case.sparsity_level, case.block_shape, case.zeros_per_block, case.norm,
                                            scale=scale, inplace=True, backend=backend)
        if case.op == "weight_update":  # torch.linalg on x's device; the mask from this backend
            mask, h = weight_update.layer(x)
            return lambda: least_squares_update(x, mask, h)
        raise ValueError(f"unknown op {case.op!r}")

    return build


def _triton_why_not(case: Case) -> str | None:
    if case.op == "weight_update":
        return "the update has no Triton kernel (ours-torch runs it with torch.linalg on the device)"
    return None if "triton" in kernels.available_backends() else "Triton is not available"


def _always(case: Case) -> None:
    return None


CONTENDERS: dict[str, Contender] = {
    c.name: c
    for c in (
        Contender("reference", "torch.ao DataNormSparsifier.step()", _reference, _reference_why_not, memory_factor=12.0),
        Contender("naive", "eager torch: abs, view, mean, topk, repeat_interleave", _naive(False), _naive_why_not,
                  memory_factor=8.0),
        Contender("naive-compiled", "torch.compile of the naive version", _naive(True), _naive_why_not,
                  devices=("cuda",), memory_factor=8.0, compiles=True),
        Contender("ours-torch", "this package, backend='torch'", _ours("torch"), _always),
        Contender("ours-triton", "this package, backend='triton'", _ours("triton"), _triton_why_not,
                  devices=("cuda",), compiles=True),
    )
}
