"""``python -m benchmarks``: every contender on every case, side by side, as a Markdown table
on stdout (progress on stderr), and optionally JSON and a PNG chart.

Examples:
    python -m benchmarks                              # full size, this machine's device
    python -m benchmarks --quick --json b.json --plot b.png   # seconds on a CPU (CI)
    python -m benchmarks -k block_mask -k 4096 --no-memory    # a subset, time only
    python -m benchmarks --matrix update --no-memory --device cpu   # the weight update at 1024^2 and 4096^2

Subcommands (``python -m benchmarks NAME --help`` for each one's options):
    vs-reference       the harness on its two 4096x4096 fp32 L1 block_mask cases, torch.ao's
                       reference against ours-torch, on the CPU (harness options follow)
    sparsifier-step    DataNormSparsifier.step() on a model-sized set of tensors: its overhead
                       over direct blocksparsity.kernels.block_mask calls, and torch.ao's step() beside it
    callback-overhead  the Lightning callbacks' share of an epoch on the demo model
    sharded            block_mask on a DTensor sharded over CPU processes, against one process
    semi-structured    dense against 2:4 semi-structured matmuls at chosen shapes (a GPU verdict)
    accuracy           the accuracy study: accuracy against sparsity, against ModelPruning
    weight-update      the least-squares update of kept weights: time per layer, distance from exact
    many-tensors       issue 23's cases: small block_mask against the eager contender, step() on 50
                       small tensors and on GPT-2-small's shapes, 4096^2; against --baseline (another checkout)
Each is also ``python -m benchmarks.<module>`` (``vs-reference`` excepted: it is a harness preset).
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys

import torch

from benchmarks import harness, plot, report
from benchmarks.cases import MATRICES, default_cases
from benchmarks.contenders import CONTENDERS

# Subcommand -> the module whose main(argv) runs it.
SUBCOMMANDS = {
    "sparsifier-step": "benchmarks.sparsifier_step",
    "callback-overhead": "benchmarks.callback_overhead",
    "sharded": "benchmarks.sharded",
    "semi-structured": "benchmarks.semi_structured",
    "accuracy": "benchmarks.accuracy.__main__",
    "weight-update": "benchmarks.weight_update",
    "many-tensors": "benchmarks.many_tensors",
}
# ``vs-reference``: the harness with these arguments first (torch.ao's reference against ours-torch at 4096x4096).
VS_REFERENCE = ["--device", "cpu", "-k", "block_mask 4096x4096 fp32 L1 zpb", "--contenders", "reference", "ours-torch"]


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke test that takes seconds on a CPU")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="default: cuda where available")
    p.add_argument("--matrix", choices=list(MATRICES), default="axes",
                   help="axes: fp32 L1 at every size, L2 and bf16 at 8192^2, the weight update at 1024^2 (default); "
                        "full: every combination; sizes: fp32 and bf16 at 2**24, 2**26 and 2**28 elements; "
                        "update: the least-squares update at 1024^2 and 4096^2 (about 2 min a call on a CPU thread)")
    p.add_argument("-k", "--filter", action="append", default=[], metavar="TEXT",
                   help="only cases whose name contains TEXT (repeatable: any of them)")
    p.add_argument("--contenders", nargs="+", choices=list(CONTENDERS), default=list(CONTENDERS), metavar="NAME",
                   help=f"which to run (default: all that run on the device: {', '.join(CONTENDERS)})")
    p.add_argument("--repeats", type=int, help="timed calls per contender and case (median); default 10 on CUDA, 3 on CPU")
    p.add_argument("--budget", type=float, metavar="SECONDS",
                   help="skip a contender on a case whose calls would take longer (default 2 on CUDA, 4 on CPU)")
    p.add_argument("--deadline", type=float, metavar="SECONDS", help="start no new case after this long")
    p.add_argument("--threads", type=int, metavar="N", help="torch.set_num_threads(N) first (CPU; default: torch's choice)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement (slow on CPU)")
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    p.add_argument("--plot", metavar="PATH", help="also write a PNG chart of the times")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return p.parse_args(argv)


def _interrupt_on_sigterm() -> None:
    """SIGTERM (e.g. from ``timeout``) ends the run like Ctrl-C: with a report of what was measured."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in SUBCOMMANDS:
        result = importlib.import_module(SUBCOMMANDS[argv[0]]).main(argv[1:])
        return result if isinstance(result, int) else 0
    if argv and argv[0] == "vs-reference":
        argv = VS_REFERENCE + argv[1:]
    return _harness(parse(argv))


def _harness(args: argparse.Namespace) -> int:
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device here")
    defaults = harness.default_settings(device, args.quick, args.matrix)
    settings = harness.Settings(
        device=device,
        repeats=args.repeats or defaults["repeats"],
        copy_bytes=defaults["copy_bytes"],
        min_seconds=defaults["min_seconds"],
        threads=args.threads,
        budget_seconds=args.budget or defaults["budget_seconds"],
        memory=not args.no_memory,
        deadline_seconds=args.deadline,
        progress=not args.no_progress,
        quick=args.quick,
        matrix=args.matrix,
    )
    cases = default_cases(device, args.quick, args.matrix)
    cases = [c for c in cases if not args.filter or any(f in c.name for f in args.filter)]
    if not cases:
        sys.exit(f"no case matches {args.filter}")
    _interrupt_on_sigterm()
    run = harness.run(cases, args.contenders, settings)
    sys.stdout.write(report.markdown(run))
    if args.json:
        report.write_json(run, args.json)
    if args.plot and not plot.plot(run, args.plot):
        print("--plot: matplotlib is not installed; no chart written", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
