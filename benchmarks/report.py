"""A run as a Markdown table (machine header, one row per case and contender, the targets)
and as JSON (the same figures, unrounded)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from benchmarks import figures, targets
from benchmarks.bandwidth import bytes_moved
from benchmarks.contenders import CONTENDERS
from benchmarks.harness import MAX_REPEATS, Run


def _ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 10 else f"{ms:.1f}" if ms < 1000 else f"{ms:,.0f}"


def _x(value: float) -> str:
    return f"{value:.2f}x" if value < 10 else f"{value:.1f}x" if value < 100 else f"{value:,.0f}x"


def _size(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def timing(run: Run) -> str:
    s = run.settings
    if s.device == "cuda":
        how = f"Median of {s.repeats} timed calls (CUDA events, L2 flushed)"
    elif s.min_seconds <= 0:
        how = f"Median of {s.repeats} timed calls (`perf_counter`, contenders in alternation)"
    else:
        how = (f"Median of {s.repeats} to {MAX_REPEATS} timed calls (`perf_counter`, contenders in alternation; more calls "
               f"where the slowest contender's {s.repeats} take under {s.min_seconds:g} s)")
    threads = f"; torch threads: {s.threads}" if s.threads else ""
    return (f"{how}{threads}; per-call budget {s.budget_seconds:g} s; cases: {s.matrix}{', quick sizes' if s.quick else ''}; "
            f"run took {run.elapsed_seconds:.0f} s{' (interrupted)' if run.interrupted else ''}.")


def header(run: Run) -> list[str]:
    m, s = run.machine, run.settings
    copies = " / ".join(f"{c.gbps:.1f}" for c in run.copy)
    lines = [
        f"### {m['device_name']}",
        "",
        f"{m['date']} · CUDA {m['cuda']} · torch {m['torch']} · triton {m['triton']} · Python {m['python']} · "
        f"commit {m['commit']}",
        f"host: {m['cpu']}, {m['memory_gib']} GiB"
        + (f" · GPU memory {m['device_memory_gib']} GiB" if "device_memory_gib" in m else "")
        + (f" · load average {m['load_average']} at the start, {m.get('load_average_end')} at the end"
           if m.get("load_average") is not None else ""),
        "",
        f"Copy bandwidth (`dst.copy_(src)`, {s.copy_bytes >> 20} MiB, start / end of the run): {copies} GB/s; "
        f"\"% copy\" is relative to the best, {run.copy_gbps:.1f} GB/s.",
        timing(run),
    ]
    return lines


def table(run: Run) -> list[str]:
    """The table: one row per contender and case; "vs X" = X's time / this time."""
    names = run.contenders
    cols = ["case", "moved", "contender", "time (ms)", "GB/s", "% copy", *[f"vs {n}" for n in names], "peak extra mem"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(["---"] * 3 + ["--:"] * (len(cols) - 3)) + "|"]
    for result in run.results:
        for i, row in enumerate(figures.case_rows(result, run.copy_gbps)):
            first = i == 0
            cells = [row.case.name if first else "", _size(row.bytes_moved) if first else "", row.contender]
            if row.seconds is None:
                cells += [row.reason or row.status, "", ""] + [""] * len(names)
            else:
                cells += [_ms(row.seconds), f"{row.gbps:.1f}", f"{row.pct_of_copy:.0f}%"]
                cells += [("—" if n == row.contender else _x(row.speedup[n]) if n in row.speedup else "") for n in names]
            cells.append(_x(row.peak_extra_x) if row.peak_extra_x is not None else ("failed" if row.memory_error else ""))
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def target_lines(run: Run) -> list[str]:
    lines = ["", f"Targets on {'a GPU' if run.settings.device == 'cuda' else 'the CPU'} (worst case over the run):", ""]
    for t in targets.evaluate(figures.rows(run), run.settings.device):
        if t.measured is None:
            lines.append(f"- {t.description}: target {t.goal}, not measured in this run")
        else:
            verdict = "met" if t.met else "NOT met"
            value = f"{t.measured:.0f}%" if t.unit == "%" else _x(t.measured)
            lines.append(f"- {t.description}: {value} at {t.where} (target {t.goal}: {verdict})")
    return lines


def footnotes(run: Run) -> list[str]:
    left_out = [n for n in CONTENDERS if n not in run.contenders]
    lines = ["", "Contenders: " + "; ".join(f"`{n}`: {CONTENDERS[n].description}" for n in run.contenders) + "."]
    if left_out:
        lines.append("Not run on this device: " + ", ".join(f"`{n}` ({'/'.join(CONTENDERS[n].devices)} only)" for n in left_out)
                     + ".")
    lines.append("\"moved\": the bytes the operation must move (`benchmarks/bandwidth.py`); GB/s = moved / time. "
                 "\"vs X\": X's time / this time. \"peak extra mem\": peak memory above the input during one call, "
                 "as a multiple of the input's size.")
    return lines


def markdown(run: Run) -> str:
    return "\n".join([*header(run), "", *table(run), *target_lines(run), *footnotes(run)]) + "\n"


def to_json(run: Run) -> dict:
    rows = figures.rows(run)
    by_case: dict[str, list] = {}
    for row in rows:
        by_case.setdefault(row.case.name, []).append(row.to_dict())
    return {
        "machine": run.machine,
        "settings": dataclasses.asdict(run.settings),
        "copy_bandwidth": [c.to_dict() for c in run.copy],
        "copy_gbps": run.copy_gbps,
        "contenders": {n: CONTENDERS[n].description for n in run.contenders},
        "elapsed_seconds": run.elapsed_seconds,
        "interrupted": run.interrupted,
        "cases": [
            {"name": r.case.name, "case": r.case.to_dict(), "input_bytes": r.case.input_bytes,
             "bytes_moved": bytes_moved(r.case), "results": by_case[r.case.name]}
            for r in run.results
        ],
        "targets": [t.to_dict() for t in targets.evaluate(rows, run.settings.device)],
    }


def write_json(run: Run, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(to_json(run), indent=1) + "\n")
