"""PyPI has unrelated packages named ``kernels`` and ``sparsity``: make sure the ones
imported are this project's."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

import kernels
import sparsity

ROOT = Path(__file__).resolve().parent.parent


def test_imported_packages_are_this_projects():
    for module in (kernels, sparsity):
        assert Path(module.__file__).resolve().parent.parent == ROOT, module.__file__


def test_public_kernel_api():
    assert set(kernels.__all__) >= {"block_norm", "block_mask", "apply_mask", "available_backends", "sparsify"}


@pytest.mark.parametrize("cuda", [False, True])
@pytest.mark.parametrize("interpret", ["0", "1"])
def test_available_backends_list_what_runs_here(monkeypatch, cuda, interpret):
    """``torch`` alone, unless Triton is installed and has a CUDA device or its interpreter."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setenv("TRITON_INTERPRET", interpret)
    triton_here = importlib.util.find_spec("triton") is not None
    expected = ["torch", "triton"] if triton_here and (cuda or interpret == "1") else ["torch"]
    assert kernels.available_backends() == expected


def test_triton_is_an_extra_not_a_runtime_dependency():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any(dep.startswith("triton") for dep in project["dependencies"])
    assert any(dep.startswith("triton") for dep in project["optional-dependencies"]["cuda"])
    assert any(dep.startswith("triton") for dep in project["optional-dependencies"]["dev"])


def test_everything_runs_on_the_torch_backend_without_triton():
    """As on a machine where only `pip install blocksparse` ran (no triton): the import of
    triton is blocked, the torch backend does the work, backend='triton' says what is missing."""
    import subprocess
    import sys

    code = """
import sys
sys.modules["triton"] = None  # import triton now raises ImportError
import torch, kernels, sparsity
assert kernels.available_backends() == ["torch"], kernels.available_backends()
w = torch.randn(8, 16)
mask = kernels.block_mask(w, 0.5, (1, 4))
assert mask.dtype == torch.bool and int((~mask).sum()) == 64
s = sparsity.DataNormSparsifier(sparsity_level=0.5)
s.add_data("w", torch.nn.Parameter(w.clone()))
s.step()
assert torch.equal(s.get_mask("w"), mask)
try:
    kernels.block_mask(w, 0.5, backend="triton")
except ValueError as err:
    assert "needs the triton package" in str(err), err
else:
    raise AssertionError("backend='triton' ran without triton")
assert "triton" not in sys.modules or sys.modules["triton"] is None
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
