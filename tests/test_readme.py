"""The README's Python examples (```python blocks) run as written, in order, in one namespace
(like a reader pasting them into one session). Fragments that need a distributed run are
fenced ```py and are exercised by tests/sharded_worker.py instead."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_readme_has_examples():
    assert len(python_blocks()) >= 4


@pytest.mark.slow
def test_readme_examples_run(tmp_path):
    script = "\n\n".join(python_blocks())
    (tmp_path / "readme_examples.py").write_text(script)
    done = subprocess.run([sys.executable, str(tmp_path / "readme_examples.py")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
