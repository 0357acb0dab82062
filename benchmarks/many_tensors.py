"""Issue 23's goals in one run: small-tensor ``block_mask`` against the eager contender,
``DataNormSparsifier.step()`` over many tensors (50 x 128x128; GPT-2-small's 50 weight
shapes, 124M parameters, as a share of this machine's copy bandwidth), and 4096x4096, each
against another checkout of the code ("today") run alternately in the same session.

    python -m benchmarks.many_tensors [--baseline /path/to/other/checkout] [--rounds 3] [--json out.json]

Every number is the median of ``--rounds`` rounds; each round times this checkout and the
baseline in turn (separate processes, same inputs), so load on a shared machine hits both.
Ratios only; nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

GPT2_SHAPES = [(50257, 768), (1024, 768)] + [s for _ in range(12) for s in ((768, 2304), (768, 768), (768, 3072), (3072, 768))]


def _best(fn, repeats: int, inner: int = 1) -> float:
    """Fastest of ``repeats`` timings of ``inner`` calls, per call, in seconds (one warm-up)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        best = min(best, (time.perf_counter() - start) / inner)
    return best


def measure() -> dict[str, float]:
    """Seconds per case with the ``blocksparsity`` on ``sys.path`` (one process, one thread)."""
    import torch

    from blocksparsity import DataNormSparsifier, kernels

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    out: dict[str, float] = {}
    for shape in ((128, 128), (64, 256)):
        x = torch.randn(shape, generator=g)
        for zpb in (4, 2):
            out[f"block_mask {shape[0]}x{shape[1]} zpb{zpb}"] = _best(
                lambda x=x, zpb=zpb: kernels.block_mask(x, 0.5, (1, 4), zpb), 5, 200)
    small = [(f"w{i}", torch.randn(128, 128, generator=g)) for i in range(50)]
    sparsifier = DataNormSparsifier(small, sparsity_level=0.5, sparse_block_shape=(1, 4), zeros_per_block=2)
    out["step 50x128x128 level0.5 zpb2"] = _best(sparsifier.step, 5, 5)
    gpt2 = [(f"w{i}", torch.randn(s, generator=g)) for i, s in enumerate(GPT2_SHAPES)]
    for level, name in ((1.0, "2:4"), (0.5, "level0.5 zpb2")):
        sparsifier = DataNormSparsifier(gpt2, sparsity_level=level, sparse_block_shape=(1, 4), zeros_per_block=2)
        out[f"step gpt2 {name}"] = _best(sparsifier.step, 3)
    big = torch.randn(4096, 4096, generator=g)
    out["block_mask 4096x4096 zpb2"] = _best(lambda: kernels.block_mask(big, 0.5, (1, 4), 2), 3)
    return out


def measure_reference() -> dict[str, float]:
    """The eager contender on the small cases, and the copy bandwidth (bytes read per second)."""
    import torch

    from benchmarks import eager_contender

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    out: dict[str, float] = {}
    for shape in ((128, 128), (64, 256)):
        x = torch.randn(shape, generator=g)
        k = round(0.5 * x.numel() / 4)
        for zpb in (4, 2):
            out[f"eager block_mask {shape[0]}x{shape[1]} zpb{zpb}"] = _best(
                lambda x=x, zpb=zpb, k=k: eager_contender.block_mask(x, k, 4, zpb), 5, 200)
    n = sum(h * w for h, w in GPT2_SHAPES)
    src, dst = torch.randn(n), torch.empty(n)
    out["copy_bytes_per_s"] = 4 * n / _best(lambda: dst.copy_(src), 3)
    return out


_OLD_LAYOUT_SHIM = """import sys

import kernels
from sparsity import *  # noqa: F403
from sparsity import DataNormSparsifier  # noqa: F401

sys.modules[__name__ + ".kernels"] = kernels
"""


def _run(checkout: Path, what: str) -> dict[str, float]:
    """``measure`` (or ``measure_reference``) in a fresh process importing ``checkout``'s code."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as shim:
        if checkout != ROOT:
            package = Path(shim) / "blocksparsity"
            package.mkdir()
            if "from sparsity." in (checkout / "sparsity" / "__init__.py").read_text():
                # Before the import-root change (1ef1d13, the code the issue measured): top-level
                # ``sparsity`` and ``kernels``, re-exported under the name ``measure`` imports.
                (package / "__init__.py").write_text(_OLD_LAYOUT_SHIM)
                for name in ("sparsity", "kernels"):
                    (Path(shim) / name).symlink_to(checkout / name)
            else:  # blocksparsity from the other checkout: its sparsity/ with kernels/ inside
                for item in (checkout / "sparsity").iterdir():
                    (package / item.name).symlink_to(item)
                (package / "kernels").symlink_to(checkout / "kernels")
        env["PYTHONPATH"] = os.pathsep.join([shim, str(ROOT)])
        code = f"import json; from benchmarks.many_tensors import {what}; print(json.dumps({what}()))"
        result = subprocess.run([sys.executable, "-c", code], env=env, cwd=shim, capture_output=True, text=True,
                                check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, default=None, help="another checkout to compare with (today's code)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    runs: dict[str, list[dict[str, float]]] = {"this": [], "baseline": [], "reference": []}
    for _ in range(args.rounds):
        runs["this"].append(_run(ROOT, "measure"))
        if args.baseline is not None:
            runs["baseline"].append(_run(args.baseline.resolve(), "measure"))
        runs["reference"].append(_run(ROOT, "measure_reference"))
    median = {side: {key: statistics.median(r[key] for r in rs) for key in rs[0]} for side, rs in runs.items() if rs}
    this, ref, base = median["this"], median["reference"], median.get("baseline")
    gpt2_bytes = 4 * sum(h * w for h, w in GPT2_SHAPES)
    print(f"{'case':34s} {'this':>10s} {'today':>10s} {'today/this':>10s} {'eager/this':>10s}")
    for key, seconds in this.items():
        row = f"{key:34s} {seconds * 1e3:8.3f}ms"
        row += f" {base[key] * 1e3:8.3f}ms {base[key] / seconds:9.2f}x" if base else " " * 22
        eager = ref.get(f"eager {key}")
        row += f" {eager / seconds:9.2f}x" if eager else ""
        if key.startswith("step gpt2"):
            share = gpt2_bytes / seconds / ref["copy_bytes_per_s"]
            row += f"   {share:.1%} of copy bw"
            if base:
                row += f" (today {gpt2_bytes / base[key] / ref['copy_bytes_per_s']:.1%})"
        print(row)
    print(f"copy bandwidth: {ref['copy_bytes_per_s'] / 1e9:.1f} GB/s read")
    if args.json is not None:
        args.json.write_text(json.dumps({"median": median, "runs": runs}, indent=1))
    return median


if __name__ == "__main__":
    main()
