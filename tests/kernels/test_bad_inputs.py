"""Every bad input raises a TypeError/ValueError that names the argument, and leaves the
data untouched, on every backend that runs here."""

from __future__ import annotations

import pytest
import torch

from blocksparsity import kernels
from blocksparsity.kernels import _dispatch
from tests.helpers.devices import triton_devices

BACKENDS = ["torch"] + (["triton"] if "cpu" in triton_devices() else [])


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num())


def calls(x, backend):
    """Each public operation on ``x`` with otherwise good arguments, by name."""
    mask = torch.ones(x.shape, dtype=torch.bool) if isinstance(x, torch.Tensor) else None
    return {
        "block_norm": lambda **kw: kernels.block_norm(x, **{"backend": backend, **kw}),
        "block_mask": lambda **kw: kernels.block_mask(x, **{"sparsity_level": 0.5, "backend": backend, **kw}),
        "sparsify": lambda **kw: kernels.sparsify(x, **{"sparsity_level": 0.5, "inplace": True, "backend": backend, **kw}),
        "apply_mask": lambda **kw: kernels.apply_mask(x, **{"mask": mask, "inplace": True, "backend": backend, **kw}),
    }


BAD = [
    # (argument, value, error, applies to)
    ("block_shape", (0, 4), ValueError, ("block_norm", "block_mask", "sparsify")),
    ("block_shape", (2, -1), ValueError, ("block_norm", "block_mask", "sparsify")),
    ("block_shape", (4,), TypeError, ("block_norm", "block_mask", "sparsify")),
    ("block_shape", (1.5, 4), TypeError, ("block_norm", "block_mask", "sparsify")),
    ("block_shape", (True, 4), TypeError, ("block_norm", "block_mask", "sparsify")),
    ("block_shape", "14", TypeError, ("block_norm", "block_mask", "sparsify")),
    ("zeros_per_block", -1, ValueError, ("block_mask", "sparsify")),
    ("zeros_per_block", 5, ValueError, ("block_mask", "sparsify")),
    ("zeros_per_block", 2.0, TypeError, ("block_mask", "sparsify")),
    ("zeros_per_block", True, TypeError, ("block_mask", "sparsify")),
    ("sparsity_level", -0.1, ValueError, ("block_mask", "sparsify")),
    ("sparsity_level", 1.5, ValueError, ("block_mask", "sparsify")),
    ("sparsity_level", float("nan"), ValueError, ("block_mask", "sparsify")),
    ("sparsity_level", float("inf"), ValueError, ("block_mask", "sparsify")),
    ("sparsity_level", "0.5", TypeError, ("block_mask", "sparsify")),
    ("sparsity_level", None, TypeError, ("block_mask", "sparsify")),
    ("sparsity_level", True, TypeError, ("block_mask", "sparsify")),
    ("norm", "L3", ValueError, ("block_norm", "block_mask", "sparsify")),
    ("norm", None, ValueError, ("block_norm", "block_mask", "sparsify")),
    ("backend", "cuda", ValueError, ("block_norm", "block_mask", "sparsify", "apply_mask")),
    ("inplace", 1, TypeError, ("sparsify", "apply_mask")),
    ("mask", torch.ones(3, 3, dtype=torch.bool), ValueError, ("apply_mask",)),
    ("mask", torch.ones(6, 8), TypeError, ("apply_mask",)),
    ("mask", [[True]], TypeError, ("apply_mask",)),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("arg, value, error, ops", BAD, ids=lambda v: repr(v)[:20])
def test_bad_arguments_name_themselves_and_change_nothing(backend, arg, value, error, ops):
    x = torch.randn(6, 8)
    before = x.clone()
    for op, call in calls(x, backend).items():
        if op in ops:
            with pytest.raises(error, match=arg):
                call(**{arg: value})
            assert torch.equal(x, before), op


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "x, error",
    [([1.0, 2.0], TypeError), (torch.arange(8), TypeError), (torch.tensor(1.0), ValueError),
     (torch.ones(4, dtype=torch.complex64), TypeError)],
    ids=["list", "int-tensor", "0-dim", "complex"],
)
def test_bad_data(backend, x, error):
    for call in calls(x, backend).values():
        with pytest.raises(error, match="x"):
            call()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("poison", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_non_finite_data_is_rejected_untouched(backend, poison, dtype):
    x = torch.randn(6, 8).to(dtype)
    x[3, 5] = poison
    before = x.clone()
    for op, call in calls(x, backend).items():
        with pytest.raises(ValueError, match="NaN or infinite"):
            call()
        assert same(x, before), op
    _, flag = kernels.block_mask_unchecked(x, 0.5, backend=backend)
    assert bool(flag)


def test_triton_on_cpu_without_interpreter_says_why(monkeypatch):
    monkeypatch.setattr(_dispatch, "interpreting", lambda: False)
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        kernels.block_mask(torch.randn(4, 4), 0.5, backend="triton")


def test_auto_takes_torch_on_cpu():
    assert _dispatch.backend_name("auto", torch.device("cpu")) == "torch"


# ------------------------------------------------------------------ the rules, said once
def test_the_validation_module_states_the_rules_the_api_and_the_sparsifier_share():
    from blocksparsity import DataNormSparsifier
    from blocksparsity.kernels import validation

    assert set(validation.__all__) <= set(dir(validation)) and "validation" in kernels.__all__
    assert validation.BACKENDS == ("auto", "triton", "torch")
    for bad in ("cuda", None):
        with pytest.raises(ValueError, match="backend must be one of 'auto', 'triton', 'torch'"):
            validation.check_backend(bad)
        with pytest.raises(ValueError, match="backend must be one of 'auto', 'triton', 'torch'"):
            DataNormSparsifier(backend=bad)
        with pytest.raises(ValueError, match="backend must be one of 'auto', 'triton', 'torch'"):
            kernels.block_norm(torch.ones(4, 4), backend=bad)
    assert validation.dtype_name(torch.bfloat16) == "bfloat16"
    assert validation.check_not_float64(torch.float32, "x", "cast it") is None
    with pytest.raises(TypeError, match=r"^y is float64; cast it: block scores are float32"):
        validation.check_not_float64(torch.float64, "y", "cast it")
    assert validation.FLOAT64_REFUSED in _error_of(lambda: kernels.block_mask(torch.ones(4, 4, dtype=torch.float64), 0.5))
    assert validation.FLOAT64_REFUSED in _error_of(lambda: DataNormSparsifier([("w", torch.ones(4, 4, dtype=torch.float64))]))
    assert validation.clip_block((3, 100), (8, 4)) == (3, 4) and validation.local_tensor(torch.ones(2)).shape == (2,)


def _error_of(call) -> str:
    with pytest.raises((TypeError, ValueError)) as info:
        call()
    return str(info.value)


def test_sparsity_uses_only_the_public_names_of_kernels():
    """``blocksparsity`` imports from ``blocksparsity.kernels`` only what it exports: its
    ``__all__`` and the ``validation`` module's; never a private module or ``kernels.api``."""
    import ast
    from pathlib import Path

    from blocksparsity.kernels import validation

    root = Path(__file__).resolve().parents[2] / "sparsity"
    allowed = {"blocksparsity.kernels": set(kernels.__all__), "blocksparsity.kernels.validation": set(validation.__all__)}
    for path in root.rglob("*.py"):
        source = path.read_text()
        assert "kernels._" not in source and "kernels.api" not in source, path
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("blocksparsity.kernels"):
                assert node.module in allowed, (path, node.module)
                assert {a.name for a in node.names} <= allowed[node.module], (path, node.module)
