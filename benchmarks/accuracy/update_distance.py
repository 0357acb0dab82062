"""How close the default least-squares update (SparseGPT's sweep + 25 CG steps) comes to the
exact per-row solution on the accuracy study's own layers: each task trained densely (seed 0,
the study's training), ``H`` summed over one pass of its training loader (as the callbacks'
last-epoch statistics), masks from the kernels on activation-aware scores at 50% and 2:4,
then both updates of every pruned weight that takes one.

    python -m benchmarks.accuracy.update_distance [--quick] [--seeds 1]

Per layer: ``max |default - exact| / max |exact|`` and the reconstruction error
``(w' - w)^T Hd (w' - w)`` summed over rows, default over exact (1 = as good as exact).
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.accuracy import study, tasks
from benchmarks.accuracy.methods import LEVELS
from blocksparsity import kernels
from blocksparsity.calibration import InputStatistics, find_targets
from blocksparsity.weight_update import least_squares_update, reconstruction_error


def _statistics(task: tasks.Task, module, seed: int) -> InputStatistics:
    params = {n: p for n, p in module.model.named_parameters() if tasks.pruned(n, p)}
    targets = {n: t for n, t in find_targets(module.model, params).items() if t.updatable}
    stats = InputStatistics(targets, full=True, dtype=torch.float64)
    stats.reset(list(targets))
    module.eval()
    with torch.no_grad(), stats.collecting(list(targets)):
        for batch in task.make_loader(seed):
            module.model(batch[0])
    return stats


def rows(quick: bool, seeds: int) -> list[str]:
    out = []
    for task in tasks.tasks(quick):
        for seed in range(seeds):
            module, _, _ = study._fit(task, seed, lambda m: [])
            stats = _statistics(task, module, seed)
            for name, target in stats.targets.items():
                weight = target.weight.detach()
                w, h = target.view_2d(weight).double(), stats.sums[name]
                for level_name in ("50%", "2:4"):
                    level = LEVELS[level_name]
                    # the mask on the weight's own 2-D view (as the callbacks make it), then in H's orientation
                    mask = kernels.block_mask(weight.reshape(weight.shape[0], -1), level.sparsity_level, (1, 4),
                                              level.zeros_per_block, scale=stats.scale(name))
                    mask = target.view_2d(mask.reshape(weight.shape))
                    default = least_squares_update(w, mask, h)
                    exact = least_squares_update(w, mask, h, method="exact")
                    distance = float((default - exact).abs().max() / exact.abs().max())
                    ratio = reconstruction_error(default, w, h) / reconstruction_error(exact, w, h)
                    out.append(f"| {task.name} | {seed} | {name} {tuple(w.shape)} | {level_name} | {distance:.2e} | "
                               f"{ratio:.6f} |")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.accuracy.update_distance", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the study's quick (fewer-epoch) training")
    parser.add_argument("--seeds", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    study._quiet_lightning()
    print("| task | seed | weight (2-D view) | level | max abs(default - exact) / max abs(exact) | "
          "error default / exact |\n|---|--:|---|---|--:|--:|")
    print("\n".join(rows(args.quick, args.seeds)))


if __name__ == "__main__":
    main()
