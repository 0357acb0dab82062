"""The study as Markdown (machine header, one table per task, the goals) and as JSON."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from benchmarks.accuracy.methods import METHODS_BY_KEY
from benchmarks.accuracy.study import Row, Study

OVERHEAD_GOAL = 0.03
OURS = ("post", "post-act", "post-act-upd", "copy", "inplace", "inplace-epoch")
IN_PLACE_OVERHEAD_GOAL = 0.05  # issue 23: in-place hook time at most 5% of training


@dataclass
class Cell:
    """One (task, level, method) over its seeds."""

    task: str
    level: str
    method: str
    status: str
    n: int = 0
    mean: float | None = None
    spread: float | None = None  # sample standard deviation over seeds (0 for one seed)
    reached: float | None = None
    max_deviation_units: float | None = None
    unit: str | None = None
    two_four: bool | None = None
    fit_seconds: float | None = None
    sparsity_seconds: float | None = None

    @property
    def overhead(self) -> float | None:
        if self.sparsity_seconds is None or not self.fit_seconds:
            return None
        return self.sparsity_seconds / self.fit_seconds


def cells(study: Study) -> list[Cell]:
    """Rows grouped by (task, level, method), in the order they first appear per task."""
    groups: dict[tuple[str, str, str], list[Row]] = {}
    for row in study.rows:
        groups.setdefault((row.task, row.level, row.method), []).append(row)
    out = []
    for (task, level, method), rows in groups.items():
        ok = [r for r in rows if r.status == "ok"]
        if not ok:
            out.append(Cell(task, level, method, rows[0].status))
            continue
        metrics = [r.metric for r in ok]
        cell = Cell(task, level, method, "ok", len(ok), statistics.fmean(metrics),
                    statistics.stdev(metrics) if len(metrics) > 1 else 0.0,
                    statistics.fmean(r.reached for r in ok), max(r.max_deviation_units for r in ok), ok[0].unit,
                    all(r.two_four for r in ok) if ok[0].two_four is not None else None,
                    statistics.fmean(r.fit_seconds for r in ok),
                    statistics.fmean(r.sparsity_seconds for r in ok) if ok[0].sparsity_seconds is not None else None)
        out.append(cell)
    level_order = {"dense": -1, "50%": 0, "75%": 1, "90%": 2, "2:4": 3}
    method_order = {k: i for i, k in enumerate(METHODS_BY_KEY)}
    return sorted(out, key=lambda c: (list(study.tasks).index(c.task), level_order.get(c.level, 9), method_order[c.method]))


def _dense(cs: list[Cell], task: str) -> Cell | None:
    return next((c for c in cs if c.task == task and c.method == "dense" and c.status == "ok"), None)


def _metric(study: Study, task: str, value: float) -> str:
    return f"{value:.2f}" if study.tasks[task]["metric"] == "accuracy" else f"{value:.3f}"


def _delta(study: Study, task: str, value: float) -> str:
    return f"{value:+.2f}" if study.tasks[task]["metric"] == "accuracy" else f"{value:+.3f}"


def _row(study: Study, c: Cell, dense: Cell | None) -> str:
    label = METHODS_BY_KEY[c.method].label
    if c.status != "ok":
        return f"| {c.level} | {label} | {c.status} |  |  |  |  |  |  |  |"
    metric = study.tasks[c.task]["metric"]
    value = f"{_metric(study, c.task, c.mean)} ± {_metric(study, c.task, c.spread)}"
    if metric == "loss":
        value += f" (ppl {2.718281828 ** c.mean:.2f})"
    delta = "" if dense is None or c.method == "dense" else _delta(study, c.task, c.mean - dense.mean)
    units = f"{c.max_deviation_units:.1f} {c.unit}" + ("s" if c.max_deviation_units != 1 else "")
    two_four = "" if c.two_four is None else ("yes" if c.two_four else "**no**")
    sparsity = "" if c.sparsity_seconds is None else f"{c.sparsity_seconds:.3f}"
    overhead = "" if c.overhead is None else f"{c.overhead:.1%}"
    if c.overhead is not None and c.method in OURS and c.overhead >= OVERHEAD_GOAL:
        overhead += " (goal < 3%: missed)"
    return (f"| {c.level} | {label} | {value} | {delta} | {c.reached:.1%} | {units} | {two_four} | {c.fit_seconds:.2f} | "
            f"{sparsity} | {overhead} |")


def _post_training_goals(study: Study, by: dict) -> list[str]:
    """Issue 22's goals for post-training with activation-aware scores and the update."""
    lines = []
    for task in study.tasks:
        dense = by.get((task, "dense", "dense"))
        if dense is None:
            continue
        for level in ("50%", "2:4"):
            magnitude, updated = by.get((task, level, "post")), by.get((task, level, "post-act-upd"))
            if magnitude is None or updated is None:
                continue
            if study.tasks[task]["metric"] == "loss":
                ok = updated.mean - dense.mean <= (magnitude.mean - dense.mean) / 3
                lines.append(f"- {task}, post-training with scores + update at {level}: {updated.mean - dense.mean:+.3f} vs "
                             f"dense, magnitude {magnitude.mean - dense.mean:+.3f} (goal: at most a third of "
                             f"magnitude's: {'met' if ok else '**missed**'})")
            else:
                ok = dense.mean - updated.mean <= 3.0
                lines.append(f"- {task}, post-training with scores + update at {level}: {updated.mean - dense.mean:+.2f} "
                             f"points vs dense, magnitude {magnitude.mean - dense.mean:+.2f} (goal: within 3 points: "
                             f"{'met' if ok else '**missed**'})")
    worse = []
    for (task, level, method), c in by.items():
        magnitude = by.get((task, level, "post"))
        if method in ("post-act", "post-act-upd") and magnitude is not None:
            sign = 1 if study.tasks[task]["metric"] == "loss" else -1
            if sign * (c.mean - magnitude.mean) > max(c.spread, magnitude.spread):
                worse.append(f"{task} {level} {method}")
    if any(m in ("post-act", "post-act-upd") for _, _, m in by):
        lines.append(f"- rows worse than magnitude by more than one standard deviation: {', '.join(worse) or 'none'}")
    return lines


def _in_place_cost_goals(study: Study, by: dict) -> list[str]:
    """Issue 23's goals: in-place hook time at most 5% of training on every task; at one
    update per epoch, training costs no more than with ``ModelPruning``."""
    lines = []
    for task in study.tasks:
        in_place = [c for (t, _, m), c in by.items() if t == task and m in ("inplace", "inplace-epoch")
                    and c.overhead is not None]
        if in_place:
            worst = max(in_place, key=lambda c: c.overhead)
            verdict = "met" if worst.overhead <= IN_PLACE_OVERHEAD_GOAL else "**missed**"
            lines.append(f"- {task}, in place: hook time at most {worst.overhead:.1%} of training ({worst.level}, "
                         f"{METHODS_BY_KEY[worst.method].label}; goal at most 5%: {verdict})")
        # ModelPruning's masking runs in forward pre-hooks inside the training step, which its
        # hook time does not see: what each costs is the whole fit's wall time.
        ratios = []
        for level in ("50%", "75%", "90%"):
            ours, theirs = by.get((task, level, "inplace-epoch")), by.get((task, level, "mp-l1"))
            if ours and theirs and ours.fit_seconds and theirs.fit_seconds:
                ratios.append((level, ours.fit_seconds / theirs.fit_seconds))
        if ratios:
            verdict = "met" if all(r <= 1.0 for _, r in ratios) else "**missed**"
            shown = ", ".join(f"{level} {r:.3f}x" for level, r in ratios)
            lines.append(f"- {task}, one mask update per epoch: our training time / ModelPruning's (its masking runs "
                         f"inside the step, so whole fits are compared): {shown} (goal at most 1x: {verdict})")
    return lines


def goals(study: Study, cs: list[Cell]) -> list[str]:
    """The issue's goals, each met or missed, from the figures."""
    lines = []
    by = {(c.task, c.level, c.method): c for c in cs if c.status == "ok"}
    for task in ("digits-mlp", "digits-cnn"):
        dense = by.get((task, "dense", "dense"))
        if dense is None:
            continue
        for level, allowed in (("50%", 1.0), ("2:4", 1.0), ("90%", 3.0)):
            c = by.get((task, level, "inplace"))
            if c is None:
                continue
            loss = dense.mean - c.mean
            verdict = "met" if loss <= allowed else "**missed**"
            post = by.get((task, level, "post"))
            post_text = f"; the post-training copy: {post.mean - dense.mean:+.2f}" if post else ""
            lines.append(f"- {task}, in-place gradual at {level}: {-loss:+.2f} points vs dense (goal: at most {allowed:g} "
                         f"below: {verdict}){post_text}")
    lines += _post_training_goals(study, by)
    for task in study.tasks:
        for level in ("50%", "75%", "90%"):
            ours, theirs = by.get((task, level, "inplace")), by.get((task, level, "mp-l1"))
            if ours and theirs:
                better = "higher is better" if study.tasks[task]["metric"] == "accuracy" else "lower is better"
                gap = ours.mean - theirs.mean
                lines.append(f"- {task} at {level}: in-place (1,4) blocks {_metric(study, task, ours.mean)} vs ModelPruning "
                             f"l1_unstructured {_metric(study, task, theirs.mean)} "
                             f"(ours minus theirs {_delta(study, task, gap)}; {better})")
    lines += _in_place_cost_goals(study, by)
    timed = [c for c in cs if c.method in OURS and c.method != "post-act-upd"]  # the update is a cost of its own
    worst = max((c for c in timed if c.overhead is not None), key=lambda c: c.overhead, default=None)
    if worst is not None:
        verdict = "met" if worst.overhead < OVERHEAD_GOAL else "**missed**"
        lines.append(f"- time in our callbacks, worst case: {worst.overhead:.1%} of training ({worst.task}, {worst.level}, "
                     f"{METHODS_BY_KEY[worst.method].label}; goal < 3%: {verdict})")
    return lines


def summary(study: Study) -> list[str]:
    """One compact table: per task and method, the metric at each level (and its difference
    from dense), and the largest share of training time spent in the method's hooks."""
    cs = cells(study)
    by = {(c.task, c.level, c.method): c for c in cs}
    levels = [lv for lv in ("50%", "75%", "90%", "2:4") if any(c.level == lv for c in cs)]
    out = ["| task (metric) | method | " + " | ".join(levels) + " | time in sparsity hooks (max over levels) |",
           "|---|---|" + "--:|" * len(levels) + "--:|"]
    for task, info in study.tasks.items():
        dense = by.get((task, "dense", "dense"))
        metric = "accuracy %" if info["metric"] == "accuracy" else "held-out loss"
        if dense is not None and dense.status == "ok":
            out.append(f"| {task} ({metric}) | dense | " + " | ".join([_metric(study, task, dense.mean)] * len(levels))
                       + " | |")
        for key, method in METHODS_BY_KEY.items():
            if key == "dense":
                continue
            row, overheads = [], []
            for lv in levels:
                c = by.get((task, lv, key))
                if c is None:
                    row.append("")
                elif c.status != "ok":
                    row.append("n/a")
                else:
                    delta = "" if dense is None else f" ({_delta(study, task, c.mean - dense.mean)})"
                    row.append(_metric(study, task, c.mean) + delta)
                    if c.overhead is not None:
                        overheads.append(c.overhead)
            if any(row):
                out.append(f"| {task} | {method.label} | " + " | ".join(row) + " | "
                           + (f"{max(overheads):.1%}" if overheads else "") + " |")
    return out


def markdown(study: Study) -> str:
    m, s = study.machine, study.settings
    cs = cells(study)
    out = [
        f"### Accuracy study: {m['device_name']}",
        "",
        f"{m['date']} · torch {m['torch']} · Python {m['python']} · commit {m['commit']} · {m['memory_gib']} GiB · "
        f"load average {m['load_average']} at the start, {m.get('load_average_end')} at the end",
        "",
        f"Seeds {', '.join(map(str, s.seeds))}{' · quick settings' if s.quick else ''} · torch threads {s.threads} · "
        f"study took {study.elapsed_seconds:.0f} s. Mean ± sample standard deviation over seeds. \"reached\" is counted "
        "from the zeros of the final weights of the pruned tensors (every tensor with ndim >= 2; biases stay dense); "
        "\"off by\" is the worst tensor's distance from the requested level, in the method's units (a (1,4) block, "
        "an element, or a dim-1 slice); \"2:4\" checks `is_n_m_sparse(w.reshape(w.shape[0], -1), 2, 4)` on every "
        "pruned tensor; \"train s\" is `trainer.fit` wall time (for copies riding on the dense run: without the other "
        "copies' callbacks), \"sparsity s\" the time inside the method's callback hooks.",
        "",
    ]
    out += [f"- {note}" for note in study.notes]
    out += ["", "Summary (mean over seeds; in brackets the difference from dense):", "", *summary(study)]
    for task, info in study.tasks.items():
        metric = "test accuracy (%)" if info["metric"] == "accuracy" else "held-out loss (nats/byte)"
        out += ["", f"#### {task}: {info['description']}", "",
                f"{info['epochs']} epochs of {info['steps_per_epoch']} steps; pruned: "
                + ", ".join(f"{n} {'x'.join(map(str, shape))}" for n, shape in info["pruned"].items()), "",
                f"| level | method | {metric} | vs dense | reached | off by | 2:4 | train s | sparsity s | overhead |",
                "|---|---|--:|--:|--:|--:|:-:|--:|--:|--:|"]
        dense = _dense(cs, task)
        out += [_row(study, c, dense) for c in cs if c.task == task]
    out += ["", "Goals:", "", *goals(study, cs), ""]
    return "\n".join(out) + "\n"


def write_json(study: Study, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    body = study.to_json()
    body["cells"] = [{**c.__dict__, "overhead": c.overhead} for c in cells(study)]
    Path(path).write_text(json.dumps(body, indent=1) + "\n")
