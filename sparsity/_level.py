"""The sparsifier's rule for ``sparsity_level``, stated once.

In a sparsifier the level is a config value that schedulers move (``StepSLScheduler``
with ``gamma=2`` doubles it past 1), so it is checked where it is stored and again where
masks are made from it: a finite real number >= 0, where anything above 1 means 1 (every
block pruned, as in torch.ao; the sparsifier warns once).

The kernel API is stricter on purpose (``blocksparsity.kernels.validation.check_sparsity_level``: a real number
in [0, 1], else ``TypeError``/``ValueError``): one call makes one mask, so a level above 1
there is the caller's mistake, not a schedule running past its end. ``blocksparsity.checkpoint``'s
one-shot prune uses that strict check too.
"""

from __future__ import annotations

import math
import numbers

__all__ = ["sparsifier_level"]


def sparsifier_level(value: object, where: str) -> tuple[float, bool]:
    """The level masks are made with for the configured ``value``, and whether ``value`` was
    above 1 (so the level was cut to 1).

    Raises ``ValueError`` naming ``where`` (e.g. ``"config of 'fc.weight'"``) for anything
    but a finite real number >= 0 (bools included: ``True`` is no level).
    """
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise ValueError(f"sparsity_level in {where} must be a finite number >= 0; got {value!r}")
    level = float(value)
    return (1.0, True) if level > 1.0 else (level, False)
