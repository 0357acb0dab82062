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

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.skipif(not _dispatch.triton_installed(), reason="triton not installed")
def test_all_kernels_compile_for_sm90():
    env = {**os.environ, "TRITON_INTERPRET": "0", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "aot_compile.py"), "90"],
        env=env, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "compiled" in done.stdout
