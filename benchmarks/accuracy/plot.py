"""A PNG: the metric against the sparsity reached, one line per method, one panel per task
(dense as a horizontal line; 2:4 as a separate marker at its 50%); a second row zooms in on
the methods that prune during training."""

from __future__ import annotations

from pathlib import Path

from benchmarks.accuracy.methods import METHODS_BY_KEY
from benchmarks.accuracy.report import cells
from benchmarks.accuracy.study import Study

COLORS = {"post": "#f4a261", "post-act": "#c77dff", "post-act-upd": "#7209b7",
          "copy": "#e9c46a", "inplace": "#2a9d8f", "inplace-epoch": "#52b788", "mp-l1": "#264653", "mp-ln": "#8d99ae",
          "ao-post": "#e76f51", "ao-copy": "#b5838d"}
STYLES = {"ao-post": ("--", "s"), "ao-copy": ("--", "^"), "copy": ("-", "v")}  # copies that coincide stay visible
IN_TRAINING = ("inplace", "inplace-epoch", "mp-l1", "mp-ln")  # the bottom row: the methods that prune while training, zoomed in
JITTER = 0.35  # x offset between methods (percentage points), so equal points do not hide each other


def _panel(ax, study: Study, task: str, mine: list, keys: list[str], zoomed: bool) -> None:
    dense = next((c for c in mine if c.method == "dense"), None)
    if dense is not None:
        ax.axhline(dense.mean, color="black", lw=1, ls=":", label="dense (mean)")
    for i, key in enumerate(COLORS):
        if key not in keys:
            continue
        color = COLORS[key]
        ls, marker = STYLES.get(key, ("-", "o"))
        dx = (i - (len(COLORS) - 1) / 2) * JITTER
        line = sorted((c for c in mine if c.method == key and c.level != "2:4"), key=lambda c: c.reached)
        if line:
            ax.errorbar([c.reached * 100 + dx for c in line], [c.mean for c in line], yerr=[c.spread for c in line],
                        color=color, ls=ls, marker=marker, ms=4, capsize=2, label=METHODS_BY_KEY[key].label)
        two_four = [c for c in mine if c.method == key and c.level == "2:4"]
        if two_four:
            c = two_four[0]
            ax.errorbar([c.reached * 100 + 2.5 + dx], [c.mean], yerr=[c.spread], color=color, marker="D", ms=6,
                        mfc="white", capsize=2, ls="none")
    metric = study.tasks[task]["metric"]
    dense_text = "" if dense is None else f"; dense {dense.mean:.4g}"
    what = "pruned during training only" if zoomed else "diamonds: 2:4, drawn right of 50%"
    ax.set_title(f"{task} ({what}{dense_text})", fontsize=10)
    ax.set_xlabel("sparsity reached in the pruned tensors (%)")
    ax.set_ylabel("test accuracy (%)" if metric == "accuracy" else "held-out loss (nats/byte, lower is better)")
    ax.grid(alpha=0.3)
    if metric == "accuracy" and dense is not None and not zoomed:
        shown = [c.mean for c in mine if c.method in keys]
        ax.set_ylim(max(min(shown) - 2, 0), min(100, dense.mean + 2))


def plot(study: Study, path: str | Path) -> bool:
    """Write the chart to ``path``; False (and nothing written) where matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    cs = [c for c in cells(study) if c.status == "ok"]
    names = list(study.tasks)
    fig, axes = plt.subplots(2, len(names), figsize=(5.2 * len(names), 8.4), squeeze=False)
    for row, keys in enumerate((list(COLORS), list(IN_TRAINING))):
        for ax, task in zip(axes[row], names, strict=True):
            _panel(ax, study, task, [c for c in cs if c.task == task], keys, zoomed=row == 1)
    handles, labels = axes[0][0].get_legend_handles_labels()
    seen = dict(zip(labels, handles, strict=True))
    for ax in axes[0][1:]:
        handles, labels = ax.get_legend_handles_labels()
        for h, lab in zip(handles, labels, strict=True):
            seen.setdefault(lab, h)
    fig.legend(list(seen.values()), list(seen.keys()), loc="lower center", ncol=4, fontsize=8)
    m = study.machine
    fig.suptitle(f"{m['device_name']} · {m['date']} · torch {m['torch']} · commit {m['commit']} · "
                 f"{len(study.settings.seeds)} seed(s)", fontsize=9)
    fig.tight_layout(rect=(0, 0.07, 1, 0.97))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
