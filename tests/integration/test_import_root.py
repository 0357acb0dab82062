"""One import root, ``blocksparsity``: what it exports, what it loads, and that the top-level
names ``kernels`` and ``sparsity`` are left to other packages (Hugging Face's ``kernels``, which
transformers imports, is installed in the test environment)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
import torch

import blocksparsity
from blocksparsity import kernels

ROOT = Path(__file__).resolve().parents[2]


def test_the_package_is_this_checkouts():
    """blocksparsity from sparsity/, blocksparsity.kernels from kernels/ (the editable install)."""
    assert Path(blocksparsity.__file__).resolve() == ROOT / "sparsity" / "__init__.py"
    assert Path(kernels.__file__).resolve() == ROOT / "kernels" / "__init__.py"


def test_top_level_kernels_is_hugging_faces():
    """The test process sees Hugging Face's `kernels`, not the checkout's folder (tests/conftest.py)."""
    try:
        importlib.metadata.distribution("kernels")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("Hugging Face's kernels is not installed here (the dev extra brings it with transformers)")
    hf = importlib.util.find_spec("kernels")
    assert Path(hf.origin).resolve().parent != ROOT / "kernels", hf.origin
    import kernels as hf_kernels

    assert hasattr(hf_kernels, "LayerRepository")


def test_version():
    assert blocksparsity.__version__ == importlib.metadata.version("blocksparsity")
    assert tuple(int(p) for p in blocksparsity.__version__.split(".")[:2]) >= (0, 2)


def test_root_lists_its_public_names():
    public = {"DataNormSparsifier", "BaseDataSparsifier", "BaseDataScheduler", "StepSLScheduler", "CubicSLScheduler",
              "LinearSLScheduler", "LambdaSLScheduler", "PostTrainingDataSparsity", "TrainingAwareDataSparsity",
              "save_sparse", "load_sparse", "sparsify_state_dict", "to_semi_structured", "is_n_m_sparse"}
    assert public <= set(blocksparsity.__all__)
    assert set(blocksparsity.__all__) == set(blocksparsity._PUBLIC) | {"__version__"}
    assert public <= set(dir(blocksparsity))
    for name in blocksparsity.__all__:
        assert getattr(blocksparsity, name) is not None, name
    from blocksparsity.callbacks import TrainingAwareDataSparsity

    assert blocksparsity.TrainingAwareDataSparsity is TrainingAwareDataSparsity
    with pytest.raises(AttributeError, match=r"blocksparsity.*no attribute 'nope'"):
        _ = blocksparsity.nope


def _fresh_modules(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code`` (from outside the checkout)."""
    script = code + "\nimport sys; print(' '.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tempfile.gettempdir())
    assert done.returncode == 0, done.stderr[-3000:]
    return set(done.stdout.split())


def test_the_kernel_api_loads_no_lightning_and_no_sparsifier():
    """``blocksparsity.kernels`` is a child of the root, whose names load lazily (PEP 562)."""
    loaded = _fresh_modules("from blocksparsity.kernels import block_mask, block_norm, apply_mask, available_backends")
    assert not {m for m in loaded if m.split(".")[0] in ("lightning", "pytorch_lightning", "transformers")}
    ours = {m for m in loaded if m.startswith("blocksparsity.") and not m.startswith("blocksparsity.kernels")}
    ours.discard("blocksparsity._versions")  # the torch version check at the root
    assert ours == set(), ours


def test_the_root_alone_loads_nothing_but_itself():
    loaded = _fresh_modules("import blocksparsity; assert 'DataNormSparsifier' in dir(blocksparsity)")
    assert {m for m in loaded if m.startswith("blocksparsity")} == {"blocksparsity", "blocksparsity._versions"}
    assert "lightning" not in loaded


def test_the_sparsifier_loads_no_lightning():
    loaded = _fresh_modules("from blocksparsity import DataNormSparsifier, StepSLScheduler")
    assert "lightning" not in loaded and "blocksparsity.callbacks" not in loaded


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
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any(dep.startswith("triton") for dep in project["dependencies"])
    assert any(dep.startswith("triton") for dep in project["optional-dependencies"]["cuda"])
    assert any(dep.startswith("triton") for dep in project["optional-dependencies"]["dev"])


@pytest.mark.slow
def test_everything_runs_on_the_torch_backend_without_triton():
    """As on a machine where only `pip install blocksparsity` ran (no triton): the import of
    triton is blocked, the torch backend does the work, backend='triton' says what is missing."""
    code = """
import sys
sys.modules["triton"] = None  # import triton now raises ImportError
import torch
import blocksparsity
from blocksparsity import kernels
assert blocksparsity.kernels.available_backends() == ["torch"], blocksparsity.kernels.available_backends()
w = torch.randn(8, 16)
mask = blocksparsity.kernels.block_mask(w, 0.5, (1, 4))
assert mask.dtype == torch.bool and int((~mask).sum()) == 64
s = blocksparsity.DataNormSparsifier(sparsity_level=0.5)
s.add_data("w", torch.nn.Parameter(w.clone()))
s.step()
assert torch.equal(s.get_mask("w"), mask)
try:
    blocksparsity.kernels.block_mask(w, 0.5, backend="triton")
except ValueError as err:
    assert "needs the triton package" in str(err), err
else:
    raise AssertionError("backend='triton' ran without triton")
assert "triton" not in sys.modules or sys.modules["triton"] is None
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tempfile.gettempdir(), timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
