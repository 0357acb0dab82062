"""A PNG chart of a run: time per case and contender (horizontal bars, log scale)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.harness import Run

COLORS = {"reference": "#9e9e9e", "naive": "#f4a261", "naive-compiled": "#e76f51", "ours-torch": "#2a9d8f",
          "ours-triton": "#264653"}


def plot(run: Run, path: str | Path) -> bool:
    """Write the chart to ``path``; False (and nothing written) where matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = run.contenders
    cases = [r.case.name for r in run.results]
    n, k = len(cases), len(names)
    bar = 0.8 / max(1, k)
    fig, ax = plt.subplots(figsize=(11, 1.2 + 0.16 * n * k + 0.1 * n))
    for j, name in enumerate(names):
        ys, widths = [], []
        for i, result in enumerate(run.results):
            m = result.measurements.get(name)
            if m is not None and m.status == "ok" and m.seconds:
                ys.append(i + (j - (k - 1) / 2) * bar)
                widths.append(m.seconds * 1e3)
        ax.barh(ys, widths, height=bar, color=COLORS.get(name), label=name)
    ax.set_yticks(range(n), cases, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("median time per call (ms, log scale; missing bar: n/a or skipped, see the table)")
    m = run.machine
    ax.set_title(f"{m['device_name']}\n{m['date']} · torch {m['torch']} · commit {m['commit']}", fontsize=9)
    ax.grid(axis="x", which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True

