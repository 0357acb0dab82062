"""``python -m benchmarks.accuracy``: the accuracy a user keeps at 50/75/90% and 2:4, on real
data, for this package's callbacks, Lightning's ModelPruning and torch.ao's callbacks, as a
Markdown table on stdout (progress bar on stderr, on a terminal only), and optionally JSON
and a PNG plot.

Examples:
    python -m benchmarks.accuracy                                   # the default study (3 seeds; minutes on 2 cores)
    python -m benchmarks.accuracy --quick --seeds 1 --levels 50%    # a smoke test in seconds (CI)
    python -m benchmarks.accuracy --json a.json --plot a.png
    python -m benchmarks.accuracy --from-json a.json --plot a.png   # the report of a saved study, nothing run
"""

from __future__ import annotations

import argparse
import json
import sys

from benchmarks.accuracy import plot, report, study
from benchmarks.accuracy.methods import LEVELS, METHODS_BY_KEY
from benchmarks.accuracy.tasks import tasks


def _levels(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in LEVELS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"levels must be a comma-separated subset of {', '.join(LEVELS)}; got {text!r}")
    return names


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.accuracy", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--quick", action="store_true", help="fewer epochs: a smoke test (CI)")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per (task, method, level) (default 3)")
    levels_help = f"comma-separated (default {','.join(LEVELS)})".replace("%", "%%")  # argparse formats help with %
    p.add_argument("--levels", type=_levels, default=list(LEVELS), help=levels_help)
    p.add_argument("--methods", nargs="+", choices=list(METHODS_BY_KEY), default=list(METHODS_BY_KEY), metavar="NAME",
                   help=f"default all: {', '.join(METHODS_BY_KEY)}")
    names = [t.name for t in tasks(quick=True)]
    p.add_argument("--tasks", nargs="+", choices=names, default=names, metavar="NAME", help=f"default all: {', '.join(names)}")
    p.add_argument("--threads", type=int, default=1,
                   help="torch.set_num_threads (default 1: the models are small, and on a shared CPU one thread is "
                        "faster and steadier than two that wait on each other)")
    p.add_argument("--json", metavar="PATH", help="also write every run and the aggregates as JSON")
    p.add_argument("--plot", metavar="PATH", help="also write a PNG plot of the metric against the sparsity reached")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--from-json", metavar="PATH", help="run nothing: print the report (and --plot) of a study saved with --json")
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error(f"--seeds must be at least 1; got {args.seeds}")
    if args.threads < 1:
        p.error(f"--threads must be at least 1; got {args.threads}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    methods = list(dict.fromkeys(["dense", *args.methods]))  # the baseline every row is compared with
    if args.from_json:
        with open(args.from_json) as f:
            result = study.Study.from_json(json.load(f))
    else:
        settings = study.Settings(quick=args.quick, seeds=list(range(args.seeds)), levels=args.levels, methods=methods,
                                  tasks=args.tasks, threads=args.threads)
        result = study.run(settings, progress=False if args.no_progress else None)
    sys.stdout.write(report.markdown(result))
    if args.json:
        report.write_json(result, args.json)
    if args.plot and not plot.plot(result, args.plot):
        print("--plot: matplotlib is not installed; no plot written", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
