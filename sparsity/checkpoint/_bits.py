"""Bit packing: a bool vector as bytes, 8 elements a byte, least significant bit first.

torch has no ``packbits``; this is the vectorised equivalent of
``numpy.packbits(bits, bitorder="little")``, on any device.
"""

from __future__ import annotations

import torch

_SHIFTS = (1 << torch.arange(8, dtype=torch.uint8)).tolist()


def packed_size(count: int) -> int:
    """Bytes that ``count`` bits take."""
    return -(-count // 8)


def pack_bits(bits: torch.Tensor) -> torch.Tensor:
    """Pack a 1-D bool tensor into a uint8 tensor of ``ceil(len / 8)`` bytes."""
    count = bits.numel()
    padded = torch.zeros(packed_size(count) * 8, dtype=torch.uint8, device=bits.device)
    padded[:count] = bits.reshape(-1)
    shifts = torch.tensor(_SHIFTS, dtype=torch.uint8, device=bits.device)
    return (padded.view(-1, 8) * shifts).sum(dim=1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, count: int) -> torch.Tensor:
    """The first ``count`` bits of ``packed`` (uint8, from ``pack_bits``) as a 1-D bool tensor."""
    shifts = torch.tensor(_SHIFTS, dtype=torch.uint8, device=packed.device)
    return (packed.reshape(-1, 1) & shifts).ne(0).reshape(-1)[:count]
