"""Verdict: is the 2:4 semi-structured ``F.linear`` faster than the dense one at these shapes?

    python -m benchmarks.semi_structured [--m 1,64,4096,16384] [--nk 4096x4096,11008x4096,4096x11008]
                                         [--dtype bf16] [--backend auto] [--json PATH]

For each ``(M, N, K)``: ``x`` is ``(M, K)``, the weight ``(N, K)`` is pruned to 2:4 (the
(1, 4)-block, ``zeros_per_block=2``, level-1.0 mask of ``blocksparsity.kernels.sparsify``) and converted
with ``torch.sparse``'s semi-structured tensors; ``F.linear(x, w)`` dense and 2:4 are timed
(median, CUDA events, L2 flushed) and the verdict printed: sparse faster, dense faster, or
within the noise margin. Sparse tensor cores need CUDA compute capability 8.0+; elsewhere
it says so, writes the JSON with the reason, and exits 0.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from blocksparsity.kernels.validation import dtype_name

M_SIZES = (1, 64, 4096, 16384)
NK_SHAPES = ((4096, 4096), (11008, 4096), (4096, 11008))  # LLaMA-7B: attention, MLP up, MLP down
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
MARGIN = 1.05  # speedups within [1/MARGIN, MARGIN] are "no clear difference"


def verdict(speedup: float) -> str:
    """Dense time over sparse time, in words."""
    if speedup >= MARGIN:
        return f"2:4 faster ({speedup:.2f}x)"
    if speedup <= 1 / MARGIN:
        return f"dense faster ({1 / speedup:.2f}x)"
    return "no clear difference"


def unavailable_reason() -> str | None:
    """Why the semi-structured linear cannot run here, or None."""
    if not torch.cuda.is_available():
        return "no CUDA GPU: 2:4 semi-structured sparsity runs on sparse tensor cores (CUDA compute capability 8.0+)"
    capability = torch.cuda.get_device_capability()
    if capability < (8, 0):
        return f"CUDA compute capability {capability[0]}.{capability[1]} < 8.0: no sparse tensor cores"
    return None


def _semi_structured_class(backend: str) -> type:
    from torch.sparse import SparseSemiStructuredTensor, SparseSemiStructuredTensorCUSPARSELT, SparseSemiStructuredTensorCUTLASS

    if backend == "auto":
        cusparselt = torch.backends.cusparselt.is_available() and not SparseSemiStructuredTensor._FORCE_CUTLASS
        backend = "cusparselt" if cusparselt else "cutlass"
    return SparseSemiStructuredTensorCUSPARSELT if backend == "cusparselt" else SparseSemiStructuredTensorCUTLASS


def measure(m: int, n: int, k: int, dtype: torch.dtype, backend: str = "auto") -> dict:
    """Time dense and 2:4 ``F.linear`` for ``x (m, k)`` and a weight ``(n, k)`` on the GPU."""
    from benchmarks.timing import median_seconds
    from blocksparsity import kernels

    g = torch.Generator(device="cuda").manual_seed(0)
    w = torch.randn(n, k, device="cuda", generator=g).to(dtype)
    w, _ = kernels.sparsify(w, 1.0, (1, 4), 2, backend="torch")
    x = torch.randn(m, k, device="cuda", generator=g).to(dtype)
    cls = _semi_structured_class(backend)
    ws = cls.from_dense(w)
    dense_out, sparse_out = F.linear(x, w), F.linear(x, ws)
    err = ((sparse_out.float() - dense_out.float()).abs().max() / dense_out.float().abs().max().clamp_min(1e-30)).item()
    dense_s, sparse_s = median_seconds([lambda: F.linear(x, w), lambda: F.linear(x, ws)], "cuda")
    flops = 2 * m * n * k
    return {
        "m": m, "n": n, "k": k, "dtype": dtype_name(dtype), "backend": cls.BACKEND,
        "dense_ms": dense_s * 1e3, "sparse_ms": sparse_s * 1e3, "speedup": dense_s / sparse_s,
        "dense_tflops": flops / dense_s / 1e12, "max_rel_err": err, "verdict": verdict(dense_s / sparse_s),
    }


def format_table(rows: list[dict]) -> str:
    head = ("M", "N", "K", "dense ms", "2:4 ms", "speedup", "dense TFLOP/s", "verdict")
    body = [
        (str(r["m"]), str(r["n"]), str(r["k"]), f"{r['dense_ms']:.4f}", f"{r['sparse_ms']:.4f}", f"{r['speedup']:.2f}x",
         f"{r['dense_tflops']:.1f}", r["verdict"])
        for r in rows
    ]
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in [head, *body])


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints; got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"sizes must be positive; got {text!r}")
    return values


def _shapes(text: str) -> tuple[tuple[int, int], ...]:
    try:
        shapes = tuple(tuple(int(v) for v in item.lower().split("x")) for item in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NxK[,NxK...]; got {text!r}") from None
    if not shapes or any(len(s) != 2 or min(s) < 1 for s in shapes):
        raise argparse.ArgumentTypeError(f"expected NxK[,NxK...] of positive sizes; got {text!r}")
    return shapes  # type: ignore[return-value]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.semi_structured", description=__doc__.split("\n\n")[0])
    p.add_argument("--m", type=_ints, default=M_SIZES, help="rows of x (tokens), comma-separated")
    p.add_argument("--nk", type=_shapes, default=NK_SHAPES, help="weight shapes NxK (out x in), comma-separated")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="bf16")
    p.add_argument("--backend", choices=("auto", "cusparselt", "cutlass"), default="auto")
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the results as JSON")
    args = p.parse_args(argv)

    shapes = [(m, n, k) for n, k in args.nk for m in args.m]
    reason = unavailable_reason()
    report: dict = {"device": "cpu", "torch": torch.__version__, "dtype": args.dtype, "available": reason is None}
    report.update(reason=reason, results=[])
    if reason is not None:
        print(f"2:4 semi-structured linear: not available here ({reason}).")
        print("No verdict on this machine; on an sm80+ GPU this times F.linear dense vs 2:4 at (M, N, K):")
        print("  " + ", ".join(f"({m}, {n}, {k})" for m, n, k in shapes))
    else:
        report["device"] = torch.cuda.get_device_name()
        print(f"{report['device']}, torch {torch.__version__}, {args.dtype}: F.linear(x (M, K), w (N, K)), dense vs 2:4")
        for m, n, k in shapes:
            try:
                report["results"].append(measure(m, n, k, DTYPES[args.dtype], args.backend))
            except (RuntimeError, NotImplementedError) as err:  # e.g. out of memory, a shape the backend refuses
                print(f"({m}, {n}, {k}): failed: {str(err).splitlines()[0]}", file=sys.stderr)
                report.setdefault("failed", []).append({"m": m, "n": n, "k": k, "error": str(err).splitlines()[0]})
            finally:
                torch.cuda.empty_cache()
        if report["results"]:
            print(format_table(report["results"]))
            print(f"backend: {report['results'][0]['backend']}; 'no clear difference' means within {MARGIN:.2f}x either way")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
