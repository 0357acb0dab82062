"""The callbacks' flags and device are checked when the callback is constructed."""

from __future__ import annotations

import pytest
import torch

from blocksparsity import DataNormSparsifier, PostTrainingDataSparsity


@pytest.mark.parametrize("kwargs, error, match", [
    ({"verify_ranks": "yes"}, TypeError, "verify_ranks must be True or False; got 'yes'"),
    ({"verify_ranks": 1}, TypeError, "verify_ranks must be True or False"),
    ({"print_table": None}, TypeError, "print_table must be True or False; got None"),
    ({"sparsified_device": "nodevice"}, ValueError, "sparsified_device must name a device .*'nodevice'"),
    ({"sparsified_device": "cuda:x"}, ValueError, "sparsified_device must name a device"),
    ({"sparsified_device": 1.5}, TypeError, "sparsified_device must be a torch.device"),
])
def test_callback_flags_and_device_are_checked_at_construction(kwargs, error, match):
    with pytest.raises(error, match=match):
        PostTrainingDataSparsity(DataNormSparsifier, {"sparsity_level": 0.5}, **kwargs)


def test_callback_good_device_and_flags():
    cb = PostTrainingDataSparsity(DataNormSparsifier, {"sparsity_level": 0.5}, sparsified_device="cpu",
                                  verify_ranks=False, print_table=False)
    assert cb.sparsified_device == torch.device("cpu") and cb.verify_ranks is False and cb.print_table is False
