"""Where the backends run in this session."""

from __future__ import annotations

import pytest
import torch

from blocksparsity.kernels import _dispatch


def triton_devices() -> list[str]:
    """Devices on which the Triton backend runs in this session."""
    if not _dispatch.triton_installed():
        return []
    if _dispatch.interpreting():
        return ["cpu"]
    return ["cuda"] if torch.cuda.is_available() else []


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
