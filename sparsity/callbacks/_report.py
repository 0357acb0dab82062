"""What the callbacks report: achieved sparsity per tensor and overall, mask time, and a
per-layer table, to the trainer's loggers and stdout, on rank zero only."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from blocksparsity.distributed import count_zeros


@dataclass
class LayerSparsity:
    name: str
    shape: tuple[int, ...]
    level: float
    zeros: int
    numel: int

    @property
    def sparsity(self) -> float:
        return self.zeros / self.numel if self.numel else 0.0


def measure(masks: dict[str, torch.Tensor], levels: dict[str, float]) -> list[LayerSparsity]:
    """Zeros of every (whole) mask (``count_zeros``: one host sync at most; sharded masks:
    their shards' counts summed by one all-reduce)."""
    if not masks:
        return []
    zeros = count_zeros(masks)
    return [
        LayerSparsity(n, tuple(m.shape), float(levels[n]), z, m.numel())
        for (n, m), z in zip(masks.items(), zeros, strict=True)
    ]


def overall(layers: list[LayerSparsity]) -> float:
    numel = sum(layer.numel for layer in layers)
    return sum(layer.zeros for layer in layers) / numel if numel else 0.0


def scheduled_level(layers: list[LayerSparsity]) -> float:
    """The level the masks were made with: the sparsifier's ``sparsity_level`` (the fraction
    of blocks chosen, as the scheduler set it; above 1 prunes every block). One value when
    every tensor has the same (as in these callbacks); else their mean weighted by size."""
    levels = {layer.level for layer in layers}
    if len(levels) == 1:
        return levels.pop()
    numel = sum(layer.numel for layer in layers)
    return sum(layer.level * layer.numel for layer in layers) / numel if numel else float("nan")


def metrics(layers: list[LayerSparsity], mask_seconds: float, prefix: str) -> dict[str, float]:
    out = {f"{prefix}/{layer.name}": layer.sparsity for layer in layers}
    out[f"{prefix}/overall"] = overall(layers)
    if layers:
        out[f"{prefix}/level"] = scheduled_level(layers)
    out[f"{prefix}/mask_seconds"] = mask_seconds
    return out


def table(layers: list[LayerSparsity], mask_seconds: float, title: str) -> str:
    """A short per-layer table (name, shape, scheduled level, achieved sparsity)."""
    width = max([len("tensor"), *(len(layer.name) for layer in layers)])
    lines = [title, f"{'tensor':<{width}}  {'shape':>16}  {'level':>6}  {'sparsity':>8}", "-" * (width + 36)]
    for layer in layers:
        shape = "x".join(map(str, layer.shape))
        lines.append(f"{layer.name:<{width}}  {shape:>16}  {layer.level:>6.3f}  {layer.sparsity:>8.2%}")
    lines.append(f"{'overall':<{width}}  {'':>16}  {'':>6}  {overall(layers):>8.2%}"
                 f"   (masks computed in {mask_seconds * 1e3:.1f} ms)")
    return "\n".join(lines)
