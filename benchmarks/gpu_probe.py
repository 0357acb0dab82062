"""The first step of ``benchmarks/device_check.sh``: what the interpreter cannot show, probed on
the GPU group by group, each group in its own subprocess (a CUDA fault or a hang ends that
group only), each with a time limit and its time printed.

    python -m benchmarks.gpu_probe                 # on a GPU: every group, full sizes
    python -m benchmarks.gpu_probe --dry-run       # on a CPU: the same checks, tiny sizes,
                                                   # Triton's interpreter (what the CPU test runs)
    python -m benchmarks.gpu_probe --group huge    # one group, in this process

Groups: ``compile`` (time of the first call of each op, which JIT-compiles, against the
second); ``huge`` (more than 2**31 elements: Triton's mask bit-equal to the torch backend's
on its head and tail, exactly k blocks pruned, every pruned score <= every kept score);
``column`` (an (H, 1) tensor with strides (1, H)); ``layouts`` (misaligned slices,
transposed, channels_last); ``subnormal`` (fp32 subnormals: no flush to zero);
``ties`` (tie-heavy data, every block shape of the AOT test); ``determinism`` (repeated calls
give the same bits); ``float64`` (apply_mask of 1e300); ``cuda1`` (data on cuda:1 while
cuda:0 is current; skipped with fewer than two GPUs). Each check prints ``PASS``/``FAIL``;
the exit status is 1 when any check failed or any group crashed or ran out of time.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable

GROUPS = ("compile", "huge", "column", "layouts", "subnormal", "ties", "determinism", "float64", "cuda1")
BLOCK_SHAPES = ((1, 1), (1, 2), (2, 1), (1, 4), (2, 2), (1, 8), (2, 3), (4, 4), (3, 5), (1, 17), (8, 8))
# Per group, in seconds: generous for the first-call compiles on a GPU. The whole probe also
# stops at --budget: a group starts only with time left, and gets at most what is left.
GROUP_SECONDS = {"compile": 90, "huge": 90, "ties": 90}
DEFAULT_GROUP_SECONDS = 45


class Probe:
    """One group's checks: ``check(name, ok, detail)`` prints and records a result."""

    def __init__(self, device: str, dry: bool):
        self.device, self.dry, self.failed = device, dry, 0

    def check(self, name: str, ok: bool, detail: str = "") -> None:
        self.failed += not ok
        print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)


def _bits_equal(a, b) -> bool:
    import torch

    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype == torch.bool:
        return torch.equal(a, b)
    view = {2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
    return torch.equal(a.contiguous().view(view), b.contiguous().view(view))


def _same_on_both(p: Probe, name: str, x, bs=(1, 4), zpb=None, norm="L1", level=0.5) -> None:
    """Every op on ``x``, Triton against the torch backend, masks and outputs to the bit."""
    from blocksparsity import kernels

    ok = _bits_equal(kernels.block_norm(x, bs, norm, backend="triton"), kernels.block_norm(x, bs, norm, backend="torch"))
    m = kernels.block_mask(x, level, bs, zpb, norm, backend="triton")
    ok_mask = torch_equal(m, kernels.block_mask(x, level, bs, zpb, norm, backend="torch"))
    y, _ = kernels.sparsify(x, level, bs, zpb, norm, backend="triton")
    y_ref, _ = kernels.sparsify(x, level, bs, zpb, norm, backend="torch")
    z = x.clone()
    kernels.sparsify(z, level, bs, zpb, norm, inplace=True, backend="triton")
    a = kernels.apply_mask(x, m, backend="triton")
    p.check(f"{name} {tuple(x.shape)} {str(x.dtype)[6:]} {bs} {norm}", ok and ok_mask and _bits_equal(y, y_ref)
            and _bits_equal(z, y_ref) and _bits_equal(a, y_ref),
            f"scores {ok}, mask {ok_mask}, sparsify {_bits_equal(y, y_ref)}, in place {_bits_equal(z, y_ref)}, "
            f"apply_mask {_bits_equal(a, y_ref)}")


def torch_equal(a, b) -> bool:
    import torch

    return torch.equal(a, b)


def _randn(shape, device, dtype=None, seed=0):
    import torch

    g = torch.Generator(device=device).manual_seed(seed)
    return torch.randn(shape, generator=g, device=device).to(dtype or torch.float32)


def group_compile(p: Probe) -> None:
    import torch

    from benchmarks.timing import once
    from blocksparsity import kernels

    n = 64 if p.dry else 4096
    for dtype in (torch.float32, torch.bfloat16):
        x = _randn((n, n), p.device, dtype)
        calls: dict[str, Callable] = {
            "block_norm": lambda x=x: kernels.block_norm(x, (1, 4), backend="triton"),
            "block_mask zpb=2": lambda x=x: kernels.block_mask(x, 0.5, (1, 4), 2, backend="triton"),
            "sparsify": lambda x=x: kernels.sparsify(x, 0.5, (2, 2), backend="triton"),
            "apply_mask": lambda x=x: kernels.apply_mask(x, x > 0, backend="triton"),
        }
        for name, call in calls.items():
            times = [once(call, device=p.device) for _ in range(2)]
            p.check(f"compile {name} {str(dtype)[6:]}", True, f"first call {times[0]:.3f} s, second {times[1] * 1e3:.2f} ms")


def group_huge(p: Probe) -> None:
    """More than 2**31 elements (bf16, 4.3 GB on a GPU); (1, 4) blocks and (1, 1) blocks (more than
    2**31 blocks)."""
    import torch

    from benchmarks.timing import synchronize
    from blocksparsity import kernels

    rows, cols = (3, 40) if p.dry else ((1 << 15) + 16, 1 << 16)
    x = _randn((rows, cols), p.device, torch.bfloat16, seed=1)
    x[: rows // 7] = 0  # many blocks tied at 0
    for bs, level in (((1, 4), 0.5), ((1, 1), 0.37)):
        start = time.perf_counter()
        m = kernels.block_mask(x, level, bs, backend="triton")
        synchronize(p.device)
        seconds = time.perf_counter() - start
        scores = kernels.block_norm(x, bs, backend="triton")
        pruned_blocks = ~m[:, :: bs[1]] if bs == (1, 4) else ~m
        k = round(level * scores.numel())
        n_pruned = int(pruned_blocks.sum())
        p.check(f"huge {x.numel()} elements {bs}: exactly k pruned", n_pruned == k, f"k {k}, pruned {n_pruned}, {seconds:.2f} s")
        kept_min = scores[~pruned_blocks].min() if n_pruned < scores.numel() else None
        pruned_max = scores[pruned_blocks].max() if n_pruned else None
        ok = kept_min is None or pruned_max is None or bool(pruned_max <= kept_min)
        p.check(f"huge {bs}: every pruned score <= every kept score", ok, f"max pruned {pruned_max}, min kept {kept_min}")
        del pruned_blocks
        expected = kernels.block_mask(x, level, bs, backend="torch")
        head = slice(0, 64)
        tail = slice(rows - 64 if rows > 64 else 0, rows)
        p.check(f"huge {bs}: head and tail equal the torch backend's",
                torch.equal(m[head], expected[head]) and torch.equal(m[tail], expected[tail]))
        del m, expected, scores
        if p.device == "cuda":
            torch.cuda.empty_cache()


def group_column(p: Probe) -> None:
    n = 40 if p.dry else 4096
    base = _randn((n, n), p.device)
    x = base[:1].t()  # contiguous (n, 1), strides (1, n)
    for bs in ((1, 4), (4, 1), (2, 2)):
        _same_on_both(p, "column", x, bs, zpb=1 if bs != (1, 4) else None)


def group_layouts(p: Probe) -> None:
    import torch

    n = 48 if p.dry else 2048
    base = _randn((n + 1) * n, p.device, seed=2)
    for name, x in (
        ("misaligned", base[1 : 1 + n * n].view(n, n)),
        ("misaligned-rows", base[: n * (n + 1)].view(n, n + 1)[:, 1:]),
        ("transposed", base[: n * n].view(n, n).t()),
        ("channels_last", base[: 8 * 6 * 4 * 4].view(8, 6, 4, 4).contiguous(memory_format=torch.channels_last)),
    ):
        for bs, zpb in (((1, 4), 2), ((2, 3), None)):
            _same_on_both(p, name, x, bs, zpb)


def group_subnormal(p: Probe) -> None:
    import torch

    n = 32 if p.dry else 1024
    x = _randn((n, n), p.device, seed=3) * 1e-39  # float32 subnormals (below 1.18e-38)
    x[0, :8] = torch.tensor([1e-45, 2e-45, 0.0, 3e-45, 1e-40, 1e-44, 5e-45, 0.0])
    for norm in ("L1", "L2"):
        _same_on_both(p, "subnormal", x, (1, 4), 2, norm)


def group_ties(p: Probe) -> None:
    import torch

    n = 24 if p.dry else 1536
    g = torch.Generator(device=p.device).manual_seed(4)
    x = torch.randint(-2, 3, (n, n + 3), generator=g, device=p.device).float()
    x[: n // 3] = 0
    for bs in BLOCK_SHAPES:
        size = bs[0] * bs[1]
        for zpb in sorted({size, max(1, size // 2)}):
            _same_on_both(p, "ties", x, bs, zpb, level=0.6)


def group_determinism(p: Probe) -> None:
    from blocksparsity import kernels

    n = 32 if p.dry else 4096
    x = _randn((n, n), p.device, seed=5)
    for bs in ((1, 4), (2, 3)):
        first = kernels.block_mask(x, 0.5, bs, 2, backend="triton")
        scores = kernels.block_norm(x, bs, backend="triton")
        same = all(torch_equal(kernels.block_mask(x, 0.5, bs, 2, backend="triton"), first) for _ in range(5))
        same_scores = all(_bits_equal(kernels.block_norm(x, bs, backend="triton"), scores) for _ in range(5))
        p.check(f"determinism {bs}: 5 repeats", same and same_scores, f"masks {same}, scores {same_scores}")


def group_float64(p: Probe) -> None:
    import torch

    from blocksparsity import kernels

    x = _randn((64, 64), p.device, torch.float64, seed=6) * 1e300
    mask = x > 0
    for inplace in (False, True):
        target = x.clone()
        try:
            out = kernels.apply_mask(target, mask, inplace=inplace, backend="triton")
            p.check(f"float64 apply_mask 1e300 inplace={inplace}", torch.equal(out, x * mask))
        except ValueError as err:
            p.check(f"float64 apply_mask 1e300 inplace={inplace}", False, str(err))


def group_cuda1(p: Probe) -> None:
    import torch

    if p.device != "cuda" or torch.cuda.device_count() < 2:
        p.check("cuda1", True, f"skipped: {torch.cuda.device_count() if p.device == 'cuda' else 0} GPU(s)")
        return
    torch.cuda.set_device(0)
    x = _randn((1024, 1024), "cuda:1", seed=7)
    _same_on_both(p, "cuda:1 with cuda:0 current", x, (1, 4), 2)
    _same_on_both(p, "cuda:1 with cuda:0 current", x, (2, 3), None)


def run_group(name: str, dry: bool) -> int:
    import torch

    device = "cuda" if torch.cuda.is_available() and not dry else "cpu"
    p = Probe(device, dry)
    globals()[f"group_{name}"](p)
    return int(p.failed > 0)


def run_all(groups: list[str], dry: bool, scale_limits: float, budget: float) -> int:
    env = dict(os.environ)
    if dry:
        env["TRITON_INTERPRET"] = "1"
    bad = 0
    total = time.perf_counter()
    for name in groups:
        left = budget - (time.perf_counter() - total)
        if left < 10:
            print(f"== {name}: SKIPPED (probe budget of {budget:.0f} s spent)", flush=True)
            bad += 1
            continue
        limit = min(GROUP_SECONDS.get(name, DEFAULT_GROUP_SECONDS) * scale_limits, left)
        start = time.perf_counter()
        print(f"== {name} (limit {limit:.0f} s)", flush=True)
        cmd = [sys.executable, "-m", "benchmarks.gpu_probe", "--group", name] + (["--dry-run"] if dry else [])
        try:
            done = subprocess.run(cmd, env=env, timeout=limit, stderr=subprocess.STDOUT)  # output: ours
            rc = done.returncode
            verdict = "ok" if rc == 0 else ("FAILED checks" if rc == 1 else f"CRASHED (exit {rc})")
        except subprocess.TimeoutExpired:
            rc, verdict = -1, "TIMED OUT"
        bad += rc != 0
        print(f"== {name}: {verdict} in {time.perf_counter() - start:.1f} s", flush=True)
    print(f"== probe: {len(groups) - bad}/{len(groups)} groups ok in {time.perf_counter() - total:.1f} s", flush=True)
    return int(bad > 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU, in Triton's interpreter")
    parser.add_argument("--group", choices=GROUPS, help="run one group in this process")
    parser.add_argument("--only", nargs="+", choices=GROUPS, default=list(GROUPS), help="the groups to run")
    parser.add_argument("--limit-scale", type=float, default=1.0, help="multiply every group's time limit")
    parser.add_argument("--budget", type=float, default=300.0, help="seconds for the whole probe (default 300)")
    args = parser.parse_args(argv)
    if args.group:
        if args.dry_run and os.environ.get("TRITON_INTERPRET") != "1":
            os.environ["TRITON_INTERPRET"] = "1"  # before the first Triton import
        return run_group(args.group, args.dry_run)
    return run_all(args.only, args.dry_run, args.limit_scale, args.budget)


if __name__ == "__main__":
    sys.exit(main())
