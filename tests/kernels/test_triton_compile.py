"""Every Triton kernel specialisation compiles for Hopper (sm_90), with no GPU needed.
The interpreter runs kernels as Python, so this is what catches code that only a real
compile rejects. Runs in a subprocess because the interpreter must be off."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from blocksparsity.kernels import _dispatch

ROOT = Path(__file__).resolve().parents[2]


def _has_the_binder_the_script_uses() -> bool:
    """tests/kernels/aot_compile.py specialises launches with Triton's own (internal) binder, as
    ``JITFunction.run`` does in the Triton of the lock; older Triton (3.4, make test-oldest)
    binds arguments another way."""
    if not _dispatch.triton_installed():
        return False
    from triton.runtime import jit

    return hasattr(jit, "create_function_from_signature") and hasattr(jit.JITFunction, "_pack_args")


@pytest.mark.slow
@pytest.mark.skipif(not _dispatch.triton_installed(), reason="triton not installed")
@pytest.mark.skipif(not _has_the_binder_the_script_uses(), reason="this Triton has no JITFunction._pack_args binder")
def test_all_kernels_compile_for_sm90():
    env = {**os.environ, "TRITON_INTERPRET": "0", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(Path(__file__).parent / "aot_compile.py"), "90"],
        env=env, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "compiled" in done.stdout
