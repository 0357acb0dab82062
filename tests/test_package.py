"""PyPI has unrelated packages named ``kernels`` and ``sparsity``: make sure the ones
imported are this project's."""

from __future__ import annotations

from pathlib import Path

import kernels
import sparsity

ROOT = Path(__file__).resolve().parent.parent


def test_imported_packages_are_this_projects():
    for module in (kernels, sparsity):
        assert Path(module.__file__).resolve().parent.parent == ROOT, module.__file__


def test_public_kernel_api():
    assert set(kernels.__all__) >= {"block_norm", "block_mask", "apply_mask", "available_backends", "sparsify"}
    assert "torch" in kernels.available_backends()
