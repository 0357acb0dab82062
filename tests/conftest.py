"""Test setup.

The checkout's folders ``kernels/`` and ``sparsity/`` install as ``blocksparsity.kernels`` and
``blocksparsity``; the tests use the installed package. Put first on ``sys.path`` (``python -m
pytest`` puts the working directory there), the checkout root would make ``import kernels``
find our folder instead of Hugging Face's ``kernels``, which transformers imports. So the root
is moved behind site-packages, where it still serves ``tests`` and ``benchmarks``
(pytest's ``--import-mode=append``, in pyproject.toml, puts it there too).

Without a GPU, Triton kernels run on CPU tensors in Triton's interpreter: TRITON_INTERPRET must
be set before the first Triton kernel is defined, so it is set here, before any test module
imports the backend."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


def _checkout_root_last() -> None:
    def is_root(entry: str) -> bool:
        return Path(entry or os.getcwd()).resolve() == ROOT

    if any(is_root(entry) for entry in sys.path):
        sys.path[:] = [entry for entry in sys.path if not is_root(entry)] + [str(ROOT)]


_checkout_root_last()

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

if os.environ.get("PYTEST_XDIST_WORKER"):  # make test: one pytest-xdist worker per core, one thread each
    torch.set_num_threads(1)



@pytest.fixture
def poisoned_outputs(monkeypatch):
    """Make torch.empty / empty_like return garbage-filled tensors, so a kernel that leaves
    an element of its output unwritten is caught. ``poison(True)`` and ``poison(False)``
    use opposite values (True / NaN / -7, and False / 1e30 / 123457)."""
    real_empty, real_empty_like = torch.empty, torch.empty_like

    def poison(flag: bool) -> None:
        def fill(t: torch.Tensor) -> torch.Tensor:
            if t.numel() == 0:
                return t
            if t.dtype == torch.bool:
                return t.fill_(flag)
            if t.dtype.is_floating_point:
                return t.fill_(float("nan") if flag else 1e30)
            return t.fill_(-7 if flag else 123457)

        monkeypatch.setattr(torch, "empty", lambda *a, **k: fill(real_empty(*a, **k)))
        monkeypatch.setattr(torch, "empty_like", lambda *a, **k: fill(real_empty_like(*a, **k)))

    return poison


def pytest_configure(config: pytest.Config) -> None:
    from tests.helpers.warning_filters import WARNING_FILTERS

    for spec in WARNING_FILTERS:
        config.addinivalue_line("filterwarnings", spec)
