"""Calibration statistics against a hand computation; which weights get them; groups."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from blocksparsity.calibration import InputStatistics, find_targets, plan_groups


class Conv1D(nn.Module):
    """Hugging Face's GPT-2 linear layer (weight stored (in, out)), without transformers."""

    def __init__(self, nf: int, nx: int):
        super().__init__()
        self.nf, self.nx = nf, nx
        self.weight = nn.Parameter(torch.randn(nx, nf))
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x):
        return torch.addmm(self.bias, x.reshape(-1, self.nx), self.weight).reshape(*x.shape[:-1], self.nf)


def _params(model):
    return {n: p for n, p in model.named_parameters() if p.dim() >= 2}


def test_linear_conv1d_and_embedding_statistics_equal_the_hand_computation():
    torch.manual_seed(0)
    model = nn.ModuleDict({"emb": nn.Embedding(10, 6), "lin": nn.Linear(6, 4), "c1d": Conv1D(5, 4)})
    targets = find_targets(model, _params(model))
    assert set(targets) == {"lin.weight", "c1d.weight"}  # the embedding keeps magnitude scores
    assert targets["lin.weight"].axis == "column" and targets["c1d.weight"].axis == "row"
    full, diag = InputStatistics(targets, full=True), InputStatistics(targets, full=False)
    xs, hs = [], []
    for stats in (full, diag):
        stats.reset(list(targets))
    for _ in range(3):
        idx = torch.randint(0, 10, (2, 3))
        with full.collecting(list(targets)), diag.collecting(list(targets)):
            e = model["emb"](idx)
            hidden = model["lin"](e)
            model["c1d"](hidden)
        xs.append(e.detach().reshape(-1, 6))
        hs.append(hidden.detach().reshape(-1, 4))
    x, hid = torch.cat(xs), torch.cat(hs)
    torch.testing.assert_close(full.sums["lin.weight"], x.T @ x)
    torch.testing.assert_close(full.sums["c1d.weight"], hid.T @ hid)
    torch.testing.assert_close(diag.sums["lin.weight"], (x * x).sum(0))
    assert full.counts["lin.weight"] == 18 and diag.counts["c1d.weight"] == 18
    torch.testing.assert_close(full.scale("lin.weight"), (x * x).sum(0).sqrt().reshape(1, 6))
    assert full.scale("c1d.weight").shape == (4, 1)


@pytest.mark.parametrize("conv, shape", [
    (nn.Conv2d(3, 4, 3, padding=1, stride=2), (2, 3, 7, 6)),
    (nn.Conv2d(2, 4, (2, 3), padding="same", dilation=2, padding_mode="reflect"), (1, 2, 6, 7)),
    (nn.Conv1d(3, 4, 3, padding=2, stride=2), (2, 3, 9)),
    (nn.Conv3d(2, 3, 2, padding=1), (1, 2, 3, 4, 3)),
])
def test_conv_statistics_are_those_of_the_patches_the_weight_multiplies(conv, shape):
    """H of the unfolded patches reproduces the conv: patches @ weight_2d.T = conv output."""
    torch.manual_seed(0)
    x = torch.randn(shape)
    targets = find_targets(conv, {"weight": conv.weight})
    stats = InputStatistics(targets, full=True)
    stats.reset(["weight"])
    with stats.collecting(["weight"]):
        out = conv(x)
    # the patches are the rows p with p @ W2.T = out (bias aside): check H = P^T P through that identity
    w2 = conv.weight.detach().reshape(conv.out_channels, -1)
    y = (out.detach() - conv.bias.detach().reshape(1, -1, *[1] * (x.dim() - 2))).movedim(1, -1).reshape(-1, conv.out_channels)
    torch.testing.assert_close(w2 @ stats.sums["weight"] @ w2.T, y.T @ y, rtol=1e-4, atol=1e-3)
    assert stats.counts["weight"] == y.shape[0]
    if isinstance(conv, nn.Conv2d) and conv.padding_mode == "zeros":
        p = F.unfold(x, conv.kernel_size, conv.dilation, conv.padding, conv.stride).transpose(1, 2).reshape(-1, w2.shape[1])
        torch.testing.assert_close(stats.sums["weight"], p.T @ p)


def test_tied_weights_get_one_scale_and_no_update():
    emb = nn.Embedding(12, 8)
    head = nn.Linear(8, 12, bias=False)
    head.weight = emb.weight  # GPT-2's wte / lm_head
    model = nn.ModuleDict({"wte": emb, "lm_head": head})
    targets = find_targets(model, {"wte.weight": emb.weight})
    assert list(targets) == ["wte.weight"] and targets["wte.weight"].readers == [head]
    assert not targets["wte.weight"].updatable and "embedding" in targets["wte.weight"].why


def test_groups_fit_the_budget():
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 4), nn.Linear(4, 4))
    targets = find_targets(model, _params(model))
    assert plan_groups(targets, full=True, itemsize=4, max_bytes=None) == [["0.weight", "1.weight", "2.weight"]]
    assert plan_groups(targets, full=True, itemsize=4, max_bytes=80 * 4) == [["0.weight"], ["1.weight", "2.weight"]]
    assert plan_groups(targets, full=True, itemsize=4, max_bytes=1) == [["0.weight"], ["1.weight"], ["2.weight"]]
    assert InputStatistics(targets, full=True).bytes() == (64 + 64 + 16) * 4
