"""blocksparsity: block-norm data sparsity for PyTorch, driven from Lightning.

Sparsifiers and schedulers with the contract of ``torch.ao.pruning._experimental.data_sparsifier``
(switch by changing the import), the Lightning callbacks ``PostTrainingDataSparsity`` and
``TrainingAwareDataSparsity``, 2:4 export (``blocksparsity.export``) and compact sparse
checkpoints (``blocksparsity.checkpoint``), all on the kernels of ``blocksparsity.kernels``.

The public names load on first use (PEP 562): ``import blocksparsity.kernels`` runs this module
first, and the kernel API must not pay for Lightning or the sparsifier modules.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import torch

from blocksparsity._versions import MIN_TORCH, require

__version__ = "0.2.0"

require("torch", torch.__version__, MIN_TORCH)

# public name -> the module that defines it
_PUBLIC = {
    "SUPPORTED_TYPES": "blocksparsity.base_sparsifier",
    "BaseDataSparsifier": "blocksparsity.base_sparsifier",
    "UnknownDataError": "blocksparsity.base_sparsifier",
    "DataNormSparsifier": "blocksparsity.norm_sparsifier",
    "BaseDataScheduler": "blocksparsity.schedulers",
    "CubicSLScheduler": "blocksparsity.schedulers",
    "LambdaSLScheduler": "blocksparsity.schedulers",
    "LinearSLScheduler": "blocksparsity.schedulers",
    "StepSLScheduler": "blocksparsity.schedulers",
    "PostTrainingDataSparsity": "blocksparsity.callbacks",
    "TrainingAwareDataSparsity": "blocksparsity.callbacks",
    "CheckpointError": "blocksparsity.checkpoint",
    "load_sparse": "blocksparsity.checkpoint",
    "save_sparse": "blocksparsity.checkpoint",
    "sparsify_state_dict": "blocksparsity.checkpoint",
    "InputStatistics": "blocksparsity.calibration",
    "least_squares_update": "blocksparsity.weight_update",
    "is_n_m_sparse": "blocksparsity.export",
    "to_semi_structured": "blocksparsity.export",
}

__all__ = [  # the keys of _PUBLIC, and the version
    "SUPPORTED_TYPES",
    "BaseDataScheduler",
    "BaseDataSparsifier",
    "CheckpointError",
    "CubicSLScheduler",
    "DataNormSparsifier",
    "InputStatistics",
    "LambdaSLScheduler",
    "LinearSLScheduler",
    "PostTrainingDataSparsity",
    "StepSLScheduler",
    "TrainingAwareDataSparsity",
    "UnknownDataError",
    "__version__",
    "is_n_m_sparse",
    "least_squares_update",
    "load_sparse",
    "save_sparse",
    "sparsify_state_dict",
    "to_semi_structured",
]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load lazily
    from blocksparsity.base_sparsifier import SUPPORTED_TYPES, BaseDataSparsifier, UnknownDataError
    from blocksparsity.calibration import InputStatistics
    from blocksparsity.callbacks import PostTrainingDataSparsity, TrainingAwareDataSparsity
    from blocksparsity.checkpoint import CheckpointError, load_sparse, save_sparse, sparsify_state_dict
    from blocksparsity.export import is_n_m_sparse, to_semi_structured
    from blocksparsity.norm_sparsifier import DataNormSparsifier
    from blocksparsity.schedulers import (
        BaseDataScheduler,
        CubicSLScheduler,
        LambdaSLScheduler,
        LinearSLScheduler,
        StepSLScheduler,
    )
    from blocksparsity.weight_update import least_squares_update


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'blocksparsity' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
