"""Sparse checkpoints back into Lightning: a file written by ``python -m blocksparsity.checkpoint``
(or ``save_sparse`` with a Lightning checkpoint's entries as ``extra``) as the normal Lightning
checkpoint that ``LightningModule.load_from_checkpoint`` and ``Trainer.fit(ckpt_path=...)`` read.

Lightning reads checkpoints with ``torch.load`` and expects its own entries at the top level
(``"pytorch-lightning_version"``, ``"state_dict"``, ...); the compact format nests them under its
header, so Lightning cannot read it directly (``KeyError: 'pytorch-lightning_version'``).
``write_lightning_checkpoint`` writes the dense checkpoint Lightning reads;
``load_lightning_checkpoint`` returns it as a dict.

The training-aware callback's state in such a file describes masks of the weights *before*
the command line pruned them (its masks, its schedule, its level): resuming it would apply
stale masks. By default it is dropped, so a ``TrainingAwareDataSparsity`` in the resumed run
starts afresh (new masks from the pruned weights, its schedule from the start).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from blocksparsity.checkpoint._api import load_sparse_checkpoint
from blocksparsity.checkpoint._files import PathLike, same_file, write_atomically
from blocksparsity.checkpoint._format import CheckpointError

__all__ = ["load_lightning_checkpoint", "write_lightning_checkpoint"]

LIGHTNING_VERSION_KEY = "pytorch-lightning_version"
CALLBACK_STATES = ("drop", "keep")


def load_lightning_checkpoint(path: PathLike, *, callback_state: str = "drop") -> dict[str, Any]:
    """The sparse checkpoint at ``path`` as a normal Lightning checkpoint dict (dense tensors).

    ``path`` must hold a sparse checkpoint made from a Lightning checkpoint (it keeps
    Lightning's entries: ``"pytorch-lightning_version"``, ``"hyper_parameters"``, ``"loops"``,
    ...); a plain state dict's has no Lightning entries to restore: load it with
    ``load_sparse`` and ``model.load_state_dict``. ``callback_state="drop"`` (default) leaves
    out ``TrainingAwareDataSparsity`` states (stale: made before the pruning; see the module's
    docstring); ``"keep"`` keeps everything. The optimizer and LR-scheduler states are there
    only when the command line ran with ``--keep-optimizer``; ``Trainer.fit(ckpt_path=...)``
    needs them (Lightning refuses a checkpoint without them), ``load_from_checkpoint`` does not.
    """
    if callback_state not in CALLBACK_STATES:
        raise ValueError(f"callback_state must be one of {CALLBACK_STATES}; got {callback_state!r}")
    checkpoint = load_sparse_checkpoint(path)
    if LIGHTNING_VERSION_KEY not in checkpoint:
        raise CheckpointError(
            f"{path}: not made from a Lightning checkpoint (no {LIGHTNING_VERSION_KEY!r} entry; it holds "
            f"{sorted(map(str, checkpoint))[:8]}): load its state dict with load_sparse and model.load_state_dict"
        )
    if callback_state == "drop":
        _drop_training_aware_state(checkpoint)
    return checkpoint


def _drop_training_aware_state(checkpoint: dict[str, Any]) -> None:
    """Leave out every ``TrainingAwareDataSparsity`` state and its sharded masks, found by the
    keys that the callback's module exports (imported here, not at the top: it loads Lightning)."""
    from blocksparsity.callbacks.training_aware import SHARDED_MASKS_PREFIX, is_state_key

    callbacks = checkpoint.get("callbacks")
    if isinstance(callbacks, dict):
        checkpoint["callbacks"] = {k: v for k, v in callbacks.items() if not is_state_key(k)}
    checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith(SHARDED_MASKS_PREFIX)}


def write_lightning_checkpoint(
    path: PathLike, out: PathLike, *, callback_state: str = "drop", force: bool = False
) -> str:
    """Write the sparse checkpoint at ``path`` to ``out`` as a normal (dense) Lightning
    checkpoint, atomically, and return ``str(out)``: then
    ``MyModule.load_from_checkpoint(out)`` and ``trainer.fit(module, ckpt_path=out)`` read it.
    ``callback_state`` as ``load_lightning_checkpoint``. Refuses to write over ``path``, and
    over an existing ``out`` unless ``force``."""
    if not isinstance(force, bool):
        raise TypeError(f"force must be True or False; got {force!r}")
    if same_file(path, out):
        raise CheckpointError(f"refusing to write {out}: it is the input file")
    checkpoint = load_lightning_checkpoint(path, callback_state=callback_state)
    if Path(out).exists() and not force:
        raise CheckpointError(f"{out} exists; pass force=True to replace it")
    write_atomically(out, lambda tmp: torch.save(checkpoint, tmp))
    return str(out)
