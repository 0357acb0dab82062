"""The one place that chooses a backend. Triton is imported lazily, on first use."""

from __future__ import annotations

import importlib.util
import os

import torch

from blocksparsity.kernels import _torch
from blocksparsity.kernels._backend import Backend
from blocksparsity.kernels._common import TORCH, TRITON
from blocksparsity.kernels.validation import check_backend


def triton_installed() -> bool:
    """Is the triton package importable? (The ``cuda`` extra installs it; CUDA builds of torch bring it.)"""
    try:
        return importlib.util.find_spec("triton") is not None
    except ValueError:  # sys.modules["triton"] is None: its import is blocked
        return False


def interpreting() -> bool:
    """Is Triton's interpreter on (``TRITON_INTERPRET=1``), so its kernels run on CPU tensors?"""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def available_backends() -> list[str]:
    """Backends that can run on this machine: ``torch`` always, ``triton`` where Triton is
    installed and there is a CUDA device or the interpreter is on."""
    backends = [TORCH]
    if triton_installed() and (torch.cuda.is_available() or interpreting()):
        backends.append(TRITON)
    return backends


def _triton_backend() -> Backend:
    from blocksparsity.kernels import _triton

    return _triton


def backend_name(backend: str, device: torch.device) -> str:
    """Resolve ``backend`` for a tensor on ``device``, or say why it cannot run there."""
    check_backend(backend)
    if backend == "auto":
        return TRITON if device.type == "cuda" and triton_installed() else TORCH
    if backend == TRITON:
        if not triton_installed():
            raise ValueError("backend='triton' needs the triton package, which is not installed")
        if device.type == "cpu" and not interpreting():
            raise ValueError(
                "backend='triton' got a CPU tensor: Triton kernels run on CUDA tensors, or on CPU "
                "tensors only under TRITON_INTERPRET=1 (set before the first Triton import)"
            )
        if device.type not in ("cpu", "cuda"):
            raise ValueError(f"backend='triton' runs on CUDA (or CPU under TRITON_INTERPRET=1), not {device.type}")
    return backend


def resolve(backend: str, device: torch.device) -> Backend:
    """The backend module (``_torch`` or ``_triton``, each a ``Backend``) for ``device``."""
    return _triton_backend() if backend_name(backend, device) == TRITON else _torch
