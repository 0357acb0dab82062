"""Sparsifiers, schedulers and Lightning callbacks built on ``kernels``.

Same contract as ``torch.ao.pruning._experimental.data_sparsifier``: switch by changing
the import. Also: 2:4 export (``sparsity.export``) and compact sparse checkpoints
(``sparsity.checkpoint``). The Lightning callbacks are imported on first use, so
``import sparsity`` does not import Lightning.
"""

from typing import Any

from sparsity.base_sparsifier import SUPPORTED_TYPES, BaseDataSparsifier, UnknownDataError
from sparsity.checkpoint import CheckpointError, load_sparse, save_sparse, sparsify_state_dict
from sparsity.export import is_n_m_sparse, to_semi_structured
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
    "CheckpointError",
    "CubicSLScheduler",
    "DataNormSparsifier",
    "LambdaSLScheduler",
    "LinearSLScheduler",
    "PostTrainingDataSparsity",
    "StepSLScheduler",
    "TrainingAwareDataSparsity",
    "UnknownDataError",
    "is_n_m_sparse",
    "load_sparse",
    "save_sparse",
    "sparsify_state_dict",
    "to_semi_structured",
]


def __getattr__(name: str) -> Any:
    if name in _CALLBACKS:
        from sparsity import callbacks

        return getattr(callbacks, name)
    raise AttributeError(f"module 'sparsity' has no attribute {name!r}")
