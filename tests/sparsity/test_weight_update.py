"""The least-squares update: equal to the exact per-row solution, masks kept, pruned weights zero."""

from __future__ import annotations

import pytest
import torch

from blocksparsity import kernels
from blocksparsity.weight_update import least_squares_update, reconstruction_error

TOLERANCE = 1e-4  # max |difference| over max |exact|, float32 against the float64 per-row solve


def _problem(rows: int, n: int, seed: int = 0, correlated: bool = True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4 * n, n, generator=g)
    if correlated:
        x = torch.relu(x @ torch.randn(n, n, generator=g))
    w = torch.randn(rows, n, generator=g)
    return w, x.T @ x


def per_row(w: torch.Tensor, mask: torch.Tensor, h: torch.Tensor, damping: float = 0.01) -> torch.Tensor:
    """One float64 solve per row: w_K = Hd_KK^-1 (Hd w)_K, Hd = H + damping * mean(diag H) I."""
    hd = h.double() + damping * h.double().diagonal().mean() * torch.eye(h.shape[0], dtype=torch.float64)
    out = torch.zeros_like(w, dtype=torch.float64)
    for r in range(w.shape[0]):
        keep = mask[r].nonzero().squeeze(1)
        out[r, keep] = torch.linalg.solve(hd[keep][:, keep], (hd @ w[r].double())[keep])
    return out


@pytest.mark.parametrize("method", ["sweep", "exact"])
@pytest.mark.parametrize("kind", ["blocks", "2:4", "random"])
def test_update_equals_the_exact_per_row_solution(method, kind):
    w, h = _problem(24, 48)
    if kind == "random":
        mask = torch.rand(w.shape, generator=torch.Generator().manual_seed(1)) > 0.5
    else:
        mask = kernels.block_mask(w, 1.0 if kind == "2:4" else 0.5, (1, 4), 2 if kind == "2:4" else 4)
    new = least_squares_update(w, mask, h, method=method, block_size=16)
    exact = per_row(w, mask, h)
    assert (new.double() - exact).abs().max() <= TOLERANCE * exact.abs().max()
    assert torch.equal(new == 0, ~mask | (new == 0)) and bool((new[~mask] == 0).all())  # pruned stay exactly 0
    assert reconstruction_error(new, w, h) < reconstruction_error(w * mask, w, h)


def test_the_sweep_alone_is_exact_when_pruned_weights_come_first_and_rows_without_pruning_stay():
    w, h = _problem(16, 32, seed=2)
    first_kept = torch.randint(0, 32, (16, 1), generator=torch.Generator().manual_seed(3))
    mask = torch.arange(32)[None] >= first_kept
    mask[0] = True  # nothing pruned: unchanged
    sweep = least_squares_update(w, mask, h, refine_steps=0)
    assert (sweep.double() - per_row(w, mask, h)).abs().max() < 1e-4 * w.abs().max()
    assert torch.allclose(sweep[0], w[0], atol=1e-5)


def test_float64_hessian_and_bad_inputs():
    w, h = _problem(4, 8)
    mask = torch.ones_like(w, dtype=torch.bool)
    assert least_squares_update(w, mask, h.double()).dtype == torch.float64
    with pytest.raises(ValueError, match="damping"):
        least_squares_update(w, mask, h, damping=0)
    with pytest.raises(ValueError, match="method"):
        least_squares_update(w, mask, h, method="obs")
    with pytest.raises(ValueError, match="hessian"):
        least_squares_update(w, mask, h[:4, :4])
    with pytest.raises(ValueError, match="mask"):
        least_squares_update(w, mask.float(), h)
