"""Every backend module fulfils the contract ``blocksparsity.kernels._backend.Backend`` declares: each
function, with the declared parameters in order (a backend may add keyword-only ones with
defaults), and the constants saying its name and whether it syncs before writing."""

from __future__ import annotations

import inspect

import pytest

from blocksparsity.kernels import _backend, _common, _dispatch

MEMBERS = [name for name, value in vars(_backend.Backend).items() if inspect.isfunction(value) and not name.startswith("_")]


def _modules():
    from blocksparsity.kernels import _torch

    modules = [_torch]
    if _dispatch.triton_installed():
        from blocksparsity.kernels import _triton

        modules.append(_triton)
    return modules


def test_the_contract_declares_every_operation():
    assert sorted(MEMBERS) == ["apply_mask", "block_mask", "block_mask_given", "block_mask_group", "block_norm",
                               "select_threshold", "sparsify"]


@pytest.mark.parametrize("module", _modules(), ids=lambda m: m.__name__)
def test_backend_module_fulfils_the_contract(module):
    assert module.NAME in (_common.TORCH, _common.TRITON)
    assert module.SYNCS_BEFORE_WRITING is (module.NAME == _common.TORCH)
    for name in MEMBERS:
        declared = list(inspect.signature(getattr(_backend.Backend, name)).parameters.values())[1:]  # less self
        actual = inspect.signature(getattr(module, name)).parameters.values()
        positional = [p for p in actual if p.kind is not p.KEYWORD_ONLY]
        assert [p.name for p in positional] == [p.name for p in declared], (module.NAME, name)
        assert [p.default for p in positional] == [p.default for p in declared], (module.NAME, name)
        extra = [p for p in actual if p.kind is p.KEYWORD_ONLY]
        assert all(p.default is not p.empty for p in extra), (module.NAME, name)


def test_resolve_returns_the_named_backend():
    import torch

    assert _dispatch.resolve("torch", torch.device("cpu")).NAME == _common.TORCH
    assert _dispatch.resolve("auto", torch.device("cpu")).NAME == _common.TORCH
