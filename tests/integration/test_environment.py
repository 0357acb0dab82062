"""The test environment and the declared bounds: the lock pins everything pyproject.toml names,
the lower bounds are stated once in three agreeing places (pyproject.toml, the import-time check,
``make test-oldest``'s pins), and an older torch or Lightning gets one clear error at import."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from blocksparsity import _versions

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _pins(path: Path) -> dict[str, Version]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", line
            pins[canonicalize_name(req.name)] = Version(spec.version)
    return pins


def _declared(extra: str | None) -> list[Requirement]:
    reqs = [Requirement(r) for r in PROJECT["dependencies"]]
    if extra:
        reqs += [Requirement(r) for r in PROJECT["optional-dependencies"][extra]]
    return [r for r in reqs if r.marker is None or r.marker.evaluate({"extra": extra or ""})]


def test_the_lock_pins_every_dependency_the_dev_extra_names():
    pins = _pins(ROOT / "requirements" / "dev-cpu.txt")
    for req in _declared("dev"):
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} is not in requirements/dev-cpu.txt: run make lock"
        assert req.specifier.contains(pins[name], prereleases=True), f"the lock's {name}=={pins[name]} is outside {req}"
    assert pins["torch"].local == "cpu", "the lock is for the CPU build of torch"
    assert not [name for name in pins if name.startswith("nvidia-")], "no CUDA libraries in the CPU lock"


def test_the_lower_bounds_agree_everywhere():
    declared = {canonicalize_name(r.name): r for r in _declared(None)}
    oldest = _pins(ROOT / "requirements" / "oldest.txt")
    for name, minimum in (("torch", _versions.MIN_TORCH), ("lightning", _versions.MIN_LIGHTNING)):
        (lower,) = [s for s in declared[name].specifier if s.operator == ">="]
        assert _versions.release(lower.version) == minimum, (name, lower)
        assert oldest[name].release[: len(minimum)] == minimum, (name, oldest[name])


def test_the_python_claim_and_the_lint_target_agree():
    """ruff checks syntax and idioms against the oldest Python claimed (proven by make test-oldest)."""
    ruff = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]
    assert PROJECT["requires-python"] == ">=3.10" and ruff["target-version"] == "py310"


@pytest.mark.parametrize(("version", "release"), [("2.6.0", (2, 6, 0)), ("2.13.0+cpu", (2, 13, 0)),
                                                  ("2.6.0a0+git1234", (2, 6, 0)), ("weird", ())])
def test_release_numbers(version, release):
    assert _versions.release(version) == release


def test_require_names_the_version_needed():
    _versions.require("torch", "2.6.0", (2, 6))
    _versions.require("torch", "", (2, 6))  # unknown: no claim
    with pytest.raises(ImportError, match=r"blocksparsity needs torch>=2\.6; this environment has torch 2\.5\.1"):
        _versions.require("torch", "2.5.1", (2, 6))


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=tempfile.gettempdir())


@pytest.mark.slow
def test_an_old_torch_gets_one_clear_error_at_import():
    done = _run("import torch; torch.__version__ = '2.7.1+cu126'\nimport blocksparsity")
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1] == (
        "ImportError: blocksparsity needs torch>=2.8; this environment has torch 2.7.1+cu126. "
        "Upgrade it (pip install 'torch>=2.8')."
    )


@pytest.mark.slow
def test_an_old_lightning_gets_one_clear_error_when_the_callbacks_load():
    done = _run("import blocksparsity._versions as v; v.installed_version = lambda name: '2.4.0'\n"
                "from blocksparsity.kernels import block_mask\n"  # the kernels need no Lightning
                "from blocksparsity import DataNormSparsifier\n"
                "from blocksparsity import TrainingAwareDataSparsity")
    assert done.returncode != 0
    assert "ImportError: blocksparsity needs lightning>=2.5; this environment has lightning 2.4.0" in done.stderr
