"""When stdout is not a terminal (CI, ``nohup``, a cluster job's log) the demo prints no line
per progress-bar refresh. (The checkpoint tool: tests/callbacks/test_training_loops.py; the benchmark
harness: tests/benchmarks/test_harness.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


# Lightning shows rich's bar where rich is installed (it prints its last frame into a log) and
# tqdm's otherwise (a line per refresh); the demo runs here with tqdm's, the worse of the two.
DEMO_WITH_TQDM_BAR = """
import lightning.pytorch.trainer.connectors.callback_connector as connector
connector._RICH_AVAILABLE = False
from blocksparsity.demo import main
main(["--epochs", "2", "--samples", "3000"])
"""


@pytest.mark.slow
def test_demo_output_piped_has_no_progress_bar_refreshes(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("TRITON_INTERPRET", None)
    done = subprocess.run([sys.executable, "-c", DEMO_WITH_TQDM_BAR], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Validation loss" in done.stdout and "Mask computation" in done.stdout
    assert "\r" not in done.stdout + done.stderr
    assert "it/s" not in done.stdout + done.stderr  # the rate, which every refresh prints
    assert len(done.stdout.splitlines()) < 60  # the tables and the results, not a line per batch
