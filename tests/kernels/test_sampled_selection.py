"""The sampled selection (``_torch.select.sampled_threshold``, CPU host reads) against
``torch.kthvalue`` on the score bits, on data that fits a sample and data that fools it (the
k-th outside the sample's window: None, then the radix passes), and ``block_mask`` with
sampling against the same call without it (the radix path), bit for bit."""

from __future__ import annotations

import pytest
import torch

from blocksparsity import kernels
from blocksparsity.kernels._common import Threshold
from blocksparsity.kernels._torch import _config as torch_config
from blocksparsity.kernels._torch import _policy, select
from blocksparsity.kernels._torch.select import PrunedBlocks, kthvalue_threshold, sampled_threshold


def _scores(kind: str, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "random":
        return torch.rand(n, generator=g)
    if kind == "ties":  # few distinct values: wide runs of ties at every threshold
        return torch.randint(0, 5, (n,), generator=g).float()
    if kind == "equal":
        return torch.full((n,), 0.25)
    if kind == "ascending":
        return torch.arange(n, dtype=torch.float32)
    if kind == "descending":
        return torch.arange(n, 0, -1, dtype=torch.float32)
    raise AssertionError(kind)


def _same(a: Threshold, b: Threshold) -> bool:
    return int(a.bits) == int(b.bits) and int(a.ties_pruned) == int(b.ties_pruned) and int(a.ties) == int(b.ties)


@pytest.fixture
def small_sample(monkeypatch):
    monkeypatch.setattr(torch_config, "SAMPLE_SCORES", 256)
    monkeypatch.setattr(torch_config, "CHUNK_ELEMENTS", 1000)  # several chunks, a partial last one
    monkeypatch.setattr(torch_config, "SAMPLE_WINDOW_MAX_SHARE", 1)  # a small sample's window is wide: no cap


@pytest.mark.parametrize("kind", ["random", "ties", "equal", "ascending", "descending"])
@pytest.mark.parametrize("n", [4096, 5003])
@pytest.mark.parametrize("every", [256, 4])  # the sample: SAMPLE_SCORES, or one in SAMPLE_EVERY
def test_sampled_threshold_equals_kthvalue(kind, n, every, small_sample, monkeypatch):
    monkeypatch.setattr(torch_config, "SAMPLE_EVERY", every)
    scores = _scores(kind, n, seed=n)
    for k in [1, 2, n // 3, n // 2, n - 2, n - 1]:
        threshold = sampled_threshold(scores, k)
        assert threshold is not None, (kind, k)
        assert _same(threshold, kthvalue_threshold(scores, k)), (kind, k)


def test_a_window_full_of_ties_is_given_up(small_sample, monkeypatch):
    scores = _scores("equal", 4096, seed=0)
    assert _same(sampled_threshold(scores, 2048), kthvalue_threshold(scores, 2048))  # no cap: exact
    monkeypatch.setattr(torch_config, "SAMPLE_WINDOW_MAX_SHARE", 8)
    assert sampled_threshold(scores, 2048) is None  # every score in the window: left to the radix passes
    with pytest.MonkeyPatch.context() as m:
        m.setattr(torch_config, "SAMPLED_SELECTION_MIN_BLOCKS", 1)
        m.setattr(torch_config, "KTHVALUE_MAX_BLOCKS", 1)
        blocks = PrunedBlocks.select(scores.reshape(64, 64), 2048, _policy.HOST_READS)
    assert _same(blocks.threshold, kthvalue_threshold(scores, 2048))


def test_a_sample_that_misses_the_kth_gives_none_and_the_selection_falls_back(small_sample):
    # Every 16th score (the strided sample's) is 0; the rest are large: the sample puts the
    # median at 0, where only 1/16 of the scores lie.
    n = 4096
    scores = torch.rand(n, generator=torch.Generator().manual_seed(3)) + 1
    scores[:: n // torch_config.SAMPLE_SCORES] = 0.0
    k = n // 2
    assert sampled_threshold(scores, k) is None
    with pytest.MonkeyPatch.context() as m:
        m.setattr(torch_config, "SAMPLED_SELECTION_MIN_BLOCKS", 1)
        m.setattr(torch_config, "KTHVALUE_MAX_BLOCKS", 1)
        blocks = PrunedBlocks.select(scores.reshape(64, 64), k, _policy.HOST_READS)
    assert _same(blocks.threshold, kthvalue_threshold(scores, k))


@pytest.mark.parametrize("kind", ["random", "ties", "fooled"])
@pytest.mark.parametrize("zeros_per_block", [4, 2])
def test_block_mask_with_sampling_equals_the_radix_path(kind, zeros_per_block, monkeypatch):
    monkeypatch.setattr(torch_config, "SMALL_MAX_ELEMENTS", 0)
    monkeypatch.setattr(torch_config, "KTHVALUE_MAX_BLOCKS", 1)
    monkeypatch.setattr(torch_config, "FUSED_SELECTION_MIN_BLOCKS", 1)
    monkeypatch.setattr(torch_config, "CHUNK_ELEMENTS", 4096)
    monkeypatch.setattr(torch_config, "SAMPLE_SCORES", 128)
    monkeypatch.setattr(torch_config, "SAMPLE_WINDOW_MAX_SHARE", 1)
    found = []  # what the sampled selection returned: it must have run (and, here, found the k-th)
    monkeypatch.setattr(select, "sampled_threshold", lambda s, k: found.append(sampled_threshold(s, k)) or found[-1])
    g = torch.Generator().manual_seed(7)
    x = torch.randn(96, 200, generator=g) if kind != "ties" else torch.randint(-2, 3, (96, 200), generator=g).float()
    if kind == "fooled":  # the strided sample sees only near-zero blocks
        x.view(-1, 4)[:: 96 * 50 // 128] *= 1e-6
    masks = {}
    for sampled in (True, False):
        monkeypatch.setattr(torch_config, "SAMPLED_SELECTION_MIN_BLOCKS", 1 if sampled else 1 << 40)
        masks[sampled] = [kernels.block_mask(x, level, (1, 4), zeros_per_block, backend="torch")
                          for level in (0.1, 0.5, 0.9)]
    assert all(torch.equal(a, b) for a, b in zip(masks[True], masks[False], strict=True))
    assert len(found) == 3
    assert all(t is not None for t in found) if kind != "fooled" else any(t is None for t in found)
