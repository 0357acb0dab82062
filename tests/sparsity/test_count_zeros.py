"""``blocksparsity.distributed.count_zeros`` on plain masks (the sharded ones: tests/kernels/
test_sharded.py): the zeros of every mask, bool or integer (nonzero keeps), empty ones too."""

from __future__ import annotations

import torch

from blocksparsity.distributed import count_zeros


def test_counts_zeros_of_bool_integer_and_empty_masks():
    g = torch.Generator().manual_seed(0)
    masks = {
        "bool": torch.rand(37, 29, generator=g) > 0.4,
        "all kept": torch.ones(5, 8, dtype=torch.bool),
        "none kept": torch.zeros(3, 7, dtype=torch.bool),
        "int": torch.randint(-2, 3, (11, 13), generator=g),
        "uint8": torch.tensor([[0, 1], [2, 0]], dtype=torch.uint8),
        "empty": torch.ones(0, 4, dtype=torch.bool),
        "strided": (torch.rand(16, 16, generator=g) > 0.5)[::2, 1::3],
    }
    expected = [int((m == 0).sum()) for m in masks.values()]
    assert count_zeros(masks) == expected
    assert expected[1:3] == [0, 21] and expected[5] == 0
    assert count_zeros({}) == []
