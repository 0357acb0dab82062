"""What is measured: one operation on one tensor, and the list of cases a run measures."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from blocksparsity.kernels._common import n_blocks, shape_2d

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
OPS = ("block_norm", "block_mask", "sparsify", "weight_update")


@dataclass(frozen=True)
class Case:
    """One benchmark case. ``op`` is block_norm, block_mask, sparsify (fused mask-and-apply,
    in place) or weight_update (the least-squares update of a layer's kept weights,
    ``blocksparsity.least_squares_update``, for the kernels' mask of this case and ``H`` from
    ``2 * W`` calibration rows: ``benchmarks.weight_update.layer``); ``data`` is "randn" or
    "ties" (a third of the rows all zero, small integers);
    ``tag`` names what the tensor stands for (e.g. "embedding"); ``scale``: "" (none) or
    "col", a per-column ``(1, W)`` scale (activation-aware scores, ``scale=``)."""

    op: str
    shape: tuple[int, ...]
    dtype: str = "fp32"
    block_shape: tuple[int, int] = (1, 4)
    zeros_per_block: int = 4
    norm: str = "L1"
    sparsity_level: float = 0.5
    data: str = "randn"
    tag: str = ""
    scale: str = ""

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def element_size(self) -> int:
        return torch.empty((), dtype=DTYPES[self.dtype]).element_size()

    @property
    def input_bytes(self) -> int:
        return self.numel * self.element_size

    @property
    def block_size(self) -> int:
        return self.block_shape[0] * self.block_shape[1]

    @property
    def n_blocks(self) -> int:
        return n_blocks(shape_2d(self.shape), self.block_shape)

    @property
    def mutates_input(self) -> bool:
        """Does the operation write its input (so each timed call needs a fresh copy)?"""
        return self.op == "sparsify"

    @property
    def name(self) -> str:
        shape = "x".join(map(str, self.shape))
        extra = f" zpb={self.zeros_per_block}" if self.op != "block_norm" else ""
        ties = " ties" if self.data == "ties" else ""
        scale = f" scale={self.scale}" if self.scale else ""
        tag = f" ({self.tag})" if self.tag else ""
        return f"{self.op} {shape} {self.dtype} {self.norm}{scale}{extra}{ties}{tag}"

    def make_scale(self, x: torch.Tensor, seed: int = 1) -> torch.Tensor | None:
        """The ``scale=`` argument for ``x`` (None without one): "col", float32 ``(1, W)`` in [0.5, 1.5)."""
        if not self.scale:
            return None
        g = torch.Generator(device=x.device.type).manual_seed(seed)
        return torch.rand((1, shape_2d(x.shape)[1]), generator=g, device=x.device) + 0.5

    def make_input(self, device: str, seed: int = 0) -> torch.Tensor:
        g = torch.Generator(device=device).manual_seed(seed)
        if self.data == "ties":
            x = torch.randint(-2, 3, self.shape, generator=g, device=device).to(DTYPES[self.dtype])
            x.reshape(self.shape[0], -1)[: self.shape[0] // 3] = 0
            return x
        return torch.randn(self.shape, generator=g, device=device).to(DTYPES[self.dtype])

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Case:
        return cls(**{"scale": "", **d, "shape": tuple(d["shape"]), "block_shape": tuple(d["block_shape"])})


# The operation variants every size is measured with: (op, zeros_per_block) for (1, 4) blocks.
VARIANTS = (("block_norm", 4), ("block_mask", 4), ("block_mask", 2), ("sparsify", 4), ("sparsify", 2))
SIZES = {"full": ((4096, 4096), (8192, 8192), (10_000, 10_000)), "quick": ((128, 128), (256, 256), (512, 512))}
# ``matrix="sizes"``: 2**24, 2**26 and 2**28 elements (the torch backend's bandwidth target).
POWER_SIZES = {"full": ((4096, 4096), (8192, 8192), (16384, 16384)), "quick": ((128, 128), (256, 256), (512, 512))}
TABLE_ROWS = {"cuda": 10_000_000, "cpu": 1_000_000, "quick": 4096}
# The least-squares update per layer (2:4 masks): 1024^2 in every run; 4096^2 only in ``matrix="update"``
# (about 107 s a call on one loaded CPU thread, 2026-12-06).
UPDATE_SIZES = {"full": ((1024, 1024), (4096, 4096)), "quick": ((128, 128), (256, 256))}


def update_cases(quick: bool = False, every_size: bool = False) -> list[Case]:
    """``weight_update`` at the first of ``UPDATE_SIZES`` (``every_size``: at all of them)."""
    sizes = UPDATE_SIZES["quick" if quick else "full"]
    return [Case("weight_update", shape, zeros_per_block=2, sparsity_level=1.0)
            for shape in (sizes if every_size else sizes[:1])]
TABLE_WIDTH = 64


MATRICES = ("axes", "full", "sizes", "update")


def default_cases(device: str, quick: bool = False, matrix: str = "axes") -> list[Case]:
    """The cases of one run, in the order they are measured.

    ``matrix="axes"`` (the default) varies one thing at a time around fp32 L1: every
    variant of ``VARIANTS`` at each size (4096^2, 8192^2 and 1e8 elements as 10,000^2),
    then an embedding table (rows x 64: 10M rows on a GPU, 1M on CPU) with block_mask and
    sparsify, one all-ties table (a third of the rows all zero, the rest small integers),
    and last every variant in L2 and in bf16 at the middle size. ``matrix="full"`` takes
    the full product of variants, norms, dtypes and sizes instead (60 cases, plus the
    tables). Both end with ``block_mask`` at the first size with a per-column ``scale``
    (beside the same case without one: the scale's cost) and the least-squares update of a
    1024^2 layer. ``matrix="sizes"``: every variant in fp32 and bf16 (L1) at 2**24, 2**26 and
    2**28 elements, nothing else. ``matrix="update"``: the update at 1024^2 and 4096^2, nothing
    else. ``quick`` shrinks every size so that a CPU run takes seconds.
    """
    if matrix not in MATRICES:
        raise ValueError(f"matrix must be one of {list(MATRICES)}; got {matrix!r}")
    if matrix == "update":
        return update_cases(quick, every_size=True)
    if matrix == "sizes":
        return [Case(op, shape, dtype, zeros_per_block=zpb) for shape in POWER_SIZES["quick" if quick else "full"]
                for dtype in ("fp32", "bf16") for op, zpb in VARIANTS]
    sizes = SIZES["quick" if quick else "full"]
    rows = TABLE_ROWS["quick" if quick else ("cuda" if device == "cuda" else "cpu")]
    table = (rows, TABLE_WIDTH)

    def variants(shape: tuple[int, ...], dtype: str = "fp32", norm: str = "L1") -> list[Case]:
        return [Case(op, shape, dtype, zeros_per_block=zpb, norm=norm) for op, zpb in VARIANTS]

    if matrix == "full":
        grid = [c for shape in sizes for dtype in ("fp32", "bf16") for norm in ("L1", "L2") for c in variants(shape, dtype, norm)]
    else:
        grid = [c for shape in sizes for c in variants(shape)]
    tables = [
        Case("block_mask", table, tag="embedding"),
        Case("sparsify", table, tag="embedding"),
        Case("block_mask", table, zeros_per_block=2, data="ties", tag="all-zero rows"),
    ]
    axes = [] if matrix == "full" else variants(sizes[1], norm="L2") + variants(sizes[1], dtype="bf16")
    scaled = [Case("block_mask", sizes[0], scale="col")]
    return grid + tables + axes + scaled + update_cases(quick)
