"""The wheel as a user installs it: one import root, ``blocksparsity``, beside transformers and
Hugging Face's ``kernels`` (the same top-level name as our ``kernels/`` folder).

The wheel is built without its dependencies and installed into a new virtual environment that
sees this environment's packages (torch, Lightning, transformers) through a path file, so the
test needs no network and takes seconds. Everything runs from a directory outside the checkout.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow

# Run in the new environment, from a directory outside the checkout: Hugging Face's kernels is
# theirs, ours is blocksparsity.kernels, and a tiny GPT-2 built from a config trains a few
# steps in a Trainer with PostTrainingDataSparsity.
USER_SCRIPT = r"""
import importlib.util
import warnings
from pathlib import Path

if HF_KERNELS:
    import kernels
    assert hasattr(kernels, "LayerRepository"), kernels.__file__
else:  # no other package provides it here: ours must not either
    assert importlib.util.find_spec("kernels") is None

import blocksparsity
from blocksparsity.kernels import block_mask
assert Path(blocksparsity.__file__).parent.parent == Path(SITE), blocksparsity.__file__
assert block_mask.__module__ == "blocksparsity.kernels.api"

import lightning.pytorch as pl
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from blocksparsity import DataNormSparsifier, PostTrainingDataSparsity

warnings.filterwarnings("ignore")
torch.manual_seed(0)


class LM(pl.LightningModule):
    def __init__(self):
        super().__init__()
        config = GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64, n_positions=16)
        self.model = GPT2LMHeadModel(config)

    def training_step(self, batch, batch_idx):
        (ids,) = batch
        return self.model(input_ids=ids, labels=ids).loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randint(0, 64, (16, 16))), batch_size=4)
callback = PostTrainingDataSparsity(DataNormSparsifier, {"sparsity_level": 0.5}, print_table=False)
trainer = pl.Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, callbacks=[callback], accelerator="cpu")
module = LM()
trainer.fit(module, data)
trained = module.model.transformer.wte.weight.detach()
copy = dict(callback.sparsified.named_parameters())["transformer.wte.weight"]
assert torch.equal(copy != 0, block_mask(trained, 0.5) & (trained != 0))
print("ok", len(callback.masks))
"""


def _installed(distribution: str) -> bool:
    """In the locked environment, transformers brings Hugging Face's kernels; an older transformers
    (make test-oldest) does not."""
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                           str(ROOT)], capture_output=True, text=True, timeout=300, cwd=out)
    assert done.returncode == 0, done.stderr[-3000:]
    (path,) = out.glob("blocksparsity-*.whl")
    return path


def test_the_wheel_holds_one_import_root(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    dist_info = {t for t in tops if t.endswith(".dist-info")}
    assert tops - dist_info == {"blocksparsity"}, tops
    assert len(dist_info) == 1 and next(iter(dist_info)).startswith("blocksparsity-")
    for module in ("blocksparsity/__init__.py", "blocksparsity/kernels/__init__.py", "blocksparsity/kernels/_triton/select.py",
                   "blocksparsity/kernels/_torch/select.py", "blocksparsity/callbacks/training_aware.py",
                   "blocksparsity/checkpoint/__main__.py", "blocksparsity/demo.py"):
        assert module in names, module
    assert not any(name.startswith(("blocksparsity/tests", "blocksparsity/benchmarks")) for name in names)


def test_the_wheel_installs_beside_transformers_and_hugging_faces_kernels(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True, timeout=120)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # this environment's packages, behind the new environment's own (no network, no second torch)
    (site / "reuse_test_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    done = subprocess.run([*pip, "install", "-q", "--no-deps", "--no-index", str(wheel)], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in site.iterdir() if not p.name.endswith((".dist-info", ".pth"))) == ["blocksparsity"]

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    script = f"SITE = {str(site)!r}\nHF_KERNELS = {_installed('kernels')}\n" + USER_SCRIPT
    done = subprocess.run([str(python), "-c", script], capture_output=True, text=True, timeout=300, cwd=outside)
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.split()[0] == "ok"

    check = subprocess.run([*pip, "check"], capture_output=True, text=True, timeout=120, cwd=outside)
    assert check.returncode == 0, check.stdout + check.stderr
