"""The least-squares update's time per layer (``blocksparsity.weight_update``) at square sizes,
2:4 masks from the kernels, ``H`` from 2n calibration rows, and its distance from the exact
per-row solution where that is affordable (``--exact-up-to``); also the sweep alone. The
harness times the default update as its ``weight_update`` cases (``layer`` makes the inputs of
both): 1024^2 in every run, 4096^2 with ``--matrix update``.

    python -m benchmarks weight-update [--sizes 1024 4096] [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.timing import median_seconds
from blocksparsity import kernels
from blocksparsity.weight_update import least_squares_update, reconstruction_error


def layer(w: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The 2:4 mask of ``w`` (``(out, in)``) from the kernels and ``H = X^T X`` from ``2 * in``
    ReLU'd Gaussian calibration rows: the inputs of one timed update (also the harness's
    ``weight_update`` case)."""
    n_in = w.shape[1]
    g = torch.Generator(device=w.device.type).manual_seed(seed + 1)
    x = torch.relu(torch.randn(2 * n_in, n_in, generator=g, device=w.device))
    return kernels.block_mask(w, 1.0, (1, 4), 2), x.T @ x


def measure(n: int, repeats: int, device: str, exact_up_to: int) -> dict:
    g = torch.Generator(device=device).manual_seed(0)
    w = torch.randn(n, n, generator=g, device=device)
    mask, h = layer(w)
    out: dict = {"size": f"{n}x{n}", "device": device}
    for label, kwargs in (("sweep (default: sweep + 25 CG steps)", {}), ("sweep alone", {"refine_steps": 0})):
        (seconds,) = median_seconds([lambda kw=kwargs: least_squares_update(w, mask, h, **kw)], device, repeats=repeats)
        out[label] = seconds
    if n <= exact_up_to:
        (seconds,) = median_seconds([lambda: least_squares_update(w, mask, h, method="exact")], device, repeats=1)
        out["exact (batched per-row Cholesky)"] = seconds
        exact = least_squares_update(w, mask, h, method="exact")
        ours = least_squares_update(w, mask, h)
        out["max |default - exact| / max |exact|"] = float((ours - exact).abs().max() / exact.abs().max())
        out["error ratio default / exact"] = reconstruction_error(ours, w, h) / reconstruction_error(exact, w, h)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks weight-update", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--exact-up-to", type=int, default=512, help="also time the exact method up to this size")
    args = p.parse_args(argv)
    print("| layer | method | seconds |\n|---|---|--:|")
    for n in args.sizes:
        result = measure(n, args.repeats, args.device, args.exact_up_to)
        for key, value in result.items():
            if key not in ("size", "device"):
                print(f"| {result['size']} | {key} | {value:.4g} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
