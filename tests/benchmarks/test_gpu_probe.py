"""benchmarks/gpu_probe.py, the first step of device_check.sh, dry-run on the CPU: every group
runs (in its own subprocess, Triton's interpreter, tiny sizes) and passes, and a group that
crashes or fails is reported without taking the others."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from blocksparsity.kernels import _dispatch

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.skipif(not _dispatch.triton_installed(), reason="triton not installed")
def test_probe_dry_run_passes_every_group():
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu_probe", "--dry-run"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    from benchmarks.gpu_probe import GROUPS

    for group in GROUPS:
        assert f"== {group}: ok in " in done.stdout
    assert "FAIL" not in done.stdout and f"{len(GROUPS)}/{len(GROUPS)} groups ok" in done.stdout


def test_a_crashing_group_does_not_take_the_others(monkeypatch, capfd):
    from benchmarks import gpu_probe

    real_run = subprocess.run

    def run(cmd, **kwargs):  # the "column" group dies as a CUDA fault would; the others pass
        group = cmd[cmd.index("--group") + 1]
        code = "import os; os.abort()" if group == "column" else "print('PASS fake')"
        return real_run([sys.executable, "-c", code], **kwargs)

    monkeypatch.setattr(gpu_probe.subprocess, "run", run)
    assert gpu_probe.run_all(["compile", "column", "float64"], dry=True, scale_limits=1.0, budget=60) == 1
    out = capfd.readouterr().out
    assert "== compile: ok in" in out and "== column: CRASHED" in out and "== float64: ok in" in out
    assert "2/3 groups ok" in out
