"""Compact sparse checkpoints: a sparsified model's tensors as values plus bit-packed masks.

Zeros in a dense checkpoint take as many bytes as any other number. This package stores
each floating-point tensor as its nonzero values and a mask of 1 bit per element, or, where
whole blocks are zero, 1 bit per block (format: ``blocksparsity.checkpoint._format``, versioned
header ``{"format": "blocksparse.sparse_checkpoint", "version": 2}``, a SHA-256 per tensor), and loads it back
into dense tensors bit for bit. Files are read with ``torch.load(weights_only=True)`` only:
a checkpoint is untrusted input, and a pickle that asks for anything but tensors and plain
containers is refused without running it.

    save_sparse(model.state_dict(), "model.sparse.pt")
    model.load_state_dict(load_sparse("model.sparse.pt"))

Command line (post-training sparsification of a Lightning or plain state-dict checkpoint):

    python -m blocksparsity.checkpoint in.ckpt out.pt --level 0.5 --block 1,4 [--zeros-per-block N]
"""

from blocksparsity.checkpoint._api import default_max_bytes, load_sparse, load_sparse_checkpoint, read_checkpoint, save_sparse
from blocksparsity.checkpoint._format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    CheckpointError,
    TensorRecord,
    UncheckedCheckpointWarning,
)
from blocksparsity.checkpoint._lightning import load_lightning_checkpoint, write_lightning_checkpoint
from blocksparsity.checkpoint._prune import PruneRecord, sparsify_state_dict

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "CheckpointError",
    "PruneRecord",
    "TensorRecord",
    "UncheckedCheckpointWarning",
    "default_max_bytes",
    "load_lightning_checkpoint",
    "load_sparse",
    "load_sparse_checkpoint",
    "read_checkpoint",
    "save_sparse",
    "sparsify_state_dict",
    "write_lightning_checkpoint",
]
