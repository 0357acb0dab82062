"""The derived figures of a run, shared by the table, the JSON, the chart and the targets:
GB/s, percentage of the run's copy bandwidth, speedups, peak memory as a multiple of the input."""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.cases import Case
from benchmarks.harness import CaseResult, Run


@dataclass(frozen=True)
class Row:
    """One contender on one case. ``speedup[other]`` is other's time over this one's: how many
    times faster this contender ran than ``other`` (for every other contender with a time)."""

    case: Case
    bytes_moved: int
    contender: str
    status: str
    reason: str
    seconds: float | None
    samples: list[float]
    gbps: float | None
    pct_of_copy: float | None
    speedup: dict[str, float]
    peak_extra_x: float | None
    memory_error: str

    def to_dict(self) -> dict:
        return {
            "contender": self.contender, "status": self.status, "reason": self.reason, "seconds": self.seconds,
            "samples_seconds": self.samples, "gbps": self.gbps, "pct_of_copy_bandwidth": self.pct_of_copy,
            "speedup_over": self.speedup,
            "peak_extra_x_input": self.peak_extra_x, "memory_error": self.memory_error or None,
        }


def case_rows(result: CaseResult, copy_gbps: float) -> list[Row]:
    """One row per contender of a case, in the run's contender order."""
    times = {n: m.seconds for n, m in result.measurements.items() if m.status == "ok" and m.seconds}
    rows = []
    for name, m in result.measurements.items():
        t = times.get(name)
        gbps = result.bytes_moved / t / 1e9 if t else None
        rows.append(Row(
            case=result.case, bytes_moved=result.bytes_moved, contender=name, status=m.status, reason=m.reason,
            seconds=t, samples=m.samples, gbps=gbps, pct_of_copy=100 * gbps / copy_gbps if gbps else None,
            speedup={other: to / t for other, to in times.items() if other != name} if t else {},
            peak_extra_x=None if m.peak_extra_bytes is None else m.peak_extra_bytes / result.case.input_bytes,
            memory_error=m.memory_error,
        ))
    return rows


def rows(run: Run) -> list[Row]:
    """Every row of a run, case by case."""
    return [row for result in run.results for row in case_rows(result, run.copy_gbps)]
