"""The least-squares update of a pruned layer's kept weights (SparseGPT's reconstruction).

For a layer ``y = W x`` whose weight ``W`` (``(rows, n)``, the 2-D view the masks use) gets a
mask ``M``, and the second moments ``H = sum x x^T`` of its inputs over calibration data, each
row's kept weights ``K`` are set to the solution of

    min_{w'}  (w' - w)^T Hd (w' - w)   subject to  w'_P = 0  (P: the row's pruned weights)

with ``Hd = H + lambda I`` (``lambda = damping * mean(diag H)``), i.e.
``w'_K = Hd_KK^-1 (Hd w)_K = w_K + Hd_KK^-1 H_KP w_P``: the kept weights absorb what the pruned
ones contributed to the layer's output on the calibration inputs (a ridge of ``lambda`` keeps
it well posed). A row with nothing pruned is unchanged, and pruned weights are exactly zero.

Two algorithms:

- ``"sweep"`` (the default: it scales): SparseGPT's column sweep (Frantar & Alistarh 2023,
  Algorithm 1 with the mask given): the upper Cholesky factor ``U`` of ``Hd^-1``, then the
  columns left to right in blocks of ``block_size``; a pruned weight's error
  ``w_ij / U_jj`` is spread over the row's weights to its right. The sweep alone is exact
  only for a row whose pruned weights all come before its kept ones (weights to the left of
  a pruned one are not revisited): on random 50% masks it removes about half of the error
  the exact solution removes. So it is the warm start of ``refine_steps`` (default 25)
  iterations of Jacobi-preconditioned conjugate gradients on every row at once (each one
  ``rows x n`` times ``n x n`` matmul, no host sync), which reach the exact solution to
  about 1e-6 relative (measured: ``tests/sparsity/test_weight_update.py`` and the docs).
  ``O(n^3 + (refine_steps + 1) * rows * n^2)`` flops, ``O(n^2 + rows * n)`` memory,
  whatever the rows' masks.
- ``"exact"``: the per-row solution itself, as batched Cholesky solves of
  ``A_r = M_r Hd M_r + (I - M_r)`` (``M_r = diag(mask row r)``), rows in chunks whose
  ``A_r`` fit ``max_bytes``. ``O(rows * n^3)`` flops: for small layers, and the reference.

Neither has a Python loop over rows; ``"sweep"`` loops over columns (``n`` small steps).
No backend logic here: plain torch linear algebra on the weights' device.
"""

from __future__ import annotations

import torch

__all__ = ["DEFAULT_DAMPING", "METHODS", "least_squares_update", "reconstruction_error"]

METHODS = ("sweep", "exact")
DEFAULT_DAMPING = 0.01  # lambda = 1% of mean(diag H), SparseGPT's default
DEFAULT_MAX_BYTES = 256 * 2**20  # the "exact" method's working memory per chunk of rows


def check_damping(damping: object, name: str = "damping") -> float:
    """A finite float > 0 (a fraction of ``mean(diag H)``)."""
    if isinstance(damping, bool) or not isinstance(damping, int | float) or not damping > 0 \
            or damping == float("inf"):
        raise ValueError(f"{name} must be a finite number > 0 (a fraction of mean(diag H), e.g. 0.01); got {damping!r}")
    return float(damping)


def check_method(method: object, name: str = "update_method") -> str:
    if method not in METHODS:
        raise ValueError(f"{name} must be one of {list(METHODS)}; got {method!r}")
    return method  # type: ignore[return-value]


def _damped(hessian: torch.Tensor, damping: float) -> torch.Tensor:
    """``H + damping * mean(diag H) * I`` in float32 (float64 kept)."""
    dtype = torch.float64 if hessian.dtype == torch.float64 else torch.float32
    hd = hessian.to(dtype).clone()
    diag = hd.diagonal()
    diag.add_(damping * diag.mean())
    return hd


def least_squares_update(
    weight: torch.Tensor,
    mask: torch.Tensor,
    hessian: torch.Tensor,
    *,
    damping: float = DEFAULT_DAMPING,
    method: str = "sweep",
    block_size: int = 128,
    refine_steps: int = 25,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> torch.Tensor:
    """The weights after the least-squares update (see the module docstring).

    Args:
        weight: ``(rows, n)`` dense weights (any float dtype), not modified.
        mask: ``(rows, n)`` bool, True = kept (the kernels' mask).
        hessian: ``(n, n)`` ``sum x x^T`` of the layer's inputs (symmetric, PSD), on ``weight``'s device.
        damping: ``lambda`` as a fraction of ``mean(diag H)`` (> 0).
        method: ``"sweep"`` or ``"exact"``.
        block_size: columns per block of the sweep (lazy batch updates).
        refine_steps: conjugate-gradient iterations after the sweep (0: the sweep alone).
        max_bytes: working memory of one chunk of rows for ``"exact"``.

    Returns:
        ``(rows, n)`` in ``hessian``'s float dtype (float32 unless it is float64); zero exactly
        where ``mask`` is False.
    """
    if weight.dim() != 2 or mask.shape != weight.shape or mask.dtype != torch.bool:
        raise ValueError(f"weight must be 2-D and mask a bool tensor of its shape; got {tuple(weight.shape)}, "
                         f"{tuple(mask.shape)} {mask.dtype}")
    n = weight.shape[1]
    if hessian.shape != (n, n):
        raise ValueError(f"hessian must be ({n}, {n}) for a weight of {n} columns; got {tuple(hessian.shape)}")
    damping = check_damping(damping)
    method = check_method(method, "method")
    hd = _damped(hessian, damping)
    with torch.no_grad():
        w = weight.detach().to(hd.dtype)
        if method == "exact":
            out = _exact(w, mask, hd, max_bytes)
        else:
            out = _refine(w, mask, hd, _sweep(w, mask, hd, block_size), refine_steps)
        return out.mul_(mask)  # pruned weights exactly zero, whatever rounding left


def _exact(w: torch.Tensor, mask: torch.Tensor, hd: torch.Tensor, max_bytes: int) -> torch.Tensor:
    """Every row's ``w'_K = Hd_KK^-1 (Hd w)_K`` by batched Cholesky solves, rows in chunks."""
    rows, n = w.shape
    chunk = max(1, int(max_bytes) // max(1, 2 * n * n * hd.element_size()))  # A and its factor
    out = torch.empty_like(w)
    rhs_all = w @ hd  # rows of (Hd w)^T: Hd is symmetric
    eye = torch.eye(n, dtype=hd.dtype, device=hd.device)
    for start in range(0, rows, chunk):
        m = mask[start:start + chunk].to(hd.dtype)  # (c, n)
        a = hd * (m.unsqueeze(2) * m.unsqueeze(1)) + eye * (1 - m).unsqueeze(1)
        b = (rhs_all[start:start + chunk] * m).unsqueeze(2)
        factor = torch.linalg.cholesky(a)
        out[start:start + chunk] = torch.cholesky_solve(b, factor).squeeze(2)
    return out


def _sweep(w: torch.Tensor, mask: torch.Tensor, hd: torch.Tensor, block_size: int) -> torch.Tensor:
    """SparseGPT's column sweep with the mask given (its Algorithm 1, lazy batch updates)."""
    n = w.shape[1]
    w = w.clone()
    hinv = torch.cholesky_inverse(torch.linalg.cholesky(hd))
    u = torch.linalg.cholesky(hinv, upper=True)  # Hd^-1 = U^T U
    pruned = ~mask
    for i1 in range(0, n, block_size):
        i2 = min(i1 + block_size, n)
        w1 = w[:, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        u1 = u[i1:i2, i1:i2]
        p1 = pruned[:, i1:i2]
        for i in range(i2 - i1):
            err = w1[:, i] * p1[:, i] / u1[i, i]  # the pruned weights' error, scaled; 0 where kept
            w1[:, i:] -= err.unsqueeze(1) * u1[i, i:].unsqueeze(0)
            err1[:, i] = err
        w[:, i1:i2] = w1
        if i2 < n:
            w[:, i2:] -= err1 @ u[i1:i2, i2:]
    return w


def _refine(w: torch.Tensor, mask: torch.Tensor, hd: torch.Tensor, x: torch.Tensor, steps: int) -> torch.Tensor:
    """``steps`` iterations of Jacobi-preconditioned conjugate gradients on every row's
    ``Hd_KK x_K = (Hd w)_K`` at once, from ``x`` (pruned entries stay 0: every vector is masked)."""
    m = mask.to(hd.dtype)
    x = x * m
    r = (w @ hd - x @ hd) * m
    dinv = 1.0 / hd.diagonal()
    z = r * dinv
    p = z.clone()
    rz = (r * z).sum(1, keepdim=True)
    tiny = torch.finfo(hd.dtype).tiny
    for _ in range(steps):
        ap = (p @ hd) * m
        alpha = rz / (p * ap).sum(1, keepdim=True).clamp_min(tiny)  # 0 for a converged row (r = 0)
        x += alpha * p
        r -= alpha * ap
        z = r * dinv
        rz_new = (r * z).sum(1, keepdim=True)
        p = z + (rz_new / rz.clamp_min(tiny)) * p
        rz = rz_new
    return x


def reconstruction_error(new: torch.Tensor, weight: torch.Tensor, hessian: torch.Tensor) -> float:
    """``trace((W' - W) H (W' - W)^T)``: the squared error of the layer's outputs on the
    calibration inputs (what the update minimises, up to the ridge)."""
    d = (new.double() - weight.double())
    return float(((d @ hessian.double()) * d).sum())
