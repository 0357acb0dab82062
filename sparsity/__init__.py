"""Sparsifiers, schedulers and Lightning callbacks built on ``kernels``.

Same contract as ``torch.ao.pruning._experimental.data_sparsifier``: switch by changing
the import. The Lightning callbacks are imported on first use, so ``import sparsity``
does not import Lightning.
"""

from typing import Any

from sparsity.base_sparsifier import SUPPORTED_TYPES, BaseDataSparsifier, UnknownDataError
from sparsity.norm_sparsifier import DataNormSparsifier
from sparsity.schedulers import (
    BaseDataScheduler,
    CubicSLScheduler,
    LambdaSLScheduler,
    LinearSLScheduler,
    StepSLScheduler,
)

_CALLBACKS = ("PostTrainingDataSparsity", "TrainingAwareDataSparsity")

__all__ = [
    "SUPPORTED_TYPES",
    "BaseDataScheduler",
    "BaseDataSparsifier",
    "CubicSLScheduler",
    "DataNormSparsifier",
    "LambdaSLScheduler",
    "LinearSLScheduler",
    "PostTrainingDataSparsity",
    "StepSLScheduler",
    "TrainingAwareDataSparsity",
    "UnknownDataError",
]


def __getattr__(name: str) -> Any:
    if name in _CALLBACKS:
        from sparsity import callbacks

        return getattr(callbacks, name)
    raise AttributeError(f"module 'sparsity' has no attribute {name!r}")
