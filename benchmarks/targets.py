"""The issue's targets, checked against a run's figures (reported, never asserted: the
figures are measurements, and a noisy machine may miss a target that a quiet one meets).

On a GPU: the fused (1, 4) mask-and-apply on 1e8 fp32 elements at >= 85% of the copy
bandwidth; block_mask >= 50x faster than the reference and >= 2x faster than
torch.compile of the naive version; extra GPU memory <= 0.3x the input (fp32 cases: for
16-bit data the bool mask alone is 0.5x the input). On the CPU: the torch backend >= 25x
faster than the reference, extra memory <= 1.5x the input.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from benchmarks.figures import Row


@dataclass(frozen=True)
class Target:
    """One target: ``measured`` is the worst value over the cases it covers (``where``)."""

    description: str
    goal: str
    measured: float | None
    unit: str
    where: str
    met: bool | None

    def to_dict(self) -> dict:
        return asdict(self)


def _worst(
    rows: list[Row], description: str, value: Callable[[Row], float | None], select: Callable[[Row], bool],
    goal: float, at_least: bool, unit: str,
) -> Target:
    values = [(v, r.case.name) for r in rows if select(r) and (v := value(r)) is not None]
    sign = ">=" if at_least else "<="
    if not values:
        return Target(description, f"{sign} {goal:g}{unit}", None, unit, "not measured in this run", None)
    v, where = min(values) if at_least else max(values)
    return Target(description, f"{sign} {goal:g}{unit}", v, unit, where, v >= goal if at_least else v <= goal)


def evaluate(rows: list[Row], device: str) -> list[Target]:
    """The targets that apply to ``device``, each at its worst case in ``rows``."""
    if device == "cuda":
        ours = "ours-triton"
        mine = [r for r in rows if r.contender == ours]
        return [
            _worst(mine, "fused (1,4) mask-and-apply, 1e8 fp32 elements: % of copy bandwidth", lambda r: r.pct_of_copy,
                   lambda r: r.case.op == "sparsify" and r.case.numel == 10**8 and r.case.dtype == "fp32", 85, True, "%"),
            _worst(mine, "block_mask: speedup over the reference", lambda r: r.speedup.get("reference"),
                   lambda r: r.case.op == "block_mask", 50, True, "x"),
            _worst(mine, "block_mask: speedup over torch.compile(naive)", lambda r: r.speedup.get("naive-compiled"),
                   lambda r: r.case.op == "block_mask", 2, True, "x"),
            _worst(mine, "extra GPU memory, fp32 cases (x input)", lambda r: r.peak_extra_x,
                   lambda r: r.case.dtype == "fp32", 0.3, False, "x"),
        ]
    mine = [r for r in rows if r.contender == "ours-torch"]
    return [
        _worst(mine, "torch backend: speedup over the reference", lambda r: r.speedup.get("reference"),
               lambda r: True, 25, True, "x"),
        _worst(mine, "torch backend: extra memory (x input)", lambda r: r.peak_extra_x, lambda r: True, 1.5, False, "x"),
    ]
