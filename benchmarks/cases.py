"""What is measured: one operation on one tensor."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Case:
    """One benchmark case. ``op`` is block_norm, block_mask or sparsify (fused mask-and-apply,
    in place); ``data`` is "randn" or "ties" (a third of the rows all zero, small integers)."""

    op: str
    shape: tuple[int, ...]
    dtype: str = "fp32"
    block_shape: tuple[int, int] = (1, 4)
    zeros_per_block: int = 4
    norm: str = "L1"
    sparsity_level: float = 0.5
    data: str = "randn"

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
    def name(self) -> str:
        shape = "x".join(map(str, self.shape))
        extra = f" zpb={self.zeros_per_block}" if self.op != "block_norm" else ""
        ties = " ties" if self.data == "ties" else ""
        return f"{self.op} {shape} {self.dtype} {self.norm}{extra}{ties}"

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
        return cls(**{**d, "shape": tuple(d["shape"]), "block_shape": tuple(d["block_shape"])})
